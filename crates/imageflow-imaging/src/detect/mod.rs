//! The pure half of object detection, shared by every backend of ai-detect-svc:
//!
//! * [`letterbox_into`]: fit an image into the model's square input keeping its
//!   aspect ratio, pad with grey 114 (as the YOLO models were trained), and write
//!   the planar RGB 0..1 tensor the model reads; the [`Letterbox`] it returns
//!   maps boxes back to the source image's pixels.
//! * [`decode_yolo`]: the YOLOv8/YOLO11 output `[4 + classes, anchors]` to
//!   candidate boxes above a confidence threshold, in source pixels.
//! * [`non_max_suppression`]: class-wise NMS.
//! * [`draw_detections`]: boxes and labels on the image, for a person to look at.

mod draw;
mod letterbox;
mod nms;
#[cfg(target_arch = "x86_64")]
pub(crate) mod stream;

pub use draw::{Annotation, draw_detections};
pub use letterbox::{
    LETTERBOX_PAD, Letterbox, Letterboxed, letterbox_encoded, letterbox_encoded_streamed,
    letterbox_encoded_whole, letterbox_into,
};
pub use nms::{BoxDetection, decode_yolo, iou, non_max_suppression};
