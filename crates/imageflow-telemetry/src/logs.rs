//! Log records over OTLP: `tracing` events go through the OpenTelemetry
//! bridge (`opentelemetry-appender-tracing`) to a batching OTLP exporter,
//! with the resource, endpoint and filter of the JSON lines on stdout.
//!
//! * Masking happens before a record exists: the bridge writes into a
//!   [`MaskedRecord`], whose body and attributes pass through [`crate::mask`]
//!   as the bridge sets them, the same rules as the JSON lines. The SDK's
//!   record cannot have an attribute replaced once added, so a processor
//!   further down could only add, never redact.
//! * Trace and span ids: the SDK logger takes them from the current
//!   OpenTelemetry context, which `tracing-opentelemetry` makes the entered
//!   span's (its context activation, on by default).
//! * Span fields that identify the work ([`SPAN_FIELDS`]) are copied onto the
//!   record, so `execution_id` is an attribute of every line inside an
//!   execution, as it is a key of every JSON line.

use std::borrow::Cow;

use opentelemetry::{
    InstrumentationScope, Key,
    logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity},
    trace::{SpanId, TraceFlags, TraceId},
};
use opentelemetry_appender_tracing::layer::{OpenTelemetryTracingBridge, TracingSpanAttributes};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger, SdkLoggerProvider};

use crate::mask;

/// Span fields copied onto the log records of events inside the span.
pub const SPAN_FIELDS: &[&str] = &[
    "execution_id",
    "execution.id",
    "pipeline.id",
    "step.id",
    "step.type",
    "input.index",
];

/// Targets whose events never become OTLP records: the exporter's own
/// transport. Exporting them would export the export (a debug `RUST_LOG`
/// would keep the pipe busy with its own h2 frames); they stay on stdout.
const TRANSPORT_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
];

