//! Point operations with PIL `ImageEnhance` semantics: brightness, contrast, colour.
//!
//! Brightness and contrast blend every colour sample with a constant; saturation (and grayscale,
//! which is saturation with factor `1 - amount`) blends each pixel with its own luma in
//! 12-bit fixed point. Alpha is left as it is.

use super::blur::to_u8;
use crate::image::Image;

/// Rec.601 luma as PIL's `convert("L")` computes it.
#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u32 {
    (u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 32768) >> 16
}

/// `center + (v - center) * factor` on the colour channels, rounded and clamped: the
/// blend PIL's `ImageEnhance` does with a flat image of value `center`. Computed rather
/// than looked up, so it vectorises.
fn blend_with_flat(image: &mut Image, center: f32, factor: f32) {
    let channels = image.channels();
    pulp::Arch::new().dispatch(BlendFlat {
        pixels: image.pixels_mut(),
        channels,
        center,
        factor,
    });
}

struct BlendFlat<'a> {
    pixels: &'a mut [u8],
    channels: u8,
    center: f32,
    factor: f32,
}

impl pulp::WithSimd for BlendFlat<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let BlendFlat {
            pixels,
            channels,
            center,
            factor,
        } = self;
        // center + (v - center) * f == v * f + offset
        let offset = center * (1.0 - factor);
        let blend = |v: u8| to_u8(f32::from(v) * factor + offset);
        if channels == 4 {
            for px in pixels.as_chunks_mut::<4>().0 {
                for v in &mut px[..3] {
                    *v = blend(*v);
                }
            }
        } else {
            for v in pixels.iter_mut() {
                *v = blend(*v);
            }
        }
    }
}

/// `v * factor` (blend with black).
pub(super) fn brightness(image: &mut Image, factor: f32) {
    if factor == 1.0 {
        return;
    }
    blend_with_flat(image, 0.0, factor);
}

/// Mean luma of the image, rounded to an integer level as PIL does.
pub(crate) fn mean_luma(image: &Image) -> u8 {
    let sum = pulp::Arch::new().dispatch(LumaSum {
        pixels: image.pixels(),
        channels: image.channels(),
    });
    let n = u64::from(image.width()) * u64::from(image.height());
    ((sum + n / 2) / n) as u8
}

struct LumaSum<'a> {
    pixels: &'a [u8],
    channels: u8,
}

impl pulp::WithSimd for LumaSum<'_> {
    type Output = u64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> u64 {
        match self.channels {
            4 => luma_sum::<4>(self.pixels),
            _ => luma_sum::<3>(self.pixels),
        }
    }
}

/// Sum of the luma of every pixel. The weighted channel sums are accumulated separately
/// (in u32 over blocks small enough not to overflow) and combined once per block, which
/// keeps the inner loop to additions. PIL rounds each pixel's luma; the result differs
/// from the per-pixel-rounded sum by less than half a level on the mean.
#[inline(always)]
fn luma_sum<const C: usize>(pixels: &[u8]) -> u64 {
    let (px, _) = pixels.as_chunks::<C>();
    let mut total = 0u64;
    // 65536 pixels x 255 fits u32.
    for block in px.chunks(65536) {
        let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
        for p in block {
            r += u32::from(p[0]);
            g += u32::from(p[1]);
            b += u32::from(p[2]);
        }
        total += u64::from(r) * 19595 + u64::from(g) * 38470 + u64::from(b) * 7471;
    }
    (total + 32768) >> 16
}

/// `mean + (v - mean) * factor` around the mean luma (blend with a flat grey image).
pub(super) fn contrast(image: &mut Image, factor: f32) {
    if factor == 1.0 {
        return;
    }
    let mean = f32::from(mean_luma(image));
    blend_with_flat(image, mean, factor);
}

/// `luma + (v - luma) * factor` per pixel (blend with the image's own greyscale).
pub(super) fn saturation(image: &mut Image, factor: f32) {
    if factor == 1.0 {
        return;
    }
    let channels = image.channels();
    pulp::Arch::new().dispatch(Saturation {
        pixels: image.pixels_mut(),
        channels,
        factor,
    });
}

/// Saturation as a `pulp` operation, compiled for the CPU's best instruction set (see
/// `blur::BoxBlur` for why this is a struct and not a closure).
struct Saturation<'a> {
    pixels: &'a mut [u8],
    channels: u8,
    factor: f32,
}

impl pulp::WithSimd for Saturation<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self.channels {
            4 => saturation_typed::<4>(self.pixels, self.factor),
            _ => saturation_typed::<3>(self.pixels, self.factor),
        }
    }
}

#[inline(always)]
fn saturation_typed<const C: usize>(pixels: &mut [u8], factor: f32) {
    const SHIFT: u32 = 12;
    // factor <= 10, so |(v - luma) * f| <= 255 * 40960: well inside i32.
    let f = (factor * (1 << SHIFT) as f32).round() as i32;
    let half = 1 << (SHIFT - 1);
    for px in pixels.as_chunks_mut::<C>().0 {
        let y = luma(px[0], px[1], px[2]) as i32;
        for v in &mut px[..3] {
            let d = i32::from(*v) - y;
            *v = (y + ((d * f + half) >> SHIFT)).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pil() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn identity_factors() {
        let mut img = Image::new(2, 1, 3, vec![10, 200, 30, 40, 50, 255]).unwrap();
        let orig = img.clone();
        brightness(&mut img, 1.0);
        contrast(&mut img, 1.0);
        saturation(&mut img, 1.0);
        assert_eq!(img, orig);
        // The fixed-point path at factor 1 is exact too.
        saturation_typed::<3>(img.pixels_mut(), 1.0);
        assert_eq!(img, orig);
    }

    #[test]
    fn alpha_untouched() {
        let mut img = Image::new(1, 1, 4, vec![100, 150, 200, 7]).unwrap();
        brightness(&mut img, 2.0);
        saturation(&mut img, 0.0);
        contrast(&mut img, 0.0);
        assert_eq!(img.pixels()[3], 7);
    }
}
