//! EXIF orientation: reading the tag and applying it to a pixel buffer.

use std::io::Cursor;

use crate::format::ImageFormat;
use crate::image::Image;

/// The eight EXIF orientations (tag 0x0112). The value says how the stored pixels must be
/// transformed to be displayed upright.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Orientation {
    /// 1: stored upright.
    #[default]
    Normal,
    /// 2: mirrored left-right.
    FlipHorizontal,
    /// 3: rotated 180 degrees.
    Rotate180,
    /// 4: mirrored top-bottom.
    FlipVertical,
    /// 5: transposed (mirrored along the main diagonal).
    Transpose,
    /// 6: must be rotated 90 degrees clockwise to display.
    Rotate90,
    /// 7: transversed (mirrored along the anti-diagonal).
    Transverse,
    /// 8: must be rotated 90 degrees counter-clockwise (270 clockwise) to display.
    Rotate270,
}

impl Orientation {
    /// Maps the EXIF value 1..=8; anything else is [`Orientation::Normal`].
    pub fn from_exif(value: u32) -> Self {
        match value {
            2 => Orientation::FlipHorizontal,
            3 => Orientation::Rotate180,
            4 => Orientation::FlipVertical,
            5 => Orientation::Transpose,
            6 => Orientation::Rotate90,
            7 => Orientation::Transverse,
            8 => Orientation::Rotate270,
            _ => Orientation::Normal,
        }
    }

    /// The EXIF value 1..=8.
    pub fn exif_value(self) -> u32 {
        match self {
            Orientation::Normal => 1,
            Orientation::FlipHorizontal => 2,
            Orientation::Rotate180 => 3,
            Orientation::FlipVertical => 4,
            Orientation::Transpose => 5,
            Orientation::Rotate90 => 6,
            Orientation::Transverse => 7,
            Orientation::Rotate270 => 8,
        }
    }

    /// True when displaying swaps width and height (values 5 to 8).
    pub fn swaps_dimensions(self) -> bool {
        matches!(
            self,
            Orientation::Transpose
                | Orientation::Rotate90
                | Orientation::Transverse
                | Orientation::Rotate270
        )
    }

    /// Stored `(width, height)` to displayed `(width, height)`.
    pub fn oriented(self, width: u32, height: u32) -> (u32, u32) {
        if self.swaps_dimensions() {
            (height, width)
        } else {
            (width, height)
        }
    }
}

/// Reads the EXIF orientation of an encoded image. Missing, unreadable or out-of-range EXIF
/// is [`Orientation::Normal`], never an error: metadata must not make a viewable image fail.
pub fn read_orientation(data: &[u8], format: ImageFormat) -> Orientation {
    use image::ImageDecoder as _;
    use image::metadata::Orientation as Exif;
    let read = match format {
        // Walk the JPEG markers ourselves (JPEG is decoded by libjpeg-turbo, not by `image`):
        // EXIF lives in APP1 before the first scan, so the walk stops at SOS instead of
        // scanning the entropy-coded data.
        ImageFormat::Jpeg => jpeg_exif_payload(data).and_then(Exif::from_exif_chunk),
        ImageFormat::Png => image::codecs::png::PngDecoder::new(Cursor::new(data))
            .and_then(|mut decoder| decoder.orientation())
            .ok(),
        ImageFormat::Webp => image::codecs::webp::WebPDecoder::new(Cursor::new(data))
            .and_then(|mut decoder| decoder.orientation())
            .ok(),
    };
    read.map_or(Orientation::Normal, |o| {
        Orientation::from_exif(u32::from(o.to_exif()))
    })
}

/// The TIFF payload of the first `APP1 "Exif\0\0"` segment before the first scan.
fn jpeg_exif_payload(data: &[u8]) -> Option<&[u8]> {
    let mut pos = 2; // after SOI
    loop {
        // Skip fill bytes before a marker.
        while *data.get(pos)? == 0xFF && *data.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        if *data.get(pos)? != 0xFF {
            return None;
        }
        let marker = *data.get(pos + 1)?;
        pos += 2;
        match marker {
            // Stand-alone markers carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            // Start of scan or end of image: no EXIF before the pixels.
            0xDA | 0xD9 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(pos)?, *data.get(pos + 1)?]));
        if len < 2 {
            return None;
        }
        let segment = data.get(pos + 2..pos + len)?;
        if let (0xE1, Some(tiff)) = (marker, segment.strip_prefix(b"Exif\0\0")) {
            return Some(tiff);
        }
        pos += len;
    }
}

