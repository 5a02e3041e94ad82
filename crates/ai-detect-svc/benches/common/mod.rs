//! What the detection benchmarks share: the service in process, statistics, a
//! load of gRPC requests at a concurrency, and bare Python onnxruntime on the
//! same tensor.

#![allow(dead_code)] // each benchmark uses a part

use std::{collections::HashMap, path::Path, process::Command, time::Instant};

use ai_detect_svc::config::DetectConfig;
use imageflow_proto::v1::{
    DetectionRequest, ImageBytes, ai_detection_service_client::AiDetectionServiceClient,
    detection_request::Input,
};
use imageflow_service::{ServeError, ServiceConfig};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

/// ai-detect-svc served in this process on a loopback port.
pub struct InProcess {
    pub client: AiDetectionServiceClient<Channel>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServeError>>,
}

/// Starts the service and connects a client to it; a service that fails to
/// start (a model that does not load) panics here with its reason.
pub async fn serve(config: ServiceConfig, detect: DetectConfig) -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(ai_detect_svc::run(config, detect, listener, async {
        let _ = stopped.await;
    }));
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = tokio::select! {
        channel = endpoint.connect() => channel.unwrap(),
        stopped = &mut server => panic!("the service stopped: {stopped:?}"),
    };
    InProcess {
        client: AiDetectionServiceClient::new(channel).max_encoding_message_size(64 << 20),
        stop,
        server,
    }
}

impl InProcess {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// A detection of `data` sent by bytes, with the service's defaults.
pub fn bytes_request(data: Vec<u8>) -> DetectionRequest {
    DetectionRequest {
        input: Some(Input::InputBytes(ImageBytes {
            data,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

pub struct Sample {
    pub latency_ms: f64,
    pub metadata: HashMap<String, String>,
}

/// `requests` detections of `image` from `concurrency` clients at once, after
/// one discarded round at the same concurrency (so the batch shapes it makes
/// are warm too). Returns the samples and the wall time in seconds.
pub async fn run_case(
    client: &AiDetectionServiceClient<Channel>,
    image: &[u8],
    requests: usize,
    concurrency: usize,
) -> (Vec<Sample>, f64) {
    let request = bytes_request(image.to_vec());
    load(client, &request, concurrency.max(3), concurrency).await;
    let started = Instant::now();
    let samples = load(client, &request, requests, concurrency).await;
    (samples, started.elapsed().as_secs_f64())
}

async fn load(
    client: &AiDetectionServiceClient<Channel>,
    request: &DetectionRequest,
    requests: usize,
    concurrency: usize,
) -> Vec<Sample> {
    let per_worker = requests.div_ceil(concurrency);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for _ in 0..per_worker {
                    let sent = Instant::now();
                    let response = client
                        .detect_objects(request.clone())
                        .await
                        .unwrap()
                        .into_inner();
                    samples.push(Sample {
                        latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                        metadata: response.result.unwrap().metadata,
                    });
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.unwrap());
    }
    samples
}

/// What `benches/ort_baseline.py` measured.
pub struct PythonRun {
    /// Each `session.run`, in ms.
    pub latencies_ms: Vec<f64>,
    pub wall_s: f64,
    pub version: String,
}

/// Bare `session.run` in Python, by `benches/ort_baseline.py` in the checkout
/// at `root`, on `tensor` (a raw little-endian f32 file of one 3x640x640 image).
pub struct PythonBaseline<'a> {
    pub python: &'a Path,
    pub root: &'a Path,
    pub model: &'a Path,
    pub tensor: &'a Path,
}

impl PythonBaseline<'_> {
    /// The tensor stacked `batch` times, on `provider` (cpu or cuda). None, with
    /// the reason on stderr, when Python fails.
    pub fn run(
        &self,
        requests: usize,
        concurrency: usize,
        provider: &str,
        batch: usize,
    ) -> Option<PythonRun> {
        let Self {
            python,
            root,
            model,
            tensor,
        } = self;
        let output = Command::new(python)
            .arg(root.join("crates/ai-detect-svc/benches/ort_baseline.py"))
            .arg(model)
            .arg(tensor)
            .args(["640", "640"])
            .args([requests, concurrency].map(|n| n.to_string()))
            .args([provider, &batch.to_string()])
            .output()
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "python baseline failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(PythonRun {
            latencies_ms: value["latencies_ms"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect(),
            wall_s: value["wall_s"].as_f64()?,
            version: value["onnxruntime"].as_str()?.to_string(),
        })
    }
}
