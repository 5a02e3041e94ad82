//! `imageflowctl bench`: drives a running resize-svc, filter-svc or
//! ai-detect-svc over gRPC at fixed concurrency and prints latency
//! percentiles and throughput; with `--watch NAME=PID` also the CPU seconds
//! per request and peak RSS of those processes, and with `--json` writes
//! everything (raw latencies included) for `scripts/bench_report.py`.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use imageflow_pipeline::registry::{FilterType, ResizeQuality};
use imageflow_proto::v1::{
    self, DetectionRequest, FilterRequest, ImageBytes, ResizeRequest,
    ai_detection_service_client::AiDetectionServiceClient, detection_request, filter_request,
    filter_service_client::FilterServiceClient, resize_request,
    resize_service_client::ResizeServiceClient,
};
use serde_json::{Value, json};

use crate::{
    process::connect,
    procstat::{self, Watched},
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    Resize,
    Filter,
    /// YOLO (the service's default model), confidence 0.5, NMS 0.4, no boxes drawn.
    Detect,
}

/// What the `bench` and `bench-pipeline` subcommands share: the processes to
/// watch and where to write the JSON.
#[derive(Debug, Args)]
pub struct Measure {
    /// A process whose CPU time and peak RSS go with the figures, as
    /// NAME=PID; repeat for several (CPU per request is summed over them).
    #[arg(long = "watch")]
    pub watch: Vec<Watched>,
    /// The kernel's USER_HZ, the unit of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100.0)]
    pub clk_tck: f64,
    /// Write the summary and the raw latencies here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Name of this case in the JSON (default: the target or the chain).
    #[arg(long)]
    pub label: Option<String>,
}

impl Measure {
    pub fn cpu(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        procstat::cpu_snapshot(&self.watch, self.clk_tck)
    }

    /// Writes `{"label", "kind", "levels", "peak_rss_mb", ...extra}` when `--json` was given.
    pub fn write(
        &self,
        default_label: &str,
        kind: &str,
        levels: Vec<Value>,
        extra: Value,
    ) -> anyhow::Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        let mut out = json!({
            "label": self.label.as_deref().unwrap_or(default_label),
            "kind": kind,
            "levels": levels,
            "peak_rss_mb": procstat::peak_rss_mb(&self.watch),
        });
        if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
            out.extend(extra);
        }
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// One concurrency level as JSON: percentiles, throughput, CPU seconds per
/// request of each watched process (from the deltas around the level), and
/// the sorted latencies for the plot.
pub fn level_json(
    concurrency: usize,
    sorted_ms: &[f64],
    elapsed_s: f64,
    cpu_before: &BTreeMap<String, f64>,
    cpu_after: &BTreeMap<String, f64>,
) -> Value {
    let n = sorted_ms.len().max(1) as f64;
    let per_process: BTreeMap<&String, f64> = cpu_after
        .iter()
        .map(|(name, after)| {
            (
                name,
                (after - cpu_before.get(name).copied().unwrap_or(0.0)) / n,
            )
        })
        .collect();
    json!({
        "concurrency": concurrency,
        "requests": sorted_ms.len(),
        "p50_ms": percentile(sorted_ms, 50.0),
        "p95_ms": percentile(sorted_ms, 95.0),
        "p99_ms": percentile(sorted_ms, 99.0),
        "mean_ms": sorted_ms.iter().sum::<f64>() / n,
        "requests_per_second": sorted_ms.len() as f64 / elapsed_s,
        "cpu_s_per_request": per_process,
        "cpu_s_per_request_total": per_process.values().sum::<f64>(),
        "latencies_ms": sorted_ms,
    })
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    target: Target,
    /// e.g. http://127.0.0.1:9091
    #[arg(long)]
    endpoint: String,
    /// Input image sent with every request (by bytes).
    #[arg(long)]
    input: PathBuf,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Filter to apply (filter target only).
    #[arg(long, default_value = "gaussian")]
    filter: String,
    #[arg(long, default_value_t = 2.0)]
    intensity: f32,
    #[command(flatten)]
    measure: Measure,
}

