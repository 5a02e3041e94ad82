//! The event topics and their creation at start (brokers such as tansu do
//! not create topics on first use, and a managed cluster should not).

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};

use crate::{
    EventsError, KafkaSettings,
    error::{client_error, describe},
};

/// Execution requests, consumed by the backend replicas as one group.
pub const EXECUTIONS: &str = "pipeline-executions";
/// Step transitions and service progress.
pub const PROGRESS: &str = "pipeline-progress";
/// One event per finished execution.
pub const COMPLETED: &str = "pipeline-completed";
/// All three, for a process that creates everything at start.
pub const ALL: &[&str] = &[EXECUTIONS, PROGRESS, COMPLETED];

/// How long topic creation may take in all. A broker that does not answer in
/// this time is reported, so start-up fails with a message instead of hanging.
pub const ENSURE_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the missing ones among `topics` with the configured partitions and
/// replication; topics that already exist are left as they are (their
/// partition count is not changed, which would move keys between partitions).
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[&str]) -> Result<(), EventsError> {
    ensure_topics_within(settings, topics, ENSURE_TIMEOUT).await
}

/// [`ensure_topics`] with an explicit bound.
pub async fn ensure_topics_within(
    settings: &KafkaSettings,
    topics: &[&str],
    timeout: Duration,
) -> Result<(), EventsError> {
    if topics.is_empty() {
        return Ok(());
    }
    let mut config = settings.client_config("imageflow-admin");
    // Without this the admin client retries a dead bootstrap list forever in
    // the background; the call below is bounded anyway.
    config.set("socket.timeout.ms", timeout.as_millis().to_string());
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| client_error(&settings.brokers, &e))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.topic_partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    // request_timeout bounds the round trip, operation_timeout how long the
    // controller may take to create them; the outer timeout covers the
    // bootstrap connection, which neither of those does.
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout, admin.create_topics(&new_topics, &options))
        .await
        .map_err(|_| EventsError::Timeout {
            brokers: settings.brokers.clone(),
            doing: "creating topics",
            timeout,
        })?
        .map_err(|e| EventsError::CreateTopic {
            brokers: settings.brokers.clone(),
            topic: topics.join(","),
            message: describe(&e),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(EventsError::CreateTopic {
                    brokers: settings.brokers.clone(),
                    topic,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
