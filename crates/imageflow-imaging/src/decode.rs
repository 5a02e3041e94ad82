//! Decoding with limits checked from the header before any pixel buffer exists.
//!
//! JPEG goes through libjpeg-turbo (with DCT-domain downscaling for [`decode_at_least`]),
//! PNG and WebP through the `image` crate. EXIF orientation is applied after decoding, so
//! every dimension this module reports is the displayed (oriented) one.
//!
//! # Truncated and damaged JPEG data
//!
//! libjpeg-turbo reports damage to the entropy-coded data ("Premature end of JPEG file",
//! "Corrupt JPEG data: bad Huffman code", ...) as a *warning* and fills what it could not
//! decode with grey. This crate refuses such input with [`ImagingError::Corrupt`] rather
//! than return a half-grey picture. Warnings that lose no pixels (extraneous bytes before a
//! marker, an unknown JFIF revision, an unknown Adobe transform, a bad ICC marker) are
//! accepted, because many cameras and editors write them.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder};
use turbojpeg::{Colorspace, DecompressHeader, Decompressor, PixelFormat, ScalingFactor};

use crate::error::ImagingError;
use crate::format::{ImageFormat, sniff_format};
use crate::image::Image;
use crate::limits::Limits;
use crate::orientation::{Orientation, apply_orientation, read_orientation};
use crate::planes::{self, Planes};

/// What [`probe`] learns from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The container format, from the magic bytes.
    pub format: ImageFormat,
    /// Displayed width (after EXIF orientation).
    pub width: u32,
    /// Displayed height (after EXIF orientation).
    pub height: u32,
}

/// A decoded image and where it came from.
#[derive(Debug)]
pub struct Decoded {
    /// The pixels, EXIF orientation applied. For [`decode_at_least`] possibly smaller than
    /// the source.
    pub image: Image,
    /// The source format.
    pub format: ImageFormat,
    /// Full displayed width of the source, whatever scale was decoded.
    pub original_width: u32,
    /// Full displayed height of the source, whatever scale was decoded.
    pub original_height: u32,
}

/// Reads the header only: format, displayed size, and the limits check. No pixel buffer is
/// allocated, so this is cheap enough to run before admitting a request.
pub fn probe(data: &[u8], limits: &Limits) -> Result<ImageInfo, ImagingError> {
    let header = Header::read(data, limits)?;
    let (width, height) = header.oriented_size();
    Ok(ImageInfo {
        format: header.format,
        width,
        height,
    })
}

/// Decodes at full size. The header is read and checked against `limits` before any pixel
/// buffer is allocated, so a decompression bomb (a tiny file declaring 100000x100000) costs
/// microseconds. EXIF orientation is applied.
pub fn decode(data: &[u8], limits: &Limits) -> Result<Decoded, ImagingError> {
    let header = Header::read(data, limits)?;
    header.decode(data, 0, 0)
}

/// Like [`decode`], but a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain:
/// the largest reduction whose result is still at least `min_width` x `min_height` in
/// displayed (oriented) coordinates. A big reduction then decodes only what it needs.
/// PNG and WebP are decoded at full size. `original_width`/`original_height` always report
/// the full displayed source size, and the limits apply to that full size.
pub fn decode_at_least(
    data: &[u8],
    limits: &Limits,
    min_width: u32,
    min_height: u32,
) -> Result<Decoded, ImagingError> {
    let header = Header::read(data, limits)?;
    header.decode(data, min_width, min_height)
}

/// Everything known before decoding pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) format: ImageFormat,
    /// Stored width, before orientation.
    width: u32,
    /// Stored height, before orientation.
    height: u32,
    orientation: Orientation,
    jpeg: Option<DecompressHeader>,
}

