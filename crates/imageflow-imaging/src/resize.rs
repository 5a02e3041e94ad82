//! Target-size arithmetic, resampling (`fast_image_resize`), and the resize hot path.

use std::cell::RefCell;

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::decode::Header;
use crate::encode::{EncodeOptions, Encoded, encode};
use crate::error::ImagingError;
use crate::format::ImageFormat;
use crate::helper::join;
use crate::image::Image;
use crate::limits::Limits;
use crate::planes::{Planes, chroma_420, encode_planes_420, resize_plane};

/// Resampling quality, from the wire's `ResizeQuality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeQuality {
    /// Bilinear filter; JPEG quality 75.
    Fast,
    /// Catmull-Rom bicubic filter; JPEG quality 85.
    #[default]
    Good,
    /// Lanczos3 filter; JPEG quality 95.
    Best,
}

impl ResizeQuality {
    /// JPEG quality that goes with this resampling quality: 75 / 85 / 95.
    pub fn jpeg_quality(self) -> u8 {
        match self {
            ResizeQuality::Fast => 75,
            ResizeQuality::Good => 85,
            ResizeQuality::Best => 95,
        }
    }

    /// `"FAST"`, `"GOOD"`, `"BEST"`.
    pub fn name(self) -> &'static str {
        match self {
            ResizeQuality::Fast => "FAST",
            ResizeQuality::Good => "GOOD",
            ResizeQuality::Best => "BEST",
        }
    }

    pub(crate) fn filter(self) -> FilterType {
        match self {
            ResizeQuality::Fast => FilterType::Bilinear,
            ResizeQuality::Good => FilterType::CatmullRom,
            ResizeQuality::Best => FilterType::Lanczos3,
        }
    }
}

/// The output size for a source of `src_w` x `src_h` and a requested box.
///
/// * `keep_aspect = false`: exactly `box_w` x `box_h`; a zero side is
///   [`ImagingError::InvalidParameter`].
/// * `keep_aspect = true`: the largest size with the source's aspect ratio that fits inside
///   the box (scaling up as well as down), each side rounded to the nearest pixel and at
///   least 1: 1920x1080 into 800x600 is 800x450, 1080x1920 into 800x600 is 338x600.
///   A zero side means "derive it from the aspect ratio" (width 800, height 0 on a
///   1920x1080 source is 800x450); both zero is an error.
///
/// The result is not checked against [`Limits`]; callers producing it do that.
pub fn fit_dimensions(
    src_w: u32,
    src_h: u32,
    box_w: u32,
    box_h: u32,
    keep_aspect: bool,
) -> Result<(u32, u32), ImagingError> {
    if src_w == 0 || src_h == 0 {
        return Err(ImagingError::InvalidParameter(format!(
            "source image is {src_w}x{src_h}; both sides must be at least 1"
        )));
    }
    if !keep_aspect {
        if box_w == 0 || box_h == 0 {
            return Err(ImagingError::InvalidParameter(format!(
                "target size {box_w}x{box_h} has a zero side; give both width and height \
                 (or keep the aspect ratio and give one of them)"
            )));
        }
        return Ok((box_w, box_h));
    }
    // Integer arithmetic in u128: exact for every u32 input.
    let (sw, sh, bw, bh) = (
        u128::from(src_w),
        u128::from(src_h),
        u128::from(box_w),
        u128::from(box_h),
    );
    let width_limited = match (box_w, box_h) {
        (0, 0) => {
            return Err(ImagingError::InvalidParameter(
                "target size 0x0: give a width, a height or both".to_owned(),
            ));
        }
        (_, 0) => true,
        (0, _) => false,
        // The width is the binding side when bw/sw <= bh/sh.
        _ => bw * sh <= bh * sw,
    };
    let (w, h) = if width_limited {
        let h = round_div(sh * bw, sw);
        let h = if box_h == 0 { h } else { h.min(bh) };
        (bw, h.max(1))
    } else {
        let w = round_div(sw * bh, sh);
        let w = if box_w == 0 { w } else { w.min(bw) };
        (w.max(1), bh)
    };
    Ok((saturate(w), saturate(h)))
}

/// `round(a / b)`, halves rounded up.
fn round_div(a: u128, b: u128) -> u128 {
    (2 * a + b) / (2 * b)
}

fn saturate(v: u128) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

