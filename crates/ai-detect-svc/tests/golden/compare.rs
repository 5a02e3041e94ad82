//! The detections recorded for the test photos and the bar a new run is held
//! to: same classes, boxes within 2 px, confidences within 0.01. Shared by
//! the golden test (the CPU) and `benches/gpu.rs` (the CUDA provider).

#![allow(clippy::unwrap_used)] // a detection without a box is a bug the caller should see

use imageflow_proto::v1::DetectionResponse;
use serde::{Deserialize, Serialize};

/// Every JPEG fixture, the EXIF-rotated one and the 1080p photo included.
pub const FILES: [&str; 6] = [
    "astronaut.jpg",
    "chelsea.jpg",
    "chelsea-exif-orientation-6.jpg",
    "coffee.jpg",
    "rocket.jpg",
    "photo-1920x1080.jpg",
];

/// Low, so the weak detections (the ones a changed tensor moves first) are
/// compared too.
pub const CONFIDENCE: f32 = 0.25;
pub const BOX_TOLERANCE_PX: f32 = 2.0;
pub const CONFIDENCE_TOLERANCE: f32 = 0.01;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Recorded {
    pub file: String,
    pub detections: Vec<RecordedDetection>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RecordedDetection {
    pub class_name: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

pub fn recorded(file: &str, response: &DetectionResponse) -> Recorded {
    Recorded {
        file: file.to_owned(),
        detections: response
            .detections
            .iter()
            .map(|d| {
                let b = d.bbox.unwrap();
                RecordedDetection {
                    class_name: d.class_name.clone(),
                    confidence: d.confidence,
                    bbox: [b.x1, b.y1, b.x2, b.y2],
                }
            })
            .collect(),
    }
}

/// The first difference beyond the bar between what was recorded and what
/// came back, paired by class and nearest box.
pub fn difference(want: &Recorded, got: &Recorded) -> Option<String> {
    let mut unmatched: Vec<&RecordedDetection> = got.detections.iter().collect();
    for w in &want.detections {
        let nearest = unmatched
            .iter()
            .enumerate()
            .filter(|(_, g)| g.class_name == w.class_name)
            .map(|(i, g)| {
                let worst = w
                    .bbox
                    .iter()
                    .zip(g.bbox)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                (i, worst)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, worst)) = nearest else {
            return Some(format!("{}: the {w:?} is gone", want.file));
        };
        let g = unmatched.remove(i);
        if worst > BOX_TOLERANCE_PX {
            return Some(format!(
                "{}: {} box moved {worst:.2} px: {:?} -> {:?}",
                want.file, w.class_name, w.bbox, g.bbox
            ));
        }
        let moved = (w.confidence - g.confidence).abs();
        if moved > CONFIDENCE_TOLERANCE {
            return Some(format!(
                "{}: {} at {:?} confidence moved {moved:.4}: {} -> {}",
                want.file, w.class_name, w.bbox, w.confidence, g.confidence
            ));
        }
    }
    unmatched
        .first()
        .map(|extra| format!("{}: a new detection {extra:?}", want.file))
}
