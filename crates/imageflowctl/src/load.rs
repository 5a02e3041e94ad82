//! `imageflowctl load`: N clients for M seconds against backend-api's
//! synchronous path, then an audit of every execution it accepted.
//!
//! Each client sends `POST /v1/executions?wait=true` back to back with an
//! execution id of its own choosing, so an execution can be looked up even
//! when its request failed on the way back. After the load every accepted id
//! is read through `GET /v1/executions/{id}` until it is terminal (bounded by
//! `--settle-seconds`): an id the API does not know is a lost execution.
//! Meanwhile the RSS of the watched processes is sampled every second, to
//! show whether memory stays flat under a steady load.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{
    bench::percentile,
    bench_pipeline::{chain, upload},
    procstat::{self, Watched},
};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// e.g. http://127.0.0.1:8000
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    api: String,
    /// Input image, uploaded once.
    #[arg(long)]
    input: PathBuf,
    /// The chain, in order: resize, detect, filter.
    #[arg(long, default_value = "resize,filter", value_delimiter = ',')]
    steps: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long the clients send, in seconds (at most an hour).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// How long the audit waits for an accepted execution to end.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
    /// A process whose RSS is sampled each second, as NAME=PID (repeatable).
    #[arg(long = "watch")]
    watch: Vec<Watched>,
    /// Name of this run in the output (e.g. the execution mode).
    #[arg(long, default_value = "direct")]
    label: String,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one request came back with.
struct Sent {
    id: String,
    latency_ms: f64,
    /// The server created the execution (any answer that carries it).
    accepted: bool,
    /// The answer said completed.
    completed: bool,
    /// Transport error, non-2xx answer, or an execution that did not complete.
    error: Option<String>,
}

async fn send(http: &reqwest::Client, api: &str, body: &Value, id: String) -> Sent {
    let started = Instant::now();
    let mut body = body.clone();
    body["execution_id"] = json!(id);
    let result = async {
        let response = http
            .post(format!("{api}/v1/executions?wait=true"))
            .json(&body)
            .send()
            .await?;
        let code = response.status();
        let record: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::Ok((code, record))
    }
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok((code, record)) if code.is_success() => {
            let status = record["status"].as_str().unwrap_or("").to_string();
            let completed = status == "completed";
            Sent {
                accepted: record["execution_id"] == id.as_str(),
                error: (!completed).then(|| format!("status {status:?}: {}", record["error"])),
                id,
                latency_ms,
                completed,
            }
        }
        Ok((code, record)) => Sent {
            id,
            latency_ms,
            accepted: false,
            completed: false,
            error: Some(format!("HTTP {code}: {record}")),
        },
        Err(err) => Sent {
            id,
            latency_ms,
            accepted: false,
            completed: false,
            error: Some(format!("{err:#}")),
        },
    }
}

/// Median of the values (NaN when empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// Least-squares slope of y over x (NaN with fewer than two points).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

