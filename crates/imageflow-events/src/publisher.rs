//! The producer side: [`Publisher::publish`] for events whose loss is
//! tolerable (progress, completion in direct mode) and never blocks nor fails
//! the caller; [`Publisher::send`] for the few whose loss must be an error
//! (queue-mode submission).
//!
//! Each method has its own librdkafka producer (acks=all, one request in
//! flight): `publish` lingers `KAFKA_LINGER_MS` so a busy process sends its
//! events in few, full batches (for a broker, each batch of each partition is
//! a write), while `send` never lingers, its caller waiting for the
//! acknowledgement; it is built on the first `send` (the services never
//! call it). Messages of one key stay in order among those sent by the same
//! method; the project sends each topic through one method only (queue-mode
//! submissions through `send`, progress and completions through `publish`).
//! librdkafka keeps its own bounded queue, retries and reconnects in its
//! threads; delivery reports come back on the polling thread of a
//! [`ThreadedProducer`], where they are counted (and, for `send`, handed to
//! the waiting caller).

use std::{
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use imageflow_telemetry::{
    metrics::{Kind, Registry},
    propagation, spans,
};
use rdkafka::{
    ClientContext,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode,
};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::Span;

use crate::{
    EventsError, KafkaSettings,
    error::{client_error, describe},
    payload,
    ratelimit::{LOG_INTERVAL, RateLimitedLog},
};

pub const PUBLISHED_METRIC: &str = "imageflow_events_published_total";
const PUBLISHED_HELP: &str = "Events the Kafka brokers acknowledged, by topic";
pub const DROPPED_METRIC: &str = "imageflow_events_dropped_total";
const DROPPED_HELP: &str = "Events given up without reaching Kafka, by topic and reason \
     (queue_full, too_large, timeout, broker_error, encode, shutdown)";

pub const RESTARTS_METRIC: &str = "imageflow_events_producer_restarts_total";
const RESTARTS_HELP: &str =
    "Kafka producers recreated after a fatal error or a stretch with no acknowledgement";

/// librdkafka's in-memory queue bounds: events beyond these are dropped as
/// `queue_full` instead of growing memory while the brokers are away. 100k
/// progress events (~300 B each) is minutes of a busy backend.
const QUEUE_MAX_MESSAGES: u32 = 100_000;
const QUEUE_MAX_KBYTES: u32 = 64 * 1024;

/// How long `send` keeps retrying a full local queue before giving up (it
/// still never waits past the delivery timeout).
const SEND_QUEUE_RETRY: Duration = Duration::from_millis(20);

/// How often `flush` looks at the queue.
const FLUSH_POLL: Duration = Duration::from_millis(5);

/// Why an event was given up, as the `reason` label says it.
fn reason_of(err: &KafkaError) -> &'static str {
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "queue_full",
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => "shutdown",
        _ => "broker_error",
    }
}

/// What travels with each message to its delivery report.
struct Delivery {
    topic: &'static str,
    /// The `kafka.produce` span, kept open until the broker answers so its
    /// duration is the real produce latency.
    span: Span,
    /// `Some` for [`Publisher::send`]: the caller waits for this.
    reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// Counting, logging and the producer's health, shared by the producer
/// context (delivery reports) and the publisher.
struct Accounting {
    brokers: String,
    drops_log: RateLimitedLog,
    client_log: RateLimitedLog,
    /// Set when the producer looks stuck (see [`Accounting::failed`]) or hit
    /// a fatal error; the next publish builds a new producer.
    rebuild: AtomicBool,
    /// Failing for this long without a single acknowledgement counts as stuck.
    stuck_after: Duration,
    /// Milliseconds since `epoch` of the last acknowledgement and of the last
    /// rebuild (atomics: delivery reports arrive on librdkafka's thread).
    epoch: Instant,
    last_success_ms: AtomicU64,
    last_rebuild_ms: AtomicU64,
}

impl Accounting {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn published(&self, topic: &'static str) {
        self.last_success_ms.store(self.now_ms(), Ordering::Relaxed);
        Registry::global().inc(PUBLISHED_METRIC, PUBLISHED_HELP, &[("topic", topic)]);
    }

    /// A delivery failed. The producer is not rebuilt for that: without
    /// idempotence it needs no producer id, so it simply delivers again once
    /// the brokers are back (even a broker that lost its state, like tansu
    /// with memory storage). Rebuilding, and dropping the old producer while
    /// its purged reports are in flight, crashed the process (SIGSEGV inside
    /// librdkafka, seen in the broker-outage tests); only a fatal error
    /// rebuilds now.
    fn failed(&self) {}

