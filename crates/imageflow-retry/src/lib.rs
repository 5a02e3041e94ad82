//! The one retry policy of the workspace: exponential backoff with equal jitter, and a
//! retry loop bounded by a number of attempts or by time.
//!
//! Equal jitter (a wait between half and all of the exponential step) rather than full
//! jitter (anywhere from zero): callers that failed together are spread out, yet none of
//! them comes back at once, so a dependency that just fell over is not hit by a burst.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff: retry n (1-based) waits at most min(base * factor^(n-1), max),
/// and at least half of that ("equal jitter": spaced out, never a burst).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, factor: f64, max: Duration) -> Self {
        Self { base, factor, max }
    }

    /// min(base * factor^(retry-1), max); retry 0 counts as 1. Never panics on overflow / huge factors.
    ///
    /// A factor that is negative or NaN counts as 1 (the wait stays at `base`).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.max(1) - 1).unwrap_or(i32::MAX);
        let factor = if self.factor >= 0.0 { self.factor } else { 1.0 };
        // In nanoseconds, so that whole factors give exact results (50 ms x 2 is 100 ms,
        // not 99.999999 ms); f64 holds whole nanoseconds exactly up to 104 days.
        let nanos = self.base.as_nanos() as f64 * factor.powi(exponent);
        let max = self.max.as_nanos() as f64;
        if nanos.is_nan() || nanos >= max {
            return if nanos.is_nan() {
                self.base.min(self.max)
            } else {
                self.max
            };
        }
        // Below `max`, itself a Duration, so the rounded value fits in u64 nanoseconds
        // unless `max` is over 584 years; the cast saturates there.
        Duration::from_nanos(nanos.round() as u64).min(self.max)
    }

    /// Uniformly random in [ceiling/2, ceiling].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = nanos_u64(self.ceiling(retry));
        Duration::from_nanos(rand::random_range(ceiling - ceiling / 2..=ceiling))
    }
}

/// `d` stretched by a uniformly random 0-100 % (for waits on a server's retry-after hint, so
/// the callers told the same hint do not all come back in the same instant).
pub fn spread(d: Duration) -> Duration {
    d.saturating_add(Duration::from_nanos(rand::random_range(0..=nanos_u64(d))))
}

fn nanos_u64(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long `retry` keeps trying.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    Attempts(u32),
    Budget(Duration),
}

impl Limit {
    /// Keeps trying for as long as the process runs: for waits on a dependency that a
    /// service cannot serve without (its readiness stays false meanwhile).
    pub const FOREVER: Self = Self::Budget(Duration::MAX);
}

