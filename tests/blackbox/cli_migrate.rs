//! `settle migrate --from sqlite:PATH --to mongodb://…` on the real binary: everything arrives and
//! is verified by content, a second run only adds (never rolls the target back), a target holding
//! other data is refused, an interrupted copy resumes, and the copy keeps working.

use std::collections::BTreeMap;

use settle_core::store::{HistoryFilter, SharedStore};
use settle_store_mongo::MongoStore;

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

/// Every record kind, as `settle migrate` names them.
const KINDS: &[&str] = &[
    "settlements",
    "settlement_lines",
    "transactions",
    "payouts",
    "carry_forwards",
    "merchant_holds",
    "notifications",
    "idempotency_records",
    "audit_events",
    "fee_ledgers",
    "api_tokens",
    "rerun_requests",
];

/// One kind's verification as printed: `KIND: source N, target N, missing N, differing N,
/// removed N, digest source X = target Y` (`!=` when they differ).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    source: u64,
    target: u64,
    missing: u64,
    differing: u64,
    removed: u64,
    source_digest: String,
    target_digest: String,
}

impl Verified {
    /// Equal counts, nothing missing or differing, and equal digests.
    fn equal(&self) -> bool {
        self.source == self.target
            && self.missing == 0
            && self.differing == 0
            && self.source_digest == self.target_digest
    }
}

