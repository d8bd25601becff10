//! `settle migrate --from sqlite:PATH --to mongodb://…` on the real binary: everything arrives,
//! a second run only adds (never rolls the target back), a target holding other data is refused,
//! an interrupted copy resumes, and the copy keeps working (a rerun settles what SQLite settled).

use std::collections::BTreeMap;

use settle_core::store::mongo::MongoStore;
use settle_core::store::{HistoryFilter, SharedStore};

use settle_core::secret::Secret;

use crate::provider_server::ProviderServer;
use crate::store_contract::adapters::mongodb_uri;
use crate::support::{transactions_csv, Ran, Sandbox};
use crate::webhook_receiver::WebhookReceiver;

/// A SQLite store with settlements, a rerun, a recorded payment and a hold.
fn populated() -> Sandbox {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "days.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "r-1,m-1,refund,completed,40.00,USD,card,2024-03-10T12:00:00+03:00,p-1",
            "p-2,m-2,payment,completed,1500,YER,cash,2024-03-10T11:00:00+03:00,",
            "p-3,m-1,payment,failed,5.00,USD,card,2024-03-11T11:00:00+03:00,",
            "p-4,m-3,payment,completed,7.25,USD,wallet,2024-03-11T09:00:00+03:00,",
            "p-5,m-3,payment,pending,9.00,USD,wallet,2024-03-12T09:00:00+03:00,",
        ]),
    );
    sandbox.run(&["import", file.to_str().unwrap()]).assert_ok();
    sandbox.run(&["run", "--date", "2024-03-10"]).assert_ok();
    sandbox.run(&["run", "--date", "2024-03-11"]).assert_ok();
    sandbox
        .run(&["rerun", "--date", "2024-03-10", "--reason", "recount"])
        .assert_ok();
    sandbox
        .run(&[
            "payment",
            "record",
            "--merchant",
            "m-9",
            "--amount",
            "3.00",
            "--currency",
            "USD",
            "--method",
            "card",
            "--external-ref",
            "api-1",
            "--occurred-at",
            "2024-03-12T10:00:00Z",
            "--idempotency-key",
            "key-1",
        ])
        .assert_ok();
    sandbox
        .run(&["merchant", "hold", "m-2", "--reason", "review"])
        .assert_ok();
    sandbox
}

fn migrate(sandbox: &Sandbox, database: &str, env: &[(&str, &str)]) -> Ran {
    let source = format!("sqlite:{}", sandbox.data_dir().join("settle.db").display());
    let uri = mongodb_uri();
    sandbox.run_with_env(
        &[
            "migrate", "--from", &source, "--to", &uri, "--to-db", database,
        ],
        env,
    )
}

/// The same command on the migrated MongoDB database.
fn on_mongo(sandbox: &Sandbox, database: &str, args: &[&str]) -> Ran {
    let uri = mongodb_uri();
    let mut full = vec![
        "--store",
        "mongodb",
        "--mongo-uri",
        uri.as_str(),
        "--mongo-db",
        database,
    ];
    full.extend_from_slice(args);
    sandbox.run(&full)
}

