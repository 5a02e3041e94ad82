//! The streamed resize (baseline 4:2:0 JPEG decoded, resampled and encoded band by band)
//! against the whole-image plane path: the same JPEG bytes, and the same refusals.

#![allow(clippy::unwrap_used)]

mod common;

use common::{damaged_copies, fixture, resize_spec as spec};
use imageflow_imaging::{
    ImageFormat, ImagingError, Limits, ResizeQuality, ResizeSpec, encode, resize_encoded,
    resize_encoded_streamed, resize_encoded_whole_planes,
};

/// Sizes that cover the edges of the band logic: the usual 800x450 (a partial last
/// encoder band), odd sides (padded chroma and luma), a width or a height alone
/// changing, an enlargement, a single row or column, and each filter.
fn specs() -> Vec<ResizeSpec> {
    use ResizeQuality::{Best, Fast, Good};
    vec![
        spec(800, 600, true, Good),
        spec(801, 451, false, Good),
        spec(97, 61, false, Fast),
        spec(960, 300, false, Fast),
        spec(300, 1080, false, Good),
        spec(2000, 1200, false, Good),
        spec(64, 1, false, Fast),
        spec(1, 64, false, Fast),
        spec(1920, 1080, false, Good),
        spec(1500, 0, true, Best),
        spec(333, 0, true, Best),
    ]
}

/// The photo at every size and the other fixtures at a few: where the streamed path
/// applies, its bytes are the whole-image plane path's; `resize_encoded` gives the same
/// either way.
#[test]
fn streamed_bytes_equal_the_whole_image_plane_path() {
    let limits = Limits::default();
    let mut streamed_cases = Vec::new();
    for (file, count) in [
        ("photo-1920x1080.jpg", specs().len()),
        ("astronaut.jpg", 4),
        ("chelsea.jpg", 4),
        ("coffee.jpg", 4),
        ("rocket.jpg", 4),
    ] {
        let data = fixture(file);
        for s in specs().into_iter().take(count) {
            let whole = resize_encoded_whole_planes(&data, &limits, &s).unwrap();
            let routed = resize_encoded(&data, &limits, &s).unwrap();
            assert!(routed.data == whole.data, "{file} {s:?}: resize_encoded");
            if let Some(streamed) = resize_encoded_streamed(&data, &limits, &s).unwrap() {
                assert_eq!(
                    (streamed.width, streamed.height, streamed.format),
                    (whole.width, whole.height, whole.format),
                    "{file} {s:?}"
                );
                assert!(streamed.data == whole.data, "{file} {s:?}: bytes differ");
                streamed_cases.push((file, s.width, s.height));
            }
        }
    }
    // The path must actually run: the 1080p photo is baseline 4:2:0, and these sizes
    // need no window wider than the passes take (a 1-pixel-wide output does).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        for (w, h) in [
            (800, 600),
            (801, 451),
            (97, 61),
            (960, 300),
            (2000, 1200),
            (64, 1),
        ] {
            assert!(
                streamed_cases.contains(&("photo-1920x1080.jpg", w, h)),
                "the photo at {w}x{h} was not streamed: {streamed_cases:?}"
            );
        }
    }
}

#[test]
fn other_inputs_and_outputs_are_not_streamed() {
    let limits = Limits::default();
    let photo = fixture("photo-1920x1080.jpg");
    let to_png = ResizeSpec {
        output_format: Some(ImageFormat::Png),
        ..spec(800, 600, true, ResizeQuality::Good)
    };
    assert!(
        resize_encoded_streamed(&photo, &limits, &to_png)
            .unwrap()
            .is_none()
    );
    // An EXIF-rotated photo goes the RGB way, and so does a PNG.
    let rotated = fixture("chelsea-exif-orientation-6.jpg");
    assert!(
        resize_encoded_streamed(
            &rotated,
            &limits,
            &spec(100, 100, true, ResizeQuality::Good)
        )
        .unwrap()
        .is_none()
    );
    let png = fixture("chelsea.png");
    assert!(
        resize_encoded_streamed(&png, &limits, &spec(100, 100, true, ResizeQuality::Good))
            .unwrap()
            .is_none()
    );
    // A JPEG this crate encoded (baseline 4:2:0) is streamed.
    let decoded = imageflow_imaging::decode(&png, &limits).unwrap().image;
    let jpeg = encode(
        &decoded,
        &imageflow_imaging::EncodeOptions {
            format: ImageFormat::Jpeg,
            jpeg_quality: 90,
        },
    )
    .unwrap();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert!(
            resize_encoded_streamed(&jpeg, &limits, &spec(100, 100, true, ResizeQuality::Good))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn damaged_streams_are_refused_and_the_next_image_is_fine() {
    let limits = Limits::default();
    let s = spec(800, 600, true, ResizeQuality::Good);
    let data = fixture("photo-1920x1080.jpg");
    let good = resize_encoded_whole_planes(&data, &limits, &s)
        .unwrap()
        .data;
    // Cut at several points of the entropy-coded data, and bytes overwritten in the
    // middle: a typed error, never a grey-filled picture, a panic or a hang.
    let damaged = damaged_copies(&data);
    for bad in &damaged {
        let err = resize_encoded(bad, &limits, &s).unwrap_err();
        assert!(
            matches!(err, ImagingError::Corrupt(ref m) if m.contains("truncated or damaged")),
            "{} bytes: {err:?}",
            bad.len()
        );
        // The same thread's decoder and encoder serve the next image correctly.
        assert!(resize_encoded(&data, &limits, &s).unwrap().data == good);
    }
}

#[test]
fn concurrent_callers_get_their_own_bytes() {
    // Callers on several threads share the helper threads; each result must be its own.
    let limits = Limits::default();
    let data = fixture("photo-1920x1080.jpg");
    let sizes = [(800, 600), (640, 360), (320, 180), (801, 451)];
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&(w, h)| {
            resize_encoded_whole_planes(&data, &limits, &spec(w, h, false, ResizeQuality::Good))
                .unwrap()
                .data
        })
        .collect();
    std::thread::scope(|scope| {
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let (data, expected) = (&data, &expected[i]);
            scope.spawn(move || {
                for _ in 0..10 {
                    let out = resize_encoded(
                        data,
                        &Limits::default(),
                        &spec(w, h, false, ResizeQuality::Good),
                    )
                    .unwrap();
                    assert!(&out.data == expected, "{w}x{h}");
                }
            });
        }
    });
}
