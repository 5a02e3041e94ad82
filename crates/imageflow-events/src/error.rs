//! Errors that say what to check: which brokers, which topic, which setting.

use std::time::Duration;

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// librdkafka refused the configuration (a bad property value).
    #[error("Kafka client for {brokers}: invalid configuration: {message}")]
    Config { brokers: String, message: String },

    /// The client could not be created or subscribed.
    #[error("Kafka client for {brokers}: {message}")]
    Client { brokers: String, message: String },

    /// Creating topics failed (the broker said no, or did not answer in time).
    #[error("creating topic {topic} on {brokers}: {message}")]
    CreateTopic {
        brokers: String,
        topic: String,
        message: String,
    },

    #[error("Kafka brokers {brokers} did not answer within {timeout:?} while {doing}")]
    Timeout {
        brokers: String,
        doing: &'static str,
        timeout: Duration,
    },

    /// A message was not delivered (`send`), with librdkafka's reason.
    #[error("delivering to topic {topic} on {brokers} failed: {message}")]
    Delivery {
        brokers: String,
        topic: String,
        message: String,
    },

    /// Receiving failed (consumer).
    #[error("consuming from {brokers}: {message}")]
    Consume { brokers: String, message: String },

    /// Storing or committing an offset failed; the message will be delivered
    /// again (to this or another consumer of the group).
    #[error("committing {topic}[{partition}]@{offset} on {brokers}: {message}")]
    Commit {
        brokers: String,
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },

    /// Messages still queued when `flush` gave up.
    #[error("{pending} events still queued for {brokers} after {timeout:?}")]
    FlushIncomplete {
        brokers: String,
        pending: i32,
        timeout: Duration,
    },

    #[error("event payload cannot be encoded as a JSON object: {0}")]
    Encode(String),

    #[error("event payload cannot be decoded: {0}")]
    Decode(String),

    #[error(
        "event payload has version {found}; this build supports version {supported} only (upgrade the consumer)"
    )]
    UnsupportedVersion { found: String, supported: u32 },
}

/// librdkafka's text for `err`, with the value of a secret property left out
/// (a configuration error repeats the offending value).
pub(crate) fn describe(err: &KafkaError) -> String {
    match err {
        KafkaError::ClientConfig(_, desc, key, _) if key.contains("password") => {
            format!("{desc} ({key}=<redacted>)")
        }
        KafkaError::ClientConfig(_, desc, key, value) => format!("{desc} ({key}={value})"),
        other => match other.rdkafka_error_code() {
            // "Message timed out" etc. read better without the wrapper text.
            Some(code) => code.to_string(),
            None => other.to_string(),
        },
    }
}

pub(crate) fn client_error(brokers: &str, err: &KafkaError) -> EventsError {
    match err {
        KafkaError::ClientConfig(..) => EventsError::Config {
            brokers: brokers.to_string(),
            message: describe(err),
        },
        _ => EventsError::Client {
            brokers: brokers.to_string(),
            message: describe(err),
        },
    }
}
