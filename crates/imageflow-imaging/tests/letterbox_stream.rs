//! The streamed letterbox (a JPEG decoded to RGB a few rows at a time, resampled into
//! the model's tensor on a helper thread) against the whole-image path: the same
//! tensor, value for value, and the same refusals.

#![allow(clippy::unwrap_used)]

mod common;

use common::{damaged_copies, fixture};
use imageflow_imaging::{
    EncodeOptions, ImageFormat, ImagingError, Limits, decode, encode, letterbox_encoded,
    letterbox_encoded_streamed, letterbox_encoded_whole,
};

/// Model inputs that cover the edges of the row logic: YOLO's square, a smaller and an
/// odd one (odd padding), one wider than the photo's aspect (padding left and right),
/// a content of a few rows, and 960x960: the photo's 1/2-scale decode keeps its width
/// (no horizontal pass), the smaller fixtures are enlarged from a full-scale decode.
const INPUTS: [(u32, u32); 6] = [
    (640, 640),
    (320, 320),
    (641, 479),
    (1280, 400),
    (512, 9),
    (960, 960),
];

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn streamed_tensors_equal_the_whole_image_path() {
    let limits = Limits::default();
    let mut streamed_cases = Vec::new();
    for file in [
        "photo-1920x1080.jpg",
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "rocket.jpg",
    ] {
        let data = fixture(file);
        for (w, h) in INPUTS {
            let whole = letterbox_encoded_whole(&data, &limits, w, h).unwrap();
            let routed = letterbox_encoded(&data, &limits, w, h).unwrap();
            assert!(routed == whole, "{file} into {w}x{h}: letterbox_encoded");
            if let Some(streamed) = letterbox_encoded_streamed(&data, &limits, w, h).unwrap() {
                assert_eq!(streamed.letterbox, whole.letterbox, "{file} {w}x{h}");
                assert_eq!(streamed.format, ImageFormat::Jpeg);
                let differ = streamed
                    .tensor
                    .iter()
                    .zip(&whole.tensor)
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(differ, 0, "{file} into {w}x{h}: values differ");
                assert_eq!(streamed.tensor.len(), whole.tensor.len());
                streamed_cases.push((file, w, h));
            }
        }
    }
    // The path must actually run where it applies: every fixture is a single-scan
    // YCbCr JPEG shown as stored, and these inputs need no window wider than the
    // horizontal pass takes (512x9 does: a 240-pixel 1/8 decode into 16 columns).
    if avx2() {
        for file in ["photo-1920x1080.jpg", "coffee.jpg", "rocket.jpg"] {
            for (w, h) in [(640, 640), (320, 320), (641, 479), (1280, 400), (960, 960)] {
                assert!(
                    streamed_cases.contains(&(file, w, h)),
                    "{file} into {w}x{h} was not streamed: {streamed_cases:?}"
                );
            }
        }
    }
}

#[test]
fn other_inputs_are_not_streamed_and_give_the_same_tensor() {
    let limits = Limits::default();
    let png = fixture("chelsea.png");
    for (name, data) in [
        // Rotated by EXIF: the rows are not the displayed rows.
        (
            "EXIF-rotated JPEG",
            fixture("chelsea-exif-orientation-6.jpg"),
        ),
        ("PNG", png.clone()),
        ("WebP", fixture("chelsea.webp")),
    ] {
        assert!(
            letterbox_encoded_streamed(&data, &limits, 640, 640)
                .unwrap()
                .is_none(),
            "{name}"
        );
        let routed = letterbox_encoded(&data, &limits, 640, 640).unwrap();
        let whole = letterbox_encoded_whole(&data, &limits, 640, 640).unwrap();
        assert!(routed == whole, "{name}");
    }
    // A JPEG this crate encoded (baseline 4:2:0) is streamed.
    let image = decode(&png, &limits).unwrap().image;
    let jpeg = encode(&image, &EncodeOptions::new(ImageFormat::Jpeg)).unwrap();
    if avx2() {
        let streamed = letterbox_encoded_streamed(&jpeg, &limits, 640, 640).unwrap();
        assert!(streamed.unwrap() == letterbox_encoded_whole(&jpeg, &limits, 640, 640).unwrap());
    }
}

#[test]
fn damaged_streams_are_refused_and_the_next_image_is_fine() {
    let limits = Limits::default();
    let data = fixture("photo-1920x1080.jpg");
    let good = letterbox_encoded_whole(&data, &limits, 640, 640).unwrap();
    // Cut at several points of the entropy-coded data, and bytes overwritten in the
    // middle: a typed error like the whole-image path's, never a grey-filled tensor, a
    // panic or a hang.
    let damaged = damaged_copies(&data);
    for bad in &damaged {
        let err = letterbox_encoded(bad, &limits, 640, 640).unwrap_err();
        assert!(
            matches!(err, ImagingError::Corrupt(ref m) if m.contains("truncated or damaged")),
            "{} bytes: {err:?}",
            bad.len()
        );
        assert!(
            matches!(
                letterbox_encoded_whole(bad, &limits, 640, 640),
                Err(ImagingError::Corrupt(_))
            ),
            "{} bytes: the whole-image path refuses it too",
            bad.len()
        );
        // The same thread's decoder serves the next image correctly.
        assert!(letterbox_encoded(&data, &limits, 640, 640).unwrap() == good);
    }
}

#[test]
fn concurrent_callers_get_their_own_tensors() {
    // Callers on several threads share the helper threads; each result must be its own.
    let limits = Limits::default();
    let photo = fixture("photo-1920x1080.jpg");
    let coffee = fixture("coffee.jpg");
    let cases = [
        (&photo, 640, 640),
        (&coffee, 640, 640),
        (&photo, 320, 320),
        (&coffee, 641, 479),
    ];
    let expected: Vec<_> = cases
        .iter()
        .map(|&(data, w, h)| letterbox_encoded_whole(data, &limits, w, h).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (&(data, w, h), expected) in cases.iter().zip(&expected) {
            scope.spawn(move || {
                for _ in 0..10 {
                    let made = letterbox_encoded(data, &Limits::default(), w, h).unwrap();
                    assert!(&made == expected, "{w}x{h}");
                }
            });
        }
    });
}
