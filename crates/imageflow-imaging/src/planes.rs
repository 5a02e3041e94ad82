//! The YCbCr plane path for JPEG in, JPEG out (and JPEG into a detection tensor).
//!
//! A JPEG stores Y, Cb and Cr planes, the chroma ones usually at half size (4:2:0).
//! Decoding to interleaved RGB upsamples the chroma and converts colour; encoding RGB
//! converts back and downsamples again. For a resize or a blur those steps are pure
//! overhead: both are linear, so they can work on the planes as stored. This module
//! decodes to planes (libjpeg-turbo's `tj3DecompressToYUV8`, DCT scaling included),
//! works on each plane, and encodes from planes (`tj3CompressFromYUVPlanes8`). For a
//! 4:2:0 photo that skips the colour conversions and chroma resampling and halves the
//! samples the resize or blur touches. Luma and chroma are independent, so they run on
//! two threads ([`crate::helper::join`]).
//!
//! The path only takes what it handles exactly like the interleaved one would up to
//! rounding: a three-component YCbCr JPEG, shown as stored (no EXIF rotation), with a
//! subsampling whose chroma planes are plain reductions of the luma one. Everything else
//! (PNG, WebP, CMYK, greyscale, rotated photos) goes the interleaved way.

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions};
use turbojpeg::{Colorspace, DecompressHeader, ScalingFactor, Subsamp, YuvImage};

use crate::decode::decompress_scaled;
use crate::encode::{check_jpeg_quality, with_compressor};
use crate::error::ImagingError;
use crate::resize::{RESIZER, ResizeQuality};

/// One 8-bit plane, rows tightly packed, top row first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plane {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) data: Vec<u8>,
}

/// Y, Cb and Cr as the JPEG stores them (chroma possibly smaller than luma).
#[derive(Debug)]
pub(crate) struct Planes {
    pub(crate) y: Plane,
    pub(crate) cb: Plane,
    pub(crate) cr: Plane,
}

/// Whether a JPEG with this header can take the plane path (see the module docs;
/// the orientation is the caller's to check).
pub(crate) fn plane_source(jpeg: &DecompressHeader) -> bool {
    jpeg.colorspace == Colorspace::YCbCr
        && !jpeg.is_lossless
        && matches!(
            jpeg.subsamp,
            Subsamp::None | Subsamp::Sub2x1 | Subsamp::Sub2x2 | Subsamp::Sub1x2
        )
}

/// Decodes a JPEG accepted by [`plane_source`] to its planes at `scale`.
pub(crate) fn decode_planes(
    data: &[u8],
    jpeg: &DecompressHeader,
    scale: ScalingFactor,
) -> Result<Planes, ImagingError> {
    let width = scale.scale(jpeg.width);
    let height = scale.scale(jpeg.height);
    let (sx, sy) = jpeg.subsamp.size();
    // libjpeg-turbo pads the luma plane to whole chroma samples (tj3YUVPlaneWidth).
    let (luma_w, luma_h) = (width.next_multiple_of(sx), height.next_multiple_of(sy));
    let (chroma_w, chroma_h) = (width.div_ceil(sx), height.div_ceil(sy));
    let luma_len = luma_w * luma_h;
    let chroma_len = chroma_w * chroma_h;
    let mut buffer = vec![0u8; luma_len + 2 * chroma_len];
    // tj3YUVBufSize is the authority on the layout; a disagreement is a bug here.
    let expected = turbojpeg::yuv_pixels_len(width, 1, height, jpeg.subsamp)
        .map_err(|e| ImagingError::Corrupt(format!("JPEG plane sizes: {e}")))?;
    if expected != buffer.len() {
        return Err(ImagingError::Encode(format!(
            "YCbCr planes of a {width}x{height} {:?} JPEG take {expected} bytes, not {}",
            jpeg.subsamp,
            buffer.len()
        )));
    }
    decompress_scaled(scale, |d| {
        d.decompress_to_yuv(
            data,
            YuvImage {
                pixels: buffer.as_mut_slice(),
                width,
                align: 1,
                height,
                subsamp: jpeg.subsamp,
            },
        )
    })?;
    let cr = buffer.split_off(luma_len + chroma_len);
    let cb = buffer.split_off(luma_len);
    // Both sides are at most the header's, which passed the u32 limits check.
    let plane = |w: usize, h: usize, data| Plane {
        width: w as u32,
        height: h as u32,
        data,
    };
    let luma = if (luma_w, luma_h) == (width, height) {
        buffer
    } else {
        // Row by row: a byte-wise iterator here cost as much as resampling the plane.
        let mut luma = Vec::with_capacity(width * height);
        for row in buffer.chunks_exact(luma_w).take(height) {
            luma.extend_from_slice(&row[..width]);
        }
        luma
    };
    Ok(Planes {
        y: plane(width, height, luma),
        cb: plane(chroma_w, chroma_h, cb),
        cr: plane(chroma_w, chroma_h, cr),
    })
}

/// The 4:2:0 chroma plane size for a `width` x `height` image.
pub(crate) fn chroma_420(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(2), height.div_ceil(2))
}

/// Resamples one plane to exactly `width` x `height`. Chroma planes are resampled
/// on their own grid: JPEG sites chroma at the centre of the luma samples it covers,
/// as the resampler assumes.
pub(crate) fn resize_plane(
    plane: &Plane,
    width: u32,
    height: u32,
    quality: ResizeQuality,
) -> Result<Plane, ImagingError> {
    if (width, height) == (plane.width, plane.height) {
        return Ok(plane.clone());
    }
    #[cfg(target_arch = "x86_64")]
    if width != plane.width
        && let Some(pass) =
            crate::hpass::HorizontalPass::cached(plane.width, width, quality.filter())
    {
        // The library's vertical pass (alone when the width stays), then ours.
        let vertical;
        let rows = if height == plane.height {
            plane
        } else {
            vertical = library_resize(plane, plane.width, height, quality)?;
            &vertical
        };
        let mut data = vec![0u8; width as usize * height as usize];
        pass.run(&rows.data, &mut data);
        return Ok(Plane {
            width,
            height,
            data,
        });
    }
    library_resize(plane, width, height, quality)
}

