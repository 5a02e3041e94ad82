//! The backend's metrics in Prometheus text or OpenMetrics format, named so
//! the design's queries and alert rules work unchanged
//! (`http_requests_total{code}`, `pipeline_executions_total{status}`, ...).
//! The latency histograms observed inside a sampled span (HTTP requests,
//! steps, executions) carry its trace id as an exemplar in OpenMetrics.

use std::time::Duration;

use imageflow_telemetry::metrics::{CounterVec, Format, GaugeVec, HistogramVec, Registry};

/// The backend's metrics. Cheap to clone; each backend has its own registry
/// (tests run several in one process), exported over OTLP next to the
/// process-wide one. Each family is held as a handle, so recording finds its
/// series without a lookup by name nor a copy of the label values.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: CounterVec,
    http_duration: HistogramVec,
    executions: CounterVec,
    execution_duration: HistogramVec,
    inputs: CounterVec,
    steps: CounterVec,
    step_duration: HistogramVec,
    client_errors: CounterVec,
    running: GaugeVec,
    queued: GaugeVec,
    queue_wait: HistogramVec,
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
const INPUTS: &str = "finished runs of one input of an execution by status (an execution with \
     several inputs counts each; the input index is on the trace and the events, a label \
     would be unbounded)";
const STEPS: &str = "finished pipeline steps by type and status";
const STEP_DURATION: &str = "step time, retries included, by type";
const CLIENT_ERRORS: &str = "failed calls to the services by service and gRPC code";
const RUNNING: &str = "executions running in this replica";
const QUEUED: &str = "executions waiting for a slot in this replica";
const QUEUE_WAIT: &str = "time executions waited for a slot";

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Created up front so dashboards and alert rules see zeros, not gaps.
        let metrics = Self {
            http_requests: registry.counter_vec(
                "http_requests_total",
                HTTP_REQUESTS,
                &["code", "method", "route"],
            ),
            http_duration: registry.histogram_vec(
                "http_request_duration_seconds",
                HTTP_DURATION,
                &["method", "route"],
            ),
            executions: registry.counter_vec("pipeline_executions_total", EXECUTIONS, &["status"]),
            execution_duration: registry.histogram_vec(
                "imageflow_pipeline_execution_duration_seconds",
                EXECUTION_DURATION,
                &["status"],
            ),
            inputs: registry.counter_vec("imageflow_execution_inputs_total", INPUTS, &["status"]),
            steps: registry.counter_vec(
                "imageflow_step_executions_total",
                STEPS,
                &["step_type", "status"],
            ),
            step_duration: registry.histogram_vec(
                "imageflow_step_duration_seconds",
                STEP_DURATION,
                &["step_type"],
            ),
            client_errors: registry.counter_vec(
                "imageflow_grpc_client_errors_total",
                CLIENT_ERRORS,
                &["service", "code"],
            ),
            running: registry.gauge_vec("imageflow_executions_running", RUNNING, &[]),
            queued: registry.gauge_vec("imageflow_executions_queued", QUEUED, &[]),
            queue_wait: registry.histogram_vec(
                "imageflow_execution_queue_wait_seconds",
                QUEUE_WAIT,
                &[],
            ),
            registry,
        };
        // Series that exist from the start: Prometheus' increase() cannot
        // see the first increment of a series that appears at 1.
        for status in ["completed", "failed", "cancelled"] {
            metrics.executions.inc_by(&[status], 0);
        }
        metrics.running.set(&[], 0);
        metrics.queued.set(&[], 0);
        metrics.registry.export_over_otlp();
        metrics
    }

    /// The registry, for parts of the backend that add their own series.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn http_request(&self, method: &str, route: &str, code: u16, elapsed: Duration) {
        // The status code's digits without formatting a string per request.
        let status = http::StatusCode::from_u16(code).ok();
        let code = status.as_ref().map_or("000", http::StatusCode::as_str);
        self.http_requests.inc(&[code, method, route]);
        self.http_duration.observe(&[method, route], elapsed);
    }

    pub fn execution_started(&self) {
        self.running.add(&[], 1);
    }

    /// `elapsed` is `None` for executions that ended without running here
    /// (cancelled while queued, reaped).
    pub fn execution_finished(&self, status: &str, elapsed: Option<Duration>) {
        self.executions.inc(&[status]);
        if let Some(elapsed) = elapsed {
            self.running.add(&[], -1);
            self.execution_duration.observe(&[status], elapsed);
        }
    }

    pub fn input_finished(&self, status: &str) {
        self.inputs.inc(&[status]);
    }

    pub fn step_finished(&self, step_type: &str, status: &str, elapsed: Duration) {
        self.steps.inc(&[step_type, status]);
        self.step_duration.observe(&[step_type], elapsed);
    }

    pub fn call_failed(&self, service: &str, code: tonic::Code) {
        self.client_errors.inc(&[service, &format!("{code:?}")]);
    }

    pub fn set_queued(&self, n: usize) {
        self.queued.set(&[], i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(&[], waited);
    }

    /// Prometheus text: this backend's series, then the process-wide ones
    /// (storage operations, process RSS and CPU).
    pub fn render(&self) -> String {
        self.exposition(Format::Prometheus)
    }

    /// [`Metrics::render`] in `format`, which `/metrics` takes from the
    /// request's `Accept` ([`Format::negotiate`]): Prometheus asks for
    /// OpenMetrics, the only one with exemplars.
    pub fn exposition(&self, format: Format) -> String {
        self.registry.exposition(format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_holds_the_backends_and_the_process_series_once() {
        let m = Metrics::new();
        m.step_finished("resize", "completed", Duration::from_millis(10));
        let text = m.exposition(Format::OpenMetrics);
        assert!(
            text.contains("# TYPE pipeline_executions counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "imageflow_step_duration_seconds_bucket{le=\"0.01\",step_type=\"resize\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert_eq!(text.matches("# EOF\n").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn renders_the_names_the_alert_rules_use() {
        let m = Metrics::new();
        m.http_request("GET", "/v1/executions/{id}", 200, Duration::from_millis(3));
        m.execution_started();
        m.execution_finished("completed", Some(Duration::from_millis(40)));
        m.step_finished("resize", "completed", Duration::from_millis(10));
        m.input_finished("failed");
        let text = m.render();
        assert!(text.contains("imageflow_execution_inputs_total{status=\"failed\"} 1\n"));
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
        assert!(text.contains("pipeline_executions_total{status=\"cancelled\"} 0\n"));
        m.call_failed("resize", tonic::Code::Unavailable);
        assert!(m.render().contains(
            "imageflow_grpc_client_errors_total{service=\"resize\",code=\"Unavailable\"} 1\n"
        ));
        assert!(text.contains(
            "imageflow_step_executions_total{step_type=\"resize\",status=\"completed\"} 1"
        ));
    }
}
