//! Settings of the backend, read from an env map (tests pass their own), each
//! declared once in [`SETTINGS`], which also feeds `--help`.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

pub use imageflow_config::{ConfigError, Setting};
use imageflow_config::{Env, Unit};
use imageflow_storage::{StorageConfig, StoreOptions};

const HTTP_LISTEN_ADDR: Setting = Setting::new(
    "HTTP_LISTEN_ADDR",
    "0.0.0.0:8000",
    "address the REST API binds",
);
const DATABASE_URL: Setting = Setting::new(
    "DATABASE_URL",
    "sqlite://./data/imageflow.db",
    "sqlite://path (embedded) or postgres://user@host/db (several replicas share it)",
);
const RESIZE_GRPC_ENDPOINT: Setting = Setting::new(
    "RESIZE_GRPC_ENDPOINT",
    "http://127.0.0.1:9091",
    "resize-svc; comma-separated URLs are balanced, each host name is re-resolved (headless services)",
);
const FILTER_GRPC_ENDPOINT: Setting = Setting::new(
    "FILTER_GRPC_ENDPOINT",
    "http://127.0.0.1:9092",
    "filter-svc, same form",
);
const AI_DETECTION_GRPC_ENDPOINT: Setting = Setting::new(
    "AI_DETECTION_GRPC_ENDPOINT",
    "http://127.0.0.1:9093",
    "ai-detect-svc, same form",
);
const MAX_PARALLEL_EXECUTIONS: Setting = Setting::new(
    "MAX_PARALLEL_EXECUTIONS",
    "10",
    "executions running at once in this replica; more wait in the queue (status pending)",
);
const MAX_PARALLEL_INPUTS: Setting = Setting::new(
    "MAX_PARALLEL_INPUTS",
    "4",
    "inputs of one execution (each a run of the whole pipeline) running at once; the rest of its inputs wait their turn",
);
const ALLOWED_BUCKETS: Setting = Setting::described(
    "ALLOWED_BUCKETS",
    "unset (the default bucket only)",
    "comma-separated buckets, besides the default one, that executions may read inputs from (s3://bucket/key) and copy outputs to (outputPath); any other is refused with 400",
);
const MAX_QUEUED_EXECUTIONS: Setting = Setting::new(
    "MAX_QUEUED_EXECUTIONS",
    "1000",
    "executions waiting in this replica; beyond it POST /v1/executions answers 503 with Retry-After",
);
const EXECUTION_TIMEOUT_SECONDS: Setting = Setting::new(
    "EXECUTION_TIMEOUT_SECONDS",
    "300",
    "deadline of one execution, queueing excluded; a pipeline may ask for less",
);
const STEP_TIMEOUT_SECONDS: Setting = Setting::described(
    "STEP_TIMEOUT_SECONDS",
    "30 (ai_detection 60)",
    "deadline of one attempt of one step; a step's timeoutSeconds may ask for less or more",
);
const MAX_UPLOAD_BYTES: Setting = Setting::new(
    "MAX_UPLOAD_BYTES",
    "67108864",
    "largest accepted upload (413 beyond it)",
);
const MAX_REQUEST_BYTES: Setting =
    Setting::new("MAX_REQUEST_BYTES", "1048576", "largest JSON request body");
const HTTP_HEADER_READ_TIMEOUT_SECONDS: Setting = Setting::new(
    "HTTP_HEADER_READ_TIMEOUT_SECONDS",
    "10",
    "HTTP/1 clients must send a request's headers within this long (else the connection is closed), which also ends idle keep-alive connections; responses (SSE, ?wait=true) are not limited by it",
);
const HEARTBEAT_SECONDS: Setting = Setting::new(
    "HEARTBEAT_SECONDS",
    "5",
    "how often a replica marks its executions alive",
);
const STALE_EXECUTION_SECONDS: Setting = Setting::new(
    "STALE_EXECUTION_SECONDS",
    "30",
    "an execution whose replica has not marked it alive for this long is failed as interrupted",
);
const EXECUTION_MODE: Setting = Setting::new(
    "EXECUTION_MODE",
    "direct",
    "direct: a replica runs what it accepts; queue: executions go through Kafka's pipeline-executions to whichever replica is assigned them (needs KAFKA_BROKERS)",
);
const QUEUE_ADOPT_SECONDS: Setting = Setting::new(
    "QUEUE_ADOPT_SECONDS",
    "30",
    "queue mode: an execution waiting longer than this (its partition's consumer died) is adopted by any replica with room; the claim is atomic, so it still runs once",
);

