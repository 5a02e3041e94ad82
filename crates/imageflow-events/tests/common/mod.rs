//! Shared by the integration tests: a tracing subscriber with an OpenTelemetry
//! layer (so spans have trace ids and `traceparent` is written), metric
//! reads, bounded receives.

#![allow(dead_code, clippy::unwrap_used)]

use std::{sync::OnceLock, time::Duration};

use imageflow_events::{Consumer, Received};
use imageflow_telemetry::metrics::{Registry, Value};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _};

/// Installs, once per test binary, a global subscriber whose spans carry
/// real trace context (always sampled, exported nowhere). Global rather than
/// per-thread: librdkafka logs from its own threads, and tracing caches
/// per-callsite interest across threads, so a thread-local subscriber in one
/// test would make spans disappear in another.
pub fn otel() {
    static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("imageflow-events-tests");
        // RUST_LOG=debug shows this crate's and librdkafka's logs in a
        // failing test's output.
        let logs = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(tracing_subscriber::EnvFilter::from_default_env());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(logs);
        tracing::subscriber::set_global_default(subscriber).unwrap();
        provider
    });
}

/// The value of counter `name` with exactly these labels (0 when absent).
pub fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    Registry::global()
        .snapshot()
        .into_iter()
        .filter(|family| family.name == name)
        .flat_map(|family| family.series.into_iter())
        .find(|(series, _)| {
            series.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| series.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map_or(0.0, |(_, value)| match value {
            Value::Number(n) => n,
            Value::Histogram(h) => h.count as f64,
        })
}

/// Polls `f` until it is true, panicking with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !f() {
        assert!(
            started.elapsed() < within,
            "{what} not true after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next message, or a panic after `within` (a group join on a fresh
/// broker takes a few seconds).
pub async fn recv_within(consumer: &Consumer, within: Duration) -> Received {
    match tokio::time::timeout(within, consumer.recv()).await {
        Ok(Ok(message)) => message,
        Ok(Err(err)) => panic!("recv failed: {err}"),
        Err(_) => panic!("no message within {within:?}"),
    }
}

/// Receives until a message arrives, skipping transient errors (a topic
/// recreated after a broker restart shows up as errors for a moment).
pub async fn recv_skipping_errors(consumer: &Consumer, within: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => return message,
            Ok(Err(err)) => eprintln!("transient recv error: {err}"),
            Err(_) => panic!("no message within {within:?}"),
        }
    }
}

pub const JOIN: Duration = Duration::from_secs(30);
