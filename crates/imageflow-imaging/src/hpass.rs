//! The horizontal pass of a one-plane resize, eight output pixels at a time (AVX2).
//!
//! `fast_image_resize` resamples an 8-bit plane in two passes, vertical then horizontal.
//! Its vertical pass is vectorised along the row. Its one-channel horizontal pass
//! vectorises the taps of one output pixel in chunks of 8 or 16, so a reduction by less
//! than 2 with Catmull-Rom (about five taps) runs every pixel through the scalar
//! remainder loop: a fifth of resize-svc's CPU in a profile.
//!
//! This pass works across output pixels instead. Each pixel's weights are zero-padded
//! to eight, so its source window is one 64-bit load; two pixels share one 256-bit
//! multiply-add of 16-bit pairs, and two horizontal adds fold the partial sums of eight
//! pixels into one vector in order. The weights and the integer arithmetic are
//! `fast_image_resize`'s own (the same filter functions, the same normalisation to i16
//! at the same precision, the same rounding and clamping), so the output is
//! bit-identical to its horizontal pass; a property test holds it to that.
//!
//! The intrinsics are `pulp`'s safe wrappers behind its run-time CPU check, so this
//! crate keeps no `unsafe`. Where this pass does not apply ([`HorizontalPass::new`]
//! says `None`: no AVX2, a window wider than 8 pixels, a source narrower than 8), the
//! caller keeps `fast_image_resize`'s own pass.

use std::arch::x86_64::__m256i;
use std::cell::RefCell;
use std::rc::Rc;

use fast_image_resize::FilterType;
use pulp::x86::V3;

/// Source pixels one output pixel may read.
const WINDOW: usize = 8;
/// `fast_image_resize`'s fixed-point limits for 8-bit pixels (convolution/optimisations.rs):
/// the weights are i16 and the sums leave room for 8 bits of pixel and 2 of overshoot.
const PRECISION_BITS: u8 = 32 - 8 - 2;
const MAX_COEFFS_PRECISION: u8 = 16 - 1;

thread_local! {
    static PASSES: PassCache<HorizontalPass> = const { PassCache::new() };
}

/// Source size, output size and filter: what a pass is built from.
pub(crate) type PassKey = (u32, u32, FilterType);

/// A one-plane pass (or the finding that none applies) remembered per thread for the
/// last few sizes: a service resizes the same sizes over and over, and building the
/// weights costs about as much as resampling a band of rows. Used for this module's
/// passes and [`crate::vpass`]'s.
#[derive(Debug)]
pub(crate) struct PassCache<P> {
    /// Oldest first.
    passes: RefCell<Vec<(PassKey, Option<Rc<P>>)>>,
}

impl<P> PassCache<P> {
    /// Sizes remembered.
    const KEPT: usize = 4;

    pub(crate) const fn new() -> Self {
        Self {
            passes: RefCell::new(Vec::new()),
        }
    }

    /// The pass for `key`, built by `build` the first time it is asked for.
    pub(crate) fn get(&self, key: PassKey, build: impl FnOnce() -> Option<P>) -> Option<Rc<P>> {
        let mut passes = self.passes.borrow_mut();
        if let Some((_, pass)) = passes.iter().find(|(k, _)| *k == key) {
            return pass.clone();
        }
        let pass = build().map(Rc::new);
        if passes.len() == Self::KEPT {
            passes.remove(0);
        }
        passes.push((key, pass.clone()));
        pass
    }
}

/// The weights of one horizontal resampling, laid out for the AVX2 loop.
#[derive(Debug)]
pub(crate) struct HorizontalPass {
    simd: V3,
    src_width: usize,
    dst_width: usize,
    /// Fixed-point fraction bits of the weights.
    precision: u8,
    /// Per output pixel: where its 8-pixel window starts in the source row (at most
    /// `src_width - 8`, so every load stays inside the row).
    starts: Vec<usize>,
    /// Per output pixel: its weights over that window, zero outside its taps.
    weights: Vec<[i16; WINDOW]>,
}

impl HorizontalPass {
    /// [`Self::new`], remembered on this thread ([`PassCache`]). A photo's two chroma
    /// planes share one pass, so the weights (and the finding that none applies, as for
    /// a Lanczos3 reduction) are worked out once, not for every plane.
    pub(crate) fn cached(src_width: u32, dst_width: u32, filter: FilterType) -> Option<Rc<Self>> {
        PASSES.with(|passes| {
            passes.get((src_width, dst_width, filter), || {
                Self::new(src_width, dst_width, filter)
            })
        })
    }

