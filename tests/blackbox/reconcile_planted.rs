//! The reconciliation property, on both stores: a settled month's statements (written as files,
//! imported through the core's service) with N discrepancies planted at random places are reconciled
//! with exactly those N exceptions; a batched debit is matched as a group and a late entry is expected.
//!
//! Each case is a fresh store: a small generated month is ingested, settled and paid out through
//! the provider on loopback, then the statements are planted, imported and run.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use settle_core::calendar::BusinessCalendar;
use settle_core::demo::{generate, DemoSpec};
use settle_core::fees::FeeSchedule;
use settle_core::ingest;
use settle_core::model::{Payout, RunTrigger, Transaction};
use settle_core::money::Currency;
use settle_core::payout::PayoutSender;
use settle_core::provider::{PayoutProvider, ProviderSettings};
use settle_core::reconcile::records::date_transactions;
use settle_core::reconcile::simulated::{month_statements, Discrepancy, Plant};
use settle_core::reconcile::{
    ImportFile, ItemSide, ItemStatus, ReconciliationService, ReconciliationSettings,
    StatementFormat, StatementKind,
};
use settle_core::retry::RetryPolicy;
use settle_core::settlement::{RunRequest, SettlementRunner};
use settle_core::store::SharedStore;
use settle_core::time::{Clock, SystemClock};

use crate::provider_server::ProviderServer;
use crate::store_contract::{adapters, TestStore};

fn spec() -> DemoSpec {
    DemoSpec {
        seed: 17,
        first_date: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        days: 20,
        merchant_count: 10,
        transactions_per_day: 24,
        currencies: ["YER", "SAR", "USD"]
            .iter()
            .map(|c| Currency::from_code(c).unwrap())
            .collect(),
    }
}

/// Ingests, settles and pays out the month of `spec()` on `store`; its payouts and transactions.
async fn settled_month(
    store: &SharedStore,
    provider: &ProviderServer,
) -> (Vec<Payout>, Vec<Transaction>, NaiveDate) {
    let spec = spec();
    let calendar = BusinessCalendar::default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outcome = ingest::record(
        store.as_ref(),
        &calendar,
        generate(&spec, &calendar),
        clock.now(),
    )
    .await
    .unwrap();
    assert!(outcome.conflicts.is_empty());
    let provider = PayoutProvider::new(ProviderSettings {
        base_url: provider.base_url().to_string(),
        token: None,
        policy: RetryPolicy::payment(),
    })
    .unwrap();
    let runner = SettlementRunner::new(
        store.clone(),
        clock.clone(),
        calendar,
        FeeSchedule::default(),
        "planted-test",
    )
    .with_payouts(PayoutSender::new(store.clone(), Arc::new(provider), clock));
    let last = spec.first_date + Days::new(u64::from(spec.days) - 1);
    let (mut payouts, mut transactions) = (Vec::new(), Vec::new());
    for date in spec.first_date.iter_days().take_while(|d| *d <= last) {
        runner
            .execute(date, RunRequest::Run, "cli:tester", RunTrigger::Manual)
            .await
            .unwrap();
        payouts.extend(store.payouts(date).await.unwrap());
        transactions.extend(date_transactions(store, date).await.unwrap());
    }
    (payouts, transactions, last)
}

fn plants() -> impl Strategy<Value = Vec<Plant>> {
    proptest::collection::vec(
        (0..Discrepancy::ALL.len(), any::<u64>()).prop_map(|(i, pick)| Plant {
            discrepancy: Discrepancy::ALL[i],
            pick,
        }),
        1..8,
    )
}

