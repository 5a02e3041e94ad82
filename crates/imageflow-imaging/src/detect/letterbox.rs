//! Letterboxing: scale to fit, centre, pad with grey.

use crate::decode::Header;
use crate::error::ImagingError;
use crate::format::ImageFormat;
use crate::image::Image;
use crate::limits::Limits;
use crate::resize::{ResizeQuality, resize};

/// The grey the YOLO family pads with (Ultralytics `LetterBox`).
pub const LETTERBOX_PAD: u8 = 114;

/// 0..255 to 0..1: one lookup instead of a division per sample.
const UNIT: [f32; 256] = {
    let mut table = [0.0; 256];
    let mut v = 0;
    while v < 256 {
        table[v] = v as f32 / 255.0;
        v += 1;
    }
    table
};

/// [`LETTERBOX_PAD`] in the tensor.
pub(super) const PAD_VALUE: f32 = UNIT[LETTERBOX_PAD as usize];

/// Where a source image went inside the model input: `input = source * scale +
/// pad`. Kept with each request to map boxes back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Source size the boxes are reported in (the full displayed image).
    pub source_width: u32,
    pub source_height: u32,
    /// Model input size.
    pub input_width: u32,
    pub input_height: u32,
    /// Size of the scaled image inside the input.
    pub content_width: u32,
    pub content_height: u32,
    /// Source pixels to input pixels.
    pub scale: f32,
    /// Left and top padding in input pixels.
    pub pad_x: u32,
    pub pad_y: u32,
}

impl Letterbox {
    /// The geometry for a `source_width` x `source_height` image in an
    /// `input_width` x `input_height` model input. Scales up as well as down,
    /// like Ultralytics' default; the padding is split evenly (odd pixel right
    /// and bottom).
    pub fn new(
        source_width: u32,
        source_height: u32,
        input_width: u32,
        input_height: u32,
    ) -> Result<Self, ImagingError> {
        if source_width == 0 || source_height == 0 || input_width == 0 || input_height == 0 {
            return Err(ImagingError::InvalidParameter(format!(
                "letterbox of {source_width}x{source_height} into {input_width}x{input_height}: a side is zero"
            )));
        }
        let scale = (input_width as f32 / source_width as f32)
            .min(input_height as f32 / source_height as f32);
        let content_width = ((source_width as f32 * scale).round() as u32).clamp(1, input_width);
        let content_height = ((source_height as f32 * scale).round() as u32).clamp(1, input_height);
        Ok(Letterbox {
            source_width,
            source_height,
            input_width,
            input_height,
            content_width,
            content_height,
            scale,
            pad_x: (input_width - content_width) / 2,
            pad_y: (input_height - content_height) / 2,
        })
    }

    /// Maps a point of the model input back to source pixels, clamped to the
    /// source image.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = (x - self.pad_x as f32) / self.scale;
        let sy = (y - self.pad_y as f32) / self.scale;
        (
            sx.clamp(0.0, self.source_width as f32),
            sy.clamp(0.0, self.source_height as f32),
        )
    }

    /// Number of `f32` one image takes in the input tensor (3 planes).
    pub fn tensor_len(&self) -> usize {
        3 * self.input_width as usize * self.input_height as usize
    }
}

/// Letterboxes `image` into `out`, a planar `[3, input_height, input_width]`
/// RGB tensor of values in 0..1 (alpha is dropped).
///
/// `image` may be a reduced decode of the source (a JPEG decoded at 1/2 scale
/// in the DCT domain): the geometry follows the full `source_width` x
/// `source_height`, so boxes come back in the source's pixels either way.
/// Resampling is bilinear, as the models were trained with.
pub fn letterbox_into(
    image: &Image,
    source_width: u32,
    source_height: u32,
    input_width: u32,
    input_height: u32,
    out: &mut [f32],
) -> Result<Letterbox, ImagingError> {
    let geometry = Letterbox::new(source_width, source_height, input_width, input_height)?;
    check_tensor_len(&geometry, out)?;
    let scaled;
    let content =
        if (image.width(), image.height()) == (geometry.content_width, geometry.content_height) {
            image
        } else {
            scaled = resize(
                image,
                geometry.content_width,
                geometry.content_height,
                ResizeQuality::Fast,
            )?;
            &scaled
        };

    fill_padding(&geometry, out);
    let plane = input_width as usize * input_height as usize;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let channels = usize::from(content.channels());
    let row_len = geometry.content_width as usize * channels;
    for (y, row) in content.pixels().chunks_exact(row_len).enumerate() {
        let start = (y + geometry.pad_y as usize) * input_width as usize + geometry.pad_x as usize;
        let end = start + geometry.content_width as usize;
        let (r, g, b) = (
            &mut red[start..end],
            &mut green[start..end],
            &mut blue[start..end],
        );
        for (x, px) in row.chunks_exact(channels).enumerate() {
            r[x] = UNIT[usize::from(px[0])];
            g[x] = UNIT[usize::from(px[1])];
            b[x] = UNIT[usize::from(px[2])];
        }
    }
    Ok(geometry)
}

