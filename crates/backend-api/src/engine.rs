//! The pipeline engine: runs each execution's DAG by calling the resident
//! services directly. A step starts as soon as all its dependencies are done
//! (so the steps of one level run in parallel, and a fast branch never waits
//! for a slow sibling), images move between steps as object references, and
//! every transition is persisted and published.
//!
//! Limits: at most `max_parallel` executions run at once per replica; the rest
//! wait (status `pending`) up to `max_queued`. Each execution has a deadline,
//! each attempt of each step has its own, and a cancel stops work in flight
//! (dropping a call cancels the RPC at the service).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use imageflow_proto::v1::ImageData;
use imageflow_storage::Store;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    clients::{self, CallError, CallResult, Services},
    dag::{Plan, PlannedStep},
    db::{Db, FileRecord, now},
    events::{EventHub, ProgressEvent},
    metrics::Metrics,
    model::{ExecutionStatus, StepOutput, StepRecord, StepStatus},
    registry::{AI_DETECTION, StepCall},
};

/// First wait between attempts; attempt n waits base x factor^(n-1), jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub max_parallel: usize,
    pub max_queued: usize,
    pub execution_timeout: Duration,
    /// Overrides the per-component default attempt deadline.
    pub step_timeout: Option<Duration>,
    pub heartbeat: Duration,
    pub stale_after: Duration,
}

/// Handle to the engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    store: Store,
    services: Services,
    events: EventHub,
    metrics: Metrics,
    settings: EngineSettings,
    /// This replica's id: owner of the executions it runs.
    owner: String,
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    live: Mutex<HashMap<String, CancellationToken>>,
    tasks: TaskTracker,
    /// Queue mode: hands an execution back to the queue (Kafka).
    requeue: std::sync::OnceLock<RequeueHook>,
}

struct RequeueHook(Requeue);

impl std::fmt::Debug for RequeueHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequeueHook")
    }
}

/// Produces an execution request again for the id (queue mode).
pub type Requeue = Arc<dyn Fn(&str) + Send + Sync>;

/// How often an execution may go back to the queue after its replica died.
pub const MAX_REQUEUES: i64 = 3;

/// Why an execution could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0} executions are already waiting in this replica; retry shortly")]
    QueueFull(usize),
    #[error("the backend is shutting down; retry on another replica")]
    ShuttingDown,
}

