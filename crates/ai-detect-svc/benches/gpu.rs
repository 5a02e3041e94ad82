//! The GPU benchmark of ai-detect-svc: YOLO11n on ONNX Runtime's CUDA execution
//! provider. Built with `--features cuda` and run by `scripts/bench-gpu.sh` on
//! a machine with an NVIDIA GPU and the onnxruntime-gpu library; it prints
//! markdown.
//!
//! `gpu-bench` (no argument):
//! 1. the model alone (`OnnxModel::run`, what the service's batcher calls) on
//!    the letterboxed tensor of the 1080p photo, stacked into batches of 1, 8
//!    and 32, next to Python onnxruntime-gpu (`benches/ort_baseline.py`) on
//!    the same tensors;
//! 2. the service over loopback gRPC, `EXECUTION_PROVIDER=cuda` and
//!    `MAX_BATCH_SIZE=32`: the 1080p JPEG at concurrency 1, 8 and 32, with the
//!    service's own split (pre-processing, queue, inference, post-processing);
//! 3. the detections on the test photos against the ones recorded on the CPU
//!    (`tests/golden`, the golden test's bar).
//!
//! `gpu-bench fallback`, run with no GPU visible (`CUDA_VISIBLE_DEVICES=`):
//! `EXECUTION_PROVIDER=cuda` must come up on the CPU, and the service must
//! detect the same objects there.
//!
//! Exits non-zero when the provider is not the expected one or a detection
//! moved beyond the bar. Settings: `IMAGEFLOW_REPO_ROOT` (the checkout;
//! default: where it was built), `MODEL_DIR`, `ORT_DYLIB_PATH` (the
//! onnxruntime-gpu library), `GPU_BENCH_RUNS` (timed runs per case, default
//! 100), `GPU_BENCH_PYTHON` (with onnxruntime-gpu; default `python3`).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a benchmark's output is its point

mod common;
#[path = "../tests/golden/compare.rs"]
mod compare;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use ai_detect_svc::{catalog::Catalog, config::DetectConfig, onnx::OnnxModel};
use common::{PythonBaseline, bytes_request, median, percentile, run_case, serve};
use imageflow_imaging::{Limits, decode, letterbox_into};
use imageflow_proto::v1::{
    DetectionRequest, ai_detection_service_client::AiDetectionServiceClient,
};
use imageflow_service::ServiceConfig;

const CUDA: &str = "CUDAExecutionProvider";
const CPU: &str = "CPUExecutionProvider";
const BATCHES: [usize; 3] = [1, 8, 32];
const PHOTO: &str = "photo-1920x1080.jpg";

fn repo_root() -> PathBuf {
    std::env::var_os("IMAGEFLOW_REPO_ROOT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        PathBuf::from,
    )
}

fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("crates/imageflow-imaging/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The process environment, with the checkout's model and library where
/// unset, CUDA asked for, and room for batches of 32.
fn settings(scratch: &Path) -> HashMap<String, String> {
    let models = repo_root().join("models");
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let defaults = [
        ("MODEL_DIR", models.display().to_string()),
        (
            "ORT_DYLIB_PATH",
            models.join("lib/libonnxruntime.so").display().to_string(),
        ),
        ("STORAGE_URL", format!("file://{}", scratch.display())),
        ("EXECUTION_PROVIDER", "cuda".into()),
        ("MAX_BATCH_SIZE", "32".into()),
        // Room for the concurrency-32 row (the default sheds load at 20).
        ("MAX_CONCURRENT_REQUESTS", "64".into()),
    ];
    for (key, value) in defaults {
        env.entry(key.into()).or_insert(value);
    }
    env
}

fn runs() -> usize {
    std::env::var("GPU_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn main() -> ExitCode {
    // The service's warnings (why CUDA was not used, above all) go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let fallback = std::env::args().skip(1).any(|a| a == "fallback");
    let scratch = tempfile::tempdir().unwrap();
    let env = settings(scratch.path());
    let detect = DetectConfig::from_env(&env).unwrap();
    let service = ServiceConfig::from_env(&env, ai_detect_svc::DEFAULTS).unwrap();
    let catalog = Catalog::load(&detect.model_dir, detect.default_model.as_deref()).unwrap();
    let spec = catalog.resolve(catalog.default_model()).unwrap().clone();

    let model = OnnxModel::load(&spec, &detect).unwrap();
    let expected = if fallback { CPU } else { CUDA };
    println!(
        "model {} ({}), EXECUTION_PROVIDER=cuda: {} (expected {expected})\n",
        spec.name,
        spec.path.display(),
        model.provider
    );
    if model.provider != expected {
        eprintln!("the provider is {}, not {expected}", model.provider);
        return ExitCode::FAILURE;
    }
    if !fallback {
        model_alone(
            &model,
            &spec.path,
            scratch.path(),
            spec.input_height,
            spec.input_width,
        );
    }
    // The service loads its own copy.
    drop(model);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let matched = runtime.block_on(through_the_service(service, detect, fallback));
    if matched {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Part 1: `OnnxModel::run` against Python on the same stacked tensor.
fn model_alone(model: &OnnxModel, path: &Path, scratch: &Path, height: u32, width: u32) {
    let photo = fixture(PHOTO);
    let decoded = decode(&photo, &Limits::default()).unwrap();
    let mut tensor = vec![0.0f32; 3 * height as usize * width as usize];
    letterbox_into(
        &decoded.image,
        decoded.original_width,
        decoded.original_height,
        width,
        height,
        &mut tensor,
    )
    .unwrap();
    let tensor_file = scratch.join("photo.f32");
    let bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&tensor_file, bytes).unwrap();
    let python =
        std::env::var_os("GPU_BENCH_PYTHON").map_or_else(|| "python3".into(), PathBuf::from);
    let runs = runs();

    println!(
        "## The model alone: {PHOTO} letterboxed to {width}x{height}, stacked into batches, {runs} timed runs each after 5 warm-ups\n"
    );
    println!(
        "| batch | Rust p50 ms | Rust p95 ms | Rust images/s | Python p50 ms | Python p95 ms | Python images/s | Rust - Python p50 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut version = String::new();
    for batch in BATCHES {
        let input = tensor.repeat(batch);
        for _ in 0..5 {
            model.run(&input, batch, height, width).unwrap();
        }
        let mut rust: Vec<f64> = (0..runs)
            .map(|_| {
                let started = Instant::now();
                model.run(&input, batch, height, width).unwrap();
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        rust.sort_by(f64::total_cmp);
        let (r50, r95) = (percentile(&rust, 50.0), percentile(&rust, 95.0));
        let root = repo_root();
        let baseline = PythonBaseline {
            python: &python,
            root: &root,
            model: path,
            tensor: &tensor_file,
        };
        let (p50, p95) = match baseline.run(runs, 1, "cuda", batch) {
            Some(mut py) => {
                version = py.version;
                py.latencies_ms.sort_by(f64::total_cmp);
                (
                    percentile(&py.latencies_ms, 50.0),
                    percentile(&py.latencies_ms, 95.0),
                )
            }
            None => (f64::NAN, f64::NAN),
        };
        let per_second = |ms: f64| batch as f64 * 1000.0 / ms;
        println!(
            "| {batch} | {r50:.2} | {r95:.2} | {:.0} | {p50:.2} | {p95:.2} | {:.0} | {:+.2} |",
            per_second(r50),
            per_second(p50),
            r50 - p50
        );
    }
    // Why the service runs each model on a thread of its own: the first run
    // on a thread pays for that thread's provider state.
    let input = tensor.repeat(8);
    let mut fresh: Vec<f64> = (0..5)
        .map(|_| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let started = Instant::now();
                        model.run(&input, 8, height, width).unwrap();
                        started.elapsed().as_secs_f64() * 1000.0
                    })
                    .join()
                    .unwrap()
            })
        })
        .collect();
    println!(
        "\nBatch 8, each run on a new thread (5 runs): median {:.2} ms, slowest {:.2} ms.",
        median(&mut fresh),
        fresh.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "\nEach figure is one `session.run`: the input copied to the GPU, the model, the output copied back \
         (Rust: `OnnxModel::run`; Python: onnxruntime {version} `InferenceSession.run`, both ORT_ENABLE_ALL, \
         the CUDA provider's defaults). images/s = batch / p50.\n"
    );
}

/// Parts 2 and 3 (or the fallback's check): the service over gRPC. Returns
/// whether the detections matched the CPU's recording.
async fn through_the_service(service: ServiceConfig, detect: DetectConfig, fallback: bool) -> bool {
    let started = Instant::now();
    let service = serve(service, detect).await;
    let client = service.client.clone();
    let photo = fixture(PHOTO);
    let request = bytes_request(photo.clone());
    // The model loads and warms up before the first detection is answered.
    let first = client
        .clone()
        .detect_objects(request)
        .await
        .unwrap()
        .into_inner();
    println!(
        "The service's first answer came {:.1} s after its start (model loaded and warmed up), from backend {}.\n",
        started.elapsed().as_secs_f64(),
        first.result.unwrap().metadata["backend"]
    );

    // The fallback only has to show that the CPU serves; a few requests do.
    let runs = if fallback { 20 } else { runs() };
    let concurrencies: &[usize] = if fallback { &[1] } else { &[1, 8, 32] };
    let provider = if fallback { "CPU (fallback)" } else { "CUDA" };
    println!(
        "## The service over loopback gRPC on {provider}: {PHOTO}, at least {runs} requests per row after a warm-up round\n"
    );
    println!(
        "| concurrency | p50 ms | p95 ms | requests/s | pre ms | queue ms | infer ms | post ms | mean batch |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &concurrency in concurrencies {
        let requests = runs.max(concurrency * 4);
        let (samples, wall) = run_case(&client, &photo, requests, concurrency).await;
        let mut latency: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
        latency.sort_by(f64::total_cmp);
        let field = |key: &str| -> Vec<f64> {
            samples
                .iter()
                .map(|s| s.metadata[key].parse::<f64>().unwrap())
                .collect()
        };
        let batch = field("batch_size");
        println!(
            "| {concurrency} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            percentile(&latency, 50.0),
            percentile(&latency, 95.0),
            samples.len() as f64 / wall,
            median(&mut field("preprocess_ms")),
            median(&mut field("queue_ms")),
            median(&mut field("inference_ms")),
            median(&mut field("postprocess_ms")),
            batch.iter().sum::<f64>() / batch.len() as f64,
        );
    }
    println!(
        "\npre/queue/infer/post: medians the service reports per request (infer is its batch's whole \
         session.run; pre is the JPEG decode and letterbox on the CPU).\n"
    );

    let matched = same_detections_as_the_cpu(&client).await;
    service.stop().await;
    matched
}

/// Part 3: every test photo, held to the golden test's bar against the
/// detections recorded on the CPU.
async fn same_detections_as_the_cpu(
    client: &AiDetectionServiceClient<tonic::transport::Channel>,
) -> bool {
    let golden = repo_root().join("crates/ai-detect-svc/tests/golden/detections.json");
    let want: Vec<compare::Recorded> =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    let mut differences = Vec::new();
    for (file, want) in compare::FILES.iter().zip(&want) {
        let request = DetectionRequest {
            confidence_threshold: compare::CONFIDENCE,
            ..bytes_request(fixture(file))
        };
        let response = client
            .clone()
            .detect_objects(request)
            .await
            .unwrap()
            .into_inner();
        differences.extend(compare::difference(
            want,
            &compare::recorded(file, &response),
        ));
    }
    let detections: usize = want.iter().map(|r| r.detections.len()).sum();
    println!(
        "## Detections against the CPU's recording (tests/golden: {} photos, {detections} detections at confidence {})\n",
        want.len(),
        compare::CONFIDENCE
    );
    if differences.is_empty() {
        println!(
            "All within the bar: same classes, boxes within {} px, confidences within {}.\n",
            compare::BOX_TOLERANCE_PX,
            compare::CONFIDENCE_TOLERANCE
        );
    } else {
        for difference in &differences {
            println!("- {difference}");
        }
        println!();
    }
    differences.is_empty()
}