impl Header {
    /// Checks the input size, sniffs the format, reads the dimensions and EXIF orientation,
    /// and checks the dimensions against `limits`.
    pub(crate) fn read(data: &[u8], limits: &Limits) -> Result<Self, ImagingError> {
        limits.check_input(data)?;
        let format = sniff_format(data).ok_or(ImagingError::UnsupportedFormat)?;
        let (width, height, jpeg) = match format {
            ImageFormat::Jpeg => {
                // A fresh instance, not this thread's: for data with no frame header
                // before its end (a cut after the first few markers), TurboJPEG
                // returns success without updating the sizes, and a reused instance
                // would report the previous image's.
                let h = turbojpeg::read_header(data).map_err(|e| {
                    ImagingError::Corrupt(format!("JPEG header could not be read: {e}"))
                })?;
                let w = u32::try_from(h.width).unwrap_or(u32::MAX);
                let hh = u32::try_from(h.height).unwrap_or(u32::MAX);
                (w, hh, Some(h))
            }
            ImageFormat::Png => {
                let (w, h) = png_header(data)?;
                (w, h, None)
            }
            ImageFormat::Webp => {
                let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(data))
                    .map_err(|e| corrupt(ImageFormat::Webp, "header could not be read", &e))?;
                let (w, h) = decoder.dimensions();
                (w, h, None)
            }
        };
        if width == 0 || height == 0 {
            return Err(ImagingError::Corrupt(format!(
                "{format} header declares a {width}x{height} image; both sides must be at least 1"
            )));
        }
        limits.check_dimensions(width, height)?;
        let orientation = read_orientation(data, format);
        Ok(Header {
            format,
            width,
            height,
            orientation,
            jpeg,
        })
    }

    /// Displayed `(width, height)` of the full source.
    pub(crate) fn oriented_size(&self) -> (u32, u32) {
        self.orientation.oriented(self.width, self.height)
    }

    /// The JPEG header when this source is a JPEG shown as stored (no EXIF rotation or
    /// mirroring), so its rows can be used as they decode.
    pub(crate) fn upright_jpeg(&self) -> Option<DecompressHeader> {
        self.jpeg
            .filter(|_| self.orientation == Orientation::Normal)
    }

    /// The JPEG header when this source can take the YCbCr plane path
    /// ([`crate::planes`]): a plane-friendly JPEG shown as stored.
    pub(crate) fn plane_jpeg(&self) -> Option<DecompressHeader> {
        self.upright_jpeg().filter(planes::plane_source)
    }

    /// Decodes a [`Self::plane_jpeg`] source to its planes at the largest DCT reduction
    /// that keeps luma at least `min_width` x `min_height` (0, 0: full size).
    pub(crate) fn decode_planes(
        &self,
        data: &[u8],
        jpeg: &DecompressHeader,
        min_width: u32,
        min_height: u32,
    ) -> Result<Planes, ImagingError> {
        planes::decode_planes(data, jpeg, plane_scale(jpeg, min_width, min_height))
    }

    /// Decodes the pixels (JPEG possibly DCT-scaled so the displayed result is at least
    /// `min_width` x `min_height`; pass 0, 0 for full size) and applies the orientation.
    pub(crate) fn decode(
        &self,
        data: &[u8],
        min_width: u32,
        min_height: u32,
    ) -> Result<Decoded, ImagingError> {
        let image = match (self.format, self.jpeg) {
            (ImageFormat::Jpeg, Some(jpeg)) => {
                // The scale is chosen in stored coordinates: swap the wish when the
                // orientation swaps the sides.
                let (need_w, need_h) = if self.orientation.swaps_dimensions() {
                    (min_height, min_width)
                } else {
                    (min_width, min_height)
                };
                let scale = if (min_width == 0 && min_height == 0) || jpeg.is_lossless {
                    ScalingFactor::ONE
                } else {
                    choose_scale(jpeg.width, jpeg.height, need_w, need_h)
                };
                decode_jpeg(data, &jpeg, scale)?
            }
            (ImageFormat::Png, _) => {
                let decoder = image::codecs::png::PngDecoder::with_limits(
                    Cursor::new(data),
                    image_limits(self.width, self.height),
                )
                .map_err(|e| corrupt(ImageFormat::Png, "header could not be read", &e))?;
                from_dynamic(self.format, DynamicImage::from_decoder(decoder))?
            }
            (ImageFormat::Webp, _) | (ImageFormat::Jpeg, None) => {
                let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(data))
                    .map_err(|e| corrupt(ImageFormat::Webp, "header could not be read", &e))?;
                from_dynamic(self.format, DynamicImage::from_decoder(decoder))?
            }
        };
        let image = apply_orientation(image, self.orientation);
        let (original_width, original_height) = self.oriented_size();
        Ok(Decoded {
            image,
            format: self.format,
            original_width,
            original_height,
        })
    }
}

/// The DCT reduction [`Header::decode_planes`] decodes a plane JPEG at: the largest
/// that keeps luma at least `min_width` x `min_height` (0, 0: none).
pub(crate) fn plane_scale(
    jpeg: &DecompressHeader,
    min_width: u32,
    min_height: u32,
) -> ScalingFactor {
    if min_width == 0 && min_height == 0 {
        ScalingFactor::ONE
    } else {
        choose_scale(jpeg.width, jpeg.height, min_width, min_height)
    }
}

