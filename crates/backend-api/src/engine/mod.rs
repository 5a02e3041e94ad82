//! The pipeline engine: runs each execution's DAG by calling the resident
//! services directly. A step starts as soon as all its dependencies are done
//! (so the steps of one level run in parallel, and a fast branch never waits
//! for a slow sibling), images move between steps as object references, and
//! every transition is persisted and published.
//!
//! An execution runs on one or more inputs; each input goes through the whole
//! DAG as its own unit of work ([`run`]), up to `max_parallel_inputs` of one
//! execution at once, and one input failing does not stop the others.
//!
//! Limits: at most `max_parallel` executions run at once per replica; the rest
//! wait (status `pending`) up to `max_queued`. Each input's run has the
//! execution deadline, each attempt of each step has its own, and a cancel
//! stops work in flight (dropping a call cancels the RPC at the service).
//!
//! The parts: [`run`] is an execution's lifecycle (slot, claim, deadline,
//! ending), [`dag`] its scheduling, [`step`] the policy of one step (retry,
//! backoff, fallback, skip, backpressure), [`caller`] the seam to the services.
//! Replica liveness (heartbeats, reaping) is [`crate::liveness`].

mod caller;
mod dag;
mod outputs;
mod run;
mod step;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use imageflow_proto::v1::ImageData;
use imageflow_storage::Store;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use caller::{CallFuture, CallRequest, StepCaller};
pub use dag::initial_records;
pub use outputs::OutputTarget;

use crate::{
    dag::Plan,
    db::{Db, Timestamp},
    events::{EventHub, ProgressEvent},
    executions::Buckets,
    metrics::Metrics,
    model::ExecutionStatus,
};

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub max_parallel: usize,
    /// Inputs of one execution that run at once.
    pub max_parallel_inputs: usize,
    pub max_queued: usize,
    pub execution_timeout: Duration,
    /// Overrides the per-component default attempt deadline.
    pub step_timeout: Option<Duration>,
}

/// Handle to the engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    caller: Arc<dyn StepCaller>,
    /// Where a service's output lives when its reply names no bucket.
    default_bucket: String,
    /// For copies of final images to a pipeline's `outputPath`.
    store: Store,
    /// The buckets executions may read from and copy to.
    buckets: Buckets,
    events: EventHub,
    metrics: Metrics,
    settings: EngineSettings,
    /// This replica's id: owner of the executions it runs.
    owner: String,
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    live: Mutex<HashMap<String, CancellationToken>>,
    tasks: TaskTracker,
}

/// Why an execution could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0} executions are already waiting in this replica; retry shortly")]
    QueueFull(usize),
    #[error("the backend is shutting down; retry on another replica")]
    ShuttingDown,
}

/// One image an execution runs on.
#[derive(Clone, Debug)]
pub struct UnitInput {
    /// As the request named it (a file_id or `s3://bucket/key`), for messages.
    pub source: String,
    pub image: ImageData,
}