/// Returns the image as it should be displayed for `orientation`.
pub fn apply_orientation(image: Image, orientation: Orientation) -> Image {
    match image.channels() {
        4 => apply_typed::<4>(image, orientation),
        _ => apply_typed::<3>(image, orientation),
    }
}

fn apply_typed<const C: usize>(image: Image, orientation: Orientation) -> Image {
    let w = image.width() as usize;
    let h = image.height() as usize;
    let channels = image.channels();
    match orientation {
        Orientation::Normal => image,
        Orientation::FlipHorizontal => {
            let mut pixels = image.into_pixels();
            for row in pixels.chunks_exact_mut(w * C) {
                reverse_pixels::<C>(row);
            }
            Image::from_parts(w as u32, h as u32, channels, pixels)
        }
        Orientation::FlipVertical => {
            let mut pixels = image.into_pixels();
            flip_rows(&mut pixels, w * C, h);
            Image::from_parts(w as u32, h as u32, channels, pixels)
        }
        Orientation::Rotate180 => {
            let mut pixels = image.into_pixels();
            reverse_pixels::<C>(&mut pixels);
            Image::from_parts(w as u32, h as u32, channels, pixels)
        }
        Orientation::Transpose
        | Orientation::Rotate90
        | Orientation::Transverse
        | Orientation::Rotate270 => {
            let src = image.pixels();
            let mut out = vec![0u8; src.len()];
            // Output is h wide and w tall. Output row `oy` comes from source column
            // `sx(oy)`; output column `ox` from source row `sy(ox)`.
            let mirror_col = matches!(
                orientation,
                Orientation::Transverse | Orientation::Rotate270
            );
            let mirror_row = matches!(orientation, Orientation::Rotate90 | Orientation::Transverse);
            let out_stride = h * C;
            const STRIP: usize = 16;
            // Work in strips of source columns so each source row is read contiguously.
            for strip_start in (0..w).step_by(STRIP) {
                let strip_end = (strip_start + STRIP).min(w);
                for sy in 0..h {
                    let ox = if mirror_row { h - 1 - sy } else { sy };
                    let src_row = &src[sy * w * C..(sy + 1) * w * C];
                    for sx in strip_start..strip_end {
                        let oy = if mirror_col { w - 1 - sx } else { sx };
                        let o = oy * out_stride + ox * C;
                        out[o..o + C].copy_from_slice(&src_row[sx * C..sx * C + C]);
                    }
                }
            }
            Image::from_parts(h as u32, w as u32, channels, out)
        }
    }
}

fn reverse_pixels<const C: usize>(buf: &mut [u8]) {
    let n = buf.len() / C;
    for i in 0..n / 2 {
        let j = n - 1 - i;
        for c in 0..C {
            buf.swap(i * C + c, j * C + c);
        }
    }
}

