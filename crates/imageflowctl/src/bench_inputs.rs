//! `imageflowctl bench-inputs`: one execution with N inputs against N
//! single-input executions of the same pipeline on the same image, at the
//! same concurrency (the backend's MAX_PARALLEL_INPUTS for the first, that
//! many clients for the second). Prints the wall time of each batch.

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use crate::{
    bench::percentile,
    bench_pipeline::{chain, upload},
};

#[derive(Debug, Args)]
pub struct BenchInputsArgs {
    /// e.g. http://127.0.0.1:8000
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Input image, uploaded once and named N times.
    #[arg(long)]
    input: PathBuf,
    /// The chain, in order: resize, detect, filter.
    #[arg(long, default_value = "resize,filter", value_delimiter = ',')]
    steps: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 20)]
    inputs: usize,
    /// Clients for the single executions; set the backend's
    /// MAX_PARALLEL_INPUTS to the same number.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Batches of each kind, interleaved.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
}

/// Runs one execution synchronously; fails unless it completed.
async fn execute(http: &reqwest::Client, api: &str, body: &Value) -> anyhow::Result<Value> {
    let record: Value = http
        .post(format!("{api}/v1/executions?wait=true"))
        .json(body)
        .send()
        .await?
        .json()
        .await?;
    if record["status"] != "completed" {
        bail!("execution did not complete: {record}");
    }
    Ok(record)
}

pub async fn run(args: BenchInputsArgs) -> anyhow::Result<()> {
    if args.inputs == 0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--inputs, --concurrency and --rounds must be at least 1");
    }
    let api = args.api.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let file = upload(&http, &api, &args.input).await?;
    let pipeline = chain(&args.steps)?;
    let batch = json!({"pipeline": pipeline, "inputs": vec![file["file_id"].clone(); args.inputs]});
    let single = Arc::new(json!({"pipeline": pipeline, "inputs": [file["file_id"]]}));
    // Warm-up: connections, the services' first decode.
    execute(&http, &api, &batch).await?;
    let (mut batched, mut separate) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let started = Instant::now();
        let record = execute(&http, &api, &batch).await?;
        if record["input_results"].as_array().map(Vec::len) != Some(args.inputs) {
            bail!("the execution did not run {} inputs: {record}", args.inputs);
        }
        batched.push(started.elapsed().as_secs_f64() * 1000.0);

        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..args.concurrency {
            let (http, api, body, next) = (http.clone(), api.clone(), single.clone(), next.clone());
            let total = args.inputs;
            clients.push(tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    execute(&http, &api, &body).await?;
                }
                anyhow::Ok(())
            }));
        }
        for client in clients {
            client.await??;
        }
        separate.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    batched.sort_by(f64::total_cmp);
    separate.sort_by(f64::total_cmp);
    println!(
        "| {} images, {} at once | batches | p50 ms | min ms | max ms |\n|---|---|---|---|---|",
        args.inputs, args.concurrency
    );
    for (name, walls) in [
        ("one execution with every image", &batched),
        ("one execution per image", &separate),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            walls.len(),
            percentile(walls, 50.0),
            walls[0],
            walls[walls.len() - 1]
        );
    }
    println!(
        "ratio (one execution / separate), p50: {:.2}",
        percentile(&batched, 50.0) / percentile(&separate, 50.0)
    );
    Ok(())
}
