//! The store contract: the behaviour every store adapter must have, written once and run against
//! each adapter (`contract_tests!` below instantiates it per adapter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use settle_core::calendar::BusinessCalendar;
use settle_core::fees::FeeSchedule;
use settle_core::ingest;
use settle_core::model::{
    AuditAction, AuditEvent, AuditOutcome, NewTransaction, PaymentMethod, RunTrigger,
    SettlementFigures, SettlementLine, SettlementStatus, TransactionKind, TransactionStatus,
};
use settle_core::money::Currency;
use settle_core::settlement::compute;
use settle_core::store::{
    AuditFilter, ClaimMode, ClaimRequest, HistoryFilter, LineSort, LinesPage, LinesQuery,
    SharedStore, StoreError,
};
use uuid::Uuid;

mod reconciliation;
use reconciliation::*;

/// A store under test, and a way to open another independent handle on the same data.
pub struct TestStore {
    pub store: SharedStore,
    pub reopen: Box<dyn Fn() -> Pin<Box<dyn Future<Output = SharedStore> + Send>> + Send + Sync>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

pub mod adapters {
    use super::*;
    use settle_store_mongo::MongoStore;
    use settle_store_sqlite::SqliteStore;

    /// The MongoDB server of the suite: `MONGODB_URI` (a real MongoDB of the user's), else the
    /// SecantusDB server `scripts/test.sh` starts (`SETTLE_TEST_MONGODB_URI`).
    pub fn mongodb_uri() -> String {
        std::env::var("MONGODB_URI")
            .or_else(|_| std::env::var("SETTLE_TEST_MONGODB_URI"))
            .expect(
                "the MongoDB contract tests need a server: run ./scripts/test.sh (it starts SecantusDB), \
                 or set MONGODB_URI",
            )
    }

    /// Drops the test's database when the test ends.
    struct DropDatabase(MongoStore);

    impl Drop for DropDatabase {
        fn drop(&mut self) {
            let store = self.0.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let _ = std::thread::spawn(move || handle.block_on(store.drop_database())).join();
            }
        }
    }

    /// A fresh database per test.
    pub async fn mongodb() -> TestStore {
        let uri = mongodb_uri();
        let database = format!("settle_test_{}", Uuid::new_v4().simple());
        let store = MongoStore::connect(&uri, &database)
            .await
            .expect("connect to MongoDB");
        let shared: SharedStore = Arc::new(store.clone());
        TestStore {
            store: shared,
            reopen: Box::new(move || {
                let (uri, database) = (uri.clone(), database.clone());
                Box::pin(async move {
                    Arc::new(
                        MongoStore::connect(&uri, &database)
                            .await
                            .expect("reconnect"),
                    ) as SharedStore
                })
            }),
            _guard: Box::new(DropDatabase(store)),
        }
    }

    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("contract.db");
        let store: SharedStore = Arc::new(SqliteStore::open(&path).await.expect("open"));
        TestStore {
            store,
            reopen: Box::new(move || {
                let path = path.clone();
                Box::pin(async move {
                    Arc::new(SqliteStore::open(&path).await.expect("reopen")) as SharedStore
                })
            }),
            _guard: Box::new(dir),
        }
    }
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

fn payment(
    reference: &str,
    merchant: &str,
    amount_minor: i64,
    occurred_at: &str,
) -> NewTransaction {
    NewTransaction {
        id: None,
        merchant_id: merchant.into(),
        kind: TransactionKind::Payment,
        status: TransactionStatus::Completed,
        amount_minor,
        currency: usd(),
        method: PaymentMethod::Card,
        occurred_at: at(occurred_at),
        external_ref: reference.into(),
        refund_of: None,
    }
}

fn refund(
    reference: &str,
    of: &str,
    merchant: &str,
    amount_minor: i64,
    occurred_at: &str,
) -> NewTransaction {
    NewTransaction {
        kind: TransactionKind::Refund,
        refund_of: Some(of.into()),
        ..payment(reference, merchant, amount_minor, occurred_at)
    }
}

/// Aden calendar: 2024-03-10 runs from 2024-03-09T21:00Z to 2024-03-10T21:00Z.
fn calendar() -> BusinessCalendar {
    BusinessCalendar::default()
}

async fn record(
    store: &SharedStore,
    batch: Vec<NewTransaction>,
) -> settle_core::store::InsertOutcome {
    ingest::record(
        store.as_ref(),
        &calendar(),
        batch,
        at("2024-04-01T00:00:00Z"),
    )
    .await
    .expect("record")
}

fn claim(
    settlement_date: NaiveDate,
    mode: ClaimMode,
    owner: &str,
    now: DateTime<Utc>,
    lease_seconds: i64,
) -> ClaimRequest {
    ClaimRequest {
        settlement_date,
        mode,
        owner: owner.into(),
        requested_by: "cli:tester".into(),
        trigger: RunTrigger::Manual,
        now,
        lease_duration: Duration::seconds(lease_seconds),
        calendar: calendar(),
        fee_schedule: FeeSchedule::default(),
        window: calendar().window(settlement_date).unwrap(),
    }
}

/// Saves a computed result and completes the revision, as a run does.
async fn finish(
    store: &SharedStore,
    fence: &settle_core::model::Fence,
    computed: &settle_core::settlement::ComputedSettlement,
    now: DateTime<Utc>,
) -> Result<settle_core::model::Settlement, StoreError> {
    store.save_settlement_result(fence, computed, now).await?;
    store.complete_settlement(fence, now).await
}

async fn all_transactions(
    store: &SharedStore,
    settlement_date: NaiveDate,
) -> Vec<settle_core::model::Transaction> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .transactions_page(settlement_date, after, 3)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        out.extend(page);
    }
    out
}

pub async fn insert_assigns_the_natural_date_and_skips_identical_duplicates(t: TestStore) {
    let store = t.store;
    let outcome = record(
        &store,
        vec![
            payment("p-1", "m-1", 1000, "2024-03-10T20:59:59.999Z"),
            payment("p-2", "m-1", 2000, "2024-03-10T21:00:00Z"),
        ],
    )
    .await;
    assert_eq!(
        (
            outcome.inserted,
            outcome.duplicates,
            outcome.conflicts.len()
        ),
        (2, 0, 0)
    );
    let first = all_transactions(&store, date("2024-03-10")).await;
    let second = all_transactions(&store, date("2024-03-11")).await;
    assert_eq!(
        first
            .iter()
            .map(|t| t.external_ref.as_str())
            .collect::<Vec<_>>(),
        ["p-1"]
    );
    assert_eq!(
        second
            .iter()
            .map(|t| t.external_ref.as_str())
            .collect::<Vec<_>>(),
        ["p-2"]
    );
    assert!(!first[0].late);

    let again = record(
        &store,
        vec![payment("p-1", "m-1", 1000, "2024-03-10T20:59:59.999Z")],
    )
    .await;
    assert_eq!((again.inserted, again.duplicates), (0, 1));
    assert_eq!(all_transactions(&store, date("2024-03-10")).await.len(), 1);
}

pub async fn a_batch_with_a_conflict_writes_nothing(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![payment("p-1", "m-1", 1000, "2024-03-10T10:00:00Z")],
    )
    .await;
    let outcome = record(
        &store,
        vec![
            payment("p-new", "m-1", 500, "2024-03-10T11:00:00Z"),
            payment("p-1", "m-1", 9999, "2024-03-10T10:00:00Z"),
        ],
    )
    .await;
    assert_eq!(outcome.inserted, 0);
    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(outcome.conflicts[0].index, 1);
    assert_eq!(outcome.conflicts[0].existing.amount_minor, 1000);
    let stored = store
        .transactions_by_ref(vec![("m-1".into(), "p-new".into())])
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "the good row of a conflicting batch must not be written"
    );
    // The same reference for another merchant is a different transaction.
    let other = record(
        &store,
        vec![payment("p-1", "m-2", 1000, "2024-03-10T10:00:00Z")],
    )
    .await;
    assert_eq!(other.inserted, 1);
}

pub async fn transactions_for_a_sealed_date_land_late_on_the_next_open_date(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![payment("p-1", "m-1", 1000, "2024-03-10T10:00:00Z")],
    )
    .await;
    store
        .claim_settlement(claim(
            date("2024-03-10"),
            ClaimMode::Run,
            "a",
            at("2024-03-11T00:00:00Z"),
            60,
        ))
        .await
        .unwrap();
    store
        .claim_settlement(claim(
            date("2024-03-11"),
            ClaimMode::Run,
            "a",
            at("2024-03-12T00:00:00Z"),
            60,
        ))
        .await
        .unwrap();
    let outcome = record(
        &store,
        vec![payment("p-late", "m-1", 700, "2024-03-10T12:00:00Z")],
    )
    .await;
    assert_eq!((outcome.inserted, outcome.late), (1, 1));
    assert_eq!(all_transactions(&store, date("2024-03-10")).await.len(), 1);
    let landed = all_transactions(&store, date("2024-03-12")).await;
    assert_eq!(landed.len(), 1);
    assert!(landed[0].late);
    assert_eq!(
        landed[0].occurred_at,
        at("2024-03-10T12:00:00Z"),
        "the original instant is kept"
    );
    let late = store.late_transactions(date("2024-03-12")).await.unwrap();
    assert_eq!(late.len(), 1);
    assert!(store
        .late_transactions(date("2024-03-10"))
        .await
        .unwrap()
        .is_empty());
}

pub async fn pages_cover_every_transaction_exactly_once(t: TestStore) {
    let store = t.store;
    let batch: Vec<_> = (0..25)
        .map(|n| {
            payment(
                &format!("p-{n}"),
                &format!("m-{}", n % 4),
                100 + n,
                "2024-03-10T10:00:00Z",
            )
        })
        .collect();
    record(&store, batch).await;
    let seen = all_transactions(&store, date("2024-03-10")).await;
    assert_eq!(seen.len(), 25);
    let mut ids: Vec<Uuid> = seen.iter().map(|t| t.id).collect();
    let sorted = {
        let mut s = ids.clone();
        s.sort();
        s
    };
    assert_eq!(ids, sorted, "pages come in id order");
    ids.dedup();
    assert_eq!(ids.len(), 25);
}

pub async fn refunded_payments_come_with_all_their_refunds(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![
            payment("p-1", "m-1", 10_000, "2024-03-09T10:00:00Z"),
            refund("r-1", "p-1", "m-1", 3_000, "2024-03-10T10:00:00Z"),
            refund("r-2", "p-1", "m-1", 2_000, "2024-03-12T10:00:00Z"),
            refund("r-x", "p-1", "m-2", 100, "2024-03-10T10:00:00Z"),
        ],
    )
    .await;
    let found = store
        .refunded_payments(vec![
            ("m-1".into(), "p-1".into()),
            ("m-1".into(), "missing".into()),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].payment.external_ref, "p-1");
    let mut refs: Vec<_> = found[0]
        .refunds
        .iter()
        .map(|r| r.external_ref.clone())
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        ["r-1", "r-2"],
        "another merchant's refund with the same reference is not mixed in"
    );
}

