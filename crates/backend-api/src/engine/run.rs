//! One execution's lifecycle: wait for a slot, claim it (pending → running),
//! drive the DAG under the execution deadline or until cancelled, record the
//! ending. An ending is never lost to a short database outage.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use imageflow_retry::{Backoff, Limit};
use tokio_util::sync::CancellationToken;

use super::{Engine, Submission, dag::DagRun};
use crate::{db::Timestamp, events::ProgressEvent, model::ExecutionStatus};

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
        tracing::info!(execution_id = %id, replica = %inner.owner, "execution started");
        inner.metrics.execution_started();
        inner.events.publish(ProgressEvent::execution(
            &id,
            ExecutionStatus::Running.as_str(),
            "execution started",
        ));
        let deadline = submission
            .timeout
            .map_or(inner.settings.execution_timeout, |t| {
                t.min(inner.settings.execution_timeout)
            });
        let mut run = DagRun::new(self, &submission);
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
        match outcome {
            Ok(()) => {
                let output_path = run.final_output();
                self.finish(&id, ExecutionStatus::Completed, None, started, output_path)
                    .await
            }
            Err(Ending::Failed(reason)) => {
                imageflow_telemetry::spans::record_error(&tracing::Span::current(), &reason);
                self.finish(&id, ExecutionStatus::Failed, Some(reason), started, None)
                    .await
            }
            Err(Ending::Cancelled) => {
                // Whoever cancelled it recorded and announced it.
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
