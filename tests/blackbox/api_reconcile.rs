//! Reconciliation over HTTP: the running daemon imports a camt.053 statement and a payout report
//! sent as request bodies, runs the rules, and people work the exceptions through the routes —
//! roles, four eyes, replays and the report equal to the CLI's — on SQLite and on MongoDB.

use serde_json::{json, Value};
use settle_core::reconcile::{Statement, StatementKind};
use settle_core::store::{EntryFilter, SharedStore};
use settle_statements::write::{camt053, payout_report, Camt053Version};
use uuid::Uuid;

use crate::daemon::{Daemon, Setup};
use crate::provider_server::ProviderServer;
use crate::reconcile::{bank_statement, day, entry};
use crate::support::transactions_csv;
use settle_tests::mongo::FreshDatabase;

const BASE: &str = "/api/v2/finance/reconciliation";

fn key() -> String {
    Uuid::new_v4().to_string()
}

async fn import(daemon: &Daemon, token: &str, kind: &str, body: Vec<u8>) -> crate::daemon::Reply {
    daemon
        .post(&format!("{BASE}/statements?kind={kind}"))
        .bearer(token)
        .key(&key())
        .body("application/octet-stream", body)
        .send()
        .await
}

async fn post(daemon: &Daemon, token: &str, path: &str, body: Value) -> crate::daemon::Reply {
    daemon
        .post(&format!("{BASE}{path}"))
        .bearer(token)
        .key(&key())
        .json(&body)
        .send()
        .await
}

