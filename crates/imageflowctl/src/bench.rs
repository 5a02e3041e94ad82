//! `imageflowctl bench`: drives a running resize-svc or filter-svc over gRPC
//! at fixed concurrency and prints latency percentiles and throughput.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use imageflow_proto::v1::{
    FilterRequest, FilterType, ImageBytes, ResizeQuality, ResizeRequest, filter_request,
    filter_service_client::FilterServiceClient, resize_request,
    resize_service_client::ResizeServiceClient,
};

use crate::process::connect;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    Resize,
    Filter,
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
        "| target | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s |\n|---|---|---|---|---|---|---|"
    );
    for &concurrency in &args.concurrency {
        if concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        // Warm-up: connections, caches, lazy statics.
        one(args.target, &channel, &data, filter, args.intensity).await?;
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
                for _ in 0..per_worker {
                    let t = Instant::now();
                    one(target, &channel, &data, filter, intensity).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let summary = Summary {
            concurrency,
            requests: latencies.len(),
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            requests_per_second: latencies.len() as f64 / elapsed,
        };
        println!(
            "| {:?} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
            args.target,
            summary.concurrency,
            summary.requests,
            summary.p50,
            summary.p95,
            summary.p99,
            summary.requests_per_second
        );
    }
    Ok(())
}

async fn one(
    target: Target,
    channel: &tonic::transport::Channel,
    data: &Arc<Vec<u8>>,
    filter: FilterType,
    intensity: f32,
) -> anyhow::Result<()> {
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
                    quality: ResizeQuality::Good as i32,
                    execution_id: String::new(),
                })
                .await?;
        }
        Target::Filter => {
            FilterServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .apply_filter(FilterRequest {
                    input: Some(filter_request::Input::InputBytes(input)),
                    filter_type: filter as i32,
                    intensity,
                    parameters: Default::default(),
                    execution_id: String::new(),
                })
                .await?;
        }
    }
    Ok(())
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
