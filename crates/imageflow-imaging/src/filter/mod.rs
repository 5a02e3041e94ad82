//! Filters: blurs, unsharp mask, and PIL-compatible colour enhancements.
//!
//! Every filter works in place on an 8-bit RGB or RGBA [`Image`] and never modifies alpha.
//! Intensity ranges are inclusive and validated strictly: NaN, infinities and values
//! outside the range are [`ImagingError::InvalidParameter`] naming the filter and range.
//!
//! [`filter_encoded`] runs the linear filters (gaussian, sharpen) of a 4:2:0 JPEG made
//! into a JPEG on its YCbCr planes instead ([`crate::planes`]).

mod blur;
mod color;

use std::fmt;

use turbojpeg::{DecompressHeader, Subsamp};

use crate::decode::Header;
use crate::encode::{EncodeOptions, Encoded, encode};
use crate::error::ImagingError;
use crate::format::ImageFormat;
use crate::helper::join;
use crate::image::Image;
use crate::limits::Limits;
use crate::planes::{Planes, encode_planes_420};

pub use blur::gaussian_kernel;

/// The available filters. The meaning of `intensity` is per filter:
///
/// | filter | intensity | range | effect |
/// | --- | --- | --- | --- |
/// | `blur` | box radius in px, `round(intensity)` | 0.5 ..= 100 | box blur, separable running sums, O(1) per pixel |
/// | `gaussian` | sigma in px | 0.1 ..= 100 | true Gaussian, kernel radius `ceil(3 sigma)`, edges clamped |
/// | `sharpen` | amount | 0 ..= 10 | unsharp mask: `orig + amount * (orig - gaussian(orig, sigma 1))` |
/// | `brightness` | factor | 0 ..= 10 | `v * factor` (PIL `ImageEnhance.Brightness`; 1 = unchanged) |
/// | `contrast` | factor | 0 ..= 10 | `mean + (v - mean) * factor`, mean = mean luma (PIL `ImageEnhance.Contrast`) |
/// | `saturation` | factor | 0 ..= 10 | `luma + (v - luma) * factor` per pixel (PIL `ImageEnhance.Color`) |
/// | `grayscale` | amount | 0 ..= 1 | blend toward Rec.601 luma; 1 = fully grey, output stays RGB |
///
/// Luma is Rec.601 as PIL computes it: `(19595 R + 38470 G + 7471 B + 32768) >> 16`.
/// All results are rounded to the nearest level and clamped to 0..=255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// Box blur.
    Blur,
    /// Gaussian blur.
    Gaussian,
    /// Unsharp mask.
    Sharpen,
    /// Brightness factor.
    Brightness,
    /// Contrast factor around the mean luma.
    Contrast,
    /// Colour saturation factor.
    Saturation,
    /// Desaturation toward luma.
    Grayscale,
}

impl FilterKind {
    /// Every filter, in wire order.
    pub const ALL: [FilterKind; 7] = [
        FilterKind::Blur,
        FilterKind::Gaussian,
        FilterKind::Sharpen,
        FilterKind::Brightness,
        FilterKind::Contrast,
        FilterKind::Saturation,
        FilterKind::Grayscale,
    ];