/// The verification line of `kind` in `text` (stdout on success, stderr on failure).
fn verified(text: &str, kind: &str) -> Verified {
    let prefix = format!("{kind}: ");
    let line = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no verification of {kind}: {text}"));
    let (counts, digests) = line
        .split_once(", digest source ")
        .unwrap_or_else(|| panic!("no digests: {line}"));
    let count = |name: &str| -> u64 {
        counts
            .split(", ")
            .find_map(|part| part.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    let (source_digest, equals, target_digest) = {
        let parts: Vec<&str> = digests.split_whitespace().collect();
        assert_eq!((parts.len(), parts[2]), (4, "target"), "{line}");
        (parts[0].to_string(), parts[1], parts[3].to_string())
    };
    assert_eq!(source_digest.len(), 16, "{line}");
    assert_eq!(
        equals == "=",
        source_digest == target_digest,
        "the sign agrees with the digests: {line}"
    );
    Verified {
        source: count("source"),
        target: count("target"),
        missing: count("missing"),
        differing: count("differing"),
        removed: count("removed"),
        source_digest,
        target_digest,
    }
}

/// Every kind verified equal in a successful run's output, by kind.
fn all_equal(ran: &Ran) -> BTreeMap<&'static str, Verified> {
    KINDS
        .iter()
        .map(|kind| {
            let v = verified(&ran.stdout, kind);
            assert!(v.equal(), "{kind}: {v:?}\n{}", ran.stdout);
            (*kind, v)
        })
        .collect()
}

/// The raw collection of a migrated database, to change it behind Settle's back.
async fn raw_collection(
    database: &str,
    name: &str,
) -> mongodb::Collection<mongodb::bson::Document> {
    mongodb::Client::with_uri_str(mongodb_uri())
        .await
        .unwrap()
        .database(database)
        .collection(name)
}

/// Whether the database's migration marker says finished.
async fn marked_finished(database: &str) -> bool {
    let marker = raw_collection(database, "migrations")
        .await
        .find_one(mongodb::bson::doc! { "_id": "marker" })
        .await
        .unwrap()
        .expect("a marker");
    !matches!(
        marker.get("finished_at"),
        None | Some(mongodb::bson::Bson::Null)
    )
}

/// Changes one copied transaction's amount directly on the MongoDB target.
async fn change_amount_on_target(database: &str, external_ref: &str) {
    let changed = raw_collection(database, "transactions")
        .await
        .update_one(
            mongodb::bson::doc! { "external_ref": external_ref },
            mongodb::bson::doc! { "$inc": { "amount_minor": 1_i64 } },
        )
        .await
        .unwrap();
    assert_eq!(changed.modified_count, 1, "{external_ref} was copied");
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
    let verified_first = all_equal(&first);
    assert_eq!(verified_first["transactions"].source, 7);
    assert_eq!(verified_first["settlements"].source, 3);

    let (target, raw) = mongo(&database).await;
    let source = sandbox.store().await;
    assert_eq!(contents(&target).await, contents(&source).await);

    let second = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    second.assert_ok();
    assert!(!second.stdout.contains("resumed"), "{}", second.stdout);
    assert_eq!(
        all_equal(&second),
        verified_first,
        "the same counts and digests again"
    );
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
    interrupted_after(sandbox, 1)
}

/// A fresh database holding a copy of `sandbox` interrupted after its `pages`-th page (exit 9);
/// with the records of `populated`, one page per kind (3: settlements, lines and transactions).
fn interrupted_after(sandbox: &Sandbox, pages: u32) -> String {
    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let failpoint = format!("migration.after_page=exit(9)@{pages}");
    let interrupted = tokio::task::block_in_place(|| {
        migrate(sandbox, &database, &[("SETTLE_FAILPOINTS", &failpoint)])
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
    // Equal counts and digests per kind, the same as a copy made in one go.
    let verified_resumed = all_equal(&resumed);
    assert_eq!(verified_resumed["transactions"].source, 7);
    assert_eq!(verified_resumed["merchant_holds"].source, 1);
    let straight = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let in_one_go = tokio::task::block_in_place(|| migrate(&sandbox, &straight, &[]));
    in_one_go.assert_ok();
    assert_eq!(all_equal(&in_one_go), verified_resumed);
    let (_, raw_straight) = mongo(&straight).await;
    raw_straight.drop_database().await.unwrap();

    let (target, raw) = mongo(&database).await;
    assert_eq!(
        contents(&target).await,
        contents(&sandbox.store().await).await
    );
    raw.drop_database().await.unwrap();
}

/// A record copied by an interrupted first migration is changed on the target before the copy
/// resumes: the resumed copy holds every key, but its content verification fails naming the kind,
/// with both digests, and the migration is not marked finished (nor on a later attempt: a
/// migration never overwrites).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_migration_fails_when_a_copied_record_was_changed_on_the_target() {
    let sandbox = populated();
    let database = interrupted_after(&sandbox, 3);
    change_amount_on_target(&database, "p-4").await;

    for attempt in 1..=2 {
        let resumed = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
        resumed.assert_code(1);
        assert!(!resumed.stdout.contains("done"), "{}", resumed.stdout);
        let transactions = verified(&resumed.stderr, "transactions");
        assert_eq!(
            (
                transactions.source,
                transactions.target,
                transactions.missing,
                transactions.differing
            ),
            (7, 7, 0, 1),
            "attempt {attempt}: {}",
            resumed.stderr
        );
        assert_ne!(transactions.source_digest, transactions.target_digest);
        assert!(
            resumed.stderr.contains("not marked finished")
                && resumed.stderr.contains("empty database"),
            "{}",
            resumed.stderr
        );
        for kind in KINDS.iter().filter(|kind| **kind != "transactions") {
            assert!(
                !resumed
                    .stderr
                    .lines()
                    .any(|line| line.trim().starts_with(&format!("{kind}: source "))),
                "only the differing kind is named: {}",
                resumed.stderr
            );
        }
        assert!(!marked_finished(&database).await, "attempt {attempt}");
    }
    let (_, raw) = mongo(&database).await;
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

    // Life goes on on MongoDB: the hold made on SQLite is released and its payouts go out, and a
    // transaction is corrected there.
    tokio::task::block_in_place(|| on_mongo(&sandbox, &database, &["merchant", "release", "m-2"]))
        .assert_ok();
    change_amount_on_target(&database, "p-4").await;
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
    // Verified: nothing missing; the corrected transaction is reported as differing (not a
    // failure on a second run); the released hold is left out of both sides.
    let transactions = verified(&second.stdout, "transactions");
    assert_eq!(
        (
            transactions.source,
            transactions.target,
            transactions.missing,
            transactions.differing
        ),
        (8, 8, 0, 1),
        "{}",
        second.stdout
    );
    assert_ne!(transactions.source_digest, transactions.target_digest);
    let holds = verified(&second.stdout, "merchant_holds");
    assert_eq!(
        (holds.source, holds.target, holds.removed),
        (0, 0, 1),
        "{}",
        second.stdout
    );
    assert!(holds.equal(), "{holds:?}");
    assert!(verified(&second.stdout, "settlements").equal());
    assert!(
        second.stdout.contains("differing on the target") && second.stdout.contains("transactions"),
        "{}",
        second.stdout
    );
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
    let verified_payouts = verified(&second.stdout, "payouts");
    assert_eq!(verified_payouts.missing, 0, "{}", second.stdout);
    assert_eq!(verified_payouts.differing, payouts[2], "{}", second.stdout);
    assert_ne!(
        verified_payouts.source_digest, verified_payouts.target_digest,
        "{}",
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

/// The provider's transaction report of `populated()`'s days: its payments and refund, one line
/// twice, two captures Settle never recorded (one above the write-off approval threshold), and
/// p-4 off by its fee.
const PROVIDER_REPORT: &str = "reference,amount,currency,fee,status,booked_at\n\
p-1,100.00,USD,1.50,captured,2024-03-10T07:00:00Z\n\
r-1,-40.00,USD,0.00,refunded,2024-03-10T09:00:00Z\n\
p-1,100.00,USD,1.50,captured,2024-03-10T07:00:00Z\n\
x-9,12.00,USD,0.18,captured,2024-03-10T08:00:00Z\n\
x-10,250.00,USD,3.75,captured,2024-03-10T08:30:00Z\n\
p-4,7.14,USD,0.11,captured,2024-03-11T06:00:00Z\n\
p-2,1500,YER,0,captured,2024-03-10T08:00:00Z\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_records_are_migrated_with_their_state() {
    let sandbox = populated();
    let report = sandbox.write("provider.csv", PROVIDER_REPORT);
    sandbox
        .run(&[
            "reconcile",
            "import",
            report.to_str().unwrap(),
            "--kind",
            "provider",
        ])
        .assert_ok();
    sandbox.run(&["reconcile", "run"]).assert_ok();
    let source = sandbox.store().await;
    let entries = source
        .statement_entries(&settle_core::store::EntryFilter {
            kind: settle_core::reconcile::StatementKind::Provider,
            booked_from: None,
            booked_to: None,
        })
        .await
        .unwrap();
    let entry_id = |reference: &str| {
        entries
            .iter()
            .find(|e| e.entry.references == [reference])
            .unwrap_or_else(|| panic!("no entry {reference}"))
            .id
            .clone()
    };
    let write_off = |reference: &str| {
        let ran = sandbox.run(&[
            "reconcile",
            "write-off",
            "--kind",
            "provider",
            "--theirs",
            &entry_id(reference),
            "--reason",
            "not ours",
            "--category",
            "other",
        ]);
        ran.assert_ok();
        ran.stdout
    };
    write_off("x-9");
    assert!(write_off("x-10").contains("waits for approval"));
    // The YER match is undone: a reversed decision, its items open again.
    let yer = source
        .decisions(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.currency.map(|c| c.code()) == Some("YER"))
        .expect("the YER capture matched");
    sandbox
        .run(&["reconcile", "unmatch", &yer.id, "--reason", "recheck"])
        .assert_ok();
    let decisions = source.decisions(&Default::default()).await.unwrap();
    let states: std::collections::BTreeSet<&str> =
        decisions.iter().map(|d| d.state.as_str()).collect();
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        ["awaiting_approval", "in_force", "reversed"],
        "{decisions:#?}"
    );
    let exceptions = sandbox.run(&["reconcile", "exceptions"]);
    exceptions.assert_ok();
    let summary = sandbox.run(&["reconcile", "show", "--date", "2024-03-10"]);
    summary.assert_ok();

    let database = format!("settle_migrate_{}", uuid::Uuid::new_v4().simple());
    let first = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    first.assert_ok();
    let statements = source.statements(None).await.unwrap().len() as u64;
    for (part, count) in [
        ("recon_statements", statements),
        ("recon_entries", entries.len() as u64),
        ("recon_decisions", decisions.len() as u64),
    ] {
        assert_eq!(figures(&first, part), [count, 0, 0, 0], "{}", first.stdout);
        let v = verified(&first.stdout, part);
        assert!(v.equal() && v.source == count, "{part}: {v:?}");
    }

    // On MongoDB: the same decisions in the same states and the same exceptions; the claims came
    // along (the written-off line cannot be matched again); a second run copies nothing.
    let (target, raw) = mongo(&database).await;
    assert_eq!(
        target.decisions(&Default::default()).await.unwrap(),
        decisions
    );
    let on_target = |args: &[&str]| {
        let ran = tokio::task::block_in_place(|| on_mongo(&sandbox, &database, args));
        ran.assert_ok();
        ran.stdout
    };
    assert_eq!(on_target(&["reconcile", "exceptions"]), exceptions.stdout);
    assert_eq!(
        on_target(&["reconcile", "show", "--date", "2024-03-10"]),
        summary.stdout
    );
    let written_off = entry_id("x-9");
    let taken = tokio::task::block_in_place(|| {
        on_mongo(
            &sandbox,
            &database,
            &[
                "reconcile",
                "write-off",
                "--kind",
                "provider",
                "--theirs",
                &written_off,
                "--reason",
                "again",
                "--category",
                "other",
            ],
        )
    });
    taken.assert_code(3);
    assert!(taken.stderr.contains(&written_off), "{}", taken.stderr);
    let second = tokio::task::block_in_place(|| migrate(&sandbox, &database, &[]));
    second.assert_ok();
    assert_eq!(
        figures(&second, "recon_decisions"),
        [0, decisions.len() as u64, 0, 0],
        "{}",
        second.stdout
    );
    raw.drop_database().await.unwrap();
}
