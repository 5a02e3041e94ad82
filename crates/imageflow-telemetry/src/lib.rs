//! One `init()` per binary, returning a guard that flushes on shutdown:
//!
//! * JSON logs on stdout, one object per line, with `service`, `version`,
//!   `trace_id`, `span_id`, the enclosing spans' fields (`execution_id`) and
//!   PII masked at the source ([`mask`]);
//! * OTLP/gRPC export of traces (through `tracing-opentelemetry`), metrics
//!   ([`metrics`] registries) and log records ([`logs`]: the same events as
//!   the JSON lines, masked the same way, with their trace and span ids) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with the design's resource
//!   attributes (`service.version` is the source revision, [`REVISION`]) and
//!   a parent-based ratio sampler (10% by default); see [`settings`] for the
//!   variables;
//! * W3C propagation for HTTP, gRPC and Kafka ([`propagation`]), the server
//!   layer for gRPC ([`grpc_layer`]) and span helpers ([`spans`]).
//!
//! Trace ids exist even when nothing is exported, so log lines and execution
//! records can always be joined.

pub mod grpc_layer;
mod json;
pub mod logs;
pub mod mask;
pub mod metrics;
pub mod otlp_metrics;
pub mod propagation;
pub mod settings;
pub mod spans;

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    logs::SdkLoggerProvider,
    trace::{Sampler, SdkTracerProvider},
};
use tokio::sync::watch;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{FilterExt, filter_fn},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

pub use grpc_layer::GrpcServerLayer;
pub use json::JsonLayer;
pub use settings::{SamplerSetting, Settings};

/// The source revision this build was made from: `GIT_REVISION` at build
/// time (image builds), else the checkout's `git rev-parse --short=12 HEAD`,
/// else the crate version (see `build.rs`). It is `service.version`.
pub const REVISION: &str = env!("IMAGEFLOW_GIT_REVISION");

