//! Separable blurs on interleaved 8-bit pixels.
//!
//! Both passes are written so the compiler vectorises them: the horizontal pass works on
//! one edge-padded row at a time, and the vertical pass walks the image row by row,
//! combining whole rows of the horizontal result (kept in a small ring buffer of rows)
//! rather than walking columns with a stride. Work happens in place: a source row is
//! always filtered horizontally before its output row is written.
//!
//! Edges are clamped (the border pixel repeats). RGBA is filtered on all four channels and
//! the original alpha is put back, so alpha is never modified.
//!
//! The workspace builds for baseline x86-64 (SSE2). The filters are therefore dispatched
//! at run time with `pulp` to a copy compiled for AVX2+FMA where the CPU has it (about 2x
//! on the convolutions), without any `unsafe` in this crate.

use super::{restore_alpha, save_alpha};
use crate::image::Image;
use crate::planes::Plane;

/// Box blur of `radius` pixels: each output is the mean of the (2r+1) x (2r+1) square
/// around it. Separable running sums, O(1) per pixel whatever the radius; integer sums,
/// one rounding at the end.
pub(super) fn box_blur(image: &mut Image, radius: usize) {
    if radius == 0 {
        return;
    }
    let alpha = save_alpha(image);
    let (w, h) = (image.width() as usize, image.height() as usize);
    let channels = image.channels();
    let pixels = image.pixels_mut();
    pulp::Arch::new().dispatch(BoxBlur {
        pixels,
        w,
        h,
        channels,
        radius,
    });
    restore_alpha(image, alpha);
}

/// The box blur as a `pulp` operation: `with_simd` is instantiated inside a function
/// compiled for the CPU's best instruction set (AVX2 where present), and everything it
/// calls is `#[inline(always)]`, so the whole filter vectorises with that instruction set.
/// (A closure would not do: its body is compiled as a separate, baseline function.)
struct BoxBlur<'a> {
    pixels: &'a mut [u8],
    w: usize,
    h: usize,
    channels: u8,
    radius: usize,
}

impl pulp::WithSimd for BoxBlur<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self.channels {
            4 => box_blur_typed::<4>(self.pixels, self.w, self.h, self.radius),
            _ => box_blur_typed::<3>(self.pixels, self.w, self.h, self.radius),
        }
    }
}

#[inline(always)]
fn box_blur_typed<const C: usize>(pixels: &mut [u8], w: usize, h: usize, r: usize) {
    let stride = w * C;
    let n = 2 * r + 1;
    // The vertical step reads rows clamp(y - r) and clamp(y + r + 1): 2r + 2 rows.
    let mut ring = BoxRing::new(stride, (2 * r + 2).min(h), w, r, C);

    // acc = sum of H[clamp(k)] for k in -r..=r
    ring.fill_to::<C>(pixels, r.min(h - 1));
    let mut acc = vec![0u32; stride];
    for k in 0..n {
        let src = (k as isize - r as isize).clamp(0, h as isize - 1) as usize;
        for (a, &v) in acc.iter_mut().zip(ring.row(src)) {
            *a += u32::from(v);
        }
    }
    let inv = 1.0 / (n * n) as f32;
    for y in 0..h {
        let add = (y + r + 1).min(h - 1);
        let sub = y.saturating_sub(r);
        ring.fill_to::<C>(pixels, add);
        for (out, &a) in pixels[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            // a <= n * n * 255 < 2^24: exact as i32 and f32; the mean is in 0..=255.
            *out = (a as i32 as f32 * inv + ROUND_MAGIC).to_bits() as u8;
        }
        if y + 1 < h {
            for ((a, &p), &m) in acc.iter_mut().zip(ring.row(add)).zip(ring.row(sub)) {
                *a = *a + u32::from(p) - u32::from(m);
            }
        }
    }
}

/// The last `len` rows of horizontal box sums (u16: at most 201 x 255), filled lazily in
/// row order. Rows are padded to whole blocks for the direct-sum path.
struct BoxRing {
    rows: Vec<u16>,
    pad: Vec<u16>,
    len: usize,
    stride: usize,
    slot_stride: usize,
    radius: usize,
    /// Rows `0..computed` have been summed.
    computed: usize,
}

impl BoxRing {
    fn new(stride: usize, len: usize, w: usize, radius: usize, channels: usize) -> Self {
        let slot_stride = stride.div_ceil(BOX_LANES) * BOX_LANES;
        BoxRing {
            rows: vec![0; len * slot_stride],
            pad: vec![0; (w + 2 * radius + 1) * channels + BOX_LANES],
            len,
            stride,
            slot_stride,
            radius,
            computed: 0,
        }
    }

