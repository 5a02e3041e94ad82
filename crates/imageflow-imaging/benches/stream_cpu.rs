//! Wall and CPU time per image of the streamed resize against the whole-image plane
//! path, and of the streamed letterbox (detection's input) against its whole-image path,
//! one caller at a time and eight callers on however many cores there are.
//! Criterion measures wall time only; the condition is on CPU per image under
//! load, so this prints both, from the process's utime + stime (`/proc/self/stat`).
//!
//!   cargo bench -p imageflow-imaging --bench stream_cpu
//!
//! Three interleaved rounds of 300 images at concurrency 1 and 8 x 60 at concurrency 8,
//! the 1920x1080 JPEG fixture to 800x450 (GOOD) and into YOLO's 640x640 tensor.
#![allow(clippy::print_stdout)] // a benchmark's output is its point

use std::time::Instant;

use imageflow_imaging::{
    Limits, ResizeQuality, ResizeSpec, letterbox_encoded, letterbox_encoded_whole, resize_encoded,
    resize_encoded_whole_planes,
};

const SPEC: ResizeSpec = ResizeSpec {
    width: 800,
    height: 600,
    keep_aspect: true,
    quality: ResizeQuality::Good,
    output_format: None,
};

/// One image through one path; a failure is a broken benchmark.
type Path = fn(&[u8], &Limits);

const PATHS: [(&str, Path); 4] = [
    ("resize, streamed (resize_encoded)", |data, limits| {
        resize_encoded(data, limits, &SPEC).expect("resize");
    }),
    ("resize, whole planes", |data, limits| {
        resize_encoded_whole_planes(data, limits, &SPEC).expect("resize");
    }),
    (
        "letterbox 640x640, streamed (letterbox_encoded)",
        |data, limits| {
            letterbox_encoded(data, limits, 640, 640).expect("letterbox");
        },
    ),
    ("letterbox 640x640, whole image", |data, limits| {
        letterbox_encoded_whole(data, limits, 640, 640).expect("letterbox");
    }),
];

/// CPU seconds this process has used (Linux clock ticks, 100 per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which may hold spaces: utime and stime are the
    // 12th and 13th of them.
    let after_name: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| after_name.get(i).and_then(|v| v.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

fn main() {
    let photo = format!(
        "{}/tests/fixtures/photo-1920x1080.jpg",
        env!("CARGO_MANIFEST_DIR")
    );
    let data = std::fs::read(&photo).expect("the photo fixture");
    let limits = Limits::default();
    for (_, path) in PATHS {
        for _ in 0..20 {
            path(&data, &limits);
        }
    }
    println!("| round | callers | path | wall ms/image | CPU ms/image |");
    println!("|---|---|---|---|---|");
    for round in 1..=3 {
        for (callers, per_caller) in [(1usize, 300usize), (8, 60)] {
            for (name, path) in PATHS {
                let cpu = cpu_seconds();
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..callers {
                        scope.spawn(|| {
                            for _ in 0..per_caller {
                                path(&data, &limits);
                            }
                        });
                    }
                });
                let images = (callers * per_caller) as f64;
                let wall = started.elapsed().as_secs_f64() * 1e3 / images;
                let cpu = (cpu_seconds() - cpu) * 1e3 / images;
                println!("| {round} | {callers} | {name} | {wall:.3} | {cpu:.3} |");
            }
        }
    }
}