/// An accepted execution, ready to run.
#[derive(Debug)]
pub struct Submission {
    pub execution_id: String,
    pub plan: Plan,
    pub input: ImageData,
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

impl Engine {
    pub fn new(
        db: Db,
        store: Store,
        services: Services,
        events: EventHub,
        metrics: Metrics,
        settings: EngineSettings,
        owner: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.max_parallel)),
                db,
                store,
                services,
                events,
                metrics,
                settings,
                owner,
                queued: AtomicUsize::new(0),
                live: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                requeue: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Queue mode: what to do with executions whose replica died (requeue
    /// them instead of failing them). Set once, at start.
    pub fn on_requeue(&self, requeue: Requeue) {
        let _ = self.inner.requeue.set(RequeueHook(requeue));
    }

    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    /// Executions running or waiting in this replica.
    pub fn live(&self) -> usize {
        self.inner.live.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Executions this replica runs at once.
    pub fn max_parallel(&self) -> usize {
        self.inner.settings.max_parallel
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
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        self.inner
            .metrics
            .set_queued(self.inner.queued.load(Ordering::Relaxed));
        let engine = self.clone();
        let span = tracing::info_span!(
            "pipeline.execute",
            pipeline.id = submission.pipeline_id.as_deref().unwrap_or("inline"),
            execution.id = %submission.execution_id,
            execution_id = %submission.execution_id,
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
        let (at, _) = now();
        let changed = self
            .inner
            .db
            .finish_execution(
                execution_id,
                ExecutionStatus::Cancelled,
                Some("cancelled by request"),
                &at,
                None,
            )
            .await?;
        if let Some(token) = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|m| m.get(execution_id).cloned())
        {
            token.cancel();
        }
        if changed {
            self.inner.db.close_open_steps(execution_id).await?;
            self.inner.metrics.execution_finished("cancelled", None);
            self.inner.events.publish(ProgressEvent::execution(
                execution_id,
                "cancelled",
                "cancelled by request",
            ));
        }
        Ok(changed)
    }

    /// Heartbeats this replica's executions, stops those cancelled elsewhere,
    /// and fails those of replicas that died. Runs until `stop`.
    pub async fn maintain(&self, stop: CancellationToken) {
        let db = &self.inner.db;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(self.inner.settings.heartbeat) => {}
                }
            }
            first = false;
            if let Err(err) = db.heartbeat(&self.inner.owner).await {
                tracing::warn!(error = %err, "heartbeat failed; the database is unreachable");
                continue;
            }
            let local: Vec<(String, CancellationToken)> = self
                .inner
                .live
                .lock()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            for (id, token) in local {
                match db.execution_owner(&id).await {
                    // Ended elsewhere (a cancel), or no longer ours: a replica
                    // that thought we were dead requeued it and someone else
                    // took it. Stop, so it does not run twice for long.
                    Ok(Some((status, _, _))) if status.is_terminal() => token.cancel(),
                    Ok(Some((ExecutionStatus::Running, owner, _))) if owner != self.inner.owner => {
                        tracing::warn!(execution_id = %id, now_owned_by = %owner, "execution taken over by another replica; stopping here");
                        token.cancel();
                    }
                    _ => {}
                }
            }
            if let Some(RequeueHook(requeue)) = self.inner.requeue.get() {
                match db
                    .requeue_stale(self.inner.settings.stale_after, MAX_REQUEUES)
                    .await
                {
                    Ok(ids) => {
                        for id in ids {
                            tracing::warn!(execution_id = %id, "requeued: the replica running it stopped");
                            requeue(&id);
                            self.inner.events.publish(ProgressEvent::execution(
                                &id,
                                "pending",
                                "requeued: the backend replica running it stopped",
                            ));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot requeue interrupted executions")
                    }
                }
            }
            match db.reap_stale(self.inner.settings.stale_after).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(count = ids.len(), ids = ?ids, "failed executions whose replica stopped");
                    for id in ids {
                        self.inner.metrics.execution_finished("failed", None);
                        self.inner.events.publish(ProgressEvent::execution(
                            &id,
                            "failed",
                            "interrupted: the backend replica running it stopped",
                        ));
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot check for interrupted executions"),
            }
        }
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
        let left: Vec<(String, CancellationToken)> = self
            .inner
            .live
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        tracing::warn!(
            count = left.len(),
            "executions still running at shutdown; failing them"
        );
        let (at, _) = now();
        for (id, token) in left {
            token.cancel();
            let _ = self
                .inner
                .db
                .finish_execution(
                    &id,
                    ExecutionStatus::Failed,
                    Some("interrupted: the backend shut down before it finished; start it again"),
                    &at,
                    None,
                )
                .await;
            let _ = self.inner.db.close_open_steps(&id).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.tasks.wait()).await;
    }

    async fn run(self, mut submission: Submission, token: CancellationToken) {
        let inner = &self.inner;
        let claimed = submission.claimed.take();
        let id = submission.execution_id.clone();
        let waited = Instant::now();
        let permit = tokio::select! {
            permit = inner.permits.clone().acquire_owned() => permit.ok(),
            () = token.cancelled() => None,
        };
        inner.queued.fetch_sub(1, Ordering::Relaxed);
        inner
            .metrics
            .set_queued(inner.queued.load(Ordering::Relaxed));
        if let Some(_permit) = permit {
            inner.metrics.queue_wait(waited.elapsed());
            let (started_at, _) = now();
            match inner
                .db
                .start_execution(&id, &inner.owner, &started_at)
                .await
            {
                Ok(true) => {
                    if let Some(claimed) = claimed {
                        let _ = claimed.send(true);
                    }
                    self.execute(submission, token, started_at).await
                }
                Ok(false) => {
                    if let Some(claimed) = claimed {
                        let _ = claimed.send(false);
                    }
                    tracing::info!("execution no longer pending (cancelled or taken); not run")
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot mark the execution running; failing it");
                    self.finish(
                        &id,
                        ExecutionStatus::Failed,
                        Some(format!("database error: {err}")),
                        Instant::now(),
                        None,
                    )
                    .await;
                }
            }
        }
        if let Ok(mut live) = inner.live.lock() {
            live.remove(&id);
        }
    }

