//! Settings shared by every gRPC service, read from an env map so tests need not
//! touch the process environment. Each setting is declared once in [`SETTINGS`],
//! which also feeds `--help`.

use std::{collections::HashMap, net::SocketAddr, ops::Bound, time::Duration};

pub use imageflow_config::{ConfigError, Setting};
use imageflow_config::{Env, Unit};
use imageflow_imaging::Limits;
use imageflow_storage::{StorageConfig, StoreOptions};

/// What differs between services: their name and their limits (see each binary's `DEFAULTS`).
#[derive(Clone, Copy, Debug)]
pub struct ServiceDefaults {
    /// Binary name, as in `resize-svc --version`.
    pub binary: &'static str,
    /// OpenTelemetry `service.name`, e.g. `imageflow-resize`.
    pub service_name: &'static str,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
}

const GRPC_LISTEN_ADDR: Setting = Setting::new(
    "GRPC_LISTEN_ADDR",
    "0.0.0.0:9090",
    "address the gRPC server binds",
);
const MAX_CONCURRENT_REQUESTS: Setting = Setting::described(
    "MAX_CONCURRENT_REQUESTS",
    "per service",
    "requests served at once; more get RESOURCE_EXHAUSTED with retry-after-ms",
);
const REQUEST_TIMEOUT_SECONDS: Setting = Setting::described(
    "REQUEST_TIMEOUT_SECONDS",
    "per service",
    "upper bound on one request; a shorter grpc-timeout from the caller wins",
);
const GRPC_MAX_MESSAGE_BYTES: Setting = Setting::new(
    "GRPC_MAX_MESSAGE_BYTES",
    "67108864",
    "largest gRPC message accepted or sent",
);
/// Shared with backend-api, whose running executions drain as long.
pub const SHUTDOWN_GRACE_SECONDS: Setting = Setting::new(
    "SHUTDOWN_GRACE_SECONDS",
    "20",
    "how long in-flight requests (and the backend's running executions) may drain after SIGTERM",
);

/// `SHUTDOWN_GRACE_SECONDS`: 0 to 3600 s, fractions allowed.
pub fn shutdown_grace(env: Env<'_>) -> Result<Duration, ConfigError> {
    env.duration::<f64>(&SHUTDOWN_GRACE_SECONDS, Unit::Seconds, 0.0..=3600.0)
}

/// Every variable a service reads itself; `--help` adds those of the crates
/// it reads through (storage, Kafka, telemetry).
pub const SETTINGS: &[Setting] = &[
    GRPC_LISTEN_ADDR,
    Setting::described(
        "METRICS_LISTEN_ADDR",
        "unset (no metrics listener)",
        "address of the Prometheus /metrics endpoint, e.g. 0.0.0.0:9464",
    ),
    Setting::described(
        "GRPC_TLS_CERT / GRPC_TLS_KEY",
        "unset (plaintext gRPC)",
        "PEM files of this service's certificate (chain) and private key; set both to serve TLS only",
    ),
    Setting::described(
        "GRPC_TLS_CLIENT_CA",
        "unset (callers need no certificate)",
        "PEM file of the CA that must have signed every caller's certificate (mutual TLS); needs GRPC_TLS_CERT",
    ),
    Setting::described(
        "GRPC_HEALTH_LISTEN_ADDR",
        "unset (health only on GRPC_LISTEN_ADDR)",
        "extra plaintext listener serving only grpc.health.v1, for Kubernetes gRPC probes (they cannot present a client certificate)",
    ),
    MAX_CONCURRENT_REQUESTS,
    REQUEST_TIMEOUT_SECONDS,
    Setting::described(
        "CPU_WORKERS",
        "number of CPUs",
        "image decode/encode/inference jobs run at once (the blocking door)",
    ),
    GRPC_MAX_MESSAGE_BYTES,
    Setting::described(
        "MAX_IMAGE_BYTES",
        "the imaging crate's limit",
        "largest encoded input image",
    ),
    Setting::described(
        "MAX_IMAGE_PIXELS",
        "the imaging crate's limit",
        "largest decoded or requested image (width x height); bombs are refused from the header",
    ),
    SHUTDOWN_GRACE_SECONDS,
];

/// Validated settings of one service process.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub defaults: ServiceDefaults,
    pub grpc_listen_addr: SocketAddr,
    /// Where Prometheus scrapes `/metrics`; `None` serves no metrics listener.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// TLS on `grpc_listen_addr` (mutual when it names a client CA); `None`
    /// serves plaintext.
    pub tls: Option<crate::tls::ServerTls>,
    /// A plaintext listener with nothing but `grpc.health.v1`, for probes
    /// that cannot do (mutual) TLS.
    pub health_listen_addr: Option<SocketAddr>,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    pub cpu_workers: usize,
    pub max_message_bytes: usize,
    pub limits: Limits,
    pub shutdown_grace: Duration,
    pub storage: StorageConfig,
    pub store_options: StoreOptions,
    /// `None` without `KAFKA_BROKERS`.
    pub kafka: Option<imageflow_events::KafkaSettings>,
}