/// The DCT reductions used, smallest first: the ones libjpeg-turbo has SIMD inverse
/// DCTs for. It decodes every n/8, but 3/8, 5/8 and up run plain C: on the 1080p
/// fixture a 3/8 decode (720x405) took 4.35 ms against 3.57 ms at 1/2 (960x540), so a
/// smaller n/8 result is not a cheaper one.
const REDUCTIONS: [(usize, usize); 3] = [(1, 8), (1, 4), (1, 2)];

/// The largest reduction of [`REDUCTIONS`] that keeps the stored size at least
/// `need_w` x `need_h`; 1/1 when none does.
pub(crate) fn choose_scale(width: usize, height: usize, need_w: u32, need_h: u32) -> ScalingFactor {
    let need_w = need_w as usize;
    let need_h = need_h as usize;
    REDUCTIONS
        .into_iter()
        .map(|(num, denom)| ScalingFactor::new(num, denom))
        .find(|s| s.scale(width) >= need_w && s.scale(height) >= need_h)
        .unwrap_or(ScalingFactor::ONE)
}

/// A progressive JPEG with thousands of scans is a known denial-of-service pattern; real
/// encoders write about ten.
const MAX_JPEG_SCANS: u32 = 500;

fn decode_jpeg(
    data: &[u8],
    header: &DecompressHeader,
    scale: ScalingFactor,
) -> Result<Image, ImagingError> {
    let width = scale.scale(header.width);
    let height = scale.scale(header.height);
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, channels) = if cmyk {
        (PixelFormat::CMYK, 4)
    } else {
        (PixelFormat::RGB, 3)
    };
    let mut pixels = vec![0u8; width * height * channels];
    decompress_scaled(scale, |d| {
        d.decompress(
            data,
            turbojpeg::Image {
                pixels: pixels.as_mut_slice(),
                width,
                pitch: width * channels,
                height,
                format,
            },
        )
    })?;
    if cmyk {
        pixels = cmyk_to_rgb(&pixels);
    }
    // Both sides are at most the header's, which passed the u32 limits check.
    Ok(Image::from_parts(width as u32, height as u32, 3, pixels))
}

/// Runs `f` with a fresh decompressor set to `scale` and the scan limit, and reports the
/// outcome as [`check_decompress`] does.
///
/// Fresh, not one kept per thread: libjpeg keeps the Huffman and quantization tables of
/// the images it decoded before (for abbreviated streams), so a JPEG that lacks one
/// would decode with another request's. `tj3Init` costs a few small allocations against
/// milliseconds of decoding.
pub(crate) fn decompress_scaled(
    scale: ScalingFactor,
    f: impl FnOnce(&mut Decompressor) -> turbojpeg::Result<()>,
) -> Result<(), ImagingError> {
    let run = || {
        let mut decompressor = Decompressor::new()?;
        decompressor.set_scaling_factor(scale)?;
        decompressor.set_scan_limit(MAX_JPEG_SCANS)?;
        f(&mut decompressor)
    };
    check_decompress(run())
}

/// A decompression's outcome as this crate reports it: harmless warnings pass, damage is
/// [`ImagingError::Corrupt`] (see the module docs).
fn check_decompress(result: turbojpeg::Result<()>) -> Result<(), ImagingError> {
    match result {
        Ok(()) => Ok(()),
        Err(turbojpeg::Error::TurboJpegError(msg)) if is_harmless_jpeg_warning(&msg) => Ok(()),
        Err(e) => Err(jpeg_damage(&strip_tj_prefix(&e))),
    }
}

/// libjpeg's message about damaged data as this crate reports it.
pub(crate) fn jpeg_damage(msg: &str) -> ImagingError {
    ImagingError::Corrupt(format!(
        "JPEG data could not be decoded (truncated or damaged?): {msg}"
    ))
}

