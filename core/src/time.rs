//! Time at the edge: the `Clock` the rest of the code is handed instead of reading the wall clock,
//! and the one textual form of stored instants (RFC 3339, UTC, milliseconds, fixed width).

use std::sync::Mutex;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// The source of "now". Only the binaries' edges use `SystemClock`; tests use `ManualClock`.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock lock") += by;
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = now;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

/// `2024-03-10T20:30:00.000Z`: fixed width, so text order is time order.
pub fn format_utc(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 instant with any offset into UTC.
pub fn parse_rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| {
            format!("{value:?} is not an RFC 3339 instant with an offset, e.g. 2024-03-10T14:30:00+03:00 ({error})")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_utc() {
        let instant = parse_rfc3339("2024-03-10T23:30:00+03:00").unwrap();
        assert_eq!(format_utc(instant), "2024-03-10T20:30:00.000Z");
    }

    #[test]
    fn refuses_instants_without_offset() {
        let error = parse_rfc3339("2024-03-10 23:30:00").unwrap_err();
        assert!(error.contains("\"2024-03-10 23:30:00\""), "{error}");
        assert!(parse_rfc3339("2024-02-30T10:00:00Z").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(5));
        assert_eq!(clock.now(), start + Duration::minutes(5));
    }
}
