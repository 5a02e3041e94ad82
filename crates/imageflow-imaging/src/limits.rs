//! Resource limits applied to every decoded input and every requested output.

use crate::error::ImagingError;

/// Bounds on what the crate will decode or produce.
///
/// They are checked against the size an image *declares in its header*, before any
/// pixel buffer is allocated, and against every requested output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted encoded input, in bytes.
    pub max_input_bytes: usize,
    /// Largest accepted width x height (source or output).
    pub max_pixels: u64,
    /// Largest accepted width or height (source or output).
    pub max_dimension: u32,
}

impl Limits {
    /// Default maximum encoded input: 64 MiB.
    pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;
    /// Default maximum pixel count: 50 million (about 8K x 6K).
    pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
    /// Default maximum side: 16384.
    pub const DEFAULT_MAX_DIMENSION: u32 = 16384;

    /// Refuses empty input and input over [`Limits::max_input_bytes`].
    pub fn check_input(&self, data: &[u8]) -> Result<(), ImagingError> {
        if data.is_empty() {
            return Err(ImagingError::Empty);
        }
        if data.len() > self.max_input_bytes {
            return Err(ImagingError::InputTooLarge {
                size: data.len(),
                limit: self.max_input_bytes,
            });
        }
        Ok(())
    }

    /// Refuses a size with a side over [`Limits::max_dimension`] (checked first) or more than
    /// [`Limits::max_pixels`] pixels. Zero sides are not this check's business.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), ImagingError> {
        if width > self.max_dimension || height > self.max_dimension {
            return Err(ImagingError::TooManyPixels {
                width,
                height,
                limit: u64::from(self.max_dimension),
            });
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(ImagingError::TooManyPixels {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: Self::DEFAULT_MAX_INPUT_BYTES,
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            max_dimension: Self::DEFAULT_MAX_DIMENSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_limit_message_is_actionable() {
        let limits = Limits {
            max_dimension: 100_000,
            ..Limits::default()
        };
        let err = limits.check_dimensions(20000, 20000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image is 20000x20000 = 400000000 pixels, over the limit of 50000000"
        );
    }

    #[test]
    fn side_limit_is_checked_first() {
        let err = Limits::default().check_dimensions(20000, 10).unwrap_err();
        assert!(matches!(
            err,
            ImagingError::TooManyPixels { limit: 16384, .. }
        ));
        assert_eq!(
            err.to_string(),
            "image is 20000x10: a side of 20000 pixels is over the per-side limit of 16384"
        );
        assert!(Limits::default().check_dimensions(16384, 3000).is_ok());
    }

    #[test]
    fn input_checks() {
        let limits = Limits {
            max_input_bytes: 4,
            ..Limits::default()
        };
        assert!(matches!(limits.check_input(&[]), Err(ImagingError::Empty)));
        assert!(matches!(
            limits.check_input(&[0; 5]),
            Err(ImagingError::InputTooLarge { size: 5, limit: 4 })
        ));
        assert!(limits.check_input(&[0; 4]).is_ok());
    }
}
