//! `imageflowctl traces`: the bottleneck report from a Jaeger query API
//! (`/api/services`, `/api/traces`), and one execution's trace by its id.
//!
//! Jaeger's JSON (the `structuredjson` of its HTTP query API): `data` holds
//! traces; each has `spans` (`traceID`, `spanID`, `operationName`,
//! `references`, `startTime` and `duration` in microseconds, `tags`,
//! `processID`) and `processes` (`serviceName` per process id).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct TracesArgs {
    /// Jaeger query service, e.g. http://jaeger-query:16686.
    #[arg(
        long,
        env = "JAEGER_QUERY_URL",
        default_value = "http://127.0.0.1:16686"
    )]
    pub jaeger: String,
    #[command(subcommand)]
    pub command: TracesCommand,
}

#[derive(Debug, Subcommand)]
pub enum TracesCommand {
    /// Services Jaeger knows.
    Services,
    /// Trace count, error traces, average duration and the slowest steps of a
    /// service over a time window.
    Report {
        #[arg(long, default_value = "imageflow-backend-api")]
        service: String,
        /// How far back to look: 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = parse_window)]
        lookback: Duration,
        /// Most traces to fetch.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// How many of the slowest operations to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// The trace of one execution, found by its `execution.id` attribute.
    Execution {
        execution_id: String,
        #[arg(long, default_value = "imageflow-backend-api")]
        service: String,
        #[arg(long, default_value = "2d", value_parser = parse_window)]
        lookback: Duration,
    },
}

/// `90s`, `15m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_window(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a window like 15m or 1h, got {raw:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in {raw:?}: use s, m, h or d")),
    };
    if secs == 0 {
        return Err("the window must be longer than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

/// One span, reduced to what the reports need.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub operation: String,
    pub service: String,
    pub start_us: u64,
    pub duration_us: u64,
    pub error: bool,
    pub tags: BTreeMap<String, String>,
}

/// Parses a Jaeger `/api/traces` answer into traces of spans.
pub fn parse_traces(body: &Value) -> anyhow::Result<Vec<Vec<Span>>> {
    if let Some(errors) = body.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        anyhow::bail!("Jaeger answered errors: {}", Value::Array(errors.clone()));
    }
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .context("not a Jaeger answer: no \"data\" array")?;
    let mut traces = Vec::with_capacity(data.len());
    for trace in data {
        let processes = trace.get("processes").cloned().unwrap_or(Value::Null);
        let mut spans = Vec::new();
        for s in trace
            .get("spans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |k: &str| {
                s.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let tags: BTreeMap<String, String> = s
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let key = t.get("key")?.as_str()?.to_string();
                    let value = match t.get("value")? {
                        Value::String(v) => v.clone(),
                        other => other.to_string(),
                    };
                    Some((key, value))
                })
                .collect();
            let error = tags.get("error").is_some_and(|v| v == "true")
                || tags
                    .get("otel.status_code")
                    .is_some_and(|v| v.eq_ignore_ascii_case("error"));
            let parent_id = s
                .get("references")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| r.get("refType").and_then(Value::as_str) == Some("CHILD_OF"))
                .and_then(|r| r.get("spanID").and_then(Value::as_str))
                .map(str::to_string);
            let service = s
                .get("processID")
                .and_then(Value::as_str)
                .and_then(|p| processes.get(p))
                .and_then(|p| p.get("serviceName"))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            spans.push(Span {
                trace_id: text("traceID"),
                span_id: text("spanID"),
                parent_id,
                operation: text("operationName"),
                service,
                start_us: s.get("startTime").and_then(Value::as_u64).unwrap_or(0),
                duration_us: s.get("duration").and_then(Value::as_u64).unwrap_or(0),
                error,
                tags,
            });
        }
        if !spans.is_empty() {
            traces.push(spans);
        }
    }
    Ok(traces)
}

/// Latency of one operation over the window.
#[derive(Debug, PartialEq)]
pub struct OperationStats {
    pub name: String,
    pub count: usize,
    pub errors: usize,
    pub avg_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, PartialEq)]
