//! An OTLP/gRPC receiver inside the test process, built from the
//! `opentelemetry-proto` service definitions: binaries export traces, metrics
//! and logs to it exactly as they would to a collector, and tests assert on
//! what arrived.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
};
use tokio::{net::TcpListener, sync::oneshot};

/// One span as received, flattened for assertions (ids in lowercase hex).
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub resource: HashMap<String, String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// `opentelemetry.proto.trace.v1.Span.SpanKind` (2 server, 3 client).
    pub kind: i32,
    /// `Status.StatusCode` (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    pub status_message: String,
    pub attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One metric as received: its name, the service that sent it, and its data
/// points' attributes.
#[derive(Clone, Debug)]
pub struct ReceivedMetric {
    pub service: String,
    pub name: String,
    pub points: Vec<HashMap<String, String>>,
}

/// One log record as received (ids in lowercase hex, empty when the record
/// has none).
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    pub service: String,
    pub resource: HashMap<String, String>,
    pub severity_text: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub attributes: HashMap<String, String>,
}

impl ReceivedLog {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether `needle` is anywhere in the record: body, attribute keys and
    /// values, resource.
    pub fn contains(&self, needle: &str) -> bool {
        self.body.contains(needle)
            || [&self.attributes, &self.resource]
                .iter()
                .flat_map(|map| map.iter())
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    metrics: Mutex<Vec<ReceivedMetric>>,
    logs: Mutex<Vec<ReceivedLog>>,
}

fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Traces(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = attributes(
                rs.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let status = span.status.clone().unwrap_or_default();
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        resource: resource.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        status_code: status.code,
                        status_message: status.message,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.0.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Metrics(Arc<Store>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut received = Vec::new();
        for rm in request.into_inner().resource_metrics {
            let resource = attributes(
                rm.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for sm in rm.scope_metrics {
                for metric in sm.metrics {
                    let points = match &metric.data {
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        _ => Vec::new(),
                    };
                    received.push(ReceivedMetric {
                        service: service.clone(),
                        name: metric.name,
                        points,
                    });
                }
            }
        }
        self.0.metrics.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

struct Logs(Arc<Store>);

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rl in request.into_inner().resource_logs {
            let resource = attributes(
                rl.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for sl in rl.scope_logs {
                for record in sl.log_records {
                    received.push(ReceivedLog {
                        service: service.clone(),
                        resource: resource.clone(),
                        severity_text: record.severity_text,
                        body: value_text(record.body.as_ref()),
                        trace_id: hex(&record.trace_id),
                        span_id: hex(&record.span_id),
                        attributes: attributes(&record.attributes),
                    });
                }
            }
        }
        self.0.logs.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    store: Arc<Store>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("addr", &self.addr)
            .finish()
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Store::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Traces(store.clone())))
            .add_service(MetricsServiceServer::new(Metrics(store.clone())))
            .add_service(LogsServiceServer::new(Logs(store.clone())))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(server);
        Self {
            addr,
            store,
            _stop: stop,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the binaries under test.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        self.store.metrics.lock().unwrap().clone()
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.store.logs.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the log records received so far.
    pub async fn wait_for_logs(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if done(&logs) {
                return logs;
            }
            if Instant::now() > deadline {
                let lines: Vec<String> = logs
                    .iter()
                    .map(|l| format!("{} {} {:?}", l.service, l.trace_id, l.body))
                    .collect();
                panic!("log records did not arrive within {timeout:?}; got {lines:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `done` holds for the spans received so far (exporters
    /// batch), panicking with what arrived after `timeout`.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} {} {}", s.service, s.name, s.trace_id))
                    .collect();
                panic!("spans did not arrive within {timeout:?}; got {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `done` holds for the metrics received so far.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedMetric]) -> bool,
    ) -> Vec<ReceivedMetric> {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics();
            if done(&metrics) {
                return metrics;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = metrics
                    .iter()
                    .map(|m| format!("{} {}", m.service, m.name))
                    .collect();
                panic!("metrics did not arrive within {timeout:?}; got {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