    /// Sums source rows up to and including `upto`.
    #[inline(always)]
    fn fill_to<const C: usize>(&mut self, pixels: &[u8], upto: usize) {
        while self.computed <= upto {
            let y = self.computed;
            let slot = (y % self.len) * self.slot_stride;
            box_row::<C>(
                &pixels[y * self.stride..(y + 1) * self.stride],
                &mut self.pad,
                &mut self.rows[slot..slot + self.slot_stride],
                self.radius,
            );
            self.computed += 1;
        }
    }

    /// The sums of source row `y` (which must still be in the ring).
    #[inline(always)]
    fn row(&self, y: usize) -> &[u16] {
        let slot = (y % self.len) * self.slot_stride;
        &self.rows[slot..slot + self.stride]
    }
}

/// Up to this radius the horizontal box sums are computed directly (2r + 1 vector adds
/// per block of outputs); above it with a running sum (constant work per output, but a
/// sequential dependency the compiler cannot vectorise).
const BOX_DIRECT_MAX_RADIUS: usize = 12;

/// Outputs per block in the direct horizontal box sum.
const BOX_LANES: usize = 32;

/// Horizontal sums of one row: `out[x] = sum of src[clamp(x + k)]`, |k| <= r.
/// `out` is the row rounded up to whole blocks; the tail is scratch.
#[inline(always)]
fn box_row<const C: usize>(src: &[u8], pad: &mut [u16], out: &mut [u16], r: usize) {
    pad_row::<C, u16>(src, pad, r, r + 1, u16::from);
    if r <= BOX_DIRECT_MAX_RADIUS {
        for i in (0..out.len()).step_by(BOX_LANES) {
            let mut acc = [0u16; BOX_LANES];
            for k in 0..=2 * r {
                let p: &[u16; BOX_LANES] = block(pad, i + k * C);
                for l in 0..BOX_LANES {
                    acc[l] += p[l];
                }
            }
            out[i..i + BOX_LANES].copy_from_slice(&acc);
        }
        return;
    }
    let (pad_px, _) = pad.as_chunks::<C>();
    let (out_px, _) = out.as_chunks_mut::<C>();
    let mut sum = [0u16; C];
    for px in &pad_px[..2 * r + 1] {
        for c in 0..C {
            sum[c] += px[c];
        }
    }
    let entering = &pad_px[2 * r + 1..];
    let w = src.len() / C;
    for ((o, old), new) in out_px.iter_mut().zip(pad_px).zip(entering).take(w) {
        for c in 0..C {
            o[c] = sum[c];
            sum[c] = sum[c] + new[c] - old[c];
        }
    }
}

/// Writes `left` copies of the first pixel, the row, and `right` copies of the last pixel
/// into `pad`, converting with `conv`.
#[inline(always)]
fn pad_row<const C: usize, T: Copy>(
    src: &[u8],
    pad: &mut [T],
    left: usize,
    right: usize,
    conv: impl Fn(u8) -> T,
) {
    let first = &src[..C];
    let last = &src[src.len() - C..];
    let (head, rest) = pad.split_at_mut(left * C);
    for px in head.as_chunks_mut::<C>().0 {
        for c in 0..C {
            px[c] = conv(first[c]);
        }
    }
    let (body, tail) = rest.split_at_mut(src.len());
    for (d, &s) in body.iter_mut().zip(src) {
        *d = conv(s);
    }
    for px in tail[..right * C].as_chunks_mut::<C>().0 {
        for c in 0..C {
            px[c] = conv(last[c]);
        }
    }
}

