//! The backend's side of Kafka (topics and payloads: `imageflow-events`):
//!
//! * every progress event of this replica goes to `pipeline-progress` and
//!   every ending to `pipeline-completed` (never blocking a run: the
//!   publisher counts what it cannot deliver);
//! * the live streams of this replica also show the progress of executions
//!   other replicas run (a consumer of `pipeline-progress`, one group per
//!   replica, starting from the latest message);
//! * in queue mode, `POST /v1/executions` records the execution and produces
//!   it to `pipeline-executions`; every replica consumes that topic in one
//!   group and runs what it is assigned. A message is committed once the
//!   execution is claimed in the database (pending → running by this
//!   replica), so a replica dying before that leaves it to another; one dying
//!   after that is found by [`crate::liveness`] and requeued (at most
//!   [`crate::liveness::MAX_REQUEUES`] times). A message delivered twice finds
//!   its execution no longer pending and is skipped.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use imageflow_events::{
    CompletionMessage, Consumer, ExecutionRequest, KafkaSettings, ProgressMessage, Publisher,
    Received, StartFrom, topics,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    db::Db,
    engine::Engine,
    events::{EventHub, Forward, ProgressEvent},
    executions::{self, ExecutionQueue},
    model::ExecutionStatus,
};

/// Consumer group of the execution queue, shared by every replica.
pub const EXECUTIONS_GROUP: &str = "imageflow-backend-executions";
/// Header naming the replica that produced a progress event.
const ORIGIN: &str = "imageflow-origin";
/// `source` of the backend's progress messages.
pub const SOURCE: &str = "imageflow-backend-api";
/// Brokers that are not up yet are asked again from half a second to every 30 s.
const TOPICS_BACKOFF: imageflow_retry::Backoff =
    imageflow_retry::Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(30));

/// How executions reach a replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutionMode {
    /// `POST /v1/executions` runs the execution in the replica that took it.
    #[default]
    Direct,
    /// Executions go through `pipeline-executions` to whichever replica is assigned them.
    Queue,
}

/// This replica's Kafka clients.
#[derive(Clone, Debug)]
pub struct KafkaLink {
    settings: KafkaSettings,
    publisher: Publisher,
    owner: String,
}

