//! The in-memory pixel buffer.

use std::fmt;

use crate::error::ImagingError;

/// An 8-bit interleaved image: RGB (3 channels) or RGBA (4 channels, only when the source
/// has alpha). Rows are tightly packed (`stride = width * channels`), top row first.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    channels: u8,
    pixels: Vec<u8>,
}

impl Image {
    /// Wraps a pixel buffer, checking that it is 1x1 or larger, has 3 or 4 channels and holds
    /// exactly `width * height * channels` bytes.
    pub fn new(
        width: u32,
        height: u32,
        channels: u8,
        pixels: Vec<u8>,
    ) -> Result<Self, ImagingError> {
        if width == 0 || height == 0 {
            return Err(ImagingError::InvalidParameter(format!(
                "an image must be at least 1x1, got {width}x{height}"
            )));
        }
        if channels != 3 && channels != 4 {
            return Err(ImagingError::InvalidParameter(format!(
                "an image has 3 (RGB) or 4 (RGBA) channels, got {channels}"
            )));
        }
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(usize::from(channels)));
        if expected != Some(pixels.len()) {
            return Err(ImagingError::InvalidParameter(format!(
                "a {width}x{height} image with {channels} channels needs {} bytes, got {}",
                expected.map_or_else(|| "more than usize::MAX".to_owned(), |n| n.to_string()),
                pixels.len()
            )));
        }
        Ok(Image {
            width,
            height,
            channels,
            pixels,
        })
    }

    /// Internal constructor for buffers whose size is correct by construction.
    pub(crate) fn from_parts(width: u32, height: u32, channels: u8, pixels: Vec<u8>) -> Self {
        debug_assert_eq!(
            pixels.len(),
            width as usize * height as usize * usize::from(channels)
        );
        Image {
            width,
            height,
            channels,
            pixels,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// 3 (RGB) or 4 (RGBA).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// The interleaved pixel bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The interleaved pixel bytes, mutable.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// Gives the buffer back.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// True for RGBA images.
    pub fn has_alpha(&self) -> bool {
        self.channels == 4
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length_and_channels() {
        assert!(Image::new(2, 2, 3, vec![0; 12]).is_ok());
        assert!(Image::new(2, 2, 4, vec![0; 16]).unwrap().has_alpha());
        assert!(Image::new(2, 2, 3, vec![0; 11]).is_err());
        assert!(Image::new(2, 2, 1, vec![0; 4]).is_err());
        assert!(Image::new(0, 2, 3, vec![]).is_err());
        let msg = Image::new(2, 2, 3, vec![0; 5]).unwrap_err().to_string();
        assert!(msg.contains("needs 12 bytes, got 5"), "{msg}");
    }
}