pub async fn a_claimed_date_cannot_be_claimed_again_and_completion_is_exact(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![
            payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z"),
            payment("p-2", "m-2", 1_010, "2024-03-10T11:00:00Z"),
        ],
    )
    .await;
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    let running = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    assert_eq!(
        (running.revision, running.status, running.lease_version),
        (1, SettlementStatus::Running, 1)
    );
    let again = store
        .claim_settlement(claim(d, ClaimMode::Run, "b", now, 60))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::AlreadyRunning { revision: 1, .. }),
        "{again}"
    );

    let transactions = all_transactions(&store, d).await;
    let computed = compute(&FeeSchedule::default(), &transactions, &Default::default()).unwrap();
    let completed = finish(&store, &running.fence(), &computed, now)
        .await
        .unwrap();
    assert_eq!(completed.status, SettlementStatus::Completed);
    assert_eq!(completed.totals, computed.totals);
    assert_eq!(store.settlement_lines(d, 1).await.unwrap(), computed.lines);

    let after = store
        .claim_settlement(claim(d, ClaimMode::Run, "b", now, 60))
        .await
        .unwrap_err();
    assert!(
        matches!(after, StoreError::AlreadySettled { revision: 1, .. }),
        "{after}"
    );
    let retry = store
        .claim_settlement(claim(d, ClaimMode::Retry, "b", now, 60))
        .await
        .unwrap_err();
    assert!(
        matches!(retry, StoreError::AlreadySettled { .. }),
        "{retry}"
    );
}

pub async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z")],
    )
    .await;
    let d = date("2024-03-10");
    let t0 = at("2024-03-11T00:00:00Z");
    let first = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", t0, 1))
        .await
        .unwrap();
    let second = store
        .claim_settlement(claim(d, ClaimMode::Run, "b", t0 + Duration::seconds(2), 60))
        .await
        .unwrap();
    assert_eq!(
        (second.revision, second.lease_version, second.attempts),
        (1, 2, 2)
    );
    assert_eq!(second.lease.as_ref().unwrap().owner, "b");

    let stale = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    let lost = finish(&store, &first.fence(), &stale, t0)
        .await
        .unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost(_)), "{lost}");
    assert!(matches!(
        store.fail_settlement(&first.fence(), "late", t0).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store
            .renew_lease(&first.fence(), t0 + Duration::hours(1))
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let current = store.settlement(d, None).await.unwrap().unwrap();
    assert_eq!(
        current.status,
        SettlementStatus::Running,
        "the stale holder changed nothing"
    );
    assert!(store.settlement_lines(d, 1).await.unwrap().is_empty());

    let transactions = all_transactions(&store, d).await;
    let computed = compute(&FeeSchedule::default(), &transactions, &Default::default()).unwrap();
    store
        .renew_lease(&second.fence(), t0 + Duration::minutes(5))
        .await
        .unwrap();
    let done = finish(&store, &second.fence(), &computed, t0)
        .await
        .unwrap();
    assert_eq!(done.totals[0].figures.gross_minor, 10_000);
}

pub async fn a_rerun_adds_a_revision_and_keeps_the_earlier_one(t: TestStore) {
    let store = t.store;
    record(
        &store,
        vec![payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z")],
    )
    .await;
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    let first = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    let computed = compute(
        &FeeSchedule::default(),
        &all_transactions(&store, d).await,
        &Default::default(),
    )
    .unwrap();
    finish(&store, &first.fence(), &computed, now)
        .await
        .unwrap();

    let rerun = |after_revision| ClaimMode::Rerun {
        after_revision,
        reason: "fee correction".into(),
    };
    let stale = store
        .claim_settlement(claim(d, rerun(7), "a", now, 60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::RevisionMoved {
                expected: 7,
                found: 1,
                ..
            }
        ),
        "{stale}"
    );
    let second = store
        .claim_settlement(claim(d, rerun(1), "a", now, 60))
        .await
        .unwrap();
    assert_eq!(
        (second.revision, second.reason.as_deref()),
        (2, Some("fee correction"))
    );
    let while_running = store
        .claim_settlement(claim(d, rerun(2), "b", now, 60))
        .await
        .unwrap_err();
    assert!(
        matches!(while_running, StoreError::AlreadyRunning { .. }),
        "{while_running}"
    );

    let revisions = store.settlement_revisions(d).await.unwrap();
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[0].status, SettlementStatus::Completed);
    assert_eq!(
        revisions[0].totals, computed.totals,
        "revision 1 is untouched"
    );
    assert!(matches!(
        store
            .claim_settlement(claim(date("2024-03-20"), rerun(1), "a", now, 60))
            .await,
        Err(StoreError::NothingToDo { .. })
    ));
}

pub async fn a_failed_revision_is_resumed_only_by_retry(t: TestStore) {
    let store = t.store;
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    let running = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    store
        .fail_settlement(&running.fence(), "provider down", now)
        .await
        .unwrap();
    let failed = store.settlement(d, None).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (SettlementStatus::Failed, Some("provider down"))
    );

    let run = store
        .claim_settlement(claim(d, ClaimMode::Run, "b", now, 60))
        .await
        .unwrap_err();
    assert!(matches!(run, StoreError::RevisionFailed { .. }), "{run}");
    let resumed = store
        .claim_settlement(claim(d, ClaimMode::Retry, "b", now, 60))
        .await
        .unwrap();
    assert_eq!(
        (resumed.revision, resumed.attempts, resumed.lease_version),
        (1, 2, 2)
    );
    assert_eq!(resumed.status, SettlementStatus::Running);
    let empty = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    let done = finish(&store, &resumed.fence(), &empty, now).await.unwrap();
    assert_eq!(done.status, SettlementStatus::Completed);
    assert!(
        done.totals.is_empty(),
        "a day without transactions settles to zero totals"
    );
    assert!(done.error.is_none());
}

pub async fn concurrent_claims_have_exactly_one_winner(t: TestStore) {
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    let mut tasks = Vec::new();
    for n in 0..12 {
        let handle = (t.reopen)().await;
        tasks.push(tokio::spawn(async move {
            handle
                .claim_settlement(claim(d, ClaimMode::Run, &format!("owner-{n}"), now, 60))
                .await
        }));
    }
    let results = futures::future::join_all(tasks).await;
    let winners = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(winners, 1, "{results:?}");
    for result in results {
        if let Err(error) = result.unwrap() {
            assert!(
                matches!(error, StoreError::AlreadyRunning { .. }),
                "{error}"
            );
        }
    }
    assert_eq!(t.store.settlement_revisions(d).await.unwrap().len(), 1);
}

pub async fn history_lists_latest_revisions_filtered(t: TestStore) {
    let store = t.store;
    let now = at("2024-03-20T00:00:00Z");
    let empty = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    for day in ["2024-03-10", "2024-03-11", "2024-03-12"] {
        let s = store
            .claim_settlement(claim(date(day), ClaimMode::Run, "a", now, 60))
            .await
            .unwrap();
        if day == "2024-03-11" {
            store
                .fail_settlement(&s.fence(), "boom", now)
                .await
                .unwrap();
        } else {
            finish(&store, &s.fence(), &empty, now).await.unwrap();
        }
    }
    let rerun = ClaimMode::Rerun {
        after_revision: 1,
        reason: "again".into(),
    };
    let s = store
        .claim_settlement(claim(date("2024-03-10"), rerun, "a", now, 60))
        .await
        .unwrap();
    finish(&store, &s.fence(), &empty, now).await.unwrap();

    let all = store
        .settlement_history(&HistoryFilter::default())
        .await
        .unwrap();
    let listed: Vec<_> = all
        .iter()
        .map(|s| (s.settlement_date.to_string(), s.revision))
        .collect();
    assert_eq!(
        listed,
        [
            ("2024-03-12".into(), 1),
            ("2024-03-11".into(), 1),
            ("2024-03-10".into(), 2)
        ]
    );
    let failed = HistoryFilter {
        status: Some(SettlementStatus::Failed),
        ..HistoryFilter::default()
    };
    assert_eq!(store.settlement_history(&failed).await.unwrap().len(), 1);
    let range = HistoryFilter {
        from: Some(date("2024-03-11")),
        to: Some(date("2024-03-12")),
        ..HistoryFilter::default()
    };
    assert_eq!(store.settlement_history(&range).await.unwrap().len(), 2);
    let every = HistoryFilter {
        all_revisions: true,
        limit: 10,
        ..HistoryFilter::default()
    };
    assert_eq!(store.settlement_history(&every).await.unwrap().len(), 4);
    let paged = HistoryFilter {
        limit: 1,
        offset: 1,
        ..HistoryFilter::default()
    };
    let page = store.settlement_history(&paged).await.unwrap();
    assert_eq!(page[0].settlement_date, date("2024-03-11"));
}

/// A line with the figures pages sort on (the other counts and amounts zero).
fn line(
    merchant: &str,
    currency: &str,
    net: i64,
    gross: i64,
    fees: i64,
    count: u64,
) -> SettlementLine {
    SettlementLine {
        merchant_id: merchant.into(),
        currency: Currency::from_code(currency).unwrap(),
        figures: SettlementFigures {
            transaction_count: count,
            completed_count: count,
            payment_count: count,
            gross_minor: gross,
            fees_minor: fees,
            net_minor: net,
            ..SettlementFigures::default()
        },
    }
}

/// A page as the lines route made it before the stores paged: the lines in store order
/// (merchant_id, currency), filtered by `str::contains`, stably sorted by the key, reversed for
/// descending, then skipped and taken.
fn reference_page(lines: &[SettlementLine], query: &LinesQuery) -> LinesPage {
    let mut lines = lines.to_vec();
    if let Some(q) = query.merchant_contains.as_deref().filter(|q| !q.is_empty()) {
        lines.retain(|line| line.merchant_id.contains(q));
    }
    match query.sort {
        LineSort::MerchantId => {
            lines.sort_by(|a, b| (&a.merchant_id, a.currency).cmp(&(&b.merchant_id, b.currency)))
        }
        LineSort::NetMinor => lines.sort_by_key(|l| l.figures.net_minor),
        LineSort::GrossMinor => lines.sort_by_key(|l| l.figures.gross_minor),
        LineSort::FeesMinor => lines.sort_by_key(|l| l.figures.fees_minor),
        LineSort::TransactionCount => lines.sort_by_key(|l| l.figures.transaction_count),
    }
    if query.descending {
        lines.reverse();
    }
    LinesPage {
        total: lines.len() as u64,
        items: lines
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(query.limit as usize)
            .collect(),
    }
}

/// (merchant_id, currency) of each line, in order.
fn line_keys(lines: &[SettlementLine]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| (l.merchant_id.clone(), l.currency.code().to_string()))
        .collect()
}