    async fn execute(&self, submission: Submission, token: CancellationToken, started_at: String) {
        let inner = &self.inner;
        let id = submission.execution_id.clone();
        let started = Instant::now();
        tracing::info!(execution_id = %id, replica = %inner.owner, "execution started");
        inner.metrics.execution_started();
        inner.events.publish(ProgressEvent::execution(
            &id,
            "running",
            "execution started",
        ));
        let deadline = submission
            .timeout
            .map_or(inner.settings.execution_timeout, |t| {
                t.min(inner.settings.execution_timeout)
            });
        let mut run = DagRun::new(self, &submission, &started_at);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(deadline, run.drive(&token)) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(Ending::Failed(format!(
                    "execution deadline of {:.0} s exceeded while running {}",
                    deadline.as_secs_f64(),
                    run.running_names()
                ))),
            },
            () = token.cancelled() => Err(Ending::Cancelled),
        };
        run.close_open_steps().await;
        let output_path = run.final_output();
        match outcome {
            Ok(()) => {
                self.finish(&id, ExecutionStatus::Completed, None, started, output_path)
                    .await
            }
            Err(Ending::Failed(reason)) => {
                imageflow_telemetry::spans::record_error(&tracing::Span::current(), &reason);
                self.finish(&id, ExecutionStatus::Failed, Some(reason), started, None)
                    .await
            }
            Err(Ending::Cancelled) => {
                // The cancel request already recorded and announced it.
                tracing::info!(execution_id = %id, "execution cancelled");
            }
        }
    }

    async fn finish(
        &self,
        id: &str,
        status: ExecutionStatus,
        error: Option<String>,
        started: Instant,
        output_path: Option<String>,
    ) {
        let inner = &self.inner;
        let elapsed = started.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        let (at, _) = now();
        match retry_db("record the end of the execution", || {
            inner
                .db
                .finish_execution(id, status, error.as_deref(), &at, Some(ms))
        })
        .await
        {
            Ok(true) => {}
            Ok(false) => return, // cancelled or reaped meanwhile: that state stands
            Err(err) => {
                // Never left `running` while this process lives (its
                // heartbeat would keep the reaper away): keep trying in the
                // background until the database is back. If the process dies
                // first, the reaper fails the execution.
                tracing::error!(error = %err, "cannot record the end of the execution; retrying in the background");
                let db = inner.db.clone();
                let id = id.to_string();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        match db
                            .finish_execution(&id, status, error.as_deref(), &at, Some(ms))
                            .await
                        {
                            Ok(_) => {
                                let _ = db.close_open_steps(&id).await;
                                tracing::info!(execution_id = %id, "end of the execution recorded after the database came back");
                                return;
                            }
                            Err(err) => tracing::debug!(error = %err, "database still unreachable"),
                        }
                    }
                });
                return;
            }
        }
        inner
            .metrics
            .execution_finished(status.as_str(), Some(elapsed));
        let message = match (&status, &error) {
            (_, Some(e)) => e.clone(),
            _ => format!("execution {} in {ms:.1} ms", status.as_str()),
        };
        match &error {
            Some(e) => {
                tracing::warn!(execution_id = %id, status = status.as_str(), execution_time_ms = ms, error = %e, "execution finished")
            }
            None => {
                tracing::info!(execution_id = %id, status = status.as_str(), execution_time_ms = ms, "execution finished")
            }
        }
        inner.events.publish(ProgressEvent {
            processing_time_ms: Some(ms),
            output_path,
            ..ProgressEvent::execution(id, status.as_str(), message)
        });
    }
}

