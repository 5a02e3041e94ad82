//! Resizing and encoding: output sizes, formats, qualities, alpha.

mod common;

use common::{decode_fixture, fixture, mean_abs_diff};
use imageflow_imaging::{
    EncodeOptions, Image, ImageFormat, ImagingError, Limits, ResizeQuality, ResizeSpec, decode,
    encode, fit_dimensions, resize, resize_encoded, sniff_format,
};

fn spec(width: u32, height: u32, keep_aspect: bool) -> ResizeSpec {
    ResizeSpec {
        width,
        height,
        keep_aspect,
        quality: ResizeQuality::Good,
        output_format: None,
    }
}

#[test]
fn fit_dimensions_known_answers() {
    assert_eq!(
        fit_dimensions(1920, 1080, 800, 600, true).unwrap(),
        (800, 450)
    );
    assert_eq!(
        fit_dimensions(1080, 1920, 800, 600, true).unwrap(),
        (338, 600)
    );
    assert_eq!(
        fit_dimensions(1920, 1080, 800, 600, false).unwrap(),
        (800, 600)
    );
    assert_eq!(
        fit_dimensions(1920, 1080, 800, 0, true).unwrap(),
        (800, 450)
    );
    assert_eq!(
        fit_dimensions(1920, 1080, 0, 300, true).unwrap(),
        (533, 300)
    );
    assert_eq!(fit_dimensions(1, 1, 1, 1, true).unwrap(), (1, 1));
    assert_eq!(
        fit_dimensions(1, 1, 5000, 3000, true).unwrap(),
        (3000, 3000)
    );
    assert_eq!(fit_dimensions(10000, 1, 100, 100, true).unwrap(), (100, 1));
    assert_eq!(fit_dimensions(1, 10000, 100, 100, true).unwrap(), (1, 100));
    for (bw, bh, keep) in [
        (0, 600, false),
        (800, 0, false),
        (0, 0, true),
        (0, 0, false),
    ] {
        assert!(
            matches!(
                fit_dimensions(1920, 1080, bw, bh, keep),
                Err(ImagingError::InvalidParameter(_))
            ),
            "{bw}x{bh} keep={keep}"
        );
    }
}

#[test]
fn resize_output_sizes() {
    let img = decode_fixture("chelsea.png");
    for (w, h) in [(200, 100), (451, 300), (902, 600), (1, 1), (1000, 3)] {
        for q in [
            ResizeQuality::Fast,
            ResizeQuality::Good,
            ResizeQuality::Best,
        ] {
            let out = resize(&img, w, h, q).unwrap();
            assert_eq!((out.width(), out.height(), out.channels()), (w, h, 3));
        }
    }
    assert!(matches!(
        resize(&img, 0, 10, ResizeQuality::Good),
        Err(ImagingError::InvalidParameter(_))
    ));
    // Downscale then upscale stays close to the original (a sanity check on the filter).
    let down = resize(&img, 226, 150, ResizeQuality::Best).unwrap();
    let up = resize(&down, 451, 300, ResizeQuality::Best).unwrap();
    assert!(mean_abs_diff(&img, &up) < 10.0);
}

#[test]
fn resize_encoded_keeps_format_and_reports_sizes() {
    let limits = Limits::default();
    for (name, format) in [
        ("chelsea.png", ImageFormat::Png),
        ("chelsea.jpg", ImageFormat::Jpeg),
        ("chelsea.webp", ImageFormat::Webp),
        ("rocket.jpg", ImageFormat::Jpeg),
    ] {
        let data = fixture(name);
        let out = resize_encoded(&data, &limits, &spec(200, 200, true)).unwrap();
        assert_eq!(out.format, format, "{name}");
        assert_eq!(sniff_format(&out.data), Some(format), "{name}");
        assert_eq!(out.width, 200);
        let decoded = decode(&out.data, &limits).unwrap().image;
        assert_eq!(
            (decoded.width(), decoded.height()),
            (out.width, out.height),
            "{name}"
        );
    }
    let out = resize_encoded(&fixture("rocket.jpg"), &limits, &spec(320, 0, true)).unwrap();
    assert_eq!(
        (
            out.width,
            out.height,
            out.original_width,
            out.original_height
        ),
        (320, 214, 640, 427)
    );
    let out = resize_encoded(&fixture("rocket.jpg"), &limits, &spec(100, 100, false)).unwrap();
    assert_eq!((out.width, out.height), (100, 100));
    let mut to_png = spec(100, 100, true);
    to_png.output_format = Some(ImageFormat::Png);
    let out = resize_encoded(&fixture("rocket.jpg"), &limits, &to_png).unwrap();
    assert_eq!(
        (out.format, sniff_format(&out.data)),
        (ImageFormat::Png, Some(ImageFormat::Png))
    );
}