/// The backend's own variables; `--help` adds those of the crates it reads
/// through (storage, Kafka, telemetry).
pub const SETTINGS: &[Setting] = &[
    HTTP_LISTEN_ADDR,
    DATABASE_URL,
    RESIZE_GRPC_ENDPOINT,
    FILTER_GRPC_ENDPOINT,
    AI_DETECTION_GRPC_ENDPOINT,
    Setting::described(
        "GRPC_TLS_CA",
        "unset (plaintext gRPC)",
        "PEM file of the CA that signed the services' certificates; set, every call to them is TLS",
    ),
    Setting::described(
        "GRPC_TLS_CLIENT_CERT / GRPC_TLS_CLIENT_KEY",
        "unset (no client certificate)",
        "PEM files of the backend's own certificate and key, for services that require mutual TLS (GRPC_TLS_CLIENT_CA)",
    ),
    Setting::described(
        "GRPC_TLS_SERVER_NAME",
        "each endpoint's host name",
        "name the services' certificates must be valid for, when it differs from the endpoint hosts (e.g. IP endpoints)",
    ),
    MAX_PARALLEL_EXECUTIONS,
    MAX_PARALLEL_INPUTS,
    ALLOWED_BUCKETS,
    MAX_QUEUED_EXECUTIONS,
    EXECUTION_TIMEOUT_SECONDS,
    STEP_TIMEOUT_SECONDS,
    MAX_UPLOAD_BYTES,
    MAX_REQUEST_BYTES,
    HTTP_HEADER_READ_TIMEOUT_SECONDS,
    Setting::described(
        "IMAGEFLOW_API_TOKENS",
        "unset (open API, local runs only)",
        "comma-separated NAME:TOKEN pairs; requests need 'Authorization: Bearer TOKEN'",
    ),
    HEARTBEAT_SECONDS,
    STALE_EXECUTION_SECONDS,
    imageflow_service::config::SHUTDOWN_GRACE_SECONDS,
    crate::api::ui::UI_DIR,
    crate::api::ui::JAEGER_UI_URL,
    EXECUTION_MODE,
    QUEUE_ADOPT_SECONDS,
];

/// `--help` of the backend binary.
pub fn help(version: &str) -> String {
    imageflow_service::cli::help_text(
        "backend-api",
        version,
        "REST API and pipeline engine of ImageFlowCanvas.",
        &[
            (SETTINGS, &[]),
            (StorageConfig::SETTINGS, &[]),
            (imageflow_events::SETTINGS, &[]),
            (imageflow_telemetry::Settings::SETTINGS, &[]),
        ],
    )
}

/// Validated settings of one backend process.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub http_listen_addr: SocketAddr,
    pub database_url: String,
    pub resize_endpoints: Vec<String>,
    pub filter_endpoints: Vec<String>,
    pub detection_endpoints: Vec<String>,
    /// TLS to the services; `None` is plaintext.
    pub grpc_tls: Option<imageflow_service::tls::ClientTls>,
    pub max_parallel_executions: usize,
    pub max_parallel_inputs: usize,
    /// Buckets besides the default one executions may use.
    pub allowed_buckets: Vec<String>,
    pub max_queued_executions: usize,
    pub execution_timeout: Duration,
    pub step_timeout: Option<Duration>,
    pub max_upload_bytes: usize,
    pub max_request_bytes: usize,
    /// HTTP/1: how long a client may take to send a request's headers (slow
    /// clients cannot hold connections open).
    pub http_header_read_timeout: Duration,
    pub api_tokens: Vec<ApiToken>,
    pub heartbeat: Duration,
    pub stale_after: Duration,
    /// How long running executions may finish after SIGTERM before they are
    /// failed as interrupted (the chart's terminationGracePeriodSeconds is longer).
    pub shutdown_grace: Duration,
    pub storage: StorageConfig,
    pub store_options: StoreOptions,
    pub ui: crate::api::ui::UiSettings,
    /// `None` without `KAFKA_BROKERS`: events stay in this process.
    pub kafka: Option<imageflow_events::KafkaSettings>,
    pub execution_mode: crate::queue::ExecutionMode,
    /// Queue mode: how long an execution may wait in the queue before any
    /// replica with room adopts it from the database.
    pub queue_adopt_after: Duration,
}

/// A named bearer token; the name is what logs show as the acting user.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .finish()
    }
}

impl imageflow_service::cli::Startup for BackendConfig {
    const LISTEN_VARIABLE: &'static str = "HTTP_LISTEN_ADDR";
    fn listen_addr(&self) -> SocketAddr {
        self.http_listen_addr
    }
}

/// A positive whole number of seconds.
fn secs(env: Env<'_>, setting: &Setting) -> Result<Duration, ConfigError> {
    env.duration::<u64>(setting, Unit::Seconds, 1..)
}

