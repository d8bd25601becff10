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
    use chrono::{Datelike, Timelike};
    // Years beyond four digits and leap seconds keep chrono's spelling.
    if !(0..=9999).contains(&instant.year()) || instant.nanosecond() >= 1_000_000_000 {
        return instant.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    // Written field by field: stores write millions of these in an import.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        instant.year(),
        instant.month(),
        instant.day(),
        instant.hour(),
        instant.minute(),
        instant.second(),
        instant.timestamp_subsec_millis()
    )
}

/// `2024-03-10`: how stores keep business dates.
pub fn format_date(date: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    if !(0..=9999).contains(&date.year()) {
        return date.format("%Y-%m-%d").to_string();
    }
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// Parses an RFC 3339 instant with any offset into UTC.
pub fn parse_rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| {
            format!("{value:?} is not an RFC 3339 instant with an offset, e.g. 2024-03-10T14:30:00+03:00 ({error})")
        })
}

/// Reads a stored instant: the fixed form `format_utc` writes is decoded directly (stores read
/// millions of them in a settlement run); any other RFC 3339 text goes through `parse_rfc3339`.
pub fn parse_stored_utc(value: &str) -> Result<DateTime<Utc>, String> {
    match parse_fixed_utc(value) {
        Some(instant) => Ok(instant),
        None => parse_rfc3339(value),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, or `None` for anything else (including impossible dates).
fn parse_fixed_utc(value: &str) -> Option<DateTime<Utc>> {
    let bytes = value.as_bytes();
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    if bytes.len() != 24 || separators.iter().any(|(at, byte)| bytes[*at] != *byte) {
        return None;
    }
    let date = parse_fixed_date(&value[..10])?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        digits(bytes, 11, 13)?,
        digits(bytes, 14, 16)?,
        digits(bytes, 17, 19)?,
        digits(bytes, 20, 23)?,
    )?;
    Some(date.and_time(time).and_utc())
}

/// `YYYY-MM-DD` as stores keep dates, or `None` for anything else (including impossible dates).
pub fn parse_fixed_date(value: &str) -> Option<chrono::NaiveDate> {
    let bytes = value.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(bytes, 0, 4)?).ok()?,
        digits(bytes, 5, 7)?,
        digits(bytes, 8, 10)?,
    )
}

/// The decimal number `bytes[from..to]` spells, or `None` unless they are all ASCII digits.
fn digits(bytes: &[u8], from: usize, to: usize) -> Option<u32> {
    bytes[from..to].iter().try_fold(0_u32, |sum, digit| {
        digit
            .is_ascii_digit()
            .then(|| sum * 10 + u32::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stored_instants_read_back_exactly(millis in 0_i64..253_402_300_799_999) {
            let instant = DateTime::from_timestamp_millis(millis).unwrap();
            let text = format_utc(instant);
            prop_assert_eq!(parse_fixed_utc(&text), Some(instant));
            prop_assert_eq!(parse_stored_utc(&text), parse_rfc3339(&text));
        }

        #[test]
        fn the_fixed_reader_never_disagrees_with_rfc3339(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z") {
            if let Some(fast) = parse_fixed_utc(&text) {
                prop_assert_eq!(Ok(fast), parse_rfc3339(&text));
            }
        }

        #[test]
        fn stored_dates_read_back_exactly(days in 0_i32..2_932_896) {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 1).unwrap();
            let text = format_date(date);
            prop_assert_eq!(&text, &date.format("%Y-%m-%d").to_string());
            prop_assert_eq!(parse_fixed_date(&text), Some(date));
        }

        #[test]
        fn the_stored_form_is_chronos_rfc3339_with_milliseconds(
            millis in -62_167_219_200_000_i64..253_402_300_799_999,
            leap_nanos in proptest::option::of(1_000_000_000_u32..1_999_999_999),
        ) {
            let mut instant = DateTime::from_timestamp_millis(millis).unwrap();
            if let Some(nanos) = leap_nanos {
                // A leap second as chrono represents it, on a whole-minute boundary's last second.
                if let Some(leap) = DateTime::from_timestamp(millis.div_euclid(60_000) * 60 + 59, nanos) {
                    instant = leap;
                }
            }
            prop_assert_eq!(format_utc(instant), instant.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }

    #[test]
    fn the_fixed_readers_refuse_other_forms() {
        assert_eq!(parse_fixed_utc("2024-02-30T10:00:00.000Z"), None);
        assert_eq!(parse_fixed_utc("2024-03-10T20:30:00Z"), None);
        assert_eq!(parse_fixed_utc("2024-03-10T20:30:00.000+00:00"), None);
        assert_eq!(parse_fixed_utc("2024-03-10T2a:30:00.000Z"), None);
        assert_eq!(parse_fixed_date("2024-13-01"), None);
        assert_eq!(parse_fixed_date("2024-3-01"), None);
        // Other valid forms still read through the general parser.
        assert_eq!(
            parse_stored_utc("2024-03-10T20:30:00Z"),
            parse_rfc3339("2024-03-10T20:30:00.000Z")
        );
    }

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
