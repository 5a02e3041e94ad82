//! The one time type of the database layer.

use std::{fmt, time::Duration};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// A point in time as the database stores it: RFC 3339 text for people and epoch ms for comparing/sorting.
///
/// Millisecond precision, so the text and the number of one value always
/// name the same instant (the stored text never claims more precision than
/// the stored number that orders it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        // Milliseconds since 1970 fit an i64 for the next 292 million years.
        Self(i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX))
    }

    pub fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn unix_millis(&self) -> i64 {
        self.0
    }

    /// UTC with millisecond precision, e.g. `2025-01-31T08:15:00.123Z`.
    pub fn to_rfc3339(&self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        // Only instants outside the years 0-9999 fail to convert or format;
        // they are clamped to the nearest representable one rather than
        // stored as "".
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| {
                if self.0 < 0 {
                    "0000-01-01T00:00:00Z"
                } else {
                    "9999-12-31T23:59:59.999Z"
                }
                .to_string()
            })
    }

    /// The instant `span` before this one, for "older than" cutoffs.
    pub fn minus(self, span: Duration) -> Self {
        let ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_millis_name_the_same_instant() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        assert_eq!(t.unix_millis(), 1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            Timestamp::from_unix_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn orders_by_instant_and_cutoffs_saturate() {
        let a = Timestamp::from_unix_millis(1_000);
        assert!(a.minus(Duration::from_millis(1)) < a);
        assert_eq!(a.minus(Duration::from_secs(2)).unix_millis(), -1_000);
        assert_eq!(
            Timestamp::from_unix_millis(i64::MIN)
                .minus(Duration::from_secs(1))
                .unix_millis(),
            i64::MIN
        );
        let now = Timestamp::now();
        assert!(now > Timestamp::from_unix_millis(1_700_000_000_000));
        assert!(now.to_rfc3339().ends_with('Z'));
    }
}