    /// The pass from `src_width` to `dst_width` columns with `filter`, or `None` where it
    /// does not apply (see the module docs).
    pub(crate) fn new(src_width: u32, dst_width: u32, filter: FilterType) -> Option<Self> {
        let simd = V3::try_new()?;
        let (kernel, support) = filter_function(filter)?;
        let (src, dst) = (src_width as usize, dst_width as usize);
        if src < WINDOW || dst == 0 {
            return None;
        }
        let windows = coefficients(src_width, dst_width, kernel, support);
        let max_weight = windows
            .iter()
            .flat_map(|w| w.values.iter().copied())
            .fold(0.0f64, f64::max);
        let precision = precision_for(max_weight);
        let scale = f64::from(1u32 << precision);
        let mut starts = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst);
        for window in &windows {
            let start = window.start.min(src - WINDOW);
            let offset = window.start - start;
            if offset + window.values.len() > WINDOW {
                return None;
            }
            let mut padded = [0i16; WINDOW];
            for (slot, &v) in padded[offset..].iter_mut().zip(&window.values) {
                *slot = (v * scale).round() as i16;
            }
            starts.push(start);
            weights.push(padded);
        }
        Some(Self {
            simd,
            src_width: src,
            dst_width: dst,
            precision,
            starts,
            weights,
        })
    }

    /// Resamples every row of `src` (rows of `src_width`) into `dst` (rows of
    /// `dst_width`, as many rows).
    pub(crate) fn run(&self, src: &[u8], dst: &mut [u8]) {
        debug_assert_eq!(src.len() / self.src_width, dst.len() / self.dst_width);
        pulp::Simd::vectorize(
            self.simd,
            Rows {
                pass: self,
                src,
                dst,
            },
        );
    }

    /// One output pixel the scalar way, with the same sums as the vector loop.
    #[inline(always)]
    fn pixel(&self, row: &[u8], x: usize) -> u8 {
        let start = self.starts[x];
        let sum = row[start..start + WINDOW]
            .iter()
            .zip(&self.weights[x])
            .fold(self.rounding(), |acc, (&p, &w)| {
                acc + i32::from(p) * i32::from(w)
            });
        (sum >> self.precision).clamp(0, 255) as u8
    }

    /// Half a unit in the last place, added before the shift: round to nearest.
    #[inline(always)]
    fn rounding(&self) -> i32 {
        1 << (self.precision - 1)
    }
}

/// The row loop as a `pulp` operation: `with_simd` is inlined into a function compiled
/// with AVX2 enabled, and everything it calls is `#[inline(always)]`.
struct Rows<'a> {
    pass: &'a HorizontalPass,
    src: &'a [u8],
    dst: &'a mut [u8],
}

impl pulp::WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let pass = self.pass;
        let rows = self.src.chunks_exact(pass.src_width);
        for (row, out) in rows.zip(self.dst.chunks_exact_mut(pass.dst_width)) {
            row_avx2(pass, row, out);
        }
    }
}

#[inline(always)]
fn row_avx2(pass: &HorizontalPass, row: &[u8], out: &mut [u8]) {
    let simd = pass.simd;
    let round = simd.avx._mm256_set1_epi32(pass.rounding());
    let shift = simd.sse2._mm_cvtsi32_si128(i32::from(pass.precision));
    let (zero, max) = (
        simd.avx._mm256_setzero_si256(),
        simd.avx._mm256_set1_epi32(255),
    );
    let mut chunks = out.chunks_exact_mut(8);
    for (group, dst) in (&mut chunks).enumerate() {
        let x = group * 8;
        // Pairs (0,4), (1,5), (2,6), (3,7): after two horizontal adds the low lane
        // holds pixels 0..4 and the high lane 4..8, in order.
        let low = simd
            .avx2
            ._mm256_hadd_epi32(pair(pass, row, x, x + 4), pair(pass, row, x + 1, x + 5));
        let high = simd
            .avx2
            ._mm256_hadd_epi32(pair(pass, row, x + 2, x + 6), pair(pass, row, x + 3, x + 7));
        let sums = simd
            .avx2
            ._mm256_add_epi32(simd.avx2._mm256_hadd_epi32(low, high), round);
        let scaled = simd.avx2._mm256_sra_epi32(sums, shift);
        let clamped = simd
            .avx2
            ._mm256_min_epi32(simd.avx2._mm256_max_epi32(scaled, zero), max);
        let values: [i32; 8] = pulp::cast(clamped);
        for (d, v) in dst.iter_mut().zip(values) {
            *d = v as u8;
        }
    }
    let done = pass.dst_width - chunks.into_remainder().len();
    for (x, d) in out.iter_mut().enumerate().skip(done) {
        *d = pass.pixel(row, x);
    }
}

