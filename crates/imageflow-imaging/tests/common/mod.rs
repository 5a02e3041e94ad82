//! Shared helpers for the integration tests: fixtures and image statistics.
#![allow(dead_code)]

use imageflow_imaging::{Image, Limits, ResizeQuality, ResizeSpec, decode};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A resize to `width` x `height` in the input's format.
pub fn resize_spec(
    width: u32,
    height: u32,
    keep_aspect: bool,
    quality: ResizeQuality,
) -> ResizeSpec {
    ResizeSpec {
        width,
        height,
        keep_aspect,
        quality,
        output_format: None,
    }
}

/// `data` cut at several points of its entropy-coded data, and with 4 KB in the middle
/// overwritten: what the streamed paths must refuse as the whole-image ones do.
pub fn damaged_copies(data: &[u8]) -> Vec<Vec<u8>> {
    let mut damaged: Vec<Vec<u8>> = [0.2, 0.5, 0.9, 0.999]
        .iter()
        .map(|f| data[..(data.len() as f64 * f) as usize].to_vec())
        .collect();
    let mut scribbled = data.to_vec();
    let mid = scribbled.len() / 2;
    scribbled[mid..mid + 4096].fill(0x00);
    damaged.push(scribbled);
    damaged
}

pub fn decode_fixture(name: &str) -> Image {
    decode(&fixture(name), &Limits::default())
        .unwrap_or_else(|e| panic!("decoding {name}: {e}"))
        .image
}

/// Mean absolute difference per sample between two images of the same shape.
pub fn mean_abs_diff(a: &Image, b: &Image) -> f64 {
    assert_eq!(
        (a.width(), a.height(), a.channels()),
        (b.width(), b.height(), b.channels())
    );
    let sum: u64 = a
        .pixels()
        .iter()
        .zip(b.pixels())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.pixels().len() as f64
}

/// Peak signal-to-noise ratio in dB between two images of the same shape (infinite
/// when they are equal).
pub fn psnr(a: &Image, b: &Image) -> f64 {
    assert_eq!(
        (a.width(), a.height(), a.channels()),
        (b.width(), b.height(), b.channels())
    );
    let squared: u64 = a
        .pixels()
        .iter()
        .zip(b.pixels())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2))
        .sum();
    let mse = squared as f64 / a.pixels().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Per-pixel luma as f64 (Rec.601).
pub fn luma(img: &Image) -> Vec<f64> {
    let c = img.channels() as usize;
    img.pixels()
        .chunks_exact(c)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Mean of the colour channels (alpha excluded).
pub fn mean(img: &Image) -> f64 {
    let c = img.channels() as usize;
    let (mut s, mut n) = (0u64, 0u64);
    for p in img.pixels().chunks_exact(c) {
        for &v in &p[..3] {
            s += u64::from(v);
            n += 1;
        }
    }
    s as f64 / n as f64
}

/// Standard deviation of the colour channels (alpha excluded).
pub fn std_dev(img: &Image) -> f64 {
    let c = img.channels() as usize;
    let m = mean(img);
    let (mut s, mut n) = (0f64, 0f64);
    for p in img.pixels().chunks_exact(c) {
        for &v in &p[..3] {
            s += (f64::from(v) - m).powi(2);
            n += 1.0;
        }
    }
    (s / n).sqrt()
}

/// Mean absolute 4-neighbour Laplacian of the luma over interior pixels: a measure of
/// high-frequency energy.
pub fn mean_abs_laplacian(img: &Image) -> f64 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let y = luma(img);
    let mut s = 0f64;
    for yy in 1..h - 1 {
        for xx in 1..w - 1 {
            let i = yy * w + xx;
            s += (4.0 * y[i] - y[i - 1] - y[i + 1] - y[i - w] - y[i + w]).abs();
        }
    }
    s / ((w - 2) * (h - 2)) as f64
}

/// Mean over pixels of (max channel - min channel): a measure of chroma.
pub fn chroma_spread(img: &Image) -> f64 {
    let c = img.channels() as usize;
    let mut s = 0u64;
    let mut n = 0u64;
    for p in img.pixels().chunks_exact(c) {
        let (mx, mn) = (p[0].max(p[1]).max(p[2]), p[0].min(p[1]).min(p[2]));
        s += u64::from(mx - mn);
        n += 1;
    }
    s as f64 / n as f64
}

pub fn all_gray(img: &Image) -> bool {
    let c = img.channels() as usize;
    img.pixels()
        .chunks_exact(c)
        .all(|p| p[0] == p[1] && p[1] == p[2])
}

/// A valid PNG (signature + IHDR with a correct CRC) declaring `width` x `height` RGB,
/// followed by `rest` (e.g. nothing, or a bogus IDAT).
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    png_header_of_type(width, height, 2)
}

/// The signature and IHDR of an 8-bit PNG of `color_type` (2 RGB, 3 palette).
fn png_header_of_type(width: u32, height: u32, color_type: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]); // 8-bit, deflate, adaptive, no interlace
    push_png_chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// A whole 8x8 palette PNG whose PLTE chunk holds `palette` (with a correct CRC, however
/// many bytes it is) and whose pixels all use entry 0.
pub fn palette_png(palette: &[u8]) -> Vec<u8> {
    let mut png = png_header_of_type(8, 8, 3);
    push_png_chunk(&mut png, b"PLTE", palette);
    // Each row: filter type 0, then eight indices 0. One stored (uncompressed) deflate
    // block keeps the zlib stream readable here.
    let rows = [0u8; 8 * 9];
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&(rows.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(rows.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(&rows);
    zlib.extend_from_slice(&adler32(&rows).to_be_bytes());
    push_png_chunk(&mut png, b"IDAT", &zlib);
    push_png_chunk(&mut png, b"IEND", &[]);
    png
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Appends a chunk with a correct CRC.
pub fn push_png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut chunk = kind.to_vec();
    chunk.extend_from_slice(data);
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
