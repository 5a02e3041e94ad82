//! The vertical pass of a one-plane resize, one output row at a time.
//!
//! `fast_image_resize` runs its vertical pass over a whole image. The streamed resize
//! ([`crate::stream`]) has only the rows decoded so far, so it needs output rows one by
//! one, each as soon as its source window has arrived. The weights and the integer
//! arithmetic are the library's (the coefficients of [`crate::hpass`], normalised to i16
//! at the same precision, the same rounding and clamping), so the rows are bit-identical
//! to its vertical pass; a test holds it to that.

use std::rc::Rc;

use fast_image_resize::FilterType;
use pulp::x86::V3;

use crate::hpass::{PassCache, coefficients, filter_function, precision_for};

thread_local! {
    static PASSES: PassCache<VerticalPass> = const { PassCache::new() };
}

/// The weights of one vertical resampling.
#[derive(Debug)]
pub(crate) struct VerticalPass {
    precision: u8,
    /// Per output row: its first source row and its weights.
    taps: Vec<(usize, Vec<i16>)>,
    /// Per output row: the lowest source row it or any later row reads. (Zero weights
    /// are trimmed from a window's start, so the starts alone need not be monotonic.)
    keep_from: Vec<usize>,
}

impl VerticalPass {
    /// [`Self::new`], remembered on this thread ([`PassCache`]).
    pub(crate) fn cached(src_height: u32, dst_height: u32, filter: FilterType) -> Option<Rc<Self>> {
        PASSES.with(|passes| {
            passes.get((src_height, dst_height, filter), || {
                Self::new(src_height, dst_height, filter)
            })
        })
    }

    /// The pass from `src_height` to `dst_height` rows with `filter`, or `None` for a
    /// filter [`crate::hpass`] does not define or an empty size.
    pub(crate) fn new(src_height: u32, dst_height: u32, filter: FilterType) -> Option<Self> {
        let (kernel, support) = filter_function(filter)?;
        if src_height == 0 || dst_height == 0 {
            return None;
        }
        let windows = coefficients(src_height, dst_height, kernel, support);
        let max_weight = windows
            .iter()
            .flat_map(|w| w.values.iter().copied())
            .fold(0.0f64, f64::max);
        let precision = precision_for(max_weight);
        let scale = f64::from(1u32 << precision);
        let taps = windows
            .into_iter()
            .map(|w| {
                let weights = w
                    .values
                    .iter()
                    .map(|v| (v * scale).round() as i16)
                    .collect();
                (w.start, weights)
            })
            .collect::<Vec<_>>();
        let mut keep_from: Vec<usize> = taps
            .iter()
            .rev()
            .scan(usize::MAX, |low, &(start, _)| {
                *low = (*low).min(start);
                Some(*low)
            })
            .collect();
        keep_from.reverse();
        Some(Self {
            precision,
            taps,
            keep_from,
        })
    }

    /// How many source rows output row `row` needs to have arrived.
    pub(crate) fn rows_needed(&self, row: usize) -> usize {
        self.taps
            .get(row)
            .map_or(0, |(start, weights)| start + weights.len())
    }

    /// The lowest source row that output row `row` or a later one reads (`usize::MAX`
    /// past the last).
    pub(crate) fn first_row(&self, row: usize) -> usize {
        self.keep_from.get(row).copied().unwrap_or(usize::MAX)
    }

    /// Output rows `rows` from `src` (rows of `width`, source rows `first..`, up to at
    /// least [`Self::rows_needed`] of the last output row) into `dst` (as many rows of
    /// `width` as `rows` has). `acc` is scratch, reused between calls.
    pub(crate) fn run(
        &self,
        src: &[u8],
        first: usize,
        width: usize,
        rows: std::ops::Range<usize>,
        dst: &mut [u8],
        acc: &mut Vec<i32>,
    ) {
        acc.resize(width, 0);
        let job = Rows {
            pass: self,
            src,
            first,
            width,
            rows,
            dst,
            acc,
        };
        match V3::try_new() {
            Some(simd) => pulp::Simd::vectorize(simd, job),
            None => job.run(),
        }
    }
}

/// The row loop, compiled with AVX2 where the CPU has it (`pulp`), plain otherwise.
struct Rows<'a> {
    pass: &'a VerticalPass,
    src: &'a [u8],
    first: usize,
    width: usize,
    rows: std::ops::Range<usize>,
    dst: &'a mut [u8],
    acc: &'a mut [i32],
}

impl Rows<'_> {
    #[inline(always)]
    fn run(self) {
        let precision = self.pass.precision;
        let initial = 1i32 << (precision - 1);
        let width = self.width;
        let out_rows = self.dst.chunks_exact_mut(width);
        for ((start, weights), out) in self.pass.taps[self.rows].iter().zip(out_rows) {
            self.acc.fill(initial);
            for (k, &w) in weights.iter().enumerate() {
                let row = &self.src[(start + k - self.first) * width..][..width];
                for (a, &p) in self.acc.iter_mut().zip(row) {
                    *a += i32::from(p) * i32::from(w);
                }
            }
            for (o, &a) in out.iter_mut().zip(self.acc.iter()) {
                *o = (a >> precision).clamp(0, 255) as u8;
            }
        }
    }
}

impl pulp::WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use fast_image_resize::images::{Image as FirImage, ImageRef};
    use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};

    use super::*;

    #[test]
    fn rows_equal_the_library_s_vertical_pass() {
        let (w, h) = (37usize, 540usize);
        let src: Vec<u8> = (0..w * h)
            .map(|i| ((i % w) * 7 + (i / w) * 3 + (i.wrapping_mul(2_654_435_761) >> 27)) as u8)
            .collect();
        for filter in [
            FilterType::Bilinear,
            FilterType::CatmullRom,
            FilterType::Lanczos3,
        ] {
            for dst_h in [450u32, 270, 135, 67, 539, 600, 1080, 1] {
                let pass = VerticalPass::new(h as u32, dst_h, filter).unwrap();
                let mut ours = vec![0u8; w * dst_h as usize];
                pass.run(&src, 0, w, 0..dst_h as usize, &mut ours, &mut Vec::new());
                let image = ImageRef::new(w as u32, h as u32, &src, PixelType::U8).unwrap();
                let mut library = FirImage::new(w as u32, dst_h, PixelType::U8);
                Resizer::new()
                    .resize(
                        &image,
                        &mut library,
                        &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)),
                    )
                    .unwrap();
                assert!(ours == library.buffer(), "{filter:?} {h} -> {dst_h} rows");
                let last = dst_h as usize - 1;
                assert!(pass.rows_needed(last) <= h);
            }
        }
    }

    #[test]
    fn a_band_equals_the_same_rows_of_the_whole() {
        let (w, h) = (16usize, 100usize);
        let src: Vec<u8> = (0..w * h).map(|i| (i * 31 % 251) as u8).collect();
        let pass = VerticalPass::new(h as u32, 83, FilterType::CatmullRom).unwrap();
        let mut whole = vec![0u8; w * 83];
        pass.run(&src, 0, w, 0..83, &mut whole, &mut Vec::new());
        // Only the rows the band reads: from the first row of its first output row to
        // what its last one needs.
        let mut band = vec![0u8; w * 10];
        let (first, needed) = (pass.first_row(40), pass.rows_needed(49));
        assert!(first > 0 && needed < h);
        let rows = &src[first * w..needed * w];
        pass.run(rows, first, w, 40..50, &mut band, &mut Vec::new());
        assert_eq!(band, whole[40 * w..50 * w]);
    }
}