enum Ending {
    Failed(String),
    Cancelled,
}

/// What a finished step hands to its dependents.
enum StepEnd {
    Done { image: ImageData },
    Failed(String),
}

/// The state of one execution's DAG while it runs.
struct DagRun<'a> {
    engine: &'a Engine,
    id: String,
    plan: &'a Plan,
    input: &'a ImageData,
    records: Vec<StepRecord>,
    images: Vec<Option<ImageData>>,
}

impl<'a> DagRun<'a> {
    fn new(engine: &'a Engine, submission: &'a Submission, _started_at: &str) -> Self {
        let records = submission.plan.steps.iter().map(pending_record).collect();
        Self {
            engine,
            id: submission.execution_id.clone(),
            plan: &submission.plan,
            input: &submission.input,
            records,
            images: vec![None; submission.plan.steps.len()],
        }
    }

    fn running_names(&self) -> String {
        let names: Vec<&str> = self
            .records
            .iter()
            .filter(|r| matches!(r.status, StepStatus::Running | StepStatus::Retrying))
            .map(|r| r.step_id.as_str())
            .collect();
        if names.is_empty() {
            "no step".into()
        } else {
            format!("step(s) {}", names.join(", "))
        }
    }

    /// `bucket/key` of the last image the run wrote (the sink's, in plan order).
    fn final_output(&self) -> Option<String> {
        self.records
            .iter()
            .rev()
            .find_map(|r| r.output.as_ref())
            .map(|o| format!("{}/{}", o.bucket, o.object_key))
    }

    async fn close_open_steps(&self) {
        if let Err(err) = self.engine.inner.db.close_open_steps(&self.id).await {
            tracing::warn!(error = %err, "cannot close the execution's open steps");
        }
    }

    /// Starts every step whose dependencies are done, until all are done or
    /// one fails for good.
    async fn drive(&mut self, token: &CancellationToken) -> Result<(), Ending> {
        let n = self.plan.steps.len();
        let mut waiting: Vec<usize> = self
            .plan
            .steps
            .iter()
            .map(|s| s.dependencies.len())
            .collect();
        let mut dependents = vec![Vec::new(); n];
        for (i, step) in self.plan.steps.iter().enumerate() {
            for &d in &step.dependencies {
                dependents[d].push(i);
            }
        }
        let shared = Arc::new(StepContext {
            engine: self.engine.clone(),
            execution_id: self.id.clone(),
        });
        let mut in_flight = FuturesUnordered::new();
        for i in (0..n).filter(|&i| waiting[i] == 0) {
            in_flight.push(self.start(i, &shared));
        }
        let mut done = 0;
        while let Some((i, record, end)) = in_flight.next().await {
            if token.is_cancelled() {
                return Err(Ending::Cancelled);
            }
            self.records[i] = record;
            match end {
                StepEnd::Failed(reason) => {
                    return Err(Ending::Failed(format!(
                        "step {:?} failed: {reason}",
                        self.plan.steps[i].definition.step_id
                    )));
                }
                StepEnd::Done { image } => {
                    self.images[i] = Some(image);
                    done += 1;
                    for &j in &dependents[i] {
                        waiting[j] -= 1;
                        if waiting[j] == 0 {
                            in_flight.push(self.start(j, &shared));
                        }
                    }
                }
            }
        }
        if done == n {
            Ok(())
        } else {
            Err(Ending::Failed(
                "internal: some steps never became ready".into(),
            ))
        }
    }

