//! One `init()` per binary: structured JSON logs on stdout, one object per line,
//! with the service name and version on every line and the fields of the
//! enclosing spans (so an `execution_id` recorded on a request span shows up on
//! every log line written while serving it).
//!
//! `RUST_LOG` filters as usual (default `info`).

mod json;

use std::sync::OnceLock;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

pub use json::JsonLayer;

/// Keeps telemetry alive; call [`TelemetryGuard::shutdown`] as the last step of `main`.
#[derive(Debug)]
#[must_use = "dropping the guard early loses buffered telemetry"]
pub struct TelemetryGuard {
    _private: (),
}

impl TelemetryGuard {
    /// Flushes what is buffered. Logs are written synchronously today, so this
    /// only marks the end; exporters added later flush here.
    pub async fn shutdown(self) {
        tracing::debug!("telemetry shut down");
    }
}

/// Error from [`init`]: the only failure is a malformed `RUST_LOG`.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

static SERVICE: OnceLock<(String, &'static str)> = OnceLock::new();

/// Installs the global subscriber for `service` (e.g. `imageflow-resize`);
/// `OTEL_SERVICE_NAME` overrides the name, as for every OpenTelemetry SDK.
pub fn init(service: &str, version: &'static str) -> Result<TelemetryGuard, InitError> {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service.to_string());
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| InitError(format!("RUST_LOG: cannot parse {spec:?}: {e}")))?,
        _ => EnvFilter::new("info"),
    };
    let _ = SERVICE.set((name.clone(), version));
    tracing_subscriber::registry()
        .with(filter)
        .with(JsonLayer::new(name, version, std::io::stdout))
        .try_init()
        .map_err(|e| InitError(format!("a global log subscriber is already installed: {e}")))?;
    Ok(TelemetryGuard { _private: () })
}

/// The service name `init` settled on (after `OTEL_SERVICE_NAME`).
pub fn service_name() -> Option<&'static str> {
    SERVICE.get().map(|(name, _)| name.as_str())
}