/// The normalised Gaussian kernel for `sigma`: `2r + 1` weights, `r = ceil(3 sigma)` (at
/// least 1), proportional to `exp(-x^2 / (2 sigma^2))` and summing to 1.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let sigma = f64::from(sigma.max(1e-3));
    let r = ((3.0 * sigma).ceil() as usize).max(1);
    let weights: Vec<f64> = (0..=2 * r)
        .map(|i| {
            let x = i as f64 - r as f64;
            (-x * x / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| (w / sum) as f32).collect()
}

/// Gaussian blur with standard deviation `sigma` pixels.
pub(super) fn gaussian_blur(image: &mut Image, sigma: f32) {
    separable_gaussian(image, sigma, Finish::Blur);
}

/// Unsharp mask: `orig + amount * (orig - gaussian(orig, sigma))`, rounded and clamped.
pub(super) fn unsharp_mask(image: &mut Image, amount: f32, sigma: f32) {
    if amount == 0.0 {
        return;
    }
    separable_gaussian(image, sigma, Finish::Sharpen(amount));
}

/// The Gaussian blur (`sharpen: None`) or unsharp mask (`Some(amount)`) of one 8-bit
/// plane of the YCbCr path ([`crate::planes`]).
pub(crate) fn gaussian_plane(plane: &mut Plane, sigma: f32, sharpen: Option<f32>) {
    let finish = match sharpen {
        None => Finish::Blur,
        Some(0.0) => return,
        Some(amount) => Finish::Sharpen(amount),
    };
    let kernel = gaussian_kernel(sigma);
    pulp::Arch::new().dispatch(Gaussian {
        pixels: &mut plane.data,
        w: plane.width as usize,
        h: plane.height as usize,
        channels: 1,
        kernel: &kernel,
        finish,
    });
}

/// What to write from the original row and its blurred values.
#[derive(Clone, Copy)]
enum Finish {
    /// The blurred value.
    Blur,
    /// `orig + amount * (orig - blurred)`.
    Sharpen(f32),
}

impl Finish {
    #[inline(always)]
    fn apply(self, row: &mut [u8], blurred: &[f32]) {
        match self {
            Finish::Blur => {
                for (o, &b) in row.iter_mut().zip(blurred) {
                    *o = to_u8(b);
                }
            }
            Finish::Sharpen(amount) => {
                for (o, &b) in row.iter_mut().zip(blurred) {
                    let v = f32::from(*o);
                    *o = to_u8(v + amount * (v - b));
                }
            }
        }
    }
}

/// Adding 1.5 * 2^23 to a float in 0..=2^22 leaves the value rounded to the nearest
/// integer (ties to even) in the low mantissa bits. This replaces Rust's saturating
/// float-to-int cast, which the compiler cannot vectorise (it must map NaN to 0).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Clamps to 0..=255 and rounds to the nearest level, in a form that vectorises.
#[inline(always)]
pub(crate) fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + ROUND_MAGIC).to_bits() as u8
}

/// Outputs computed per inner block; the block's accumulators stay in registers across all
/// kernel taps.
const LANES: usize = 32;

/// Runs the separable Gaussian and hands each output row, still holding the original
/// pixels, to `finish` together with its blurred values.
fn separable_gaussian(image: &mut Image, sigma: f32, finish: Finish) {
    let alpha = save_alpha(image);
    let (w, h) = (image.width() as usize, image.height() as usize);
    let kernel = gaussian_kernel(sigma);
    let channels = image.channels();
    let pixels = image.pixels_mut();
    pulp::Arch::new().dispatch(Gaussian {
        pixels,
        w,
        h,
        channels,
        kernel: &kernel,
        finish,
    });
    restore_alpha(image, alpha);
}

/// The Gaussian as a `pulp` operation (see [`BoxBlur`]).
struct Gaussian<'a> {
    pixels: &'a mut [u8],
    w: usize,
    h: usize,
    channels: u8,
    kernel: &'a [f32],
    finish: Finish,
}

impl pulp::WithSimd for Gaussian<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Gaussian {
            pixels,
            w,
            h,
            channels,
            kernel,
            finish,
        } = self;
        match channels {
            1 => gaussian_typed::<1>(pixels, w, h, kernel, finish),
            4 => gaussian_typed::<4>(pixels, w, h, kernel, finish),
            _ => gaussian_typed::<3>(pixels, w, h, kernel, finish),
        }
    }
}

#[inline(always)]
fn gaussian_typed<const C: usize>(
    pixels: &mut [u8],
    w: usize,
    h: usize,
    kernel: &[f32],
    finish: Finish,
) {
    let r = kernel.len() / 2;
    // half[0] is the centre weight, half[j] the weight at distance j.
    let half = &kernel[r..];
    let stride = w * C;
    let padded_stride = stride.div_ceil(LANES) * LANES;
    let ring_len = (2 * r + 1).min(h);
    let mut ring = vec![0f32; ring_len * padded_stride];
    let mut pad = vec![0f32; (w + 2 * r) * C + LANES];
    let mut computed = 0usize;
    let mut blurred = vec![0f32; padded_stride];
    let mut lo = vec![0usize; r + 1];
    let mut hi = vec![0usize; r + 1];

    for y in 0..h {
        while computed <= (y + r).min(h - 1) {
            let slot = computed % ring_len;
            gaussian_row::<C>(
                &pixels[computed * stride..(computed + 1) * stride],
                &mut pad,
                &mut ring[slot * padded_stride..(slot + 1) * padded_stride],
                half,
            );
            computed += 1;
        }
        // Offsets of the rows at distance j above and below, edges clamped.
        for (j, (l, u)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            *l = (y.saturating_sub(j) % ring_len) * padded_stride;
            *u = ((y + j).min(h - 1) % ring_len) * padded_stride;
        }
        for i in (0..padded_stride).step_by(LANES) {
            let mut acc = [0f32; LANES];
            let centre: &[f32; LANES] = block(&ring, lo[0] + i);
            for l in 0..LANES {
                acc[l] = half[0] * centre[l];
            }
            for ((&above, &below), &k) in lo.iter().zip(&hi).zip(half).skip(1) {
                let a: &[f32; LANES] = block(&ring, above + i);
                let b: &[f32; LANES] = block(&ring, below + i);
                for l in 0..LANES {
                    acc[l] += k * (a[l] + b[l]);
                }
            }
            blurred[i..i + LANES].copy_from_slice(&acc);
        }
        finish.apply(
            &mut pixels[y * stride..(y + 1) * stride],
            &blurred[..stride],
        );
    }
}