impl KafkaLink {
    /// Builds the producer (no network call yet: a broker that is down only
    /// shows up as counted drops, never as a backend that cannot start).
    pub fn new(
        settings: &KafkaSettings,
        owner: &str,
    ) -> Result<Self, imageflow_events::EventsError> {
        Ok(Self {
            settings: settings.clone(),
            publisher: Publisher::new(settings, SOURCE)?,
            owner: owner.to_string(),
        })
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The hook the event hub calls for each event of this replica.
    pub fn forward(&self) -> Forward {
        let link = self.clone();
        Arc::new(move |event: &ProgressEvent| link.forward_event(event))
    }

    fn forward_event(&self, event: &ProgressEvent) {
        let headers = vec![(ORIGIN.to_string(), self.owner.clone())];
        let message = ProgressMessage {
            execution_id: event.execution_id.clone(),
            step_id: event.step_id.clone(),
            input_index: event.input_index,
            status: event.status.clone(),
            message: event.message.clone(),
            timestamp: event.timestamp.clone(),
            attempt: event.attempt.and_then(|a| u32::try_from(a).ok()),
            processing_time_ms: event.processing_time_ms,
            source: SOURCE.to_string(),
        };
        self.publisher.publish(
            topics::PROGRESS,
            &event.execution_id,
            &message,
            headers.clone(),
        );
        if event.is_final() {
            let completion = CompletionMessage {
                execution_id: event.execution_id.clone(),
                status: event.status.clone(),
                execution_time_ms: event.processing_time_ms,
                output_path: event.output_path.clone(),
                processing_time_ms: event.processing_time_ms,
            };
            self.publisher
                .publish(topics::COMPLETED, &event.execution_id, &completion, headers);
        }
    }

    /// Creates the topics when missing, retrying in the background until the
    /// brokers answer (the backend serves meanwhile).
    pub fn ensure_topics_in_background(&self, stop: CancellationToken) {
        let settings = self.settings.clone();
        tokio::spawn(async move {
            let ensure = imageflow_retry::retry(
                "create the Kafka topics",
                TOPICS_BACKOFF,
                imageflow_retry::Limit::FOREVER,
                |_| true,
                || imageflow_events::topics::ensure_topics(&settings, topics::ALL),
            );
            tokio::select! {
                () = stop.cancelled() => {}
                created = ensure => {
                    if created.is_ok() {
                        tracing::info!(brokers = %settings.brokers, "Kafka topics ready");
                    }
                }
            }
        });
    }

    /// Queue mode: hands a recorded execution to the queue and waits for the
    /// brokers' acknowledgement (a lost request must be an error, not a drop).
    pub async fn enqueue(
        &self,
        request: &ExecutionRequest,
    ) -> Result<(), imageflow_events::EventsError> {
        self.publisher
            .send(
                topics::EXECUTIONS,
                &request.execution_id,
                request,
                Vec::new(),
            )
            .await
    }

    /// Progress of other replicas' executions into this replica's live streams.
    pub fn spawn_progress_consumer(&self, hub: EventHub, stop: CancellationToken) {
        let link = self.clone();
        tokio::spawn(async move {
            let group = format!("imageflow-progress-{}", link.owner);
            // A live view reading every replica's events to show a few: it
            // may wait longer per fetch (fewer, fuller fetches) than the
            // execution queue, whose wait every queued execution pays.
            let settings = KafkaSettings {
                fetch_wait: link.settings.progress_fetch_wait,
                ..link.settings.clone()
            };
            let consumer = match Consumer::with_start(
                &settings,
                &group,
                &[topics::PROGRESS],
                StartFrom::Latest,
            ) {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(error = %err, "cannot consume pipeline-progress; live streams show this replica's executions only");
                    return;
                }
            };
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => return,
                    r = consumer.recv() => r,
                };
                match received {
                    Ok(message) => {
                        if let Some(event) = link.remote_event(&message) {
                            hub.deliver(event);
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "pipeline-progress consumer");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }

    /// A progress message of another backend replica, as a live-stream event.
    fn remote_event(&self, message: &Received) -> Option<ProgressEvent> {
        if message.header(ORIGIN) == Some(self.owner.as_bytes()) {
            return None;
        }
        let progress: ProgressMessage = message.json().ok()?;
        // Services report their own calls too; the execution's stream is the
        // backend's view of it.
        if progress.source != SOURCE {
            return None;
        }
        Some(ProgressEvent {
            execution_id: progress.execution_id,
            step_id: progress.step_id,
            input_index: progress.input_index,
            status: progress.status,
            message: progress.message,
            timestamp: progress.timestamp,
            attempt: progress.attempt.and_then(|a| i32::try_from(a).ok()),
            processing_time_ms: progress.processing_time_ms,
            output_path: None,
        })
    }

    /// Queue mode: takes executions assigned to this replica while it has
    /// room for them.
    pub fn spawn_execution_consumer(&self, engine: Engine, db: Db, stop: CancellationToken) {
        let link = self.clone();
        tokio::spawn(async move {
            let consumer = match Consumer::new(
                &link.settings,
                EXECUTIONS_GROUP,
                &[topics::EXECUTIONS],
            ) {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(error = %err, "cannot consume pipeline-executions: this replica runs no queued executions");
                    return;
                }
            };
            tracing::info!(group = EXECUTIONS_GROUP, "taking queued executions");
            loop {
                // Only as much as can run now: the rest stays in Kafka for
                // the other replicas.
                while engine.room() == 0 {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
                let received = tokio::select! {
                    () = stop.cancelled() => return,
                    r = consumer.recv() => r,
                };
                let message = match received {
                    Ok(m) => m,
                    Err(err) => {
                        tracing::debug!(error = %err, "pipeline-executions consumer");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let span = message.span();
                let done = take(&engine, &db, &message).instrument(span).await;
                if done && let Err(err) = consumer.commit(&message) {
                    // Not fatal: the message comes again and is skipped as taken.
                    tracing::warn!(error = %err, "cannot commit a queued execution's offset");
                }
            }
        });
    }
}

impl ExecutionQueue for KafkaLink {
    fn enqueue<'a>(
        &'a self,
        request: &'a ExecutionRequest,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            KafkaLink::enqueue(self, request)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Runs one queued execution if it still waits; `true` when its message can
/// be committed (claimed here, or nothing left to do).
async fn take(engine: &Engine, db: &Db, message: &Received) -> bool {
    let request: ExecutionRequest = match message.json() {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(error = %err, partition = message.partition, offset = message.offset, "unreadable execution request; skipped");
            return true;
        }
    };
    if engine.is_live(&request.execution_id) {
        // A second delivery of what runs here (a rebalance before its commit).
        tracing::info!(execution_id = %request.execution_id, "queued execution already running here; skipped");
        return true;
    }
    // The message carries what the accepting replica recorded: no reads
    // before the claim, which alone decides whether this replica runs it.
    match executions::queued_submission(&request, engine.buckets(), message.trace_context()) {
        Ok(Some((submission, claimed))) => {
            run_claimed(engine, &request.execution_id, submission, claimed).await
        }
        Ok(None) => take_stored(engine, db, &request.execution_id, message).await,
        Err(reason) => {
            let id = &request.execution_id;
            tracing::warn!(execution_id = %id, reason = %reason, "queued execution cannot run");
            // Only a pending execution is failed: a duplicate of a finished one is left alone.
            if matches!(
                db.execution_owner(id).await,
                Ok(Some((ExecutionStatus::Pending, _, _)))
            ) {
                let _ = executions::fail(db, id, &reason).await;
            }
            true
        }
    }
}

/// Submits a queued execution and waits for its claim: `true` once claimed
/// here or found taken (either way its message is done).
async fn run_claimed(
    engine: &Engine,
    id: &str,
    submission: crate::engine::Submission,
    claimed: tokio::sync::oneshot::Receiver<bool>,
) -> bool {
    match engine.submit(submission) {
        Ok(()) => matches!(
            tokio::time::timeout(Duration::from_secs(30), claimed).await,
            Ok(Ok(_))
        ),
        Err(err) => {
            tracing::warn!(execution_id = %id, error = %err, "cannot take a queued execution now");
            false
        }
    }
}

/// [`take`] for a message without the run's parts (an older producer): the
/// record is read back from the database.
async fn take_stored(engine: &Engine, db: &Db, id: &str, message: &Received) -> bool {
    let state = match db.execution_owner(id).await {
        Ok(state) => state,
        Err(err) => {
            // Not committed: it comes again once the database answers.
            tracing::warn!(execution_id = %id, error = %err, "cannot read a queued execution; will retry");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return false;
        }
    };
    match state {
        None => {
            tracing::warn!(execution_id = %id, "queued execution unknown to the database; skipped");
            true
        }
        Some((ExecutionStatus::Pending, _, _)) => {
            match executions::stored_submission(db, engine.buckets(), id, message.trace_context())
                .await
            {
                Ok((submission, claimed)) => run_claimed(engine, id, submission, claimed).await,
                Err(reason) => {
                    let _ = executions::fail(db, id, &reason).await;
                    true
                }
            }
        }
        Some((status, owner, _)) => {
            tracing::info!(execution_id = %id, status = status.as_str(), owner = %owner, "queued execution already taken; skipped");
            true
        }
    }
}
