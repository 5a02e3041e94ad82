//! Kafka events for ImageFlowCanvas (progress and completion of executions): the topics, their
//! versioned JSON payloads, a producer that never stops a pipeline and a
//! consumer-group consumer with commits after processing.
//!
//! * [`KafkaSettings::from_env`]: `KAFKA_*` variables, `None` without brokers;
//! * [`topics::ensure_topics`]: creates the topics at start (bounded);
//! * [`Publisher`]: `publish` (never blocks nor fails; losses are counted in
//!   `imageflow_events_dropped_total`) and `send` (waits for the broker);
//! * [`Consumer`]: `recv`, then `commit` after processing (at-least-once);
//! * [`payload`]: `ExecutionRequest`, `ProgressMessage`, `CompletionMessage`.
//!
//! Every produced message carries W3C `traceparent`/`tracestate` headers of
//! its `kafka.produce` span; [`Received::span`] continues that trace.

mod consumer;
mod error;
pub mod payload;
mod publisher;
mod ratelimit;
mod settings;
pub mod topics;

pub use consumer::{CLOSE_TIMEOUT, COMMIT_INTERVAL, Consumer, Received, StartFrom};
pub use error::EventsError;
pub use payload::{CompletionMessage, ExecutionRequest, ProgressMessage};
pub use publisher::{DROPPED_METRIC, PUBLISHED_METRIC, Publisher, RESTARTS_METRIC};
pub use settings::{
    ConfigError, KafkaSettings, SETTINGS, SaslCredentials, SaslMechanism, SecurityProtocol, Setting,
};
