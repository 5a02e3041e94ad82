//! The consumer side: one member of a consumer group, at-least-once.
//!
//! Offsets are only committed when the application says it is done with a
//! message ([`Consumer::commit`]), never on receipt: a consumer that dies
//! while processing leaves the message to the next member of its group.
//! Messages may therefore arrive twice; the payloads carry the execution id
//! so processing can be made idempotent.

use std::{
    fmt,
    sync::mpsc,
    time::{Duration, Instant},
};

use imageflow_telemetry::propagation;
use rdkafka::{
    ClientContext, Message,
    consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::Headers,
    topic_partition_list::TopicPartitionList,
};
use serde::de::DeserializeOwned;
use tracing::Span;

use crate::{
    EventsError, KafkaSettings,
    error::{client_error, describe},
    payload,
    publisher::{client_error_log, client_log},
    ratelimit::{LOG_INTERVAL, RateLimitedLog},
};

/// Where a group with no committed offset starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// Everything still on the topic: for work that must not be missed
    /// (execution requests).
    #[default]
    Earliest,
    /// Only what arrives from now on: for live views (progress streams),
    /// usually with a group of one per process.
    Latest,
}

/// One message as received, owned (no borrow of the consumer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The execution id for this project's topics.
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Producer (or broker) time in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Received {
    /// The payload decoded as versioned JSON (see [`crate::payload::decode`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, EventsError> {
        payload::decode(&self.payload)
    }

    /// The first header called `name`, as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The producer's trace context from `traceparent`/`tracestate`.
    pub fn trace_context(&self) -> propagation::Context {
        propagation::context_from_headers(
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        )
    }

    /// A `kafka.consume` span for processing this message, child of the
    /// producer's span, so the work joins the producer's trace. Enter it (or
    /// `.instrument` the processing) right away.
    pub fn span(&self) -> Span {
        let span = tracing::info_span!(
            "kafka.consume",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %self.topic,
            messaging.destination.partition.id = self.partition,
            messaging.kafka.offset = self.offset,
            messaging.kafka.message.key = self.key.as_deref(),
        );
        propagation::set_remote_parent(&span, self.trace_context());
        span
    }
}

