//! The scheduler against a real SQLite store, the real runner and a manual clock: due dates are
//! settled once, catch-up after downtime, dates held elsewhere, failures, takeovers, cancellation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use settle_core::calendar::BusinessCalendar;
use settle_core::config::SchedulerSettings;
use settle_core::ingest;
use settle_core::model::fees::FeeSchedule;
use settle_core::model::{NewTransaction, PaymentMethod, TransactionKind, TransactionStatus};
use settle_core::model::{RunTrigger, SettlementStatus};
use settle_core::money::Currency;
use settle_core::scheduler::*;
use settle_core::settlement::runner::SettlementRunner;
use settle_core::store::SharedStore;
use settle_core::store::{ClaimMode, ClaimRequest};
use settle_core::time::Clock;
use settle_core::time::ManualClock;
use settle_store_sqlite::SqliteStore;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn settings(max_catch_up_days: u32) -> SchedulerSettings {
    SchedulerSettings {
        enabled: true,
        max_catch_up_days,
    }
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

async fn status_of(store: &SharedStore, settlement_date: NaiveDate) -> Option<SettlementStatus> {
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
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path().join(DB_FILE)).await.unwrap());
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