impl BackendConfig {
    /// Defaults, then the variables in `env`; the first bad value is the error.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env::new(vars);
        let (storage, store_options) = imageflow_storage::from_env(vars)?;
        let heartbeat = secs(env, &HEARTBEAT_SECONDS)?;
        let stale_after = secs(env, &STALE_EXECUTION_SECONDS)?;
        if stale_after <= heartbeat {
            return Err(ConfigError::invalid(
                STALE_EXECUTION_SECONDS.name,
                format!(
                    "must be larger than HEARTBEAT_SECONDS ({}s), or live executions would be failed",
                    heartbeat.as_secs()
                ),
            ));
        }
        let kafka = imageflow_events::KafkaSettings::from_env(vars)?;
        let execution_mode = match env.text(&EXECUTION_MODE).unwrap_or_default() {
            "direct" => crate::queue::ExecutionMode::Direct,
            "queue" if kafka.is_some() => crate::queue::ExecutionMode::Queue,
            "queue" => {
                return Err(ConfigError::invalid(
                    EXECUTION_MODE.name,
                    "queue mode needs KAFKA_BROKERS",
                ));
            }
            other => {
                return Err(ConfigError::bad_value(
                    EXECUTION_MODE.name,
                    other,
                    "direct or queue",
                ));
            }
        };
        let grpc_tls = imageflow_service::tls::ClientTls::from_env(vars)?;
        let resize_endpoints = endpoints(env, &RESIZE_GRPC_ENDPOINT)?;
        let filter_endpoints = endpoints(env, &FILTER_GRPC_ENDPOINT)?;
        let detection_endpoints = endpoints(env, &AI_DETECTION_GRPC_ENDPOINT)?;
        if grpc_tls.is_none() {
            // Plaintext to a TLS port fails every call with an unreadable
            // protocol error; refuse the combination at start instead.
            for (name, list) in [
                (RESIZE_GRPC_ENDPOINT.name, &resize_endpoints),
                (FILTER_GRPC_ENDPOINT.name, &filter_endpoints),
                (AI_DETECTION_GRPC_ENDPOINT.name, &detection_endpoints),
            ] {
                if let Some(url) = list.iter().find(|u| u.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        name,
                        format!(
                            "{url:?} asks for TLS but GRPC_TLS_CA is unset: name the CA that signed the services' certificates"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            http_listen_addr: env.addr(&HTTP_LISTEN_ADDR)?,
            database_url: database_url(env)?,
            resize_endpoints,
            filter_endpoints,
            detection_endpoints,
            grpc_tls,
            max_parallel_executions: env.number(&MAX_PARALLEL_EXECUTIONS, 1..)?,
            max_parallel_inputs: env.number(&MAX_PARALLEL_INPUTS, 1..)?,
            allowed_buckets: allowed_buckets(env)?,
            max_queued_executions: env.number(&MAX_QUEUED_EXECUTIONS, 1..)?,
            execution_timeout: secs(env, &EXECUTION_TIMEOUT_SECONDS)?,
            step_timeout: env
                .parse::<u64>(
                    STEP_TIMEOUT_SECONDS.name,
                    "a whole number of seconds of at least 1",
                    |s| *s > 0,
                )?
                .map(Duration::from_secs),
            max_upload_bytes: env.number(&MAX_UPLOAD_BYTES, 1..)?,
            max_request_bytes: env.number(&MAX_REQUEST_BYTES, 1024..)?,
            http_header_read_timeout: secs(env, &HTTP_HEADER_READ_TIMEOUT_SECONDS)?,
            api_tokens: api_tokens(env)?,
            heartbeat,
            stale_after,
            shutdown_grace: imageflow_service::config::shutdown_grace(env)?,
            storage,
            store_options,
            ui: crate::api::ui::UiSettings::from_env(vars)?,
            kafka,
            execution_mode,
            queue_adopt_after: secs(env, &QUEUE_ADOPT_SECONDS)?,
        })
    }
}

fn allowed_buckets(env: Env<'_>) -> Result<Vec<String>, ConfigError> {
    env.list(&ALLOWED_BUCKETS)
        .unwrap_or_default()
        .into_iter()
        .map(|name| {
            imageflow_storage::BucketName::parse(name)
                .map(|b| b.as_str().to_string())
                .map_err(|e| ConfigError::invalid(ALLOWED_BUCKETS.name, e.to_string()))
        })
        .collect()
}

fn database_url(env: Env<'_>) -> Result<String, ConfigError> {
    let url = env.text(&DATABASE_URL).unwrap_or_default();
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(url.to_string())
    } else {
        // The value is not echoed: it may hold a password.
        Err(ConfigError::invalid(
            DATABASE_URL.name,
            "accepted: sqlite://path/to/file.db or postgres://user@host:5432/db",
        ))
    }
}

