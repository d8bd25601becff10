//! The nightly scheduler of `settle serve`: settles each date once it becomes settleable, catching
//! up after downtime, through the same claim as manual runs so that several daemons never settle a date twice.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use crate::calendar::{BusinessCalendar, CalendarError};
use crate::config::SchedulerSettings;
use crate::model::{RunTrigger, SettlementStatus};
use crate::settlement::runner::{RunError, RunRequest, SettlementRunner};
use crate::store::{HistoryFilter, SharedStore, StoreError};
use crate::time::Clock;

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
    use tempfile::TempDir;

    use super::*;
    use crate::calendar::parse_timezone;
    use crate::ingest;
    use crate::model::fees::FeeSchedule;
    use crate::model::{NewTransaction, PaymentMethod, TransactionKind, TransactionStatus};
    use crate::money::Currency;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{ClaimMode, ClaimRequest};
    use crate::time::ManualClock;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn calendar(tz: &str, cutoff: &str) -> BusinessCalendar {
        BusinessCalendar::new(parse_timezone(tz).unwrap(), cutoff.parse().unwrap(), 10)
    }

    fn settings(max_catch_up_days: u32) -> SchedulerSettings {
        SchedulerSettings {
            enabled: true,
            max_catch_up_days,
        }
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

    /// A real SQLite store on a temp dir, the real runner and a manual clock.
    struct Harness {
        dir: TempDir,
        sqlite: Arc<SqliteStore>,
        store: SharedStore,
        clock: Arc<ManualClock>,
        scheduler: Scheduler,
    }

    const DB_FILE: &str = "s.db";

    async fn harness(now: DateTime<Utc>, max_catch_up_days: u32) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(dir.path().join(DB_FILE)).await.unwrap());
        let store: SharedStore = sqlite.clone();
        let clock = Arc::new(ManualClock::new(now));
        let scheduler = scheduler_on(&store, clock.clone(), "owner", max_catch_up_days);
        Harness {
            dir,
            sqlite,
            store,
            clock,
            scheduler,
        }
    }

    fn scheduler_on(
        store: &SharedStore,
        clock: Arc<dyn Clock>,
        owner: &str,
        max_catch_up_days: u32,
    ) -> Scheduler {
        let calendar = BusinessCalendar::default();
        let runner = SettlementRunner::new(
            store.clone(),
            clock.clone(),
            calendar,
            FeeSchedule::default(),
            owner,
        );
        Scheduler::new(
            Arc::new(runner),
            store.clone(),
            clock,
            calendar,
            settings(max_catch_up_days),
        )
    }

    fn payment(reference: &str, amount_minor: i64, occurred_at: &str) -> NewTransaction {
        NewTransaction {
            id: None,
            merchant_id: "m-0001".into(),
            kind: TransactionKind::Payment,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: Currency::from_code("USD").unwrap(),
            method: PaymentMethod::Card,
            occurred_at: utc(occurred_at),
            external_ref: reference.into(),
            refund_of: None,
        }
    }

    /// A claim as another process would make it, straight through the store.
    fn foreign_claim(
        settlement_date: NaiveDate,
        owner: &str,
        now: DateTime<Utc>,
        lease_seconds: i64,
    ) -> ClaimRequest {
        let calendar = BusinessCalendar::default();
        ClaimRequest {
            settlement_date,
            mode: ClaimMode::Run,
            owner: owner.into(),
            requested_by: "test".into(),
            trigger: RunTrigger::Manual,
            now,
            lease_duration: Duration::seconds(lease_seconds),
            calendar,
            fee_schedule: FeeSchedule::default(),
            window: calendar.window(settlement_date).unwrap(),
        }
    }

    async fn status_of(
        store: &SharedStore,
        settlement_date: NaiveDate,
    ) -> Option<SettlementStatus> {
        store
            .settlement(settlement_date, None)
            .await
            .unwrap()
            .map(|s| s.status)
    }

    /// 2024-03-10 12:00 UTC in Aden: the 9th is the latest settleable date.
    const NOON_10TH: &str = "2024-03-10T12:00:00Z";

    #[tokio::test]
    async fn tick_settles_the_due_dates_and_a_second_tick_does_nothing() {
        let h = harness(utc(NOON_10TH), 3).await;
        // Aden's 2024-03-08 runs from 03-07 21:00Z to 03-08 21:00Z.
        let batch = vec![
            payment("p-1", 10_000, "2024-03-08T10:00:00Z"),
            payment("p-2", 4_000, "2024-03-08T20:59:00Z"),
            payment("p-3", 2_000, "2024-03-09T08:00:00Z"),
        ];
        let inserted = ingest::record(
            h.sqlite.as_ref(),
            &BusinessCalendar::default(),
            batch,
            h.clock.now(),
        )
        .await
        .unwrap();
        assert_eq!(inserted.inserted, 3);

        let report = h.scheduler.tick().await.unwrap();
        let due = vec![date("2024-03-07"), date("2024-03-08"), date("2024-03-09")];
        assert_eq!(
            report,
            TickReport {
                settled: due.clone(),
                ..TickReport::default()
            }
        );
        for d in &due {
            assert_eq!(
                status_of(&h.store, *d).await,
                Some(SettlementStatus::Completed)
            );
        }
        let eighth = h
            .store
            .settlement(date("2024-03-08"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(eighth.revision, 1);
        assert_eq!(eighth.trigger, RunTrigger::Scheduler);
        assert_eq!(eighth.requested_by, SCHEDULER_ACTOR);
        assert_eq!(eighth.totals.len(), 1);
        let usd = &eighth.totals[0].figures;
        assert_eq!(usd.transaction_count, 2);
        assert_eq!(usd.gross_minor, 14_000);
        // The default schedule: 2.5 %.
        assert_eq!(usd.fees_minor, 350);
        assert_eq!(usd.net_minor, 13_650);

        let again = h.scheduler.tick().await.unwrap();
        assert_eq!(again, TickReport::default());
        for d in &due {
            assert_eq!(h.store.settlement_revisions(*d).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn tick_catches_up_only_the_dates_missed_during_downtime() {
        let h = harness(utc("2024-03-07T12:00:00Z"), 7).await;
        h.scheduler.tick().await.unwrap();
        assert_eq!(
            status_of(&h.store, date("2024-03-06")).await,
            Some(SettlementStatus::Completed)
        );
        // Three nights of downtime.
        h.clock.set(utc(NOON_10TH));
        let report = h.scheduler.tick().await.unwrap();
        assert_eq!(
            report.settled,
            vec![date("2024-03-07"), date("2024-03-08"), date("2024-03-09")]
        );
    }

    #[tokio::test]
    async fn a_date_held_by_another_daemon_is_skipped_and_the_others_are_settled() {
        let h = harness(utc(NOON_10TH), 3).await;
        let held = date("2024-03-08");
        h.store
            .claim_settlement(foreign_claim(held, "other-daemon", h.clock.now(), 300))
            .await
            .unwrap();

        let report = h.scheduler.tick().await.unwrap();
        assert_eq!(report.settled, vec![date("2024-03-07"), date("2024-03-09")]);
        assert_eq!(report.already_done, vec![held]);
        // The loop looks again when that lease expires, in case its holder died.
        assert_eq!(
            report.held_until,
            Some(h.clock.now() + Duration::seconds(300))
        );
        assert!(report.failed.is_empty());
        let still_held = h.store.settlement(held, None).await.unwrap().unwrap();
        assert_eq!(still_held.status, SettlementStatus::Running);
        assert_eq!(still_held.lease.unwrap().owner, "other-daemon");
    }

    #[tokio::test]
    async fn a_failed_date_stops_the_pass_and_is_not_retried() {
        let h = harness(utc(NOON_10TH), 3).await;
        let broken = date("2024-03-08");
        let claimed = h
            .store
            .claim_settlement(foreign_claim(broken, "someone", h.clock.now(), 300))
            .await
            .unwrap();
        h.store
            .fail_settlement(&claimed.fence(), "provider down", h.clock.now())
            .await
            .unwrap();

        let report = h.scheduler.tick().await.unwrap();
        assert_eq!(report.settled, vec![date("2024-03-07")]);
        assert!(report.already_done.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, broken);
        assert!(
            report.failed[0].1.contains("provider down"),
            "{:?}",
            report.failed
        );
        // The pass stopped: the 9th waits for the 8th.
        assert_eq!(status_of(&h.store, date("2024-03-09")).await, None);

        // The next night reports it again and still leaves it to a person.
        h.clock.advance(Duration::days(1));
        let next_night = h.scheduler.tick().await.unwrap();
        assert!(next_night.settled.is_empty());
        assert_eq!(next_night.failed.len(), 1);
        assert_eq!(next_night.failed[0].0, broken);
        let revisions = h.store.settlement_revisions(broken).await.unwrap();
        assert_eq!(revisions.len(), 1);
        assert_eq!(revisions[0].status, SettlementStatus::Failed);
        assert_eq!(revisions[0].attempts, 1);
        assert_eq!(status_of(&h.store, date("2024-03-09")).await, None);
    }

    /// Issue 15 (defect 7): a date another process held while this pass settled a later one is
    /// looked at again by the next pass, taken over once its holder's lease expired, and settled.
    #[tokio::test]
    async fn a_date_held_elsewhere_while_a_later_one_settled_is_settled_next_time() {
        let h = harness(utc(NOON_10TH), 3).await;
        let held = date("2024-03-08");
        h.store
            .claim_settlement(foreign_claim(held, "dead-daemon", h.clock.now(), 300))
            .await
            .unwrap();
        let first = h.scheduler.tick().await.unwrap();
        assert_eq!(first.settled, vec![date("2024-03-07"), date("2024-03-09")]);
        assert_eq!(first.already_done, vec![held]);
        // Its holder died: after the lease, the next pass takes the date over.
        h.clock.advance(Duration::seconds(301));
        let next = h.scheduler.tick().await.unwrap();
        assert_eq!(next.settled, vec![held], "{next:?}");
        assert_eq!(
            status_of(&h.store, held).await,
            Some(SettlementStatus::Completed)
        );
    }

    /// Issue 15 (defect 8): a failed rerun of the newest settled date blocks no later date: that
    /// date is sealed by its completed revision; the rerun waits for `settle retry` on its own.
    #[tokio::test]
    async fn a_failed_rerun_of_a_settled_date_blocks_no_later_date() {
        let h = harness(utc(NOON_10TH), 3).await;
        let report = h.scheduler.tick().await.unwrap();
        assert_eq!(report.settled.len(), 3);
        let newest = date("2024-03-09");
        let latest = h.store.settlement(newest, None).await.unwrap().unwrap();
        let mut rerun = foreign_claim(newest, "someone", h.clock.now(), 300);
        rerun.mode = ClaimMode::Rerun {
            after_revision: latest.revision,
            reason: "provider file corrected".into(),
        };
        let claimed = h.store.claim_settlement(rerun).await.unwrap();
        h.store
            .fail_settlement(&claimed.fence(), "provider down", h.clock.now())
            .await
            .unwrap();
        // The next night: the 10th is settled although the 9th's rerun failed.
        h.clock.advance(Duration::days(1));
        let next = h.scheduler.tick().await.unwrap();
        assert_eq!(next.settled, vec![date("2024-03-10")], "{next:?}");
        assert!(next.failed.is_empty(), "{next:?}");
        assert_eq!(next.failed_reruns, vec![(newest, 2)]);
        let revisions = h.store.settlement_revisions(newest).await.unwrap();
        assert_eq!(revisions.len(), 2, "the failed rerun is left to a person");
    }

    #[tokio::test]
    async fn two_schedulers_ticking_together_settle_each_date_exactly_once() {
        let h = harness(utc(NOON_10TH), 5).await;
        let batch = (0..20)
            .map(|i| {
                payment(
                    &format!("p-{i}"),
                    1_000 + i,
                    &format!("2024-03-0{}T10:00:00Z", 5 + i % 5),
                )
            })
            .collect();
        ingest::record(
            h.sqlite.as_ref(),
            &BusinessCalendar::default(),
            batch,
            h.clock.now(),
        )
        .await
        .unwrap();
        // A second process: its own handle on the same file, its own owner name.
        let other_store: SharedStore =
            Arc::new(SqliteStore::open(h.dir.path().join(DB_FILE)).await.unwrap());
        let other = scheduler_on(&other_store, h.clock.clone(), "other-owner", 5);

        let (first, second) = tokio::join!(h.scheduler.tick(), other.tick());
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(
            first.failed.is_empty() && second.failed.is_empty(),
            "{first:?} {second:?}"
        );
        let mut settled: Vec<NaiveDate> = first.settled.clone();
        settled.extend(&second.settled);
        let unique: BTreeSet<NaiveDate> = settled.iter().copied().collect();
        assert_eq!(
            unique.len(),
            settled.len(),
            "settled twice: {first:?} {second:?}"
        );
        let due: BTreeSet<NaiveDate> = dates_due(
            &BusinessCalendar::default(),
            h.clock.now(),
            &BTreeSet::new(),
            5,
        )
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(unique, due);
        for d in due {
            let revisions = h.store.settlement_revisions(d).await.unwrap();
            assert_eq!(revisions.len(), 1, "{d}");
            assert_eq!(revisions[0].status, SettlementStatus::Completed, "{d}");
            assert_eq!(revisions[0].attempts, 1, "{d}");
        }
    }

    #[tokio::test]
    async fn a_run_left_by_a_killed_daemon_is_taken_over() {
        let h = harness(utc(NOON_10TH), 1).await;
        let orphan = date("2024-03-09");
        let crashed_at = h.clock.now() - Duration::minutes(30);
        let claimed = h
            .store
            .claim_settlement(foreign_claim(orphan, "killed-daemon", crashed_at, 1))
            .await
            .unwrap();
        assert_eq!((claimed.revision, claimed.lease_version), (1, 1));

        let report = h.scheduler.tick().await.unwrap();
        assert_eq!(report.settled, vec![orphan]);
        let done = h.store.settlement(orphan, None).await.unwrap().unwrap();
        assert_eq!(done.status, SettlementStatus::Completed);
        assert_eq!((done.revision, done.lease_version), (1, 2));
        assert_eq!(done.attempts, 2);
        assert_eq!(h.store.settlement_revisions(orphan).await.unwrap().len(), 1);
    }

    /// A clock that moves with tokio's (pausable) time, from a fixed UTC start.
    struct TokioClock {
        base_utc: DateTime<Utc>,
        base_instant: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            let elapsed = tokio::time::Instant::now() - self.base_instant;
            self.base_utc + Duration::from_std(elapsed).expect("elapsed fits")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_catches_up_at_start_settles_at_the_nightly_fire_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore =
            Arc::new(SqliteStore::open(dir.path().join(DB_FILE)).await.unwrap());
        let clock = Arc::new(TokioClock {
            base_utc: utc(NOON_10TH),
            base_instant: tokio::time::Instant::now(),
        });
        let scheduler = Arc::new(scheduler_on(&store, clock.clone(), "owner", 2));
        let heartbeat = scheduler.heartbeat();
        assert!(!heartbeat.is_alive() && heartbeat.last_tick().is_none());

        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let scheduler = Arc::clone(&scheduler);
            let shutdown = shutdown.clone();
            async move { scheduler.run(shutdown).await }
        });

        // Let the start-up catch-up settle the 8th and 9th; the 10th is still open.
        let tonight = date("2024-03-10");
        let fire_at = utc("2024-03-10T21:10:00Z");
        wait_until_completed(&store, date("2024-03-09")).await;
        assert!(clock.now() < fire_at);
        assert_eq!(
            status_of(&store, date("2024-03-08")).await,
            Some(SettlementStatus::Completed)
        );
        assert_eq!(status_of(&store, tonight).await, None);
        assert!(heartbeat.is_alive());

        // Jump to just past tonight's fire.
        let until_fire = (fire_at - clock.now()).to_std().unwrap();
        tokio::time::sleep(until_fire + StdDuration::from_secs(60)).await;
        wait_until_completed(&store, tonight).await;
        // The heartbeat beats once the tick has returned, just after the date completed.
        for _ in 0..600 {
            if heartbeat.last_tick().is_some_and(|at| at >= fire_at) {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        let settled = store.settlement(tonight, None).await.unwrap().unwrap();
        assert!(settled.started_at >= fire_at, "{}", settled.started_at);
        assert_eq!(settled.trigger, RunTrigger::Scheduler);
        assert!(heartbeat.last_tick().unwrap() >= fire_at);
        assert!(heartbeat.is_alive());

        // Cancelling interrupts the sleep until tomorrow's fire at once.
        shutdown.cancel();
        tokio::time::timeout(StdDuration::from_secs(1), task)
            .await
            .expect("run ends promptly once cancelled")
            .unwrap();
        assert!(!heartbeat.is_alive());
    }

    #[tokio::test(start_paused = true)]
    async fn run_does_nothing_when_disabled_or_already_cancelled() {
        let h = harness(utc(NOON_10TH), 3).await;
        let disabled = Scheduler::new(
            Arc::new(SettlementRunner::new(
                h.store.clone(),
                h.clock.clone(),
                BusinessCalendar::default(),
                FeeSchedule::default(),
                "owner",
            )),
            h.store.clone(),
            h.clock.clone(),
            BusinessCalendar::default(),
            SchedulerSettings {
                enabled: false,
                max_catch_up_days: 3,
            },
        );
        disabled.run(CancellationToken::new()).await;
        assert!(!disabled.heartbeat().is_alive());

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        h.scheduler.run(cancelled).await;
        assert!(!h.scheduler.heartbeat().is_alive());
        assert_eq!(h.scheduler.heartbeat().last_tick(), Some(utc(NOON_10TH)));
        assert_eq!(status_of(&h.store, date("2024-03-09")).await, None);
    }

    /// Polls in small steps of (paused) tokio time until the date's latest revision is completed.
    async fn wait_until_completed(store: &SharedStore, settlement_date: NaiveDate) {
        for _ in 0..600 {
            if status_of(store, settlement_date).await == Some(SettlementStatus::Completed) {
                return;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        panic!("{settlement_date} was not settled in time");
    }
}