pub async fn line_pages_are_filtered_sorted_and_paged_in_the_store(t: TestStore) {
    let store = t.store;
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    // Ties on every key (a.1, a_1, m-1/USD and M-2 share a net; a.1 and m-1/USD share every
    // figure), a merchant in two currencies, ids differing only in case, and ids with `.`, `_`
    // and `:`, which a pattern would read as more than text.
    let mut lines = vec![
        line("a.1", "USD", 500, 600, 100, 3),
        line("a_1", "USD", 500, 700, 200, 3),
        line("m-1", "EUR", -50, 100, 150, 1),
        line("m-1", "USD", 500, 600, 100, 3),
        line("m-10", "JPY", 0, 0, 0, 0),
        line("M-2", "USD", 500, 900, 400, 7),
        line("m-2", "GBP", 1_200, 1_300, 100, 2),
        line("x:m-1", "USD", -50, 50, 100, 2),
        line("z9", "KWD", 7, 7, 0, 1),
    ];
    lines.sort_by(|a, b| (&a.merchant_id, a.currency).cmp(&(&b.merchant_id, b.currency)));
    let first = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    let mut computed = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    computed.lines = lines.clone();
    finish(&store, &first.fence(), &computed, now)
        .await
        .unwrap();
    let stored = store.settlement_lines(d, 1).await.unwrap();
    assert_eq!(stored, lines);

    let all = |sort, descending| LinesQuery {
        sort,
        descending,
        limit: 100,
        ..LinesQuery::default()
    };
    let keys = |page: LinesPage| {
        line_keys(&page.items)
            .into_iter()
            .map(|(m, c)| format!("{m}/{c}"))
            .collect::<Vec<_>>()
    };
    // The order spelt out: text byte by byte (upper case first), ties by merchant_id then currency
    // in the page's direction.
    let by_merchant = [
        "M-2/USD",
        "a.1/USD",
        "a_1/USD",
        "m-1/EUR",
        "m-1/USD",
        "m-10/JPY",
        "m-2/GBP",
        "x:m-1/USD",
        "z9/KWD",
    ];
    let by_net = [
        "m-1/EUR",
        "x:m-1/USD",
        "m-10/JPY",
        "z9/KWD",
        "M-2/USD",
        "a.1/USD",
        "a_1/USD",
        "m-1/USD",
        "m-2/GBP",
    ];
    let by_count = [
        "m-10/JPY",
        "m-1/EUR",
        "z9/KWD",
        "m-2/GBP",
        "x:m-1/USD",
        "a.1/USD",
        "a_1/USD",
        "m-1/USD",
        "M-2/USD",
    ];
    for (sort, wanted) in [
        (LineSort::MerchantId, by_merchant),
        (LineSort::NetMinor, by_net),
        (LineSort::TransactionCount, by_count),
    ] {
        let ascending = store
            .settlement_lines_page(d, 1, &all(sort, false))
            .await
            .unwrap();
        assert_eq!(ascending.total, 9);
        assert_eq!(keys(ascending), wanted, "{sort:?} ascending");
        let mut reversed = wanted.to_vec();
        reversed.reverse();
        let descending = store
            .settlement_lines_page(d, 1, &all(sort, true))
            .await
            .unwrap();
        assert_eq!(keys(descending), reversed, "{sort:?} descending");
    }

    // Every key, both orders, every search, every page: as the route's own sort had it.
    let searches = [
        None,
        Some(""),
        Some("m-1"),
        Some("M"),
        Some("m"),
        Some("."),
        Some("_"),
        Some("%"),
        Some("x:"),
        Some("nobody"),
    ];
    for sort in LineSort::ALL {
        for descending in [false, true] {
            for search in searches {
                let query = |limit, offset| LinesQuery {
                    sort,
                    descending,
                    merchant_contains: search.map(str::to_string),
                    limit,
                    offset,
                };
                let whole = store
                    .settlement_lines_page(d, 1, &query(100, 0))
                    .await
                    .unwrap();
                let context = format!("{sort:?} descending={descending} q={search:?}");
                assert_eq!(whole, reference_page(&stored, &query(100, 0)), "{context}");
                // Pages of 4 cover the whole exactly once, each with the same total.
                let mut walked = Vec::new();
                for offset in (0..=whole.total + 4).step_by(4) {
                    let page = store
                        .settlement_lines_page(d, 1, &query(4, offset))
                        .await
                        .unwrap();
                    assert_eq!(
                        page,
                        reference_page(&stored, &query(4, offset)),
                        "{context} offset={offset}"
                    );
                    assert_eq!(page.total, whole.total, "{context}");
                    walked.extend(page.items);
                }
                assert_eq!(walked, whole.items, "{context}");
            }
        }
    }
    let merchants = |page: LinesPage| {
        page.items
            .into_iter()
            .map(|l| l.merchant_id)
            .collect::<Vec<_>>()
    };
    let search = |text: &str| LinesQuery {
        merchant_contains: Some(text.into()),
        limit: 100,
        ..LinesQuery::default()
    };
    assert_eq!(
        merchants(
            store
                .settlement_lines_page(d, 1, &search("m-1"))
                .await
                .unwrap()
        ),
        ["m-1", "m-1", "m-10", "x:m-1"],
        "a substring anywhere"
    );
    assert_eq!(
        merchants(
            store
                .settlement_lines_page(d, 1, &search("M"))
                .await
                .unwrap()
        ),
        ["M-2"],
        "case and all"
    );
    assert_eq!(
        merchants(
            store
                .settlement_lines_page(d, 1, &search("_"))
                .await
                .unwrap()
        ),
        ["a_1"],
        "no wildcards"
    );

    // No lines asked for, or past any offset a store can skip: an empty page, the total counted.
    for (limit, offset) in [(0, 0), (4, u64::MAX), (4, 1 << 63)] {
        let page = store
            .settlement_lines_page(
                d,
                1,
                &LinesQuery {
                    limit,
                    offset,
                    ..LinesQuery::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (page.items.len(), page.total),
            (0, 9),
            "limit={limit} offset={offset}"
        );
    }

    // Each revision pages its own lines; one not yet saved, or unknown, has none.
    let second = store
        .claim_settlement(claim(
            d,
            ClaimMode::Rerun {
                after_revision: 1,
                reason: "corrected".into(),
            },
            "a",
            now,
            60,
        ))
        .await
        .unwrap();
    let everything = all(LineSort::MerchantId, false);
    assert_eq!(
        store
            .settlement_lines_page(d, 2, &everything)
            .await
            .unwrap(),
        LinesPage::default(),
        "a running revision has saved no lines"
    );
    computed.lines = vec![
        line("m-1", "USD", 1, 1, 0, 1),
        line("m-3", "USD", 2, 2, 0, 1),
    ];
    finish(&store, &second.fence(), &computed, now)
        .await
        .unwrap();
    let page = store
        .settlement_lines_page(d, 2, &everything)
        .await
        .unwrap();
    assert_eq!((page.items, page.total), (computed.lines.clone(), 2));
    assert_eq!(
        store
            .settlement_lines_page(d, 1, &everything)
            .await
            .unwrap()
            .total,
        9,
        "revision 1 keeps its lines"
    );
    for (day, revision) in [(d, 3), (date("2024-03-20"), 1)] {
        assert_eq!(
            store
                .settlement_lines_page(day, revision, &everything)
                .await
                .unwrap(),
            LinesPage::default(),
            "{day} revision {revision}"
        );
    }
}

/// `event` under an action name of the test's choosing: a store keeps and matches any name as
/// text (one written by another version included), so its tests need not use the known ones.
fn stored_as(action: &str, event: AuditEvent) -> AuditEvent {
    AuditEvent {
        action: action.to_string(),
        ..event
    }
}

pub async fn audit_events_are_appended_and_listed_newest_first(t: TestStore) {
    let store = t.store;
    for (n, action) in ["first", "second", "third"].iter().enumerate() {
        let event = stored_as(
            action,
            AuditEvent::new(
                at("2024-03-10T10:00:00Z") + Duration::minutes(n as i64),
                "cli:tester",
                AuditAction::HttpRequest,
                "subject",
                AuditOutcome::Succeeded,
                serde_json::json!({ "n": n }),
            ),
        );
        store.record_audit(&event).await.unwrap();
    }
    let events = store.audit_events(2, 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["third", "second"]
    );
    assert_eq!(events[0].detail["n"], 2);
    assert_eq!(store.audit_events(10, 2).await.unwrap()[0].action, "first");
}

pub async fn audit_events_are_filtered_exactly_and_by_a_half_open_range(t: TestStore) {
    let store = t.store;
    let t0 = at("2024-03-10T10:00:00Z");
    // (minutes after t0, actor, action, subject); lookalikes differ by case, a suffix or a prefix.
    let rows = [
        (0, "token:ana", "payment.record", "transaction=1"),
        (1, "token:bob", "payment.record", "transaction=2"),
        (2, "token:ana", "token.create", "token=x"),
        (3, "token:ana", "payment.record", "transaction=1"),
        (4, "token:ana2", "payment.record", "transaction=10"),
        (5, "Token:ana", "Payment.record", "Transaction=1"),
        (6, "token:an", "payment.recor", "transaction="),
    ];
    let mut events = Vec::new();
    for (minutes, actor, action, subject) in rows {
        let event = stored_as(
            action,
            AuditEvent::new(
                t0 + Duration::minutes(minutes),
                actor,
                AuditAction::HttpRequest,
                subject,
                AuditOutcome::Succeeded,
                serde_json::json!({ "minute": minutes }),
            ),
        );
        store.record_audit(&event).await.unwrap();
        events.push(event);
    }
    let minutes = |found: Vec<AuditEvent>| -> Vec<i64> {
        found
            .iter()
            .map(|e| e.detail["minute"].as_i64().expect("minute"))
            .collect()
    };
    let text = |value: &str| Some(value.to_string());
    let matching = |filter: AuditFilter, limit: u32, offset: u64| {
        let store = store.clone();
        async move {
            store
                .audit_events_matching(&filter, limit, offset)
                .await
                .unwrap()
        }
    };

    assert_eq!(
        minutes(matching(AuditFilter::default(), 100, 0).await),
        [6, 5, 4, 3, 2, 1, 0],
        "no filter: every event, newest first"
    );
    assert_eq!(
        matching(AuditFilter::default(), 100, 0).await,
        store.audit_events(100, 0).await.unwrap()
    );
    let by_subject = AuditFilter {
        subject: text("transaction=1"),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(by_subject.clone(), 100, 0).await), [3, 0]);
    assert_eq!(
        minutes(matching(by_subject.clone(), 1, 1).await),
        [0],
        "paged after filtering"
    );
    assert!(matching(by_subject, 1, 2).await.is_empty(), "past the end");
    let by_action = AuditFilter {
        action: text("token.create"),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(by_action, 100, 0).await), [2]);
    let by_actor = AuditFilter {
        actor: text("token:ana"),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(by_actor, 100, 0).await), [3, 2, 0]);
    let combined = AuditFilter {
        actor: text("token:ana"),
        action: text("payment.record"),
        subject: text("transaction=1"),
        ..AuditFilter::default()
    };
    assert_eq!(
        minutes(matching(combined, 100, 0).await),
        [3, 0],
        "every filter holds"
    );
    for (subject, why) in [
        ("transaction=.*", "a pattern is only text"),
        ("%", "a wildcard is only text"),
        ("{\"$ne\": \"\"}", "an operator is only text"),
        ("", "empty is an exact value too"),
    ] {
        let filter = AuditFilter {
            subject: text(subject),
            ..AuditFilter::default()
        };
        assert!(matching(filter, 100, 0).await.is_empty(), "{why}");
    }

    // from inclusive, to exclusive, at any offset.
    let range = |from: &str, to: &str| AuditFilter {
        from: Some(at(from)),
        to: Some(at(to)),
        ..AuditFilter::default()
    };
    assert_eq!(
        minutes(
            matching(
                range("2024-03-10T10:01:00Z", "2024-03-10T10:03:00Z"),
                100,
                0
            )
            .await
        ),
        [2, 1]
    );
    assert_eq!(
        minutes(
            matching(
                range("2024-03-10T13:01:00+03:00", "2024-03-10T07:03:00-03:00"),
                100,
                0
            )
            .await
        ),
        [2, 1],
        "offsets are instants"
    );
    // Finer than the millisecond the stores keep: still exact on both bounds.
    assert_eq!(
        minutes(
            matching(
                range("2024-03-10T10:01:00.0005Z", "2024-03-10T10:03:00.0005Z"),
                100,
                0
            )
            .await
        ),
        [3, 2]
    );
    assert_eq!(
        minutes(
            matching(
                range("2024-03-10T10:00:59.9999Z", "2024-03-10T10:02:59.9999Z"),
                100,
                0
            )
            .await
        ),
        [2, 1]
    );
    assert!(
        matching(
            range("2024-03-10T10:02:00Z", "2024-03-10T10:02:00Z"),
            100,
            0
        )
        .await
        .is_empty(),
        "from = to is empty"
    );
    assert!(
        matching(
            range("2024-03-10T10:03:00Z", "2024-03-10T10:01:00Z"),
            100,
            0
        )
        .await
        .is_empty(),
        "an inverted range is empty"
    );
    let since = AuditFilter {
        from: Some(at("2024-03-10T10:05:00Z")),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(since, 100, 0).await), [6, 5]);
    let until = AuditFilter {
        to: Some(at("2024-03-10T10:01:00Z")),
        actor: text("token:ana"),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(until, 100, 0).await), [0]);
    let ranged_subject = AuditFilter {
        subject: text("transaction=1"),
        from: Some(at("2024-03-10T10:01:00Z")),
        ..AuditFilter::default()
    };
    assert_eq!(minutes(matching(ranged_subject.clone(), 100, 0).await), [3]);
    assert!(
        matching(ranged_subject.clone(), 0, 0).await.is_empty(),
        "limit 0"
    );
    assert!(matching(ranged_subject, 10, u64::MAX).await.is_empty());
}