/// A model input made from an encoded image ([`letterbox_encoded`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Letterboxed {
    /// The planar `[3, input_height, input_width]` RGB 0..1 tensor.
    pub tensor: Vec<f32>,
    /// Where the source went in it.
    pub letterbox: Letterbox,
    /// The source's format.
    pub format: ImageFormat,
}

/// Decodes `data` into the planar `[3, input_height, input_width]` RGB 0..1 model
/// input (see [`letterbox_into`]). The header is read once; a JPEG is decoded at the
/// largest DCT reduction that still covers the content (1/2 for 1080p into 640x360).
/// A single-scan YCbCr JPEG shown as stored (almost every camera and web photo) is
/// streamed ([`super::stream`]): resampled into the tensor on a second core while it
/// decodes, with the same tensor as [`letterbox_encoded_whole`]'s.
///
/// (A YCbCr plane variant, decoding planes and converting colour straight into the
/// floats, was measured and dropped: 5.3 ms against 4.2 ms for the RGB path on the
/// 1080p fixture, because resampling both chroma planes up to the content size costs
/// more than libjpeg-turbo's SIMD upsampling and colour conversion save.)
pub fn letterbox_encoded(
    data: &[u8],
    limits: &Limits,
    input_width: u32,
    input_height: u32,
) -> Result<Letterboxed, ImagingError> {
    let source = Source::read(data, limits, input_width, input_height)?;
    match source.streamed(data)? {
        Some(made) => Ok(made),
        None => source.whole(data),
    }
}

/// [`letterbox_encoded`] through the whole-image decode only, never streamed: the
/// reference the streamed letterbox is tested and benchmarked against.
pub fn letterbox_encoded_whole(
    data: &[u8],
    limits: &Limits,
    input_width: u32,
    input_height: u32,
) -> Result<Letterboxed, ImagingError> {
    Source::read(data, limits, input_width, input_height)?.whole(data)
}

/// [`letterbox_encoded`] streamed only: `Ok(None)` where it would take the whole-image
/// path (not a single-scan YCbCr JPEG shown as stored, or a resampling the library
/// must do). For tests and benchmarks.
pub fn letterbox_encoded_streamed(
    data: &[u8],
    limits: &Limits,
    input_width: u32,
    input_height: u32,
) -> Result<Option<Letterboxed>, ImagingError> {
    Source::read(data, limits, input_width, input_height)?.streamed(data)
}

/// A source's header, checked against the limits, and its place in the model input.
struct Source {
    header: Header,
    letterbox: Letterbox,
}

impl Source {
    fn read(
        data: &[u8],
        limits: &Limits,
        input_width: u32,
        input_height: u32,
    ) -> Result<Self, ImagingError> {
        let header = Header::read(data, limits)?;
        let (source_width, source_height) = header.oriented_size();
        let letterbox = Letterbox::new(source_width, source_height, input_width, input_height)?;
        Ok(Self { header, letterbox })
    }

    fn made(&self, tensor: Vec<f32>) -> Letterboxed {
        Letterboxed {
            tensor,
            letterbox: self.letterbox,
            format: self.header.format,
        }
    }

    fn streamed(&self, data: &[u8]) -> Result<Option<Letterboxed>, ImagingError> {
        let Some(jpeg) = self.header.upright_jpeg() else {
            return Ok(None);
        };
        Ok(streamed(data, &jpeg, self.letterbox)?.map(|tensor| self.made(tensor)))
    }

    fn whole(&self, data: &[u8]) -> Result<Letterboxed, ImagingError> {
        let lb = self.letterbox;
        let decoded = self
            .header
            .decode(data, lb.content_width, lb.content_height)?;
        let mut tensor = vec![0.0; lb.tensor_len()];
        letterbox_into(
            &decoded.image,
            lb.source_width,
            lb.source_height,
            lb.input_width,
            lb.input_height,
            &mut tensor,
        )?;
        Ok(self.made(tensor))
    }
}

/// [`super::stream::letterbox_streamed`] at the whole-image decode's DCT scale.
fn streamed(
    data: &[u8],
    jpeg: &turbojpeg::DecompressHeader,
    letterbox: Letterbox,
) -> Result<Option<Vec<f32>>, ImagingError> {
    #[cfg(target_arch = "x86_64")]
    {
        let scale = crate::decode::choose_scale(
            jpeg.width,
            jpeg.height,
            letterbox.content_width,
            letterbox.content_height,
        );
        super::stream::letterbox_streamed(data, jpeg, scale, letterbox)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (data, jpeg, letterbox);
        Ok(None)
    }
}

/// 0..255 samples to 0..1 values.
pub(super) fn to_unit(samples: &[u8], out: &mut [f32]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = UNIT[usize::from(s)];
    }
}

fn check_tensor_len(geometry: &Letterbox, out: &[f32]) -> Result<(), ImagingError> {
    if out.len() == geometry.tensor_len() {
        return Ok(());
    }
    Err(ImagingError::InvalidParameter(format!(
        "letterbox output holds {} values, a {}x{} RGB tensor needs {}",
        out.len(),
        geometry.input_width,
        geometry.input_height,
        geometry.tensor_len()
    )))
}

