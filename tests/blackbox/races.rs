//! Races on both stores: a thousand concurrent HTTP requests with one Idempotency-Key execute once,
//! and two `settle run` processes racing for one date settle it once (the daemons' race for the
//! nightly job is in `api_daemon.rs`).

use std::collections::BTreeSet;

use serde_json::Value;
use settle_core::model::SettlementStatus;
use settle_core::store::SharedStore;
use settle_tests::mongo::FreshDatabase;

use crate::daemon::{payment_body, Setup};
use crate::support::transactions_csv;

const CONCURRENT_REQUESTS: usize = 1_000;
const CONFIG: &str = "[scheduler]\nenabled = false\n";
const DATE: &str = "2024-03-10";

/// A setup on SQLite (no database) or on a fresh MongoDB database, and its store opened directly.
struct OnStore {
    setup: Setup,
    database: Option<FreshDatabase>,
}

impl OnStore {
    fn sqlite() -> OnStore {
        OnStore {
            setup: Setup::sqlite(CONFIG),
            database: None,
        }
    }

    fn mongodb() -> OnStore {
        let database = FreshDatabase::new();
        OnStore {
            setup: Setup::with_options(CONFIG, database.options()),
            database: Some(database),
        }
    }

    async fn store(&self) -> SharedStore {
        match &self.database {
            Some(database) => database.store().await,
            None => self.setup.sandbox.store().await,
        }
    }
}

/// One request's answer: status, whether it was a replay, and the transaction id if any.
struct Answer {
    status: u16,
    replayed: bool,
    retry_after: bool,
    id: Option<String>,
}

async fn one_key_under_a_thousand_concurrent_requests(on: OnStore) {
    let token = on.setup.token("racer", "operator");
    let daemon = on.setup.start();
    let body = payment_body("m-race", "12.50", "race-1", "2026-11-20T10:00:00Z");
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let url = format!("{}/api/v2/payments", daemon.base_url);
    let key = "6f1c2a8e-3b7d-4c55-9e0a-1d2b3c4d5e6f";
    let tasks: Vec<_> = (0..CONCURRENT_REQUESTS)
        .map(|_| {
            let (client, url, token, body) =
                (client.clone(), url.clone(), token.clone(), body.clone());
            tokio::spawn(async move {
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("the daemon answers");
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_string)
                };
                let replayed = header("idempotent-replayed").as_deref() == Some("true");
                let retry_after = header("retry-after").is_some();
                let json: Value = response.json().await.unwrap_or(Value::Null);
                Answer {
                    status,
                    replayed,
                    retry_after,
                    id: json["id"].as_str().map(str::to_string),
                }
            })
        })
        .collect();
    let answers: Vec<Answer> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|task| task.expect("the request task"))
        .collect();
    let executed = answers
        .iter()
        .filter(|a| a.status == 201 && !a.replayed)
        .count();
    assert_eq!(executed, 1, "exactly one execution");
    for answer in &answers {
        match answer.status {
            201 => {}
            409 => assert!(answer.retry_after, "a 409 in progress says when to retry"),
            other => panic!("unexpected answer {other}"),
        }
    }
    let ids: BTreeSet<&String> = answers.iter().filter_map(|a| a.id.as_ref()).collect();
    assert_eq!(
        ids.len(),
        1,
        "every replay returns the same transaction: {ids:?}"
    );
    let stored = on
        .store()
        .await
        .transactions_by_ref(vec![("m-race".to_string(), "race-1".to_string())])
        .await
        .expect("read the store");
    assert_eq!(stored.len(), 1, "one transaction stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_with_one_key_execute_once_on_sqlite() {
    one_key_under_a_thousand_concurrent_requests(OnStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_with_one_key_execute_once_on_mongodb() {
    one_key_under_a_thousand_concurrent_requests(OnStore::mongodb()).await;
}

async fn two_processes_race_for_one_date(on: OnStore) {
    let rows = [
        "p1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
        "p2,m-2,payment,completed,50.00,USD,wallet,2024-03-10T11:00:00+03:00,",
        "p3,m-3,payment,completed,80.00,SAR,cash,2024-03-10T12:00:00+03:00,",
    ];
    let file = on.setup.sandbox.write("day.csv", transactions_csv(&rows));
    on.setup
        .settle(&["import", file.to_str().expect("a UTF-8 path")])
        .assert_ok();
    // Each process holds its claim for a while, so that the two certainly overlap.
    let hold = [("SETTLE_FAILPOINTS", "settlement.after_claim=sleep(1500)")];
    // The exit codes tell the winner (0) and the loser (3) apart.
    let spawn = || on.setup.spawn(&["run", "--date", DATE], &hold);
    let (mut first, mut second) = (spawn(), spawn());
    let codes = tokio::task::block_in_place(|| {
        [
            first.wait().expect("the first run").code(),
            second.wait().expect("the second run").code(),
        ]
    });
    assert_eq!(
        codes.iter().filter(|code| **code == Some(0)).count(),
        1,
        "exactly one winner: {codes:?}"
    );
    assert!(
        codes.contains(&Some(3)),
        "the loser is told it lost: {codes:?}"
    );
    let store = on.store().await;
    let revisions = store
        .settlement_revisions(DATE.parse().expect("a date"))
        .await
        .expect("revisions");
    assert_eq!(revisions.len(), 1);
    assert_eq!(revisions[0].status, SettlementStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_settle_run_processes_settle_a_date_once_on_sqlite() {
    two_processes_race_for_one_date(OnStore::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_settle_run_processes_settle_a_date_once_on_mongodb() {
    two_processes_race_for_one_date(OnStore::mongodb()).await;
}
