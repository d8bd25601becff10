//! The nightly scheduler of `settle serve`: settles each date once it becomes settleable, catching
//! up after downtime, through the same claim as manual runs so that several daemons never settle a date twice.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use crate::calendar::{BusinessCalendar, CalendarError};
use crate::model::{RunTrigger, SettlementStatus};
use crate::settlement::runner::{RunError, RunRequest, SettlementRunner};
use crate::store::{HistoryFilter, SharedStore, StoreError};
use crate::time::Clock;

/// `[scheduler]`: the nightly scheduler of `settle serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// After downtime, settle at most this many past dates (the oldest are left to a person).
    pub max_catch_up_days: u32,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            enabled: true,
            max_catch_up_days: 7,
        }
    }
}

/// Who the audit trail names for the scheduler's runs.
pub const SCHEDULER_ACTOR: &str = "scheduler";

/// Longest single sleep. The sleep runs on tokio's monotonic timer while fire times come from the
/// `Clock`; re-reading the clock this often bounds how late a fire can be after the wall clock is
/// stepped (NTP) or the host was suspended.
const MAX_SLEEP_SLICE: StdDuration = StdDuration::from_secs(5 * 60);

/// After a tick that could not even read the store, try again this soon rather than at the next
/// nightly fire: a short outage at fire time must not delay a settlement by a whole day.
const RETRY_AFTER_ERROR_SECONDS: i64 = 5 * 60;

/// When the next nightly run fires: the first instant strictly after `now` at which some date
/// becomes settleable (its cutoff in the business timezone plus grace). DST-safe because it comes
/// from the calendar's UTC windows, never from adding 24 hours.
pub fn next_fire(
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, CalendarError> {
    let latest = calendar.latest_settleable(now)?;
    let mut candidate = latest.succ_opt().ok_or(CalendarError::OutOfRange(latest))?;
    // `latest_settleable` already makes the day after it open at `now`; the loop only guards the
    // strictly-after promise should that ever change (it runs once in practice).
    loop {
        let fire_at = calendar.settleable_at(candidate)?;
        if fire_at > now {
            return Ok(fire_at);
        }
        candidate = candidate
            .succ_opt()
            .ok_or(CalendarError::OutOfRange(candidate))?;
    }
}

/// The catch-up window at `now`: the last `max_catch_up_days` settleable dates, oldest first
/// (none when `max_catch_up_days` is 0). Pure.
pub fn catch_up_window(
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
    max_catch_up_days: u32,
) -> Result<Vec<NaiveDate>, CalendarError> {
    if max_catch_up_days == 0 {
        return Ok(Vec::new());
    }
    let latest = calendar.latest_settleable(now)?;
    let oldest_allowed = latest
        .checked_sub_days(Days::new(u64::from(max_catch_up_days - 1)))
        .ok_or(CalendarError::OutOfRange(latest))?;
    Ok(oldest_allowed
        .iter_days()
        .take_while(|date| *date <= latest)
        .collect())
}

/// The dates a tick at `now` should settle: every date of the catch-up window without a completed
/// revision, oldest first — wherever the newest completed date is, so that a date another process
/// held (or that failed) while later ones were settled is looked at again. Pure.
pub fn dates_due(
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
    completed: &BTreeSet<NaiveDate>,
    max_catch_up_days: u32,
) -> Result<Vec<NaiveDate>, CalendarError> {
    Ok(catch_up_window(calendar, now, max_catch_up_days)?
        .into_iter()
        .filter(|date| !completed.contains(date))
        .collect())
}

/// How long after another holder's lease expiry the loop looks at its date again.
const LEASE_RECHECK_MARGIN_MS: i64 = 500;

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Settled by this tick, oldest first.
    pub settled: Vec<NaiveDate>,
    /// Settled or running elsewhere: another daemon (or a person) won the claim.
    pub already_done: Vec<NaiveDate>,
    /// The earliest lease expiry among the dates running elsewhere: if that holder died, the date
    /// can be taken over from then on, so the loop looks again at that instant rather than
    /// leaving it until the next night.
    pub held_until: Option<DateTime<Utc>>,
    /// The date that stopped the pass and why. At most one: later dates wait for it.
    pub failed: Vec<(NaiveDate, String)>,
    /// Dates of the window whose latest revision is a failed rerun (date, revision): still
    /// settled by an earlier revision, so they block nothing; they wait for `settle retry`.
    pub failed_reruns: Vec<(NaiveDate, u32)>,
}

