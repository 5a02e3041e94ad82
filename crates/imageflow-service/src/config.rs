//! Settings shared by every gRPC service, read from an env map so tests need not
//! touch the process environment. Each setting is declared once in [`SETTINGS`],
//! which also feeds `--help`.

use std::{collections::HashMap, net::SocketAddr, str::FromStr, time::Duration};

use imageflow_imaging::Limits;
use imageflow_storage::{StorageConfig, StoreOptions};

/// What differs between services: their name and their limits (DESIGN section 9).
#[derive(Clone, Copy, Debug)]
pub struct ServiceDefaults {
    /// Binary name, as in `resize-svc --version`.
    pub binary: &'static str,
    /// OpenTelemetry `service.name`, e.g. `imageflow-resize`.
    pub service_name: &'static str,
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
}

/// One documented setting.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable a service reads (storage variables belong to the storage crate
/// but are listed so `--help` is complete).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "GRPC_LISTEN_ADDR",
        default: "0.0.0.0:9090",
        help: "address the gRPC server binds",
    },
    Setting {
        name: "METRICS_LISTEN_ADDR",
        default: "unset (no metrics listener)",
        help: "address of the Prometheus /metrics endpoint, e.g. 0.0.0.0:9464",
    },
    Setting {
        name: "GRPC_TLS_CERT / GRPC_TLS_KEY",
        default: "unset (plaintext gRPC)",
        help: "PEM files of this service's certificate (chain) and private key; set both to serve TLS only",
    },
    Setting {
        name: "GRPC_TLS_CLIENT_CA",
        default: "unset (callers need no certificate)",
        help: "PEM file of the CA that must have signed every caller's certificate (mutual TLS); needs GRPC_TLS_CERT",
    },
    Setting {
        name: "GRPC_HEALTH_LISTEN_ADDR",
        default: "unset (health only on GRPC_LISTEN_ADDR)",
        help: "extra plaintext listener serving only grpc.health.v1, for Kubernetes gRPC probes (they cannot present a client certificate)",
    },
    Setting {
        name: "MAX_CONCURRENT_REQUESTS",
        default: "per service (resize 50, filter 50, ai 20)",
        help: "requests served at once; more get RESOURCE_EXHAUSTED with retry-after-ms",
    },
    Setting {
        name: "REQUEST_TIMEOUT_SECONDS",
        default: "per service (30, ai 60)",
        help: "upper bound on one request; a shorter grpc-timeout from the caller wins",
    },
    Setting {
        name: "CPU_WORKERS",
        default: "number of CPUs",
        help: "image decode/encode/inference jobs run at once (the blocking door)",
    },
    Setting {
        name: "GRPC_MAX_MESSAGE_BYTES",
        default: "67108864",
        help: "largest gRPC message accepted or sent",
    },
    Setting {
        name: "MAX_IMAGE_BYTES",
        default: "67108864",
        help: "largest encoded input image",
    },
    Setting {
        name: "MAX_IMAGE_PIXELS",
        default: "50000000",
        help: "largest decoded or requested image (width x height); bombs are refused from the header",
    },
    Setting {
        name: "SHUTDOWN_GRACE_SECONDS",
        default: "20",
        help: "how long in-flight requests may drain after SIGTERM",
    },
    Setting {
        name: "STORAGE_URL",
        default: "file://./data (bucket imageflow-files)",
        help: "file:///abs/dir or s3://bucket",
    },
    Setting {
        name: "S3_ENDPOINT",
        default: "AWS default",
        help: "S3/MinIO endpoint URL (path-style addressing)",
    },
    Setting {
        name: "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION",
        default: "AWS default chain / us-east-1",
        help: "S3 credentials and region",
    },
    Setting {
        name: "STORAGE_MAX_OBJECT_BYTES",
        default: "64MiB",
        help: "largest object read from or written to storage",
    },
    Setting {
        name: "KAFKA_BROKERS",
        default: "unset (no events)",
        help: "Kafka bootstrap servers; each call's progress goes to pipeline-progress (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CA_LOCATION)",
    },
    Setting {
        name: "RUST_LOG",
        default: "info",
        help: "log filter; logs are JSON lines on stdout",
    },
    Setting {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "unset (nothing exported)",
        help: "OTLP/gRPC collector for traces and metrics, e.g. http://otel-collector:4317",
    },
    Setting {
        name: "OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG",
        default: "parentbased_traceidratio / 0.1",
        help: "head sampling; the caller's decision is followed",
    },
    Setting {
        name: "OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES",
        default: "per service / service.namespace=imageflow,deployment.environment=local,cloud.region=local",
        help: "resource attributes on every span and metric",
    },
];