/// An accepted execution, ready to run.
#[derive(Debug)]
pub struct Submission {
    pub execution_id: String,
    pub plan: Plan,
    /// At least one; each runs through the whole plan on its own.
    pub inputs: Vec<UnitInput>,
    /// Where each input's final images are also copied (`outputPath`).
    pub output_target: Option<OutputTarget>,
    /// The pipeline's own deadline, if it asked for one.
    pub timeout: Option<Duration>,
    /// The stored pipeline, when the execution names one (for the trace).
    pub pipeline_id: Option<String>,
    /// The trace the run joins: the request that started it, or the message
    /// that carried it.
    pub parent: imageflow_telemetry::propagation::Context,
    /// Told whether this replica took the execution (pending → running), so
    /// a queue consumer commits its message only once the run is claimed.
    pub claimed: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// A fresh id for this replica: the pod name plus a random suffix, so a
/// restarted pod is a new owner.
pub fn replica_id() -> String {
    format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "backend".into()),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// What the engine works with, apart from its settings.
#[derive(Debug)]
pub struct EngineParts {
    pub db: Db,
    pub caller: Arc<dyn StepCaller>,
    pub default_bucket: String,
    pub store: Store,
    pub buckets: Buckets,
    pub events: EventHub,
    pub metrics: Metrics,
    pub owner: String,
}

impl Engine {
    pub fn new(parts: EngineParts, settings: EngineSettings) -> Self {
        let EngineParts {
            db,
            caller,
            default_bucket,
            store,
            buckets,
            events,
            metrics,
            owner,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.max_parallel)),
                db,
                caller,
                default_bucket,
                store,
                buckets,
                events,
                metrics,
                settings,
                owner,
                queued: AtomicUsize::new(0),
                live: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Executions running or waiting in this replica.
    pub fn live(&self) -> usize {
        self.inner.live.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Executions this replica runs at once.
    pub fn max_parallel(&self) -> usize {
        self.inner.settings.max_parallel
    }

    /// The buckets executions may read from and copy to.
    pub fn buckets(&self) -> &Buckets {
        &self.inner.buckets
    }

    /// The object store (inputs named by reference, `outputPath` copies).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Inputs of one execution that run at once.
    pub fn max_parallel_inputs(&self) -> usize {
        self.inner.settings.max_parallel_inputs
    }

    /// Whether this replica runs (or waits to run) `execution_id` now.
    pub fn is_live(&self, execution_id: &str) -> bool {
        self.inner
            .live
            .lock()
            .map(|m| m.contains_key(execution_id))
            .unwrap_or(false)
    }

    /// Room for more executions to run now (the queue consumers take only that much).
    pub fn room(&self) -> usize {
        self.max_parallel().saturating_sub(self.live())
    }

    /// The ids of this replica's executions, each with its stop switch.
    pub(crate) fn local_runs(&self) -> Vec<(String, CancellationToken)> {
        self.inner
            .live
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Stops a local execution's work in flight; `false` when it is not here.
    pub(crate) fn stop_local(&self, execution_id: &str) -> bool {
        let token = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|m| m.get(execution_id).cloned());
        token.map(|t| t.cancel()).is_some()
    }

    /// Checks there is room in the queue before anything is recorded.
    pub fn check_capacity(&self) -> Result<(), SubmitError> {
        if self.inner.tasks.is_closed() {
            return Err(SubmitError::ShuttingDown);
        }
        let queued = self.inner.queued.load(Ordering::Relaxed);
        if queued >= self.inner.settings.max_queued {
            return Err(SubmitError::QueueFull(queued));
        }
        Ok(())
    }

    /// Runs a recorded (pending) execution in the background.
    pub fn submit(&self, submission: Submission) -> Result<(), SubmitError> {
        self.check_capacity()?;
        let token = CancellationToken::new();
        if let Ok(mut live) = self.inner.live.lock() {
            live.insert(submission.execution_id.clone(), token.clone());
        }
        let queued = self.inner.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.metrics.set_queued(queued);
        let engine = self.clone();
        let span = tracing::info_span!(
            "pipeline.execute",
            pipeline.id = submission.pipeline_id.as_deref().unwrap_or("inline"),
            execution.id = %submission.execution_id,
            execution_id = %submission.execution_id,
            execution.inputs = submission.inputs.len(),
        );
        imageflow_telemetry::propagation::set_remote_parent(&span, submission.parent.clone());
        self.inner
            .tasks
            .spawn(async move { engine.run(submission, token).await }.instrument(span));
        Ok(())
    }

    /// Cancels an execution. Local ones stop at once; one running on another
    /// replica is marked cancelled in the database and its replica stops it at
    /// its next heartbeat. `false` when it had already ended.
    pub async fn cancel(&self, execution_id: &str) -> Result<bool, sqlx::Error> {
        let changed = self
            .inner
            .db
            .finish_execution(
                execution_id,
                ExecutionStatus::Cancelled,
                Some("cancelled by request"),
                Timestamp::now(),
                None,
            )
            .await?;
        self.stop_local(execution_id);
        if changed {
            self.inner.db.close_open_steps(execution_id).await?;
            self.inner.metrics.execution_finished("cancelled", None);
            self.inner.events.publish(ProgressEvent::execution(
                execution_id,
                ExecutionStatus::Cancelled.as_str(),
                "cancelled by request",
            ));
        }
        Ok(changed)
    }

    /// Stops taking work, lets running executions finish for `grace`, then
    /// fails what is left with a reason (never leaves it `running`).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok()
        {
            return;
        }
        let left = self.local_runs();
        tracing::warn!(
            count = left.len(),
            "executions still running at shutdown; failing them"
        );
        for (id, token) in left {
            token.cancel();
            let _ = self
                .inner
                .db
                .finish_execution(
                    &id,
                    ExecutionStatus::Failed,
                    Some("interrupted: the backend shut down before it finished; start it again"),
                    Timestamp::now(),
                    None,
                )
                .await;
            let _ = self.inner.db.close_open_steps(&id).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.tasks.wait()).await;
    }
}
