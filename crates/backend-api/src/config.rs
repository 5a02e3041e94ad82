//! Settings of the backend, read from an env map (tests pass their own), each
//! declared once in [`SETTINGS`], which also feeds `--help`.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use imageflow_service::config::parse;
pub use imageflow_service::{ConfigError, config::Setting};
use imageflow_storage::{StorageConfig, StoreOptions};

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "HTTP_LISTEN_ADDR",
        default: "0.0.0.0:8000",
        help: "address the REST API binds",
    },
    Setting {
        name: "DATABASE_URL",
        default: "sqlite://./data/imageflow.db",
        help: "sqlite://path (embedded) or postgres://user@host/db (several replicas share it)",
    },
    Setting {
        name: "RESIZE_GRPC_ENDPOINT",
        default: "http://127.0.0.1:9091",
        help: "resize-svc; comma-separated URLs are balanced, each host name is re-resolved (headless services)",
    },
    Setting {
        name: "FILTER_GRPC_ENDPOINT",
        default: "http://127.0.0.1:9092",
        help: "filter-svc, same form",
    },
    Setting {
        name: "AI_DETECTION_GRPC_ENDPOINT",
        default: "http://127.0.0.1:9093",
        help: "ai-detect-svc, same form",
    },
    Setting {
        name: "GRPC_TLS_CA",
        default: "unset (plaintext gRPC)",
        help: "PEM file of the CA that signed the services' certificates; set, every call to them is TLS",
    },
    Setting {
        name: "GRPC_TLS_CLIENT_CERT / GRPC_TLS_CLIENT_KEY",
        default: "unset (no client certificate)",
        help: "PEM files of the backend's own certificate and key, for services that require mutual TLS (GRPC_TLS_CLIENT_CA)",
    },
    Setting {
        name: "GRPC_TLS_SERVER_NAME",
        default: "each endpoint's host name",
        help: "name the services' certificates must be valid for, when it differs from the endpoint hosts (e.g. IP endpoints)",
    },
    Setting {
        name: "MAX_PARALLEL_EXECUTIONS",
        default: "10",
        help: "executions running at once in this replica; more wait in the queue (status pending)",
    },
    Setting {
        name: "MAX_QUEUED_EXECUTIONS",
        default: "1000",
        help: "executions waiting in this replica; beyond it POST /v1/executions answers 503 with Retry-After",
    },
    Setting {
        name: "EXECUTION_TIMEOUT_SECONDS",
        default: "300",
        help: "deadline of one execution, queueing excluded; a pipeline may ask for less",
    },
    Setting {
        name: "STEP_TIMEOUT_SECONDS",
        default: "30 (ai_detection 60)",
        help: "deadline of one attempt of one step; a step's timeoutSeconds may ask for less or more",
    },
    Setting {
        name: "MAX_UPLOAD_BYTES",
        default: "67108864",
        help: "largest accepted upload (413 beyond it)",
    },
    Setting {
        name: "MAX_REQUEST_BYTES",
        default: "1048576",
        help: "largest JSON request body",
    },
    Setting {
        name: "HTTP_HEADER_READ_TIMEOUT_SECONDS",
        default: "10",
        help: "HTTP/1 clients must send a request's headers within this long (else the connection is closed), which also ends idle keep-alive connections; responses (SSE, ?wait=true) are not limited by it",
    },
    Setting {
        name: "IMAGEFLOW_API_TOKENS",
        default: "unset (open API, local runs only)",
        help: "comma-separated NAME:TOKEN pairs; requests need 'Authorization: Bearer TOKEN'",
    },
    Setting {
        name: "HEARTBEAT_SECONDS",
        default: "5",
        help: "how often a replica marks its executions alive",
    },
    Setting {
        name: "STALE_EXECUTION_SECONDS",
        default: "30",
        help: "an execution whose replica has not marked it alive for this long is failed as interrupted",
    },
    Setting {
        name: "STORAGE_URL",
        default: "file://./data (bucket imageflow-files)",
        help: "file:///abs/dir or s3://bucket (with S3_ENDPOINT, AWS_* credentials)",
    },
    Setting {
        name: "UI_DIR",
        default: "web/dist",
        help: "the built web UI (scripts/build-ui.sh) served at /; relative to the working directory",
    },
    Setting {
        name: "JAEGER_UI_URL",
        default: "unset (no trace links)",
        help: "Jaeger UI base URL; the web UI links each execution's trace to {url}/trace/{trace_id}",
    },
    Setting {
        name: "EXECUTION_MODE",
        default: "direct",
        help: "direct: a replica runs what it accepts; queue: executions go through Kafka's pipeline-executions to whichever replica is assigned them (needs KAFKA_BROKERS)",
    },
    Setting {
        name: "QUEUE_ADOPT_SECONDS",
        default: "30",
        help: "queue mode: an execution waiting longer than this (its partition's consumer died) is adopted by any replica with room; the claim is atomic, so it still runs once",
    },
    Setting {
        name: "KAFKA_BROKERS",
        default: "unset (events stay in this process)",
        help: "Kafka bootstrap servers; progress and completion events are published there (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CA_LOCATION: see the imageflow-events settings)",
    },
    Setting {
        name: "RUST_LOG",
        default: "info",
        help: "log filter; logs are JSON lines on stdout",
    },
    Setting {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "unset (nothing exported)",
        help: "OTLP/gRPC collector for traces and metrics (OTEL_TRACES_SAMPLER(_ARG), OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME apply)",
    },
];

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