/// Output pixels a and b: a's window and weights in the low 128-bit lane, b's in the
/// high one; the multiply-add leaves four partial sums of each. (A function, not a
/// closure: a closure is compiled apart, without AVX2, and the intrinsics become calls.)
#[inline(always)]
fn pair(pass: &HorizontalPass, row: &[u8], a: usize, b: usize) -> __m256i {
    let simd = pass.simd;
    let pixels = simd
        .sse2
        ._mm_set_epi64x(window(pass, row, b), window(pass, row, a));
    let pixels = simd.avx2._mm256_cvtepu8_epi16(pixels);
    let mut w = [0i16; 2 * WINDOW];
    w[..WINDOW].copy_from_slice(&pass.weights[a]);
    w[WINDOW..].copy_from_slice(&pass.weights[b]);
    simd.avx2._mm256_madd_epi16(pixels, pulp::cast(w))
}

/// The 8 source pixels output pixel `x` reads, as one little-endian word.
#[inline(always)]
fn window(pass: &HorizontalPass, row: &[u8], x: usize) -> i64 {
    let start = pass.starts[x];
    let mut bytes = [0u8; WINDOW];
    bytes.copy_from_slice(&row[start..start + WINDOW]);
    i64::from_le_bytes(bytes)
}

/// A filter's weight at a distance in source pixels (scaled by the reduction).
pub(crate) type Kernel = fn(f64) -> f64;

/// The taps of one output pixel: the first source pixel and the normalised weights.
pub(crate) struct Window {
    pub(crate) start: usize,
    pub(crate) values: Vec<f64>,
}

/// `fast_image_resize`'s `precompute_coefficients` (convolution/mod.rs, 6.1) for a whole
/// row without cropping and with the adaptive kernel size of `ResizeAlg::Convolution`:
/// the same arithmetic in the same order, so the weights come out identical.
pub(crate) fn coefficients(src: u32, dst: u32, kernel: Kernel, support: f64) -> Vec<Window> {
    let scale = f64::from(src) / f64::from(dst);
    let filter_scale = scale.max(1.0);
    let radius = support * filter_scale;
    let recip_filter_scale = 1.0 / filter_scale;
    (0..dst)
        .map(|out_x| {
            let in_center = (f64::from(out_x) + 0.5) * scale;
            let x_min = (in_center - radius).floor().max(0.) as u32;
            let x_max = (in_center + radius).ceil().min(f64::from(src)) as u32;
            let center = in_center - 0.5;
            let mut start = x_min;
            let mut values = Vec::with_capacity((x_max - x_min) as usize);
            let mut sum = 0.0;
            for x in x_min..x_max {
                let w = kernel((f64::from(x) - center) * recip_filter_scale);
                if x == start && w == 0. {
                    // Zero weights at the start of the window are left out.
                    start += 1;
                } else {
                    values.push(w);
                    sum += w;
                }
            }
            // So are zero weights at its end.
            while values.last() == Some(&0.) {
                values.pop();
            }
            if sum != 0.0 {
                values.iter_mut().for_each(|w| *w /= sum);
            }
            Window {
                start: start as usize,
                values,
            }
        })
        .collect()
}

/// `fast_image_resize`'s `Normalizer16` precision: the most fraction bits that keep the
/// largest weight within i16.
pub(crate) fn precision_for(max_weight: f64) -> u8 {
    let mut precision = 0u8;
    for candidate in 0..PRECISION_BITS {
        precision = candidate;
        let next = (max_weight * f64::from(1u32 << (candidate + 1))).round() as i32;
        if next >= 1 << MAX_COEFFS_PRECISION {
            break;
        }
    }
    precision
}

