//! The backend's metrics in Prometheus text format, named so the design's
//! queries and alert rules work unchanged (`http_requests_total{code}`,
//! `pipeline_executions_total{status}`, ...).

use std::time::Duration;

use imageflow_telemetry::metrics::{Kind, Registry};

/// The backend's metrics. Cheap to clone; each backend has its own registry
/// (tests run several in one process), exported over OTLP next to the
/// process-wide one.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const HTTP_REQUESTS: &str = "HTTP requests by method, route and status code";
const HTTP_DURATION: &str = "HTTP request latency by method and route";
const EXECUTIONS: &str = "finished pipeline executions by status";
const EXECUTION_DURATION: &str = "pipeline execution time (queueing excluded) by status";
const STEPS: &str = "finished pipeline steps by type and status";
const STEP_DURATION: &str = "step time, retries included, by type";
const CLIENT_ERRORS: &str = "failed calls to the services by service and gRPC code";
const RUNNING: &str = "executions running in this replica";
const QUEUED: &str = "executions waiting for a slot in this replica";
const QUEUE_WAIT: &str = "time executions waited for a slot";

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Declared up front so dashboards and alert rules see zeros, not gaps.
        for (name, kind, help) in [
            ("http_requests_total", Kind::Counter, HTTP_REQUESTS),
            (
                "http_request_duration_seconds",
                Kind::Histogram,
                HTTP_DURATION,
            ),
            ("pipeline_executions_total", Kind::Counter, EXECUTIONS),
            (
                "imageflow_pipeline_execution_duration_seconds",
                Kind::Histogram,
                EXECUTION_DURATION,
            ),
            ("imageflow_step_executions_total", Kind::Counter, STEPS),
            (
                "imageflow_step_duration_seconds",
                Kind::Histogram,
                STEP_DURATION,
            ),
            (
                "imageflow_grpc_client_errors_total",
                Kind::Counter,
                CLIENT_ERRORS,
            ),
        ] {
            registry.describe(name, kind, help);
        }
        // Series that exist from the start: Prometheus' increase() cannot
        // see the first increment of a series that appears at 1.
        for status in ["completed", "failed", "cancelled"] {
            registry.add(
                "pipeline_executions_total",
                EXECUTIONS,
                &[("status", status)],
                0.0,
            );
        }
        registry.set_gauge("imageflow_executions_running", RUNNING, &[], 0.0);
        registry.set_gauge("imageflow_executions_queued", QUEUED, &[], 0.0);
        registry.export_over_otlp();
        Self { registry }
    }

    /// The registry, for parts of the backend that add their own series.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn http_request(&self, method: &str, route: &str, code: u16, elapsed: Duration) {
        let code = code.to_string();
        self.registry.inc(
            "http_requests_total",
            HTTP_REQUESTS,
            &[("code", &code), ("method", method), ("route", route)],
        );
        self.registry.observe(
            "http_request_duration_seconds",
            HTTP_DURATION,
            &[("method", method), ("route", route)],
            elapsed,
        );
    }

    pub fn execution_started(&self) {
        self.registry
            .add_gauge("imageflow_executions_running", RUNNING, &[], 1.0);
    }

    /// `elapsed` is `None` for executions that ended without running here
    /// (cancelled while queued, reaped).
    pub fn execution_finished(&self, status: &str, elapsed: Option<Duration>) {
        self.registry.inc(
            "pipeline_executions_total",
            EXECUTIONS,
            &[("status", status)],
        );
        if let Some(elapsed) = elapsed {
            self.registry
                .add_gauge("imageflow_executions_running", RUNNING, &[], -1.0);
            self.registry.observe(
                "imageflow_pipeline_execution_duration_seconds",
                EXECUTION_DURATION,
                &[("status", status)],
                elapsed,
            );
        }
    }

    pub fn step_finished(&self, step_type: &str, status: &str, elapsed: Duration) {
        self.registry.inc(
            "imageflow_step_executions_total",
            STEPS,
            &[("step_type", step_type), ("status", status)],
        );
        self.registry.observe(
            "imageflow_step_duration_seconds",
            STEP_DURATION,
            &[("step_type", step_type)],
            elapsed,
        );
    }

    pub fn call_failed(&self, service: &str, code: tonic::Code) {
        self.registry.inc(
            "imageflow_grpc_client_errors_total",
            CLIENT_ERRORS,
            &[("service", service), ("code", &format!("{code:?}"))],
        );
    }

    pub fn set_queued(&self, n: usize) {
        self.registry
            .set_gauge("imageflow_executions_queued", QUEUED, &[], n as f64);
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.registry.observe(
            "imageflow_execution_queue_wait_seconds",
            QUEUE_WAIT,
            &[],
            waited,
        );
    }

    /// Prometheus text: this backend's series, then the process-wide ones
    /// (storage operations, process RSS and CPU).
    pub fn render(&self) -> String {
        let mut text = self.registry.render();
        text.push_str(&imageflow_telemetry::metrics::render_global());
        text
    }
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