    fn dropped(&self, topic: &'static str, reason: &'static str, detail: &str) {
        Registry::global().inc(
            DROPPED_METRIC,
            DROPPED_HELP,
            &[("topic", topic), ("reason", reason)],
        );
        if let Some(count) = self.drops_log.hit(reason, Instant::now()) {
            tracing::warn!(
                brokers = %self.brokers,
                topic,
                reason,
                dropped = count,
                "Kafka events dropped ({count} since the last report, {reason}): {detail}; \
                 the pipeline goes on, events resume when the brokers answer"
            );
        }
    }
}

struct ProducerCtx(Arc<Accounting>);

impl ClientContext for ProducerCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(&self.0.client_log, &self.0.brokers, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            // A fatal error (for example an idempotence sequence the broker
            // cannot accept any more) leaves the producer unusable; flag it so
            // the next publish starts over instead of dropping forever.
            self.0.rebuild.store(true, Ordering::Release);
            tracing::error!(brokers = %self.0.brokers, "Kafka producer failed for good, it will be recreated: {reason}");
            return;
        }
        client_error_log(&self.0.client_log, &self.0.brokers, &error, reason);
    }
}

/// librdkafka's own log lines (connection refused, ...), at most one per
/// facility and interval, at debug level below warnings.
pub(crate) fn client_log(
    limiter: &RateLimitedLog,
    brokers: &str,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            if let Some(count) = limiter.hit(fac, Instant::now()) {
                tracing::warn!(target: "librdkafka", brokers, facility = fac, occurrences = count, "librdkafka: {message}");
            }
        }
        L::Notice | L::Info => {
            tracing::info!(target: "librdkafka", brokers, facility = fac, "librdkafka: {message}")
        }
        L::Debug => {
            tracing::debug!(target: "librdkafka", brokers, facility = fac, "librdkafka: {message}")
        }
    }
}

/// librdkafka's error events ("all brokers down", ...), rate limited per code.
pub(crate) fn client_error_log(
    limiter: &RateLimitedLog,
    brokers: &str,
    error: &KafkaError,
    reason: &str,
) {
    let key = error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
    if let Some(count) = limiter.hit(&key, Instant::now()) {
        tracing::warn!(target: "librdkafka", brokers, occurrences = count, "Kafka client error: {}: {reason}", describe(error));
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        let Delivery { topic, span, reply } = *delivery;
        match result {
            Ok(_) => {
                self.0.published(topic);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Err((err, _)) => {
                self.0.failed();
                let detail = describe(err);
                spans::record_error(&span, &detail);
                match reply {
                    // The caller of `send` gets the error and decides; it is
                    // not a silent drop.
                    Some(reply) => {
                        let _ = reply.send(Err(detail));
                    }
                    None => self.0.dropped(topic, reason_of(err), &detail),
                }
            }
        }
        drop(span);
    }
}

/// A cheap-to-clone handle on the producers (clones share them).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

type KafkaProducer = ThreadedProducer<ProducerCtx>;

/// Which producer a message goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// [`Publisher::publish`]: lingers to batch.
    Events,
    /// [`Publisher::send`]: sends at once.
    Awaited,
}

