//! One execution's lifecycle: wait for a slot, claim it (pending → running),
//! drive the DAG under the execution deadline or until cancelled, record the
//! ending. An ending is never lost to a short database outage.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures::StreamExt;
use imageflow_retry::{Backoff, Limit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Engine, Submission, dag::DagRun};
use crate::{
    db::Timestamp,
    events::ProgressEvent,
    model::{ExecutionStatus, InputResult},
};

/// How long a write of execution state waits out a database outage (a
/// restart or failover takes seconds) before giving up on it.
const DB_RETRY_BUDGET: Duration = Duration::from_secs(20);
const DB_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(2));

/// Runs `op` until it succeeds or `DB_RETRY_BUDGET` is spent: a transition
/// written during a short outage is kept rather than lost. Only
/// connection-level errors are retried.
pub(super) async fn retry_db<T, F, Fut>(what: &str, op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    imageflow_retry::retry(
        what,
        DB_BACKOFF,
        Limit::Budget(DB_RETRY_BUDGET),
        is_transient,
        op,
    )
    .await
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

/// How a run that did not complete ended.
pub(super) enum Ending {
    Failed(String),
    Cancelled,
}

/// How one input's run ended, as recorded.
struct InputEnd {
    result: InputResult,
}

/// At most this many failed inputs are named in an execution's error (the
/// record has every one).
const NAMED_FAILURES: usize = 5;

/// The execution's ending from its inputs': completed when all completed,
/// failed when none did, partially_failed otherwise, with which failed and
/// why. A single input's ending is the execution's, as it always was.
fn summarize(
    submission: &Submission,
    default_bucket: &str,
    ends: &[InputEnd],
) -> (ExecutionStatus, Option<String>, Option<String>) {
    if let [only] = ends {
        let r = &only.result;
        let output = r
            .output
            .as_ref()
            .map(|o| format!("{}/{}", o.bucket, o.object_key));
        return match r.status {
            ExecutionStatus::Completed => (ExecutionStatus::Completed, None, output),
            status => (status, r.error.clone(), None),
        };
    }
    let failed: Vec<&InputResult> = ends
        .iter()
        .map(|e| &e.result)
        .filter(|r| r.status != ExecutionStatus::Completed)
        .collect();
    let folder = Some(format!(
        "{default_bucket}/executions/{}/",
        submission.execution_id
    ));
    if failed.is_empty() {
        return (ExecutionStatus::Completed, None, folder);
    }
    let mut named: Vec<String> = failed
        .iter()
        .take(NAMED_FAILURES)
        .map(|r| {
            format!(
                "input {} ({}): {}",
                r.index,
                r.input,
                r.error.as_deref().unwrap_or(r.status.as_str())
            )
        })
        .collect();
    if failed.len() > NAMED_FAILURES {
        named.push(format!("and {} more", failed.len() - NAMED_FAILURES));
    }
    let reasons = named.join("; ");
    if failed.len() == ends.len() {
        let error = format!("all {} inputs failed: {reasons}", ends.len());
        (ExecutionStatus::Failed, Some(error), None)
    } else {
        let error = format!(
            "{} of {} inputs failed: {reasons}",
            failed.len(),
            ends.len()
        );
        (ExecutionStatus::PartiallyFailed, Some(error), folder)
    }
}

impl Engine {
    pub(super) async fn run(self, mut submission: Submission, token: CancellationToken) {
        let inner = &self.inner;
        let claimed = submission.claimed.take();
        let id = submission.execution_id.clone();
        let waited = Instant::now();
        let permit = tokio::select! {
            permit = inner.permits.clone().acquire_owned() => permit.ok(),
            () = token.cancelled() => None,
        };
        let queued = inner.queued.fetch_sub(1, Ordering::Relaxed) - 1;
        inner.metrics.set_queued(queued);
        if let Some(_permit) = permit {
            inner.metrics.queue_wait(waited.elapsed());
            let started_at = Timestamp::now();
            let claim = inner
                .db
                .start_execution(&id, &inner.owner, started_at)
                .await;
            // A database error leaves the message uncommitted: it comes again.
            if let (Some(claimed), Ok(took)) = (claimed, &claim) {
                let _ = claimed.send(*took);
            }
            match claim {
                Ok(true) => self.execute(submission, token).await,
                Ok(false) => {
                    tracing::info!("execution no longer pending (cancelled or taken); not run")
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot mark the execution running; failing it");
                    let reason = format!("database error: {err}");
                    self.finish(
                        &id,
                        ExecutionStatus::Failed,
                        Some(reason),
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

    async fn execute(&self, submission: Submission, token: CancellationToken) {
        let inner = &self.inner;
        let id = submission.execution_id.clone();
        let started = Instant::now();
        tracing::info!(execution_id = %id, replica = %inner.owner, inputs = submission.inputs.len(), "execution started");
        inner.metrics.execution_started();
        inner.events.publish(ProgressEvent::execution(
            &id,
            ExecutionStatus::Running.as_str(),
            "execution started",
        ));
        let ends = tokio::select! {
            ends = self.run_inputs(&submission, &token) => ends,
            () = token.cancelled() => {
                // Whoever cancelled it recorded and announced it.
                tracing::info!(execution_id = %id, "execution cancelled");
                return;
            }
        };
        let (status, error, output_path) = summarize(&submission, &inner.default_bucket, &ends);
        if let Some(reason) = &error {
            imageflow_telemetry::spans::record_error(&tracing::Span::current(), reason);
        }
        self.finish(&id, status, error, started, output_path).await;
    }

    /// Every input through the DAG, up to `max_parallel_inputs` at once; one
    /// failing does not stop the others. In input order.
    async fn run_inputs(
        &self,
        submission: &Submission,
        token: &CancellationToken,
    ) -> Vec<InputEnd> {
        let parallel = self.inner.settings.max_parallel_inputs.max(1);
        let mut ends: Vec<InputEnd> = futures::stream::iter(0..submission.inputs.len())
            .map(|index| self.run_input(submission, index, token))
            .buffer_unordered(parallel)
            .collect()
            .await;
        ends.sort_by_key(|end| end.result.index);
        ends
    }

    /// One input's run: its own deadline, its steps closed when it ends, its
    /// final images copied to the `outputPath`, its ending recorded.
    async fn run_input(
        &self,
        submission: &Submission,
        index: usize,
        token: &CancellationToken,
    ) -> InputEnd {
        let inner = &self.inner;
        let id = submission.execution_id.as_str();
        let input = &submission.inputs[index];
        let several = submission.inputs.len() > 1;
        let position = u32::try_from(index).unwrap_or(u32::MAX);
        // A span of its own only when there are several: a single-input
        // trace keeps the shape it always had.
        let span = if several {
            tracing::info_span!("pipeline.input", input.index = index, input.source = %input.source)
        } else {
            tracing::Span::none()
        };
        async move {
            let started = Instant::now();
            let started_at = Timestamp::now();
            if let Err(err) = retry_db("record the start of an input in the database", || {
                inner.db.start_input(id, position, started_at)
            })
            .await
            {
                tracing::warn!(error = %err, input_index = index, "cannot record the start of an input");
            }
            if several {
                inner.events.publish(ProgressEvent::input(
                    id,
                    position,
                    ExecutionStatus::Running.as_str(),
                    format!("input {index} ({}) started", input.source),
                ));
            }
            let deadline = submission
                .timeout
                .map_or(inner.settings.execution_timeout, |t| {
                    t.min(inner.settings.execution_timeout)
                });
            let mut run = DagRun::new(self, submission, position);
            let mut outcome = match tokio::time::timeout(deadline, run.drive(token)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Ending::Failed(format!(
                    "execution deadline of {:.0} s exceeded while running {}",
                    deadline.as_secs_f64(),
                    run.running_names()
                ))),
            };
            run.close_open_steps().await;
            let mut copied_to = Vec::new();
            if outcome.is_ok()
                && let Some(target) = &submission.output_target
            {
                match target
                    .copy(&inner.store, &inner.default_bucket, id, &run.final_images())
                    .await
                {
                    Ok(copied) => copied_to = copied,
                    Err(reason) => outcome = Err(Ending::Failed(reason)),
                }
            }
            let (status, error) = match outcome {
                Ok(()) => (ExecutionStatus::Completed, None),
                Err(Ending::Failed(reason)) => (ExecutionStatus::Failed, Some(reason)),
                Err(Ending::Cancelled) => (ExecutionStatus::Cancelled, None),
            };
            let elapsed = started.elapsed();
            let result = InputResult {
                index: position,
                input: input.source.clone(),
                bucket: input.image.bucket.clone(),
                object_key: input.image.object_key.clone(),
                status,
                started_at: Some(started_at.to_rfc3339()),
                finished_at: Some(Timestamp::now().to_rfc3339()),
                execution_time_ms: Some(elapsed.as_secs_f64() * 1000.0),
                error,
                output: run.final_output(),
                copied_to,
            };
            if status != ExecutionStatus::Cancelled {
                if let Err(err) = retry_db("record the end of an input in the database", || {
                    inner.db.finish_input(id, &result)
                })
                .await
                {
                    tracing::warn!(error = %err, input_index = index, "cannot record the end of an input");
                }
                inner.metrics.input_finished(status.as_str());
            }
            if several {
                let message = match &result.error {
                    Some(reason) => format!("input {index} ({}) failed: {reason}", input.source),
                    None => format!(
                        "input {index} ({}) {} in {:.1} ms",
                        input.source,
                        status.as_str(),
                        elapsed.as_secs_f64() * 1000.0
                    ),
                };
                inner.events.publish(ProgressEvent {
                    processing_time_ms: result.execution_time_ms,
                    output_path: result.output.as_ref().map(|o| format!("{}/{}", o.bucket, o.object_key)),
                    ..ProgressEvent::input(id, position, status.as_str(), message)
                });
            }
            InputEnd { result }
        }
        .instrument(span)
        .await
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
        let at = Timestamp::now();
        let recorded = retry_db("record the end of the execution in the database", || {
            inner
                .db
                .finish_execution(id, status, error.as_deref(), at, Some(ms))
        })
        .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => return, // cancelled or reaped meanwhile: that state stands
            Err(err) => {
                tracing::error!(error = %err, "cannot record the end of the execution; retrying in the background");
                self.record_end_later(id.to_string(), status, error, at, ms);
                return;
            }
        }
        inner
            .metrics
            .execution_finished(status.as_str(), Some(elapsed));
        let message = match &error {
            Some(e) => {
                tracing::warn!(execution_id = %id, status = status.as_str(), execution_time_ms = ms, error = %e, "execution finished");
                e.clone()
            }
            None => {
                tracing::info!(execution_id = %id, status = status.as_str(), execution_time_ms = ms, "execution finished");
                format!("execution {} in {ms:.1} ms", status.as_str())
            }
        };
        inner.events.publish(ProgressEvent {
            processing_time_ms: Some(ms),
            output_path,
            ..ProgressEvent::execution(id, status.as_str(), message)
        });
    }

    /// Never left `running` while this process lives (its heartbeat would
    /// keep the reaper away): keeps trying until the database is back. If the
    /// process dies first, the reaper fails the execution.
    fn record_end_later(
        &self,
        id: String,
        status: ExecutionStatus,
        error: Option<String>,
        at: Timestamp,
        ms: f64,
    ) {
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match db
                    .finish_execution(&id, status, error.as_deref(), at, Some(ms))
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
    }
}
