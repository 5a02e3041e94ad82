//! The backend's metrics in Prometheus text format, named so the design's
//! queries and alert rules work unchanged (`http_requests_total{code}`,
//! `pipeline_executions_total{status}`, ...).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BUCKETS.len()];
        }
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if v <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct State {
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    gauges: BTreeMap<&'static str, f64>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// Shared metric registry. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "http_requests_total",
        "counter",
        "HTTP requests by method, route and status code",
    ),
    (
        "http_request_duration_seconds",
        "histogram",
        "HTTP request latency by method and route",
    ),
    (
        "pipeline_executions_total",
        "counter",
        "finished pipeline executions by status",
    ),
    (
        "imageflow_pipeline_execution_duration_seconds",
        "histogram",
        "pipeline execution time (queueing excluded) by status",
    ),
    (
        "imageflow_step_executions_total",
        "counter",
        "finished pipeline steps by type and status",
    ),
    (
        "imageflow_step_duration_seconds",
        "histogram",
        "step time, retries included, by type",
    ),
    (
        "imageflow_grpc_client_errors_total",
        "counter",
        "failed calls to the services by service and gRPC code",
    ),
    (
        "imageflow_executions_running",
        "gauge",
        "executions running in this replica",
    ),
    (
        "imageflow_executions_queued",
        "gauge",
        "executions waiting for a slot in this replica",
    ),
    (
        "imageflow_execution_queue_wait_seconds",
        "histogram",
        "time executions waited for a slot",
    ),
];

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
    }

    fn inc(&self, name: &'static str, labels: Labels) {
        self.with(|s| {
            *s.counters
                .entry(name)
                .or_default()
                .entry(labels)
                .or_default() += 1.0;
        });
    }

    fn observe(&self, name: &'static str, labels: Labels, v: Duration) {
        self.with(|s| {
            s.histograms
                .entry(name)
                .or_default()
                .entry(labels)
                .or_default()
                .observe(v.as_secs_f64());
        });
    }

    fn add_gauge(&self, name: &'static str, delta: f64) {
        self.with(|s| *s.gauges.entry(name).or_default() += delta);
    }

    pub fn http_request(&self, method: &str, route: &str, code: u16, elapsed: Duration) {
        self.inc(
            "http_requests_total",
            vec![
                ("code", code.to_string()),
                ("method", method.to_string()),
                ("route", route.to_string()),
            ],
        );
        self.observe(
            "http_request_duration_seconds",
            vec![("method", method.to_string()), ("route", route.to_string())],
            elapsed,
        );
    }

    pub fn execution_started(&self) {
        self.add_gauge("imageflow_executions_running", 1.0);
    }

    /// `elapsed` is `None` for executions that ended without running here
    /// (cancelled while queued, reaped).
    pub fn execution_finished(&self, status: &str, elapsed: Option<Duration>) {
        self.inc(
            "pipeline_executions_total",
            vec![("status", status.to_string())],
        );
        if let Some(elapsed) = elapsed {
            self.add_gauge("imageflow_executions_running", -1.0);
            self.observe(
                "imageflow_pipeline_execution_duration_seconds",
                vec![("status", status.to_string())],
                elapsed,
            );
        }
    }

    pub fn step_finished(&self, step_type: &str, status: &str, elapsed: Duration) {
        self.inc(
            "imageflow_step_executions_total",
            vec![
                ("step_type", step_type.to_string()),
                ("status", status.to_string()),
            ],
        );
        self.observe(
            "imageflow_step_duration_seconds",
            vec![("step_type", step_type.to_string())],
            elapsed,
        );
    }

    pub fn call_failed(&self, service: &str, code: tonic::Code) {
        self.inc(
            "imageflow_grpc_client_errors_total",
            vec![
                ("service", service.to_string()),
                ("code", format!("{code:?}")),
            ],
        );
    }

    pub fn set_queued(&self, n: usize) {
        self.with(|s| {
            s.gauges.insert("imageflow_executions_queued", n as f64);
        });
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.observe("imageflow_execution_queue_wait_seconds", Vec::new(), waited);
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let Ok(state) = self.state.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for (labels, v) in state.counters.get(name).into_iter().flatten() {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                    }
                }
                "gauge" => {
                    let v = state.gauges.get(name).copied().unwrap_or(0.0);
                    let _ = writeln!(out, "{name} {v}");
                }
                _ => {
                    for (labels, h) in state.histograms.get(name).into_iter().flatten() {
                        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                            let c = h.counts.get(i).copied().unwrap_or(0);
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                fmt_labels(labels, Some(&bound.to_string()))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(labels, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                        let _ =
                            writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
                    }
                }
            }
        }
        out
    }
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_names_the_alert_rules_use() {
        let m = Metrics::new();
        m.http_request("GET", "/v1/executions/{id}", 200, Duration::from_millis(3));
        m.execution_started();
        m.execution_finished("completed", Some(Duration::from_millis(40)));
        m.step_finished("resize", "completed", Duration::from_millis(10));
        let text = m.render();
        assert!(text.contains(
            "http_requests_total{code=\"200\",method=\"GET\",route=\"/v1/executions/{id}\"} 1"
        ));
        assert!(text.contains("pipeline_executions_total{status=\"completed\"} 1"));
        assert!(text.contains(
            "imageflow_pipeline_execution_duration_seconds_bucket{status=\"completed\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "imageflow_pipeline_execution_duration_seconds_count{status=\"completed\"} 1"
        ));
        assert!(text.contains("imageflow_executions_running 0"));
        assert!(text.contains(
            "imageflow_step_executions_total{step_type=\"resize\",status=\"completed\"} 1"
        ));
    }
}