/// Grey in every tensor value outside the content rectangle.
fn fill_padding(geometry: &Letterbox, out: &mut [f32]) {
    let pad = PAD_VALUE;
    let width = geometry.input_width as usize;
    let (left, content) = (geometry.pad_x as usize, geometry.content_width as usize);
    let top = geometry.pad_y as usize;
    let bottom = top + geometry.content_height as usize;
    for plane in out.chunks_exact_mut(width * geometry.input_height as usize) {
        for (y, row) in plane.chunks_exact_mut(width).enumerate() {
            if y < top || y >= bottom {
                row.fill(pad);
            } else {
                row[..left].fill(pad);
                row[left + content..].fill(pad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_wide_image_is_centred_vertically() {
        let lb = Letterbox::new(1920, 1080, 640, 640).unwrap();
        assert_eq!((lb.content_width, lb.content_height), (640, 360));
        assert_eq!((lb.pad_x, lb.pad_y), (0, 140));
        assert!((lb.scale - 1.0 / 3.0).abs() < 1e-6);
        // Corners of the content map to the corners of the source.
        assert_eq!(lb.to_source(0.0, 140.0), (0.0, 0.0));
        let (x, y) = lb.to_source(640.0, 500.0);
        assert!((x - 1920.0).abs() < 1e-3 && (y - 1080.0).abs() < 1e-3);
        // Points in the padding clamp to the image.
        assert_eq!(lb.to_source(-5.0, 0.0), (0.0, 0.0));
    }

    #[test]
    fn small_images_scale_up_and_tall_ones_pad_sideways() {
        let lb = Letterbox::new(300, 451, 640, 640).unwrap();
        assert_eq!(lb.content_height, 640);
        assert_eq!(lb.content_width, 426);
        assert_eq!(lb.pad_x, 107);
        assert!(Letterbox::new(0, 10, 640, 640).is_err());
    }

    #[test]
    fn the_tensor_is_planar_rgb_with_grey_padding() {
        // 4x2 image: left half red, right half blue.
        let mut pixels = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                pixels.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        let image = Image::new(4, 2, 3, pixels).unwrap();
        let mut out = vec![0.0; 3 * 8 * 8];
        let lb = letterbox_into(&image, 4, 2, 8, 8, &mut out).unwrap();
        assert_eq!((lb.content_width, lb.content_height, lb.pad_y), (8, 4, 2));
        let at = |c: usize, x: usize, y: usize| out[c * 64 + y * 8 + x];
        let grey = 114.0 / 255.0;
        assert!((at(0, 0, 0) - grey).abs() < 1e-6, "top padding is grey");
        assert!((at(2, 7, 7) - grey).abs() < 1e-6, "bottom padding is grey");
        assert!(at(0, 0, 3) > 0.99 && at(2, 0, 3) < 0.01, "left is red");
        assert!(at(2, 7, 4) > 0.99 && at(0, 7, 4) < 0.01, "right is blue");
        let mut short = vec![0.0; 10];
        assert!(letterbox_into(&image, 4, 2, 8, 8, &mut short).is_err());
    }

    #[test]
    fn a_reduced_decode_keeps_source_coordinates() {
        // A 200x100 decode of a 400x200 source: the geometry is the source's.
        let image = Image::new(200, 100, 3, vec![10; 200 * 100 * 3]).unwrap();
        let mut out = vec![0.0; 3 * 64 * 64];
        let lb = letterbox_into(&image, 400, 200, 64, 64, &mut out).unwrap();
        assert_eq!((lb.source_width, lb.source_height), (400, 200));
        assert_eq!((lb.content_width, lb.content_height), (64, 32));
        let (x, _) = lb.to_source(64.0, 32.0);
        assert!((x - 400.0).abs() < 1e-3);
    }

    #[test]
    fn from_encoded_bytes_is_decode_then_letterbox() {
        let jpeg = include_bytes!("../../tests/fixtures/coffee.jpg");
        let limits = Limits::default();
        let decoded = crate::decode::decode_at_least(jpeg, &limits, 64, 43).unwrap();
        let mut reference = vec![1.0; 3 * 64 * 64];
        letterbox_into(&decoded.image, 600, 400, 64, 64, &mut reference).unwrap();
        for made in [
            letterbox_encoded(jpeg, &limits, 64, 64).unwrap(),
            letterbox_encoded_whole(jpeg, &limits, 64, 64).unwrap(),
        ] {
            assert_eq!(made.format, ImageFormat::Jpeg);
            let lb = made.letterbox;
            assert_eq!((lb.source_width, lb.source_height), (600, 400));
            assert!(made.tensor == reference, "padding included");
        }
        assert!(matches!(
            letterbox_encoded(jpeg, &limits, 0, 64),
            Err(ImagingError::InvalidParameter(_))
        ));
        assert!(matches!(
            letterbox_encoded(b"not an image", &limits, 64, 64),
            Err(ImagingError::UnsupportedFormat)
        ));
    }
}
