//! Every filter's effect measured on a real photo.

mod common;

use common::{
    all_gray, chroma_spread, decode_fixture, fixture, mean, mean_abs_diff, mean_abs_laplacian,
    std_dev,
};
use imageflow_imaging::{
    FilterKind, FilterSpec, Image, ImageFormat, ImagingError, Limits, apply_filter, decode,
    filter_encoded, gaussian_kernel,
};

fn photo() -> Image {
    decode_fixture("chelsea.png")
}

fn filtered(kind: FilterKind, intensity: f32) -> Image {
    let mut img = photo();
    apply_filter(&mut img, &FilterSpec { kind, intensity })
        .unwrap_or_else(|e| panic!("{kind} {intensity}: {e}"));
    img
}

#[test]
fn blurs_lower_high_frequency_energy_more_with_larger_radius() {
    let base = mean_abs_laplacian(&photo());
    for kind in [FilterKind::Blur, FilterKind::Gaussian] {
        let small = mean_abs_laplacian(&filtered(kind, 1.0));
        let large = mean_abs_laplacian(&filtered(kind, 4.0));
        assert!(small < 0.8 * base, "{kind} 1: {small} vs original {base}");
        assert!(
            large < 0.5 * small,
            "{kind} 4: {large} vs {kind} 1: {small}"
        );
        // A blur keeps the mean.
        let m = mean(&filtered(kind, 4.0));
        assert!((m - mean(&photo())).abs() < 0.5, "{kind} mean {m}");
    }
}

#[test]
fn gaussian_of_a_single_white_pixel_is_the_kernel() {
    for sigma in [1.0f32, 2.5] {
        let (w, h) = (41u32, 41u32);
        let mut px = vec![0u8; (w * h * 3) as usize];
        let centre = ((20 * w + 20) * 3) as usize;
        px[centre..centre + 3].fill(255);
        let mut img = Image::new(w, h, 3, px).unwrap();
        apply_filter(
            &mut img,
            &FilterSpec {
                kind: FilterKind::Gaussian,
                intensity: sigma,
            },
        )
        .unwrap();
        let at = |x: i32, y: i32| f64::from(img.pixels()[((y as u32 * w + x as u32) * 3) as usize]);
        // Symmetric in x, in y, and under transposition.
        for d in 0..=20 {
            for e in 0..=20 {
                let v = at(20 + d, 20 + e);
                assert_eq!(v, at(20 - d, 20 + e));
                assert_eq!(v, at(20 + d, 20 - e));
                assert_eq!(v, at(20 + e, 20 + d));
            }
        }
        // Profile: 255 * g(x) * g(y) with g the normalised Gaussian.
        let s = f64::from(sigma);
        let norm: f64 = (-60..=60)
            .map(|i| (-(i * i) as f64 / (2.0 * s * s)).exp())
            .sum();
        let g = |x: i32| (-(f64::from(x * x)) / (2.0 * s * s)).exp() / norm;
        for y in -20..=20 {
            for x in -20..=20 {
                let want = 255.0 * g(x) * g(y);
                let got = at(20 + x, 20 + y);
                assert!(
                    (got - want).abs() <= 0.75,
                    "sigma {sigma} at ({x},{y}): {got} vs {want}"
                );
            }
        }
        assert!(
            at(20, 20) > at(21, 20) && at(21, 20) > at(22, 20),
            "falls off from the centre"
        );
    }
}

#[test]
fn gaussian_line_profile_matches_exp() {
    // A vertical white line: every row's profile is 255 * kernel (the vertical pass of a
    // constant column is the identity).
    let sigma = 3.0f32;
    let (w, h) = (61u32, 9u32);
    let mut px = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        let i = ((y * w + 30) * 3) as usize;
        px[i..i + 3].fill(255);
    }
    let mut img = Image::new(w, h, 3, px).unwrap();
    apply_filter(
        &mut img,
        &FilterSpec {
            kind: FilterKind::Gaussian,
            intensity: sigma,
        },
    )
    .unwrap();
    let k = gaussian_kernel(sigma);
    assert_eq!(k.len(), 19);
    let peak = 255.0 * f64::from(k[9]);
    for x in 0..w as i32 {
        let got = f64::from(img.pixels()[((4 * w + x as u32) * 3) as usize]);
        let d = f64::from(x - 30);
        let want = peak * (-d * d / (2.0 * f64::from(sigma).powi(2))).exp();
        assert!((got - want).abs() <= 0.6, "x={x}: {got} vs {want}");
    }
}

#[test]
fn sharpen_raises_high_frequency_energy() {
    let base = mean_abs_laplacian(&photo());
    let s1 = mean_abs_laplacian(&filtered(FilterKind::Sharpen, 1.0));
    let s3 = mean_abs_laplacian(&filtered(FilterKind::Sharpen, 3.0));
    assert!(s1 > 1.3 * base, "sharpen 1: {s1} vs {base}");
    assert!(s3 > s1, "sharpen 3: {s3} vs sharpen 1: {s1}");
    assert_eq!(
        filtered(FilterKind::Sharpen, 0.0),
        photo(),
        "amount 0 is identity"
    );
}

#[test]
fn brightness() {
    let base = mean(&photo());
    assert!(mean(&filtered(FilterKind::Brightness, 1.5)) > base + 20.0);
    let dark = mean(&filtered(FilterKind::Brightness, 0.5));
    assert!((dark - base / 2.0).abs() < 1.0, "{dark} vs {}", base / 2.0);
    assert_eq!(filtered(FilterKind::Brightness, 1.0), photo());
    assert!(
        filtered(FilterKind::Brightness, 0.0)
            .pixels()
            .iter()
            .all(|&v| v == 0)
    );
}