pub async fn data_survives_reopening(t: TestStore) {
    record(
        &t.store,
        vec![payment("p-1", "m-1", 1234, "2024-03-10T10:00:00Z")],
    )
    .await;
    drop(t.store);
    let reopened = (t.reopen)().await;
    let found = reopened
        .transactions_by_ref(vec![("m-1".into(), "p-1".into())])
        .await
        .unwrap();
    assert_eq!(found[0].amount_minor, 1234);
    assert_eq!(found[0].settlement_date, date("2024-03-10"));
}

pub async fn idempotency_keys_begin_once_replay_and_expire(t: TestStore) {
    use settle_core::idempotency::{BeginOutcome, StoredResponse};
    use settle_core::store::IdempotencyBegin;
    let store = t.store;
    // Far in the future: a server's TTL index (real clock) must not expire the records mid-test.
    let t0 = at("2099-03-10T10:00:00Z");
    let begin = |fingerprint: &str, now: DateTime<Utc>| IdempotencyBegin {
        actor: "token-1".into(),
        key: "k-1".into(),
        fingerprint: fingerprint.into(),
        now,
        locked_until: now + Duration::seconds(60),
        expires_at: t0 + Duration::hours(24),
    };
    assert_eq!(
        store.idempotency_begin(begin("fp-a", t0)).await.unwrap(),
        BeginOutcome::New
    );
    assert!(matches!(
        store
            .idempotency_begin(begin("fp-a", t0 + Duration::seconds(1)))
            .await
            .unwrap(),
        BeginOutcome::Conflict { .. }
    ));
    assert_eq!(
        store.idempotency_begin(begin("fp-b", t0)).await.unwrap(),
        BeginOutcome::Mismatch
    );
    // The holder vanished: after its lock, another caller takes over.
    assert_eq!(
        store
            .idempotency_begin(begin("fp-a", t0 + Duration::seconds(61)))
            .await
            .unwrap(),
        BeginOutcome::New
    );
    let response = StoredResponse {
        status: 201,
        body: serde_json::json!({"id": "x"}),
        headers: vec![("location".into(), "/x".into())],
    };
    store
        .idempotency_complete(&begin("fp-a", t0 + Duration::seconds(61)).lock(), &response)
        .await
        .unwrap();
    assert_eq!(
        store
            .idempotency_begin(begin("fp-a", t0 + Duration::hours(1)))
            .await
            .unwrap(),
        BeginOutcome::Replay(response)
    );
    assert_eq!(
        store
            .idempotency_begin(begin("fp-b", t0 + Duration::hours(1)))
            .await
            .unwrap(),
        BeginOutcome::Mismatch
    );
    // After expiry the key is new, even before the reaper ran.
    let later = t0 + Duration::hours(25);
    let mut renewed = begin("fp-b", later);
    renewed.expires_at = later + Duration::hours(24);
    assert_eq!(
        store.idempotency_begin(renewed).await.unwrap(),
        BeginOutcome::New
    );
    store
        .idempotency_release(&begin("fp-b", later).lock())
        .await
        .unwrap();
    let mut again = begin("fp-c", later);
    again.expires_at = later + Duration::hours(24);
    assert_eq!(
        store.idempotency_begin(again).await.unwrap(),
        BeginOutcome::New,
        "a released key is free"
    );
    assert_eq!(
        store
            .idempotency_reap(later + Duration::hours(48))
            .await
            .unwrap(),
        1
    );
}

pub async fn recorded_transactions_respect_keys_and_refund_limits(t: TestStore) {
    use settle_core::store::{IdempotencyTag, RecordOutcome, TransactionRecord};
    let store = t.store;
    let now = at("2024-04-01T00:00:00Z");
    let prepare = |transaction: NewTransaction, key: &str| {
        let mut record: TransactionRecord = ingest::prepare(transaction, &calendar(), now).unwrap();
        record.idempotency = Some(IdempotencyTag {
            actor: "token-1".into(),
            key: key.into(),
        });
        record
    };
    let inserted = store
        .record_transaction(prepare(
            payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z"),
            "k-1",
        ))
        .await
        .unwrap();
    let RecordOutcome::Inserted(paid) = inserted else {
        panic!("{inserted:?}")
    };
    let again = store
        .record_transaction(prepare(
            payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z"),
            "k-1",
        ))
        .await
        .unwrap();
    assert_eq!(again, RecordOutcome::AlreadyRecorded(paid.clone()));
    let duplicate = store
        .record_transaction(prepare(
            payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z"),
            "k-other",
        ))
        .await
        .unwrap();
    assert!(
        matches!(duplicate, RecordOutcome::Duplicate(_)),
        "{duplicate:?}"
    );
    let conflict = store
        .record_transaction(prepare(
            payment("p-1", "m-1", 20_000, "2024-03-10T10:00:00Z"),
            "k-2",
        ))
        .await
        .unwrap();
    assert!(
        matches!(conflict, RecordOutcome::Conflict(_)),
        "{conflict:?}"
    );

    let first = store
        .record_transaction(prepare(
            refund("r-1", "p-1", "m-1", 6_000, "2024-03-10T11:00:00Z"),
            "k-3",
        ))
        .await
        .unwrap();
    assert!(matches!(first, RecordOutcome::Inserted(_)), "{first:?}");
    let over = store
        .record_transaction(prepare(
            refund("r-2", "p-1", "m-1", 4_001, "2024-03-10T12:00:00Z"),
            "k-4",
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            over,
            RecordOutcome::ExceedsPayment {
                returned_minor: 6_000,
                ..
            }
        ),
        "{over:?}"
    );
    let missing = store
        .record_transaction(prepare(
            refund("r-3", "nope", "m-1", 1, "2024-03-10T12:00:00Z"),
            "k-5",
        ))
        .await
        .unwrap();
    assert_eq!(missing, RecordOutcome::PaymentNotFound);
    let mut other_currency = refund("r-4", "p-1", "m-1", 1, "2024-03-10T12:00:00Z");
    other_currency.currency = Currency::from_code("SAR").unwrap();
    let refused = store
        .record_transaction(prepare(other_currency, "k-6"))
        .await
        .unwrap();
    assert!(
        matches!(refused, RecordOutcome::NotRefundable { .. }),
        "{refused:?}"
    );
}

