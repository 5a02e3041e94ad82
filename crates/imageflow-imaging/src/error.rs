//! The one error type of the crate.

use crate::format::ImageFormat;

/// Everything that can go wrong while decoding, transforming or encoding an image.
///
/// Every message is written for the person who sent the image or the parameters:
/// it says what was found and what is allowed, so the caller can map the error
/// straight to an `INVALID_ARGUMENT` status (or `INTERNAL` for [`ImagingError::Encode`]).
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The input has zero bytes.
    #[error("the image is empty (0 bytes)")]
    Empty,

    /// The magic bytes are not those of a supported format.
    #[error("unsupported image format: expected {}", ImageFormat::supported_list())]
    UnsupportedFormat,

    /// The encoded input is bigger than [`crate::Limits::max_input_bytes`].
    #[error("the image is {size} bytes, over the limit of {limit} bytes")]
    InputTooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// The (declared or requested) size is over [`crate::Limits::max_pixels`] or over
    /// [`crate::Limits::max_dimension`] on a side.
    #[error("{}", too_many_pixels_message(*width, *height, *limit))]
    TooManyPixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The limit that was violated: [`crate::Limits::max_dimension`] when a side is too
        /// long (checked first), otherwise [`crate::Limits::max_pixels`].
        limit: u64,
    },

    /// Truncated or corrupt data; the message names the format and what failed.
    #[error("corrupt image: {0}")]
    Corrupt(String),

    /// A parameter (target size, filter intensity, ...) is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),

    /// The encoder failed (this is not the caller's fault).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// Renders [`ImagingError::TooManyPixels`]. The side limit is checked first and reported
/// with `limit` = the per-side maximum, so a side longer than `limit` means a side
/// violation; otherwise `limit` is the pixel-count limit.
fn too_many_pixels_message(width: u32, height: u32, limit: u64) -> String {
    let longest = u64::from(width.max(height));
    if longest > limit {
        return format!(
            "image is {width}x{height}: a side of {longest} pixels is over the per-side limit of {limit}"
        );
    }
    let pixels = u64::from(width) * u64::from(height);
    format!("image is {width}x{height} = {pixels} pixels, over the limit of {limit}")
}
