//! The one bounded retry loop of the store: exponential backoff with full jitter, applied
//! to transient failures only.

use std::future::Future;
use std::time::Duration;

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

/// The retry policy: how many attempts and how long to wait between them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
}

impl RetryPolicy {
    /// Upper bound of the sleep after failed attempt `attempt` (1-based):
    /// `min(base * 2^(attempt-1), MAX_BACKOFF)`.
    pub(crate) fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_backoff
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }

    /// Full jitter: a uniformly random sleep in `0..=backoff_ceiling(attempt)`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = u64::try_from(self.backoff_ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::random_range(0..=ceiling))
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
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(message)) if n >= max_attempts => {
                    tracing::warn!(
                        operation,
                        attempt = n,
                        max_attempts,
                        error = %message,
                        "storage operation failed; giving up"
                    );
                    return Err(StorageError::Unavailable {
                        operation,
                        attempts: n,
                        message,
                    });
                }
                Err(Failure::Transient(message)) => {
                    let delay = self.backoff(n);
                    tracing::warn!(
                        operation,
                        attempt = n,
                        max_attempts,
                        backoff_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %message,
                        "storage operation failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
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
    fn backoff_grows_exponentially_and_is_capped() {
        let p = policy(10, 50);
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(50));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(20), MAX_BACKOFF);
        assert_eq!(p.backoff_ceiling(u32::MAX), MAX_BACKOFF);
        for attempt in 1..40 {
            assert!(p.backoff(attempt) <= p.backoff_ceiling(attempt));
        }
        assert_eq!(policy(3, 0).backoff(2), Duration::ZERO);
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