/// Keeps telemetry alive; call [`TelemetryGuard::shutdown`] as the last step of `main`.
#[derive(Debug)]
#[must_use = "dropping the guard early loses buffered telemetry"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    logs: Option<SdkLoggerProvider>,
    metrics_stop: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl TelemetryGuard {
    /// Exports what is buffered (spans, a last metrics report, log records)
    /// and stops the exporters; bounded, so a dead collector cannot hold up a
    /// shutdown. Logs go last: what the other steps log on the way out is
    /// exported too.
    pub async fn shutdown(self) {
        if let Some((stop, task)) = self.metrics_stop {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let provider = self.provider;
        let flushed = off_the_runtime(move || provider.shutdown_with_timeout(EXPORT_AT_EXIT)).await;
        if let Err(err) = flushed {
            tracing::warn!(error = %err, "telemetry: spans could not be flushed at shutdown");
        }
        if let Some(logs) = self.logs {
            let flushed = off_the_runtime(move || logs.shutdown_with_timeout(EXPORT_AT_EXIT)).await;
            if let Err(err) = flushed {
                // Stdout is the only way left to say it.
                tracing::warn!(error = %err, "telemetry: log records could not be flushed at shutdown");
            }
        }
    }
}

/// How long each exporter may take to send what it holds at shutdown.
const EXPORT_AT_EXIT: Duration = Duration::from_secs(5);

/// The SDK's shutdown blocks on the export; keep it off the async threads.
/// Not CPU work, so not the blocking door's business.
async fn off_the_runtime(
    shutdown: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) -> opentelemetry_sdk::error::OTelSdkResult {
    #[allow(clippy::disallowed_methods)]
    let joined = tokio::task::spawn_blocking(shutdown).await;
    // A panicked shutdown has nothing left to flush either.
    joined.unwrap_or(Ok(()))
}

/// Error from [`init`]: a setting that cannot be used, named.
#[derive(Debug)]
pub struct InitError(pub(crate) String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

static SERVICE: OnceLock<(String, &'static str)> = OnceLock::new();

/// Installs the global subscriber for `service` (e.g. `imageflow-resize`,
/// release `version`) from the process environment. Must run inside a Tokio
/// runtime (the exporters live on it).
pub fn init(service: &str, version: &'static str) -> Result<TelemetryGuard, InitError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    init_with(&env, service, version, std::io::stdout)
}

/// [`init`] with an explicit environment and log writer (tests).
pub fn init_with<W>(
    env: &HashMap<String, String>,
    service: &str,
    version: &'static str,
    writer: W,
) -> Result<TelemetryGuard, InitError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let settings = Settings::from_env(env, service, version, REVISION)?;
    let spec = imageflow_config::Env::new(env)
        .get("RUST_LOG")
        .unwrap_or(Settings::DEFAULT_LOG_FILTER);
    let log_filter = || {
        EnvFilter::try_new(spec)
            .map_err(|e| InitError(format!("RUST_LOG: cannot parse {spec:?}: {e}")))
    };
    let filter = log_filter()?;
    let attributes = settings.resource_attributes();
    let resource = Resource::builder_empty()
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(sampler(settings.sampler));
    if let Some(endpoint) = &settings.endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|e| InitError(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("imageflow");
    let logs = match &settings.endpoint {
        Some(endpoint) if settings.push_logs => {
            let exporter = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(settings.export_timeout)
                .build()
                .map_err(|e| InitError(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))?;
            Some(
                SdkLoggerProvider::builder()
                    .with_resource(resource)
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        _ => None,
    };
    // The same RUST_LOG as the JSON lines, less the exporter's own transport.
    let export_filter = log_filter()?.and(filter_fn(|m| !logs::is_transport(m.target())));
    let logs_layer = logs
        .as_ref()
        .map(|provider| logs::bridge(provider).with_filter(export_filter));

    let _ = SERVICE.set((settings.service_name.clone(), version));
    // RUST_LOG picks log lines only: traces keep their spans whatever the log
    // level (RUST_LOG=warn in production must not switch tracing off), and
    // log lines inside a span keep its fields and trace id.
    let json_filter = filter.or(filter_fn(|m| m.is_span()));
    let trace_filter = filter_fn(|m| {
        if m.is_span() {
            *m.level() <= tracing::Level::INFO
        } else {
            *m.level() <= tracing::Level::WARN
        }
    });
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_error_records_to_exceptions(true)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(trace_filter),
        )
        .with(
            JsonLayer::new(settings.service_name.clone(), REVISION, writer)
                .with_filter(json_filter),
        )
        .with(logs_layer)
        .try_init()
        .map_err(|e| InitError(format!("a global log subscriber is already installed: {e}")))?;

    let metrics_stop = settings
        .endpoint
        .as_ref()
        .filter(|_| settings.push_metrics)
        .map(|endpoint| {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(otlp_metrics::run(
                endpoint.clone(),
                attributes.clone(),
                settings.metric_interval,
                settings.export_timeout,
                rx,
            ));
            (tx, task)
        });
    tracing::info!(
        otlp_endpoint = settings.endpoint.as_deref().unwrap_or("off"),
        otlp_metrics = settings.endpoint.is_some() && settings.push_metrics,
        otlp_logs = logs.is_some(),
        sampler = ?settings.sampler,
        revision = REVISION,
        "telemetry started"
    );
    Ok(TelemetryGuard {
        provider,
        logs,
        metrics_stop,
    })
}

fn sampler(setting: SamplerSetting) -> Sampler {
    match setting {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerSetting::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerSetting::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerSetting::ParentBasedRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// The service name `init` settled on (after `OTEL_SERVICE_NAME`).
pub fn service_name() -> Option<&'static str> {
    SERVICE.get().map(|(name, _)| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_is_the_checkouts_head_or_what_the_build_was_given() {
        assert!(
            !REVISION.is_empty()
                && REVISION.len() <= 64
                && REVISION
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "{REVISION:?}"
        );
        let head = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        match (
            option_env!("GIT_REVISION").filter(|r| !r.trim().is_empty()),
            head,
        ) {
            (Some(given), _) => assert_eq!(REVISION, given.trim()),
            (None, Some(head)) => assert_eq!(REVISION, head, "built from another commit?"),
            (None, None) => assert_eq!(REVISION, env!("CARGO_PKG_VERSION")),
        }
    }
}
