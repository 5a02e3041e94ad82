//! A `tracing` layer that writes one JSON object per event.
//!
//! tracing-subscriber's own JSON formatter nests span fields under `spans`;
//! log search (Loki, `jq`) wants `execution_id` at the top level of every
//! line, so span fields are flattened here, innermost span winning.

use std::{fmt, io::Write, sync::Mutex};

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
        }
    }
}

/// Span fields, stored in the span's extensions when it is created.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
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
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
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
            // Root first, so inner spans overwrite outer ones.
            for span in scope.from_root() {
                span_name = Some(span.name());
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(name) = span_name {
                line.insert("span".into(), Value::String(name.to_string()));
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
}