/// True for events of the exporter's own transport (see [`TRANSPORT_TARGETS`]).
pub fn is_transport(target: &str) -> bool {
    TRANSPORT_TARGETS.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The bridge layer writing into `provider` through the masking logger.
pub fn bridge(
    provider: &SdkLoggerProvider,
) -> OpenTelemetryTracingBridge<MaskingProvider, MaskingLogger> {
    OpenTelemetryTracingBridge::builder(&MaskingProvider(provider.clone()))
        .with_tracing_span_attributes(TracingSpanAttributes::allowlist(
            SPAN_FIELDS.iter().copied(),
        ))
        .build()
}

/// An [`SdkLoggerProvider`] whose loggers mask what they are given.
#[derive(Clone, Debug)]
pub struct MaskingProvider(pub SdkLoggerProvider);

impl LoggerProvider for MaskingProvider {
    type Logger = MaskingLogger;

    fn logger_with_scope(&self, scope: InstrumentationScope) -> Self::Logger {
        MaskingLogger(self.0.logger_with_scope(scope))
    }
}

#[derive(Debug)]
pub struct MaskingLogger(SdkLogger);

impl Logger for MaskingLogger {
    type LogRecord = MaskedRecord;

    fn create_log_record(&self) -> Self::LogRecord {
        MaskedRecord(self.0.create_log_record())
    }

    fn emit(&self, record: Self::LogRecord) {
        self.0.emit(record.0);
    }

    fn event_enabled(&self, level: Severity, target: &str, name: Option<&str>) -> bool {
        self.0.event_enabled(level, target, name)
    }
}

/// A record whose body and attribute values are masked as they are set.
#[derive(Debug)]
pub struct MaskedRecord(SdkLogRecord);

impl MaskedRecord {
    pub fn inner(&self) -> &SdkLogRecord {
        &self.0
    }
}

fn masked(value: AnyValue) -> AnyValue {
    match value {
        AnyValue::String(text) => match mask::mask(text.as_str()) {
            Cow::Borrowed(_) => AnyValue::String(text),
            Cow::Owned(masked) => AnyValue::from(masked),
        },
        AnyValue::ListAny(list) => {
            AnyValue::ListAny(Box::new(list.into_iter().map(masked).collect()))
        }
        AnyValue::Map(map) => AnyValue::Map(Box::new(
            map.into_iter()
                .map(|(key, value)| {
                    let value = masked_attribute(&key, value);
                    (key, value)
                })
                .collect(),
        )),
        other => other,
    }
}

fn masked_attribute(key: &Key, value: AnyValue) -> AnyValue {
    if mask::is_secret_field(key.as_str()) {
        AnyValue::from(mask::REDACTED)
    } else {
        masked(value)
    }
}

impl LogRecord for MaskedRecord {
    fn set_event_name(&mut self, name: &'static str) {
        self.0.set_event_name(name);
    }

    fn set_target<T>(&mut self, target: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.0.set_target(target);
    }

    fn set_timestamp(&mut self, timestamp: std::time::SystemTime) {
        self.0.set_timestamp(timestamp);
    }

    fn set_observed_timestamp(&mut self, timestamp: std::time::SystemTime) {
        self.0.set_observed_timestamp(timestamp);
    }

    fn set_severity_text(&mut self, text: &'static str) {
        self.0.set_severity_text(text);
    }

    fn set_severity_number(&mut self, number: Severity) {
        self.0.set_severity_number(number);
    }

    fn set_body(&mut self, body: AnyValue) {
        self.0.set_body(masked(body));
    }

    fn add_attributes<I, K, V>(&mut self, attributes: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Key>,
        V: Into<AnyValue>,
    {
        for (key, value) in attributes {
            self.add_attribute(key, value);
        }
    }

    fn add_attribute<K, V>(&mut self, key: K, value: V)
    where
        K: Into<Key>,
        V: Into<AnyValue>,
    {
        let key = key.into();
        let value = masked_attribute(&key, value.into());
        self.0.add_attribute(key, value);
    }

    fn set_trace_context(
        &mut self,
        trace_id: TraceId,
        span_id: SpanId,
        trace_flags: Option<TraceFlags>,
    ) {
        self.0.set_trace_context(trace_id, span_id, trace_flags);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        logs::{LogBatch, LogExporter},
    };
    use tracing_subscriber::{layer::SubscriberExt, registry};

    use super::*;

    /// Keeps what it is given (the SDK's in-memory exporter needs its
    /// `testing` feature, which would rebuild the SDK for every test build).
    #[derive(Clone, Debug, Default)]
    struct Captured(Arc<Mutex<Vec<SdkLogRecord>>>);

    impl LogExporter for Captured {
        async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
            let mut records = self.0.lock().unwrap();
            records.extend(batch.iter().map(|(record, _)| record.clone()));
            Ok(())
        }
    }

    fn provider() -> (SdkLoggerProvider, Captured) {
        let captured = Captured::default();
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(captured.clone())
            .build();
        (provider, captured)
    }

    fn text(value: Option<&AnyValue>) -> String {
        match value {
            Some(AnyValue::String(s)) => s.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }

    #[test]
    fn records_are_masked_and_carry_the_span_ids_and_fields() {
        let (logs, exporter) = provider();
        let traces = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = registry()
            .with(tracing_opentelemetry::layer().with_tracer(traces.tracer("test")))
            .with(bridge(&logs));
        let mut expected = None;
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", execution_id = "exec-9", rpc = "Resize");
            let _entered = span.enter();
            expected = crate::propagation::trace_id(&span);
            let err = std::io::Error::other("upload for carol@example.org refused");
            tracing::warn!(
                api_token = "t0k3n-secret",
                client = "198.51.100.7",
                header = "Authorization: Bearer abc.def.ghi",
                error = &err as &dyn std::error::Error,
                "sent to bob@example.com with password=hunter2"
            );
        });
        let records = exporter.0.lock().unwrap().clone();
        assert_eq!(records.len(), 1);
        let record = &records[0];

        assert_eq!(
            text(record.body()),
            "sent to b***@example.com with password=[REDACTED]"
        );
        let attributes: HashMap<&str, String> = record
            .attributes_iter()
            .map(|(k, v)| (k.as_str(), text(Some(v))))
            .collect();
        assert_eq!(attributes["api_token"], mask::REDACTED);
        assert_eq!(attributes["client"], "198.51.100.0");
        assert_eq!(attributes["header"], "Authorization: [REDACTED]");
        assert_eq!(
            attributes["exception.message"],
            "upload for c***@example.org refused"
        );
        assert_eq!(attributes["execution_id"], "exec-9", "{attributes:?}");
        assert!(
            !attributes.contains_key("rpc"),
            "only the listed span fields"
        );
        let all = format!("{record:?}");
        for secret in ["t0k3n-secret", "hunter2", "abc.def.ghi", "bob@", "carol@"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }

        let trace = record
            .trace_context()
            .expect("the record has a trace context");
        assert_eq!(
            Some(trace.trace_id.to_string()),
            expected,
            "the trace id of the span it was emitted in"
        );
        assert_ne!(trace.span_id, SpanId::INVALID);
    }

    #[test]
    fn outside_any_span_a_record_has_no_trace_context() {
        let (logs, exporter) = provider();
        let subscriber = registry().with(bridge(&logs));
        tracing::subscriber::with_default(subscriber, || tracing::info!("started"));
        let records = exporter.0.lock().unwrap().clone();
        assert_eq!(text(records[0].body()), "started");
        assert!(records[0].trace_context().is_none());
    }

    #[test]
    fn nested_values_are_masked_too() {
        let key = Key::new("details");
        let value = AnyValue::Map(Box::new(HashMap::from([
            (Key::new("password"), AnyValue::from("pw")),
            (Key::new("note"), AnyValue::from("mail dave@example.net")),
        ])));
        let AnyValue::Map(map) = masked_attribute(&key, value) else {
            panic!("still a map")
        };
        assert_eq!(map[&Key::new("password")], AnyValue::from(mask::REDACTED));
        assert_eq!(
            map[&Key::new("note")],
            AnyValue::from("mail d***@example.net")
        );
    }

    #[test]
    fn the_exporters_transport_is_not_exported() {
        for target in ["h2", "h2::codec", "hyper_util::client", "tonic::transport"] {
            assert!(is_transport(target), "{target}");
        }
        for target in [
            "backend_api::engine",
            "h2o",
            "tonic_health_ext",
            "imageflow_service",
        ] {
            assert!(!is_transport(target), "{target}");
        }
    }
}