/// Liveness of the scheduler loop, for readiness checks.
#[derive(Debug, Default)]
pub struct Heartbeat {
    last_tick: Mutex<Option<DateTime<Utc>>>,
    alive: AtomicBool,
}

impl Heartbeat {
    /// When the loop started or last completed a tick (a tick that could not read the store does
    /// not count), by the scheduler's `Clock`. `None` before `run` starts.
    pub fn last_tick(&self) -> Option<DateTime<Utc>> {
        *self.last_tick.lock().expect("heartbeat lock")
    }

    /// Whether the loop is running: false before `run`, and once it returned, panicked or was dropped.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn beat(&self, at: DateTime<Utc>) {
        *self.last_tick.lock().expect("heartbeat lock") = Some(at);
    }
}

/// Marks the loop dead when `run` ends in any way, including a panic or its task being aborted.
struct AliveGuard<'a>(&'a Heartbeat);

impl<'a> AliveGuard<'a> {
    fn start(heartbeat: &'a Heartbeat, at: DateTime<Utc>) -> Self {
        heartbeat.beat(at);
        heartbeat.alive.store(true, Ordering::SeqCst);
        AliveGuard(heartbeat)
    }
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

/// Settles due dates at each nightly fire. Holds no state that matters across restarts: what is
/// due is always recomputed from the store, so a restarted daemon simply catches up.
pub struct Scheduler {
    runner: Arc<SettlementRunner>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    calendar: BusinessCalendar,
    settings: SchedulerSettings,
    heartbeat: Arc<Heartbeat>,
}

impl Scheduler {
    /// `calendar` must be the runner's: it decides both what is due and what the runner accepts.
    pub fn new(
        runner: Arc<SettlementRunner>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        calendar: BusinessCalendar,
        settings: SchedulerSettings,
    ) -> Scheduler {
        Scheduler {
            runner,
            store,
            clock,
            calendar,
            settings,
            heartbeat: Arc::new(Heartbeat::default()),
        }
    }

    /// For readiness checks: when the loop last completed a tick (or started), and whether it is alive.
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        Arc::clone(&self.heartbeat)
    }

