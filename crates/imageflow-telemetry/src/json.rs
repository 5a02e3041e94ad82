//! A `tracing` layer that writes one JSON object per event.
//!
//! tracing-subscriber's own JSON formatter nests span fields under `spans`;
//! log search (Loki, `jq`) wants `execution_id` and `trace_id` at the top
//! level of every line, so span fields are flattened here, innermost span
//! winning, and the OpenTelemetry ids of the innermost span are added. Every
//! string goes through [`crate::mask`] on its way out.

use std::{
    fmt,
    io::Write,
    sync::{Mutex, OnceLock},
};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;

use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context, registry::LookupSpan};

/// Writes events as JSON lines to `W`.
pub struct JsonLayer<W> {
    service: String,
    version: &'static str,
    make_writer: W,
    // Serialises whole lines so concurrent events never interleave.
    lock: Mutex<()>,
    // Where the OpenTelemetry layer keeps span contexts; looked up through the
    // dispatcher because a layer cannot see another layer's span data.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> fmt::Debug for JsonLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLayer")
            .field("service", &self.service)
            .finish()
    }
}

impl<W> JsonLayer<W> {
    pub fn new(service: impl Into<String>, version: &'static str, make_writer: W) -> Self {
        Self {
            service: service.into(),
            version,
            make_writer,
            lock: Mutex::new(()),
            dispatch: OnceLock::new(),
        }
    }
}

/// Span fields, stored in the span's extensions when it is created.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn text(&mut self, field: &Field, value: &str) {
        let value = if crate::mask::is_secret_field(field.name()) {
            crate::mask::REDACTED.to_string()
        } else {
            crate::mask::mask(value).into_owned()
        };
        self.0
            .insert(field.name().to_string(), Value::String(value));
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, &value.to_string());
    }
}

impl<W> JsonLayer<W> {
    fn insert_trace_ids(&self, line: &mut Map<String, Value>, id: &span::Id) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
            line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut JsonVisitor(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let timestamp = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        line.insert("service".into(), Value::String(self.service.clone()));
        line.insert("version".into(), Value::String(self.version.to_string()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().to_string()),
        );
        if let Some(scope) = ctx.event_scope(event) {
            let mut span_name = None;
            let mut innermost = None;
            // Root first, so inner spans overwrite outer ones.
            for span in scope.from_root() {
                span_name = Some(span.name());
                innermost = Some(span.id());
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(name) = span_name {
                line.insert("span".into(), Value::String(name.to_string()));
            }
            if let Some(id) = innermost {
                self.insert_trace_ids(&mut line, &id);
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        for (k, v) in fields {
            line.insert(k, v);
        }
        let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) else {
            return;
        };
        text.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer = self.make_writer.make_writer();
        let _ = writer.write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{layer::SubscriberExt, registry};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn every_line_is_json_with_service_and_span_fields_flattened() {
        let buffer = Buffer::default();
        let subscriber = registry().with(JsonLayer::new("imageflow-test", "9.9.9", buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", execution_id = "exec-1", rpc = "Resize");
            let _enter = span.enter();
            let inner = tracing::info_span!("inner", rpc = "Inner");
            let _inner = inner.enter();
            tracing::warn!(width = 800u64, ok = true, "resized {}", "image");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["service"], "imageflow-test");
        assert_eq!(v["version"], "9.9.9");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "resized image");
        assert_eq!(v["execution_id"], "exec-1");
        assert_eq!(v["rpc"], "Inner", "the innermost span wins");
        assert_eq!(v["span"], "inner");
        assert_eq!(v["width"], 800);
        assert_eq!(v["ok"], true);
        assert!(v["timestamp"].as_str().unwrap().contains('T'));
    }

    #[test]
    fn lines_carry_the_opentelemetry_ids_and_mask_pii() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let subscriber = registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(JsonLayer::new("imageflow-test", "9.9.9", buffer.clone()));
        let mut expected = None;
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", execution_id = "exec-1");
            let _enter = span.enter();
            expected = crate::propagation::trace_id(&span);
            tracing::info!(
                api_token = "t0k3n",
                client = "198.51.100.7",
                "sent to bob@example.com"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let trace_id = expected.expect("the span has a trace id");
        assert_eq!(v["trace_id"], trace_id.as_str());
        assert_eq!(v["span_id"].as_str().unwrap().len(), 16);
        assert_eq!(v["execution_id"], "exec-1");
        assert_eq!(v["message"], "sent to b***@example.com");
        assert_eq!(v["api_token"], "[REDACTED]");
        assert_eq!(v["client"], "198.51.100.0");
    }
}