impl ServiceConfig {
    /// Defaults, then the variables in `env`; the first bad value is the error.
    pub fn from_env(
        vars: &HashMap<String, String>,
        defaults: ServiceDefaults,
    ) -> Result<Self, ConfigError> {
        let env = Env::new(vars);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        // The imaging crate owns these limits' defaults; `--help` shows them
        // as the binary computes them (see `help`).
        let mut limits = Limits::default();
        limits.max_input_bytes = env.number_or("MAX_IMAGE_BYTES", limits.max_input_bytes, 1..)?;
        limits.max_pixels = env.number_or("MAX_IMAGE_PIXELS", limits.max_pixels, 1..)?;
        let store_options = StoreOptions::from_env(vars)?;
        Ok(Self {
            defaults,
            grpc_listen_addr: env.addr(&GRPC_LISTEN_ADDR)?,
            metrics_listen_addr: env.optional_addr("METRICS_LISTEN_ADDR")?,
            tls: crate::tls::ServerTls::from_env(vars)?,
            health_listen_addr: env.optional_addr("GRPC_HEALTH_LISTEN_ADDR")?,
            max_concurrent_requests: env.number_or(
                MAX_CONCURRENT_REQUESTS.name,
                defaults.max_concurrent_requests,
                1..,
            )?,
            request_timeout: env.duration_or(
                REQUEST_TIMEOUT_SECONDS.name,
                Unit::Seconds,
                defaults.request_timeout.as_secs_f64(),
                (Bound::Excluded(0.0), Bound::Included(3600.0)),
            )?,
            cpu_workers: env.number_or("CPU_WORKERS", cpus, 1..=1024)?,
            max_message_bytes: env.number(&GRPC_MAX_MESSAGE_BYTES, 1024..=(1 << 30))?,
            limits,
            shutdown_grace: shutdown_grace(env)?,
            storage: StorageConfig::from_env(vars)?,
            store_options,
            kafka: imageflow_events::KafkaSettings::from_env(vars)?,
        })
    }

    /// `--help` text: what the binary is and every setting with its default.
    pub fn help(defaults: &ServiceDefaults, summary: &str) -> String {
        Self::help_with(defaults, summary, &[])
    }

    /// [`Self::help`] with the binary's own settings (`extra`) listed too.
    pub fn help_with(defaults: &ServiceDefaults, summary: &str, extra: &[Setting]) -> String {
        let limits = Limits::default();
        let overrides = [
            (
                MAX_CONCURRENT_REQUESTS.name,
                defaults.max_concurrent_requests.to_string(),
            ),
            (
                REQUEST_TIMEOUT_SECONDS.name,
                defaults.request_timeout.as_secs_f64().to_string(),
            ),
            ("MAX_IMAGE_BYTES", limits.max_input_bytes.to_string()),
            ("MAX_IMAGE_PIXELS", limits.max_pixels.to_string()),
        ];
        crate::cli::help_text(
            defaults.binary,
            env!("CARGO_PKG_VERSION"),
            summary,
            &[
                (SETTINGS, &overrides[..]),
                (extra, &[]),
                (StorageConfig::SETTINGS, &[]),
                (imageflow_events::SETTINGS, &[]),
                (imageflow_telemetry::Settings::SETTINGS, &[]),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: ServiceDefaults = ServiceDefaults {
        binary: "resize-svc",
        service_name: "imageflow-resize",
        max_concurrent_requests: 50,
        request_timeout: Duration::from_secs(30),
    };

    use imageflow_config::vars as env;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = ServiceConfig::from_env(&env(&[]), DEFAULTS).unwrap();
        assert_eq!(config.grpc_listen_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.max_concurrent_requests, 50);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert!(config.cpu_workers >= 1);
    }

    #[test]
    fn values_from_the_map_win() {
        let config = ServiceConfig::from_env(
            &env(&[
                ("GRPC_LISTEN_ADDR", "127.0.0.1:7000"),
                ("MAX_CONCURRENT_REQUESTS", "3"),
                ("REQUEST_TIMEOUT_SECONDS", "1.5"),
                ("MAX_IMAGE_PIXELS", "1000"),
            ]),
            DEFAULTS,
        )
        .unwrap();
        assert_eq!(config.grpc_listen_addr.port(), 7000);
        assert_eq!(config.max_concurrent_requests, 3);
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.limits.max_pixels, 1000);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("GRPC_LISTEN_ADDR", "localhost"),
            ("MAX_CONCURRENT_REQUESTS", "0"),
            ("MAX_CONCURRENT_REQUESTS", "many"),
            ("REQUEST_TIMEOUT_SECONDS", "-1"),
            ("CPU_WORKERS", "0"),
            ("GRPC_MAX_MESSAGE_BYTES", "10"),
            ("STORAGE_URL", "ftp://example"),
        ] {
            let err = ServiceConfig::from_env(&env(&[(name, value)]), DEFAULTS).unwrap_err();
            assert_eq!(err.variable, name, "{err}");
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let text = ServiceConfig::help(&DEFAULTS, "Resizes images.");
        for s in SETTINGS {
            assert!(text.contains(s.name), "{} missing from --help", s.name);
        }
        for name in [
            "GRPC_TLS_CERT",
            "GRPC_TLS_KEY",
            "GRPC_TLS_CLIENT_CA",
            "STORAGE_URL",
            "KAFKA_SASL_MECHANISM",
            "OTEL_TRACES_SAMPLER_ARG",
        ] {
            assert!(text.contains(name), "{name} missing from --help");
        }
        // Per-service defaults show as this binary computes them.
        let limits = Limits::default();
        for (name, default) in [
            ("MAX_CONCURRENT_REQUESTS", "50".to_string()),
            ("REQUEST_TIMEOUT_SECONDS", "30".to_string()),
            ("MAX_IMAGE_PIXELS", limits.max_pixels.to_string()),
        ] {
            let mut lines = text.lines();
            let entry = lines
                .find(|line| line.trim() == name)
                .and(lines.next())
                .unwrap_or_default();
            assert!(
                entry.contains(&format!("(default: {default})")),
                "{name}: {entry:?}"
            );
        }
    }
}