/// Everything a store holds that the user can see, in a comparable form.
async fn contents(store: &SharedStore) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let history = store
        .settlement_history(&HistoryFilter {
            all_revisions: true,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    for s in &history {
        let key = format!("settlement {} r{}", s.settlement_date, s.revision);
        seen.insert(
            key.clone(),
            format!(
                "{:?} {:?} {:?} {:?}",
                s.status, s.totals, s.reason, s.lease_version
            ),
        );
        let lines = store
            .settlement_lines(s.settlement_date, s.revision)
            .await
            .unwrap();
        seen.insert(format!("{key} lines"), format!("{lines:?}"));
        let mut after = None;
        loop {
            let page = store
                .transactions_page(s.settlement_date, after, 100)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for t in page {
                seen.insert(format!("transaction {}", t.id), format!("{t:?}"));
            }
        }
    }
    for date in ["2024-03-12"] {
        for t in store
            .transactions_page(date.parse().unwrap(), None, 100)
            .await
            .unwrap()
        {
            seen.insert(format!("transaction {}", t.id), format!("{t:?}"));
        }
    }
    seen.insert(
        "holds".into(),
        format!("{:?}", store.merchant_holds().await.unwrap()),
    );
    seen.insert(
        "carry".into(),
        format!("{:?}", store.carry_forwards(false).await.unwrap()),
    );
    let audit = store.audit_events(1_000, 0).await.unwrap();
    let actions: Vec<_> = audit
        .iter()
        .filter(|e| e.action != "store.migrate")
        .map(|e| (e.id, e.action.clone()))
        .collect();
    seen.insert("audit".into(), format!("{actions:?}"));
    seen.insert(
        "tokens".into(),
        format!("{:?}", store.tokens().await.unwrap()),
    );
    seen.insert(
        "rerun requests".into(),
        format!("{:?}", store.rerun_requests(None).await.unwrap()),
    );
    for date in ["2024-03-10", "2024-03-11"] {
        seen.insert(
            format!("payouts {date}"),
            format!("{:?}", store.payouts(date.parse().unwrap()).await.unwrap()),
        );
    }
    seen
}

/// The figures `settle migrate` printed for one kind: copied, present, differ, removed.
fn figures(ran: &Ran, kind: &str) -> [u64; 4] {
    let line = ran
        .stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no line for {kind}: {}", ran.stdout));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    [numbers[0], numbers[1], numbers[2], numbers[3]]
}

/// Adds an API token and a pending rerun request to the SQLite store.
async fn add_access_records(sandbox: &Sandbox) {
    sandbox
        .run(&["token", "create", "--name", "ops", "--role", "admin"])
        .assert_ok();
    let store = sandbox.store().await;
    store
        .create_rerun_request(&settle_core::model::RerunRequest {
            id: uuid::Uuid::new_v4(),
            settlement_date: "2024-03-11".parse().unwrap(),
            reason: "check the fees".into(),
            apply_current_fees: false,
            requested_by: "alice".into(),
            requested_at: chrono::Utc::now(),
            status: settle_core::model::RerunRequestStatus::Pending,
            decided_by: None,
            decided_at: None,
            settlement_revision: Some(1),
            run_revision: None,
            last_refusal: None,
        })
        .await
        .unwrap();
}

async fn mongo(database: &str) -> (SharedStore, MongoStore) {
    let store = MongoStore::connect(&mongodb_uri(), database).await.unwrap();
    (std::sync::Arc::new(store.clone()), store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_copies_everything_and_a_second_run_is_harmless() {
    let sandbox = populated();
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let first = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    first.assert_ok();
    assert!(
        first.stdout.contains("transactions") && first.stdout.contains("done"),
        "{}",
        first.stdout
    );

    let (target, raw) = mongo(&database).await;
    let source = sandbox.store().await;
    assert_eq!(contents(&target).await, contents(&source).await);

    let second = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    second.assert_ok();
    assert!(!second.stdout.contains("resumed"), "{}", second.stdout);
    assert_eq!(
        contents(&target).await,
        contents(&source).await,
        "a second run changes nothing"
    );

    // The migrated store works: exports match, the payment key replays, a rerun settles the same.
    for date in ["2024-03-10", "2024-03-11"] {
        let sqlite = sandbox.run(&["export", "--date", date]);
        let mongodb = tokio::task::block_in_place(|| {
            on_mongo(&sandbox, &database, &["export", "--date", date])
        });
        mongodb.assert_ok();
        assert_eq!(sqlite.stdout, mongodb.stdout, "{date}");
    }
    let replay = tokio::task::block_in_place(|| {
        on_mongo(
            &sandbox,
            &database,
            &[
                "payment",
                "record",
                "--merchant",
                "m-9",
                "--amount",
                "3.00",
                "--currency",
                "USD",
                "--method",
                "card",
                "--external-ref",
                "api-1",
                "--occurred-at",
                "2024-03-12T10:00:00Z",
                "--idempotency-key",
                "key-1",
            ],
        )
    });
    replay.assert_ok();
    assert!(
        replay.stderr.contains("idempotency: replay"),
        "{}",
        replay.stderr
    );
    let rerun = tokio::task::block_in_place(|| {
        on_mongo(
            &sandbox,
            &database,
            &[
                "rerun",
                "--date",
                "2024-03-11",
                "--reason",
                "after the move",
            ],
        )
    });
    rerun.assert_ok();
    let before = sandbox
        .run(&["export", "--date", "2024-03-11"])
        .stdout
        .replace(",1,m-", ",2,m-");
    let after = tokio::task::block_in_place(|| {
        on_mongo(&sandbox, &database, &["export", "--date", "2024-03-11"])
    });
    assert_eq!(
        after.stdout, before,
        "the rerun on MongoDB settles exactly what SQLite settled"
    );
    raw.drop_database().await.unwrap();
}

/// A fresh database holding a copy of `sandbox` interrupted after its first page (exit 9).
fn interrupted_copy(sandbox: &Sandbox) -> String {
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let interrupted = tokio::task::block_in_place(|| {
        migrate(
            sandbox,
            &database,
            &[("SETTLE_FAILPOINTS", "migration.after_page=exit(9)")],
        )
    });
    interrupted.assert_code(9);
    database
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_resumes_where_it_stopped() {
    let sandbox = populated();
    let database = interrupted_copy(&sandbox);
    let resumed = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    resumed.assert_ok();
    assert!(
        resumed.stdout.contains("resumed an interrupted copy"),
        "{}",
        resumed.stdout
    );
    let (target, raw) = mongo(&database).await;
    assert_eq!(
        contents(&target).await,
        contents(&sandbox.store().await).await
    );
    raw.drop_database().await.unwrap();
}

/// Issue 15 (defect 3): the source gains a record behind the checkpoint of an interrupted copy
/// (a rerun of the earlier date sorts before the later date's revision the copy had reached). The
/// resumed copy's verification finds it and copies it: the target ends holding everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_migration_copies_what_the_source_gained_behind_its_checkpoint() {
    let sandbox = populated();
    let database = interrupted_copy(&sandbox);
    sandbox
        .run(&["rerun", "--date", "2024-03-10", "--reason", "late file"])
        .assert_ok();
    let resumed = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    resumed.assert_ok();
    assert!(
        resumed
            .stdout
            .contains("found by the verification and copied"),
        "{}",
        resumed.stdout
    );
    let (target, raw) = mongo(&database).await;
    let revisions = target
        .settlement_revisions("2024-03-10".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(revisions.len(), 3, "{revisions:?}");
    assert_eq!(
        contents(&target).await,
        contents(&sandbox.store().await).await
    );
    raw.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_migration_only_adds_and_never_rolls_the_target_back() {
    let sandbox = populated();
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    tokio::task::block_in_place(|| migrate(&sandbox, &database, &[])).assert_ok();
    let (target, raw) = mongo(&database).await;

    // Life goes on on MongoDB: the hold made on SQLite is released and its payouts go out.
    tokio::task::block_in_place(|| on_mongo(&sandbox, &database, &["merchant", "release", "m-2"]))
        .assert_ok();
    let moved_on = contents(&target).await;
    // And one more payment reaches the old store before it is retired.
    sandbox
        .run(&[
            "payment",
            "record",
            "--merchant",
            "m-9",
            "--amount",
            "4.00",
            "--currency",
            "USD",
            "--method",
            "card",
            "--external-ref",
            "api-2",
            "--occurred-at",
            "2024-03-12T11:00:00Z",
        ])
        .assert_ok();

    let second = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    second.assert_ok();
    assert!(
        second.stdout.contains("migrated here before"),
        "{}",
        second.stdout
    );
    let after = contents(&target).await;
    assert_eq!(
        format!("{:?}", target.merchant_holds().await.unwrap()),
        "[]",
        "the released hold stays released"
    );
    for (key, value) in &moved_on {
        if key.starts_with("transaction ") || key == "audit" {
            continue;
        }
        assert_eq!(after.get(key), Some(value), "{key} was rolled back");
    }
    let new_payment = after
        .iter()
        .filter(|(key, _)| key.starts_with("transaction "))
        .count();
    let before_payment = moved_on
        .iter()
        .filter(|(key, _)| key.starts_with("transaction "))
        .count();
    assert_eq!(new_payment, before_payment + 1, "the new payment is added");
    assert_eq!(figures(&second, "transactions")[0], 1, "{}", second.stdout);
    assert_eq!(
        figures(&second, "merchant_holds"),
        [0, 0, 0, 1],
        "{}",
        second.stdout
    );
    assert_eq!(figures(&second, "settlements")[0], 0, "{}", second.stdout);
    if moved_on.get("payouts 2024-03-10")
        != contents(&sandbox.store().await)
            .await
            .get("payouts 2024-03-10")
    {
        assert!(figures(&second, "payouts")[2] > 0, "{}", second.stdout);
    }
    raw.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_released_and_paid_on_mongodb_survives_a_second_migration() {
    const SECRET: &str = "whsec-test-0123456789";
    let provider = ProviderServer::start();
    let receiver = WebhookReceiver::start(Secret::new(SECRET));
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        format!(
            "[payouts]\nprovider_url = \"{}\"\n[notifications]\nwebhook_url = \"{}\"\n",
            provider.base_url(),
            receiver.url()
        ),
    );
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let uri = mongodb_uri();
    let settle = |mongo: bool, args: &[&str]| {
        let mut full = vec!["--config", "settle.toml"];
        if mongo {
            full.extend_from_slice(&[
                "--store",
                "mongodb",
                "--mongo-uri",
                &uri,
                "--mongo-db",
                &database,
            ]);
        }
        full.extend_from_slice(args);
        tokio::task::block_in_place(|| {
            sandbox.run_with_env(&full, &[("SETTLE_WEBHOOK_SECRET", SECRET)])
        })
    };
    let file = sandbox.write(
        "day.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,40.00,USD,card,2024-03-10T10:00:00+03:00,",
        ]),
    );
    settle(false, &["import", file.to_str().unwrap()]).assert_ok();
    settle(
        false,
        &["merchant", "hold", "m-2", "--reason", "KYC review"],
    )
    .assert_ok();
    settle(false, &["run", "--date", "2024-03-10"]).assert_ok();
    tokio::task::block_in_place(|| migrate(&sandbox, &database, &[])).assert_ok();

    settle(true, &["merchant", "release", "m-2"]).assert_ok();
    let (target, raw) = mongo(&database).await;
    let date = "2024-03-10".parse().unwrap();
    let paid = format!("{:?}", target.payouts(date).await.unwrap());
    assert_ne!(
        paid,
        format!("{:?}", sandbox.store().await.payouts(date).await.unwrap())
    );

    let second = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    second.assert_ok();
    assert_eq!(
        format!("{:?}", target.payouts(date).await.unwrap()),
        paid,
        "payouts rolled back"
    );
    assert!(
        target.merchant_holds().await.unwrap().is_empty(),
        "the hold came back"
    );
    let payouts = figures(&second, "payouts");
    assert_eq!(payouts[0], 0, "{}", second.stdout);
    assert!(
        payouts[2] >= 1,
        "the paid payout differs from the source: {}",
        second.stdout
    );
    assert_eq!(
        figures(&second, "merchant_holds"),
        [0, 0, 0, 1],
        "{}",
        second.stdout
    );
    assert_eq!(provider.ledger().len(), 2, "nobody is paid twice");
    raw.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_other_data_is_refused() {
    let sandbox = populated();
    // A database in use by another installation.
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    tokio::task::block_in_place(|| {
        on_mongo(
            &sandbox,
            &database,
            &["token", "create", "--name", "elsewhere", "--role", "viewer"],
        )
    })
    .assert_ok();
    let refused = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    refused.assert_code(3);
    assert!(
        refused.stderr.contains(&database) && refused.stderr.contains("api_tokens 1"),
        "{}",
        refused.stderr
    );
    let (_, raw) = mongo(&database).await;
    raw.drop_database().await.unwrap();

    // A database holding another SQLite store's copy.
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let other = populated();
    tokio::task::block_in_place(|| migrate(&other, &database, &[])).assert_ok();
    let refused = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    refused.assert_code(3);
    assert!(
        refused.stderr.contains(&database) && refused.stderr.contains("another store"),
        "{}",
        refused.stderr
    );
    // The same source again is allowed.
    tokio::task::block_in_place(|| migrate(&other, &database, &[])).assert_ok();
    let (_, raw) = mongo(&database).await;
    raw.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_rerun_requests_are_migrated() {
    let sandbox = populated();
    add_access_records(&sandbox).await;
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let ran = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    ran.assert_ok();
    assert_eq!(figures(&ran, "api_tokens")[0], 1, "{}", ran.stdout);
    assert_eq!(figures(&ran, "rerun_requests")[0], 1, "{}", ran.stdout);
    let listed = tokio::task::block_in_place(|| on_mongo(&sandbox, &database, &["token", "list"]));
    listed.assert_ok();
    assert!(listed.stdout.contains("ops"), "{}", listed.stdout);
    let (target, raw) = mongo(&database).await;
    assert_eq!(
        contents(&target).await,
        contents(&sandbox.store().await).await
    );
    raw.drop_database().await.unwrap();
}

#[test]
fn bad_sources_and_targets_are_refused() {
    let sandbox = Sandbox::new();
    let no_file = sandbox.run(&[
        "migrate",
        "--from",
        "sqlite:missing.db",
        "--to",
        "mongodb://127.0.0.1:1",
    ]);
    no_file.assert_code(2);
    assert!(no_file.stderr.contains("missing.db"), "{}", no_file.stderr);
    let wrong_scheme = sandbox.run(&[
        "migrate",
        "--from",
        "postgres://x",
        "--to",
        "mongodb://127.0.0.1:1",
    ]);
    wrong_scheme.assert_code(2);
    sandbox.write("x.db", "");
    let wrong_target = sandbox.run(&[
        "migrate",
        "--from",
        "sqlite:x.db",
        "--to",
        "https://user:pw@host",
    ]);
    wrong_target.assert_code(2);
    assert!(
        !wrong_target.stderr.contains("pw@"),
        "{}",
        wrong_target.stderr
    );
}
