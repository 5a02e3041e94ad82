//! Decoding real photos: known sizes, formats, EXIF orientation, DCT-scaled JPEG decode.

mod common;

use common::{decode_fixture, fixture, mean_abs_diff};
use imageflow_imaging::{
    ImageFormat, Limits, Orientation, ResizeQuality, ResizeSpec, apply_orientation, decode,
    decode_at_least, probe, resize, resize_encoded, resize_encoded_full_decode,
};

#[test]
fn fixtures_decode_with_known_sizes() {
    let cases = [
        ("chelsea.png", ImageFormat::Png, 451, 300, 3),
        ("chelsea.jpg", ImageFormat::Jpeg, 451, 300, 3),
        ("chelsea.webp", ImageFormat::Webp, 451, 300, 3),
        (
            "chelsea-exif-orientation-6.jpg",
            ImageFormat::Jpeg,
            451,
            300,
            3,
        ),
        ("horse.png", ImageFormat::Png, 400, 328, 4),
        ("horse-cutout.png", ImageFormat::Png, 400, 328, 4),
        ("horse-cutout.webp", ImageFormat::Webp, 400, 328, 4),
        ("rocket.jpg", ImageFormat::Jpeg, 640, 427, 3),
        ("photo-1920x1080.jpg", ImageFormat::Jpeg, 1920, 1080, 3),
    ];
    for (name, format, w, h, c) in cases {
        let data = fixture(name);
        let info = probe(&data, &Limits::default()).unwrap();
        assert_eq!(
            (info.format, info.width, info.height),
            (format, w, h),
            "probe {name}"
        );
        let d = decode(&data, &Limits::default()).unwrap();
        assert_eq!(d.format, format, "{name}");
        assert_eq!(
            (d.image.width(), d.image.height(), d.image.channels()),
            (w, h, c),
            "{name}"
        );
        assert_eq!((d.original_width, d.original_height), (w, h), "{name}");
        assert_eq!(d.image.pixels().len(), (w * h) as usize * c as usize);
    }
}

#[test]
fn lossy_formats_agree_with_the_png_original() {
    let png = decode_fixture("chelsea.png");
    let jpg = decode_fixture("chelsea.jpg");
    let webp = decode_fixture("chelsea.webp");
    assert!(
        mean_abs_diff(&png, &jpg) < 4.0,
        "jpeg {}",
        mean_abs_diff(&png, &jpg)
    );
    assert!(
        mean_abs_diff(&png, &webp) < 6.0,
        "webp {}",
        mean_abs_diff(&png, &webp)
    );
    let horse_png = decode_fixture("horse-cutout.png");
    let horse_webp = decode_fixture("horse-cutout.webp");
    assert_eq!(
        horse_png.pixels(),
        horse_webp.pixels(),
        "lossless WebP is exact"
    );
}

#[test]
fn exif_orientation_6_is_applied() {
    let data = fixture("chelsea-exif-orientation-6.jpg");
    assert_eq!(
        imageflow_imaging::read_orientation(&data, ImageFormat::Jpeg),
        Orientation::Rotate90
    );
    let rotated = decode(&data, &Limits::default()).unwrap().image;
    assert_eq!((rotated.width(), rotated.height()), (451, 300));
    // Same picture as the upright JPEG, up to JPEG noise (both were encoded separately).
    let upright = decode_fixture("chelsea.jpg");
    let diff = mean_abs_diff(&rotated, &upright);
    assert!(diff < 3.0, "oriented decode differs from upright by {diff}");
    // And not merely "some 451x300 image": undoing the rotation gives the stored layout.
    let undone = apply_orientation(rotated, Orientation::Rotate270);
    assert_eq!((undone.width(), undone.height()), (300, 451));
}

#[test]
fn dct_scaled_decode_picks_the_largest_sufficient_reduction() {
    let data = fixture("photo-1920x1080.jpg");
    let limits = Limits::default();
    let half = decode_at_least(&data, &limits, 800, 450).unwrap();
    assert_eq!((half.image.width(), half.image.height()), (960, 540));
    assert_eq!((half.original_width, half.original_height), (1920, 1080));
    let eighth = decode_at_least(&data, &limits, 200, 100).unwrap();
    assert_eq!((eighth.image.width(), eighth.image.height()), (240, 135));
    let quarter = decode_at_least(&data, &limits, 300, 100).unwrap();
    assert_eq!((quarter.image.width(), quarter.image.height()), (480, 270));
    let full = decode_at_least(&data, &limits, 1000, 1000).unwrap();
    assert_eq!((full.image.width(), full.image.height()), (1920, 1080));
    // PNG has no DCT scaling: always full size.
    let png = decode_at_least(&fixture("chelsea.png"), &limits, 10, 10).unwrap();
    assert_eq!((png.image.width(), png.image.height()), (451, 300));
}

#[test]
fn dct_scaled_decode_uses_oriented_coordinates() {
    // Stored 300x451, displayed 451x300. At 1/2 the displayed size is 226x150, enough for
    // 226x150. Comparing the wish with the *stored* size instead (150 wide < 226) would
    // wrongly fall back to a full decode.
    let data = fixture("chelsea-exif-orientation-6.jpg");
    let d = decode_at_least(&data, &Limits::default(), 226, 150).unwrap();
    assert_eq!((d.image.width(), d.image.height()), (226, 150));
    assert_eq!((d.original_width, d.original_height), (451, 300));
    // 300 wide displayed needs the full stored height 300 -> no reduction possible.
    let d = decode_at_least(&data, &Limits::default(), 400, 290).unwrap();
    assert_eq!((d.image.width(), d.image.height()), (451, 300));
}

#[test]
fn scaled_path_matches_full_decode_path() {
    let data = fixture("photo-1920x1080.jpg");
    let limits = Limits::default();
    let scaled = decode_at_least(&data, &limits, 800, 450).unwrap().image;
    let full = decode(&data, &limits).unwrap().image;
    let a = resize(&scaled, 800, 450, ResizeQuality::Good).unwrap();
    let b = resize(&full, 800, 450, ResizeQuality::Good).unwrap();
    let diff = mean_abs_diff(&a, &b);
    assert!(
        diff < 3.0,
        "DCT-scaled path differs from full decode by {diff} levels"
    );
    assert!(
        diff > 0.0,
        "the two paths should not be byte-identical (else no scaling happened)"
    );

    let spec = ResizeSpec {
        width: 800,
        height: 600,
        keep_aspect: true,
        quality: ResizeQuality::Good,
        output_format: None,
    };
    let fast = resize_encoded(&data, &limits, &spec).unwrap();
    let slow = resize_encoded_full_decode(&data, &limits, &spec).unwrap();
    assert_eq!((fast.width, fast.height), (800, 450));
    assert_eq!((slow.width, slow.height), (800, 450));
    assert_eq!((fast.original_width, fast.original_height), (1920, 1080));
    let fa = decode(&fast.data, &limits).unwrap().image;
    let sa = decode(&slow.data, &limits).unwrap().image;
    assert_eq!((fa.width(), fa.height()), (800, 450));
    let diff = mean_abs_diff(&fa, &sa);
    assert!(diff < 3.0, "encoded outputs differ by {diff} levels");
}