#[test]
fn contrast() {
    let base = std_dev(&photo());
    assert!(std_dev(&filtered(FilterKind::Contrast, 2.0)) > 1.5 * base);
    assert!(std_dev(&filtered(FilterKind::Contrast, 0.5)) < 0.6 * base);
    let flat = filtered(FilterKind::Contrast, 0.0);
    let v = flat.pixels()[0];
    assert!(flat.pixels().iter().all(|&p| p == v), "contrast 0 is flat");
    let luma_mean: f64 = common::luma(&photo()).iter().sum::<f64>() / (451.0 * 300.0);
    assert!(
        (f64::from(v) - luma_mean).abs() <= 1.0,
        "flat at {v}, mean luma {luma_mean}"
    );
    assert_eq!(filtered(FilterKind::Contrast, 1.0), photo());
}

#[test]
fn saturation_and_grayscale() {
    let base = chroma_spread(&photo());
    assert!(all_gray(&filtered(FilterKind::Saturation, 0.0)));
    assert!(chroma_spread(&filtered(FilterKind::Saturation, 2.0)) > 1.5 * base);
    assert_eq!(filtered(FilterKind::Saturation, 1.0), photo());
    let gray = filtered(FilterKind::Grayscale, 1.0);
    assert!(all_gray(&gray));
    assert_eq!(gray.channels(), 3);
    assert_eq!(gray, filtered(FilterKind::Saturation, 0.0));
    let half = chroma_spread(&filtered(FilterKind::Grayscale, 0.5));
    assert!((half - base / 2.0).abs() < 1.0, "{half} vs {}", base / 2.0);
    assert_eq!(filtered(FilterKind::Grayscale, 0.0), photo());
}

#[test]
fn alpha_is_never_modified() {
    let original = decode_fixture("horse-cutout.png");
    let alpha: Vec<u8> = original.pixels().chunks_exact(4).map(|p| p[3]).collect();
    for kind in FilterKind::ALL {
        let mut img = original.clone();
        let (_, max) = kind.intensity_range();
        apply_filter(
            &mut img,
            &FilterSpec {
                kind,
                intensity: max.min(5.0),
            },
        )
        .unwrap();
        let after: Vec<u8> = img.pixels().chunks_exact(4).map(|p| p[3]).collect();
        assert_eq!(after, alpha, "{kind}");
    }
}

#[test]
fn invalid_intensities_are_refused() {
    let cases = [
        (FilterKind::Blur, 0.4),
        (FilterKind::Blur, 100.5),
        (FilterKind::Gaussian, 0.0),
        (FilterKind::Sharpen, -0.1),
        (FilterKind::Brightness, 10.01),
        (FilterKind::Contrast, f32::NAN),
        (FilterKind::Saturation, f32::INFINITY),
        (FilterKind::Grayscale, 1.5),
    ];
    for (kind, intensity) in cases {
        let mut img = photo();
        let err = apply_filter(&mut img, &FilterSpec { kind, intensity }).unwrap_err();
        let (min, max) = kind.intensity_range();
        match &err {
            ImagingError::InvalidParameter(msg) => {
                assert!(msg.contains(kind.name()), "{msg}");
                assert!(msg.contains(&format!("between {min} and {max}")), "{msg}");
            }
            other => panic!("{kind} {intensity}: {other:?}"),
        }
        assert_eq!(img, photo(), "a refused filter leaves the image alone");
    }
    assert_eq!(FilterKind::from_name("emboss"), None);
    assert_eq!(
        FilterKind::from_name("GAUSSIAN"),
        Some(FilterKind::Gaussian)
    );
}

#[test]
fn filter_encoded_keeps_format_size_and_orientation() {
    let limits = Limits::default();
    let spec = FilterSpec {
        kind: FilterKind::Gaussian,
        intensity: 2.0,
    };
    for (name, format) in [
        ("chelsea.jpg", ImageFormat::Jpeg),
        ("chelsea.png", ImageFormat::Png),
        ("chelsea.webp", ImageFormat::Webp),
        ("chelsea-exif-orientation-6.jpg", ImageFormat::Jpeg),
    ] {
        let out = filter_encoded(&fixture(name), &limits, &spec, None, None).unwrap();
        assert_eq!(
            (out.format, out.width, out.height),
            (format, 451, 300),
            "{name}"
        );
        let back = decode(&out.data, &limits).unwrap().image;
        assert_eq!((back.width(), back.height()), (451, 300));
        let direct = filtered(FilterKind::Gaussian, 2.0);
        assert!(mean_abs_diff(&back, &direct) < 3.0, "{name}");
    }
    let out = filter_encoded(
        &fixture("chelsea.png"),
        &limits,
        &spec,
        Some(ImageFormat::Jpeg),
        Some(50),
    )
    .unwrap();
    assert_eq!(out.format, ImageFormat::Jpeg);
    let q90 = filter_encoded(
        &fixture("chelsea.png"),
        &limits,
        &spec,
        Some(ImageFormat::Jpeg),
        None,
    )
    .unwrap();
    assert!(
        out.data.len() < q90.data.len(),
        "quality 50 is smaller than the default 90"
    );
}