thread_local! {
    /// `fast_image_resize` keeps scratch buffers in the resizer; reuse them per thread
    /// (for RGB(A) images here and single planes in [`crate::planes`]).
    pub(crate) static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resamples `image` to exactly `width` x `height` with `fast_image_resize` (SIMD chosen at
/// run time). RGBA is resized with premultiplied alpha, so transparent pixels do not bleed
/// colour. The same size returns a copy. A zero side is [`ImagingError::InvalidParameter`].
pub fn resize(
    image: &Image,
    width: u32,
    height: u32,
    quality: ResizeQuality,
) -> Result<Image, ImagingError> {
    if width == 0 || height == 0 {
        return Err(ImagingError::InvalidParameter(format!(
            "resize target {width}x{height} has a zero side"
        )));
    }
    if (width, height) == (image.width(), image.height()) {
        return Ok(image.clone());
    }
    let pixel_type = if image.has_alpha() {
        PixelType::U8x4
    } else {
        PixelType::U8x3
    };
    let internal = |e: &dyn std::fmt::Display| ImagingError::Encode(format!("resize: {e}"));
    let src = ImageRef::new(image.width(), image.height(), image.pixels(), pixel_type)
        .map_err(|e| internal(&e))?;
    let mut dst = FirImage::new(width, height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(quality.filter()))
        .use_alpha(image.has_alpha());
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .map_err(|e| internal(&e))?;
    Ok(Image::from_parts(
        width,
        height,
        image.channels(),
        dst.into_vec(),
    ))
}

/// What to make of an encoded image in [`resize_encoded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeSpec {
    /// Box (or exact) width; 0 with `keep_aspect` means "from the aspect ratio".
    pub width: u32,
    /// Box (or exact) height; 0 with `keep_aspect` means "from the aspect ratio".
    pub height: u32,
    /// Fit inside the box preserving the aspect ratio (see [`fit_dimensions`]).
    pub keep_aspect: bool,
    /// Resampling filter and JPEG quality.
    pub quality: ResizeQuality,
    /// Output format; `None` keeps the input's.
    pub output_format: Option<ImageFormat>,
}

/// Decode, resize, encode: the hot path of resize-svc.
///
/// 1. The header is read and the source checked against `limits` (no pixels yet).
/// 2. The output size comes from [`fit_dimensions`] on the displayed source size and is
///    checked against `limits` too, so a request for 100000x100000 is refused before any
///    work.
/// 3. A JPEG is decoded at the smallest DCT scale (1/8, 1/4, 3/8, ... 7/8) that still
///    covers the output size ([`crate::decode_at_least`]): 1920x1080 to 800x450 decodes
///    960x540.
/// 4. Resampled with the spec's filter and encoded in the input's format (or
///    `output_format`), JPEG at [`ResizeQuality::jpeg_quality`].
///
/// A YCbCr JPEG made into a JPEG takes the plane path ([`crate::planes`]): decoded to
/// its Y, Cb and Cr planes, each resampled on its own (luma and chroma on two threads),
/// and encoded 4:2:0 from the planes, with no colour conversion or chroma resampling in
/// between. A baseline 4:2:0 one is streamed ([`crate::stream`]): resampled and encoded
/// band by band on a second core while it decodes, with the same bytes as a result.
/// Anything else is decoded to RGB(A) as in [`resize_encoded_rgb`].
pub fn resize_encoded(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
) -> Result<Encoded, ImagingError> {
    resize_encoded_with(data, limits, spec, Route::Planes)
}

/// Like [`resize_encoded`] but always through interleaved RGB(A) pixels: what every
/// input that is not a plain YCbCr JPEG gets, and the reference the plane path is
/// compared with in tests and benchmarks.
pub fn resize_encoded_rgb(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
) -> Result<Encoded, ImagingError> {
    resize_encoded_with(data, limits, spec, Route::Rgb)
}

/// Like [`resize_encoded_rgb`] but always decoding the full-size source (no DCT
/// scaling): the reference the scaled paths are measured against in tests and
/// benchmarks.
pub fn resize_encoded_full_decode(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
) -> Result<Encoded, ImagingError> {
    resize_encoded_with(data, limits, spec, Route::RgbFullDecode)
}

/// Like [`resize_encoded`] but a YCbCr JPEG's planes are decoded whole before they are
/// resampled, never streamed: the reference the streamed path is compared with (byte
/// for byte) in tests and benchmarks.
pub fn resize_encoded_whole_planes(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
) -> Result<Encoded, ImagingError> {
    resize_encoded_with(data, limits, spec, Route::WholePlanes)
}

/// The streamed path of [`resize_encoded`] alone: `Ok(None)` where it does not apply
/// (not a baseline 4:2:0 JPEG made into a JPEG, a pass only the library has, or no
/// AVX2), so tests and benchmarks can tell that it ran.
pub fn resize_encoded_streamed(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
) -> Result<Option<Encoded>, ImagingError> {
    let target = Target::of(data, limits, spec)?;
    let Some(jpeg) = target.plane_jpeg() else {
        return Ok(None);
    };
    Ok(streamed(data, &jpeg, target.size(), spec.quality)?.map(|data| target.encoded(data)))
}

/// What every route starts from: the header, and the output's size (checked against
/// the limits before any pixel is decoded) and format.
struct Target {
    header: Header,
    width: u32,
    height: u32,
    format: ImageFormat,
}

impl Target {
    fn of(data: &[u8], limits: &Limits, spec: &ResizeSpec) -> Result<Self, ImagingError> {
        let header = Header::read(data, limits)?;
        let (src_w, src_h) = header.oriented_size();
        let (width, height) =
            fit_dimensions(src_w, src_h, spec.width, spec.height, spec.keep_aspect)?;
        limits.check_dimensions(width, height)?;
        let format = spec.output_format.unwrap_or(header.format);
        Ok(Self {
            header,
            width,
            height,
            format,
        })
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The source's JPEG header when the plane path can make this output from it.
    fn plane_jpeg(&self) -> Option<turbojpeg::DecompressHeader> {
        self.header
            .plane_jpeg()
            .filter(|_| self.format == ImageFormat::Jpeg)
    }

    /// `data`, encoded in this target's format and size, as the result.
    fn encoded(&self, data: Vec<u8>) -> Encoded {
        let (original_width, original_height) = self.header.oriented_size();
        Encoded {
            data,
            format: self.format,
            width: self.width,
            height: self.height,
            original_width,
            original_height,
        }
    }
}

/// [`crate::stream::resize_streamed`] at the plane path's DCT scale, where it is built.
fn streamed(
    data: &[u8],
    jpeg: &turbojpeg::DecompressHeader,
    size: (u32, u32),
    quality: ResizeQuality,
) -> Result<Option<Vec<u8>>, ImagingError> {
    #[cfg(target_arch = "x86_64")]
    {
        let scale = crate::decode::plane_scale(jpeg, size.0, size.1);
        crate::stream::resize_streamed(data, jpeg, scale, size, quality)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (data, jpeg, size, quality);
        Ok(None)
    }
}

/// How [`resize_encoded_with`] gets from the source to the output pixels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Streamed band by band for a baseline 4:2:0 JPEG ([`crate::stream`]), else as
    /// [`Route::WholePlanes`].
    Planes,
    /// YCbCr planes where the source allows, else RGB with DCT scaling.
    WholePlanes,
    /// RGB with DCT scaling.
    Rgb,
    /// RGB from the full-size source.
    RgbFullDecode,
}

fn resize_encoded_with(
    data: &[u8],
    limits: &Limits,
    spec: &ResizeSpec,
    route: Route,
) -> Result<Encoded, ImagingError> {
    let target = Target::of(data, limits, spec)?;
    let (width, height) = target.size();
    let planes = matches!(route, Route::Planes | Route::WholePlanes);
    if let (true, Some(jpeg)) = (planes, target.plane_jpeg()) {
        if route == Route::Planes
            && let Some(data) = streamed(data, &jpeg, (width, height), spec.quality)?
        {
            return Ok(target.encoded(data));
        }
        let Planes { y, cb, cr } = target.header.decode_planes(data, &jpeg, width, height)?;
        let (chroma_w, chroma_h) = chroma_420(width, height);
        let quality = spec.quality;
        let (y, chroma) = join(
            || resize_plane(&y, width, height, quality),
            move || -> Result<_, ImagingError> {
                Ok((
                    resize_plane(&cb, chroma_w, chroma_h, quality)?,
                    resize_plane(&cr, chroma_w, chroma_h, quality)?,
                ))
            },
        );
        let (y, (cb, cr)) = (y?, chroma?);
        return Ok(target.encoded(encode_planes_420(
            &y,
            &cb,
            &cr,
            spec.quality.jpeg_quality(),
        )?));
    }
    let Target { header, format, .. } = target;
    let decoded = if route != Route::RgbFullDecode {
        header.decode(data, width, height)?
    } else {
        header.decode(data, 0, 0)?
    };
    let image = if (decoded.image.width(), decoded.image.height()) == (width, height) {
        decoded.image
    } else {
        resize(&decoded.image, width, height, spec.quality)?
    };
    let data = encode(
        &image,
        &EncodeOptions {
            format,
            jpeg_quality: spec.quality.jpeg_quality(),
        },
    )?;
    Ok(Encoded {
        data,
        format,
        width,
        height,
        original_width: decoded.original_width,
        original_height: decoded.original_height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_table() {
        let fit = |sw, sh, bw, bh, k| fit_dimensions(sw, sh, bw, bh, k).ok();
        assert_eq!(fit(1920, 1080, 800, 600, true), Some((800, 450)));
        assert_eq!(fit(1080, 1920, 800, 600, true), Some((338, 600)));
        assert_eq!(fit(1920, 1080, 800, 600, false), Some((800, 600)));
        assert_eq!(fit(1920, 1080, 800, 0, true), Some((800, 450)));
        assert_eq!(fit(1920, 1080, 0, 540, true), Some((960, 540)));
        assert_eq!(fit(100, 100, 400, 300, true), Some((300, 300)));
        assert_eq!(fit(1, 1, 1, 1, true), Some((1, 1)));
        assert_eq!(fit(1, 100_000, 10, 10, true), Some((1, 10)));
        assert_eq!(fit(100_000, 1, 10, 10, true), Some((10, 1)));
        assert_eq!(fit(u32::MAX, 1, 1, 1, true), Some((1, 1)));
        assert_eq!(
            fit(1, u32::MAX, u32::MAX, 0, true),
            Some((u32::MAX, u32::MAX))
        );
        assert_eq!(fit(1920, 1080, 0, 600, false), None);
        assert_eq!(fit(1920, 1080, 0, 0, true), None);
        assert_eq!(fit(0, 1080, 10, 10, true), None);
    }
}
