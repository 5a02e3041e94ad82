//! Detections on the test photos stay what they were when the pre-processing
//! was last changed on purpose: same classes, boxes within 2 px, confidences
//! within 0.01 (issue 18's bar for making the pre-processing faster).
//!
//! `tests/golden/detections.json` was written by this test with
//! `GOLDEN_RECORD=1` before the fast pre-processing landed; a change that moves
//! a detection further than the bar fails here and says which one.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;
use imageflow_proto::v1::DetectionResponse;
use imageflow_testkit::fixture;
use serde::{Deserialize, Serialize};

/// Every JPEG fixture, the EXIF-rotated one and the 1080p photo included.
const FILES: [&str; 6] = [
    "astronaut.jpg",
    "chelsea.jpg",
    "chelsea-exif-orientation-6.jpg",
    "coffee.jpg",
    "rocket.jpg",
    "photo-1920x1080.jpg",
];

/// Low, so the weak detections (the ones a changed tensor moves first) are
/// compared too.
const CONFIDENCE: f32 = 0.25;
const BOX_TOLERANCE_PX: f32 = 2.0;
const CONFIDENCE_TOLERANCE: f32 = 0.01;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Recorded {
    file: String,
    detections: Vec<RecordedDetection>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct RecordedDetection {
    class_name: String,
    confidence: f32,
    bbox: [f32; 4],
}

fn golden_path() -> PathBuf {
    repo_root().join("crates/ai-detect-svc/tests/golden/detections.json")
}

fn recorded(file: &str, response: &DetectionResponse) -> Recorded {
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
fn difference(want: &Recorded, got: &Recorded) -> Option<String> {
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

#[tokio::test]
async fn detections_on_the_test_photos_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(&fs_env(dir.path())).await;
    let mut got = Vec::new();
    for file in FILES {
        let mut request = bytes_request(fixture(file), false);
        request.confidence_threshold = CONFIDENCE;
        let response = client
            .detect_objects(request)
            .await
            .unwrap_or_else(|s| panic!("{file}: {s:?}"))
            .into_inner();
        got.push(recorded(file, &response));
    }
    service.stop().await.unwrap();

    if std::env::var_os("GOLDEN_RECORD").is_some() {
        std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
        std::fs::write(
            golden_path(),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
        panic!(
            "recorded {}; run again without GOLDEN_RECORD to compare",
            golden_path().display()
        );
    }
    let want: Vec<Recorded> =
        serde_json::from_str(&std::fs::read_to_string(golden_path()).unwrap()).unwrap();
    assert_eq!(want.len(), got.len(), "photos compared");
    assert!(
        want.iter().map(|r| r.detections.len()).sum::<usize>() >= 10,
        "the recording holds too few detections to mean anything"
    );
    let differences: Vec<String> = want
        .iter()
        .zip(&got)
        .filter_map(|(w, g)| difference(w, g))
        .collect();
    assert!(differences.is_empty(), "{differences:#?}");
}

#[test]
fn the_comparison_notices_a_moved_box_a_lost_one_and_a_new_one() {
    let det = |class: &str, confidence, x1| RecordedDetection {
        class_name: class.into(),
        confidence,
        bbox: [x1, 10.0, 50.0, 60.0],
    };
    let want = Recorded {
        file: "a.jpg".into(),
        detections: vec![det("cat", 0.9, 5.0), det("cup", 0.4, 20.0)],
    };
    let same = Recorded {
        detections: vec![det("cup", 0.405, 21.5), det("cat", 0.895, 5.0)],
        ..want.clone()
    };
    assert_eq!(difference(&want, &same), None);
    let moved = Recorded {
        detections: vec![det("cat", 0.9, 5.0), det("cup", 0.4, 23.0)],
        ..want.clone()
    };
    assert!(difference(&want, &moved).unwrap().contains("moved 3.00 px"));
    let less_sure = Recorded {
        detections: vec![det("cat", 0.88, 5.0), det("cup", 0.4, 20.0)],
        ..want.clone()
    };
    assert!(
        difference(&want, &less_sure)
            .unwrap()
            .contains("confidence")
    );
    let lost = Recorded {
        detections: vec![det("cat", 0.9, 5.0)],
        ..want.clone()
    };
    assert!(difference(&want, &lost).unwrap().contains("gone"));
    let extra = Recorded {
        detections: vec![
            det("cat", 0.9, 5.0),
            det("cup", 0.4, 20.0),
            det("dog", 0.3, 0.0),
        ],
        ..want.clone()
    };
    assert!(difference(&want, &extra).unwrap().contains("new detection"));
}