pub struct Report {
    pub traces: usize,
    pub error_traces: usize,
    pub avg_trace_ms: f64,
    /// Slowest first, by average.
    pub slowest: Vec<OperationStats>,
}

/// The bottleneck report: pipeline steps are grouped by `step.type` (the
/// unit users reason in), every other span by service and operation.
pub fn report(traces: &[Vec<Span>], top: usize) -> Report {
    let mut durations: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    let mut total_ms = 0.0;
    let mut error_traces = 0;
    for trace in traces {
        let start = trace.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end = trace
            .iter()
            .map(|s| s.start_us + s.duration_us)
            .max()
            .unwrap_or(start);
        total_ms += (end - start) as f64 / 1000.0;
        if trace.iter().any(|s| s.error) {
            error_traces += 1;
        }
        for s in trace {
            let name = match (s.operation.as_str(), s.tags.get("step.type")) {
                ("step.execute", Some(kind)) => format!("step {kind}"),
                _ => format!("{} {}", s.service, s.operation),
            };
            let entry = durations.entry(name).or_default();
            entry.0.push(s.duration_us as f64 / 1000.0);
            entry.1 += usize::from(s.error);
        }
    }
    let mut slowest: Vec<OperationStats> = durations
        .into_iter()
        .map(|(name, (mut ms, errors))| {
            ms.sort_by(f64::total_cmp);
            let count = ms.len();
            let p95_index = ((count as f64 * 0.95).ceil() as usize).clamp(1, count) - 1;
            OperationStats {
                name,
                count,
                errors,
                avg_ms: ms.iter().sum::<f64>() / count as f64,
                p95_ms: ms[p95_index],
                max_ms: ms[count - 1],
            }
        })
        .collect();
    slowest.sort_by(|a, b| b.avg_ms.total_cmp(&a.avg_ms));
    slowest.truncate(top);
    Report {
        traces: traces.len(),
        error_traces,
        avg_trace_ms: if traces.is_empty() {
            0.0
        } else {
            total_ms / traces.len() as f64
        },
        slowest,
    }
}

