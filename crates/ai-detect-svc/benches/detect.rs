//! End-to-end benchmark of ai-detect-svc next to bare Python onnxruntime on the
//! same model and the same input, in the same run.
//!
//! `cargo bench -p ai-detect-svc --bench detect` (or `scripts/bench-detect.sh`)
//! starts the service in process on a loopback port (ONNX Runtime on the CPU,
//! the YOLO11n model from `scripts/setup.sh`), sends JPEG photos of 640x640
//! and 1920x1080 at concurrency 1 and 8, and prints per-request latency
//! (p50/p95, client side, over real gRPC), throughput, and the service's own
//! split: pre-processing (decode + letterbox), time queued for a batch,
//! inference, post-processing (decode + NMS). Then it writes the letterboxed
//! tensor of each photo to a file and runs `benches/ort_baseline.py` (bare
//! `session.run`, batch 1, same concurrency) with the venv's onnxruntime.
//!
//! Settings: DETECT_BENCH_REQUESTS (per case, default 48).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark's output is its point

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use common::{PythonBaseline, median, percentile, run_case, serve};

use imageflow_imaging::{
    ImageFormat, Limits, ResizeQuality, ResizeSpec, decode, letterbox_into, resize_encoded,
};
use imageflow_service::ServiceConfig;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv `scripts/setup.sh` fills, with the CPU onnxruntime.
fn venv_python() -> PathBuf {
    let cache = std::env::var_os("IMAGEFLOW_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/imageflow"),
        PathBuf::from,
    );
    cache.join("venv/bin/python")
}

fn main() {
    let requests: usize = std::env::var("DETECT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let models = repo_root().join("models");
    let model = models.join("yolo11n.onnx");
    let lib = models.join("lib/libonnxruntime.so");
    assert!(
        model.exists() && lib.exists(),
        "run scripts/setup.sh first (model and ONNX Runtime library)"
    );

    let photo = std::fs::read(
        repo_root().join("crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg"),
    )
    .unwrap();
    let square = resize_encoded(
        &photo,
        &Limits::default(),
        &ResizeSpec {
            width: 640,
            height: 640,
            keep_aspect: false,
            quality: ResizeQuality::Good,
            output_format: Some(ImageFormat::Jpeg),
        },
    )
    .unwrap()
    .data;
    let inputs = [("640x640", square), ("1920x1080", photo)];

    let scratch = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = HashMap::from([
        (
            "STORAGE_URL".to_string(),
            format!("file://{}", scratch.path().display()),
        ),
        ("MODEL_DIR".to_string(), models.display().to_string()),
        ("ORT_DYLIB_PATH".to_string(), lib.display().to_string()),
    ]);
    let config = ServiceConfig::from_env(&env, ai_detect_svc::DEFAULTS).unwrap();
    let detect = ai_detect_svc::config::DetectConfig::from_env(&env).unwrap();
    let threads = detect.intra_op_threads;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let service = serve(config, detect).await;
        let client = service.client.clone();
        println!(
            "ai-detect-svc benchmark: YOLO11n, ONNX Runtime CPU, {threads} intra-op threads, {} CPUs, {requests} requests per case",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "{:<10} {:>2} | {:>9} {:>9} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>6} | {:>9} {:>9} {:>8} | {:>8}",
            "input", "c", "p50 ms", "p95 ms", "req/s", "pre", "queue", "infer", "post", "batch", "py p50", "py p95", "py req/s", "overhead"
        );
        for (name, image) in &inputs {
            // The same tensor the service builds, for Python.
            let decoded = decode(image, &Limits::default()).unwrap();
            let mut tensor = vec![0.0f32; 3 * 640 * 640];
            letterbox_into(&decoded.image, decoded.original_width, decoded.original_height, 640, 640, &mut tensor).unwrap();
            let tensor_file = scratch.path().join(format!("{name}.f32"));
            let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&tensor_file, bytes).unwrap();

            for concurrency in [1usize, 8] {
                let (samples, wall) = run_case(&client, image, requests, concurrency).await;
                let mut latency: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
                latency.sort_by(f64::total_cmp);
                let field = |key: &str| -> Vec<f64> {
                    samples.iter().map(|s| s.metadata[key].parse::<f64>().unwrap()).collect()
                };
                let (mut pre, mut queue, mut infer, mut post, batch) =
                    (field("preprocess_ms"), field("queue_ms"), field("inference_ms"), field("postprocess_ms"), field("batch_size"));
                let mean_batch = batch.iter().sum::<f64>() / batch.len() as f64;
                let (p50, p95) = (percentile(&latency, 50.0), percentile(&latency, 95.0));
                let (pre, queue, infer, post) = (median(&mut pre), median(&mut queue), median(&mut infer), median(&mut post));
                let (python, root) = (venv_python(), repo_root());
                let baseline = PythonBaseline { python: &python, root: &root, model: &model, tensor: &tensor_file };
                let py = baseline.run(requests, concurrency, "cpu", 1);
                let (py50, py95, pyrps) = match &py {
                    Some(run) => {
                        let mut lat = run.latencies_ms.clone();
                        lat.sort_by(f64::total_cmp);
                        (percentile(&lat, 50.0), percentile(&lat, 95.0), lat.len() as f64 / run.wall_s)
                    }
                    None => (f64::NAN, f64::NAN, f64::NAN),
                };
                println!(
                    "{name:<10} {concurrency:>2} | {p50:>9.1} {p95:>9.1} {:>8.1} | {pre:>8.2} {queue:>8.2} {infer:>8.1} {post:>8.2} {mean_batch:>6.2} | {py50:>9.1} {py95:>9.1} {pyrps:>8.1} | {:>8.2}",
                    samples.len() as f64 / wall,
                    pre + post,
                );
            }
        }
        println!(
            "p50/p95: client-side latency over gRPC; pre/queue/infer/post: medians reported by the service \
             (infer is the whole batch's session.run, batch = mean images per inference); py: bare onnxruntime \
             session.run on the same letterboxed tensor, batch 1, same concurrency; overhead = pre + post (ms)."
        );
        service.stop().await;
    });
}
