//! "Logged at most once per interval, with the count since the last line":
//! a broker that is down for an hour must not write a million log lines,
//! nor hide that events are being lost.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often one kind of failure is logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Keys beyond this many are not tracked apart (they share one slot), so a
/// stream of distinct librdkafka messages cannot grow the map without bound.
const MAX_KEYS: usize = 64;
const OVERFLOW_KEY: &str = "(other)";

#[derive(Debug, Default)]
struct Slot {
    last_logged: Option<Instant>,
    since_last: u64,
}

#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    interval: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

impl RateLimitedLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one occurrence of `key` at `now`. Returns how many occurrences
    /// (this one included) to report when a line is due, `None` when this one
    /// is only counted. The first occurrence of a key is always reported.
    pub(crate) fn hit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let key = if slots.contains_key(key) || slots.len() < MAX_KEYS {
            key
        } else {
            OVERFLOW_KEY
        };
        let slot = slots.entry(key.to_string()).or_default();
        slot.since_last += 1;
        let due = slot
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
        if due {
            slot.last_logged = Some(now);
            Some(std::mem::take(&mut slot.since_last))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_since_the_last() {
        let log = RateLimitedLog::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(log.hit("timeout", t0), Some(1), "the first is reported");
        for s in 1..30 {
            assert_eq!(log.hit("timeout", t0 + Duration::from_secs(s)), None);
        }
        // 29 counted quietly plus this one.
        assert_eq!(log.hit("timeout", t0 + Duration::from_secs(30)), Some(30));
        assert_eq!(log.hit("timeout", t0 + Duration::from_secs(31)), None);
        // Another reason has its own clock.
        assert_eq!(log.hit("queue_full", t0 + Duration::from_secs(31)), Some(1));
    }

    #[test]
    fn keys_are_bounded() {
        let log = RateLimitedLog::new(Duration::from_secs(30));
        let now = Instant::now();
        for i in 0..1000 {
            log.hit(&format!("k{i}"), now);
        }
        assert!(log.slots.lock().unwrap_or_else(|p| p.into_inner()).len() <= MAX_KEYS + 1);
    }
}