pub async fn payout_planning_is_fenced_idempotent_and_carries_what_is_owed(t: TestStore) {
    use settle_core::model::{PayoutStatus, SettlementFigures, SettlementLine};
    use settle_core::store::MerchantHold;
    let store = t.store;
    let now = at("2024-03-11T00:00:00Z");
    let line = |merchant: &str, net_minor: i64| SettlementLine {
        merchant_id: merchant.into(),
        currency: usd(),
        figures: SettlementFigures {
            net_minor,
            ..SettlementFigures::default()
        },
    };
    store
        .hold_merchant(&MerchantHold {
            merchant_id: "m-held".into(),
            reason: "review".into(),
            held_by: "cli:tester".into(),
            held_at: now,
        })
        .await
        .unwrap();
    let d1 = date("2024-03-10");
    let running = store
        .claim_settlement(claim(d1, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    let lines = vec![
        line("m-1", 1_000),
        line("m-owes", -300),
        line("m-held", 500),
        line("m-zero", 0),
    ];
    let plan = store
        .plan_payouts(&running.fence(), &lines, now)
        .await
        .unwrap();
    let created: Vec<_> = plan
        .created
        .iter()
        .map(|p| (p.merchant_id.as_str(), p.amount_minor, p.status))
        .collect();
    assert_eq!(
        created,
        [
            ("m-1", 1_000, PayoutStatus::Pending),
            ("m-held", 500, PayoutStatus::Held)
        ]
    );
    assert_eq!(plan.carried.len(), 1);
    assert_eq!(
        (
            plan.carried[0].merchant_id.as_str(),
            plan.carried[0].amount_minor
        ),
        ("m-owes", -300)
    );
    assert_eq!(plan.created[0].reference, "2024-03-10.USD.r1.m-1");

    let replanned = store
        .plan_payouts(&running.fence(), &lines, now)
        .await
        .unwrap();
    assert!(
        replanned.created.is_empty() && replanned.carried.is_empty(),
        "planning twice plans nothing"
    );
    let awaiting = store.payouts_awaiting(Some(d1), None).await.unwrap();
    assert_eq!(awaiting.len(), 1, "held payouts do not await sending");

    // A run that lost its lease cannot plan.
    let taken = store
        .claim_settlement(claim(
            d1,
            ClaimMode::Run,
            "b",
            now + Duration::seconds(120),
            60,
        ))
        .await
        .unwrap();
    assert!(matches!(
        store.plan_payouts(&running.fence(), &lines, now).await,
        Err(StoreError::LeaseLost(_))
    ));
    let computed = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    finish(&store, &taken.fence(), &computed, now)
        .await
        .unwrap();

    // The next date deducts what m-owes owes.
    let d2 = date("2024-03-11");
    let next = store
        .claim_settlement(claim(
            d2,
            ClaimMode::Run,
            "a",
            at("2024-03-12T00:00:00Z"),
            60,
        ))
        .await
        .unwrap();
    let plan = store
        .plan_payouts(&next.fence(), &[line("m-owes", 1_000)], now)
        .await
        .unwrap();
    assert_eq!(plan.created[0].amount_minor, 700);
    assert!(store.carry_forwards(true).await.unwrap().is_empty());
    assert_eq!(
        store.carry_forwards(false).await.unwrap()[0].applied_date,
        Some(d2)
    );

    // Status changes are compare-and-set.
    let sent = settle_core::store::PayoutUpdate {
        reference: plan.created[0].reference.clone(),
        from: PayoutStatus::Pending,
        to: PayoutStatus::Sent,
        provider_payout_id: Some("po_1".into()),
        attempts: 1,
        last_error: None,
        now,
    };
    let updated = store.update_payout(&sent).await.unwrap().unwrap();
    assert_eq!(
        (
            updated.status,
            updated.attempts,
            updated.provider_payout_id.as_deref()
        ),
        (PayoutStatus::Sent, 1, Some("po_1"))
    );
    assert!(
        store.update_payout(&sent).await.unwrap().is_none(),
        "no longer pending"
    );
    assert_eq!(
        store.release_merchant("m-held", now).await.unwrap(),
        Some(1)
    );
    assert_eq!(store.release_merchant("m-held", now).await.unwrap(), None);
}

/// Issue 14 (KD-1, found by the simulation): a retry plans its revision again; a line that
/// revision already carried forward must not take in a carry-forward another date opened since,
/// or the revision's one carry-forward cannot hold the new amount and the debt is lost.
pub async fn a_retried_plan_keeps_carry_forwards_opened_since(t: TestStore) {
    use settle_core::model::{SettlementFigures, SettlementLine};
    let store = t.store;
    let now = at("2024-03-12T00:00:00Z");
    let owes = |net_minor: i64| SettlementLine {
        merchant_id: "m-owes".into(),
        currency: usd(),
        figures: SettlementFigures {
            net_minor,
            ..SettlementFigures::default()
        },
    };
    let (d2, d3) = (date("2024-03-10"), date("2024-03-11"));
    let second = store
        .claim_settlement(claim(d2, ClaimMode::Run, "a", now, 600))
        .await
        .unwrap();
    let plan = store
        .plan_payouts(&second.fence(), &[owes(-300)], now)
        .await
        .unwrap();
    assert_eq!(plan.carried.len(), 1);
    // The next date takes in the -3.00 and carries -5.00 on.
    let third = store
        .claim_settlement(claim(d3, ClaimMode::Run, "b", now, 600))
        .await
        .unwrap();
    let plan = store
        .plan_payouts(&third.fence(), &[owes(-200)], now)
        .await
        .unwrap();
    assert_eq!(plan.carried[0].amount_minor, -500);
    // The first date's revision is retried (its payouts are planned again).
    let replanned = store
        .plan_payouts(&second.fence(), &[owes(-300)], now)
        .await
        .unwrap();
    assert!(replanned.created.is_empty() && replanned.carried.is_empty());
    let open: i64 = store
        .carry_forwards(true)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.merchant_id == "m-owes")
        .map(|c| c.amount_minor)
        .sum();
    assert_eq!(
        open, -500,
        "the merchant still owes what both dates carried"
    );
}

pub async fn notifications_are_recorded_per_event(t: TestStore) {
    use settle_core::model::{Notification, NotificationStatus};
    let store = t.store;
    let d = date("2024-03-10");
    let mut notification = Notification {
        settlement_date: d,
        revision: 1,
        event: "settlement.failed".into(),
        status: NotificationStatus::Failed,
        attempts: 3,
        last_error: Some("receiver down".into()),
        created_at: at("2024-03-11T00:00:00Z"),
    };
    store.record_notification(&notification).await.unwrap();
    notification.status = NotificationStatus::Delivered;
    notification.attempts = 1;
    notification.last_error = None;
    store.record_notification(&notification).await.unwrap();
    let recorded = store.notifications(d).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].status, recorded[0].attempts),
        (NotificationStatus::Delivered, 4)
    );
}

pub async fn writers_racing_with_runs_lose_no_transaction_and_count_none_twice(t: TestStore) {
    use settle_core::settlement::{RunRequest, SettlementRunner};
    use settle_core::time::SystemClock;
    // Transactions of three dates arrive while those dates are being settled: each must be
    // settled exactly once, on its own date or (arriving after the seal) on a later one, late.
    const PER_WRITER: usize = 40;
    let dates = ["2024-03-10", "2024-03-11", "2024-03-12"];
    let mut writers = Vec::new();
    for writer in 0..4 {
        let store = (t.reopen)().await;
        writers.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                let day = dates[n % 3];
                let tx = payment(
                    &format!("w{writer}-{n}"),
                    &format!("m-{}", n % 5),
                    100 + n as i64,
                    &format!("{day}T10:{:02}:00Z", n % 60),
                );
                record(&store, vec![tx]).await;
                tokio::task::yield_now().await;
            }
        }));
    }
    let runner_store = (t.reopen)().await;
    let runner = SettlementRunner::new(
        runner_store,
        Arc::new(SystemClock),
        calendar(),
        FeeSchedule::default(),
        "racer",
    );
    for day in dates {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        runner
            .execute(
                date(day),
                RunRequest::Run,
                "cli:tester",
                settle_core::model::RunTrigger::Manual,
            )
            .await
            .unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Whatever arrived after the last run lands on an open date; settle it too.
    let last = date("2024-03-13");
    runner
        .execute(
            last,
            RunRequest::Run,
            "cli:tester",
            settle_core::model::RunTrigger::Manual,
        )
        .await
        .unwrap();
    let mut counted = 0;
    let mut gross = 0;
    for day in ["2024-03-10", "2024-03-11", "2024-03-12", "2024-03-13"] {
        let settlement = t.store.settlement(date(day), None).await.unwrap().unwrap();
        for total in &settlement.totals {
            counted += total.figures.transaction_count;
            gross += total.figures.gross_minor;
        }
    }
    let expected_gross: i64 = (0..4)
        .map(|_| (0..PER_WRITER).map(|n| 100 + n as i64).sum::<i64>())
        .sum();
    assert_eq!(
        counted,
        4 * PER_WRITER as u64,
        "every transaction settled exactly once"
    );
    assert_eq!(gross, expected_gross);
}

/// A token as `settle token create` makes it (the secret itself is not needed here).
fn api_token(
    name: &str,
    role: settle_core::model::Role,
    created_at: &str,
) -> settle_core::model::ApiToken {
    settle_core::auth::issue(name, role, "cli:tester", at(created_at)).token
}

pub async fn api_tokens_are_kept_by_hash_under_unique_names(t: TestStore) {
    use settle_core::model::Role;
    let store = t.store;
    let ops = api_token("ops", Role::Operator, "2024-03-10T10:00:00.123Z");
    let admin = api_token("admin-desk", Role::Admin, "2024-03-10T11:00:00Z");
    let viewer = api_token("m.viewer_1", Role::Viewer, "2024-03-10T12:00:00Z");
    for token in [&ops, &admin, &viewer] {
        store.create_token(token).await.unwrap();
    }
    assert_eq!(
        store.token_by_hash(&ops.token_hash).await.unwrap(),
        Some(ops.clone())
    );
    assert_eq!(store.token_by_hash(&"0".repeat(64)).await.unwrap(), None);

    // A name is taken once, whatever the role or hash of the newcomer.
    let again = api_token("ops", Role::Viewer, "2024-03-10T13:00:00Z");
    assert_eq!(
        store.create_token(&again).await.unwrap_err(),
        StoreError::NameTaken("ops".into())
    );
    assert_eq!(store.token_by_hash(&again.token_hash).await.unwrap(), None);

    let listed = store.tokens().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["admin-desk", "m.viewer_1", "ops"],
        "ordered by name"
    );
    assert_eq!(listed[2], ops);

    // Revoking sets the time once; a second revocation keeps the first.
    let first = at("2024-03-11T08:00:00.250Z");
    let revoked = store.revoke_token("ops", first).await.unwrap().unwrap();
    assert_eq!(
        revoked,
        settle_core::model::ApiToken {
            revoked_at: Some(first),
            ..ops.clone()
        }
    );
    assert!(!revoked.is_active());
    let twice = store
        .revoke_token("ops", at("2024-03-12T08:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twice.revoked_at, Some(first), "the first revocation stays");
    assert_eq!(
        store
            .token_by_hash(&ops.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(first),
        "a revoked token is still found, as revoked"
    );
    assert_eq!(
        store.revoke_token("nobody", first).await.unwrap(),
        None,
        "an unknown name"
    );
    // A revoked token keeps its name.
    assert_eq!(
        store.create_token(&again).await.unwrap_err(),
        StoreError::NameTaken("ops".into())
    );
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .filter(|t| t.name != "ops")
        .all(|t| t.is_active()));
}

pub async fn concurrent_creations_of_one_token_name_have_one_winner(t: TestStore) {
    use settle_core::model::Role;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let handle = (t.reopen)().await;
        tasks.push(tokio::spawn(async move {
            let token = api_token("shared", Role::Operator, "2024-03-10T10:00:00Z");
            handle.create_token(&token).await
        }));
    }
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for result in &results {
        if let Err(error) = result {
            assert_eq!(*error, StoreError::NameTaken("shared".into()));
        }
    }
    assert_eq!(t.store.tokens().await.unwrap().len(), 1);
}

fn rerun_request(
    settlement_date: &str,
    requested_at: &str,
    reason: &str,
) -> settle_core::model::RerunRequest {
    settle_core::model::RerunRequest {
        id: Uuid::new_v4(),
        settlement_date: date(settlement_date),
        reason: reason.into(),
        apply_current_fees: false,
        requested_by: "cli:alice".into(),
        requested_at: at(requested_at),
        status: settle_core::model::RerunRequestStatus::Pending,
        decided_by: None,
        decided_at: None,
        settlement_revision: Some(1),
        run_revision: None,
        last_refusal: None,
    }
}