/// The filters [`crate::ResizeQuality`] uses, as `fast_image_resize` defines them
/// (convolution/filters.rs, 6.1), with their support. Others go the library's way.
pub(crate) fn filter_function(filter: FilterType) -> Option<(Kernel, f64)> {
    match filter {
        FilterType::Bilinear => Some((bilinear, 1.0)),
        FilterType::CatmullRom => Some((catmull_rom, 2.0)),
        FilterType::Lanczos3 => Some((lanczos3, 3.0)),
        _ => None,
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn catmull_rom(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.) * x - (A + 3.)) * x * x + 1.
    } else if x < 2.0 {
        (((x - 5.) * x + 8.) * x - 4.) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use fast_image_resize::images::{Image as FirImage, ImageRef};
    use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};
    use proptest::prelude::*;

    use super::*;

    /// The library's own horizontal pass: the height stays, so it runs no other.
    fn library(src: &[u8], src_width: u32, dst_width: u32, filter: FilterType) -> Vec<u8> {
        let height = src.len() as u32 / src_width;
        let src = ImageRef::new(src_width, height, src, PixelType::U8).unwrap();
        let mut dst = FirImage::new(dst_width, height, PixelType::U8);
        Resizer::new()
            .resize(
                &src,
                &mut dst,
                &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)),
            )
            .unwrap();
        dst.into_vec()
    }

    fn ours(src: &[u8], src_width: u32, dst_width: u32, filter: FilterType) -> Option<Vec<u8>> {
        let pass = HorizontalPass::new(src_width, dst_width, filter)?;
        let mut dst = vec![0u8; src.len() / src_width as usize * dst_width as usize];
        pass.run(src, &mut dst);
        Some(dst)
    }

    /// A photo-like row pattern: gradients, a hard edge and noise, so every weight
    /// (negative lobes included) and the clamping at 0 and 255 matter.
    fn plane(width: u32, height: u32, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..width * height)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let x = i % width;
                let edge = if x % 37 < 18 { 0 } else { 255 };
                ((u64::from(x) * 7 + edge + (state % 61)) % 256) as u8
            })
            .collect()
    }

    #[test]
    fn applies_to_the_resize_service_case() {
        if !V3::is_available() {
            return; // no AVX2: the library's pass runs, and nothing here applies
        }
        // The 1920x1080 photo decoded at 1/2 scale, to 800 wide (luma and 4:2:0 chroma).
        for (src, dst) in [(960, 800), (480, 400)] {
            for filter in [FilterType::Bilinear, FilterType::CatmullRom] {
                let pass = HorizontalPass::new(src, dst, filter);
                assert!(pass.is_some(), "{src} -> {dst} with {filter:?}");
            }
        }
        assert!(HorizontalPass::new(960, 400, FilterType::Lanczos3).is_none());
        assert!(HorizontalPass::new(7, 5, FilterType::Bilinear).is_none());
    }

    #[test]
    fn a_thread_builds_each_pass_once() {
        let first = HorizontalPass::cached(480, 400, FilterType::CatmullRom);
        let again = HorizontalPass::cached(480, 400, FilterType::CatmullRom);
        match (first, again) {
            (Some(a), Some(b)) => assert!(Rc::ptr_eq(&a, &b)),
            (None, None) => assert!(!V3::is_available()),
            other => panic!("the same key gave {:?}", other),
        }
    }

    #[test]
    fn the_photo_case_matches_the_library_bit_for_bit() {
        let src = plane(960, 24, 7);
        for filter in [FilterType::CatmullRom, FilterType::Bilinear] {
            if let Some(got) = ours(&src, 960, 800, filter) {
                assert_eq!(got, library(&src, 960, 800, filter), "{filter:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn matches_the_library_bit_for_bit(
            src_width in 8u32..400,
            ratio in 0.3f64..3.0,
            height in 1u32..6,
            filter in prop_oneof![
                Just(FilterType::Bilinear),
                Just(FilterType::CatmullRom),
                Just(FilterType::Lanczos3),
            ],
            seed in any::<u64>(),
        ) {
            let dst_width = ((f64::from(src_width) / ratio) as u32).max(1);
            let src = plane(src_width, height, seed);
            if let Some(got) = ours(&src, src_width, dst_width, filter) {
                prop_assert_eq!(got, library(&src, src_width, dst_width, filter));
            }
        }
    }
}
