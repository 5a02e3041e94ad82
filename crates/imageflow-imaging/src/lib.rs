//! Pure image operations for ImageFlowCanvas: limited decoding, encoding, resizing and
//! filters. No I/O, no async, no gRPC: the services call these functions from their
//! blocking-work pool.
//!
//! * [`decode`] / [`decode_at_least`] / [`probe`]: JPEG (libjpeg-turbo, DCT-domain
//!   downscaling), PNG and WebP, with [`Limits`] checked from the header before any pixel
//!   buffer is allocated, and EXIF orientation applied.
//! * [`resize`] (`fast_image_resize`) and [`fit_dimensions`]; [`resize_encoded`] is the
//!   whole resize-svc hot path (a YCbCr JPEG is resized plane by plane, with passes of
//!   our own that give the library's pixels bit for bit; a baseline 4:2:0 JPEG is
//!   streamed: resampled and encoded band by band on a second core while it decodes).
//! * [`apply_filter`] with the filters of [`FilterKind`]; [`filter_encoded`] is the
//!   filter-svc hot path.
//! * [`encode`]: JPEG (libjpeg-turbo), PNG, lossless WebP.
//! * Object detection's pure steps: [`letterbox_into`], [`decode_yolo`],
//!   [`non_max_suppression`], [`draw_detections`].
//!
//! Pixels are 8-bit interleaved RGB, or RGBA when the source has alpha ([`Image`]).
//! Nothing here panics on untrusted input; every failure is an [`ImagingError`] whose
//! message a person can act on.

mod decode;
mod detect;
mod encode;
mod error;
mod filter;
mod format;
mod helper;
#[cfg(target_arch = "x86_64")]
mod hpass;
mod image;
#[cfg(target_arch = "x86_64")]
mod jpeg_rows;
mod limits;
mod orientation;
mod planes;
mod resize;
#[cfg(target_arch = "x86_64")]
mod stream;
#[cfg(target_arch = "x86_64")]
mod vpass;

pub use crate::decode::{Decoded, ImageInfo, decode, decode_at_least, probe};
pub use crate::detect::{
    Annotation, BoxDetection, LETTERBOX_PAD, Letterbox, Letterboxed, decode_yolo, draw_detections,
    iou, letterbox_encoded, letterbox_encoded_streamed, letterbox_encoded_whole, letterbox_into,
    non_max_suppression,
};
pub use crate::encode::{EncodeOptions, Encoded, encode};
pub use crate::error::ImagingError;
pub use crate::filter::{
    FilterKind, FilterSpec, apply_filter, filter_encoded, filter_encoded_rgb, gaussian_kernel,
};
pub use crate::format::{ImageFormat, sniff_format};
pub use crate::image::Image;
pub use crate::limits::Limits;
pub use crate::orientation::{Orientation, apply_orientation, read_orientation};
pub use crate::resize::{
    ResizeQuality, ResizeSpec, fit_dimensions, resize, resize_encoded, resize_encoded_full_decode,
    resize_encoded_rgb, resize_encoded_streamed, resize_encoded_whole_planes,
};