pub async fn rerun_requests_are_listed_newest_first_and_decided_once(t: TestStore) {
    use settle_core::model::{RerunRequest, RerunRequestStatus as Status};
    let store = t.store;
    let first = rerun_request("2024-03-10", "2024-03-11T09:00:00Z", "late refunds");
    let second = RerunRequest {
        apply_current_fees: true,
        ..rerun_request("2024-03-10", "2024-03-11T10:00:00.500Z", "new fees")
    };
    let third = rerun_request("2024-03-09", "2024-03-11T11:00:00Z", "duplicate import");
    for request in [&first, &second, &third] {
        store.create_rerun_request(request).await.unwrap();
    }
    assert_eq!(
        store.rerun_request(second.id).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.rerun_request(Uuid::new_v4()).await.unwrap(), None);
    let ids = |requests: Vec<RerunRequest>| requests.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.rerun_requests(None).await.unwrap()),
        [third.id, second.id, first.id],
        "newest first"
    );
    assert_eq!(
        store
            .rerun_requests(Some(Status::Pending))
            .await
            .unwrap()
            .len(),
        3
    );

    // Pending → rejected, once; a decided request is not decided again.
    let decided_at = at("2024-03-11T12:00:00.042Z");
    let rejected = store
        .reject_rerun_request(second.id, "cli:bob", decided_at)
        .await
        .unwrap();
    let expected = RerunRequest {
        status: Status::Rejected,
        decided_by: Some("cli:bob".into()),
        decided_at: Some(decided_at),
        ..second.clone()
    };
    assert_eq!(rejected, Some(expected.clone()));
    assert_eq!(
        store
            .reject_rerun_request(second.id, "cli:carol", at("2024-03-11T13:00:00Z"))
            .await
            .unwrap(),
        None,
        "a decided request is not decided again"
    );
    assert_eq!(
        store.rerun_request(second.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .reject_rerun_request(Uuid::new_v4(), "cli:bob", decided_at)
            .await
            .unwrap(),
        None,
        "an unknown request"
    );

    assert_eq!(
        store.rerun_requests(Some(Status::Rejected)).await.unwrap(),
        [expected]
    );
    assert!(store
        .rerun_requests(Some(Status::Approved))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(store.rerun_requests(Some(Status::Pending)).await.unwrap()),
        [third.id, first.id]
    );
}

pub async fn concurrent_decisions_of_a_rerun_request_have_exactly_one_winner(t: TestStore) {
    use settle_core::model::RerunRequestStatus as Status;
    let request = rerun_request("2024-03-10", "2024-03-11T09:00:00Z", "late refunds");
    t.store.create_rerun_request(&request).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let handle = (t.reopen)().await;
        tasks.push(tokio::spawn(async move {
            handle
                .reject_rerun_request(
                    request.id,
                    &format!("cli:approver-{n}"),
                    at("2024-03-11T10:00:00Z"),
                )
                .await
        }));
    }
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let winners: Vec<_> = results.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        t.store.rerun_request(request.id).await.unwrap().as_ref(),
        Some(winners[0]),
        "the stored decision is the winner's"
    );
    assert_eq!(winners[0].status, Status::Rejected);
}

// ---------------------------------------------------------------------------------------------
// Payout send claims and payouts by status (issue 14: one sender per payout at a time; failed
// payouts rechecked by age).
// ---------------------------------------------------------------------------------------------

/// Plans one pending payout per merchant (100.00 USD each) for `day` and returns them.
async fn planned_payouts(
    store: &SharedStore,
    day: &str,
    merchants: &[&str],
) -> Vec<settle_core::model::Payout> {
    use settle_core::model::{SettlementFigures, SettlementLine};
    let running = store
        .claim_settlement(claim(
            date(day),
            ClaimMode::Run,
            "claims",
            at("2024-03-11T00:00:00Z"),
            60,
        ))
        .await
        .unwrap();
    let lines: Vec<_> = merchants
        .iter()
        .map(|merchant| SettlementLine {
            merchant_id: merchant.to_string(),
            currency: usd(),
            figures: SettlementFigures {
                net_minor: 10_000,
                ..SettlementFigures::default()
            },
        })
        .collect();
    store
        .plan_payouts(&running.fence(), &lines, at("2024-03-11T00:00:00Z"))
        .await
        .unwrap()
        .created
}

fn payout_claim(
    reference: &str,
    from: settle_core::model::PayoutStatus,
    claimed_by: &str,
    now: DateTime<Utc>,
) -> settle_core::store::PayoutClaim {
    settle_core::store::PayoutClaim {
        reference: reference.into(),
        from,
        claimed_by: claimed_by.into(),
        now,
        expires_at: now + Duration::seconds(60),
    }
}

fn payout_step(
    reference: &str,
    from: settle_core::model::PayoutStatus,
    to: settle_core::model::PayoutStatus,
    now: DateTime<Utc>,
) -> settle_core::store::PayoutUpdate {
    settle_core::store::PayoutUpdate {
        reference: reference.into(),
        from,
        to,
        provider_payout_id: None,
        attempts: 1,
        last_error: None,
        now,
    }
}

pub async fn a_payout_is_claimed_for_sending_by_one_sender_at_a_time(t: TestStore) {
    use settle_core::model::PayoutStatus::{Confirmed, Held, Pending, Sent, Unknown};
    use settle_core::store::PayoutClaimOutcome::{Claimed, InFlight, Moved};
    let store = t.store;
    let payouts = planned_payouts(&store, "2024-03-10", &["m-1", "m-2"]).await;
    let (one, two) = (payouts[0].reference.as_str(), payouts[1].reference.as_str());
    let t0 = at("2024-03-11T01:00:00Z");

    // A claims the pending payout: it is unknown before any request leaves.
    let claimed = store
        .claim_payout_send(&payout_claim(one, Pending, "sender-a", t0))
        .await
        .unwrap();
    let Claimed(payout) = claimed else {
        panic!("expected the claim, got {claimed:?}")
    };
    assert_eq!((payout.status, payout.updated_at), (Unknown, t0));
    // B saw it pending: it moved. Seen unknown: A has it in flight until its expiry.
    assert_eq!(
        store
            .claim_payout_send(&payout_claim(one, Pending, "sender-b", t0))
            .await
            .unwrap(),
        Moved
    );
    assert_eq!(
        store
            .claim_payout_send(&payout_claim(
                one,
                Unknown,
                "sender-b",
                t0 + Duration::seconds(1)
            ))
            .await
            .unwrap(),
        InFlight {
            claimed_by: "sender-a".into(),
            expires_at: t0 + Duration::seconds(60)
        }
    );
    // A renews its own claim; B cannot finish what it does not hold.
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(
                one,
                Unknown,
                "sender-a",
                t0 + Duration::seconds(30)
            ))
            .await
            .unwrap(),
        Claimed(_)
    ));
    assert_eq!(
        store
            .finish_payout_send(&payout_step(one, Unknown, Sent, t0), "sender-b")
            .await
            .unwrap(),
        None
    );
    // A's answer was lost: it stays unknown and the claim is released, so B may claim it.
    let mut lost = payout_step(one, Unknown, Unknown, t0 + Duration::seconds(31));
    lost.last_error = Some("timed out".into());
    let after_lost = store
        .finish_payout_send(&lost, "sender-a")
        .await
        .unwrap()
        .expect("A held it");
    assert_eq!(
        (
            after_lost.status,
            after_lost.attempts,
            after_lost.last_error.as_deref()
        ),
        (Unknown, 1, Some("timed out"))
    );
    let t1 = t0 + Duration::seconds(32);
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(one, Unknown, "sender-b", t1))
            .await
            .unwrap(),
        Claimed(_)
    ));
    // B dies holding it; once its claim expired A takes it over, and B is fenced out.
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(
                one,
                Unknown,
                "sender-a",
                t1 + Duration::seconds(59)
            ))
            .await
            .unwrap(),
        InFlight { .. }
    ));
    let t2 = t1 + Duration::seconds(60);
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(one, Unknown, "sender-a", t2))
            .await
            .unwrap(),
        Claimed(_)
    ));
    assert_eq!(
        store
            .finish_payout_send(&payout_step(one, Unknown, Sent, t2), "sender-b")
            .await
            .unwrap(),
        None
    );
    let mut accepted = payout_step(one, Unknown, Sent, t2);
    accepted.provider_payout_id = Some("po_1".into());
    let sent = store
        .finish_payout_send(&accepted, "sender-a")
        .await
        .unwrap()
        .expect("A held it");
    assert_eq!(
        (
            sent.status,
            sent.attempts,
            sent.provider_payout_id.as_deref()
        ),
        (Sent, 2, Some("po_1"))
    );
    // Sent: nothing to claim any more, whatever the sender saw.
    for seen in [Unknown, Sent, Held] {
        assert_eq!(
            store
                .claim_payout_send(&payout_claim(one, seen, "sender-b", t2))
                .await
                .unwrap(),
            Moved,
            "{seen:?}"
        );
    }

    // The provider's callback moves a claimed payout on: the claim goes with it.
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(two, Pending, "sender-a", t0))
            .await
            .unwrap(),
        Claimed(_)
    ));
    let confirmed = store
        .update_payout(&payout_step(two, Unknown, Confirmed, t0))
        .await
        .unwrap()
        .expect("unknown");
    assert_eq!(confirmed.status, Confirmed);
    assert_eq!(
        store
            .finish_payout_send(&payout_step(two, Unknown, Unknown, t0), "sender-a")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .claim_payout_send(&payout_claim(two, Unknown, "sender-b", t0))
            .await
            .unwrap(),
        Moved
    );
    // A claim survives reopening the store.
    let three = planned_payouts(&store, "2024-03-12", &["m-3"]).await;
    let three = three[0].reference.as_str();
    assert!(matches!(
        store
            .claim_payout_send(&payout_claim(three, Pending, "sender-a", t0))
            .await
            .unwrap(),
        Claimed(_)
    ));
    let reopened = (t.reopen)().await;
    assert!(matches!(
        reopened
            .claim_payout_send(&payout_claim(three, Unknown, "sender-b", t0))
            .await
            .unwrap(),
        InFlight { .. }
    ));
}