fn flip_rows(buf: &mut [u8], stride: usize, h: usize) {
    for y in 0..h / 2 {
        let (top, bottom) = buf.split_at_mut((h - 1 - y) * stride);
        top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3x2 RGB image whose pixel (x, y) has value 10*y + x in every channel.
    fn sample() -> Image {
        let mut px = Vec::new();
        for y in 0..2u8 {
            for x in 0..3u8 {
                px.extend_from_slice(&[10 * y + x; 3]);
            }
        }
        Image::new(3, 2, 3, px).unwrap()
    }

    fn grid(img: &Image) -> Vec<Vec<u8>> {
        img.pixels()
            .chunks_exact(img.width() as usize * 3)
            .map(|row| row.chunks_exact(3).map(|p| p[0]).collect())
            .collect()
    }

    #[test]
    fn all_eight_orientations() {
        // Source:  0  1  2
        //         10 11 12
        let cases: [(u32, Vec<Vec<u8>>); 8] = [
            (1, vec![vec![0, 1, 2], vec![10, 11, 12]]),
            (2, vec![vec![2, 1, 0], vec![12, 11, 10]]),
            (3, vec![vec![12, 11, 10], vec![2, 1, 0]]),
            (4, vec![vec![10, 11, 12], vec![0, 1, 2]]),
            (5, vec![vec![0, 10], vec![1, 11], vec![2, 12]]),
            (6, vec![vec![10, 0], vec![11, 1], vec![12, 2]]),
            (7, vec![vec![12, 2], vec![11, 1], vec![10, 0]]),
            (8, vec![vec![2, 12], vec![1, 11], vec![0, 10]]),
        ];
        for (value, expected) in cases {
            let o = Orientation::from_exif(value);
            assert_eq!(o.exif_value(), value);
            let out = apply_orientation(sample(), o);
            assert_eq!(grid(&out), expected, "orientation {value}");
            assert_eq!((out.width(), out.height()), o.oriented(3, 2));
        }
    }

    /// A minimal little-endian TIFF (EXIF) block holding only the orientation tag.
    fn exif_block(value: u16) -> Vec<u8> {
        let mut tiff = b"II*\0".to_vec();
        tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 right after the header
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count
        tiff.extend_from_slice(&value.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]); // padding of the 4-byte value field
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        tiff
    }

    fn encode_with_exif(format: ImageFormat, exif: Option<Vec<u8>>) -> Vec<u8> {
        use image::ImageEncoder as _;
        let mut out = Vec::new();
        let pixels = [10u8, 20, 30, 40, 50, 60];
        match format {
            ImageFormat::Png => {
                let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
                if let Some(exif) = exif {
                    encoder.set_exif_metadata(exif).unwrap();
                }
                encoder
                    .write_image(&pixels, 2, 1, image::ExtendedColorType::Rgb8)
                    .unwrap();
            }
            ImageFormat::Webp => {
                let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
                if let Some(exif) = exif {
                    encoder.set_exif_metadata(exif).unwrap();
                }
                encoder
                    .write_image(&pixels, 2, 1, image::ExtendedColorType::Rgb8)
                    .unwrap();
            }
            ImageFormat::Jpeg => unreachable!("JPEG is covered by the fixtures"),
        }
        out
    }

    #[test]
    fn png_and_webp_exif_orientation_is_read() {
        for format in [ImageFormat::Png, ImageFormat::Webp] {
            for value in 1..=8u16 {
                let data = encode_with_exif(format, Some(exif_block(value)));
                assert_eq!(
                    read_orientation(&data, format),
                    Orientation::from_exif(u32::from(value)),
                    "{format:?} orientation {value}"
                );
            }
            let plain = encode_with_exif(format, None);
            assert_eq!(read_orientation(&plain, format), Orientation::Normal);
            // Out of range and unreadable EXIF both mean upright.
            let odd = encode_with_exif(format, Some(exif_block(9)));
            assert_eq!(read_orientation(&odd, format), Orientation::Normal);
            let junk = encode_with_exif(format, Some(b"not a TIFF block".to_vec()));
            assert_eq!(read_orientation(&junk, format), Orientation::Normal);
        }
    }

    #[test]
    fn jpeg_exif_in_app1_is_read() {
        let tiff = exif_block(8);
        let mut jpeg = vec![0xFF, 0xD8];
        // An APP0 segment first, so the walk has to step over it.
        jpeg.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00]);
        let len = u16::try_from(2 + 6 + tiff.len()).unwrap();
        jpeg.extend_from_slice(&[0xFF, 0xE1]);
        jpeg.extend_from_slice(&len.to_be_bytes());
        jpeg.extend_from_slice(b"Exif\0\0");
        jpeg.extend_from_slice(&tiff);
        jpeg.extend_from_slice(&[0xFF, 0xDA]);
        assert_eq!(
            read_orientation(&jpeg, ImageFormat::Jpeg),
            Orientation::Rotate270
        );
    }

    #[test]
    fn exif_walk_survives_garbage() {
        assert_eq!(
            read_orientation(&[0xFF, 0xD8, 0xFF], ImageFormat::Jpeg),
            Orientation::Normal
        );
        assert_eq!(
            read_orientation(
                &[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, b'E'],
                ImageFormat::Jpeg
            ),
            Orientation::Normal
        );
        assert_eq!(
            read_orientation(b"\x89PNG\r\n\x1a\n", ImageFormat::Png),
            Orientation::Normal
        );
        assert_eq!(
            read_orientation(b"RIFF\xff\xff\xff\xffWEBP", ImageFormat::Webp),
            Orientation::Normal
        );
    }
}
