//! What every imageflow gRPC service shares, so `resize-svc`, `filter-svc` and
//! `ai-detect-svc` only hold their own image logic:
//!
//! * [`config`]: settings from the environment (prefixed variables over defaults), `--help`;
//! * [`admission`]: the concurrency limit and the one door to blocking work;
//! * [`io`]: input by object or by bytes, outputs under `executions/{id}/`;
//! * [`error`]: one mapping from typed errors to `tonic::Status`;
//! * [`health`] and [`server`]: health that follows the store, reflection,
//!   graceful shutdown;
//! * [`tls`]: (mutual) TLS between backend-api and the services, from PEM files.

pub mod admission;
pub mod cli;
pub mod config;
pub mod error;
pub mod health;
pub mod io;
pub mod metrics_http;
pub mod request;
pub mod server;
pub mod tls;

use std::time::Duration;

use imageflow_imaging::Limits;
use imageflow_storage::Store;

pub use admission::{Admission, BlockingDoor};
pub use config::{ConfigError, ServiceConfig, ServiceDefaults};
pub use error::ServiceError;
pub use health::Health;
pub use server::{Prepared, ServeError, prepare, serve, shutdown_signal};

/// The shared state a service's handlers work with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceRuntime {
    pub store: Store,
    pub admission: Admission,
    pub door: BlockingDoor,
    pub limits: Limits,
    pub request_timeout: Duration,
    pub health: Health,
    /// Progress of each call to Kafka's `pipeline-progress`, when
    /// `KAFKA_BROKERS` is set.
    pub events: Option<ServiceEvents>,
}

/// What a service needs to report its own progress.
#[derive(Clone, Debug)]
pub struct ServiceEvents {
    pub publisher: imageflow_events::Publisher,
    /// `source` of the messages (the service name, e.g. `imageflow-resize`).
    pub source: String,
}
