//! `imageflowctl bench-pipeline`: drives backend-api's synchronous path
//! (`POST /v1/executions?wait=true`) with a chain of steps on one uploaded
//! image, and separates the services' own processing time from the
//! orchestration overhead (end to end minus the sum of the services' times).

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::bench::{Measure, level_json, percentile};

#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// e.g. http://127.0.0.1:8000
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Input image, uploaded once.
    #[arg(long)]
    input: PathBuf,
    /// The chain, in order: resize, detect, filter.
    #[arg(long, default_value = "resize,filter", value_delimiter = ',')]
    steps: Vec<String>,
    /// Executions per concurrency level.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    concurrency: Vec<usize>,
    #[command(flatten)]
    measure: Measure,
}

pub fn chain(steps: &[String]) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for (i, name) in steps.iter().enumerate() {
        let (component, parameters) = match name.as_str() {
            "resize" => (
                "resize",
                json!({"width": 800, "height": 600, "maintain_aspect_ratio": true}),
            ),
            "detect" => ("ai_detection", json!({"draw_boxes": true})),
            "filter" => (
                "filter",
                json!({"filter_type": "gaussian", "intensity": 2.0}),
            ),
            other => bail!("unknown step {other:?}; use resize, detect or filter"),
        };
        let deps: Vec<String> = if i == 0 {
            Vec::new()
        } else {
            vec![format!("s{}", i - 1)]
        };
        out.push(
            json!({"stepId": format!("s{i}"), "componentName": component,
                        "dependencies": deps, "parameters": parameters}),
        );
    }
    Ok(json!({"pipelineName": steps.join(" -> "), "steps": out}))
}

/// One execution: (end-to-end ms, sum of the services' processing ms).
async fn one(http: &reqwest::Client, api: &str, body: &Value) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let response = http
        .post(format!("{api}/v1/executions?wait=true"))
        .json(body)
        .send()
        .await?;
    let record: Value = response.json().await?;
    let e2e = started.elapsed().as_secs_f64() * 1000.0;
    if record["status"] != "completed" {
        bail!("execution did not complete: {record}");
    }
    let services: f64 = record["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["service_time_ms"].as_f64())
        .sum();
    Ok((e2e, services))
}

/// Uploads the input image once (`POST /v1/files`); executions then name its `file_id`,
/// so the measured requests carry no image bytes.
pub(crate) async fn upload(
    http: &reqwest::Client,
    api: &str,
    input: &std::path::Path,
) -> anyhow::Result<Value> {
    let data = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    Ok(http
        .post(format!("{api}/v1/files"))
        .body(data)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

pub async fn run(args: BenchPipelineArgs) -> anyhow::Result<()> {
    let api = args.api.trim_end_matches('/').to_string();
    // Without TCP_NODELAY the request body waits for the server's delayed ACK
    // of the headers (~40 ms per execution), which would be measured as ours.
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let file = upload(&http, &api, &args.input).await?;
    let mut body = json!({"pipeline": chain(&args.steps)?, "inputs": [file["file_id"]]});
    let body = Arc::new(std::mem::take(&mut body));
    let n_steps = args.steps.len() as f64;
    let mut levels = Vec::new();
    println!(
        "| pipeline | concurrency | executions | p50 ms | p95 ms | p99 ms | exec/s | services p50 ms | overhead p50 ms/step |\n|---|---|---|---|---|---|---|---|---|"
    );
    for &concurrency in &args.concurrency {
        if concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        one(&http, &api, &body).await?; // warm-up
        let per_worker = args.requests.div_ceil(concurrency);
        let cpu_before = args.measure.cpu()?;
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (http, api, body) = (http.clone(), api.clone(), body.clone());
            workers.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    samples.push(one(&http, &api, &body).await?);
                }
                anyhow::Ok(samples)
            }));
        }
        let mut samples = Vec::new();
        for worker in workers {
            samples.extend(worker.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after = args.measure.cpu()?;
        let mut e2e: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let mut services: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let mut overhead: Vec<f64> = samples.iter().map(|s| (s.0 - s.1) / n_steps).collect();
        for v in [&mut e2e, &mut services, &mut overhead] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
            args.steps.join(" → "),
            concurrency,
            e2e.len(),
            percentile(&e2e, 50.0),
            percentile(&e2e, 95.0),
            percentile(&e2e, 99.0),
            e2e.len() as f64 / elapsed,
            percentile(&services, 50.0),
            percentile(&overhead, 50.0),
        );
        let mut level = level_json(concurrency, &e2e, elapsed, &cpu_before, &cpu_after);
        level["services_p50_ms"] = json!(percentile(&services, 50.0));
        level["overhead_per_step_p50_ms"] = json!(percentile(&overhead, 50.0));
        level["overhead_per_step_mean_ms"] =
            json!(overhead.iter().sum::<f64>() / overhead.len().max(1) as f64);
        levels.push(level);
    }
    args.measure.write(
        &args.steps.join(","),
        "pipeline",
        levels,
        json!({"steps": args.steps}),
    )
}