    /// The image a step works on: the execution input for a root step, else
    /// the image of its first listed dependency.
    fn start(
        &mut self,
        i: usize,
        shared: &Arc<StepContext>,
    ) -> impl std::future::Future<Output = (usize, StepRecord, StepEnd)> + Send + 'static {
        let step = self.plan.steps[i].clone();
        let input = step
            .dependencies
            .first()
            .and_then(|&d| self.images[d].clone())
            .unwrap_or_else(|| self.input.clone());
        let mut record = self.records[i].clone();
        record.status = StepStatus::Running;
        self.records[i].status = StepStatus::Running;
        let context = shared.clone();
        let span = tracing::info_span!(
            "step.execute",
            step.id = %step.definition.step_id,
            step.r#type = %step.definition.component_name
        );
        async move {
            let end = context.run_step(&step, &input, &mut record).await;
            (i, record, end)
        }
        .instrument(span)
    }
}

fn pending_record(step: &PlannedStep) -> StepRecord {
    StepRecord {
        step_id: step.definition.step_id.clone(),
        component_name: step.definition.component_name.clone(),
        status: StepStatus::Pending,
        level: step.level as i32,
        attempts: 0,
        started_at: None,
        finished_at: None,
        processing_time_ms: None,
        service_time_ms: None,
        error: None,
        used_fallback: false,
        output: None,
        detections: Vec::new(),
    }
}

/// Initial step records of a plan (all pending), for the execution's row.
pub fn initial_records(plan: &Plan) -> Vec<StepRecord> {
    plan.steps.iter().map(pending_record).collect()
}

struct StepContext {
    engine: Engine,
    execution_id: String,
}

impl StepContext {
    async fn save(&self, record: &StepRecord) {
        let db = &self.engine.inner.db;
        let saved = retry_db("record step progress", || {
            db.save_step(&self.execution_id, record)
        })
        .await;
        if let Err(err) = saved {
            tracing::warn!(error = %err, step_id = %record.step_id, "cannot record step progress");
        }
    }

    fn publish(&self, record: &StepRecord, message: impl Into<String>) {
        let mut event = ProgressEvent::step(
            &self.execution_id,
            &record.step_id,
            record.status.as_str(),
            message,
        );
        event.attempt = Some(record.attempts);
        event.processing_time_ms = record.processing_time_ms;
        self.engine.inner.events.publish(event);
    }

    fn attempt_timeout(&self, step: &PlannedStep, call: &StepCall) -> Duration {
        if let Some(t) = step.definition.timeout_seconds {
            return Duration::from_secs_f64(t);
        }
        if let Some(t) = self.engine.inner.settings.step_timeout {
            return t;
        }
        // DESIGN section 9: 30 s for the image services, 60 s for inference.
        if call.component() == AI_DETECTION {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(30)
        }
    }

    /// Runs one step: attempts with backoff, then the fallback, then
    /// skip-or-fail. Leaves `record` in its final state (saved and published).
    async fn run_step(
        &self,
        step: &PlannedStep,
        input: &ImageData,
        record: &mut StepRecord,
    ) -> StepEnd {
        let started = Instant::now();
        record.started_at = Some(now().0);
        let policy = step.definition.retry_policy.clone();
        let max_retries = policy.as_ref().map_or(0, |p| p.max_retries);
        let factor = policy.as_ref().map_or(2.0, |p| p.backoff_factor);

        let mut outcome = self
            .attempts(step, &step.call, input, record, max_retries, factor)
            .await;
        if let (Err(err), Some(fallback)) = (&outcome, &step.fallback) {
            tracing::warn!(error = %err, fallback = fallback.component(), "step failed; running its fallback");
            self.publish(
                record,
                format!("failed ({err}); running fallback {}", fallback.component()),
            );
            outcome = self
                .attempts(step, fallback, input, record, max_retries, factor)
                .await;
            record.used_fallback = outcome.is_ok();
        }

        record.finished_at = Some(now().0);
        let elapsed = started.elapsed();
        record.processing_time_ms = Some(elapsed.as_secs_f64() * 1000.0);
        let component = step.definition.component_name.as_str();
        let metrics = &self.engine.inner.metrics;
        match outcome {
            Ok(result) => {
                record.status = StepStatus::Completed;
                record.error = None;
                record.service_time_ms = Some(result.service_time.as_secs_f64() * 1000.0);
                record.detections = result.detections;
                let image = match result.output {
                    Some(image) => {
                        record.output = self.register_output(&image).await;
                        image
                    }
                    // Detection without drawing: the input image goes on.
                    None => input.clone(),
                };
                metrics.step_finished(component, "completed", elapsed);
                self.save(record).await;
                self.publish(
                    record,
                    format!("completed in {:.1} ms", elapsed.as_secs_f64() * 1000.0),
                );
                StepEnd::Done { image }
            }
            Err(reason) if step.definition.continue_on_failure => {
                record.status = StepStatus::Skipped;
                record.error = Some(reason.clone());
                metrics.step_finished(component, "skipped", elapsed);
                self.save(record).await;
                self.publish(record, format!("skipped after failure: {reason}"));
                StepEnd::Done {
                    image: input.clone(),
                }
            }
            Err(reason) => {
                imageflow_telemetry::spans::record_error(&tracing::Span::current(), &reason);
                record.status = StepStatus::Failed;
                record.error = Some(reason.clone());
                metrics.step_finished(component, "failed", elapsed);
                self.save(record).await;
                self.publish(record, reason.clone());
                StepEnd::Failed(reason)
            }
        }
    }

