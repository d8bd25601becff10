//! The business calendar: which UTC instants belong to settlement date D, and when D may be settled.
//! D covers `[close(D-1), close(D))`, `close(D)` being the cutoff on local date D; DST gaps and overlaps resolved.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Days, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The business day a settlement covers, a local calendar date in the business timezone.
pub type SettlementDate = NaiveDate;

/// The timezone of the origin's business.
pub const DEFAULT_TIMEZONE: &str = "Asia/Aden";
/// Minutes after a window closes before its date may be settled (late in-flight writes land first).
pub const DEFAULT_GRACE_MINUTES: u32 = 10;

/// The longest DST gap in the tz database is well under a day; scanning stops there.
const MAX_GAP_MINUTES: i64 = 24 * 60;

/// Why a calendar setting or a settle request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown timezone {0:?} (expected an IANA name such as Asia/Aden)")]
    UnknownTimezone(String),
    #[error("invalid cutoff {value:?}: {reason}")]
    InvalidCutoff { value: String, reason: &'static str },
    #[error(
        "settlement date {date} is still open: its window closes at {closes_at} and may be settled \
         from {settleable_at} (cutoff plus {grace_minutes} min grace)"
    )]
    DateStillOpen {
        date: SettlementDate,
        closes_at: DateTime<Utc>,
        settleable_at: DateTime<Utc>,
        grace_minutes: u32,
    },
    #[error("settlement date {0} is outside the supported range")]
    OutOfRange(SettlementDate),
}

/// The local time of day at which a settlement day ends. `24:00` is midnight at the end of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    minutes_after_midnight: u32,
}

impl Cutoff {
    /// Midnight at the end of the local day.
    pub const END_OF_DAY: Cutoff = Cutoff {
        minutes_after_midnight: 24 * 60,
    };

    /// The local end of settlement date `date`, as a wall-clock time.
    fn local_close(&self, date: SettlementDate) -> Option<NaiveDateTime> {
        let midnight = date.and_time(NaiveTime::MIN);
        midnight.checked_add_signed(Duration::minutes(i64::from(self.minutes_after_midnight)))
    }
}

impl FromStr for Cutoff {
    type Err = CalendarError;

    /// `HH:MM`, 00:01 to 24:00. `00:00` is refused: it reads both as the start and the end of a day.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| CalendarError::InvalidCutoff {
            value: value.to_string(),
            reason,
        };
        let (hours, minutes) = value
            .split_once(':')
            .ok_or_else(|| invalid("expected HH:MM, e.g. 24:00 or 23:00"))?;
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(hours) || !two_digits(minutes) {
            return Err(invalid("expected HH:MM, e.g. 24:00 or 23:00"));
        }
        let hours: u32 = hours.parse().map_err(|_| invalid("bad hours"))?;
        let minutes: u32 = minutes.parse().map_err(|_| invalid("bad minutes"))?;
        if minutes >= 60 {
            return Err(invalid("minutes must be 00 to 59"));
        }
        let minutes_after_midnight = hours * 60 + minutes;
        if minutes_after_midnight == 0 {
            return Err(invalid(
                "00:00 is ambiguous (start or end of the day?); write 24:00 for midnight at the end of the day",
            ));
        }
        if minutes_after_midnight > 24 * 60 {
            return Err(invalid("the cutoff must be between 00:01 and 24:00"));
        }
        Ok(Cutoff {
            minutes_after_midnight,
        })
    }
}

impl fmt::Display for Cutoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.minutes_after_midnight;
        write!(f, "{:02}:{:02}", m / 60, m % 60)
    }
}

impl Serialize for Cutoff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cutoff {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A half-open UTC interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.start <= instant && instant < self.end
    }

    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}

/// Timezone, cutoff and grace: everything needed to turn dates into windows. Stored with every
/// settlement revision so that a later configuration change never alters an old date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessCalendar {
    #[serde(with = "tz_name")]
    pub timezone: Tz,
    pub cutoff: Cutoff,
    pub grace_minutes: u32,
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        BusinessCalendar {
            timezone: chrono_tz::Asia::Aden,
            cutoff: Cutoff::END_OF_DAY,
            grace_minutes: DEFAULT_GRACE_MINUTES,
        }
    }
}