/// A bad value, named so the operator can fix it in one read.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl From<imageflow_storage::ConfigError> for ConfigError {
    fn from(err: imageflow_storage::ConfigError) -> Self {
        // The storage error already reads "VARIABLE: message".
        let text = err.to_string();
        match text.split_once(": ") {
            Some((variable, message)) => Self {
                variable: variable.to_string(),
                message: message.to_string(),
            },
            None => Self {
                variable: "STORAGE_URL".into(),
                message: text,
            },
        }
    }
}

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
        env: &HashMap<String, String>,
        defaults: ServiceDefaults,
    ) -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut limits = Limits::default();
        limits.max_input_bytes = parse(env, "MAX_IMAGE_BYTES", limits.max_input_bytes, positive)?;
        limits.max_pixels = parse(env, "MAX_IMAGE_PIXELS", limits.max_pixels, positive)?;
        let store_options = StoreOptions::from_env(env)?;
        Ok(Self {
            defaults,
            grpc_listen_addr: parse(
                env,
                "GRPC_LISTEN_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9090)),
                |_| true,
            )?,
            metrics_listen_addr: optional_addr(env, "METRICS_LISTEN_ADDR")?,
            tls: crate::tls::ServerTls::from_env(env)?,
            health_listen_addr: optional_addr(env, "GRPC_HEALTH_LISTEN_ADDR")?,
            max_concurrent_requests: parse(
                env,
                "MAX_CONCURRENT_REQUESTS",
                defaults.max_concurrent_requests,
                positive,
            )?,
            request_timeout: Duration::from_secs_f64(parse(
                env,
                "REQUEST_TIMEOUT_SECONDS",
                defaults.request_timeout.as_secs_f64(),
                |s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0,
            )?),
            cpu_workers: parse(env, "CPU_WORKERS", cpus, |n: &usize| (1..=1024).contains(n))?,
            max_message_bytes: parse(env, "GRPC_MAX_MESSAGE_BYTES", 64 << 20, |n: &usize| {
                (1024..=(1 << 30)).contains(n)
            })?,
            limits,
            shutdown_grace: Duration::from_secs_f64(parse(
                env,
                "SHUTDOWN_GRACE_SECONDS",
                20.0,
                |s: &f64| s.is_finite() && *s >= 0.0 && *s <= 3600.0,
            )?),
            storage: StorageConfig::from_env(env)?,
            store_options,
            kafka: imageflow_events::KafkaSettings::from_env(env).map_err(|e| ConfigError {
                variable: e.variable,
                message: e.message,
            })?,
        })
    }

    /// `--help` text: what the binary is and every setting with its default.
    pub fn help(defaults: &ServiceDefaults, summary: &str) -> String {
        let mut text = format!(
            "{} {}\n{summary}\n\nUsage: {} [--help | --version]\n\nSettings (environment variables):\n",
            defaults.binary,
            env!("CARGO_PKG_VERSION"),
            defaults.binary
        );
        for s in SETTINGS {
            text.push_str(&format!(
                "  {}\n      {} (default: {})\n",
                s.name, s.help, s.default
            ));
        }
        text
    }
}

/// An address that may be left unset.
pub fn optional_addr(
    env: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => raw.parse().map(Some).map_err(|_| ConfigError {
            variable: name.into(),
            message: format!("{raw:?} is not an address like 0.0.0.0:9464"),
        }),
    }
}

fn positive<T: PartialOrd + Default>(value: &T) -> bool {
    *value > T::default()
}

/// Reads `name` from `env`: `default` when unset or blank, else the parsed
/// value if `valid` accepts it, else an error naming the variable and its
/// default. Shared by every binary's settings.
pub fn parse<T>(
    env: &HashMap<String, String>,
    name: &'static str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T, ConfigError>
where
    T: FromStr + std::fmt::Display,
{
    let Some(raw) = env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    match raw.parse::<T>() {
        Ok(value) if valid(&value) => Ok(value),
        _ => Err(ConfigError {
            variable: name.into(),
            message: format!("{raw:?} is not a valid value (default {default})"),
        }),
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

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
        for tls in ["GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CLIENT_CA"] {
            assert!(text.contains(tls), "{tls} missing from --help");
        }
    }
}