impl BackendConfig {
    /// Defaults, then the variables in `env`; the first bad value is the error.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let (storage, store_options) = imageflow_storage::from_env(env)?;
        let secs = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            parse(env, name, default, |v: &u64| *v > 0).map(Duration::from_secs)
        };
        let heartbeat = secs("HEARTBEAT_SECONDS", 5)?;
        let stale_after = secs("STALE_EXECUTION_SECONDS", 30)?;
        if stale_after <= heartbeat {
            return Err(ConfigError {
                variable: "STALE_EXECUTION_SECONDS".into(),
                message: format!(
                    "must be larger than HEARTBEAT_SECONDS ({}s), or live executions would be failed",
                    heartbeat.as_secs()
                ),
            });
        }
        let kafka = imageflow_events::KafkaSettings::from_env(env).map_err(|e| ConfigError {
            variable: e.variable,
            message: e.message,
        })?;
        let execution_mode = match var(env, "EXECUTION_MODE") {
            None | Some("direct") => crate::queue::ExecutionMode::Direct,
            Some("queue") if kafka.is_some() => crate::queue::ExecutionMode::Queue,
            Some("queue") => {
                return Err(ConfigError {
                    variable: "EXECUTION_MODE".into(),
                    message: "queue mode needs KAFKA_BROKERS".into(),
                });
            }
            Some(other) => {
                return Err(ConfigError {
                    variable: "EXECUTION_MODE".into(),
                    message: format!("{other:?} is not direct or queue"),
                });
            }
        };
        let grpc_tls = imageflow_service::tls::ClientTls::from_env(env)?;
        let resize_endpoints = endpoints(env, "RESIZE_GRPC_ENDPOINT", "http://127.0.0.1:9091")?;
        let filter_endpoints = endpoints(env, "FILTER_GRPC_ENDPOINT", "http://127.0.0.1:9092")?;
        let detection_endpoints =
            endpoints(env, "AI_DETECTION_GRPC_ENDPOINT", "http://127.0.0.1:9093")?;
        if grpc_tls.is_none() {
            // Plaintext to a TLS port fails every call with an unreadable
            // protocol error; refuse the combination at start instead.
            for (name, list) in [
                ("RESIZE_GRPC_ENDPOINT", &resize_endpoints),
                ("FILTER_GRPC_ENDPOINT", &filter_endpoints),
                ("AI_DETECTION_GRPC_ENDPOINT", &detection_endpoints),
            ] {
                if let Some(url) = list.iter().find(|u| u.starts_with("https://")) {
                    return Err(ConfigError {
                        variable: name.to_string(),
                        message: format!(
                            "{url:?} asks for TLS but GRPC_TLS_CA is unset: name the CA that signed the services' certificates"
                        ),
                    });
                }
            }
        }
        Ok(Self {
            http_listen_addr: parse(env, "HTTP_LISTEN_ADDR", ([0, 0, 0, 0], 8000).into(), |_| {
                true
            })?,
            database_url: database_url(env)?,
            resize_endpoints,
            filter_endpoints,
            detection_endpoints,
            grpc_tls,
            max_parallel_executions: parse(env, "MAX_PARALLEL_EXECUTIONS", 10, |v| *v > 0)?,
            max_queued_executions: parse(env, "MAX_QUEUED_EXECUTIONS", 1000, |v| *v > 0)?,
            execution_timeout: secs("EXECUTION_TIMEOUT_SECONDS", 300)?,
            step_timeout: match var(env, "STEP_TIMEOUT_SECONDS") {
                None => None,
                Some(_) => Some(secs("STEP_TIMEOUT_SECONDS", 30)?),
            },
            max_upload_bytes: parse(env, "MAX_UPLOAD_BYTES", 64 << 20, |v| *v > 0)?,
            max_request_bytes: parse(env, "MAX_REQUEST_BYTES", 1 << 20, |v| *v >= 1024)?,
            http_header_read_timeout: secs("HTTP_HEADER_READ_TIMEOUT_SECONDS", 10)?,
            api_tokens: api_tokens(env)?,
            heartbeat,
            stale_after,
            storage,
            store_options,
            ui: crate::api::ui::UiSettings::from_env(env)?,
            kafka,
            execution_mode,
            queue_adopt_after: secs("QUEUE_ADOPT_SECONDS", 30)?,
        })
    }
}