/// Parses an IANA timezone name.
pub fn parse_timezone(name: &str) -> Result<Tz, CalendarError> {
    name.parse::<Tz>()
        .map_err(|_| CalendarError::UnknownTimezone(name.to_string()))
}

impl BusinessCalendar {
    pub fn new(timezone: Tz, cutoff: Cutoff, grace_minutes: u32) -> Self {
        BusinessCalendar {
            timezone,
            cutoff,
            grace_minutes,
        }
    }

    /// The instant settlement date `date` closes: the cutoff on that local date. In a DST gap, the
    /// first valid instant after the gap; in an overlap, the earlier of the two instants.
    pub fn close(&self, date: SettlementDate) -> Result<DateTime<Utc>, CalendarError> {
        let local = self
            .cutoff
            .local_close(date)
            .ok_or(CalendarError::OutOfRange(date))?;
        for minutes_later in 0..=MAX_GAP_MINUTES {
            let candidate = local + Duration::minutes(minutes_later);
            match self.timezone.from_local_datetime(&candidate) {
                LocalResult::Single(instant) => return Ok(instant.with_timezone(&Utc)),
                LocalResult::Ambiguous(earlier, _) => return Ok(earlier.with_timezone(&Utc)),
                // Inside a gap: the first local minute that exists after it is the transition itself.
                LocalResult::None => continue,
            }
        }
        Err(CalendarError::OutOfRange(date))
    }

    /// The UTC window `[close(D-1), close(D))` of settlement date `date`.
    pub fn window(&self, date: SettlementDate) -> Result<Window, CalendarError> {
        let previous = date
            .checked_sub_days(Days::new(1))
            .ok_or(CalendarError::OutOfRange(date))?;
        Ok(Window {
            start: self.close(previous)?,
            end: self.close(date)?,
        })
    }

    /// The settlement date whose window contains `instant`.
    pub fn date_of(&self, instant: DateTime<Utc>) -> Result<SettlementDate, CalendarError> {
        let local_date = instant.with_timezone(&self.timezone).date_naive();
        // The window of D is anchored on local date D; with any cutoff the answer is the
        // local date or one of its neighbours.
        let mut candidate = local_date
            .checked_sub_days(Days::new(1))
            .ok_or(CalendarError::OutOfRange(local_date))?;
        for _ in 0..3 {
            if self.window(candidate)?.contains(instant) {
                return Ok(candidate);
            }
            candidate = candidate
                .succ_opt()
                .ok_or(CalendarError::OutOfRange(candidate))?;
        }
        unreachable!("windows tile the time line; {instant} must fall in one of three neighbours")
    }

    /// The instant from which `date` may be settled: its close plus the grace period.
    pub fn settleable_at(&self, date: SettlementDate) -> Result<DateTime<Utc>, CalendarError> {
        Ok(self.close(date)? + Duration::minutes(i64::from(self.grace_minutes)))
    }

    /// Refuses to settle a date whose window (plus grace) has not closed at `now`.
    pub fn ensure_settleable(
        &self,
        date: SettlementDate,
        now: DateTime<Utc>,
    ) -> Result<(), CalendarError> {
        let settleable_at = self.settleable_at(date)?;
        if now < settleable_at {
            return Err(CalendarError::DateStillOpen {
                date,
                closes_at: self.close(date)?,
                settleable_at,
                grace_minutes: self.grace_minutes,
            });
        }
        Ok(())
    }

    /// The latest settlement date that may be settled at `now`.
    pub fn latest_settleable(&self, now: DateTime<Utc>) -> Result<SettlementDate, CalendarError> {
        let grace = Duration::minutes(i64::from(self.grace_minutes));
        let open_date = self.date_of(now - grace)?;
        open_date
            .pred_opt()
            .ok_or(CalendarError::OutOfRange(open_date))
    }
}