/// RSS samples `(seconds since start, MB)` summarised: the medians of the
/// first and last quarter of the run and the fitted growth in MB per minute.
fn memory_trend(samples: &[(f64, f64)]) -> Value {
    let quarter = (samples.len() / 4).max(1).min(samples.len());
    let first: Vec<f64> = samples[..quarter].iter().map(|s| s.1).collect();
    let last: Vec<f64> = samples[samples.len() - quarter..]
        .iter()
        .map(|s| s.1)
        .collect();
    json!({
        "samples": samples.len(),
        "first_quarter_median_mb": median(&first),
        "last_quarter_median_mb": median(&last),
        "slope_mb_per_min": slope(samples) * 60.0,
        "max_mb": samples.iter().map(|s| s.1).fold(f64::NAN, f64::max),
        "series": samples.iter().map(|s| [s.0, s.1]).collect::<Vec<_>>(),
    })
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.seconds > 3600 {
        bail!("--clients must be at least 1 and --seconds between 1 and 3600");
    }
    let api = args.api.trim_end_matches('/').to_string();
    // TCP_NODELAY: see bench_pipeline.rs. The timeout bounds a stuck request,
    // which then counts as an error and its execution is still audited.
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let file = upload(&http, &api, &args.input).await?;
    let body = Arc::new(json!({"pipeline": chain(&args.steps)?, "inputs": [file["file_id"]]}));
    // Unique per run, so ids never collide with an earlier run's (an existing
    // id would be answered from the database instead of run).
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();

    // Warm-up, untimed and not counted: connections, pools and caches fill
    // here, so the RSS series shows growth under steady load, not start-up.
    let mut warmup = Vec::new();
    for client in 0..args.clients {
        let (http, api, body) = (http.clone(), api.clone(), body.clone());
        let id = format!("warmup-{}-{run_id}-{client}", args.label);
        warmup.push(tokio::spawn(
            async move { send(&http, &api, &body, id).await },
        ));
    }
    for w in warmup {
        w.await?;
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let sampler = {
        let watch = args.watch.clone();
        tokio::spawn(async move {
            let mut samples: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < deadline {
                tick.tick().await;
                let at = started.elapsed().as_secs_f64();
                for w in &watch {
                    if let Some(kb) = procstat::status_kb(w.pid, "VmRSS") {
                        samples
                            .entry(w.name.clone())
                            .or_default()
                            .push((at, kb as f64 * 1.024e-3));
                    }
                }
            }
            samples
        })
    };
    let mut clients = Vec::new();
    for client in 0..args.clients {
        let (http, api, body, label) =
            (http.clone(), api.clone(), body.clone(), args.label.clone());
        clients.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            while Instant::now() < deadline {
                let id = format!("load-{label}-{run_id}-{client}-{}", sent.len());
                sent.push(send(&http, &api, &body, id).await);
            }
            sent
        }));
    }
    let mut sent: Vec<Sent> = Vec::new();
    for client in clients {
        sent.extend(client.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = sampler.await?;

    // The audit: every id the server may have created is looked up, the
    // failed requests' ids too (found ones count as accepted after all).
    let settle = Instant::now() + Duration::from_secs(args.settle_seconds);
    let mut pending: Vec<&Sent> = sent.iter().collect();
    let mut audited: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for s in pending {
            let response = http
                .get(format!("{api}/v1/executions/{}", s.id))
                .send()
                .await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                audited.insert(&s.id, "missing".into());
                continue;
            }
            let record: Value = response.error_for_status()?.json().await?;
            let status = record["status"].as_str().unwrap_or("").to_string();
            let terminal = matches!(
                status.as_str(),
                "completed" | "failed" | "cancelled" | "partially_failed"
            );
            audited.insert(&s.id, status);
            if !terminal {
                still.push(s);
            }
        }
        if still.is_empty() || Instant::now() > settle {
            break;
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let accepted = sent
        .iter()
        .filter(|s| s.accepted || audited.get(s.id.as_str()).is_some_and(|st| st != "missing"))
        .count();
    let lost = sent
        .iter()
        .filter(|s| s.accepted && audited.get(s.id.as_str()).is_some_and(|st| st == "missing"))
        .count();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for status in audited.values() {
        *by_status.entry(status.as_str()).or_default() += 1;
    }
    let non_terminal = audited
        .values()
        .filter(|st| {
            !matches!(
                st.as_str(),
                "completed" | "failed" | "cancelled" | "partially_failed" | "missing"
            )
        })
        .count();
    let errors = sent.iter().filter(|s| s.error.is_some()).count();
    let first_errors: Vec<&str> = sent
        .iter()
        .filter_map(|s| s.error.as_deref())
        .take(5)
        .collect();
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter(|s| s.completed)
        .map(|s| s.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let memory: BTreeMap<&String, Value> = rss
        .iter()
        .map(|(name, s)| (name, memory_trend(s)))
        .collect();

    let out = json!({
        "label": args.label,
        "kind": "load",
        "steps": args.steps,
        "clients": args.clients,
        "seconds": elapsed,
        "sent": sent.len(),
        "accepted": accepted,
        "completed_in_response": sent.iter().filter(|s| s.completed).count(),
        "errors": errors,
        "error_rate": errors as f64 / sent.len().max(1) as f64,
        "first_errors": first_errors,
        "lost": lost,
        "non_terminal": non_terminal,
        "audited_status": by_status,
        "executions_per_second": sent.len() as f64 / elapsed,
        "p50_ms": percentile(&latencies, 50.0),
        "p95_ms": percentile(&latencies, 95.0),
        "p99_ms": percentile(&latencies, 99.0),
        "latencies_ms": latencies,
        "memory": memory,
    });
    println!(
        "| mode | clients | seconds | sent | accepted | lost | non-terminal | errors | exec/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    println!(
        "| {} | {} | {:.0} | {} | {} | {} | {} | {} ({:.2}%) | {:.1} | {:.2} | {:.2} | {:.2} |",
        args.label,
        args.clients,
        elapsed,
        sent.len(),
        accepted,
        lost,
        non_terminal,
        errors,
        out["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        out["executions_per_second"].as_f64().unwrap_or(0.0),
        out["p50_ms"].as_f64().unwrap_or(f64::NAN),
        out["p95_ms"].as_f64().unwrap_or(f64::NAN),
        out["p99_ms"].as_f64().unwrap_or(f64::NAN),
    );
    for (name, m) in &memory {
        println!(
            "{name} RSS: first quarter {:.1} MB, last quarter {:.1} MB, slope {:+.2} MB/min over {} samples",
            m["first_quarter_median_mb"].as_f64().unwrap_or(f64::NAN),
            m["last_quarter_median_mb"].as_f64().unwrap_or(f64::NAN),
            m["slope_mb_per_min"].as_f64().unwrap_or(f64::NAN),
            m["samples"],
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_fits_a_line() {
        let points: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 0.5 * f64::from(i)))
            .collect();
        assert!((slope(&points) - 0.5).abs() < 1e-9);
        assert!(slope(&points[..1]).is_nan());
    }

    #[test]
    fn memory_trend_compares_first_and_last_quarters() {
        let samples: Vec<(f64, f64)> = (0..8)
            .map(|i| (f64::from(i), if i < 4 { 10.0 } else { 12.0 }))
            .collect();
        let trend = memory_trend(&samples);
        assert_eq!(trend["first_quarter_median_mb"], 10.0);
        assert_eq!(trend["last_quarter_median_mb"], 12.0);
        assert_eq!(trend["samples"], 8);
    }
}
