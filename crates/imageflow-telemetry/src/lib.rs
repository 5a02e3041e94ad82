//! One `init()` per binary, returning a guard that flushes on shutdown:
//!
//! * JSON logs on stdout, one object per line, with `service`, `version`,
//!   `trace_id`, `span_id`, the enclosing spans' fields (`execution_id`) and
//!   PII masked at the source ([`mask`]);
//! * OTLP/gRPC export of traces (through `tracing-opentelemetry`) and metrics
//!   ([`metrics`] registries) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with
//!   the design's resource attributes and a parent-based ratio sampler (10% by
//!   default); see [`settings`] for the variables;
//! * W3C propagation for HTTP, gRPC and Kafka ([`propagation`]), the server
//!   layer for gRPC ([`grpc_layer`]) and span helpers ([`spans`]).
//!
//! Trace ids exist even when nothing is exported, so log lines and execution
//! records can always be joined.

pub mod grpc_layer;
mod json;
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

/// Keeps telemetry alive; call [`TelemetryGuard::shutdown`] as the last step of `main`.
#[derive(Debug)]
#[must_use = "dropping the guard early loses buffered telemetry"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    metrics_stop: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl TelemetryGuard {
    /// Exports what is buffered (spans, a last metrics report) and stops the
    /// exporters; bounded, so a dead collector cannot hold up a shutdown.
    pub async fn shutdown(self) {
        if let Some((stop, task)) = self.metrics_stop {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let provider = self.provider;
        // The SDK's shutdown blocks on the export; keep it off the async
        // threads. Not CPU work, so not the blocking door's business.
        #[allow(clippy::disallowed_methods)]
        let flushed = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(err)) = flushed {
            tracing::warn!(error = %err, "telemetry: spans could not be flushed at shutdown");
        }
    }
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

/// Installs the global subscriber for `service` (e.g. `imageflow-resize`) from
/// the process environment. Must run inside a Tokio runtime (the exporters
/// live on it).
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
    let settings = Settings::from_env(env, service, version)?;
    let spec = imageflow_config::Env::new(env)
        .get("RUST_LOG")
        .unwrap_or(Settings::DEFAULT_LOG_FILTER);
    let filter = EnvFilter::try_new(spec)
        .map_err(|e| InitError(format!("RUST_LOG: cannot parse {spec:?}: {e}")))?;
    let attributes = settings.resource_attributes();
    let resource = Resource::builder_empty()
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
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

    let _ = SERVICE.set((settings.service_name.clone(), version));
    // RUST_LOG picks log lines only: traces keep their spans whatever the log
    // level (RUST_LOG=warn in production must not switch tracing off), and
    // log lines inside a span keep its fields and trace id.
    let log_filter = filter.or(filter_fn(|m| m.is_span()));
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
            JsonLayer::new(settings.service_name.clone(), version, writer).with_filter(log_filter),
        )
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
        sampler = ?settings.sampler,
        "telemetry started"
    );
    Ok(TelemetryGuard {
        provider,
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