/// One case: plants `plants` in a fresh store's month, reconciles, compares with what was planted.
async fn case(test_store: TestStore, plants: Vec<Plant>) -> Result<(), TestCaseError> {
    let provider = ProviderServer::start();
    let store = test_store.store.clone();
    let (payouts, transactions, last) = settled_month(&store, &provider).await;
    let calendar = BusinessCalendar::default();
    let first = spec().first_date;
    let simulated = month_statements(
        &payouts,
        &transactions,
        |at| calendar.date_of(at).unwrap(),
        first,
        last,
        &plants,
    );
    let service = ReconciliationService::new(
        store.clone(),
        calendar,
        Arc::new(SystemClock),
        ReconciliationSettings::default(),
    );
    for (kind, text) in [
        (StatementKind::Provider, simulated.provider_csv()),
        (StatementKind::Payouts, simulated.payouts_csv()),
        (StatementKind::Bank, simulated.bank_camt053()),
    ] {
        let file = ImportFile {
            kind,
            bytes: text.into_bytes(),
            format: (kind == StatementKind::Bank).then_some(StatementFormat::Camt053),
            profile: None,
        };
        service.import_file(file, "cli:tester").await.unwrap();
    }
    service.run(None, None, "cli:tester").await.unwrap();

    let expected: Vec<_> = simulated
        .planted
        .iter()
        .flat_map(|p| p.exceptions.iter().cloned())
        .collect();
    let exceptions = service.exceptions(None, None).await.unwrap();
    let shown: Vec<String> = exceptions
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {:?}",
                e.kind, e.item.side, e.item.id, e.item.references
            )
        })
        .collect();
    prop_assert_eq!(
        exceptions.len(),
        expected.len(),
        "planted {:?}, found {:?}",
        simulated.planted,
        shown
    );
    let mut used = BTreeSet::new();
    for want in &expected {
        let found = exceptions.iter().enumerate().find(|(i, e)| {
            !used.contains(i)
                && e.kind == want.kind
                && e.item.side == want.side
                && (e.item.id == want.reference || e.item.references.contains(&want.reference))
        });
        prop_assert!(
            found.is_some(),
            "no exception for {:?}; found {:?}",
            want,
            shown
        );
        used.insert(found.unwrap().0);
    }

    let bank = service.items(StatementKind::Bank).await.unwrap();
    for p in &simulated.planted {
        match p.discrepancy {
            Discrepancy::LateEntry => {
                let item = bank
                    .iter()
                    .find(|i| i.item.side == ItemSide::Ours && i.item.id == p.target);
                prop_assert_eq!(
                    item.map(|i| i.item.status),
                    Some(ItemStatus::Expected),
                    "{}",
                    p.target
                );
            }
            Discrepancy::BatchedDebit => {
                let size: usize = p
                    .target
                    .split(['(', ' '])
                    .find_map(|w| w.parse().ok())
                    .unwrap();
                let grouped = bank
                    .iter()
                    .filter(|i| {
                        i.item.side == ItemSide::Ours && i.item.rule.as_deref() == Some("group")
                    })
                    .count();
                prop_assert!(grouped >= size, "{}: {} grouped", p.target, grouped);
            }
            _ => {}
        }
    }
    Ok(())
}

fn run_property<F: std::future::Future<Output = TestStore>>(cases: u32, open: impl Fn() -> F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `SETTLE_PLANTED_CASES=N` runs N cases per store instead.
    let cases = std::env::var("SETTLE_PLANTED_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&plants(), |plants| {
            runtime.block_on(async {
                let store = open().await;
                case(store, plants).await
            })
        })
        .unwrap();
}

#[test]
fn planted_discrepancies_are_exactly_the_exceptions_on_sqlite() {
    run_property(6, adapters::sqlite);
}

#[test]
fn planted_discrepancies_are_exactly_the_exceptions_on_mongodb() {
    run_property(3, adapters::mongodb);
}

/// Every kind can be planted in the test's month: none is skipped for want of a target.
#[test]
fn the_test_month_has_room_for_every_kind() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let test_store = adapters::sqlite().await;
        let provider = ProviderServer::start();
        let (payouts, transactions, last) = settled_month(&test_store.store, &provider).await;
        let calendar = BusinessCalendar::default();
        let plants: Vec<Plant> = Discrepancy::ALL
            .iter()
            .flat_map(|d| {
                (0..2).map(|pick| Plant {
                    discrepancy: *d,
                    pick,
                })
            })
            .collect();
        let simulated = month_statements(
            &payouts,
            &transactions,
            |at| calendar.date_of(at).unwrap(),
            spec().first_date,
            last,
            &plants,
        );
        assert!(simulated.skipped.is_empty(), "{:?}", simulated.skipped);
        assert_eq!(simulated.planted.len(), plants.len());
    });
}