    /// Lower-case name: `"blur"`, `"gaussian"`, `"sharpen"`, `"brightness"`, `"contrast"`,
    /// `"saturation"`, `"grayscale"`.
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::Blur => "blur",
            FilterKind::Gaussian => "gaussian",
            FilterKind::Sharpen => "sharpen",
            FilterKind::Brightness => "brightness",
            FilterKind::Contrast => "contrast",
            FilterKind::Saturation => "saturation",
            FilterKind::Grayscale => "grayscale",
        }
    }

    /// Parses a name case-insensitively. Accepts the names above, the proto enum names
    /// (`"FILTER_TYPE_GAUSSIAN"`), and the aliases `box_blur`, `gaussian_blur`, `color`,
    /// `greyscale`, `gray`, `grey`. Unknown names are `None`.
    pub fn from_name(s: &str) -> Option<Self> {
        let lower = s.trim().to_ascii_lowercase().replace('-', "_");
        let name = lower.strip_prefix("filter_type_").unwrap_or(&lower);
        match name {
            "blur" | "box_blur" | "box" => Some(FilterKind::Blur),
            "gaussian" | "gaussian_blur" | "gauss" => Some(FilterKind::Gaussian),
            "sharpen" | "unsharp" | "unsharp_mask" => Some(FilterKind::Sharpen),
            "brightness" => Some(FilterKind::Brightness),
            "contrast" => Some(FilterKind::Contrast),
            "saturation" | "color" | "colour" => Some(FilterKind::Saturation),
            "grayscale" | "greyscale" | "gray" | "grey" => Some(FilterKind::Grayscale),
            _ => None,
        }
    }

    /// Inclusive `(min, max)` intensity.
    pub fn intensity_range(self) -> (f32, f32) {
        match self {
            FilterKind::Blur => (0.5, 100.0),
            FilterKind::Gaussian => (0.1, 100.0),
            FilterKind::Sharpen
            | FilterKind::Brightness
            | FilterKind::Contrast
            | FilterKind::Saturation => (0.0, 10.0),
            FilterKind::Grayscale => (0.0, 1.0),
        }
    }

    /// The intensity to use when a request gives none: blur radius 2, gaussian sigma 1,
    /// sharpen amount 1, brightness/contrast/saturation factor 1.2 (a visible but mild
    /// change), grayscale 1 (fully grey).
    pub fn default_intensity(self) -> f32 {
        match self {
            FilterKind::Blur => 2.0,
            FilterKind::Gaussian | FilterKind::Sharpen | FilterKind::Grayscale => 1.0,
            FilterKind::Brightness | FilterKind::Contrast | FilterKind::Saturation => 1.2,
        }
    }

    /// `Ok(intensity)` when finite and inside [`FilterKind::intensity_range`].
    pub fn validate_intensity(self, intensity: f32) -> Result<f32, ImagingError> {
        let (min, max) = self.intensity_range();
        if intensity.is_finite() && (min..=max).contains(&intensity) {
            Ok(intensity)
        } else {
            Err(ImagingError::InvalidParameter(format!(
                "{} intensity must be between {min} and {max} (inclusive), got {intensity}",
                self.name()
            )))
        }
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A filter and its intensity (see [`FilterKind`] for what intensity means).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterSpec {
    /// Which filter.
    pub kind: FilterKind,
    /// Its parameter.
    pub intensity: f32,
}

impl FilterSpec {
    /// `kind` with its [`FilterKind::default_intensity`].
    pub fn with_default_intensity(kind: FilterKind) -> Self {
        FilterSpec {
            kind,
            intensity: kind.default_intensity(),
        }
    }
}

/// Validates the intensity, then applies the filter in place. Alpha is never modified.
pub fn apply_filter(image: &mut Image, spec: &FilterSpec) -> Result<(), ImagingError> {
    let intensity = spec.kind.validate_intensity(spec.intensity)?;
    match spec.kind {
        FilterKind::Blur => blur::box_blur(image, intensity.round() as usize),
        FilterKind::Gaussian => blur::gaussian_blur(image, intensity),
        FilterKind::Sharpen => blur::unsharp_mask(image, intensity, 1.0),
        FilterKind::Brightness => color::brightness(image, intensity),
        FilterKind::Contrast => color::contrast(image, intensity),
        FilterKind::Saturation => color::saturation(image, intensity),
        FilterKind::Grayscale => color::saturation(image, 1.0 - intensity),
    }
    Ok(())
}

/// Decode, filter, encode: the hot path of filter-svc.
///
/// The intensity is validated before decoding. The output has the input's displayed size
/// and format (or `output_format`); JPEG quality is `jpeg_quality` or 90.
pub fn filter_encoded(
    data: &[u8],
    limits: &Limits,
    spec: &FilterSpec,
    output_format: Option<ImageFormat>,
    jpeg_quality: Option<u8>,
) -> Result<Encoded, ImagingError> {
    filter_encoded_with(data, limits, spec, output_format, jpeg_quality, true)
}

/// Like [`filter_encoded`] but always through interleaved RGB(A) pixels: what every
/// input and filter the plane path does not take gets, and the reference the plane path
/// is compared with in tests and benchmarks.
pub fn filter_encoded_rgb(
    data: &[u8],
    limits: &Limits,
    spec: &FilterSpec,
    output_format: Option<ImageFormat>,
    jpeg_quality: Option<u8>,
) -> Result<Encoded, ImagingError> {
    filter_encoded_with(data, limits, spec, output_format, jpeg_quality, false)
}

fn filter_encoded_with(
    data: &[u8],
    limits: &Limits,
    spec: &FilterSpec,
    output_format: Option<ImageFormat>,
    jpeg_quality: Option<u8>,
    planes_allowed: bool,
) -> Result<Encoded, ImagingError> {
    let intensity = spec.kind.validate_intensity(spec.intensity)?;
    let header = Header::read(data, limits)?;
    let quality = jpeg_quality.unwrap_or(EncodeOptions::DEFAULT_JPEG_QUALITY);
    let format = output_format.unwrap_or(header.format);
    if planes_allowed
        && format == ImageFormat::Jpeg
        && let Some((jpeg, sigma, sharpen)) = plane_filter(&header, spec.kind, intensity)
    {
        return filter_planes(data, &header, &jpeg, sigma, sharpen, quality);
    }
    let mut decoded = header.decode(data, 0, 0)?;
    apply_filter(&mut decoded.image, spec)?;
    let options = EncodeOptions {
        format,
        jpeg_quality: quality,
    };
    let data = encode(&decoded.image, &options)?;
    Ok(Encoded {
        data,
        format,
        width: decoded.image.width(),
        height: decoded.image.height(),
        original_width: decoded.original_width,
        original_height: decoded.original_height,
    })
}

/// The Gaussian's sigma and the unsharp amount when this filter on this source can run
/// on YCbCr planes: Gaussian and sharpen are linear, so filtering Y, Cb and Cr is
/// filtering R, G and B (up to rounding and clamping). Only 4:2:0 sources, whose chroma
/// is half size both ways and so takes half the sigma, and whose output keeps the
/// chroma grid it came with.
fn plane_filter(
    header: &Header,
    kind: FilterKind,
    intensity: f32,
) -> Option<(DecompressHeader, f32, Option<f32>)> {
    let jpeg = header
        .plane_jpeg()
        .filter(|j| j.subsamp == Subsamp::Sub2x2)?;
    match kind {
        FilterKind::Gaussian => Some((jpeg, intensity, None)),
        // The sigma apply_filter's sharpen uses.
        FilterKind::Sharpen => Some((jpeg, 1.0, Some(intensity))),
        _ => None,
    }
}

/// Decodes a 4:2:0 JPEG to planes, filters luma with `sigma` and chroma with `sigma / 2`
/// (on two threads), and encodes 4:2:0 from the planes.
fn filter_planes(
    data: &[u8],
    header: &Header,
    jpeg: &DecompressHeader,
    sigma: f32,
    sharpen: Option<f32>,
    quality: u8,
) -> Result<Encoded, ImagingError> {
    let Planes {
        mut y,
        mut cb,
        mut cr,
    } = header.decode_planes(data, jpeg, 0, 0)?;
    let ((), (cb, cr)) = join(
        || blur::gaussian_plane(&mut y, sigma, sharpen),
        move || {
            blur::gaussian_plane(&mut cb, sigma / 2.0, sharpen);
            blur::gaussian_plane(&mut cr, sigma / 2.0, sharpen);
            (cb, cr)
        },
    );
    let (width, height) = (y.width, y.height);
    Ok(Encoded {
        data: encode_planes_420(&y, &cb, &cr, quality)?,
        format: ImageFormat::Jpeg,
        width,
        height,
        original_width: width,
        original_height: height,
    })
}

/// Copies the alpha channel out of an RGBA image (`None` for RGB), so a filter can treat
/// all channels alike and [`restore_alpha`] can put alpha back untouched.
fn save_alpha(image: &Image) -> Option<Vec<u8>> {
    image
        .has_alpha()
        .then(|| image.pixels().chunks_exact(4).map(|p| p[3]).collect())
}

fn restore_alpha(image: &mut Image, alpha: Option<Vec<u8>>) {
    if let Some(alpha) = alpha {
        for (px, a) in image.pixels_mut().chunks_exact_mut(4).zip(alpha) {
            px[3] = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for k in FilterKind::ALL {
            assert_eq!(FilterKind::from_name(k.name()), Some(k));
            assert_eq!(FilterKind::from_name(&k.name().to_uppercase()), Some(k));
            let (min, max) = k.intensity_range();
            assert!(k.validate_intensity(k.default_intensity()).is_ok());
            assert!(k.validate_intensity(min).is_ok() && k.validate_intensity(max).is_ok());
        }
        assert_eq!(
            FilterKind::from_name("FILTER_TYPE_GAUSSIAN"),
            Some(FilterKind::Gaussian)
        );
        assert_eq!(FilterKind::from_name("sepia"), None);
        assert_eq!(FilterKind::from_name(""), None);
    }

    #[test]
    fn intensity_messages() {
        let msg = FilterKind::Gaussian
            .validate_intensity(f32::NAN)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid parameter: gaussian intensity must be between 0.1 and 100 (inclusive), got NaN"
        );
        assert!(FilterKind::Grayscale.validate_intensity(1.01).is_err());
        assert!(FilterKind::Blur.validate_intensity(f32::INFINITY).is_err());
        assert!(FilterKind::Brightness.validate_intensity(-0.0).is_ok());
    }
}
