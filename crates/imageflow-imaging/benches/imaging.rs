//! Hot paths of resize-svc, filter-svc and ai-detect-svc's pre-processing on a
//! 1920x1080 JPEG photo: the YCbCr plane paths next to the RGB paths they replace.
//!
//! `cargo bench -p imageflow-imaging -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imageflow_imaging::{
    EncodeOptions, FilterKind, FilterSpec, ImageFormat, Limits, ResizeQuality, ResizeSpec,
    apply_filter, decode, decode_at_least, encode, filter_encoded, filter_encoded_rgb,
    letterbox_encoded, letterbox_encoded_whole, resize, resize_encoded, resize_encoded_full_decode,
    resize_encoded_rgb, resize_encoded_whole_planes,
};

fn photo() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/photo-1920x1080.jpg"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn resize_benches(c: &mut Criterion) {
    let data = photo();
    let limits = Limits::default();
    let spec = ResizeSpec {
        width: 800,
        height: 600,
        keep_aspect: true,
        quality: ResizeQuality::Good,
        output_format: None,
    };
    let mut g = c.benchmark_group("resize_1920x1080_jpeg_to_800x450_good");
    g.bench_function("resize_encoded (streamed planes, DCT 1/2 decode)", |b| {
        b.iter(|| resize_encoded(black_box(&data), &limits, &spec))
    });
    g.bench_function("resize_encoded_whole_planes (DCT 1/2 decode)", |b| {
        b.iter(|| resize_encoded_whole_planes(black_box(&data), &limits, &spec))
    });
    g.bench_function("resize_encoded_rgb (DCT 1/2 decode)", |b| {
        b.iter(|| resize_encoded_rgb(black_box(&data), &limits, &spec))
    });
    g.bench_function("resize_encoded_full_decode", |b| {
        b.iter(|| resize_encoded_full_decode(black_box(&data), &limits, &spec))
    });
    g.bench_function("step: decode full", |b| {
        b.iter(|| decode(black_box(&data), &limits))
    });
    g.bench_function("step: decode_at_least 800x450", |b| {
        b.iter(|| decode_at_least(black_box(&data), &limits, 800, 450))
    });
    let half = decode_at_least(&data, &limits, 800, 450).map(|d| d.image);
    let half = half.unwrap_or_else(|e| panic!("{e}"));
    g.bench_function("step: resize 960x540 -> 800x450", |b| {
        b.iter(|| resize(black_box(&half), 800, 450, ResizeQuality::Good))
    });
    let small = resize(&half, 800, 450, ResizeQuality::Good).unwrap_or_else(|e| panic!("{e}"));
    let opts = EncodeOptions {
        format: ImageFormat::Jpeg,
        jpeg_quality: 85,
    };
    g.bench_function("step: encode 800x450 q85", |b| {
        b.iter(|| encode(black_box(&small), &opts))
    });
    g.finish();
}

fn filter_specs() -> Vec<(String, FilterSpec)> {
    [
        (FilterKind::Blur, 2.0),
        (FilterKind::Blur, 10.0),
        (FilterKind::Gaussian, 1.0),
        (FilterKind::Gaussian, 2.0),
        (FilterKind::Gaussian, 5.0),
        (FilterKind::Sharpen, 1.0),
        (FilterKind::Brightness, 1.2),
        (FilterKind::Contrast, 1.2),
        (FilterKind::Saturation, 1.5),
        (FilterKind::Grayscale, 1.0),
    ]
    .into_iter()
    .map(|(kind, intensity)| {
        (
            format!("{kind} {intensity}"),
            FilterSpec { kind, intensity },
        )
    })
    .collect()
}

fn filter_benches(c: &mut Criterion) {
    let data = photo();
    let limits = Limits::default();
    let image = decode(&data, &limits)
        .unwrap_or_else(|e| panic!("{e}"))
        .image;
    let mut g = c.benchmark_group("filter_1920x1080");
    for (name, spec) in filter_specs() {
        g.bench_function(name.as_str(), |b| {
            b.iter_batched_ref(
                || image.clone(),
                |img| apply_filter(img, &spec),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("filter_encoded_1920x1080_jpeg_q90");
    for (name, spec) in filter_specs() {
        g.bench_function(name.as_str(), |b| {
            b.iter(|| filter_encoded(black_box(&data), &limits, &spec, None, None))
        });
        if matches!(spec.kind, FilterKind::Gaussian | FilterKind::Sharpen) {
            g.bench_function(format!("{name} (rgb path)"), |b| {
                b.iter(|| filter_encoded_rgb(black_box(&data), &limits, &spec, None, None))
            });
        }
    }
    g.finish();
}

/// YOLO11n's 640x640 input from the 1080p JPEG: streamed (the RGB decode on this
/// thread, resampling and the tensor on a helper) against the whole-image path (DCT 1/2
/// decode, bilinear resize, tensor fill, one thread).
fn letterbox_benches(c: &mut Criterion) {
    let data = photo();
    let limits = Limits::default();
    let mut g = c.benchmark_group("detect_preprocess_1920x1080_jpeg_to_640x640");
    g.bench_function("letterbox_encoded (streamed)", |b| {
        b.iter(|| letterbox_encoded(black_box(&data), &limits, 640, 640))
    });
    g.bench_function(
        "letterbox_encoded_whole (decode 1/2, then letterbox)",
        |b| b.iter(|| letterbox_encoded_whole(black_box(&data), &limits, 640, 640)),
    );
    g.finish();
}

criterion_group!(benches, resize_benches, filter_benches, letterbox_benches);
criterion_main!(benches);