fn endpoints(env: Env<'_>, setting: &Setting) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = env
        .list(setting)
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect();
    for url in &list {
        let ok = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            return Err(ConfigError::bad_value(
                setting.name,
                url,
                "an http(s)://host:port URL",
            ));
        }
    }
    if list.is_empty() {
        return Err(ConfigError::invalid(
            setting.name,
            "empty: give at least one http://host:port",
        ));
    }
    Ok(list)
}

fn api_tokens(env: Env<'_>) -> Result<Vec<ApiToken>, ConfigError> {
    let Some(raw) = env.get("IMAGEFLOW_API_TOKENS") else {
        return Ok(Vec::new());
    };
    imageflow_config::split_list(raw)
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let (name, token) = entry.split_once(':').unwrap_or(("", entry));
            let name = if name.is_empty() {
                format!("token-{}", i + 1)
            } else {
                name.to_string()
            };
            if token.len() < 16 {
                return Err(ConfigError::invalid(
                    "IMAGEFLOW_API_TOKENS",
                    format!(
                        "the token named {name:?} is shorter than 16 characters; use a random secret"
                    ),
                ));
            }
            Ok(ApiToken {
                name,
                token: token.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use imageflow_config::vars as env;

    #[test]
    fn defaults_are_the_embedded_ones() {
        let config = BackendConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.http_listen_addr.port(), 8000);
        assert!(config.database_url.starts_with("sqlite:"));
        assert_eq!(config.max_parallel_executions, 10);
        assert_eq!(config.resize_endpoints, vec!["http://127.0.0.1:9091"]);
        assert!(config.api_tokens.is_empty());
        assert_eq!(config.http_header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MAX_PARALLEL_EXECUTIONS", "0"),
            ("MAX_PARALLEL_EXECUTIONS", "many"),
            ("HTTP_LISTEN_ADDR", "localhost"),
            ("DATABASE_URL", "mysql://x"),
            ("RESIZE_GRPC_ENDPOINT", "ftp://x:1"),
            ("IMAGEFLOW_API_TOKENS", "alice:short"),
            ("STALE_EXECUTION_SECONDS", "2"),
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_SECONDS", "soon"),
            ("RESIZE_GRPC_ENDPOINT", "https://resize:9090"),
            ("GRPC_TLS_CA", "/nonexistent/ca.pem"),
            ("SHUTDOWN_GRACE_SECONDS", "-1"),
            ("SHUTDOWN_GRACE_SECONDS", "a while"),
        ] {
            let err = BackendConfig::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}: {err}");
        }
    }

    #[test]
    fn the_shutdown_grace_the_chart_sets_is_the_one_used() {
        let config = BackendConfig::from_env(&env(&[("SHUTDOWN_GRACE_SECONDS", "45")])).unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_secs(45));
    }

    #[test]
    fn endpoint_lists_and_tokens() {
        let config = BackendConfig::from_env(&env(&[
            (
                "FILTER_GRPC_ENDPOINT",
                "filter-0:9090, http://filter-1:9090",
            ),
            (
                "IMAGEFLOW_API_TOKENS",
                "ci:0123456789abcdef0123,0123456789abcdefXYZ",
            ),
        ]))
        .unwrap();
        assert_eq!(
            config.filter_endpoints,
            vec!["http://filter-0:9090", "http://filter-1:9090"]
        );
        assert_eq!(config.api_tokens[0].name, "ci");
        assert_eq!(config.api_tokens[1].name, "token-2");
        assert!(!format!("{:?}", config.api_tokens).contains("0123456789"));
    }

    #[test]
    fn help_lists_every_setting_with_the_default_the_code_reads() {
        let text = help("9.9.9");
        assert!(text.starts_with("backend-api 9.9.9\n"), "{text}");
        for s in SETTINGS {
            assert!(text.contains(s.name), "{} missing from --help", s.name);
        }
        for name in [
            "STORAGE_URL",
            "KAFKA_BROKERS",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            assert!(text.contains(name), "{name} missing from --help");
        }
        let config = BackendConfig::from_env(&env(&[])).unwrap();
        assert!(text.contains("(default: 0.0.0.0:8000)"));
        assert_eq!(config.http_listen_addr.to_string(), "0.0.0.0:8000");
        assert!(text.contains("(default: web/dist)"));
        assert_eq!(config.ui.dir, std::path::PathBuf::from("web/dist"));
    }
}