#[test]
fn exif_rotated_input_resizes_in_display_orientation() {
    let out = resize_encoded(
        &fixture("chelsea-exif-orientation-6.jpg"),
        &Limits::default(),
        &spec(200, 200, true),
    )
    .unwrap();
    assert_eq!((out.width, out.height), (200, 133));
    assert_eq!((out.original_width, out.original_height), (451, 300));
}

#[test]
fn jpeg_quality_increases_size() {
    let data = fixture("rocket.jpg");
    let sizes: Vec<usize> = [
        ResizeQuality::Fast,
        ResizeQuality::Good,
        ResizeQuality::Best,
    ]
    .into_iter()
    .map(|quality| {
        let s = ResizeSpec {
            quality,
            ..spec(400, 400, true)
        };
        resize_encoded(&data, &Limits::default(), &s)
            .unwrap()
            .data
            .len()
    })
    .collect();
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    assert_eq!(
        [
            ResizeQuality::Fast,
            ResizeQuality::Good,
            ResizeQuality::Best
        ]
        .map(ResizeQuality::jpeg_quality),
        [75, 85, 95]
    );
}

#[test]
fn alpha_survives_png_and_webp_resize() {
    let limits = Limits::default();
    let original = decode_fixture("horse-cutout.png");
    assert!(original.has_alpha());
    let transparent = original
        .pixels()
        .chunks_exact(4)
        .filter(|p| p[3] == 0)
        .count();
    assert!(transparent > 1000, "the fixture has transparent background");
    for (name, format) in [
        ("horse-cutout.png", ImageFormat::Png),
        ("horse-cutout.webp", ImageFormat::Webp),
    ] {
        let out = resize_encoded(&fixture(name), &limits, &spec(200, 164, true)).unwrap();
        assert_eq!(out.format, format);
        let img = decode(&out.data, &limits).unwrap().image;
        assert!(img.has_alpha(), "{name}");
        assert_eq!((img.width(), img.height()), (200, 164));
        let transparent = img.pixels().chunks_exact(4).filter(|p| p[3] == 0).count();
        let opaque = img.pixels().chunks_exact(4).filter(|p| p[3] == 255).count();
        assert!(
            transparent > 250 && opaque > 250,
            "{name}: {transparent} clear, {opaque} opaque"
        );
    }
    // To JPEG: alpha composited on white, so the transparent background becomes white.
    let mut to_jpeg = spec(200, 164, true);
    to_jpeg.output_format = Some(ImageFormat::Jpeg);
    let out = resize_encoded(&fixture("horse-cutout.png"), &limits, &to_jpeg).unwrap();
    let img = decode(&out.data, &limits).unwrap().image;
    assert!(!img.has_alpha());
    assert!(
        img.pixels()[..3].iter().all(|&v| v > 245),
        "corner is white: {:?}",
        &img.pixels()[..3]
    );
}

#[test]
fn encode_round_trips() {
    let img = decode_fixture("chelsea.png");
    let png = encode(&img, &EncodeOptions::new(ImageFormat::Png)).unwrap();
    assert_eq!(
        decode(&png, &Limits::default()).unwrap().image,
        img,
        "PNG is lossless"
    );
    let webp = encode(&img, &EncodeOptions::new(ImageFormat::Webp)).unwrap();
    assert_eq!(
        decode(&webp, &Limits::default()).unwrap().image,
        img,
        "WebP lossless"
    );
    let jpg = encode(
        &img,
        &EncodeOptions {
            format: ImageFormat::Jpeg,
            jpeg_quality: 90,
        },
    )
    .unwrap();
    let back = decode(&jpg, &Limits::default()).unwrap().image;
    assert!(mean_abs_diff(&img, &back) < 3.0);
    let tiny = Image::new(1, 1, 4, vec![1, 2, 3, 4]).unwrap();
    for format in ImageFormat::ALL {
        let data = encode(&tiny, &EncodeOptions::new(format)).unwrap();
        let d = decode(&data, &Limits::default()).unwrap().image;
        assert_eq!((d.width(), d.height()), (1, 1), "{format}");
    }
}