fn var<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn database_url(env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let url = var(env, "DATABASE_URL").unwrap_or("sqlite://./data/imageflow.db");
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(url.to_string())
    } else {
        Err(ConfigError {
            variable: "DATABASE_URL".into(),
            message: "accepted: sqlite://path/to/file.db or postgres://user@host:5432/db".into(),
        })
    }
}

fn endpoints(
    env: &HashMap<String, String>,
    name: &str,
    default: &str,
) -> Result<Vec<String>, ConfigError> {
    let raw = var(env, name).unwrap_or(default);
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
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
            return Err(ConfigError {
                variable: name.to_string(),
                message: format!("{url:?} is not an http(s)://host:port URL"),
            });
        }
    }
    if list.is_empty() {
        return Err(ConfigError {
            variable: name.to_string(),
            message: "empty: give at least one http://host:port".into(),
        });
    }
    Ok(list)
}

fn api_tokens(env: &HashMap<String, String>) -> Result<Vec<ApiToken>, ConfigError> {
    let Some(raw) = var(env, "IMAGEFLOW_API_TOKENS") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let (name, token) = entry
                .split_once(':')
                .unwrap_or(("", entry));
            let name = if name.is_empty() {
                format!("token-{}", i + 1)
            } else {
                name.to_string()
            };
            if token.len() < 16 {
                return Err(ConfigError {
                    variable: "IMAGEFLOW_API_TOKENS".into(),
                    message: format!(
                        "the token named {name:?} is shorter than 16 characters; use a random secret"
                    ),
                });
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

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let config = BackendConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.http_listen_addr.port(), 8000);
        assert!(config.database_url.starts_with("sqlite:"));
        assert_eq!(config.max_parallel_executions, 10);
        assert_eq!(config.resize_endpoints, vec!["http://127.0.0.1:9091"]);
        assert!(config.api_tokens.is_empty());
        assert_eq!(config.http_header_read_timeout, Duration::from_secs(10));
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
        ] {
            let err = BackendConfig::from_env(&env(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}: {err}");
        }
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
}