    /// One catch-up pass at the clock's now: settles every due date (see `dates_due`), oldest first,
    /// through the same claim as manual runs. A date another daemon holds or has settled is skipped
    /// (not an error) and looked at again next time. The first failure of a date without a
    /// completed revision stops the pass and is reported: later dates take that date's late
    /// arrivals, so money must not be settled past it silently. Such a date whose latest revision
    /// failed is reported again, never retried: that is for a person (`settle retry`). A failed
    /// rerun of a date already settled blocks nothing (`failed_reruns`).
    /// Errs only when the store cannot say what was settled last.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        self.tick_until(None).await
    }

    /// `tick`, but stops before starting another date once `shutdown` is cancelled.
    async fn tick_until(
        &self,
        shutdown: Option<&CancellationToken>,
    ) -> Result<TickReport, StoreError> {
        let now = self.clock.now();
        let max_catch_up_days = self.settings.max_catch_up_days;
        // Only an instant outside chrono's range gets here; the signature has no calendar error.
        let window = catch_up_window(&self.calendar, now, max_catch_up_days).map_err(|error| {
            StoreError::Backend(format!(
                "the scheduler cannot place {now} in the business calendar: {error}"
            ))
        })?;
        let mut completed = BTreeSet::new();
        let mut failed_reruns = Vec::new();
        for &date in &window {
            let revisions = self.store.settlement_revisions(date).await?;
            if revisions
                .iter()
                .any(|r| r.status == SettlementStatus::Completed)
            {
                completed.insert(date);
                // Sealed by its completed revision: a failed rerun of it waits for `settle
                // retry` on its own (its failure was reported when it failed) and blocks nothing.
                if let Some(latest) = revisions.iter().max_by_key(|r| r.revision) {
                    if latest.status == SettlementStatus::Failed {
                        failed_reruns.push((date, latest.revision));
                    }
                }
            }
        }
        let due =
            dates_due(&self.calendar, now, &completed, max_catch_up_days).map_err(|error| {
                StoreError::Backend(format!(
                    "the scheduler cannot place {now} in the business calendar: {error}"
                ))
            })?;
        if let (Some(first), Some(last)) = (window.first(), self.last_completed().await?) {
            if last.succ_opt().is_some_and(|next| next < *first) {
                tracing::warn!(
                    %last,
                    %first,
                    max_catch_up_days,
                    "dates after the last completed one are older than the catch-up limit; settle them by hand"
                );
            }
        }
        for (date, revision) in &failed_reruns {
            tracing::error!(settlement_date = %date, revision, "a failed rerun waits for `settle retry`; the date stays settled by its earlier revision");
        }
        let mut report = TickReport {
            failed_reruns,
            ..TickReport::default()
        };
        for (index, &date) in due.iter().enumerate() {
            if shutdown.is_some_and(CancellationToken::is_cancelled) {
                tracing::info!(
                    left = due.len() - index,
                    "shutdown requested: the remaining due dates wait for the next start"
                );
                break;
            }
            let result = self
                .runner
                .execute(
                    date,
                    RunRequest::Run,
                    SCHEDULER_ACTOR,
                    RunTrigger::Scheduler,
                )
                .await;
            match result {
                Ok(outcome) => {
                    tracing::info!(
                        settlement_date = %date,
                        revision = outcome.settlement.revision,
                        lines = outcome.line_count,
                        resumed = outcome.resumed,
                        "scheduler settled a date"
                    );
                    report.settled.push(date);
                }
                Err(error) if error.is_conflict() => {
                    tracing::info!(settlement_date = %date, %error, "scheduler skipped a date done elsewhere");
                    if let RunError::Refused(StoreError::AlreadyRunning {
                        lease_expires_at, ..
                    }) = &error
                    {
                        report.held_until = Some(
                            report
                                .held_until
                                .map_or(*lease_expires_at, |held| held.min(*lease_expires_at)),
                        );
                    }
                    report.already_done.push(date);
                }
                Err(error) => {
                    let left_waiting = due.len() - index - 1;
                    if matches!(error, RunError::Refused(StoreError::RevisionFailed { .. })) {
                        tracing::error!(settlement_date = %date, %error, left_waiting, "a failed date waits for `settle retry`; later dates wait for it");
                    } else {
                        tracing::error!(settlement_date = %date, %error, left_waiting, "scheduler run failed; later dates wait for it");
                    }
                    report.failed.push((date, error.to_string()));
                    break;
                }
            }
        }
        tracing::info!(
            settled = ?report.settled,
            already_done = ?report.already_done,
            failed = ?report.failed,
            "scheduler tick"
        );
        Ok(report)
    }

    /// The latest date whose latest revision is completed.
    async fn last_completed(&self) -> Result<Option<NaiveDate>, StoreError> {
        let filter = HistoryFilter {
            status: Some(SettlementStatus::Completed),
            limit: 1,
            ..HistoryFilter::default()
        };
        let newest = self.store.settlement_history(&filter).await?;
        Ok(newest.first().map(|settlement| settlement.settlement_date))
    }

    /// Ticks now (catch-up after downtime), then sleeps until `next_fire` and ticks again, until
    /// `shutdown` is cancelled. A cancelled sleep returns at once; a date being settled is allowed
    /// to finish (the caller bounds that wait) but no further date is started. Returns at once,
    /// without ticking, when the scheduler is disabled in the settings.
    pub async fn run(&self, shutdown: CancellationToken) {
        if !self.settings.enabled {
            tracing::info!("nightly scheduler disabled");
            return;
        }
        let _alive = AliveGuard::start(&self.heartbeat, self.clock.now());
        tracing::info!(
            max_catch_up_days = self.settings.max_catch_up_days,
            "nightly scheduler started"
        );
        while !shutdown.is_cancelled() {
            let wake_at = match self.tick_until(Some(&shutdown)).await {
                Ok(report) => {
                    let now = self.clock.now();
                    self.heartbeat.beat(now);
                    let fire_at = match next_fire(&self.calendar, now) {
                        Ok(fire_at) => fire_at,
                        Err(error) => {
                            tracing::error!(%error, "cannot compute the next fire time; retrying soon");
                            now + Duration::seconds(RETRY_AFTER_ERROR_SECONDS)
                        }
                    };
                    // A holder that died leaves its lease to expire: look again just after.
                    match report.held_until {
                        Some(held_until) => fire_at
                            .min(held_until + Duration::milliseconds(LEASE_RECHECK_MARGIN_MS)),
                        None => fire_at,
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "scheduler tick could not read the store; retrying soon");
                    let now = self.clock.now();
                    let retry_at = now + Duration::seconds(RETRY_AFTER_ERROR_SECONDS);
                    next_fire(&self.calendar, now).map_or(retry_at, |fire_at| fire_at.min(retry_at))
                }
            };
            tracing::debug!(%wake_at, "scheduler sleeping");
            if !self.sleep_until(wake_at, &shutdown).await {
                break;
            }
        }
        tracing::info!("nightly scheduler stopped");
    }

    /// Sleeps until the `Clock` reaches `wake_at`, in slices. False if `shutdown` was cancelled.
    async fn sleep_until(&self, wake_at: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
        loop {
            // Negative (already past) does not convert: time to wake.
            let Ok(remaining) = (wake_at - self.clock.now()).to_std() else {
                return true;
            };
            if remaining.is_zero() {
                return true;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(remaining.min(MAX_SLEEP_SLICE)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::Duration;

    use super::*;
    use crate::calendar::parse_timezone;

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
    fn next_fire_is_the_cutoff_plus_grace_of_the_open_date() {
        let aden = BusinessCalendar::default();
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T12:00:00Z")).unwrap(),
            utc("2024-03-10T21:10:00Z")
        );
        // Between the close and the end of grace the date is not settleable yet: still today's fire.
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T21:05:00Z")).unwrap(),
            utc("2024-03-10T21:10:00Z")
        );
    }

    #[test]
    fn next_fire_exactly_at_a_fire_instant_is_the_next_days() {
        let aden = BusinessCalendar::default();
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T21:10:00Z")).unwrap(),
            utc("2024-03-11T21:10:00Z")
        );
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T21:09:59.999Z")).unwrap(),
            utc("2024-03-10T21:10:00Z")
        );
    }

    #[test]
    fn next_fire_follows_dst_changes() {
        let berlin = calendar("Europe/Berlin", "24:00");
        // Spring forward: 2024-03-31 is 23 hours long.
        let before = next_fire(&berlin, utc("2024-03-30T12:00:00Z")).unwrap();
        assert_eq!(before, utc("2024-03-30T23:10:00Z"));
        let after = next_fire(&berlin, before).unwrap();
        assert_eq!(after, utc("2024-03-31T22:10:00Z"));
        assert_eq!(after - before, Duration::hours(23));
        // Fall back: 2024-10-27 is 25 hours long.
        let before = next_fire(&berlin, utc("2024-10-26T12:00:00Z")).unwrap();
        assert_eq!(before, utc("2024-10-26T22:10:00Z"));
        let after = next_fire(&berlin, before).unwrap();
        assert_eq!(after, utc("2024-10-27T23:10:00Z"));
        assert_eq!(after - before, Duration::hours(25));
    }

    #[test]
    fn next_fire_with_a_23_00_cutoff() {
        let aden = calendar("Asia/Aden", "23:00");
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T12:00:00Z")).unwrap(),
            utc("2024-03-10T20:10:00Z")
        );
        assert_eq!(
            next_fire(&aden, utc("2024-03-10T20:15:00Z")).unwrap(),
            utc("2024-03-11T20:10:00Z")
        );
    }

    fn settled(dates: &[&str]) -> BTreeSet<NaiveDate> {
        dates.iter().map(|d| date(d)).collect()
    }

    #[test]
    fn dates_due_with_nothing_settled_are_the_last_catch_up_days() {
        let aden = BusinessCalendar::default();
        let now = utc("2024-03-10T12:00:00Z");
        assert_eq!(aden.latest_settleable(now).unwrap(), date("2024-03-09"));
        let none = BTreeSet::new();
        assert_eq!(
            dates_due(&aden, now, &none, 3).unwrap(),
            vec![date("2024-03-07"), date("2024-03-08"), date("2024-03-09")]
        );
        assert_eq!(
            dates_due(&aden, now, &none, 1).unwrap(),
            vec![date("2024-03-09")]
        );
        assert!(dates_due(&aden, now, &none, 0).unwrap().is_empty());
    }

    #[test]
    fn dates_due_after_downtime_are_the_missing_dates() {
        let aden = BusinessCalendar::default();
        let now = utc("2024-03-10T12:00:00Z");
        assert_eq!(
            dates_due(
                &aden,
                now,
                &settled(&["2024-03-03", "2024-03-04", "2024-03-05", "2024-03-06"]),
                7
            )
            .unwrap(),
            vec![date("2024-03-07"), date("2024-03-08"), date("2024-03-09")]
        );
    }

    #[test]
    fn dates_due_include_a_gap_before_the_newest_completed_date() {
        // The 8th was held elsewhere while the 9th was settled: it is still due.
        let aden = BusinessCalendar::default();
        let now = utc("2024-03-10T12:00:00Z");
        assert_eq!(
            dates_due(&aden, now, &settled(&["2024-03-07", "2024-03-09"]), 3).unwrap(),
            vec![date("2024-03-08")]
        );
    }

    #[test]
    fn dates_due_are_bounded_by_max_catch_up_days() {
        let aden = BusinessCalendar::default();
        let now = utc("2024-03-10T12:00:00Z");
        assert_eq!(
            dates_due(&aden, now, &settled(&["2024-02-01"]), 2).unwrap(),
            vec![date("2024-03-08"), date("2024-03-09")]
        );
    }

    proptest::proptest! {
        /// Whatever was completed (in the window, before it, a gap anywhere): the due dates are
        /// exactly the window's dates without a completed revision, oldest first.
        #[test]
        fn dates_due_are_the_windows_dates_not_completed(
            completed_offsets in proptest::collection::btree_set(0_u32..20, 0..20),
            max_catch_up_days in 0_u32..10,
            hours in 0_i64..24 * 60,
        ) {
            let aden = BusinessCalendar::default();
            let now = utc("2024-03-01T00:00:00Z") + Duration::hours(hours);
            let latest = aden.latest_settleable(now).unwrap();
            let completed: BTreeSet<NaiveDate> = completed_offsets
                .iter()
                .map(|n| latest - Days::new(u64::from(*n)))
                .collect();
            let window = catch_up_window(&aden, now, max_catch_up_days).unwrap();
            let due = dates_due(&aden, now, &completed, max_catch_up_days).unwrap();
            proptest::prop_assert_eq!(window.len(), max_catch_up_days as usize);
            proptest::prop_assert!(window.last().is_none_or(|last| *last == latest));
            proptest::prop_assert!(due.windows(2).all(|pair| pair[0] < pair[1]));
            let expected: Vec<NaiveDate> = window
                .iter()
                .copied()
                .filter(|date| !completed.contains(date))
                .collect();
            proptest::prop_assert_eq!(due, expected);
        }
    }

    #[test]
    fn dates_due_are_empty_when_up_to_date() {
        let aden = BusinessCalendar::default();
        let now = utc("2024-03-10T12:00:00Z");
        let all = settled(&[
            "2024-03-03",
            "2024-03-04",
            "2024-03-05",
            "2024-03-06",
            "2024-03-07",
            "2024-03-08",
            "2024-03-09",
        ]);
        assert!(dates_due(&aden, now, &all, 7).unwrap().is_empty());
        // Once grace has passed on the 10th, it alone is due.
        assert_eq!(
            dates_due(&aden, utc("2024-03-10T21:10:00Z"), &all, 7).unwrap(),
            vec![date("2024-03-10")]
        );
    }
}