/// [`resize_plane`] entirely by `fast_image_resize`.
fn library_resize(
    plane: &Plane,
    width: u32,
    height: u32,
    quality: ResizeQuality,
) -> Result<Plane, ImagingError> {
    let internal = |e: &dyn std::fmt::Display| ImagingError::Encode(format!("resize: {e}"));
    let src = ImageRef::new(plane.width, plane.height, &plane.data, PixelType::U8)
        .map_err(|e| internal(&e))?;
    let mut dst = FirImage::new(width, height, PixelType::U8);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(quality.filter()));
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .map_err(|e| internal(&e))?;
    Ok(Plane {
        width,
        height,
        data: dst.into_vec(),
    })
}

/// Encodes 4:2:0 planes (chroma sized by [`chroma_420`]) as a baseline JPEG.
pub(crate) fn encode_planes_420(
    y: &Plane,
    cb: &Plane,
    cr: &Plane,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    check_jpeg_quality(quality)?;
    let chroma = chroma_420(y.width, y.height);
    if (cb.width, cb.height) != chroma || (cr.width, cr.height) != chroma {
        return Err(ImagingError::Encode(format!(
            "4:2:0 chroma of a {}x{} image is {}x{}, got {}x{} and {}x{}",
            y.width, y.height, chroma.0, chroma.1, cb.width, cb.height, cr.width, cr.height
        )));
    }
    let (width, height) = (y.width as usize, y.height as usize);
    // The encoder reads luma in whole 2x2 chroma blocks: an odd side repeats its edge.
    let padded;
    let y = if y.width % 2 == 1 || y.height % 2 == 1 {
        padded = pad_to_even(y);
        &padded
    } else {
        y
    };
    with_compressor(quality, |compressor| {
        compressor.compress_yuv_planes_to_vec(&turbojpeg::YuvPlanesImage {
            y_plane: y.data.as_slice(),
            u_plane: cb.data.as_slice(),
            v_plane: cr.data.as_slice(),
            width,
            height,
            y_stride: y.width as usize,
            u_stride: cb.width as usize,
            v_stride: cr.width as usize,
            subsamp: Subsamp::Sub2x2,
        })
    })
}

/// `plane` grown to even sides by repeating its last column and row.
fn pad_to_even(plane: &Plane) -> Plane {
    let (w, h) = (plane.width as usize, plane.height as usize);
    let (pw, ph) = (w.next_multiple_of(2), h.next_multiple_of(2));
    let mut data = Vec::with_capacity(pw * ph);
    for row in plane.data.chunks_exact(w) {
        data.extend_from_slice(row);
        data.extend(std::iter::repeat_n(row[w - 1], pw - w));
    }
    if ph > h {
        data.extend_from_within((h - 1) * pw..h * pw);
    }
    Plane {
        width: pw as u32,
        height: ph as u32,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroma_sizes_round_up() {
        assert_eq!(chroma_420(800, 450), (400, 225));
        assert_eq!(chroma_420(801, 451), (401, 226));
        assert_eq!(chroma_420(1, 1), (1, 1));
    }

    #[test]
    fn mismatched_chroma_is_refused_not_encoded() {
        let plane = |w: u32, h: u32| Plane {
            width: w,
            height: h,
            data: vec![128; (w * h) as usize],
        };
        let y = plane(16, 16);
        assert!(encode_planes_420(&y, &plane(8, 8), &plane(8, 8), 85).is_ok());
        assert!(matches!(
            encode_planes_420(&y, &plane(16, 16), &plane(8, 8), 85),
            Err(ImagingError::Encode(_))
        ));
        assert!(matches!(
            encode_planes_420(&y, &plane(8, 8), &plane(8, 8), 0),
            Err(ImagingError::InvalidParameter(_))
        ));
    }

    #[test]
    fn odd_sides_repeat_the_edge() {
        let odd = Plane {
            width: 3,
            height: 1,
            data: vec![1, 2, 3],
        };
        let even = pad_to_even(&odd);
        assert_eq!((even.width, even.height), (4, 2));
        assert_eq!(even.data, vec![1, 2, 3, 3, 1, 2, 3, 3]);
    }

    #[test]
    fn plane_resize_equals_the_library_s_own() {
        // resize_plane may take the AVX2 horizontal pass (crate::hpass) after the
        // library's vertical one; the pixels must be the library's, bit for bit.
        let (w, h) = (960u32, 540u32);
        let data = (0..w * h)
            .map(|i| ((i % w) * 3 + (i / w) * 5 + (i.wrapping_mul(2_654_435_761) >> 27)) as u8)
            .collect();
        let plane = Plane {
            width: w,
            height: h,
            data,
        };
        for quality in [
            ResizeQuality::Fast,
            ResizeQuality::Good,
            ResizeQuality::Best,
        ] {
            for (tw, th) in [(800, 450), (400, 225), (800, 540), (960, 450), (1000, 600)] {
                let ours = resize_plane(&plane, tw, th, quality).unwrap();
                let library = library_resize(&plane, tw, th, quality).unwrap();
                assert_eq!((ours.width, ours.height), (tw, th));
                assert!(ours == library, "{quality:?} to {tw}x{th}");
            }
        }
    }
}