    /// The first attempt plus up to `max_retries` retries of retryable failures.
    async fn attempts(
        &self,
        step: &PlannedStep,
        call: &StepCall,
        input: &ImageData,
        record: &mut StepRecord,
        max_retries: u32,
        factor: f64,
    ) -> Result<CallResult, String> {
        let timeout = self.attempt_timeout(step, call);
        let mut retry = 0;
        loop {
            record.attempts += 1;
            record.status = StepStatus::Running;
            self.save(record).await;
            self.publish(
                record,
                format!("attempt {} on {}", record.attempts, call.component()),
            );
            match self.call_through_backpressure(call, input, timeout).await {
                Ok(result) => return Ok(result),
                Err(err) => {
                    let text = err.describe(call.component());
                    self.engine
                        .inner
                        .metrics
                        .call_failed(call.component(), err.status.code());
                    if !err.is_retryable() || retry >= max_retries {
                        let note = if err.is_retryable() && max_retries > 0 {
                            format!(" (after {} attempts)", retry + 1)
                        } else {
                            String::new()
                        };
                        return Err(format!("{text}{note}"));
                    }
                    retry += 1;
                    let wait = backoff(retry, factor, &err);
                    record.status = StepStatus::Retrying;
                    record.error = Some(text.clone());
                    self.save(record).await;
                    self.publish(
                        record,
                        format!(
                            "{text}; retry {retry}/{max_retries} in {} ms",
                            wait.as_millis()
                        ),
                    );
                    tracing::info!(error = %text, retry, wait_ms = wait.as_millis() as u64, "retrying step");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One call, waiting out the service's backpressure: a RESOURCE_EXHAUSTED
    /// with a `retry-after-ms` hint means the service refused before doing any
    /// work and said when to come back, so waiting is queueing, not a failed
    /// attempt. It spends the attempt's time budget, not `maxRetries` (a
    /// pipeline without a retry policy would otherwise fail at the first
    /// refusal of a busy service). Past the budget the refusal is returned
    /// and the retry policy decides.
    async fn call_through_backpressure(
        &self,
        call: &StepCall,
        input: &ImageData,
        timeout: Duration,
    ) -> Result<CallResult, CallError> {
        let services = &self.engine.inner.services;
        let started = Instant::now();
        let mut refusals = 0u32;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let err = match clients::call(services, call, input, &self.execution_id, left).await {
                Ok(result) => {
                    if refusals > 0 {
                        tracing::info!(
                            refusals,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "service admitted the call after backpressure"
                        );
                    }
                    return Ok(result);
                }
                Err(err) => err,
            };
            let Some(hint) = err
                .retry_after
                .filter(|_| err.status.code() == tonic::Code::ResourceExhausted)
            else {
                return Err(err);
            };
            // Jittered up to twice the hint, so waiting callers do not all
            // come back in the same instant.
            let wait = hint.min(MAX_BACKOFF).mul_f64(1.0 + rand::random::<f64>());
            if started.elapsed() + wait >= timeout {
                return Err(err);
            }
            refusals += 1;
            self.engine
                .inner
                .metrics
                .call_failed(call.component(), err.status.code());
            tracing::debug!(
                refusals,
                wait_ms = wait.as_millis() as u64,
                "service over its concurrency limit; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Registers a service's output object as a downloadable file.
    async fn register_output(&self, image: &ImageData) -> Option<StepOutput> {
        let file = FileRecord {
            file_id: uuid::Uuid::new_v4().to_string(),
            bucket: if image.bucket.is_empty() {
                self.engine
                    .inner
                    .store
                    .default_bucket()
                    .as_str()
                    .to_string()
            } else {
                image.bucket.clone()
            },
            object_key: image.object_key.clone(),
            content_type: image.content_type.clone(),
            size_bytes: image.size_bytes,
            width: i64::from(image.width),
            height: i64::from(image.height),
            filename: image.object_key.rsplit('/').next().map(str::to_string),
            execution_id: Some(self.execution_id.clone()),
            created_at: now().0,
        };
        if let Err(err) = self.engine.inner.db.insert_file(&file).await {
            tracing::warn!(error = %err, "cannot register a step output as a file");
        }
        Some(StepOutput {
            file_id: file.file_id,
            bucket: file.bucket,
            object_key: file.object_key,
            content_type: file.content_type,
            size_bytes: file.size_bytes,
            width: image.width,
            height: image.height,
        })
    }
}

/// How long a write of execution state waits out a database outage (a
/// restart or failover takes seconds) before giving up on it.
const DB_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Runs `op` until it succeeds or `DB_RETRY_BUDGET` is spent, backing off
/// from 100 ms to 2 s: a transition written during a short outage is kept
/// rather than lost. Only connection-level errors are retried.
async fn retry_db<T, F, Fut>(what: &str, mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match op().await {
            Err(err) if is_transient(&err) && started.elapsed() + delay < DB_RETRY_BUDGET => {
                tracing::warn!(error = %err, attempt, "cannot {what}; the database is unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Errors a later attempt may not see: the connection or the pool, not the query.
fn is_transient(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(
        err,
        // PostgreSQL's connection exceptions (08), shutdown or restart in
        // progress (57), out of resources (53).
        sqlx::Error::Database(e) if e.code().is_some_and(|c| ["08", "57", "53"].iter().any(|p| c.starts_with(p)))
    )
}

/// Exponential backoff with jitter (50-100% of the step), never shorter than
/// the service's own retry hint.
fn backoff(retry: u32, factor: f64, err: &CallError) -> Duration {
    let exp = BASE_BACKOFF.as_secs_f64() * factor.powi(retry.saturating_sub(1) as i32);
    let capped = exp.min(MAX_BACKOFF.as_secs_f64());
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    let wait = Duration::from_secs_f64(capped * jitter);
    match err.retry_after {
        Some(hint) => wait.max(hint.min(MAX_BACKOFF)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_the_hint() {
        let err = CallError::from(tonic::Status::unavailable("down"));
        for retry in 1..=4 {
            let expected = 0.2 * 2f64.powi(retry as i32 - 1);
            let wait = backoff(retry, 2.0, &err).as_secs_f64();
            assert!(
                wait >= expected * 0.5 - 1e-9 && wait <= expected + 1e-9,
                "{retry}: {wait}"
            );
        }
        assert!(backoff(30, 10.0, &err) <= MAX_BACKOFF);
        let mut status = tonic::Status::resource_exhausted("busy");
        status
            .metadata_mut()
            .insert("retry-after-ms", "1500".parse().unwrap());
        let hinted = CallError::from(status);
        assert!(hinted.is_retryable());
        assert!(backoff(1, 2.0, &hinted) >= Duration::from_millis(1500));
        assert!(!CallError::from(tonic::Status::invalid_argument("bad")).is_retryable());
    }
}
