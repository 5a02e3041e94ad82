//! `init` as a binary calls it (one global subscriber per process, hence a
//! file of its own): RUST_LOG chooses log lines, never whether spans exist.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
};

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

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn rust_log_warn_keeps_spans_and_their_fields_on_the_lines_it_lets_through() {
    let buffer = Buffer::default();
    let env = HashMap::from([
        ("RUST_LOG".to_string(), "warn".to_string()),
        ("OTEL_TRACES_SAMPLER".to_string(), "always_on".to_string()),
    ]);
    let guard =
        imageflow_telemetry::init_with(&env, "imageflow-test", "1.0.0", buffer.clone()).unwrap();
    let span = tracing::info_span!("request", execution_id = "exec-7");
    let trace_id = imageflow_telemetry::propagation::trace_id(&span)
        .expect("an info span exists for tracing although RUST_LOG=warn");
    span.in_scope(|| {
        tracing::info!("filtered out by RUST_LOG=warn");
        tracing::warn!("kept");
    });
    guard.shutdown().await;
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!text.contains("filtered out"), "{text}");
    let kept = lines.iter().find(|l| l["message"] == "kept").expect(&text);
    assert_eq!(kept["trace_id"], trace_id.as_str());
    assert_eq!(kept["execution_id"], "exec-7");
    assert_eq!(kept["level"], "warn");
}