pub async fn concurrent_payout_claims_have_exactly_one_winner(t: TestStore) {
    use settle_core::model::PayoutStatus::{Pending, Unknown};
    use settle_core::store::PayoutClaimOutcome::{Claimed, InFlight};
    let payouts = planned_payouts(&t.store, "2024-03-10", &["m-1"]).await;
    let reference = payouts[0].reference.clone();
    let now = at("2024-03-11T01:00:00Z");
    let mut tasks = Vec::new();
    for sender in 0..8 {
        let store = (t.reopen)().await;
        let reference = reference.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("sender-{sender}");
            // Each saw it pending; those that lose look again, as a sender does.
            let first = store
                .claim_payout_send(&payout_claim(&reference, Pending, &name, now))
                .await
                .unwrap();
            let outcome = match first {
                Claimed(_) => first,
                _ => store
                    .claim_payout_send(&payout_claim(&reference, Unknown, &name, now))
                    .await
                    .unwrap(),
            };
            (outcome, name)
        }));
    }
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (Claimed(_), name) => winners.push(name),
            (InFlight { claimed_by, .. }, _) => holders.push(claimed_by),
            (other, name) => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(holders.iter().all(|h| *h == winners[0]), "{holders:?}");
}

pub async fn payouts_are_listed_by_status_date_and_age(t: TestStore) {
    use settle_core::model::PayoutStatus::{Failed, Pending, Sent};
    use settle_core::store::PayoutFilter;
    let store = t.store;
    let first = planned_payouts(&store, "2024-03-10", &["m-2", "m-1"]).await;
    let second = planned_payouts(&store, "2024-03-11", &["m-1"]).await;
    let failed_at = |reference: &str, now: DateTime<Utc>| {
        let store = store.clone();
        let reference = reference.to_string();
        async move {
            store
                .update_payout(&payout_step(&reference, Pending, Failed, now))
                .await
                .unwrap()
                .expect("pending");
        }
    };
    failed_at(&first[0].reference, at("2024-03-11T02:00:00Z")).await;
    failed_at(&first[1].reference, at("2024-03-12T02:00:00Z")).await;
    failed_at(&second[0].reference, at("2024-03-11T03:00:00Z")).await;
    let listed = |status, settlement_date: Option<&str>, updated_before: Option<&str>| {
        let store = store.clone();
        let filter = PayoutFilter {
            status,
            settlement_date: settlement_date.map(date),
            updated_before: updated_before.map(at),
        };
        async move {
            store
                .payouts_with_status(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.reference)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(Failed, None, None).await,
        [
            "2024-03-10.USD.r1.m-1",
            "2024-03-10.USD.r1.m-2",
            "2024-03-11.USD.r1.m-1"
        ],
        "by date, merchant, currency, revision"
    );
    assert_eq!(
        listed(Failed, Some("2024-03-10"), None).await,
        ["2024-03-10.USD.r1.m-1", "2024-03-10.USD.r1.m-2"]
    );
    // Strictly before: one changed at the instant itself is not listed.
    assert_eq!(
        listed(Failed, None, Some("2024-03-11T03:00:00Z")).await,
        ["2024-03-10.USD.r1.m-2"]
    );
    assert_eq!(
        listed(Failed, Some("2024-03-11"), Some("2024-03-11T03:00:00.001Z")).await,
        ["2024-03-11.USD.r1.m-1"]
    );
    assert!(listed(Sent, None, None).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Fee ledgers of refunded payments (issue 14: refunds return from the fee charged, capped by a
// running amount per payment): written with a revision's result by compare-and-set on a version.
// ---------------------------------------------------------------------------------------------

fn fee_ledger(version: u64, returns: &[(u128, i64)]) -> settle_core::model::PaymentFeeLedger {
    use settle_core::model::{FeeCharge, FeeReturn, PaymentFeeLedger};
    PaymentFeeLedger {
        merchant_id: "m-1".into(),
        external_ref: "p-1".into(),
        payment_id: Uuid::from_u128(1),
        currency: usd(),
        charge: FeeCharge {
            fee_minor: 100,
            percent: rust_decimal::Decimal::new(25, 1),
            fixed_minor: 0,
            refund_returns_percent: true,
            settlement_date: date("2024-03-10"),
            revision: 1,
        },
        returned_minor: returns.iter().map(|(_, minor)| minor).sum(),
        returns: returns
            .iter()
            .map(|(id, minor)| FeeReturn {
                refund_id: Uuid::from_u128(*id),
                returned_minor: *minor,
                settlement_date: date("2024-03-11"),
                revision: 1,
                charge: None,
            })
            .collect(),
        version,
    }
}

pub async fn fee_ledgers_are_written_with_results_by_compare_and_set(t: TestStore) {
    use settle_core::model::FeeLedgerWrite;
    let store = t.store;
    let key = ("m-1".to_string(), "p-1".to_string());
    assert!(store
        .fee_ledgers(vec![key.clone()])
        .await
        .unwrap()
        .is_empty());
    let now = at("2024-03-12T00:00:00Z");
    let d = date("2024-03-11");
    let running = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    let mut computed = compute(&FeeSchedule::default(), &[], &Default::default()).unwrap();
    computed.fee_ledgers = vec![FeeLedgerWrite {
        ledger: fee_ledger(1, &[(7, 60)]),
        expected_version: None,
    }];
    store
        .save_settlement_result(&running.fence(), &computed, now)
        .await
        .unwrap();
    assert_eq!(
        store.fee_ledgers(vec![key.clone()]).await.unwrap(),
        vec![fee_ledger(1, &[(7, 60)])]
    );

    // A second run that read no ledger (or an older version) is refused: it must compute again.
    let d2 = date("2024-03-12");
    let later = store
        .claim_settlement(claim(d2, ClaimMode::Run, "b", now, 60))
        .await
        .unwrap();
    for expected_version in [None, Some(0)] {
        computed.fee_ledgers = vec![FeeLedgerWrite {
            ledger: fee_ledger(2, &[(7, 60), (8, 40)]),
            expected_version,
        }];
        let refused = store
            .save_settlement_result(&later.fence(), &computed, now)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::FeeLedgerMoved { merchant_id, external_ref }
                if merchant_id == "m-1" && external_ref == "p-1"),
            "{refused}"
        );
    }
    assert_eq!(
        store.fee_ledgers(vec![key.clone()]).await.unwrap(),
        vec![fee_ledger(1, &[(7, 60)])],
        "a refused write changes no ledger"
    );
    computed.fee_ledgers = vec![FeeLedgerWrite {
        ledger: fee_ledger(2, &[(7, 60), (8, 40)]),
        expected_version: Some(1),
    }];
    store
        .save_settlement_result(&later.fence(), &computed, now)
        .await
        .unwrap();
    let other = ("m-1".to_string(), "p-unknown".to_string());
    assert_eq!(
        store.fee_ledgers(vec![key, other]).await.unwrap(),
        vec![fee_ledger(2, &[(7, 60), (8, 40)])]
    );
}

// ---------------------------------------------------------------------------------------------
// Idempotency locks (issue 14): release and complete present the lock they hold, so a holder
// that stalled past its lock cannot delete or complete the record of whoever took the key over.
// ---------------------------------------------------------------------------------------------

pub async fn a_stalled_idempotency_holder_cannot_release_or_complete_the_takers_record(
    t: TestStore,
) {
    use settle_core::idempotency::{BeginOutcome, StoredResponse};
    use settle_core::store::IdempotencyBegin;
    let store = t.store;
    // Far in the future, as above: the server's TTL index must not expire the record mid-test.
    // Sub-millisecond instants: stores keep milliseconds, and the lock still matches.
    let t0 = at("2099-05-01T10:00:00.123456789Z");
    let begin = |now: DateTime<Utc>| IdempotencyBegin {
        actor: "token-1".into(),
        key: "k-stall".into(),
        fingerprint: "fp-a".into(),
        now,
        locked_until: now + Duration::seconds(60),
        expires_at: t0 + Duration::hours(24),
    };
    let response = |id: &str| StoredResponse {
        status: 201,
        body: serde_json::json!({ "id": id }),
        headers: vec![],
    };
    let stalled = begin(t0);
    assert_eq!(
        store.idempotency_begin(stalled.clone()).await.unwrap(),
        BeginOutcome::New
    );
    // The first holder stalls past its lock; a retry takes the key over.
    let taker = begin(t0 + Duration::seconds(61));
    assert_eq!(
        store.idempotency_begin(taker.clone()).await.unwrap(),
        BeginOutcome::New
    );
    // The stalled holder wakes up: its release must not delete the taker's record…
    assert!(
        !store.idempotency_release(&stalled.lock()).await.unwrap(),
        "a stale lock releases nothing"
    );
    assert!(
        matches!(
            store
                .idempotency_begin(begin(t0 + Duration::seconds(62)))
                .await
                .unwrap(),
            BeginOutcome::Conflict { .. }
        ),
        "the taker still holds the key"
    );
    // …nor complete it with its own answer.
    assert!(
        !store
            .idempotency_complete(&stalled.lock(), &response("stale"))
            .await
            .unwrap(),
        "a stale lock completes nothing"
    );
    assert!(matches!(
        store
            .idempotency_begin(begin(t0 + Duration::seconds(63)))
            .await
            .unwrap(),
        BeginOutcome::Conflict { .. }
    ));
    // The taker's own lock works, and its answer is the one replayed.
    assert!(store
        .idempotency_complete(&taker.lock(), &response("taker"))
        .await
        .unwrap());
    assert_eq!(
        store
            .idempotency_begin(begin(t0 + Duration::seconds(64)))
            .await
            .unwrap(),
        BeginOutcome::Replay(response("taker"))
    );
    // A completed record is not released, whoever asks.
    assert!(!store.idempotency_release(&taker.lock()).await.unwrap());

    // A holder releases its own record while it holds the lock.
    let mut other = begin(t0);
    other.key = "k-own".into();
    assert_eq!(
        store.idempotency_begin(other.clone()).await.unwrap(),
        BeginOutcome::New
    );
    assert!(store.idempotency_release(&other.lock()).await.unwrap());
    assert_eq!(
        store
            .idempotency_begin(IdempotencyBegin {
                fingerprint: "fp-b".into(),
                ..other.clone()
            })
            .await
            .unwrap(),
        BeginOutcome::New,
        "a released key is free"
    );
}

// Four-eyes approvals: a rerun request is approved together with the claim of its run, or not at all.

/// Settles 2024-03-10 once (revision 1, completed), as a run does.
async fn settled_once(store: &SharedStore) -> NaiveDate {
    record(
        store,
        vec![payment("p-1", "m-1", 10_000, "2024-03-10T10:00:00Z")],
    )
    .await;
    let d = date("2024-03-10");
    let now = at("2024-03-11T00:00:00Z");
    let first = store
        .claim_settlement(claim(d, ClaimMode::Run, "a", now, 60))
        .await
        .unwrap();
    let computed = compute(
        &FeeSchedule::default(),
        &all_transactions(store, d).await,
        &Default::default(),
    )
    .unwrap();
    finish(store, &first.fence(), &computed, now).await.unwrap();
    d
}

/// The claim an approval by `approver` makes: a rerun after `after_revision`.
fn approval_claim(
    settlement_date: NaiveDate,
    after_revision: u32,
    approver: &str,
    now: DateTime<Utc>,
) -> ClaimRequest {
    let mode = ClaimMode::Rerun {
        after_revision,
        reason: "approved rerun".into(),
    };
    ClaimRequest {
        requested_by: approver.into(),
        ..claim(settlement_date, mode, "daemon", now, 60)
    }
}

pub async fn approving_a_rerun_request_claims_its_run_in_the_same_step(t: TestStore) {
    use settle_core::model::{RerunRequest, RerunRequestStatus as Status};
    use settle_core::store::RerunApproval;
    let store = t.store;
    let d = settled_once(&store).await;
    let first = rerun_request("2024-03-10", "2024-03-11T09:00:00Z", "late refunds");
    let second = rerun_request("2024-03-10", "2024-03-11T09:30:00Z", "new fees");
    for request in [&first, &second] {
        store.create_rerun_request(request).await.unwrap();
    }
    let now = at("2024-03-11T10:00:00Z");

    // A claim that is not the request's own (another revision) is a fault and decides nothing.
    let wrong = store
        .approve_rerun_request(first.id, "cli:bob", approval_claim(d, 2, "cli:bob", now))
        .await;
    assert!(wrong.is_err(), "{wrong:?}");
    assert_eq!(
        store.rerun_request(first.id).await.unwrap(),
        Some(first.clone())
    );

    let approved = store
        .approve_rerun_request(first.id, "cli:bob", approval_claim(d, 1, "cli:bob", now))
        .await
        .unwrap();
    let RerunApproval::Approved {
        request,
        settlement,
    } = approved
    else {
        panic!("not approved: {approved:?}");
    };
    assert_eq!(
        (
            settlement.revision,
            settlement.status,
            settlement.requested_by.as_str()
        ),
        (2, SettlementStatus::Running, "cli:bob")
    );
    let expected = RerunRequest {
        status: Status::Approved,
        decided_by: Some("cli:bob".into()),
        decided_at: Some(now),
        run_revision: Some(2),
        ..first.clone()
    };
    assert_eq!(request, expected);
    assert_eq!(
        store.rerun_request(first.id).await.unwrap(),
        Some(expected.clone())
    );

    // Revision 2 runs: the other request's claim is refused; it stays pending and says why.
    let later = at("2024-03-11T10:00:30Z");
    let refused = store
        .approve_rerun_request(
            second.id,
            "cli:carol",
            approval_claim(d, 1, "cli:carol", later),
        )
        .await
        .unwrap();
    let RerunApproval::Refused {
        request: still,
        refusal,
    } = refused
    else {
        panic!("not refused: {refused:?}");
    };
    assert!(
        matches!(refusal, StoreError::AlreadyRunning { revision: 2, .. }),
        "{refusal}"
    );
    let refusal_text = refusal.to_string();
    assert_eq!(
        still,
        RerunRequest {
            last_refusal: Some(refusal_text.clone()),
            ..second.clone()
        },
        "pending, undecided, with the refusal"
    );
    assert_eq!(
        store.rerun_request(second.id).await.unwrap(),
        Some(still.clone())
    );
    assert_eq!(store.settlement_revisions(d).await.unwrap().len(), 2);

    // An approved request is decided for good.
    assert_eq!(
        store
            .approve_rerun_request(
                first.id,
                "cli:carol",
                approval_claim(d, 1, "cli:carol", later)
            )
            .await
            .unwrap(),
        RerunApproval::NotPending(Some(expected.clone()))
    );
    assert_eq!(
        store
            .reject_rerun_request(first.id, "cli:carol", later)
            .await
            .unwrap(),
        None
    );

    // Revision 2 completes: the date moved on from the revision the request was made against.
    let computed = compute(
        &FeeSchedule::default(),
        &all_transactions(&store, d).await,
        &Default::default(),
    )
    .unwrap();
    finish(&store, &settlement.fence(), &computed, later)
        .await
        .unwrap();
    let moved = store
        .approve_rerun_request(
            second.id,
            "cli:carol",
            approval_claim(d, 1, "cli:carol", later),
        )
        .await
        .unwrap();
    let RerunApproval::Refused { request, refusal } = moved else {
        panic!("not refused: {moved:?}");
    };
    assert!(
        matches!(
            refusal,
            StoreError::RevisionMoved {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{refusal}"
    );
    assert_eq!(request.status, Status::Pending);
    assert_eq!(request.last_refusal, Some(refusal.to_string()));
    assert_eq!(store.settlement_revisions(d).await.unwrap().len(), 2);

    // The stale request can be rejected, and is then decided for good.
    let rejected = store
        .reject_rerun_request(second.id, "cli:carol", later)
        .await
        .unwrap()
        .expect("a pending request can be rejected");
    assert_eq!(
        (
            rejected.status,
            rejected.decided_by.as_deref(),
            rejected.run_revision
        ),
        (Status::Rejected, Some("cli:carol"), None)
    );
    assert_eq!(
        store
            .approve_rerun_request(second.id, "cli:bob", approval_claim(d, 2, "cli:bob", later))
            .await
            .unwrap(),
        RerunApproval::NotPending(Some(rejected))
    );
    assert_eq!(
        store
            .approve_rerun_request(
                Uuid::new_v4(),
                "cli:bob",
                approval_claim(d, 2, "cli:bob", later)
            )
            .await
            .unwrap(),
        RerunApproval::NotPending(None),
        "an unknown request"
    );
    assert_eq!(store.settlement_revisions(d).await.unwrap().len(), 2);
}

pub async fn concurrent_approvals_and_rejections_run_a_rerun_at_most_once(t: TestStore) {
    use settle_core::model::RerunRequestStatus as Status;
    use settle_core::store::RerunApproval;
    let d = settled_once(&t.store).await;
    let requests = [
        rerun_request("2024-03-10", "2024-03-11T09:00:00Z", "late refunds"),
        rerun_request("2024-03-10", "2024-03-11T09:30:00Z", "new fees"),
    ];
    for request in &requests {
        t.store.create_rerun_request(request).await.unwrap();
    }
    let now = at("2024-03-11T10:00:00Z");
    let mut tasks = Vec::new();
    for n in 0..8 {
        let handle = (t.reopen)().await;
        let id = requests[n % 2].id;
        let decider = format!("cli:decider-{n}");
        let approves = n % 4 < 2;
        tasks.push(tokio::spawn(async move {
            if approves {
                let claim = approval_claim(d, 1, &decider, now);
                let outcome = handle.approve_rerun_request(id, &decider, claim).await;
                (id, outcome.map(Some))
            } else {
                let rejected = handle.reject_rerun_request(id, &decider, now).await;
                (id, rejected.map(|_| None))
            }
        }));
    }
    let mut approvals = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let (id, outcome) = task.unwrap();
        if let Some(RerunApproval::Approved {
            request,
            settlement,
        }) = outcome.unwrap()
        {
            approvals.push((id, request, settlement));
        }
    }
    let revisions = t.store.settlement_revisions(d).await.unwrap();
    assert!(
        approvals.len() <= 1,
        "one rerun of revision 1 at most: {approvals:?}"
    );
    assert_eq!(
        revisions.len(),
        1 + approvals.len(),
        "a run for each approval, none without"
    );
    for request in &requests {
        let stored = t.store.rerun_request(request.id).await.unwrap().unwrap();
        match stored.status {
            Status::Approved => {
                let (id, answered, settlement) = &approvals[0];
                assert_eq!(*id, request.id);
                assert_eq!(&stored, answered);
                assert_eq!(stored.run_revision, Some(settlement.revision));
                assert_eq!(
                    stored.decided_by.as_deref(),
                    Some(settlement.requested_by.as_str())
                );
                assert_eq!(revisions[1], **settlement);
            }
            Status::Rejected => assert_eq!(stored.run_revision, None),
            // Left pending only by an approval whose claim was refused, which says so.
            Status::Pending => assert!(stored.last_refusal.is_some(), "{stored:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The list: every contract test once, run against every adapter.
// ---------------------------------------------------------------------------------------------

/// Instantiates each test of the list for each adapter, as `ADAPTER::TEST` (a module per adapter):
/// one list, so no adapter can skip a test, and a test left out of it is dead code (an error
/// under `-D warnings`).
macro_rules! contract_tests {
    (adapters: [$($adapter:ident),+ $(,)?], tests: $tests:tt $(,)?) => {
        $(contract_tests!(@adapter $adapter, $tests);)+
    };
    (@adapter $adapter:ident, [$($test:ident),+ $(,)?]) => {
        mod $adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::adapters::$adapter().await).await;
                }
            )+
        }
    };
}

contract_tests! {
    adapters: [sqlite, mongodb],
    tests: [
        // Transactions, claims and revisions, history, audit, idempotency, payouts, notifications,
        // tokens and rerun requests.
        insert_assigns_the_natural_date_and_skips_identical_duplicates,
        a_batch_with_a_conflict_writes_nothing,
        transactions_for_a_sealed_date_land_late_on_the_next_open_date,
        pages_cover_every_transaction_exactly_once,
        refunded_payments_come_with_all_their_refunds,
        a_claimed_date_cannot_be_claimed_again_and_completion_is_exact,
        an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_out,
        a_rerun_adds_a_revision_and_keeps_the_earlier_one,
        a_failed_revision_is_resumed_only_by_retry,
        concurrent_claims_have_exactly_one_winner,
        history_lists_latest_revisions_filtered,
        line_pages_are_filtered_sorted_and_paged_in_the_store,
        audit_events_are_appended_and_listed_newest_first,
        audit_events_are_filtered_exactly_and_by_a_half_open_range,
        data_survives_reopening,
        idempotency_keys_begin_once_replay_and_expire,
        recorded_transactions_respect_keys_and_refund_limits,
        payout_planning_is_fenced_idempotent_and_carries_what_is_owed,
        a_retried_plan_keeps_carry_forwards_opened_since,
        notifications_are_recorded_per_event,
        writers_racing_with_runs_lose_no_transaction_and_count_none_twice,
        api_tokens_are_kept_by_hash_under_unique_names,
        concurrent_creations_of_one_token_name_have_one_winner,
        rerun_requests_are_listed_newest_first_and_decided_once,
        concurrent_decisions_of_a_rerun_request_have_exactly_one_winner,
        // Payout send claims and payouts by status.
        a_payout_is_claimed_for_sending_by_one_sender_at_a_time,
        concurrent_payout_claims_have_exactly_one_winner,
        payouts_are_listed_by_status_date_and_age,
        // Fee ledgers of refunded payments.
        fee_ledgers_are_written_with_results_by_compare_and_set,
        // Idempotency locks.
        a_stalled_idempotency_holder_cannot_release_or_complete_the_takers_record,
        // Four-eyes approvals.
        approving_a_rerun_request_claims_its_run_in_the_same_step,
        concurrent_approvals_and_rejections_run_a_rerun_at_most_once,
        // Reconciliation: statements and decisions.
        statements_are_stored_once_by_identity_with_all_their_entries,
        decisions_claim_each_item_once_and_are_undone_only_by_new_decisions,
        concurrent_decisions_on_one_item_have_exactly_one_winner,
        restored_decisions_keep_their_state_and_claim_only_what_they_hold,
    ],
}
