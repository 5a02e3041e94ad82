//! Supported container formats and magic-byte sniffing.

use std::fmt;

/// An encoded image format this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// JPEG (JFIF/EXIF), baseline or progressive; decoded and encoded with libjpeg-turbo.
    Jpeg,
    /// PNG, any bit depth and colour type (converted to 8-bit RGB or RGBA).
    Png,
    /// WebP, lossy or lossless (the first frame of an animation); written lossless.
    Webp,
}

impl ImageFormat {
    /// All supported formats, in the order they are listed in messages.
    pub const ALL: [ImageFormat; 3] = [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Webp];

    /// Upper-case name as used on the wire (`ImageBytes.format`): `"JPEG"`, `"PNG"`, `"WEBP"`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::Webp => "WEBP",
        }
    }

    /// MIME type: `"image/jpeg"`, `"image/png"`, `"image/webp"`.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
        }
    }

    /// File extension without the dot: `"jpg"`, `"png"`, `"webp"`.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
        }
    }

    /// Parses a format name, extension or MIME type, case-insensitively and ignoring
    /// surrounding whitespace and a leading dot: `"JPG"`, `"jpeg"`, `".png"`, `"WebP"`,
    /// `"image/jpeg"`, `"image/jpg"`, `"image/png"`, `"image/webp"`.
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix('.').unwrap_or(s);
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_prefix("image/").unwrap_or(&lower);
        match name {
            "jpeg" | "jpg" | "jpe" | "pjpeg" => Some(ImageFormat::Jpeg),
            "png" | "x-png" => Some(ImageFormat::Png),
            "webp" => Some(ImageFormat::Webp),
            _ => None,
        }
    }

    /// `"JPEG, PNG or WEBP"`, for messages.
    pub(crate) fn supported_list() -> &'static str {
        "JPEG, PNG or WEBP"
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Identifies the format from the magic bytes alone (never from a name or MIME type).
///
/// JPEG: `FF D8 FF`; PNG: the 8-byte PNG signature; WebP: `RIFF....WEBP`.
pub fn sniff_format(data: &[u8]) -> Option<ImageFormat> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if data.starts_with(PNG_MAGIC) {
        Some(ImageFormat::Png)
    } else if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in ImageFormat::ALL {
            assert_eq!(ImageFormat::from_name(f.name()), Some(f));
            assert_eq!(ImageFormat::from_name(f.mime()), Some(f));
            assert_eq!(ImageFormat::from_name(f.extension()), Some(f));
        }
        assert_eq!(ImageFormat::from_name("JPG"), Some(ImageFormat::Jpeg));
        assert_eq!(
            ImageFormat::from_name(" Image/JPEG "),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(ImageFormat::from_name(".WebP"), Some(ImageFormat::Webp));
        assert_eq!(ImageFormat::from_name("gif"), None);
        assert_eq!(ImageFormat::from_name(""), None);
        assert_eq!(ImageFormat::from_name("image/"), None);
    }

    #[test]
    fn sniffs_magic_only() {
        assert_eq!(
            sniff_format(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            sniff_format(b"\x89PNG\r\n\x1a\nrest"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            sniff_format(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(sniff_format(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(sniff_format(b"GIF89a"), None);
        assert_eq!(sniff_format(&[0xFF, 0xD8]), None);
        assert_eq!(sniff_format(&[]), None);
    }
}
