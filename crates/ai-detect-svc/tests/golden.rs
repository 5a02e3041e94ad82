//! Detections on the test photos stay what they were when the pre-processing
//! was last changed on purpose: same classes, boxes within 2 px, confidences
//! within 0.01 (issue 18's bar for making the pre-processing faster).
//!
//! `tests/golden/detections.json` was written by this test with
//! `GOLDEN_RECORD=1` before the fast pre-processing landed; a change that moves
//! a detection further than the bar fails here and says which one.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "golden/compare.rs"]
mod compare;

use std::path::PathBuf;

use common::*;
use compare::*;
use imageflow_testkit::fixture;

fn golden_path() -> PathBuf {
    repo_root().join("crates/ai-detect-svc/tests/golden/detections.json")
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