fn strip_tj_prefix(e: &turbojpeg::Error) -> String {
    match e {
        turbojpeg::Error::TurboJpegError(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// libjpeg warnings after which every pixel was still decoded.
pub(crate) fn is_harmless_jpeg_warning(msg: &str) -> bool {
    const HARMLESS: [&str; 4] = [
        "extraneous bytes before marker",
        "Warning: unknown JFIF revision",
        "Unknown Adobe color transform",
        "bad ICC marker",
    ];
    HARMLESS.iter().any(|w| msg.contains(w))
}

/// Adobe CMYK JPEGs store inverted ink values, so the displayed colour is `c * k / 255`.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let k = u16::from(px[3]);
        for &c in &px[..3] {
            rgb.push(((u16::from(c) * k + 127) / 255) as u8);
        }
    }
    rgb
}

/// Width and height from the PNG IHDR chunk (bytes 16..24), and the palette check below,
/// without the PNG decoder: everything a PNG header must pass before decoding.
fn png_header(data: &[u8]) -> Result<(u32, u32), ImagingError> {
    let ihdr = data.get(8..24).ok_or_else(|| {
        ImagingError::Corrupt(format!(
            "PNG is {} bytes, too short to hold the IHDR header",
            data.len()
        ))
    })?;
    if &ihdr[4..8] != b"IHDR" {
        return Err(ImagingError::Corrupt(
            "PNG does not start with an IHDR chunk".to_owned(),
        ));
    }
    let width = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
    let height = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
    check_png_palette(data)?;
    Ok((width, height))
}

/// Refuses a PLTE chunk that is not whole RGB entries, which the PNG spec calls an
/// error. The `png` crate checks only its length (3..=768) and then panics expanding
/// the last, partial entry. Walks the chunk headers up to the first IDAT (where the
/// palette must be), so it costs a hop per chunk; what it cannot reach (a cut file) is
/// left to the decoder to report.
fn check_png_palette(data: &[u8]) -> Result<(), ImagingError> {
    let mut at = 8;
    while let Some(head) = data.get(at..).and_then(|rest| rest.get(..8)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..8] {
            b"IDAT" | b"IEND" => break,
            b"PLTE" if len % 3 != 0 => {
                return Err(ImagingError::Corrupt(format!(
                    "PNG palette (PLTE) is {len} bytes, not a whole number of 3-byte RGB entries"
                )));
            }
            _ => {}
        }
        // Length, type, data, CRC.
        at = match usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_add(12))
            .and_then(|n| at.checked_add(n))
        {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

/// Limits for the `image` decoders: the declared size already passed our check, so these
/// only stop a decoder from allocating far more than the image needs (16-bit RGBA plus
/// room for metadata chunks).
fn image_limits(width: u32, height: u32) -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + 64 * 1024 * 1024);
    limits
}

fn from_dynamic(
    format: ImageFormat,
    decoded: image::ImageResult<DynamicImage>,
) -> Result<Image, ImagingError> {
    let dynamic = decoded.map_err(|e| corrupt(format, "data could not be decoded", &e))?;
    let (width, height) = (dynamic.width(), dynamic.height());
    let image = if dynamic.color().has_alpha() {
        Image::from_parts(width, height, 4, dynamic.into_rgba8().into_raw())
    } else {
        Image::from_parts(width, height, 3, dynamic.into_rgb8().into_raw())
    };
    Ok(image)
}

fn corrupt(format: ImageFormat, what: &str, e: &image::ImageError) -> ImagingError {
    match e {
        image::ImageError::Limits(l) => ImagingError::Corrupt(format!(
            "{format} {what}: it needs more memory than its size justifies ({l})"
        )),
        other => ImagingError::Corrupt(format!("{format} {what} (truncated or damaged?): {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_choice() {
        let s = |w, h, nw, nh| {
            let f = choose_scale(w, h, nw, nh);
            (f.num(), f.denom())
        };
        assert_eq!(s(1920, 1080, 800, 450), (1, 2));
        assert_eq!(s(1920, 1080, 240, 135), (1, 8));
        assert_eq!(s(1920, 1080, 241, 135), (1, 4));
        assert_eq!(s(1920, 1080, 640, 360), (1, 2));
        assert_eq!(s(1920, 1080, 961, 10), (1, 1));
        // Every choice is one tj3SetScalingFactor accepts.
        let supported = Decompressor::supported_scaling_factors();
        for (num, denom) in REDUCTIONS {
            assert!(
                supported.contains(&ScalingFactor::new(num, denom)),
                "{num}/{denom}"
            );
        }
        assert_eq!(s(1920, 1080, 1000, 10), (1, 1));
        assert_eq!(s(1, 1, 1, 1), (1, 8));
    }

    #[test]
    fn harmless_warnings() {
        assert!(is_harmless_jpeg_warning(
            "Corrupt JPEG data: 2 extraneous bytes before marker 0xd9"
        ));
        assert!(!is_harmless_jpeg_warning("Premature end of JPEG file"));
        assert!(!is_harmless_jpeg_warning(
            "Corrupt JPEG data: bad Huffman code"
        ));
    }

    #[test]
    fn cmyk_inverted() {
        assert_eq!(cmyk_to_rgb(&[255, 0, 128, 255]), vec![255, 0, 128]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), vec![0, 0, 0]);
    }
}