/// The value of `series{kind=KIND,currency="USD"}` on `/metrics` once it equals `wanted` (the
/// daemon refreshes its gauges after each reconciliation request, in the background).
async fn gauge_reaches(daemon: &Daemon, series: &str, kind: &str, wanted: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let text = daemon.get("/metrics").send().await.text();
        let value = text.lines().find_map(|line| {
            let (name, rest) = line.split_once('{')?;
            (name == series
                && rest.contains(&format!("kind=\"{kind}\""))
                && rest.contains("currency=\"USD\""))
            .then(|| line.rsplit(' ').next()?.parse::<f64>().ok())?
        });
        if value == Some(wanted) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} for {kind} USD is {value:?}, not {wanted}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn reconcile_over_http(database: Option<FreshDatabase>) {
    let provider = ProviderServer::start();
    let config = format!(
        "[fees.default]\npercent = \"2.5\"\n[payouts]\nprovider_url = \"{}\"\n",
        provider.base_url()
    );
    let setup = match &database {
        Some(database) => Setup::with_options(&config, database.options()),
        None => Setup::sqlite(&config),
    }
    .env("USER", "alice");
    let file = setup.sandbox.write(
        "days.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,50.00,USD,card,2024-03-10T11:00:00+03:00,",
            "p-3,m-3,payment,completed,30.00,USD,card,2024-03-10T12:00:00+03:00,",
            "p-4,m-1,payment,completed,40.00,USD,card,2024-03-11T10:00:00+03:00,",
            "p-5,m-4,payment,completed,25.00,USD,card,2024-03-11T11:00:00+03:00,",
        ]),
    );
    setup
        .settle(&["import", file.to_str().unwrap()])
        .assert_ok();
    setup.settle(&["run", "--date", "2024-03-10"]).assert_ok();
    setup.settle(&["run", "--date", "2024-03-11"]).assert_ok();
    let store: SharedStore = match &database {
        Some(database) => database.store().await,
        None => setup.sandbox.store().await,
    };
    let payouts_10 = store.payouts(day("2024-03-10")).await.unwrap();
    let payouts_11 = store.payouts(day("2024-03-11")).await.unwrap();
    assert_eq!((payouts_10.len(), payouts_11.len()), (3, 2));

    let viewer = setup.token("recon-viewer", "viewer");
    let operator = setup.token("recon-operator", "operator");
    let admin = setup.token("recon-admin", "admin");
    let second_admin = setup.token("recon-admin-2", "admin");
    let daemon = setup.start();

    // A statement that does not balance is refused, naming it, and nothing is kept.
    let statement = bank_statement(&payouts_10, &payouts_11);
    let mut broken = statement.clone();
    broken.closing_balance.as_mut().unwrap().amount_minor += 1;
    let problem = import(
        &daemon,
        &operator,
        "bank",
        camt053(&[broken], Camt053Version::V02).into_bytes(),
    )
    .await
    .expect_problem(422, "invalid-request");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not balance"),
        "{problem}"
    );
    // A file that is not a statement names where it fails.
    let problem = import(
        &daemon,
        &operator,
        "bank",
        b"<Document><BkToCstmrStmt>".to_vec(),
    )
    .await
    .expect_problem(422, "invalid-request");
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // A kind that does not exist is the request's fault, named.
    let problem = import(&daemon, &operator, "ledger", b"x".to_vec())
        .await
        .expect_problem(400, "invalid-request");
    assert_eq!(problem["field"], "kind", "{problem}");
    assert!(store.statements(None).await.unwrap().is_empty());

    // The statement, then the same file again under a new key: nothing added.
    let camt = camt053(std::slice::from_ref(&statement), Camt053Version::V08).into_bytes();
    let imported = import(&daemon, &operator, "bank", camt.clone())
        .await
        .expect(201);
    assert_eq!(imported["entries_imported"], 5, "{imported}");
    assert_eq!(imported["statements"][0]["outcome"], "imported");
    let again = import(&daemon, &operator, "bank", camt).await.expect(200);
    assert_eq!(again["entries_imported"], 0, "{again}");
    assert_eq!(again["statements"][0]["outcome"], "already_imported");

    // The payout report: m-2's payout short by a provider fee of 0.75.
    let mut report_entries = Vec::new();
    for p in payouts_10.iter().chain(&payouts_11) {
        let short = if p.merchant_id == "m-2" { 75 } else { 0 };
        let mut e = entry(
            p.amount_minor - short,
            "2024-03-11",
            &[&p.reference],
            &format!("po-{}", p.reference),
        );
        e.booked_at = Some("2024-03-11T09:00:00Z".parse().unwrap());
        e.status = Some("paid".into());
        report_entries.push(e);
    }
    let report = Statement {
        entries: report_entries,
        opening_balance: None,
        closing_balance: None,
        ..statement
    };
    import(
        &daemon,
        &operator,
        "payouts",
        payout_report(std::slice::from_ref(&report)).into_bytes(),
    )
    .await
    .expect(201);
    let listed = daemon
        .get(&format!("{BASE}/statements"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    // A viewer reads but cannot run; an operator runs; a second run decides nothing new.
    post(&daemon, &viewer, "/run", json!({}))
        .await
        .expect_problem(403, "forbidden");
    let ran = post(&daemon, &operator, "/run", json!({}))
        .await
        .expect(200);
    assert_eq!(ran["open_exceptions"], 5, "{ran}");
    let bank = ran["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "bank")
        .unwrap()
        .clone();
    assert_eq!(
        (bank["matches"].clone(), bank["duplicates"].clone()),
        (json!(2), json!(1))
    );
    let rerun = post(&daemon, &operator, "/run", json!({ "kind": "bank" }))
        .await
        .expect(200);
    assert_eq!(rerun["kinds"][0]["matches"], 0, "{rerun}");
    post(
        &daemon,
        &operator,
        "/run",
        json!({ "kind": "bank", "extra": 1 }),
    )
    .await
    .expect_problem(422, "invalid-request");

    // The gauges say what the queue says: four bank exceptions (the missing payout, the duplicate,
    // the fee, the unknown debit, 251.50 in all) and the short payout.
    gauge_reaches(&daemon, "settle_reconciliation_exceptions", "bank", 4.0).await;
    gauge_reaches(&daemon, "settle_reconciliation_exceptions", "payouts", 1.0).await;
    let m4_minor = payouts_11
        .iter()
        .find(|p| p.merchant_id == "m-4")
        .unwrap()
        .amount_minor;
    let m1_minor = payouts_11
        .iter()
        .find(|p| p.merchant_id == "m-1")
        .unwrap()
        .amount_minor;
    gauge_reaches(
        &daemon,
        "settle_reconciliation_exceptions_amount",
        "bank",
        (m4_minor + m1_minor + 150 + 25_000) as f64,
    )
    .await;
    let queue = daemon
        .get(&format!("{BASE}/exceptions?per_page=2"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(queue["total"], 5, "{queue}");
    assert_eq!(queue["items"].as_array().unwrap().len(), 2);
    assert!(queue["items"][0]["exception"].as_bool().unwrap());
    daemon
        .get(&format!("{BASE}/exceptions?older_than_days=-1"))
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(400, "invalid-request");

    // Confirm the short payout and the duplicate (rules' decisions to review).
    let m2 = payouts_10.iter().find(|p| p.merchant_id == "m-2").unwrap();
    let m4 = payouts_11.iter().find(|p| p.merchant_id == "m-4").unwrap();
    let decisions = daemon
        .get(&format!("{BASE}/decisions"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    let decisions = decisions["items"].as_array().unwrap().clone();
    let short = decisions
        .iter()
        .find(|d| d["kind"] == "payouts" && d["ours"][0] == m2.reference.as_str())
        .unwrap();
    assert_eq!(short["amount_minor"], -75);
    assert_eq!(short["needs_review"], true);
    let duplicate = decisions
        .iter()
        .find(|d| d["action"] == "duplicate")
        .unwrap();
    for (decision, reason) in [
        (short, "provider fee, per contract"),
        (duplicate, "bank booked it twice"),
    ] {
        let id = decision["id"].as_str().unwrap();
        let confirmed = post(
            &daemon,
            &operator,
            &format!("/decisions/{id}/confirm"),
            json!({ "reason": reason }),
        )
        .await
        .expect(201);
        assert_eq!(confirmed["decision"]["actor"], "token:recon-operator");
        // Confirming it again: it is no longer open to that.
        post(
            &daemon,
            &operator,
            &format!("/decisions/{id}/confirm"),
            json!({ "reason": reason }),
        )
        .await
        .expect_problem(409, "conflict");
    }

    // The confirmed short payout becomes a credit to m-2 through the payment service (operator);
    // a viewer may not, too much is refused, a second request finds it and adds nothing.
    let confirmed_short = format!("{}-confirmed", short["id"].as_str().unwrap());
    let adjustment_path = format!("/decisions/{confirmed_short}/adjustment");
    let credit = json!({ "amount": "0.75", "reason": "the provider's fee is ours to bear" });
    post(&daemon, &viewer, &adjustment_path, credit.clone())
        .await
        .expect_problem(403, "forbidden");
    post(
        &daemon,
        &operator,
        &adjustment_path,
        json!({ "amount": "0.76", "reason": "too much" }),
    )
    .await
    .expect_problem(422, "invalid-request");
    let recorded = post(&daemon, &operator, &adjustment_path, credit.clone())
        .await
        .expect(201);
    assert_eq!(recorded["kind"], "adjustment");
    assert_eq!(recorded["merchant_id"], "m-2");
    assert_eq!(recorded["amount_minor"], 75);
    let again = post(&daemon, &operator, &adjustment_path, credit)
        .await
        .expect(200);
    assert_eq!(again["id"], recorded["id"], "one adjustment per decision");

    // The fee is written off at once (below the threshold), replayed by its key.
    let entries = store
        .statement_entries(&EntryFilter {
            kind: StatementKind::Bank,
            booked_from: None,
            booked_to: None,
        })
        .await
        .unwrap();
    let fee = entries
        .iter()
        .find(|e| e.entry.references == ["FEE"])
        .unwrap();
    let unknown = entries
        .iter()
        .find(|e| e.entry.references == ["UNKNOWN-DEBIT"])
        .unwrap();
    let fee_key = key();
    let fee_body = json!({
        "kind": "bank", "theirs": [fee.id], "reason": "monthly fee", "category": "bank_fee"
    });
    let write_off = |token: String, key: String, body: Value| {
        let daemon = &daemon;
        async move {
            daemon
                .post(&format!("{BASE}/write-offs"))
                .bearer(&token)
                .key(&key)
                .json(&body)
                .send()
                .await
        }
    };
    let first = write_off(operator.clone(), fee_key.clone(), fee_body.clone()).await;
    let written = first.expect(201);
    assert_eq!(written["decision"]["state"], "in_force");
    assert_eq!(written["decision"]["amount_minor"], -150);
    let replay = write_off(operator.clone(), fee_key.clone(), fee_body.clone()).await;
    assert_eq!(replay.expect(201), written);
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    // The same item again under a new key: it is taken.
    write_off(operator.clone(), key(), fee_body)
        .await
        .expect_problem(409, "conflict");
    // A category that does not exist is a 422, and an unknown item a 404.
    post(
        &daemon,
        &operator,
        "/write-offs",
        json!({ "kind": "bank", "theirs": [fee.id], "reason": "x", "category": "misc" }),
    )
    .await
    .expect_problem(422, "invalid-request");
    post(
        &daemon,
        &operator,
        "/write-offs",
        json!({ "kind": "bank", "theirs": ["nope"], "reason": "x", "category": "other" }),
    )
    .await
    .expect_problem(404, "not-found");

    // The unknown debit (250.00, above 100.00) waits for a second admin.
    let waiting = post(
        &daemon,
        &admin,
        "/write-offs",
        json!({
            "kind": "bank", "theirs": [unknown.id], "reason": "untraceable",
            "category": "unrecoverable"
        }),
    )
    .await
    .expect(202);
    assert_eq!(waiting["decision"]["state"], "awaiting_approval");
    let waiting_id = waiting["decision"]["id"].as_str().unwrap().to_string();
    let pending = daemon
        .get(&format!("{BASE}/decisions?state=awaiting_approval"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(pending["items"].as_array().unwrap().len(), 1, "{pending}");
    let approve = format!("/write-offs/{waiting_id}/approve");
    post(&daemon, &operator, &approve, json!({}))
        .await
        .expect_problem(403, "forbidden");
    let refused = post(&daemon, &admin, &approve, json!({}))
        .await
        .expect_problem(403, "approval-refused");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("another admin"),
        "{refused}"
    );
    let approved = post(&daemon, &second_admin, &approve, json!({}))
        .await
        .expect(201);
    assert_eq!(approved["decision"]["action"], "approve");
    assert_eq!(approved["decision"]["actor"], "token:recon-admin-2");
    post(&daemon, &second_admin, &approve, json!({}))
        .await
        .expect_problem(409, "conflict");

    // m-4's payout: expected later by the bank.
    let expected = post(
        &daemon,
        &operator,
        "/expectations",
        json!({
            "kind": "bank", "side": "ours", "id": m4.reference,
            "expected_by": "2099-01-01", "reason": "paid late by the bank"
        }),
    )
    .await
    .expect(201);
    assert_eq!(expected["decision"]["expected_by"], "2099-01-01");
    let queue = daemon
        .get(&format!("{BASE}/exceptions"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(queue["total"], 0, "{queue}");

    // Unmatching the fee's write-off reopens it: one exception again.
    let fee_decision = written["decision"]["id"].as_str().unwrap();
    post(
        &daemon,
        &operator,
        &format!("/decisions/{fee_decision}/unmatch"),
        json!({ "reason": "" }),
    )
    .await
    .expect_problem(422, "invalid-request");
    post(
        &daemon,
        &operator,
        &format!("/decisions/{fee_decision}/unmatch"),
        json!({ "reason": "fee disputed" }),
    )
    .await
    .expect(201);
    let items = daemon
        .get(&format!("{BASE}/items?kind=bank&status=unmatched"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(items["total"], 1, "{items}");
    gauge_reaches(&daemon, "settle_reconciliation_exceptions", "bank", 1.0).await;
    gauge_reaches(&daemon, "settle_reconciliation_exceptions", "payouts", 0.0).await;
    assert_eq!(items["items"][0]["id"], fee.id.as_str());

    // The report over HTTP is the CLI's, byte for byte.
    let reply = daemon
        .get(&format!("{BASE}/report.csv?from=2024-03-01&to=2024-03-31"))
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/csv")));
    setup
        .settle(&[
            "reconcile",
            "report",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
            "--out",
            "report.csv",
        ])
        .assert_ok();
    let cli = std::fs::read(setup.sandbox.path().join("report.csv")).unwrap();
    assert_eq!(reply.body, cli);
    daemon
        .get(&format!("{BASE}/report.csv?from=2024-03-31&to=2024-03-01"))
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(400, "invalid-request");

    // Every decision is audited under the token that made it.
    let audit = store.audit_events(2_000, 0).await.unwrap();
    for (action, actor, outcome) in [
        ("reconciliation.import", "token:recon-operator", "succeeded"),
        ("reconciliation.run", "token:recon-operator", "succeeded"),
        (
            "reconciliation.confirm",
            "token:recon-operator",
            "succeeded",
        ),
        (
            "reconciliation.adjustment",
            "token:recon-operator",
            "succeeded",
        ),
        (
            "reconciliation.write_off",
            "token:recon-operator",
            "succeeded",
        ),
        (
            "reconciliation.write_off",
            "token:recon-operator",
            "refused",
        ),
        ("reconciliation.write_off", "token:recon-admin", "succeeded"),
        (
            "reconciliation.write_off_approved",
            "token:recon-admin",
            "refused",
        ),
        (
            "reconciliation.write_off_approved",
            "token:recon-admin-2",
            "succeeded",
        ),
        ("reconciliation.expect", "token:recon-operator", "succeeded"),
        (
            "reconciliation.unmatch",
            "token:recon-operator",
            "succeeded",
        ),
    ] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor == actor && e.outcome == outcome),
            "no {outcome} {action} event by {actor}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_worked_over_http_on_sqlite() {
    reconcile_over_http(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_worked_over_http_on_mongodb() {
    reconcile_over_http(Some(FreshDatabase::new())).await;
}