/// `N` elements of `buf` from `start`, as an array (one bounds check per block).
#[inline(always)]
fn block<T, const N: usize>(buf: &[T], start: usize) -> &[T; N] {
    let (head, _) = buf[start..start + N].as_chunks::<N>();
    &head[0]
}

/// One row of the horizontal pass into `out` (length rounded up to `LANES`).
#[inline(always)]
fn gaussian_row<const C: usize>(src: &[u8], pad: &mut [f32], out: &mut [f32], half: &[f32]) {
    let r = half.len() - 1;
    pad_row::<C, f32>(src, pad, r, r, f32::from);
    for i in (0..out.len()).step_by(LANES) {
        let mut acc = [0f32; LANES];
        let centre: &[f32; LANES] = block(pad, i + r * C);
        for l in 0..LANES {
            acc[l] = half[0] * centre[l];
        }
        for (j, &k) in half.iter().enumerate().skip(1) {
            let a: &[f32; LANES] = block(pad, i + (r - j) * C);
            let b: &[f32; LANES] = block(pad, i + (r + j) * C);
            for l in 0..LANES {
                acc[l] += k * (a[l] + b[l]);
            }
        }
        out[i..i + LANES].copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_box(src: &Image, r: usize) -> Vec<u8> {
        let (w, h, c) = (src.width() as isize, src.height() as isize, 3isize);
        let p = src.pixels();
        let mut out = vec![0u8; p.len()];
        let r = r as isize;
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut s = 0u32;
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let yy = (y + dy).clamp(0, h - 1);
                            let xx = (x + dx).clamp(0, w - 1);
                            s += u32::from(p[((yy * w + xx) * c + ch) as usize]);
                        }
                    }
                    let n = ((2 * r + 1) * (2 * r + 1)) as f32;
                    out[((y * w + x) * c + ch) as usize] = (s as f32 / n + 0.5) as u8;
                }
            }
        }
        out
    }

    fn noise(w: u32, h: u32) -> Image {
        let mut state = 12345u32;
        let px = (0..w * h * 3)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            })
            .collect();
        Image::new(w, h, 3, px).unwrap()
    }

    #[test]
    fn box_blur_matches_naive() {
        // Radii above BOX_DIRECT_MAX_RADIUS take the running-sum path.
        for (w, h, r) in [
            (7, 5, 1),
            (13, 9, 3),
            (3, 2, 5),
            (1, 1, 2),
            (20, 1, 4),
            (40, 33, 13),
            (5, 50, 20),
        ] {
            let src = noise(w, h);
            let mut img = src.clone();
            box_blur(&mut img, r);
            assert_eq!(img.pixels(), naive_box(&src, r).as_slice(), "{w}x{h} r={r}");
        }
    }

    fn naive_gaussian(src: &Image, sigma: f32) -> Vec<f32> {
        let k = gaussian_kernel(sigma);
        let r = (k.len() / 2) as isize;
        let (w, h) = (src.width() as isize, src.height() as isize);
        let p = src.pixels();
        let mut out = vec![0f32; p.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..3 {
                    let mut s = 0f32;
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let yy = (y + dy).clamp(0, h - 1);
                            let xx = (x + dx).clamp(0, w - 1);
                            s += k[(dy + r) as usize]
                                * k[(dx + r) as usize]
                                * f32::from(p[((yy * w + xx) * 3 + ch) as usize]);
                        }
                    }
                    out[((y * w + x) * 3 + ch) as usize] = s;
                }
            }
        }
        out
    }

    #[test]
    fn gaussian_matches_naive() {
        for (w, h, sigma) in [
            (9, 7, 0.8),
            (17, 11, 2.0),
            (4, 3, 3.0),
            (1, 1, 1.0),
            (30, 2, 1.5),
        ] {
            let src = noise(w, h);
            let mut img = src.clone();
            gaussian_blur(&mut img, sigma);
            for (i, (&got, want)) in img
                .pixels()
                .iter()
                .zip(naive_gaussian(&src, sigma))
                .enumerate()
            {
                assert!(
                    (f32::from(got) - want).abs() <= 0.51,
                    "{w}x{h} sigma {sigma} at {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn kernel_shape() {
        let k = gaussian_kernel(2.0);
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((k[6 + 2] / k[6] - (-0.5f32).exp()).abs() < 1e-5);
        assert_eq!(gaussian_kernel(0.1).len(), 3);
    }
}