/// Runs `op` until it succeeds, fails with an error `is_transient` rejects, or the limit is
/// reached (Attempts(n): n attempts in all; Budget(d): stops before a sleep that would end past d
/// since the first attempt). Returns the last error. Each retry is logged at warn with `what`,
/// the attempt number, the wait and the error.
///
/// `Attempts(0)` makes one attempt, like `Attempts(1)`.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    backoff: Backoff,
    limit: Limit,
    is_transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempt: u32 = 1;
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if !is_transient(&err) {
            return Err(err);
        }
        let wait = backoff.delay(attempt);
        let out_of_limit = match limit {
            Limit::Attempts(n) => attempt >= n,
            Limit::Budget(budget) => start.elapsed().saturating_add(wait) > budget,
        };
        if out_of_limit {
            return Err(err);
        }
        tracing::warn!(
            what,
            attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = %err,
            "{what} failed; retrying"
        );
        tokio::time::sleep(wait).await;
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MS: Duration = Duration::from_millis(1);

    fn b(base_ms: u64, factor: f64, max_ms: u64) -> Backoff {
        Backoff::new(
            Duration::from_millis(base_ms),
            factor,
            Duration::from_millis(max_ms),
        )
    }

    #[test]
    fn ceiling_grows_by_the_factor_and_is_capped() {
        let p = b(50, 2.0, 5_000);
        assert_eq!(p.ceiling(0), 50 * MS);
        assert_eq!(p.ceiling(1), 50 * MS);
        assert_eq!(p.ceiling(2), 100 * MS);
        assert_eq!(p.ceiling(3), 200 * MS);
        assert_eq!(p.ceiling(7), 3_200 * MS);
        assert_eq!(p.ceiling(8), 5_000 * MS);
        let p = b(200, 1.5, 10_000);
        assert_eq!(p.ceiling(3), 450 * MS);
        assert_eq!(b(200, 1.0, 10_000).ceiling(30), 200 * MS);
        assert_eq!(b(200, 0.5, 10_000).ceiling(2), 100 * MS);
    }

    #[test]
    fn ceiling_survives_overflow_and_odd_factors() {
        let max = Duration::from_secs(5);
        for factor in [3.0, 10.0, 1e300, f64::MAX, f64::INFINITY] {
            let p = Backoff::new(Duration::from_secs(1), factor, max);
            for retry in [4, 64, 1_000, u32::MAX] {
                assert_eq!(p.ceiling(retry), max, "factor {factor}, retry {retry}");
                assert!(p.delay(retry) <= max);
            }
        }
        // A base already past u64 nanoseconds, and a max of Duration::MAX.
        let huge = Backoff::new(Duration::MAX, 2.0, Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
        assert!(huge.delay(3) >= Duration::from_nanos(u64::MAX / 2));
        assert_eq!(b(100, f64::NAN, 1_000).ceiling(5), 100 * MS);
        assert_eq!(b(100, -3.0, 1_000).ceiling(4), 100 * MS);
        assert_eq!(b(100, 0.0, 1_000).ceiling(4), Duration::ZERO);
        assert_eq!(b(0, 2.0, 1_000).delay(9), Duration::ZERO);
        assert_eq!(b(100, 2.0, 0).delay(1), Duration::ZERO);
    }

    #[test]
    fn delay_lies_in_the_upper_half_of_the_ceiling() {
        let p = b(100, 2.0, 5_000);
        for retry in 0..12 {
            let ceiling = p.ceiling(retry);
            let mut low = false;
            let mut high = false;
            for _ in 0..2_000 {
                let d = p.delay(retry);
                assert!(d >= ceiling / 2 && d <= ceiling, "retry {retry}: {d:?}");
                low |= d < ceiling * 3 / 5;
                high |= d > ceiling * 9 / 10;
            }
            // Spread over the whole range, not stuck at one end (chance of a false
            // failure: 0.9^2000 per side).
            assert!(low && high, "retry {retry}");
        }
    }

    #[test]
    fn spread_adds_up_to_the_whole_hint() {
        let hint = Duration::from_millis(1_500);
        let (mut low, mut high) = (false, false);
        for _ in 0..2_000 {
            let d = spread(hint);
            assert!(d >= hint && d <= hint * 2, "{d:?}");
            low |= d < hint * 11 / 10;
            high |= d > hint * 19 / 10;
        }
        assert!(low && high);
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
        assert_eq!(spread(Duration::MAX), Duration::MAX);
    }

    #[derive(Debug, PartialEq)]
    enum TestError {
        Transient(u32),
        Permanent,
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    fn transient(e: &TestError) -> bool {
        matches!(e, TestError::Transient(_))
    }

    /// Fails transiently on every call, numbering the errors.
    async fn always_failing(
        backoff: Backoff,
        limit: Limit,
        calls: &Cell<u32>,
    ) -> Result<(), TestError> {
        retry("test op", backoff, limit, transient, || async {
            calls.set(calls.get() + 1);
            Err(TestError::Transient(calls.get()))
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_limit_counts_every_attempt_and_returns_the_last_error() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let result = always_failing(b(100, 2.0, 5_000), Limit::Attempts(4), &calls).await;
        assert_eq!(calls.get(), 4);
        assert_eq!(result, Err(TestError::Transient(4)));
        // Three sleeps, each in the upper half of 100, 200 and 400 ms.
        let slept = started.elapsed();
        assert!(slept >= 350 * MS && slept <= 700 * MS, "{slept:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_or_one_attempts_means_a_single_call_and_no_sleep() {
        for n in [0, 1] {
            let calls = Cell::new(0);
            let started = Instant::now();
            let result = always_failing(b(100, 2.0, 5_000), Limit::Attempts(n), &calls).await;
            assert_eq!(calls.get(), 1);
            assert_eq!(result, Err(TestError::Transient(1)));
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_stops_before_a_sleep_that_would_overrun_it() {
        // Ceilings 1, 2, 4, 8, 16 s: the fourth sleep ends between 7.5 and 15 s, the fifth
        // past 15.5 s, so a 10 s budget allows 4 or 5 attempts, and the time spent never
        // passes the budget.
        for _ in 0..50 {
            let calls = Cell::new(0);
            let started = Instant::now();
            let budget = Duration::from_secs(10);
            let backoff = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(60));
            let result = always_failing(backoff, Limit::Budget(budget), &calls).await;
            assert!((4..=5).contains(&calls.get()), "{} calls", calls.get());
            assert_eq!(result, Err(TestError::Transient(calls.get())));
            assert!(started.elapsed() <= budget, "{:?}", started.elapsed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_allows_only_the_first_attempt() {
        let calls = Cell::new(0);
        let result = always_failing(b(1, 2.0, 10), Limit::Budget(Duration::ZERO), &calls).await;
        assert_eq!(calls.get(), 1);
        assert_eq!(result, Err(TestError::Transient(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_counts_the_time_the_attempts_take() {
        // Each attempt takes 3 s and the waits are at most 1 ms: with a 10 s budget the
        // fourth sleep would start at 12 s, past the budget.
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(
            "slow op",
            b(1, 1.0, 1),
            Limit::Budget(Duration::from_secs(10)),
            transient,
            || async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                calls.set(calls.get() + 1);
                Err(TestError::Transient(calls.get()))
            },
        )
        .await;
        assert_eq!(calls.get(), 4);
        assert_eq!(result, Err(TestError::Transient(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn forever_keeps_going_until_success() {
        let calls = Cell::new(0);
        let result = retry(
            "flaky op",
            b(100, 2.0, 5_000),
            Limit::FOREVER,
            transient,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 200 {
                    Err(TestError::Transient(calls.get()))
                } else {
                    Ok(calls.get())
                }
            },
        )
        .await;
        assert_eq!(result, Ok(200));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let result: Result<(), _> = retry(
            "op",
            b(100, 2.0, 5_000),
            Limit::Attempts(10),
            transient,
            || async {
                calls.set(calls.get() + 1);
                Err(TestError::Permanent)
            },
        )
        .await;
        assert_eq!(calls.get(), 1);
        assert_eq!(result, Err(TestError::Permanent));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_after_transient_ones_ends_the_loop() {
        let calls = Cell::new(0);
        let result: Result<(), _> = retry(
            "op",
            b(1, 2.0, 10),
            Limit::Attempts(10),
            transient,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err(TestError::Transient(calls.get()))
                } else {
                    Err(TestError::Permanent)
                }
            },
        )
        .await;
        assert_eq!(calls.get(), 3);
        assert_eq!(result, Err(TestError::Permanent));
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_transient_failures_returns_the_value() {
        let calls = Cell::new(0);
        let result = retry(
            "op",
            b(1, 2.0, 10),
            Limit::Attempts(5),
            transient,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err(TestError::Transient(calls.get()))
                } else {
                    Ok("done")
                }
            },
        )
        .await;
        assert_eq!(result, Ok("done"));
        assert_eq!(calls.get(), 3);
    }
}