struct ConsumerCtx {
    brokers: String,
    group: String,
    client_log: RateLimitedLog,
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(&self.client_log, &self.brokers, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error_log(&self.client_log, &self.brokers, &error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let describe_tpl = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect::<Vec<_>>()
                .join(",")
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(group = %self.group, partitions = %describe_tpl(tpl), "Kafka partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(group = %self.group, partitions = %describe_tpl(tpl), "Kafka partitions revoked")
            }
            Rebalance::Error(err) => {
                tracing::warn!(group = %self.group, "Kafka rebalance failed: {}", describe(err))
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // NoOffset only says there was nothing new to commit.
        if let Err(err) = result
            && err.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            && let Some(count) = self.client_log.hit("commit", Instant::now())
        {
            tracing::warn!(
                brokers = %self.brokers,
                group = %self.group,
                failures = count,
                "committing Kafka offsets failed ({count} since the last report): {}; \
                 those messages will be delivered again",
                describe(&err)
            );
        }
    }
}

/// How long leaving the group may hold the caller when the consumer is
/// closed or dropped. librdkafka's close waits for the group coordinator
/// (leave, pending commits) and, with the brokers gone, can wait forever; a
/// replica shutting down during a Kafka outage must still exit.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the offsets marked by [`Consumer::commit`] are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// A member of consumer group `group_id` on `topics`.
pub struct Consumer {
    /// `None` only once closing has begun.
    inner: Option<StreamConsumer<ConsumerCtx>>,
    brokers: String,
    group: String,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Joins `group_id` and subscribes to `topics`, starting from the earliest
    /// message when the group has no committed offset.
    pub fn new(
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
    ) -> Result<Self, EventsError> {
        Self::with_start(settings, group_id, topics, StartFrom::Earliest)
    }

    /// [`Consumer::new`] choosing where a group without offsets starts.
    pub fn with_start(
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[&str],
        start: StartFrom,
    ) -> Result<Self, EventsError> {
        let mut config = settings.client_config(group_id);
        config
            .set("group.id", group_id)
            // Offsets move only through `commit`, after processing: it marks
            // (stores) the offset, and librdkafka commits what is marked
            // every COMMIT_INTERVAL, on a rebalance and on close. One commit
            // request per interval instead of one per message; a member that
            // dies loses at most the last interval's marks, and those messages
            // come again (at-least-once, as before).
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                COMMIT_INTERVAL.as_millis().to_string(),
            )
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("reconnect.backoff.max.ms", "1000")
            // A replica that dies gives up its partitions within 10 s (the
            // Kafka default until 3.0), not 45 s: queued executions wait on
            // them. Heartbeats every second keep a live member well inside.
            .set("session.timeout.ms", "10000")
            // How long a fetch may wait for data (KAFKA_FETCH_WAIT_MAX_MS).
            // Kafka answers a waiting fetch as soon as a message arrives, but
            // tansu holds every fetch for the whole wait, so there a message
            // reaches the consumer up to one wait (idle) or two (busy: it
            // comes in behind a fetch that already found data) after it was
            // produced: librdkafka's 500 ms default was queue mode's p50
            // overhead, 20 ms still cost ~30 ms per queued execution under load.
            .set(
                "fetch.wait.max.ms",
                settings.fetch_wait.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000");
        let ctx = ConsumerCtx {
            brokers: settings.brokers.clone(),
            group: group_id.to_string(),
            client_log: RateLimitedLog::new(LOG_INTERVAL),
        };
        let inner: StreamConsumer<ConsumerCtx> = config
            .create_with_context(ctx)
            .map_err(|e| client_error(&settings.brokers, &e))?;
        inner.subscribe(topics).map_err(|e| EventsError::Client {
            brokers: settings.brokers.clone(),
            message: format!("subscribing to {}: {}", topics.join(","), describe(&e)),
        })?;
        Ok(Self {
            inner: Some(inner),
            brokers: settings.brokers.clone(),
            group: group_id.to_string(),
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next message of the partitions assigned to this member. Waits as
    /// long as it takes (wrap it in a timeout or a `select!` with shutdown);
    /// cancel-safe. An error is usually transient (a broker restarting, a
    /// topic not created yet): log it and call again.
    pub async fn recv(&self) -> Result<Received, EventsError> {
        let message = self
            .stream()?
            .recv()
            .await
            .map_err(|e| EventsError::Consume {
                brokers: self.brokers.clone(),
                message: describe(&e),
            })?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        (
                            header.key.to_string(),
                            header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Received {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        })
    }

    /// Marks `message` (and everything before it on its partition) as
    /// processed; the mark is committed within [`COMMIT_INTERVAL`], on a
    /// rebalance or when the consumer closes. Call it after the work is done:
    /// until the commit, a restart of this member or a rebalance delivers the
    /// message again. Fails at once when the partition is no longer assigned
    /// to this member (it moved in a rebalance; the new owner will get the
    /// message again).
    pub fn commit(&self, message: &Received) -> Result<(), EventsError> {
        // store_offset records offset + 1 (the next to read) for this member;
        // the periodic commit sends what is stored, in the background, so a
        // slow broker never stalls the caller. Commit failures are logged by
        // the commit callback; the worst case is a redelivery.
        self.stream()?
            .store_offset(&message.topic, message.partition, message.offset)
            .map_err(|err| EventsError::Commit {
                brokers: self.brokers.clone(),
                topic: message.topic.clone(),
                partition: message.partition,
                offset: message.offset,
                message: describe(&err),
            })
    }

    fn stream(&self) -> Result<&StreamConsumer<ConsumerCtx>, EventsError> {
        self.inner.as_ref().ok_or_else(|| EventsError::Client {
            brokers: self.brokers.clone(),
            message: "consumer already closed".into(),
        })
    }

    /// Leaves the group (finishing pending commits) without blocking the
    /// runtime, waiting at most [`CLOSE_TIMEOUT`]. Returns whether it left in
    /// time; if not, the close goes on in the background until it can.
    pub async fn close(mut self) -> bool {
        let Some(done) = self.begin_close() else {
            return true;
        };
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        loop {
            match done.try_recv() {
                Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return true,
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= deadline => {
                    self.warn_slow_close();
                    return false;
                }
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Moves librdkafka's close (rdkafka runs it on drop) to a thread of its
    /// own; the receiver says when it is done.
    fn begin_close(&mut self) -> Option<mpsc::Receiver<()>> {
        let inner = self.inner.take()?;
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                drop(inner);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => Some(finished),
            Err(err) => {
                // No thread to spare: the close is simply not waited for
                // (the consumer was moved into the failed closure and is
                // dropped with it, here).
                tracing::warn!(group = %self.group, "closing the Kafka consumer: {err}");
                None
            }
        }
    }

    fn warn_slow_close(&self) {
        tracing::warn!(
            brokers = %self.brokers,
            group = %self.group,
            "Kafka consumer did not leave its group within {CLOSE_TIMEOUT:?} \
             (brokers unreachable?); the group rebalances after its session timeout"
        );
    }
}

impl Drop for Consumer {
    /// Dropping closes as [`Consumer::close`] does, blocking the dropping
    /// thread for at most [`CLOSE_TIMEOUT`]; prefer `close().await` in async
    /// code.
    fn drop(&mut self) {
        if let Some(done) = self.begin_close()
            && done.recv_timeout(CLOSE_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout)
        {
            self.warn_slow_close();
        }
    }
}
