//! YOLO output decoding and class-wise non-maximum suppression.

use crate::detect::letterbox::Letterbox;
use crate::error::ImagingError;

/// One box in source-image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxDetection {
    pub class_id: usize,
    pub confidence: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoxDetection {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }
}

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &BoxDetection, b: &BoxDetection) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Decodes one image's YOLOv8/YOLO11 output, laid out `[4 + classes, anchors]`
/// (rows `cx, cy, w, h` in model-input pixels, then one score per class): each
/// anchor keeps its best class, anchors under `confidence` are dropped, and
/// boxes are mapped back to source pixels through `letterbox` (clamped to the
/// image; boxes that become empty are dropped).
///
/// Reads the output row by row (it is contiguous that way), so the 705,600
/// values of a 640x640 YOLO11 output take well under a millisecond.
pub fn decode_yolo(
    output: &[f32],
    classes: usize,
    anchors: usize,
    confidence: f32,
    letterbox: &Letterbox,
) -> Result<Vec<BoxDetection>, ImagingError> {
    let rows = 4 + classes;
    if classes == 0 || output.len() != rows * anchors {
        return Err(ImagingError::InvalidParameter(format!(
            "model output has {} values, expected (4 + {classes}) x {anchors}",
            output.len()
        )));
    }
    let row = |r: usize| &output[r * anchors..(r + 1) * anchors];
    let mut best_score = row(4).to_vec();
    let mut best_class = vec![0u16; anchors];
    for class in 1..classes {
        for (a, &score) in row(4 + class).iter().enumerate() {
            if score > best_score[a] {
                best_score[a] = score;
                best_class[a] = class as u16;
            }
        }
    }
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    let mut found = Vec::new();
    for a in 0..anchors {
        let score = best_score[a];
        // NaN scores fail this comparison too and are dropped.
        if score.is_nan() || score < confidence {
            continue;
        }
        let (x1, y1) = letterbox.to_source(cx[a] - w[a] / 2.0, cy[a] - h[a] / 2.0);
        let (x2, y2) = letterbox.to_source(cx[a] + w[a] / 2.0, cy[a] + h[a] / 2.0);
        if x2 > x1 && y2 > y1 {
            found.push(BoxDetection {
                class_id: usize::from(best_class[a]),
                confidence: score,
                x1,
                y1,
                x2,
                y2,
            });
        }
    }
    Ok(found)
}

/// Class-wise NMS: highest confidence first, a box is dropped when it overlaps
/// a kept box of the same class by more than `iou_threshold`. At most
/// `max_detections` boxes come back, best first.
pub fn non_max_suppression(
    mut candidates: Vec<BoxDetection>,
    iou_threshold: f32,
    max_detections: usize,
) -> Vec<BoxDetection> {
    candidates.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mut kept: Vec<BoxDetection> = Vec::new();
    for candidate in candidates {
        if kept.len() >= max_detections {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == candidate.class_id && iou(k, &candidate) > iou_threshold);
        if !suppressed {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bx(class_id: usize, confidence: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> BoxDetection {
        BoxDetection {
            class_id,
            confidence,
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = bx(0, 1.0, 0.0, 0.0, 10.0, 10.0);
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        let b = bx(0, 1.0, 5.0, 0.0, 15.0, 10.0);
        assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
        let far = bx(0, 1.0, 20.0, 20.0, 30.0, 30.0);
        assert_eq!(iou(&a, &far), 0.0);
        let empty = bx(0, 1.0, 3.0, 3.0, 3.0, 3.0);
        assert_eq!(iou(&empty, &empty), 0.0);
    }

    #[test]
    fn nms_is_per_class_and_keeps_the_best() {
        let boxes = vec![
            bx(0, 0.6, 1.0, 1.0, 11.0, 11.0),
            bx(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            // Same place, other class: kept.
            bx(1, 0.8, 0.0, 0.0, 10.0, 10.0),
            // Same class, far away: kept.
            bx(0, 0.7, 50.0, 50.0, 60.0, 60.0),
        ];
        let kept = non_max_suppression(boxes.clone(), 0.5, 300);
        let scores: Vec<f32> = kept.iter().map(|b| b.confidence).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
        // A higher IoU threshold keeps the overlapping one too.
        assert_eq!(non_max_suppression(boxes.clone(), 0.9, 300).len(), 4);
        assert_eq!(non_max_suppression(boxes, 0.5, 1).len(), 1);
    }

    #[test]
    fn decode_maps_boxes_to_source_pixels_and_drops_weak_ones() {
        // Source 1280x720 in a 640x640 input: scale 0.5, pad_y 140.
        let lb = Letterbox::new(1280, 720, 640, 640).unwrap();
        let anchors = 3;
        let classes = 2;
        let mut out = vec![0.0; (4 + classes) * anchors];
        let mut set = |r: usize, a: usize, v: f32| out[r * anchors + a] = v;
        // Anchor 0: class 1 at 0.9, centred at input (320, 320), 100x50.
        for (r, v) in [
            (0, 320.0),
            (1, 320.0),
            (2, 100.0),
            (3, 50.0),
            (4, 0.1),
            (5, 0.9),
        ] {
            set(r, 0, v);
        }
        // Anchor 1: too weak.
        for (r, v) in [
            (0, 10.0),
            (1, 200.0),
            (2, 10.0),
            (3, 10.0),
            (4, 0.2),
            (5, 0.1),
        ] {
            set(r, 1, v);
        }
        // Anchor 2: NaN score is dropped.
        set(4, 2, f32::NAN);
        let found = decode_yolo(&out, classes, anchors, 0.5, &lb).unwrap();
        assert_eq!(found.len(), 1);
        let d = found[0];
        assert_eq!(d.class_id, 1);
        assert!((d.confidence - 0.9).abs() < 1e-6);
        // Input x 270..370 -> source 540..740; input y 295..345 -> source 310..410.
        assert!(
            (d.x1 - 540.0).abs() < 1e-3 && (d.x2 - 740.0).abs() < 1e-3,
            "{d:?}"
        );
        assert!(
            (d.y1 - 310.0).abs() < 1e-3 && (d.y2 - 410.0).abs() < 1e-3,
            "{d:?}"
        );
        assert!(decode_yolo(&out[1..], classes, anchors, 0.5, &lb).is_err());
    }
}
