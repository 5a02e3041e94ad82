//! The YCbCr plane path (JPEG in, JPEG out) against the interleaved RGB path it
//! replaces for such inputs: the same sizes and, by PSNR, the same picture.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fixture, psnr, resize_spec as spec};
use imageflow_imaging::{
    FilterKind, FilterSpec, ImageFormat, Limits, ResizeQuality, decode, filter_encoded,
    filter_encoded_rgb, resize_encoded, resize_encoded_rgb,
};

/// The YCbCr JPEG fixtures, 4:2:0 and otherwise.
const JPEGS: [&str; 5] = [
    "photo-1920x1080.jpg",
    "astronaut.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "rocket.jpg",
];

/// Both encodings decoded, compared: equal sizes, PSNR at least `min_db`.
fn assert_close(what: &str, planes: &[u8], rgb: &[u8], min_db: f64) {
    let a = decode(planes, &Limits::default()).unwrap().image;
    let b = decode(rgb, &Limits::default()).unwrap().image;
    let db = psnr(&a, &b);
    assert!(db >= min_db, "{what}: PSNR {db:.1} dB < {min_db}");
}

#[test]
fn resized_photos_match_the_rgb_path() {
    let limits = Limits::default();
    for file in JPEGS {
        let data = fixture(file);
        // Measured when the path was written: 41.3..46.1, 38.7..43.9, 34.5..42.2 (a
        // bilinear 5x reduction) and 41.3..46.1 dB.
        for (w, h, keep, q, min_db) in [
            (800, 600, true, ResizeQuality::Good, 40.0),
            (333, 0, true, ResizeQuality::Best, 37.0),
            (97, 61, false, ResizeQuality::Fast, 33.0),
            (1000, 1000, true, ResizeQuality::Good, 40.0),
        ] {
            let s = spec(w, h, keep, q);
            let planes = resize_encoded(&data, &limits, &s).unwrap();
            let rgb = resize_encoded_rgb(&data, &limits, &s).unwrap();
            assert_eq!(
                (planes.width, planes.height, planes.format),
                (rgb.width, rgb.height, rgb.format),
                "{file} {w}x{h}"
            );
            assert_eq!(
                (planes.original_width, planes.original_height),
                (rgb.original_width, rgb.original_height)
            );
            assert_close(
                &format!("{file} to {w}x{h}"),
                &planes.data,
                &rgb.data,
                min_db,
            );
        }
    }
}

#[test]
fn odd_and_tiny_targets_get_whole_chroma_planes() {
    let data = fixture("coffee.jpg");
    for (w, h) in [(1, 1), (2, 1), (3, 5), (801, 451)] {
        let out = resize_encoded(
            &data,
            &Limits::default(),
            &spec(w, h, false, ResizeQuality::Good),
        )
        .unwrap();
        let image = decode(&out.data, &Limits::default()).unwrap().image;
        assert_eq!((image.width(), image.height()), (w, h));
    }
}

#[test]
fn other_outputs_and_rotated_photos_take_the_rgb_path() {
    let limits = Limits::default();
    let data = fixture("chelsea.jpg");
    let mut png = spec(200, 0, true, ResizeQuality::Good);
    png.output_format = Some(ImageFormat::Png);
    let out = resize_encoded(&data, &limits, &png).unwrap();
    assert_eq!(out.format, ImageFormat::Png);
    assert_eq!(
        out.data,
        resize_encoded_rgb(&data, &limits, &png).unwrap().data
    );

    // EXIF-rotated (stored 300x451, shown 451x300): the RGB path, byte for byte.
    let rotated = fixture("chelsea-exif-orientation-6.jpg");
    let s = spec(150, 0, true, ResizeQuality::Good);
    let out = resize_encoded(&rotated, &limits, &s).unwrap();
    assert_eq!((out.width, out.height), (150, 100));
    assert_eq!(
        out.data,
        resize_encoded_rgb(&rotated, &limits, &s).unwrap().data
    );
}

#[test]
fn gaussian_and_sharpen_on_planes_match_the_rgb_path() {
    let limits = Limits::default();
    for file in JPEGS {
        let data = fixture(file);
        // Measured when the path was written: 46.5..48.0, 44.2..50.9 and 38.9..48.4 dB
        // (rocket.jpg is not 4:2:0, so it takes the RGB path).
        for (kind, intensity, min_db) in [
            (FilterKind::Gaussian, 2.0, 44.0),
            (FilterKind::Gaussian, 0.7, 42.0),
            (FilterKind::Sharpen, 1.5, 37.0),
        ] {
            let spec = FilterSpec { kind, intensity };
            let planes = filter_encoded(&data, &limits, &spec, None, None).unwrap();
            let rgb = filter_encoded_rgb(&data, &limits, &spec, None, None).unwrap();
            assert_eq!(
                (planes.width, planes.height, planes.format),
                (rgb.width, rgb.height, rgb.format)
            );
            assert_close(
                &format!("{file} {} {intensity}", kind.name()),
                &planes.data,
                &rgb.data,
                min_db,
            );
        }
    }
}

#[test]
fn other_filters_and_outputs_are_the_rgb_path_byte_for_byte() {
    let limits = Limits::default();
    let data = fixture("photo-1920x1080.jpg");
    for (kind, format) in [
        (FilterKind::Brightness, None),
        (FilterKind::Blur, None),
        (FilterKind::Gaussian, Some(ImageFormat::Png)),
    ] {
        let spec = FilterSpec::with_default_intensity(kind);
        assert_eq!(
            filter_encoded(&data, &limits, &spec, format, None)
                .unwrap()
                .data,
            filter_encoded_rgb(&data, &limits, &spec, format, None)
                .unwrap()
                .data,
            "{}",
            kind.name()
        );
    }
}

#[test]
fn damaged_jpegs_are_refused_on_the_plane_path_too() {
    let data = fixture("photo-1920x1080.jpg");
    let truncated = &data[..data.len() / 2];
    let resize = resize_encoded(
        truncated,
        &Limits::default(),
        &spec(800, 600, true, ResizeQuality::Good),
    );
    assert!(
        matches!(resize, Err(imageflow_imaging::ImagingError::Corrupt(ref m)) if m.contains("truncated or damaged")),
        "{resize:?}"
    );
    let blur = filter_encoded(
        truncated,
        &Limits::default(),
        &FilterSpec::with_default_intensity(FilterKind::Gaussian),
        None,
        None,
    );
    assert!(
        matches!(blur, Err(imageflow_imaging::ImagingError::Corrupt(_))),
        "{blur:?}"
    );
}
