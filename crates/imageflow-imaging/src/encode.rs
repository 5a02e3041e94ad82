//! Encoding: JPEG through libjpeg-turbo, PNG and lossless WebP through the `image` crate.

use std::cell::RefCell;

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use crate::error::ImagingError;
use crate::format::ImageFormat;
use crate::image::Image;

/// How to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Output format.
    pub format: ImageFormat,
    /// JPEG quality 1..=100 (ignored for PNG and WebP, which are lossless).
    pub jpeg_quality: u8,
}

impl EncodeOptions {
    /// JPEG quality used when none is given.
    pub const DEFAULT_JPEG_QUALITY: u8 = 90;

    /// `format` with the default JPEG quality (90).
    pub fn new(format: ImageFormat) -> Self {
        EncodeOptions {
            format,
            jpeg_quality: Self::DEFAULT_JPEG_QUALITY,
        }
    }
}

/// An encoded result with its sizes, as the services return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded bytes.
    pub data: Vec<u8>,
    /// Their format.
    pub format: ImageFormat,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Displayed width of the source.
    pub original_width: u32,
    /// Displayed height of the source.
    pub original_height: u32,
}

/// Encodes `image`.
///
/// * JPEG: libjpeg-turbo, 4:2:0 chroma subsampling, baseline. An RGBA image is composited
///   on white first (JPEG has no alpha).
/// * PNG: fast deflate with adaptive filtering; RGB or RGBA as the image is.
/// * WebP: lossless (VP8L); RGB or RGBA as the image is.
///
/// A JPEG quality outside 1..=100 is [`ImagingError::InvalidParameter`].
pub fn encode(image: &Image, options: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    match options.format {
        ImageFormat::Jpeg => encode_jpeg(image, options.jpeg_quality),
        ImageFormat::Png => encode_png(image),
        ImageFormat::Webp => encode_webp(image),
    }
}

thread_local! {
    /// One libjpeg-turbo compressor per thread (`tj3Init` allocates).
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// A JPEG quality outside 1..=100 is [`ImagingError::InvalidParameter`].
pub(crate) fn check_jpeg_quality(quality: u8) -> Result<(), ImagingError> {
    if (1..=100).contains(&quality) {
        return Ok(());
    }
    Err(ImagingError::InvalidParameter(format!(
        "JPEG quality must be between 1 and 100, got {quality}"
    )))
}

/// Runs `f` with this thread's compressor set to `quality` (already checked). After an
/// error the instance is dropped, so no state from a failed encode reaches the next.
pub(crate) fn with_compressor<T>(
    quality: u8,
    f: impl FnOnce(&mut Compressor) -> turbojpeg::Result<T>,
) -> Result<T, ImagingError> {
    let result = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Compressor::new()?),
        };
        compressor.set_quality(i32::from(quality))?;
        let out = f(compressor);
        if out.is_err() {
            *slot = None;
        }
        out
    });
    result.map_err(|e| ImagingError::Encode(format!("JPEG encoder: {e}")))
}

fn encode_jpeg(image: &Image, quality: u8) -> Result<Vec<u8>, ImagingError> {
    check_jpeg_quality(quality)?;
    let flattened;
    let rgb: &[u8] = if image.has_alpha() {
        flattened = composite_on_white(image.pixels());
        &flattened
    } else {
        image.pixels()
    };
    let width = image.width() as usize;
    let height = image.height() as usize;
    with_compressor(quality, |compressor| {
        compressor.set_subsamp(Subsamp::Sub2x2)?;
        compressor.compress_to_vec(turbojpeg::Image {
            pixels: rgb,
            width,
            pitch: width * 3,
            height,
            format: PixelFormat::RGB,
        })
    })
}

/// RGBA over an opaque white background, to RGB.
fn composite_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        let white = 255 * (255 - a);
        for &c in &px[..3] {
            rgb.push(((u32::from(c) * a + white + 127) / 255) as u8);
        }
    }
    rgb
}

fn color_type(image: &Image) -> image::ExtendedColorType {
    if image.has_alpha() {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    }
}

fn encode_png(image: &Image) -> Result<Vec<u8>, ImagingError> {
    let mut out = Vec::with_capacity(image.pixels().len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            image.pixels(),
            image.width(),
            image.height(),
            color_type(image),
        )
        .map_err(|e| ImagingError::Encode(format!("PNG encoder: {e}")))?;
    Ok(out)
}

fn encode_webp(image: &Image) -> Result<Vec<u8>, ImagingError> {
    const WEBP_MAX_SIDE: u32 = 16383;
    if image.width() > WEBP_MAX_SIDE || image.height() > WEBP_MAX_SIDE {
        return Err(ImagingError::InvalidParameter(format!(
            "WebP holds at most {WEBP_MAX_SIDE}x{WEBP_MAX_SIDE} pixels, the image is {}x{}; \
             choose JPEG or PNG",
            image.width(),
            image.height()
        )));
    }
    let mut out = Vec::with_capacity(image.pixels().len() / 2);
    WebPEncoder::new_lossless(&mut out)
        .encode(
            image.pixels(),
            image.width(),
            image.height(),
            color_type(image),
        )
        .map_err(|e| ImagingError::Encode(format!("WebP encoder: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite() {
        assert_eq!(
            composite_on_white(&[10, 20, 30, 255, 10, 20, 30, 0]),
            vec![10, 20, 30, 255, 255, 255]
        );
        assert_eq!(composite_on_white(&[0, 0, 0, 128]), vec![127, 127, 127]);
    }

    #[test]
    fn quality_zero_is_refused() {
        let img = Image::new(1, 1, 3, vec![0; 3]).unwrap();
        let err = encode(
            &img,
            &EncodeOptions {
                format: ImageFormat::Jpeg,
                jpeg_quality: 0,
            },
        );
        assert!(matches!(err, Err(ImagingError::InvalidParameter(_))));
    }
}