/// Serializes a `Tz` by its IANA name.
mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(deserializer)?;
        super::parse_timezone(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn calendar(tz: &str, cutoff: &str) -> BusinessCalendar {
        BusinessCalendar::new(parse_timezone(tz).unwrap(), cutoff.parse().unwrap(), 10)
    }

    #[test]
    fn default_is_aden_midnight_to_midnight() {
        let cal = BusinessCalendar::default();
        let window = cal.window(date("2024-03-10")).unwrap();
        assert_eq!(window.start, utc("2024-03-09T21:00:00Z"));
        assert_eq!(window.end, utc("2024-03-10T21:00:00Z"));
    }

    #[test]
    fn origin_bug_the_last_hour_of_the_aden_day_belongs_to_it() {
        // The origin settled at 23:00 UTC; 23:30 Aden time is 20:30 UTC of the same date.
        let cal = BusinessCalendar::default();
        assert_eq!(
            cal.date_of(utc("2024-03-10T20:30:00Z")).unwrap(),
            date("2024-03-10")
        );
        assert_eq!(
            cal.date_of(utc("2024-03-10T21:00:00Z")).unwrap(),
            date("2024-03-11")
        );
    }

    #[test]
    fn cutoff_23_runs_from_23_on_the_previous_day() {
        let cal = calendar("Asia/Aden", "23:00");
        let window = cal.window(date("2024-03-10")).unwrap();
        assert_eq!(window.start, utc("2024-03-09T20:00:00Z"));
        assert_eq!(window.end, utc("2024-03-10T20:00:00Z"));
    }

    #[test]
    fn cutoff_rejects_midnight_as_ambiguous_and_bad_forms() {
        let error = "00:00".parse::<Cutoff>().unwrap_err().to_string();
        assert!(error.contains("ambiguous"), "{error}");
        for bad in ["24:01", "25:00", "7:00", "07:60", "0700", "", "ab:cd"] {
            let error = bad.parse::<Cutoff>().unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        assert_eq!("24:00".parse::<Cutoff>().unwrap(), Cutoff::END_OF_DAY);
        assert_eq!("06:30".parse::<Cutoff>().unwrap().to_string(), "06:30");
    }

    #[test]
    fn unknown_timezone_is_named() {
        let error = parse_timezone("Mars/Olympus").unwrap_err().to_string();
        assert!(error.contains("Mars/Olympus"));
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let berlin = calendar("Europe/Berlin", "24:00");
        assert_eq!(
            berlin.window(date("2024-03-31")).unwrap().duration(),
            Duration::hours(23)
        );
        assert_eq!(
            berlin.window(date("2024-10-27")).unwrap().duration(),
            Duration::hours(25)
        );
        assert_eq!(
            berlin.window(date("2024-06-01")).unwrap().duration(),
            Duration::hours(24)
        );
        let new_york = calendar("America/New_York", "24:00");
        assert_eq!(
            new_york.window(date("2024-03-10")).unwrap().duration(),
            Duration::hours(23)
        );
        assert_eq!(
            new_york.window(date("2024-11-03")).unwrap().duration(),
            Duration::hours(25)
        );
    }

    #[test]
    fn cutoff_in_a_dst_gap_closes_at_the_first_instant_after_it() {
        // Cairo skipped from 00:00 (UTC+2) to 01:00 (UTC+3) on 2024-04-26: the transition is 22:00 UTC.
        let cairo = calendar("Africa/Cairo", "24:00");
        assert_eq!(
            cairo.close(date("2024-04-25")).unwrap(),
            utc("2024-04-25T22:00:00Z")
        );
        // New York skips 02:00-03:00 on 2024-03-10: a 02:30 cutoff closes at 03:00 EDT = 07:00 UTC.
        let new_york = calendar("America/New_York", "02:30");
        assert_eq!(
            new_york.close(date("2024-03-10")).unwrap(),
            utc("2024-03-10T07:00:00Z")
        );
    }

    #[test]
    fn cutoff_in_a_dst_overlap_closes_at_the_earlier_instant() {
        // New York repeats 01:00-02:00 on 2024-11-03: 01:30 EDT (05:30 UTC) comes before 01:30 EST.
        let new_york = calendar("America/New_York", "01:30");
        assert_eq!(
            new_york.close(date("2024-11-03")).unwrap(),
            utc("2024-11-03T05:30:00Z")
        );
    }

    #[test]
    fn an_open_date_cannot_be_settled_until_grace_has_passed() {
        let cal = BusinessCalendar::default();
        let d = date("2024-03-10");
        let close = utc("2024-03-10T21:00:00Z");
        let error = cal
            .ensure_settleable(d, close - Duration::hours(1))
            .unwrap_err();
        assert!(matches!(error, CalendarError::DateStillOpen { .. }));
        assert!(error.to_string().contains("still open"));
        assert!(cal
            .ensure_settleable(d, close + Duration::minutes(9))
            .is_err());
        assert!(cal
            .ensure_settleable(d, close + Duration::minutes(10))
            .is_ok());
    }

    #[test]
    fn latest_settleable_honours_grace() {
        let cal = BusinessCalendar::default();
        let close = utc("2024-03-10T21:00:00Z");
        assert_eq!(
            cal.latest_settleable(close + Duration::minutes(9)).unwrap(),
            date("2024-03-09")
        );
        assert_eq!(
            cal.latest_settleable(close + Duration::minutes(10))
                .unwrap(),
            date("2024-03-10")
        );
    }

    #[test]
    fn serializes_by_name() {
        let cal = calendar("Europe/Berlin", "23:30");
        let json = serde_json::to_string(&cal).unwrap();
        assert_eq!(
            json,
            r#"{"timezone":"Europe/Berlin","cutoff":"23:30","grace_minutes":10}"#
        );
        assert_eq!(
            serde_json::from_str::<BusinessCalendar>(&json).unwrap(),
            cal
        );
    }

    const ZONES: &[&str] = &[
        "Asia/Aden",
        "Europe/Berlin",
        "America/New_York",
        "Africa/Cairo",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Apia",
        "America/Santiago",
        "UTC",
    ];

    fn any_calendar() -> impl Strategy<Value = BusinessCalendar> {
        (proptest::sample::select(ZONES), 1_u32..=24 * 60).prop_map(|(zone, minutes)| {
            let cutoff = Cutoff {
                minutes_after_midnight: minutes,
            };
            BusinessCalendar::new(parse_timezone(zone).unwrap(), cutoff, 10)
        })
    }

    fn any_date() -> impl Strategy<Value = NaiveDate> {
        (0_i64..365 * 40).prop_map(|days| date("2000-01-01") + Duration::days(days))
    }

    proptest! {
        #[test]
        fn windows_tile_the_time_line(cal in any_calendar(), d in any_date()) {
            let today = cal.window(d).unwrap();
            let tomorrow = cal.window(d.succ_opt().unwrap()).unwrap();
            prop_assert_eq!(today.end, tomorrow.start);
            // Samoa skipped 2011-12-30 entirely: that window is empty. No day exceeds 26 hours.
            prop_assert!(today.start <= today.end);
            prop_assert!(today.duration() <= Duration::hours(26));
        }

        #[test]
        fn window_includes_its_start_and_excludes_its_end(cal in any_calendar(), d in any_date()) {
            let window = cal.window(d).unwrap();
            prop_assume!(window.start < window.end);
            prop_assert!(window.contains(window.start));
            prop_assert!(!window.contains(window.end));
            prop_assert_eq!(cal.date_of(window.start).unwrap(), d);
            prop_assert_eq!(cal.date_of(window.end - Duration::nanoseconds(1)).unwrap(), d);
            prop_assert_eq!(cal.date_of(window.end).unwrap(), d.succ_opt().unwrap());
        }

        #[test]
        fn every_instant_falls_in_the_window_of_its_date(
            cal in any_calendar(),
            seconds in 946_684_800_i64..2_200_000_000,
        ) {
            let instant = DateTime::from_timestamp(seconds, 0).unwrap();
            let d = cal.date_of(instant).unwrap();
            prop_assert!(cal.window(d).unwrap().contains(instant));
        }

        #[test]
        fn a_date_is_settleable_exactly_from_close_plus_grace(cal in any_calendar(), d in any_date()) {
            let from = cal.settleable_at(d).unwrap();
            prop_assert!(cal.ensure_settleable(d, from).is_ok());
            prop_assert!(cal.ensure_settleable(d, from - Duration::seconds(1)).is_err());
            prop_assert!(cal.latest_settleable(from).unwrap() >= d);
            prop_assert!(cal.latest_settleable(from - Duration::seconds(1)).unwrap() < d);
        }
    }
}
