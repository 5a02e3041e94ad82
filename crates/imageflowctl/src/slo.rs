//! `imageflowctl slo`: the SLO report from a Prometheus HTTP API, with the
//! queries the design's alert rules use: API availability, p95 latency,
//! pipeline error rate and how fast the error budget burns.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::traces::{encode, parse_window};

#[derive(Debug, Args)]
pub struct SloArgs {
    /// Prometheus, e.g. http://prometheus:9090.
    #[arg(long, env = "PROMETHEUS_URL", default_value = "http://127.0.0.1:9090")]
    pub prometheus: String,
    /// The window the report covers: 5m, 1h, 30d.
    #[arg(long, default_value = "1h", value_parser = parse_window)]
    pub window: Duration,
    /// API availability objective, in percent.
    #[arg(long, default_value_t = 99.9)]
    pub availability_target: f64,
    /// p95 latency objective of the API, in milliseconds.
    #[arg(long, default_value_t = 500.0)]
    pub latency_target_ms: f64,
    /// Highest acceptable share of failed pipeline executions, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub pipeline_error_target: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 3 when an objective is missed.
    #[arg(long)]
    pub fail_on_breach: bool,
}

/// The queries, with `{w}` for the window (PromQL duration).
pub fn queries(w: &str) -> [(&'static str, String); 6] {
    [
        (
            "availability",
            format!(
                "1 - ((sum(increase(http_requests_total{{code=~\"5..\"}}[{w}])) or vector(0)) / sum(increase(http_requests_total[{w}])))"
            ),
        ),
        (
            "requests",
            format!("sum(increase(http_requests_total[{w}]))"),
        ),
        (
            "p95_latency_seconds",
            format!(
                "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[{w}])))"
            ),
        ),
        (
            "pipeline_error_rate",
            format!(
                "(sum(increase(pipeline_executions_total{{status=\"failed\"}}[{w}])) or vector(0)) / sum(increase(pipeline_executions_total[{w}]))"
            ),
        ),
        (
            "executions",
            format!("sum(increase(pipeline_executions_total[{w}]))"),
        ),
        (
            "p95_pipeline_seconds",
            format!(
                "histogram_quantile(0.95, sum by (le) (rate(imageflow_pipeline_execution_duration_seconds_bucket[{w}])))"
            ),
        ),
    ]
}

/// The single number of an instant-query answer; `None` for no data (no
/// traffic in the window) or NaN.
pub fn scalar(body: &Value) -> anyhow::Result<Option<f64>> {
    anyhow::ensure!(
        body.get("status").and_then(Value::as_str) == Some("success"),
        "Prometheus answered an error: {}",
        body.get("error").unwrap_or(body)
    );
    let result = body
        .pointer("/data/result")
        .and_then(Value::as_array)
        .context("not a Prometheus query answer: no data.result")?;
    let Some(first) = result.first() else {
        return Ok(None);
    };
    let raw = first
        .pointer("/value/1")
        .and_then(Value::as_str)
        .context("a sample without a value")?;
    let v: f64 = raw
        .parse()
        .with_context(|| format!("sample value {raw:?}"))?;
    Ok(v.is_finite().then_some(v))
}

#[derive(Debug, PartialEq)]
pub struct SloReport {
    pub window: String,
    pub requests: Option<f64>,
    pub availability: Option<f64>,
    pub p95_latency_seconds: Option<f64>,
    pub executions: Option<f64>,
    pub pipeline_error_rate: Option<f64>,
    pub p95_pipeline_seconds: Option<f64>,
    /// Errors spent over errors allowed in the window (1.0 = exactly on budget).
    pub budget_burn: Option<f64>,
    pub breaches: Vec<String>,
}

pub fn evaluate(args: &SloArgs, window: String, values: &[(&str, Option<f64>)]) -> SloReport {
    let get = |k: &str| values.iter().find(|(n, _)| *n == k).and_then(|(_, v)| *v);
    let availability = get("availability");
    let allowed = 1.0 - args.availability_target / 100.0;
    let budget_burn = availability.map(|a| {
        if allowed > 0.0 {
            (1.0 - a) / allowed
        } else {
            f64::INFINITY
        }
    });
    let mut breaches = Vec::new();
    if let Some(a) = availability
        && a * 100.0 < args.availability_target
    {
        breaches.push(format!(
            "availability {:.3}% is under the {}% objective",
            a * 100.0,
            args.availability_target
        ));
    }
    if let Some(p) = get("p95_latency_seconds")
        && p * 1000.0 > args.latency_target_ms
    {
        breaches.push(format!(
            "p95 latency {:.1} ms is over the {} ms objective",
            p * 1000.0,
            args.latency_target_ms
        ));
    }
    if let Some(e) = get("pipeline_error_rate")
        && e * 100.0 > args.pipeline_error_target
    {
        breaches.push(format!(
            "pipeline error rate {:.2}% is over the {}% objective",
            e * 100.0,
            args.pipeline_error_target
        ));
    }
    SloReport {
        window,
        requests: get("requests"),
        availability,
        p95_latency_seconds: get("p95_latency_seconds"),
        executions: get("executions"),
        pipeline_error_rate: get("pipeline_error_rate"),
        p95_pipeline_seconds: get("p95_pipeline_seconds"),
        budget_burn,
        breaches,
    }
}

fn promql_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

pub async fn run(args: SloArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.prometheus.trim_end_matches('/');
    let w = promql_duration(args.window);
    let mut values = Vec::new();
    for (name, query) in queries(&w) {
        let url = format!("{base}/api/v1/query?query={}", encode(&query));
        let response = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach Prometheus at {base}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("Prometheus answered {status} without JSON"))?;
        values.push((
            name,
            scalar(&body).with_context(|| format!("query {name}: {query}"))?,
        ));
    }
    let report = evaluate(&args, w, &values);
    let pct = |v: Option<f64>| v.map_or("no data".to_string(), |v| format!("{:.3}%", v * 100.0));
    let ms = |v: Option<f64>| v.map_or("no data".to_string(), |v| format!("{:.1} ms", v * 1000.0));
    let count = |v: Option<f64>| v.map_or("0".to_string(), |v| format!("{v:.0}"));
    if args.json {
        println!(
            "{}",
            json!({
                "window": report.window,
                "requests": report.requests,
                "availability": report.availability,
                "p95_latency_seconds": report.p95_latency_seconds,
                "executions": report.executions,
                "pipeline_error_rate": report.pipeline_error_rate,
                "p95_pipeline_seconds": report.p95_pipeline_seconds,
                "error_budget_burn": report.budget_burn,
                "breaches": report.breaches,
            })
        );
    } else {
        println!("SLO report over the last {} ({base})", report.window);
        println!(
            "  API availability     {:>12}   objective {}%  ({} requests)",
            pct(report.availability),
            args.availability_target,
            count(report.requests)
        );
        println!(
            "  API p95 latency      {:>12}   objective {} ms",
            ms(report.p95_latency_seconds),
            args.latency_target_ms
        );
        println!(
            "  pipeline error rate  {:>12}   objective under {}%  ({} executions)",
            pct(report.pipeline_error_rate),
            args.pipeline_error_target,
            count(report.executions)
        );
        println!(
            "  pipeline p95         {:>12}",
            ms(report.p95_pipeline_seconds)
        );
        println!(
            "  error budget burn    {:>12}   (1.0 spends the budget exactly over the window)",
            report
                .budget_burn
                .map_or("no data".to_string(), |b| format!("{b:.2}x"))
        );
        if report.breaches.is_empty() {
            println!("all objectives met");
        } else {
            for b in &report.breaches {
                println!("BREACH: {b}");
            }
        }
    }
    Ok(report.breaches.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args() -> SloArgs {
        SloArgs {
            prometheus: String::new(),
            window: Duration::from_secs(3600),
            availability_target: 99.9,
            latency_target_ms: 500.0,
            pipeline_error_target: 5.0,
            json: false,
            fail_on_breach: false,
        }
    }

    #[test]
    fn instant_query_answers() {
        let ok = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1764000000.0, "0.998"]}]}});
        assert_eq!(scalar(&ok).unwrap(), Some(0.998));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(scalar(&empty).unwrap(), None);
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "NaN"]}]}});
        assert_eq!(scalar(&nan).unwrap(), None);
        let err = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(
            scalar(&err)
                .unwrap_err()
                .to_string()
                .contains("parse error")
        );
    }

    #[test]
    fn breaches_and_budget_burn() {
        let report = evaluate(
            &args(),
            "3600s".into(),
            &[
                ("availability", Some(0.998)),
                ("p95_latency_seconds", Some(0.120)),
                ("pipeline_error_rate", Some(0.10)),
            ],
        );
        assert!(
            (report.budget_burn.unwrap() - 2.0).abs() < 1e-9,
            "{report:?}"
        );
        assert_eq!(report.breaches.len(), 2, "{report:?}");
        assert!(report.breaches[0].contains("availability 99.800%"));
        assert!(report.breaches[1].contains("pipeline error rate 10.00%"));
        let quiet = evaluate(&args(), "3600s".into(), &[("availability", None)]);
        assert!(quiet.breaches.is_empty() && quiet.budget_burn.is_none());
    }
}
