//! Two limits, kept apart on purpose:
//!
//! * [`Admission`] counts requests in flight (I/O included). Past the limit a
//!   unary call is refused at once with RESOURCE_EXHAUSTED, so a caller can
//!   retry elsewhere instead of queueing behind a saturated pod.
//! * [`BlockingDoor`] is the one way CPU work (decode, resize, inference) leaves
//!   the async runtime. It admits `cpu_workers` jobs at a time; the rest wait
//!   their turn, bounded by the request deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ServiceError;

/// Requests in flight, with a hard limit.
#[derive(Clone, Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
    rejected: Arc<AtomicU64>,
}

impl Admission {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Admits now or refuses; used by unary calls.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            imageflow_telemetry::metrics::Registry::global().inc(
                "imageflow_concurrency_rejections_total",
                "requests refused with RESOURCE_EXHAUSTED because the concurrency limit was reached",
                &[],
            );
            ServiceError::ResourceExhausted {
                limit: self.limit,
                // A typical request takes tens of milliseconds; a short hint
                // spreads retries without leaving capacity idle.
                retry_after: Duration::from_millis(100),
            }
        })
    }

    /// Waits for a slot; used between the items of one stream, whose flow
    /// control already pushes back on the sender.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::Unavailable("server is shutting down".into()))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Requests refused since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// The single door to the blocking thread pool.
#[derive(Clone, Debug)]
pub struct BlockingDoor {
    permits: Arc<Semaphore>,
}

impl BlockingDoor {
    pub fn new(workers: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    /// Runs `job` on the blocking pool once a worker is free, unless `deadline`
    /// passes first (then the job never starts). A panicking job becomes an
    /// internal error, not a dead server.
    pub async fn run<F, R>(&self, deadline: Instant, job: F) -> Result<R, ServiceError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let wait = deadline.saturating_duration_since(Instant::now());
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ServiceError::DeadlineExceeded(wait))?
            .map_err(|_| ServiceError::Unavailable("server is shutting down".into()))?;
        #[allow(clippy::disallowed_methods)] // this is the door
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        });
        handle.await.map_err(|err| {
            if err.is_panic() {
                ServiceError::Internal("image worker panicked".into())
            } else {
                ServiceError::Cancelled("image worker was cancelled".into())
            }
        })
    }

    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_the_limit_and_recovers() {
        let admission = Admission::new(2);
        let a = admission.try_admit().unwrap();
        let _b = admission.try_admit().unwrap();
        let err = admission.try_admit().unwrap_err();
        assert!(matches!(
            err,
            ServiceError::ResourceExhausted { limit: 2, .. }
        ));
        assert_eq!(admission.rejected(), 1);
        assert_eq!(admission.in_flight(), 2);
        drop(a);
        assert!(admission.try_admit().is_ok());
    }

    #[tokio::test]
    async fn door_runs_jobs_and_turns_panics_into_errors() {
        let door = BlockingDoor::new(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(door.run(deadline, || 2 + 2).await.unwrap(), 4);
        let err = door
            .run(deadline, || -> u32 { panic!("bad pixel") })
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::Internal(_)));
        assert_eq!(door.available(), 1, "permit returned after a panic");
    }

    #[tokio::test]
    async fn door_gives_up_waiting_at_the_deadline() {
        let door = BlockingDoor::new(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = {
            let door = door.clone();
            tokio::spawn(async move {
                door.run(Instant::now() + Duration::from_secs(10), move || {
                    let _ = wait.recv();
                })
                .await
            })
        };
        while door.available() > 0 {
            tokio::task::yield_now().await;
        }
        let err = door
            .run(Instant::now() + Duration::from_millis(20), || ())
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::DeadlineExceeded(_)));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
    }
}