struct Inner {
    settings: KafkaSettings,
    source: String,
    accounting: Arc<Accounting>,
    events: RwLock<Arc<KafkaProducer>>,
    /// Built on the first `send`.
    awaited: RwLock<Option<Arc<KafkaProducer>>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("brokers", &self.inner.settings.brokers)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

fn build_producer(
    settings: &KafkaSettings,
    source: &str,
    accounting: &Arc<Accounting>,
    lane: Lane,
) -> Result<KafkaProducer, EventsError> {
    let linger = match lane {
        Lane::Events => settings.linger,
        // Its caller waits for the acknowledgement: nothing to gain from
        // holding the message back.
        Lane::Awaited => Duration::ZERO,
    };
    let mut config = settings.client_config(source);
    config
        // acks=all: an event counts as delivered once every in-sync replica
        // has it. Not idempotent: an idempotent producer keeps a producer id
        // that a restarted broker may have forgotten, and then never delivers
        // again (see `Accounting::failed`). One request in flight per
        // connection keeps per-key order across retries instead; a retried
        // event may arrive twice, which consumers keyed by execution id and
        // status already tolerate (at-least-once).
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("acks", "all")
        // lz4 is built into librdkafka (no extra system library) and cheap
        // on CPU; progress JSON compresses well.
        .set("compression.type", "lz4")
        // Events: KAFKA_LINGER_MS, so a busy process writes few, full
        // batches (and a broker stores each batch of each partition as one
        // write). Awaited sends: none.
        .set("linger.ms", linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        .set("message.max.bytes", settings.message_max_bytes.to_string())
        .set(
            "queue.buffering.max.messages",
            QUEUE_MAX_MESSAGES.to_string(),
        )
        .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string())
        // Reconnect quickly once the brokers are back (the default backs off
        // up to 10 s), so publishing resumes soon after an outage.
        .set("reconnect.backoff.max.ms", "1000");
    config
        .create_with_context(ProducerCtx(accounting.clone()))
        .map_err(|e| client_error(&settings.brokers, &e))
}

impl Publisher {
    /// A producer for `settings`. `source` names this process in events and
    /// is the default `client.id` (e.g. `imageflow-backend-api`). Nothing is
    /// sent yet: a broker that is down now does not stop the start.
    pub fn new(settings: &KafkaSettings, source: &str) -> Result<Self, EventsError> {
        let registry = Registry::global();
        // Declared up front so dashboards and alerts see 0, not "no data".
        registry.describe(PUBLISHED_METRIC, Kind::Counter, PUBLISHED_HELP);
        registry.describe(DROPPED_METRIC, Kind::Counter, DROPPED_HELP);
        registry.describe(RESTARTS_METRIC, Kind::Counter, RESTARTS_HELP);
        let accounting = Arc::new(Accounting {
            brokers: settings.brokers.clone(),
            drops_log: RateLimitedLog::new(LOG_INTERVAL),
            client_log: RateLimitedLog::new(LOG_INTERVAL),
            rebuild: AtomicBool::new(false),
            stuck_after: settings.delivery_timeout * 2,
            epoch: Instant::now(),
            last_success_ms: AtomicU64::new(0),
            last_rebuild_ms: AtomicU64::new(0),
        });
        let producer = build_producer(settings, source, &accounting, Lane::Events)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                source: source.to_string(),
                accounting,
                events: RwLock::new(Arc::new(producer)),
                awaited: RwLock::new(None),
            }),
        })
    }

    /// The service name given to [`Publisher::new`], for the `source` of
    /// progress events.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.inner.settings
    }

    /// The producer of `lane`. After a fatal error both are replaced first
    /// (the awaited one on its next use).
    fn producer(&self, lane: Lane) -> Arc<KafkaProducer> {
        let inner = &self.inner;
        let accounting = &inner.accounting;
        if accounting.rebuild.swap(false, Ordering::AcqRel) {
            match build_producer(&inner.settings, &inner.source, accounting, Lane::Events) {
                Ok(fresh) => {
                    let now = accounting.now_ms();
                    accounting.last_rebuild_ms.store(now, Ordering::Relaxed);
                    // A fresh producer gets a full window before it can be
                    // judged stuck.
                    accounting.last_success_ms.store(now, Ordering::Relaxed);
                    let old = std::mem::replace(
                        &mut *inner.events.write().unwrap_or_else(|p| p.into_inner()),
                        Arc::new(fresh),
                    );
                    let old_awaited = inner
                        .awaited
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    // Dropping a producer joins its thread and waits up to
                    // 500 ms for purged reports: not on the caller's time.
                    std::thread::spawn(move || drop((old, old_awaited)));
                    Registry::global().inc(RESTARTS_METRIC, RESTARTS_HELP, &[]);
                    tracing::warn!(
                        brokers = %inner.settings.brokers,
                        "Kafka producer recreated: nothing was acknowledged for {:?}",
                        accounting.stuck_after
                    );
                }
                Err(err) => {
                    // Try again on the next event.
                    accounting.rebuild.store(true, Ordering::Release);
                    tracing::error!("recreating the Kafka producer: {err}");
                }
            }
        }
        let events = || {
            inner
                .events
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        if lane == Lane::Events {
            return events();
        }
        if let Some(awaited) = &*inner.awaited.read().unwrap_or_else(|p| p.into_inner()) {
            return awaited.clone();
        }
        let mut slot = inner.awaited.write().unwrap_or_else(|p| p.into_inner());
        if let Some(awaited) = &*slot {
            return awaited.clone();
        }
        match build_producer(&inner.settings, &inner.source, accounting, Lane::Awaited) {
            Ok(fresh) => slot.insert(Arc::new(fresh)).clone(),
            Err(err) => {
                // The events producer delivers too, only lingering first.
                tracing::error!("building the Kafka producer for awaited sends: {err}");
                drop(slot);
                events()
            }
        }
    }

    /// The producers built so far.
    fn producers(&self) -> Vec<Arc<KafkaProducer>> {
        let inner = &self.inner;
        let mut all = vec![self.producer(Lane::Events)];
        all.extend(
            inner
                .awaited
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        all
    }

    /// Hands `payload` (as versioned JSON, keyed by `key`) to the background
    /// producer and returns at once. It never fails the caller: an event that
    /// cannot be delivered (queue full, too large, brokers away past the
    /// delivery timeout) is counted in `imageflow_events_dropped_total` and
    /// logged at most once per 30 s per reason.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &'static str,
        key: &str,
        payload: &T,
        headers: Vec<(String, String)>,
    ) {
        let bytes = match payload::encode(payload) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.inner
                    .accounting
                    .dropped(topic, "encode", &err.to_string());
                return;
            }
        };
        let span = produce_span(topic, key);
        let record_headers = message_headers(&span, headers);
        let delivery = Box::new(Delivery {
            topic,
            span,
            reply: None,
        });
        let record = BaseRecord::with_opaque_to(topic, delivery)
            .key(key)
            .payload(&bytes)
            .headers(record_headers);
        if let Err((err, record)) = self.producer(Lane::Events).send(record) {
            // Refused before queueing (queue full, too large): no delivery
            // report will come, so count it here.
            let detail = describe(&err);
            spans::record_error(&record.delivery_opaque.span, &detail);
            self.inner
                .accounting
                .dropped(topic, reason_of(&err), &detail);
        }
    }

    /// Like [`Publisher::publish`] but waits for the brokers' acknowledgement
    /// and returns the failure instead of counting it: for events whose loss
    /// must be an error. Takes at most the delivery timeout (plus the wait for
    /// room when the local queue is full, bounded by the same timeout).
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        topic: &'static str,
        key: &str,
        payload: &T,
        headers: Vec<(String, String)>,
    ) -> Result<(), EventsError> {
        let bytes = payload::encode(payload)?;
        let span = produce_span(topic, key);
        let mut record_headers = message_headers(&span, headers);
        let delivery_error = |message: String| EventsError::Delivery {
            brokers: self.inner.settings.brokers.clone(),
            topic: topic.to_string(),
            message,
        };
        let deadline = Instant::now() + self.inner.settings.delivery_timeout;
        let mut span = Some(span);
        let receiver = loop {
            let (reply, receiver) = oneshot::channel();
            let delivery = Box::new(Delivery {
                topic,
                span: span.take().unwrap_or_else(Span::none),
                reply: Some(reply),
            });
            let record = BaseRecord::with_opaque_to(topic, delivery)
                .key(key)
                .payload(&bytes)
                .headers(record_headers);
            match self.producer(Lane::Awaited).send(record) {
                Ok(()) => break receiver,
                Err((err, record))
                    if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && Instant::now() < deadline =>
                {
                    // Wait for room rather than fail: the queue drains as
                    // fast as the brokers acknowledge.
                    record_headers = record.headers.unwrap_or_default();
                    span = Some(record.delivery_opaque.span);
                    tokio::time::sleep(SEND_QUEUE_RETRY).await;
                }
                Err((err, record)) => {
                    let detail = describe(&err);
                    spans::record_error(&record.delivery_opaque.span, &detail);
                    return Err(delivery_error(detail));
                }
            }
        };
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(detail)) => Err(delivery_error(detail)),
            // The producer was replaced and dropped without reporting this
            // message.
            Err(_) => Err(delivery_error("producer closed before delivery".into())),
        }
    }

    /// Waits up to `timeout` for queued events to be delivered (call before
    /// exit: events still queued when the last clone is dropped are lost).
    pub async fn flush(&self, timeout: Duration) -> Result<(), EventsError> {
        // librdkafka's own flush blocks its thread; the polling thread of the
        // ThreadedProducer already serves delivery reports, so watching the
        // count from here waits the same without holding a runtime thread.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending = self.in_flight();
            if pending == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EventsError::FlushIncomplete {
                    brokers: self.inner.settings.brokers.clone(),
                    pending,
                    timeout,
                });
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    /// Events queued or awaiting acknowledgement right now (both producers).
    pub fn in_flight(&self) -> i32 {
        self.producers()
            .iter()
            .map(|producer| producer.in_flight_count())
            .sum()
    }
}

/// The `kafka.produce` span of one message, child of the current span.
fn produce_span(topic: &'static str, key: &str) -> Span {
    tracing::info_span!(
        "kafka.produce",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.kafka.message.key = key,
    )
}

/// W3C trace context of the produce span (so the consumer's span joins this
/// trace), then the caller's headers. A caller header named like a trace
/// header is left out: the span is the source of truth.
fn message_headers(span: &Span, caller: Vec<(String, String)>) -> OwnedHeaders {
    let trace = propagation::headers_for(span);
    let mut headers = OwnedHeaders::new_with_capacity(trace.len() + caller.len());
    for (key, value) in &trace {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    for (key, value) in &caller {
        if trace.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}