/// The trace as an indented tree, children in start order.
pub fn tree(trace: &[Span]) -> String {
    let mut out = String::new();
    let ids: std::collections::HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<&Span> = trace
        .iter()
        .filter(|s| s.parent_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    roots.sort_by_key(|s| s.start_us);
    let origin = roots.first().map_or(0, |s| s.start_us);
    fn walk(out: &mut String, trace: &[Span], span: &Span, depth: usize, origin: u64) {
        out.push_str(&format!(
            "{:>9.1} ms {:>9.1} ms  {}{} [{}]{}\n",
            (span.start_us.saturating_sub(origin)) as f64 / 1000.0,
            span.duration_us as f64 / 1000.0,
            "  ".repeat(depth),
            span.operation,
            span.service,
            if span.error { "  ERROR" } else { "" }
        ));
        let mut children: Vec<&Span> = trace
            .iter()
            .filter(|c| c.parent_id.as_deref() == Some(span.span_id.as_str()))
            .collect();
        children.sort_by_key(|c| c.start_us);
        for child in children {
            walk(out, trace, child, depth + 1, origin);
        }
    }
    for root in roots {
        walk(&mut out, trace, root, 0, origin);
    }
    out
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach Jaeger at {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "Jaeger answered {status} for {url}: {}",
        body.chars().take(300).collect::<String>()
    );
    serde_json::from_str(&body).with_context(|| format!("Jaeger's answer to {url} is not JSON"))
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(args: TracesArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.jaeger.trim_end_matches('/');
    match args.command {
        TracesCommand::Services => {
            let body = get(&http, &format!("{base}/api/services")).await?;
            for s in body
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("{}", s.as_str().unwrap_or_default());
            }
        }
        TracesCommand::Report {
            service,
            lookback,
            limit,
            top,
        } => {
            let end = now_us();
            let start = end.saturating_sub(lookback.as_micros() as u64);
            let url = format!(
                "{base}/api/traces?service={}&start={start}&end={end}&limit={limit}",
                encode(&service)
            );
            let traces = parse_traces(&get(&http, &url).await?)?;
            let r = report(&traces, top);
            println!(
                "service {service}, last {}: {} traces, {} with errors ({:.1}%), average {:.1} ms",
                humantime(lookback),
                r.traces,
                r.error_traces,
                if r.traces == 0 {
                    0.0
                } else {
                    100.0 * r.error_traces as f64 / r.traces as f64
                },
                r.avg_trace_ms
            );
            if r.traces as u32 >= limit {
                println!("(the {limit}-trace limit was reached: raise --limit for a full count)");
            }
            println!("slowest operations (average, p95, max, count, errors):");
            for op in &r.slowest {
                println!(
                    "  {:<60} {:>9.1} ms {:>9.1} ms {:>9.1} ms {:>6} {:>5}",
                    op.name, op.avg_ms, op.p95_ms, op.max_ms, op.count, op.errors
                );
            }
        }
        TracesCommand::Execution {
            execution_id,
            service,
            lookback,
        } => {
            let end = now_us();
            let start = end.saturating_sub(lookback.as_micros() as u64);
            let tags = serde_json::json!({ "execution.id": execution_id }).to_string();
            let url = format!(
                "{base}/api/traces?service={}&tags={}&start={start}&end={end}&limit=20",
                encode(&service),
                encode(&tags)
            );
            let traces = parse_traces(&get(&http, &url).await?)?;
            let Some(trace) = traces.first() else {
                anyhow::bail!(
                    "no trace with execution.id={execution_id} in the last {} (sampled out, or older)",
                    humantime(lookback)
                );
            };
            println!("trace {}", trace[0].trace_id);
            print!("{}", tree(trace));
        }
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Percent-encodes a query value.
pub fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn canned() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/jaeger-traces.json")).unwrap()
    }

    #[test]
    fn report_over_the_documented_jaeger_format() {
        let traces = parse_traces(&canned()).unwrap();
        assert_eq!(traces.len(), 2);
        let r = report(&traces, 3);
        assert_eq!(r.traces, 2);
        assert_eq!(r.error_traces, 1, "the second trace's detection failed");
        // Trace 1 spans 120 ms, trace 2 spans 100 ms.
        assert!((r.avg_trace_ms - 110.0).abs() < 1e-9, "{r:?}");
        assert_eq!(
            r.slowest[0].name,
            "imageflow-backend-api POST /v1/executions"
        );
        let detect = r
            .slowest
            .iter()
            .find(|o| o.name == "step ai_detection")
            .unwrap();
        assert_eq!(detect.count, 2);
        assert_eq!(detect.errors, 1);
        assert!((detect.avg_ms - 60.0).abs() < 1e-9, "{detect:?}");
        assert!((detect.max_ms - 80.0).abs() < 1e-9);
    }

    #[test]
    fn an_execution_trace_prints_as_a_tree() {
        let traces = parse_traces(&canned()).unwrap();
        let text = tree(&traces[0]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("POST /v1/executions [imageflow-backend-api]"),
            "{text}"
        );
        assert!(lines[1].contains("  pipeline.execute"), "{text}");
        assert!(lines[2].contains("    step.execute"), "{text}");
        assert!(
            text.contains("imageflow.v1.AIDetectionService/DetectObjects [imageflow-ai-detect]")
        );
        let failed = tree(&traces[1]);
        assert!(
            failed
                .lines()
                .any(|l| l.contains("step.execute") && l.ends_with("ERROR")),
            "{failed}"
        );
    }

    #[test]
    fn jaeger_errors_and_garbage_are_reported() {
        let err = parse_traces(
            &serde_json::json!({"data": null, "errors": [{"code": 400, "msg": "bad service"}]}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad service"), "{err}");
        assert!(parse_traces(&serde_json::json!({"hello": 1})).is_err());
    }

    #[test]
    fn windows_and_encoding() {
        assert_eq!(parse_window("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_window("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_window("90").unwrap(), Duration::from_secs(90));
        assert!(parse_window("0m").is_err());
        assert!(parse_window("1w").is_err());
        assert_eq!(
            encode(r#"{"execution.id":"a b"}"#),
            "%7B%22execution.id%22%3A%22a%20b%22%7D"
        );
    }
}