/// Summary of one run: latencies in milliseconds.
#[derive(Debug)]
pub struct Summary {
    pub concurrency: usize,
    pub requests: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub requests_per_second: f64,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let data = Arc::new(
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?,
    );
    let filter = crate::process::filter_type(&args.filter)?;
    let channel = connect(&args.endpoint).await?;
    println!(
        "| target | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s | CPU ms/req |\n|---|---|---|---|---|---|---|---|"
    );
    let mut levels = Vec::new();
    for &concurrency in &args.concurrency {
        if concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        // Warm-up: connections, caches, lazy statics.
        one(args.target, &channel, &data, filter, args.intensity).await?;
        let cpu_before = args.measure.cpu()?;
        let started = Instant::now();
        let per_worker = args.requests.div_ceil(concurrency);
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let channel = channel.clone();
            let data = data.clone();
            let target = args.target;
            let intensity = args.intensity;
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                let mut splits = Vec::new();
                for _ in 0..per_worker {
                    let t = Instant::now();
                    let split = one(target, &channel, &data, filter, intensity).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    splits.extend(split);
                }
                anyhow::Ok((latencies, splits))
            }));
        }
        let mut latencies = Vec::new();
        let mut splits = Vec::new();
        for worker in workers {
            let (l, s) = worker.await??;
            latencies.extend(l);
            splits.extend(s);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after = args.measure.cpu()?;
        latencies.sort_by(f64::total_cmp);
        let mut level = level_json(concurrency, &latencies, elapsed, &cpu_before, &cpu_after);
        if !splits.is_empty() {
            level["service_split_median_ms"] = json!(split_medians(&splits));
        }
        let summary = Summary {
            concurrency,
            requests: latencies.len(),
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            requests_per_second: latencies.len() as f64 / elapsed,
        };
        println!(
            "| {:?} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
            args.target,
            summary.concurrency,
            summary.requests,
            summary.p50,
            summary.p95,
            summary.p99,
            summary.requests_per_second,
            level["cpu_s_per_request_total"]
                .as_f64()
                .unwrap_or(f64::NAN)
                * 1000.0,
        );
        levels.push(level);
    }
    let label = format!("{:?}", args.target).to_lowercase();
    args.measure.write(&label, "grpc", levels, json!({}))
}

/// Medians of the timings ai-detect-svc reports with each response (its own
/// split of the request: pre-processing, batch queue, inference, post-processing).
fn split_medians(splits: &[HashMap<String, String>]) -> BTreeMap<&'static str, f64> {
    [
        "preprocess_ms",
        "queue_ms",
        "inference_ms",
        "postprocess_ms",
        "batch_size",
    ]
    .into_iter()
    .map(|key| {
        let mut values: Vec<f64> = splits
            .iter()
            .filter_map(|m| m.get(key)?.parse().ok())
            .collect();
        values.sort_by(f64::total_cmp);
        (key, percentile(&values, 50.0))
    })
    .collect()
}

/// One request; for detection, the timings the service reported.
async fn one(
    target: Target,
    channel: &tonic::transport::Channel,
    data: &Arc<Vec<u8>>,
    filter: FilterType,
    intensity: f32,
) -> anyhow::Result<Option<HashMap<String, String>>> {
    let input = ImageBytes {
        data: data.as_ref().clone(),
        ..Default::default()
    };
    match target {
        Target::Resize => {
            ResizeServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .resize_image(ResizeRequest {
                    input: Some(resize_request::Input::InputBytes(input)),
                    target_width: 800,
                    target_height: 600,
                    maintain_aspect_ratio: true,
                    quality: v1::ResizeQuality::from(ResizeQuality::Good) as i32,
                    execution_id: String::new(),
                    input_index: None,
                })
                .await?;
        }
        Target::Filter => {
            FilterServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .apply_filter(FilterRequest {
                    input: Some(filter_request::Input::InputBytes(input)),
                    filter_type: v1::FilterType::from(filter) as i32,
                    intensity,
                    parameters: Default::default(),
                    execution_id: String::new(),
                    input_index: None,
                })
                .await?;
        }
        Target::Detect => {
            let response = AiDetectionServiceClient::new(channel.clone())
                .max_encoding_message_size(64 << 20)
                .max_decoding_message_size(64 << 20)
                .detect_objects(DetectionRequest {
                    input: Some(detection_request::Input::InputBytes(input)),
                    model_name: String::new(),
                    confidence_threshold: 0.5,
                    nms_threshold: 0.4,
                    draw_boxes: false,
                    ..Default::default()
                })
                .await?;
            return Ok(response.into_inner().result.map(|r| r.metadata));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 51.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
