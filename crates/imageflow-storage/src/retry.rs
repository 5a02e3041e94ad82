//! The one bounded retry loop of the store, applied to transient failures only. The wait
//! between attempts and the loop itself are the workspace's (`imageflow_retry`: exponential
//! backoff with equal jitter); the store keeps its own knobs and its sorting of failures.

use std::future::Future;
use std::time::Duration;

use imageflow_retry::{Backoff, Limit};

use crate::error::StorageError;

/// Longest single backoff sleep, whatever `base_backoff` and the attempt number are.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The outcome of one failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connection refused or reset, timeout, 5xx, throttling: worth another attempt.
    Transient(String),
    /// Not found, access denied, too large, bad request: retrying cannot help.
    Permanent(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Self::Permanent(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(message) => f.write_str(message),
            Self::Permanent(e) => e.fmt(f),
        }
    }
}

/// The retry policy: how many attempts and how long to wait between them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `n`: between half and all of
    /// `min(base_backoff * 2^(n-1), MAX_BACKOFF)`.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.base_backoff, 2.0, MAX_BACKOFF)
    }

    /// Runs `attempt` until it succeeds, fails permanently, or has failed transiently
    /// `max_attempts` times (then [`StorageError::Unavailable`]). Each retry is logged at
    /// warn with the operation, the attempt number and the error (which never holds
    /// credentials).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_attempts = self.max_attempts.max(1);
        let mut attempts = 0;
        let result = imageflow_retry::retry(
            operation,
            self.backoff(),
            Limit::Attempts(max_attempts),
            |failure| matches!(failure, Failure::Transient(_)),
            || {
                attempts += 1;
                attempt()
            },
        )
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(Failure::Permanent(e)) => Err(e),
            Err(Failure::Transient(message)) => {
                tracing::warn!(
                    operation,
                    attempt = attempts,
                    max_attempts,
                    error = %message,
                    "storage operation failed; giving up"
                );
                Err(StorageError::Unavailable {
                    operation,
                    attempts,
                    message,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(max_attempts: u32, base_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_backoff: Duration::from_millis(base_ms),
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let b = policy(10, 50).backoff();
        assert_eq!(b.ceiling(1), Duration::from_millis(50));
        assert_eq!(b.ceiling(2), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(200));
        assert_eq!(b.ceiling(20), MAX_BACKOFF);
        assert_eq!(b.ceiling(u32::MAX), MAX_BACKOFF);
        for attempt in 1..40 {
            let ceiling = b.ceiling(attempt);
            let delay = b.delay(attempt);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
        assert_eq!(policy(3, 0).backoff().delay(2), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_at_least_half_of_each_step() {
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = policy(3, 100)
            .run("get", || async {
                Err(Failure::Transient("connection reset".into()))
            })
            .await;
        assert!(matches!(
            result,
            Err(StorageError::Unavailable { attempts: 3, .. })
        ));
        // Two sleeps: 50-100 ms, then 100-200 ms.
        let slept = started.elapsed();
        assert!(
            slept >= Duration::from_millis(150) && slept <= Duration::from_millis(300),
            "{slept:?}"
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy(3, 1)
            .run("get", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Transient("connection refused".into()))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        match result {
            Err(StorageError::Unavailable {
                operation,
                attempts,
                message,
            }) => {
                assert_eq!(operation, "get");
                assert_eq!(attempts, 3);
                assert_eq!(message, "connection refused");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn success_after_transient_failures() {
        let calls = AtomicU32::new(0);
        let result = policy(4, 1)
            .run("put", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Failure::Transient("503 SlowDown".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy(5, 1)
            .run("head", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Permanent(StorageError::AccessDenied("no".into())))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(result, Err(StorageError::AccessDenied(_))));
    }

    #[tokio::test]
    async fn zero_attempts_means_one() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy(0, 1)
            .run("list", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure::Transient("timeout".into()))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(
            result,
            Err(StorageError::Unavailable { attempts: 1, .. })
        ));
    }
}
