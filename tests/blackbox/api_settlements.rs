//! The settlement routes of `settle serve` over real HTTP: trigger, retry, rerun (with four-eyes),
//! history, lines, payouts, export, statistics, charts and the audit trail, checked against imports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use chrono_tz::Asia::Aden;
use serde_json::{json, Value};

use crate::daemon::{write_config, Daemon, Reply, Setup};
use crate::provider_server::ProviderServer;
use crate::support::{read_export, transactions_csv};

/// The settlement API's prefix.
const API: &str = "/api/v2/finance/settlement";
/// A settled past date, and two more for ranges.
const DAY: &str = "2024-03-10";
const NEXT_DAY: &str = "2024-03-11";
const THIRD_DAY: &str = "2024-03-12";
/// The fee configuration every test uses: 2 % plus 0.10 USD (nothing fixed in SAR).
const FEE_PERCENT: i64 = 2;
const USD_FIXED_FEE_MINOR: i64 = 10;
/// The default calendar's grace after the cutoff (Asia/Aden, 24:00).
const GRACE_MINUTES: i64 = 10;
/// How long a test waits for something the daemon does in the background.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Keeps a run claimed (failpoint `sleep`) long enough for a second request to find it running.
const HOLD_RUN_MS: u64 = 5_000;
/// Injected failure right before a run completes (after its lines were saved).
const FAIL_BEFORE_COMPLETE: &str = "settlement.before_complete=error";

/// One fixture row: (merchant, kind, status, amount in minor units, currency, method, index of
/// the payment a refund or chargeback returns).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
    &'static str,
    Option<usize>,
);

/// One day's transactions. Every amount is a multiple of 100 minor units so that 2 % and 3 %
/// fees are exact.
const DAY_ROWS: &[Row] = &[
    ("m-1", "payment", "completed", 10_000, "USD", "card", None),
    ("m-1", "payment", "completed", 5_000, "USD", "card", None),
    ("m-1", "payment", "failed", 2_000, "USD", "card", None),
    ("m-1", "refund", "completed", 1_000, "USD", "card", Some(0)),
    ("m-2", "payment", "completed", 25_000, "USD", "wallet", None),
    ("m-2", "payment", "cancelled", 500, "USD", "wallet", None),
    (
        "m-2",
        "chargeback",
        "completed",
        3_000,
        "USD",
        "wallet",
        Some(4),
    ),
    ("m-3", "payment", "completed", 8_000, "SAR", "cash", None),
    ("m-3", "payment", "pending", 1_500, "SAR", "cash", None),
    ("m-4", "adjustment", "completed", -500, "USD", "other", None),
];

/// One imported transaction.
#[derive(Debug, Clone)]
struct Tx {
    reference: String,
    merchant: &'static str,
    kind: &'static str,
    status: &'static str,
    amount_minor: i64,
    currency: &'static str,
    method: &'static str,
    occurred_at: String,
    refund_of: Option<String>,
}

/// `DAY_ROWS` on `date` (Asia/Aden local times 10:00 onwards), every amount times `scale`.
fn day_transactions(date: &str, scale: i64) -> Vec<Tx> {
    DAY_ROWS
        .iter()
        .enumerate()
        .map(
            |(index, &(merchant, kind, status, amount_minor, currency, method, refund_of))| Tx {
                reference: format!("{date}-{index}"),
                merchant,
                kind,
                status,
                amount_minor: amount_minor * scale,
                currency,
                method,
                occurred_at: format!("{date}T{:02}:00:00+03:00", 10 + index),
                refund_of: refund_of.map(|payment| format!("{date}-{payment}")),
            },
        )
        .collect()
}

/// Minor units as the CSV's major-unit decimal (both currencies used have two decimals).
fn major(amount_minor: i64) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

fn csv_row(tx: &Tx) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{}",
        tx.reference,
        tx.merchant,
        tx.kind,
        tx.status,
        major(tx.amount_minor),
        tx.currency,
        tx.method,
        tx.occurred_at,
        tx.refund_of.as_deref().unwrap_or("")
    )
}

/// The configuration: scheduler off, `percent` % plus 0.10 USD per payment, then `extra`.
fn config_with_percent(percent: i64, extra: &str) -> String {
    format!(
        "[scheduler]\nenabled = false\n[fees.default]\npercent = \"{percent}\"\n\
         fixed = {{ USD = \"{}\" }}\n{extra}",
        major(USD_FIXED_FEE_MINOR)
    )
}

fn config(extra: &str) -> String {
    config_with_percent(FEE_PERCENT, extra)
}

/// A sandbox configured by `config`, with `transactions` imported by `settle import`.
fn setup_with(config: &str, transactions: &[Tx]) -> Setup {
    let setup = Setup::sqlite(config);
    import(&setup, transactions);
    setup
}

fn import(setup: &Setup, transactions: &[Tx]) {
    let rows: Vec<String> = transactions.iter().map(csv_row).collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let file = setup
        .sandbox
        .write("transactions.csv", transactions_csv(&rows));
    setup
        .settle(&["import", file.to_str().expect("utf-8 path")])
        .assert_ok();
}

/// Counts and amounts of a line or a currency's totals, as the API reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Figures {
    transaction_count: i64,
    completed_count: i64,
    failed_count: i64,
    cancelled_count: i64,
    pending_count: i64,
    gross_minor: i64,
    refunds_minor: i64,
    chargebacks_minor: i64,
    adjustments_minor: i64,
    fees_minor: i64,
    net_minor: i64,
}

impl Figures {
    fn add(&mut self, other: &Figures) {
        self.transaction_count += other.transaction_count;
        self.completed_count += other.completed_count;
        self.failed_count += other.failed_count;
        self.cancelled_count += other.cancelled_count;
        self.pending_count += other.pending_count;
        self.gross_minor += other.gross_minor;
        self.refunds_minor += other.refunds_minor;
        self.chargebacks_minor += other.chargebacks_minor;
        self.adjustments_minor += other.adjustments_minor;
        self.fees_minor += other.fees_minor;
        self.net_minor += other.net_minor;
    }

    /// From a JSON line, totals entry or summary currency (the figures are flattened into it).
    fn of_json(value: &Value) -> Figures {
        let field = |name: &str| {
            value[name]
                .as_i64()
                .unwrap_or_else(|| panic!("{name} is not an integer in {value}"))
        };
        Figures {
            transaction_count: field("transaction_count"),
            completed_count: field("completed_count"),
            failed_count: field("failed_count"),
            cancelled_count: field("cancelled_count"),
            pending_count: field("pending_count"),
            gross_minor: field("gross_minor"),
            refunds_minor: field("refunds_minor"),
            chargebacks_minor: field("chargebacks_minor"),
            adjustments_minor: field("adjustments_minor"),
            fees_minor: field("fees_minor"),
            net_minor: field("net_minor"),
        }
    }

    /// From an export row (every value a string).
    fn of_row(row: &std::collections::HashMap<String, String>) -> Figures {
        let field = |name: &str| -> i64 {
            row[name]
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not an integer in {row:?}"))
        };
        Figures {
            transaction_count: field("transaction_count"),
            completed_count: field("completed_count"),
            failed_count: field("failed_count"),
            cancelled_count: field("cancelled_count"),
            pending_count: field("pending_count"),
            gross_minor: field("gross_minor"),
            refunds_minor: field("refunds_minor"),
            chargebacks_minor: field("chargebacks_minor"),
            adjustments_minor: field("adjustments_minor"),
            fees_minor: field("fees_minor"),
            net_minor: field("net_minor"),
        }
    }

    /// completed / (completed + failed + cancelled) to 4 decimals, half away from zero.
    fn success_rate(&self) -> String {
        let decided = self.completed_count + self.failed_count + self.cancelled_count;
        if decided == 0 {
            return "0.0000".into();
        }
        let ten_thousandths = (self.completed_count * 20_000 + decided) / (2 * decided);
        format!(
            "{}.{:04}",
            ten_thousandths / 10_000,
            ten_thousandths % 10_000
        )
    }
}

/// The fee of one completed payment under `percent` % plus the USD fixed part (exact by design).
fn payment_fee_minor(tx: &Tx, percent: i64) -> i64 {
    let hundredths = tx.amount_minor * percent;
    assert_eq!(
        hundredths % 100,
        0,
        "fixture amounts keep fees exact: {tx:?}"
    );
    let fixed = if tx.currency == "USD" {
        USD_FIXED_FEE_MINOR
    } else {
        0
    };
    hundredths / 100 + fixed
}

/// What one transaction adds to its merchant's line.
fn figures_of(tx: &Tx, percent: i64) -> Figures {
    let mut figures = Figures {
        transaction_count: 1,
        ..Figures::default()
    };
    match tx.status {
        "completed" => figures.completed_count = 1,
        "failed" => figures.failed_count = 1,
        "cancelled" => figures.cancelled_count = 1,
        "pending" => figures.pending_count = 1,
        other => panic!("unknown status {other}"),
    }
    if tx.status == "completed" {
        match tx.kind {
            "payment" => {
                figures.gross_minor = tx.amount_minor;
                figures.fees_minor = payment_fee_minor(tx, percent);
            }
            // Refunds return no fee: refund_returns_percent is off by default.
            "refund" => figures.refunds_minor = tx.amount_minor,
            "chargeback" => figures.chargebacks_minor = tx.amount_minor,
            "adjustment" => figures.adjustments_minor = tx.amount_minor,
            other => panic!("unknown kind {other}"),
        }
    }
    figures.net_minor = figures.gross_minor - figures.refunds_minor - figures.chargebacks_minor
        + figures.adjustments_minor
        - figures.fees_minor;
    figures
}

/// The lines a settlement of `transactions` must have, by (merchant, currency).
fn expected_lines(transactions: &[Tx], percent: i64) -> BTreeMap<(String, String), Figures> {
    let mut lines: BTreeMap<(String, String), Figures> = BTreeMap::new();
    for tx in transactions {
        lines
            .entry((tx.merchant.to_string(), tx.currency.to_string()))
            .or_default()
            .add(&figures_of(tx, percent));
    }
    lines
}

/// The per-currency totals a settlement of `transactions` must have.
fn expected_totals(transactions: &[Tx], percent: i64) -> BTreeMap<String, Figures> {
    let mut totals: BTreeMap<String, Figures> = BTreeMap::new();
    for ((_, currency), figures) in expected_lines(transactions, percent) {
        totals.entry(currency).or_default().add(&figures);
    }
    totals
}

/// A settlement's `totals`, by currency.
fn totals_of(settlement: &Value) -> BTreeMap<String, Figures> {
    settlement["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .map(|total| (text(&total["currency"]), Figures::of_json(total)))
        .collect()
}

/// Lines from the API, by (merchant, currency).
fn lines_of(items: &[Value]) -> BTreeMap<(String, String), Figures> {
    items
        .iter()
        .map(|line| {
            (
                (text(&line["merchant_id"]), text(&line["currency"])),
                Figures::of_json(line),
            )
        })
        .collect()
}

#[track_caller]
fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
        .to_string()
}

#[track_caller]
fn items(body: &Value) -> Vec<Value> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .clone()
}

/// The merchant ids of a list of lines, in order.
fn merchants(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| text(&l["merchant_id"])).collect()
}

fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// POST `path` (under the settlement API) as `token` with a new Idempotency-Key.
async fn post(daemon: &Daemon, token: &str, path: &str) -> Reply {
    daemon
        .post(&format!("{API}{path}"))
        .bearer(token)
        .key(&fresh_key())
        .send()
        .await
}

/// GET `path` (under the settlement API) as `token`.
async fn get(daemon: &Daemon, token: &str, path: &str) -> Reply {
    daemon
        .get(&format!("{API}{path}"))
        .bearer(token)
        .send()
        .await
}

async fn trigger(daemon: &Daemon, token: &str, date: &str) -> Reply {
    post(daemon, token, &format!("/trigger/{date}")).await
}

/// POST a rerun of `date` with `body`, under a new key.
async fn rerun(daemon: &Daemon, token: &str, date: &str, body: &Value) -> Reply {
    daemon
        .post(&format!("{API}/rerun/{date}"))
        .bearer(token)
        .key(&fresh_key())
        .json(body)
        .send()
        .await
}

/// Triggers `date`, checks the 202 and waits for the run to complete: the settlement.
async fn settle(daemon: &Daemon, token: &str, date: &str) -> Value {
    let accepted = trigger(daemon, token, date).await.expect(202);
    assert_eq!(accepted["settlement"]["settlement_date"], date);
    daemon.wait_for_status(token, date, &["completed"]).await["settlement"].clone()
}

/// The revisions of `date`, oldest first.
async fn revisions(daemon: &Daemon, token: &str, date: &str) -> Vec<Value> {
    items(
        &get(daemon, token, &format!("/{date}/revisions"))
            .await
            .expect(200),
    )
}

/// Every audit event, newest first, read page by page.
async fn all_audit_events(daemon: &Daemon, token: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for page in 1.. {
        let body = daemon
            .get(&format!("/api/v2/finance/audit?page={page}&per_page=100"))
            .bearer(token)
            .send()
            .await
            .expect(200);
        events.extend(items(&body));
        if body["has_more"] != true {
            break;
        }
    }
    events
}

/// Polls the audit trail until an event matches (a run audits its outcome after completing).
async fn wait_for_audit(
    daemon: &Daemon,
    token: &str,
    wanted: impl Fn(&Value) -> bool,
    what: &str,
) -> Value {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let events = all_audit_events(daemon, token).await;
        if let Some(found) = events.iter().find(|event| wanted(event)) {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit event {what} in:\n{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest business date that may be settled now: the Asia/Aden date of (now − grace),
/// minus one day (the cutoff is 24:00).
fn latest_closed_date() -> NaiveDate {
    (Utc::now() - chrono::Duration::minutes(GRACE_MINUTES))
        .with_timezone(&Aden)
        .date_naive()
        .pred_opt()
        .expect("a previous day")
}

fn today_in_aden() -> NaiveDate {
    Utc::now().with_timezone(&Aden).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_settles_the_date_with_the_totals_of_its_transactions() {
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();

    let reply = trigger(&daemon, &operator, DAY).await;
    let accepted = reply.expect(202);
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("{API}/{DAY}").as_str())
    );
    assert_eq!(accepted["status_url"], format!("{API}/{DAY}"));
    assert_eq!(accepted["settlement"]["revision"], 1);
    assert_eq!(accepted["settlement"]["requested_by"], "token:ops-ana");

    let settlement =
        daemon.wait_for_status(&operator, DAY, &["completed"]).await["settlement"].clone();
    assert_eq!(settlement["revision"], 1);
    assert_eq!(settlement["trigger"], "manual");
    assert_eq!(
        totals_of(&settlement),
        expected_totals(&transactions, FEE_PERCENT)
    );
    assert_eq!(revisions(&daemon, &operator, DAY).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_still_open_in_aden_is_refused_and_nothing_is_settled() {
    let today = today_in_aden();
    let tomorrow = today.succ_opt().expect("tomorrow");
    let mut transactions = day_transactions(&today.to_string(), 1);
    transactions.truncate(2);
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();

    for open in [today, tomorrow] {
        let problem = trigger(&daemon, &operator, &open.to_string())
            .await
            .expect_problem(409, "date-still-open");
        assert!(
            text(&problem["detail"]).contains(&open.to_string()),
            "{problem}"
        );
        get(&daemon, &operator, &format!("/{open}"))
            .await
            .expect_problem(404, "not-found");
        get(&daemon, &operator, &format!("/{open}/revisions"))
            .await
            .expect_problem(404, "not-found");
    }
    let history = get(&daemon, &operator, "/history").await.expect(200);
    assert_eq!(items(&history), Vec::<Value>::new(), "nothing was settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_date_in_the_path_is_a_problem() {
    let setup = Setup::sqlite(&config(""));
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    for bad in [
        "2024-13-01",
        "2024-02-30",
        "2024-3-10",
        "yesterday",
        "10-03-2024",
    ] {
        let problem = trigger(&daemon, &operator, bad)
            .await
            .expect_problem(400, "invalid-request");
        assert!(text(&problem["detail"]).contains(bad), "{problem}");
        for path in [format!("/{bad}"), format!("/{bad}/lines")] {
            get(&daemon, &operator, &path)
                .await
                .expect_problem(400, "invalid-request");
        }
    }
    let history = get(&daemon, &operator, "/history").await.expect(200);
    assert!(items(&history).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_without_a_date_settles_the_latest_closed_day_in_aden() {
    // Computed before and after the request: the answer is one of them even across midnight.
    let closed_before = latest_closed_date();
    let transactions = day_transactions(&closed_before.to_string(), 1);
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();

    let accepted = post(&daemon, &operator, "/trigger").await.expect(202);
    let closed_after = latest_closed_date();
    let date = text(&accepted["settlement"]["settlement_date"]);
    assert!(
        [closed_before.to_string(), closed_after.to_string()].contains(&date),
        "settled {date}, expected {closed_before} (yesterday in Asia/Aden)"
    );
    let settlement = daemon
        .wait_for_status(&operator, &date, &["completed"])
        .await["settlement"]
        .clone();
    if date == closed_before.to_string() {
        assert_eq!(
            totals_of(&settlement),
            expected_totals(&transactions, FEE_PERCENT)
        );
    }
    let today = today_in_aden().to_string();
    get(&daemon, &operator, &format!("/{today}"))
        .await
        .expect_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_trigger_replays_with_its_key_and_is_refused_with_another() {
    let setup = setup_with(&config(""), &day_transactions(DAY, 1));
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    let key = fresh_key();
    let path = format!("{API}/trigger/{DAY}");

    let first = daemon.post(&path).bearer(&operator).key(&key).send().await;
    let first_body = first.expect(202);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = daemon.post(&path).bearer(&operator).key(&key).send().await;
    assert_eq!(again.expect(202), first_body, "the same answer");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));

    daemon.wait_for_status(&operator, DAY, &["completed"]).await;
    let problem = trigger(&daemon, &operator, DAY)
        .await
        .expect_problem(409, "already-settled");
    assert!(text(&problem["detail"]).contains(DAY), "{problem}");
    let later = daemon.post(&path).bearer(&operator).key(&key).send().await;
    assert_eq!(
        later.expect(202),
        first_body,
        "still the first answer once settled"
    );
    assert_eq!(later.header("idempotent-replayed").as_deref(), Some("true"));

    let revisions = revisions(&daemon, &operator, DAY).await;
    assert_eq!(
        revisions.len(),
        1,
        "never a second settlement: {revisions:?}"
    );
    assert_eq!(revisions[0]["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_while_the_date_runs_is_refused_as_already_running() {
    let setup = setup_with(&config(""), &day_transactions(DAY, 1));
    let operator = setup.token("ops-ana", "operator");
    let hold = format!("settlement.after_claim=sleep({HOLD_RUN_MS})");
    let daemon = setup.start_with_env(&[("SETTLE_FAILPOINTS", &hold)]);

    trigger(&daemon, &operator, DAY).await.expect(202);
    let running = trigger(&daemon, &operator, DAY).await;
    running.expect_problem(409, "already-running");
    let retry_after: i64 = running
        .header("retry-after")
        .expect("Retry-After on already-running")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "{retry_after}");

    daemon.wait_for_status(&operator, DAY, &["completed"]).await;
    assert_eq!(revisions(&daemon, &operator, DAY).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_an_idempotency_key_is_refused() {
    let setup = setup_with(&config(""), &day_transactions(DAY, 1));
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    for path in [
        format!("{API}/trigger/{DAY}"),
        format!("{API}/trigger"),
        format!("{API}/retry/{DAY}"),
    ] {
        daemon
            .post(&path)
            .bearer(&operator)
            .send()
            .await
            .expect_problem(400, "idempotency-key-invalid");
    }
    daemon
        .post(&format!("{API}/rerun/{DAY}"))
        .bearer(&operator)
        .json(&json!({ "reason": "no key" }))
        .send()
        .await
        .expect_problem(400, "idempotency-key-invalid");
    daemon
        .post(&format!("{API}/trigger/{DAY}"))
        .bearer(&operator)
        .key("")
        .send()
        .await
        .expect_problem(400, "idempotency-key-invalid");
    get(&daemon, &operator, &format!("/{DAY}"))
        .await
        .expect_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_completes_a_failed_run_and_a_completed_date_cannot_be_retried() {
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");

    let mut failing = setup.start_with_env(&[("SETTLE_FAILPOINTS", FAIL_BEFORE_COMPLETE)]);
    trigger(&failing, &operator, DAY).await.expect(202);
    let failed = failing.wait_for_status(&operator, DAY, &["failed"]).await["settlement"].clone();
    assert!(
        text(&failed["error"]).contains("settlement.before_complete"),
        "{failed}"
    );
    trigger(&failing, &operator, DAY)
        .await
        .expect_problem(409, "revision-failed");
    let stopped = failing.terminate(WAIT_LIMIT);
    assert!(stopped.success(), "{stopped:?}\n{}", failing.output());

    let daemon = setup.start();
    post(&daemon, &operator, &format!("/retry/{NEXT_DAY}"))
        .await
        .expect_problem(409, "nothing-to-do");
    let accepted = post(&daemon, &operator, &format!("/retry/{DAY}"))
        .await
        .expect(202);
    assert_eq!(accepted["settlement"]["revision"], 1);
    let settlement =
        daemon.wait_for_status(&operator, DAY, &["completed"]).await["settlement"].clone();
    assert_eq!(settlement["revision"], 1, "the failed revision was resumed");
    assert_eq!(settlement["attempts"], 2);
    assert_eq!(
        totals_of(&settlement),
        expected_totals(&transactions, FEE_PERCENT)
    );

    post(&daemon, &operator, &format!("/retry/{DAY}"))
        .await
        .expect_problem(409, "already-settled");
    assert_eq!(revisions(&daemon, &operator, DAY).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_needs_a_reason_and_keeps_the_old_revision_readable() {
    const NEW_PERCENT: i64 = 3;
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");
    let mut daemon = setup.start();
    settle(&daemon, &operator, DAY).await;
    rerun(
        &daemon,
        &operator,
        NEXT_DAY,
        &json!({ "reason": "never run" }),
    )
    .await
    .expect_problem(409, "nothing-to-do");
    let stopped = daemon.terminate(WAIT_LIMIT);
    assert!(stopped.success(), "{stopped:?}");

    // New fees, applied by the rerun on request.
    write_config(&setup.sandbox, &config_with_percent(NEW_PERCENT, ""));
    let daemon = setup.start();
    for body in [
        json!({}),
        json!({ "reason": "   " }),
        json!({ "reason": 7 }),
    ] {
        rerun(&daemon, &operator, DAY, &body)
            .await
            .expect_problem(422, "invalid-request");
    }
    assert_eq!(revisions(&daemon, &operator, DAY).await.len(), 1);

    let reason = "fee schedule corrected to 3 %";
    let accepted = rerun(
        &daemon,
        &operator,
        DAY,
        &json!({ "reason": reason, "apply_current_fees": true }),
    )
    .await
    .expect(202);
    assert_eq!(accepted["settlement"]["revision"], 2);
    let latest = daemon.wait_for_status(&operator, DAY, &["completed"]).await["settlement"].clone();
    assert_eq!(
        (latest["revision"].clone(), text(&latest["reason"])),
        (json!(2), reason.to_string())
    );
    assert_eq!(
        totals_of(&latest),
        expected_totals(&transactions, NEW_PERCENT)
    );

    let listed = revisions(&daemon, &operator, DAY).await;
    let numbers: Vec<&Value> = listed.iter().map(|r| &r["revision"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2)]);
    assert!(
        listed.iter().all(|r| r["status"] == "completed"),
        "{listed:?}"
    );

    let old = get(&daemon, &operator, &format!("/{DAY}?revision=1"))
        .await
        .expect(200)["settlement"]
        .clone();
    assert_eq!(old["revision"], 1);
    assert_eq!(old["reason"], Value::Null);
    assert_eq!(
        totals_of(&old),
        expected_totals(&transactions, FEE_PERCENT),
        "revision 1 keeps its own fees"
    );
    let all = get(&daemon, &operator, "/history?all_revisions=true")
        .await
        .expect(200);
    assert_eq!(items(&all).len(), 2);
    let latest_only = get(&daemon, &operator, "/history").await.expect(200);
    assert_eq!(items(&latest_only).len(), 1);
    assert_eq!(items(&latest_only)[0]["revision"], 2);

    get(&daemon, &operator, &format!("/{DAY}?revision=3"))
        .await
        .expect_problem(404, "not-found");
    get(&daemon, &operator, &format!("/{DAY}?revision=two"))
        .await
        .expect_problem(400, "invalid-request");
    get(&daemon, &operator, &format!("/{DAY}/lines?revision=9"))
        .await
        .expect_problem(404, "not-found");
    for unknown in [format!("/{THIRD_DAY}"), format!("/{THIRD_DAY}/revisions")] {
        get(&daemon, &operator, &unknown)
            .await
            .expect_problem(404, "not-found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_rerun_runs_only_once_another_operator_approves() {
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(
        &config("[server]\nrequire_rerun_approval = true\n"),
        &transactions,
    );
    let alice = setup.token("alice", "operator");
    let bob = setup.token("bob", "operator");
    let vera = setup.token("vera", "viewer");
    let daemon = setup.start();
    settle(&daemon, &alice, DAY).await;

    let reason = "chargeback file arrived late";
    let requested = rerun(&daemon, &alice, DAY, &json!({ "reason": reason }))
        .await
        .expect(202);
    let request = &requested["rerun_request"];
    let id = text(&request["id"]);
    assert_eq!(request["status"], "pending");
    assert_eq!(request["requested_by"], "token:alice");
    assert_eq!(request["settlement_date"], DAY);
    assert_eq!(
        requested["approve_url"],
        format!("{API}/rerun-requests/{id}/approve")
    );
    assert_eq!(
        revisions(&daemon, &alice, DAY).await.len(),
        1,
        "nothing reruns before approval"
    );
    let pending = get(&daemon, &vera, "/rerun-requests?status=pending")
        .await
        .expect(200);
    assert_eq!(items(&pending).len(), 1);
    assert_eq!(items(&pending)[0]["id"], id.as_str());

    let approve = format!("/rerun-requests/{id}/approve");
    post(&daemon, &alice, &approve)
        .await
        .expect_problem(403, "approval-refused");
    post(&daemon, &vera, &approve)
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(revisions(&daemon, &alice, DAY).await.len(), 1);

    let approved = post(&daemon, &bob, &approve).await.expect(202);
    assert_eq!(approved["settlement"]["revision"], 2);
    let latest = daemon.wait_for_status(&bob, DAY, &["completed"]).await["settlement"].clone();
    assert_eq!(latest["revision"], 2);
    assert_eq!(
        latest["reason"],
        format!("{reason} (requested by token:alice, approved by token:bob)")
    );
    assert_eq!(
        totals_of(&latest),
        expected_totals(&transactions, FEE_PERCENT)
    );
    post(&daemon, &bob, &approve)
        .await
        .expect_problem(409, "conflict");

    // The reject path: nothing reruns.
    let second = rerun(
        &daemon,
        &alice,
        DAY,
        &json!({ "reason": "second thoughts" }),
    )
    .await
    .expect(202);
    let second_id = text(&second["rerun_request"]["id"]);
    let rejected = post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{second_id}/reject"),
    )
    .await
    .expect(200);
    assert_eq!(rejected["rerun_request"]["status"], "rejected");
    assert_eq!(rejected["rerun_request"]["decided_by"], "token:bob");
    assert_eq!(revisions(&daemon, &alice, DAY).await.len(), 2);
    post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{second_id}/approve"),
    )
    .await
    .expect_problem(409, "conflict");

    let listed = items(&get(&daemon, &vera, "/rerun-requests").await.expect(200));
    let statuses: BTreeMap<String, (String, String)> = listed
        .iter()
        .map(|r| (text(&r["id"]), (text(&r["status"]), text(&r["decided_by"]))))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            (id.clone(), ("approved".into(), "token:bob".into())),
            (second_id.clone(), ("rejected".into(), "token:bob".into())),
        ])
    );
    assert!(items(
        &get(&daemon, &vera, "/rerun-requests?status=pending")
            .await
            .expect(200)
    )
    .is_empty());
    get(&daemon, &vera, "/rerun-requests?status=maybe")
        .await
        .expect_problem(400, "invalid-request");
    post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{}/approve", fresh_key()),
    )
    .await
    .expect_problem(404, "not-found");
    post(&daemon, &bob, "/rerun-requests/not-a-uuid/approve")
        .await
        .expect_problem(400, "invalid-request");

    let events = all_audit_events(&daemon, &vera).await;
    let audited = |action: &str, actor: &str, request_id: &str| {
        events.iter().any(|e| {
            e["action"] == action
                && e["actor"] == actor
                && e["detail"]["request_id"] == request_id
                && e["subject"] == format!("settlement_date={DAY}")
        })
    };
    assert!(
        audited("settlement.rerun_requested", "token:alice", &id),
        "{events:?}"
    );
    assert!(
        audited("settlement.rerun_approved", "token:bob", &id),
        "{events:?}"
    );
    assert!(
        audited("settlement.rerun_requested", "token:alice", &second_id),
        "{events:?}"
    );
    assert!(
        audited("settlement.rerun_rejected", "token:bob", &second_id),
        "{events:?}"
    );
}

/// The rerun requests, by id.
async fn rerun_requests_by_id(daemon: &Daemon, token: &str) -> BTreeMap<String, Value> {
    items(&get(daemon, token, "/rerun-requests").await.expect(200))
        .into_iter()
        .map(|request| (text(&request["id"]), request))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_whose_run_cannot_be_claimed_leaves_the_request_pending() {
    let setup = setup_with(
        &config("[server]\nrequire_rerun_approval = true\n"),
        &day_transactions(DAY, 1),
    );
    let alice = setup.token("alice", "operator");
    let bob = setup.token("bob", "operator");
    let hold = format!("settlement.after_claim=sleep({HOLD_RUN_MS})");
    let daemon = setup.start_with_env(&[("SETTLE_FAILPOINTS", &hold)]);
    // Revision 1 is claimed and held running while its rerun is asked for and approved.
    trigger(&daemon, &alice, DAY).await.expect(202);
    let requested = rerun(&daemon, &alice, DAY, &json!({ "reason": "late refunds" }))
        .await
        .expect(202);
    assert_eq!(requested["rerun_request"]["settlement_revision"], 1);
    let id = text(&requested["rerun_request"]["id"]);
    let approve = format!("/rerun-requests/{id}/approve");

    let refused = post(&daemon, &bob, &approve).await;
    let problem = refused.expect_problem(409, "already-running");
    assert!(refused.header("retry-after").is_some(), "{problem}");
    let detail = text(&problem["detail"]);
    assert!(
        detail.contains(&id) && detail.contains("stays pending"),
        "{detail}"
    );

    // Nothing was approved that did not run: the request is pending, undecided, and says why.
    let pending = &rerun_requests_by_id(&daemon, &bob).await[&id];
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["decided_by"], Value::Null, "{pending}");
    assert_eq!(pending["run_revision"], Value::Null, "{pending}");
    assert!(
        text(&pending["last_refusal"]).contains("already running"),
        "{pending}"
    );
    assert_eq!(revisions(&daemon, &bob, DAY).await.len(), 1);

    // It is still decidable: once revision 1 completed, the same request is approved and runs.
    daemon.wait_for_status(&bob, DAY, &["completed"]).await;
    let approved = post(&daemon, &bob, &approve).await.expect(202);
    assert_eq!(approved["settlement"]["revision"], 2);
    assert_eq!(approved["rerun_request"]["status"], "approved");
    assert_eq!(approved["rerun_request"]["decided_by"], "token:bob");
    assert_eq!(approved["rerun_request"]["run_revision"], 2);
    let latest = daemon.wait_for_status(&bob, DAY, &["completed"]).await;
    assert_eq!(latest["settlement"]["revision"], 2);
    let events = all_audit_events(&daemon, &bob).await;
    for outcome in ["refused", "succeeded"] {
        assert!(
            events
                .iter()
                .any(|e| e["action"] == "settlement.rerun_approved"
                    && e["outcome"] == outcome
                    && e["detail"]["request_id"] == id.as_str()),
            "{outcome}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_request_made_before_the_date_moved_on_is_refused_as_stale() {
    let setup = setup_with(
        &config("[server]\nrequire_rerun_approval = true\n"),
        &day_transactions(DAY, 1),
    );
    let alice = setup.token("alice", "operator");
    let bob = setup.token("bob", "operator");
    let daemon = setup.start();
    settle(&daemon, &alice, DAY).await;
    let first = rerun(&daemon, &alice, DAY, &json!({ "reason": "late refunds" }))
        .await
        .expect(202);
    let second = rerun(&daemon, &alice, DAY, &json!({ "reason": "new fees" }))
        .await
        .expect(202);
    assert_eq!(second["rerun_request"]["settlement_revision"], 1);
    let (first_id, second_id) = (
        text(&first["rerun_request"]["id"]),
        text(&second["rerun_request"]["id"]),
    );
    post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{first_id}/approve"),
    )
    .await
    .expect(202);
    let latest = daemon.wait_for_status(&bob, DAY, &["completed"]).await;
    assert_eq!(latest["settlement"]["revision"], 2);

    // Made against revision 1; the date is at revision 2 now.
    let problem = post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{second_id}/approve"),
    )
    .await
    .expect_problem(409, "revision-moved");
    let detail = text(&problem["detail"]);
    assert!(
        detail.contains("stale")
            && detail.contains("revision 1")
            && detail.contains("revision 2")
            && detail.contains("reject"),
        "{detail}"
    );
    assert_eq!(
        revisions(&daemon, &bob, DAY).await.len(),
        2,
        "nothing reran on top of revision 2"
    );
    assert_eq!(
        rerun_requests_by_id(&daemon, &bob).await[&second_id]["status"],
        "pending"
    );

    // The stale request is closed by rejecting it (here its requester withdraws it).
    let rejected = post(
        &daemon,
        &alice,
        &format!("/rerun-requests/{second_id}/reject"),
    )
    .await
    .expect(200);
    assert_eq!(rejected["rerun_request"]["status"], "rejected");
    assert_eq!(rejected["rerun_request"]["decided_by"], "token:alice");
    post(
        &daemon,
        &bob,
        &format!("/rerun-requests/{second_id}/approve"),
    )
    .await
    .expect_problem(409, "conflict");
    assert_eq!(revisions(&daemon, &bob, DAY).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_and_filters_by_status_and_date_range() {
    let mut transactions = day_transactions(DAY, 1);
    transactions.extend(day_transactions(NEXT_DAY, 2));
    transactions.extend(day_transactions(THIRD_DAY, 3));
    let setup = setup_with(&config(""), &transactions);
    let operator = setup.token("ops-ana", "operator");
    let mut failing = setup.start_with_env(&[("SETTLE_FAILPOINTS", FAIL_BEFORE_COMPLETE)]);
    trigger(&failing, &operator, THIRD_DAY).await.expect(202);
    failing
        .wait_for_status(&operator, THIRD_DAY, &["failed"])
        .await;
    failing.terminate(WAIT_LIMIT);
    let daemon = setup.start();
    settle(&daemon, &operator, DAY).await;
    settle(&daemon, &operator, NEXT_DAY).await;

    let dates = |body: &Value| -> Vec<String> {
        items(body)
            .iter()
            .map(|s| text(&s["settlement_date"]))
            .collect()
    };
    let first = get(&daemon, &operator, "/history?per_page=2")
        .await
        .expect(200);
    assert_eq!(dates(&first), [THIRD_DAY, NEXT_DAY], "newest first");
    assert_eq!(
        (first["page"].clone(), first["per_page"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(first["has_more"], true);
    let second = get(&daemon, &operator, "/history?per_page=2&page=2")
        .await
        .expect(200);
    assert_eq!(dates(&second), [DAY]);
    assert_eq!(second["has_more"], false);
    let exact = get(&daemon, &operator, "/history?per_page=3")
        .await
        .expect(200);
    assert_eq!(exact["has_more"], false, "three of three: nothing more");

    let completed = get(&daemon, &operator, "/history?status=completed")
        .await
        .expect(200);
    assert_eq!(dates(&completed), [NEXT_DAY, DAY]);
    let failed = get(&daemon, &operator, "/history?status=failed")
        .await
        .expect(200);
    assert_eq!(dates(&failed), [THIRD_DAY]);
    assert_eq!(items(&failed)[0]["status"], "failed");
    let from = get(&daemon, &operator, &format!("/history?from={NEXT_DAY}"))
        .await
        .expect(200);
    assert_eq!(dates(&from), [THIRD_DAY, NEXT_DAY]);
    let to = get(&daemon, &operator, &format!("/history?to={NEXT_DAY}"))
        .await
        .expect(200);
    assert_eq!(dates(&to), [NEXT_DAY, DAY]);
    let one_day = get(
        &daemon,
        &operator,
        &format!("/history?from={NEXT_DAY}&to={NEXT_DAY}&status=completed"),
    )
    .await
    .expect(200);
    assert_eq!(dates(&one_day), [NEXT_DAY]);
    assert_eq!(
        totals_of(&items(&one_day)[0]),
        expected_totals(&day_transactions(NEXT_DAY, 2), FEE_PERCENT)
    );

    for bad in [
        "status=done",
        "from=2024-3-11",
        "to=tomorrow",
        "page=0",
        "per_page=0",
        "per_page=501",
        "page=two",
        "per_page=-1",
        "all_revisions=perhaps",
    ] {
        let reply = get(&daemon, &operator, &format!("/history?{bad}")).await;
        assert!(
            [400, 422].contains(&reply.status),
            "{bad}: {} {}",
            reply.status,
            reply.text()
        );
        reply.expect_problem(reply.status, "invalid-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_paged_sorted_and_add_up_to_the_totals() {
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(&config(""), &transactions);
    let viewer = setup.token("finance-viewer", "viewer");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    let settlement = settle(&daemon, &operator, DAY).await;

    let all = get(&daemon, &viewer, &format!("/{DAY}/lines"))
        .await
        .expect(200);
    let expected = expected_lines(&transactions, FEE_PERCENT);
    assert_eq!(lines_of(&items(&all)), expected);
    assert_eq!(all["total"], expected.len());
    assert_eq!(
        (all["settlement_date"].clone(), all["revision"].clone()),
        (json!(DAY), json!(1))
    );
    let by_merchant: Vec<String> = expected.keys().map(|(m, _)| m.clone()).collect();
    assert_eq!(
        merchants(&items(&all)),
        by_merchant,
        "merchant_id ascending by default"
    );

    // The lines add up to the settlement's totals.
    let mut summed: BTreeMap<String, Figures> = BTreeMap::new();
    for ((_, currency), figures) in lines_of(&items(&all)) {
        summed.entry(currency).or_default().add(&figures);
    }
    assert_eq!(summed, totals_of(&settlement));

    // Pages of 3: the first three merchants, then the rest.
    let page_size = 3;
    let first = get(
        &daemon,
        &viewer,
        &format!("/{DAY}/lines?per_page={page_size}"),
    )
    .await
    .expect(200);
    let second = get(
        &daemon,
        &viewer,
        &format!("/{DAY}/lines?per_page={page_size}&page=2"),
    )
    .await
    .expect(200);
    assert_eq!(merchants(&items(&first)), by_merchant[..page_size]);
    assert_eq!(merchants(&items(&second)), by_merchant[page_size..]);
    assert_eq!(second["total"], expected.len());
    let beyond = get(
        &daemon,
        &viewer,
        &format!("/{DAY}/lines?per_page={page_size}&page=9"),
    )
    .await
    .expect(200);
    assert!(items(&beyond).is_empty());

    // Every sort key, both orders, against the expected lines sorted the same way.
    type Key = fn(&Figures) -> i64;
    let keys: [(&str, Key); 4] = [
        ("net_minor", |f| f.net_minor),
        ("gross_minor", |f| f.gross_minor),
        ("fees_minor", |f| f.fees_minor),
        ("transaction_count", |f| f.transaction_count),
    ];
    for (sort, key) in keys {
        let values: BTreeSet<i64> = expected.values().map(key).collect();
        assert_eq!(
            values.len(),
            expected.len(),
            "the fixture has no ties on {sort}"
        );
        let mut ascending: Vec<(&(String, String), &Figures)> = expected.iter().collect();
        ascending.sort_by_key(|(_, figures)| key(figures));
        let ascending: Vec<String> = ascending.iter().map(|((m, _), _)| m.clone()).collect();
        let descending: Vec<String> = ascending.iter().rev().cloned().collect();
        for (order, wanted) in [("asc", &ascending), ("desc", &descending)] {
            let body = get(
                &daemon,
                &viewer,
                &format!("/{DAY}/lines?sort={sort}&order={order}"),
            )
            .await
            .expect(200);
            assert_eq!(
                &merchants(&items(&body)),
                wanted,
                "sort={sort}&order={order}"
            );
        }
    }
    let descending_ids = get(
        &daemon,
        &viewer,
        &format!("/{DAY}/lines?sort=merchant_id&order=desc"),
    )
    .await
    .expect(200);
    let reversed: Vec<String> = by_merchant.iter().rev().cloned().collect();
    assert_eq!(merchants(&items(&descending_ids)), reversed);
    let filtered = get(&daemon, &viewer, &format!("/{DAY}/lines?q=m-2"))
        .await
        .expect(200);
    assert_eq!(merchants(&items(&filtered)), ["m-2"]);

    for bad in [
        "sort=amount",
        "order=sideways",
        "per_page=0",
        "page=0",
        "page=two",
        "per_page=-1",
    ] {
        let problem = get(&daemon, &viewer, &format!("/{DAY}/lines?{bad}"))
            .await
            .expect_problem(400, "invalid-request");
        assert!(!text(&problem["detail"]).is_empty(), "{problem}");
    }
    get(&daemon, &viewer, &format!("/{NEXT_DAY}/lines"))
        .await
        .expect_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_list_what_the_provider_ledger_holds() {
    let provider = ProviderServer::start();
    let fast = "max_retries = 2\nbase_delay_ms = 10\nmax_delay_ms = 50\nattempt_timeout_ms = 2000\ndeadline_ms = 10000\n";
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(
        &config(&format!(
            "[payouts]\nprovider_url = \"{}\"\n[retry.payment]\n{fast}",
            provider.base_url()
        )),
        &transactions,
    );
    let viewer = setup.token("finance-viewer", "viewer");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    settle(&daemon, &operator, DAY).await;

    // One payout per merchant and currency with a positive net; a negative net is carried.
    let owed: BTreeMap<String, i64> = expected_lines(&transactions, FEE_PERCENT)
        .into_iter()
        .filter(|(_, figures)| figures.net_minor > 0)
        .map(|((merchant, currency), figures)| {
            (format!("{DAY}.{currency}.r1.{merchant}"), figures.net_minor)
        })
        .collect();
    let body = get(&daemon, &viewer, &format!("/{DAY}/payouts"))
        .await
        .expect(200);
    assert_eq!(body["settlement_date"], DAY);
    let listed: BTreeMap<String, i64> = items(&body)
        .iter()
        .map(|p| {
            (
                text(&p["reference"]),
                p["amount_minor"].as_i64().expect("amount"),
            )
        })
        .collect();
    let ledger: BTreeMap<String, i64> = provider
        .ledger()
        .iter()
        .map(|entry| (entry.reference.clone(), entry.amount_minor))
        .collect();
    assert_eq!(listed, owed);
    assert_eq!(ledger, owed, "the provider paid what the API lists");
    for payout in items(&body) {
        assert_eq!(payout["status"], "sent", "{payout}");
        let provider_id = text(&payout["provider_payout_id"]);
        assert!(
            provider.ledger().iter().any(|e| e.id == provider_id),
            "{provider_id} is the provider's id"
        );
    }
    let none = get(&daemon, &viewer, &format!("/{NEXT_DAY}/payouts"))
        .await
        .expect(200);
    assert!(items(&none).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_csv_has_one_row_per_line() {
    let transactions = day_transactions(DAY, 1);
    let setup = setup_with(&config(""), &transactions);
    let viewer = setup.token("finance-viewer", "viewer");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    settle(&daemon, &operator, DAY).await;

    let reply = get(&daemon, &viewer, &format!("/{DAY}/export.csv")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert_eq!(
        reply.header("content-disposition").as_deref(),
        Some(format!("attachment; filename=\"settlement-{DAY}-r1.csv\"").as_str())
    );
    let text_body = reply.text();
    assert!(!text_body.starts_with('\u{feff}'), "no BOM unless asked");
    let rows = read_export(&text_body);
    let lines = items(
        &get(&daemon, &viewer, &format!("/{DAY}/lines"))
            .await
            .expect(200),
    );
    assert_eq!(rows.len(), lines.len());
    let exported: BTreeMap<(String, String), Figures> = rows
        .iter()
        .map(|row| {
            assert_eq!(
                (row["settlement_date"].as_str(), row["revision"].as_str()),
                (DAY, "1")
            );
            assert_eq!(
                row["net"],
                major(row["net_minor"].parse().expect("net_minor"))
            );
            assert_eq!(
                row["gross"],
                major(row["gross_minor"].parse().expect("gross_minor"))
            );
            assert_eq!(
                row["fees"],
                major(row["fees_minor"].parse().expect("fees_minor"))
            );
            (
                (row["merchant_id"].clone(), row["currency"].clone()),
                Figures::of_row(row),
            )
        })
        .collect();
    assert_eq!(exported, lines_of(&lines));
    assert_eq!(exported, expected_lines(&transactions, FEE_PERCENT));

    let with_bom = get(&daemon, &viewer, &format!("/{DAY}/export.csv?bom=true")).await;
    assert_eq!(with_bom.status, 200);
    assert!(
        with_bom.body.starts_with(b"\xEF\xBB\xBF"),
        "the BOM comes first"
    );
    assert_eq!(read_export(&with_bom.text()).len(), rows.len());
    get(&daemon, &viewer, &format!("/{DAY}/export.csv?bom=maybe"))
        .await
        .expect_problem(400, "invalid-request");
    get(&daemon, &viewer, &format!("/{NEXT_DAY}/export.csv"))
        .await
        .expect_problem(404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_summary_adds_up_the_settled_days() {
    let first_day = day_transactions(DAY, 1);
    let second_day = day_transactions(NEXT_DAY, 2);
    let third_day = day_transactions(THIRD_DAY, 3);
    let mut transactions = first_day.clone();
    transactions.extend(second_day.iter().cloned());
    transactions.extend(third_day.iter().cloned());
    let setup = setup_with(&config(""), &transactions);
    let viewer = setup.token("finance-viewer", "viewer");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    for date in [DAY, NEXT_DAY, THIRD_DAY] {
        settle(&daemon, &operator, date).await;
    }

    // The first two days only.
    let in_range: Vec<Tx> = first_day.iter().chain(&second_day).cloned().collect();
    let summary = get(
        &daemon,
        &viewer,
        &format!("/stats/summary?from={DAY}&to={NEXT_DAY}"),
    )
    .await
    .expect(200);
    assert_eq!(
        (summary["from"].clone(), summary["to"].clone()),
        (json!(DAY), json!(NEXT_DAY))
    );
    assert_eq!(summary["settled_days"], 2);
    let totals = expected_totals(&in_range, FEE_PERCENT);
    let currencies = summary["currencies"].as_array().expect("currencies");
    assert_eq!(currencies.len(), totals.len());
    for entry in currencies {
        let currency = text(&entry["currency"]);
        let expected = totals[&currency];
        assert_eq!(Figures::of_json(entry), expected, "{currency}");
        assert_eq!(entry["days"], 2, "{currency}");
        assert_eq!(entry["gross"], major(expected.gross_minor));
        assert_eq!(entry["fees"], major(expected.fees_minor));
        assert_eq!(entry["net"], major(expected.net_minor));
        assert_eq!(entry["success_rate"], expected.success_rate(), "{currency}");
    }

    // Top merchants by gross volume, largest first within each currency.
    let mut volumes: BTreeMap<String, Vec<(i64, String, i64)>> = BTreeMap::new();
    for ((merchant, currency), figures) in expected_lines(&in_range, FEE_PERCENT) {
        volumes.entry(currency).or_default().push((
            -figures.gross_minor,
            merchant,
            figures.net_minor,
        ));
    }
    let top_of = |summary: &Value| -> BTreeMap<String, Vec<(String, i64, i64)>> {
        let mut found: BTreeMap<String, Vec<(String, i64, i64)>> = BTreeMap::new();
        for merchant in summary["top_merchants"].as_array().expect("top_merchants") {
            found.entry(text(&merchant["currency"])).or_default().push((
                text(&merchant["merchant_id"]),
                merchant["gross_minor"].as_i64().expect("gross_minor"),
                merchant["net_minor"].as_i64().expect("net_minor"),
            ));
        }
        found
    };
    let ranked = |limit: usize| -> BTreeMap<String, Vec<(String, i64, i64)>> {
        volumes
            .iter()
            .map(|(currency, merchants)| {
                let mut merchants = merchants.clone();
                merchants.sort();
                let top = merchants
                    .into_iter()
                    .take(limit)
                    .map(|(negative_gross, merchant, net)| (merchant, -negative_gross, net))
                    .collect();
                (currency.clone(), top)
            })
            .collect()
    };
    assert_eq!(top_of(&summary), ranked(usize::MAX));
    let top_one = get(
        &daemon,
        &viewer,
        &format!("/stats/summary?from={DAY}&to={NEXT_DAY}&top=1"),
    )
    .await
    .expect(200);
    assert_eq!(top_of(&top_one), ranked(1));

    // A range of one day, and one with nothing settled.
    let last = get(
        &daemon,
        &viewer,
        &format!("/stats/summary?from={THIRD_DAY}&to={THIRD_DAY}"),
    )
    .await
    .expect(200);
    assert_eq!(last["settled_days"], 1);
    let usd = last["currencies"]
        .as_array()
        .expect("currencies")
        .iter()
        .find(|c| c["currency"] == "USD")
        .expect("USD")
        .clone();
    assert_eq!(
        Figures::of_json(&usd),
        expected_totals(&third_day, FEE_PERCENT)["USD"]
    );
    let empty = get(
        &daemon,
        &viewer,
        "/stats/summary?from=2023-01-01&to=2023-01-31",
    )
    .await
    .expect(200);
    assert_eq!(empty["settled_days"], 0);
    assert_eq!(empty["currencies"], json!([]));

    for bad in [
        format!("from={NEXT_DAY}&to={DAY}"),
        format!("from={DAY}"),
        format!("to={DAY}"),
        String::new(),
        format!("from=2024-03-1&to={DAY}"),
        format!("from={DAY}&to=2024-99-01"),
        "from=2023-01-01&to=2024-01-02".to_string(),
        format!("from={DAY}&to={NEXT_DAY}&top=many"),
    ] {
        get(&daemon, &viewer, &format!("/stats/summary?{bad}"))
            .await
            .expect_problem(400, "invalid-request");
    }
}

/// An inverted range is refused the same way on every route that takes one: 400 invalid-request
/// naming both parameters, the detail starting with `from: `.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_range_is_refused_alike_on_every_route() {
    let setup = setup_with(&config(""), &[]);
    let viewer = setup.token("finance-viewer", "viewer");
    let daemon = setup.start();
    for path in [
        format!("{API}/stats/summary?from={NEXT_DAY}&to={DAY}"),
        format!("{API}/stats/chart.svg?from={NEXT_DAY}&to={DAY}"),
        format!("{API}/history?from={NEXT_DAY}&to={DAY}"),
        "/api/v2/finance/audit?from=2024-03-11T00:00:00Z&to=2024-03-10T00:00:00Z".to_string(),
    ] {
        let reply = daemon.get(&path).bearer(&viewer).send().await;
        let problem = reply.expect_problem(400, "invalid-request");
        assert_eq!(problem["field"], "from", "{path}: {problem}");
        assert_eq!(
            problem["fields"],
            json!(["from", "to"]),
            "{path}: {problem}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("from: ") && detail.contains("must not be after to"),
            "{path}: {problem}"
        );
    }
    // The same dates the right way round are answered.
    let history = daemon
        .get(&format!("{API}/history?from={DAY}&to={NEXT_DAY}"))
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_png_and_svg_of_the_settled_days() {
    let mut transactions = day_transactions(DAY, 1);
    transactions.extend(day_transactions(NEXT_DAY, 2));
    let setup = setup_with(&config(""), &transactions);
    let viewer = setup.token("finance-viewer", "viewer");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    settle(&daemon, &operator, DAY).await;
    settle(&daemon, &operator, NEXT_DAY).await;
    let range = format!("from={DAY}&to={NEXT_DAY}");

    let png = get(
        &daemon,
        &viewer,
        &format!("/stats/chart.png?{range}&width=640&height=480"),
    )
    .await;
    assert_eq!(png.status, 200, "{}", png.text());
    assert_eq!(png.header("content-type").as_deref(), Some("image/png"));
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
    // The IHDR chunk holds the width and height asked for (big-endian, after the 16-byte header).
    assert_eq!(
        &png.body[16..24],
        [640u32.to_be_bytes(), 480u32.to_be_bytes()].concat()
    );

    let svg = get(&daemon, &viewer, &format!("/stats/chart.svg?{range}")).await;
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type").as_deref(), Some("image/svg+xml"));
    let svg_text = svg.text();
    assert!(
        svg_text.contains("<svg") && svg_text.trim_end().ends_with("</svg>"),
        "{svg_text:.200}"
    );

    for chart in ["chart.png", "chart.svg"] {
        get(
            &daemon,
            &viewer,
            &format!("/stats/{chart}?from=2023-01-01&to=2023-01-31"),
        )
        .await
        .expect_problem(404, "not-found");
        get(
            &daemon,
            &viewer,
            &format!("/stats/{chart}?from={NEXT_DAY}&to={DAY}"),
        )
        .await
        .expect_problem(400, "invalid-request");
        get(
            &daemon,
            &viewer,
            &format!("/stats/{chart}?{range}&width=wide"),
        )
        .await
        .expect_problem(400, "invalid-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_request_leaves_an_audit_event_with_its_request_id() {
    let setup = setup_with(&config(""), &day_transactions(DAY, 1));
    let operator = setup.token("ops-ana", "operator");
    let viewer = setup.token("finance-viewer", "viewer");
    let daemon = setup.start();
    let open_day = today_in_aden();

    // (reply, actor, path, outcome) of each mutating request.
    let mut made: Vec<(Reply, &str, String, &str)> = Vec::new();
    let accepted = trigger(&daemon, &operator, DAY).await;
    accepted.expect(202);
    made.push((
        accepted,
        "token:ops-ana",
        format!("{API}/trigger/{DAY}"),
        "succeeded",
    ));
    daemon.wait_for_status(&operator, DAY, &["completed"]).await;
    let settled = trigger(&daemon, &operator, DAY).await;
    settled.expect_problem(409, "already-settled");
    made.push((
        settled,
        "token:ops-ana",
        format!("{API}/trigger/{DAY}"),
        "refused",
    ));
    let open = trigger(&daemon, &operator, &open_day.to_string()).await;
    open.expect_problem(409, "date-still-open");
    made.push((
        open,
        "token:ops-ana",
        format!("{API}/trigger/{open_day}"),
        "refused",
    ));
    let keyless = daemon
        .post(&format!("{API}/retry/{DAY}"))
        .bearer(&operator)
        .send()
        .await;
    keyless.expect_problem(400, "idempotency-key-invalid");
    made.push((
        keyless,
        "token:ops-ana",
        format!("{API}/retry/{DAY}"),
        "refused",
    ));
    let forbidden = trigger(&daemon, &viewer, DAY).await;
    forbidden.expect_problem(403, "forbidden");
    made.push((
        forbidden,
        "token:finance-viewer",
        format!("{API}/trigger/{DAY}"),
        "refused",
    ));
    let chosen_id = format!("audit-{}", fresh_key());
    let rerun_reply = daemon
        .post(&format!("{API}/rerun/{DAY}"))
        .bearer(&operator)
        .key(&fresh_key())
        .header("x-request-id", &chosen_id)
        .json(&json!({ "reason": "audited rerun" }))
        .send()
        .await;
    rerun_reply.expect(202);
    assert_eq!(
        rerun_reply.header("x-request-id").as_deref(),
        Some(chosen_id.as_str())
    );
    made.push((
        rerun_reply,
        "token:ops-ana",
        format!("{API}/rerun/{DAY}"),
        "succeeded",
    ));
    let anonymous = daemon
        .post(&format!("{API}/trigger/{DAY}"))
        .key(&fresh_key())
        .send()
        .await;
    anonymous.expect_problem(401, "unauthorized");
    made.push((
        anonymous,
        "anonymous",
        format!("{API}/trigger/{DAY}"),
        "refused",
    ));

    // The runs audit their outcomes after completing: wait for the rerun's.
    daemon.wait_for_status(&operator, DAY, &["completed"]).await;
    let rerun_done = wait_for_audit(
        &daemon,
        &viewer,
        |e| e["action"] == "settlement.rerun" && e["outcome"] == "succeeded",
        "settlement.rerun succeeded",
    )
    .await;
    assert_eq!(rerun_done["actor"], "token:ops-ana");
    assert_eq!(rerun_done["detail"]["reason"], "audited rerun");
    assert_eq!(rerun_done["detail"]["revision"], 2);

    let events = all_audit_events(&daemon, &viewer).await;
    for (reply, actor, path, outcome) in &made {
        let request_id = reply.header("x-request-id").expect("x-request-id");
        let matching: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["action"] == "http.request" && e["detail"]["request_id"] == request_id.as_str()
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one event for {path} ({request_id}): {events:?}"
        );
        let event = matching[0];
        assert_eq!(event["actor"], *actor, "{event}");
        assert_eq!(event["subject"], format!("POST {path}"), "{event}");
        assert_eq!(event["outcome"], *outcome, "{event}");
        assert_eq!(event["detail"]["status"], reply.status, "{event}");
    }
    let runs: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["action"] == "settlement.run" && e["subject"] == format!("settlement_date={DAY}")
        })
        .collect();
    let outcomes: BTreeSet<&str> = runs.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(
        outcomes,
        BTreeSet::from(["succeeded", "refused"]),
        "{runs:?}"
    );
    assert!(
        runs.iter().all(|e| e["actor"] == "token:ops-ana"),
        "{runs:?}"
    );
    let http_count = events
        .iter()
        .filter(|e| e["action"] == "http.request")
        .count();
    assert_eq!(http_count, made.len(), "GETs are not audited");

    // Pages: newest first, disjoint, in the order of the whole list.
    let page_size = 3;
    let mut paged = Vec::new();
    for page in 1.. {
        let body = daemon
            .get(&format!(
                "/api/v2/finance/audit?page={page}&per_page={page_size}"
            ))
            .bearer(&viewer)
            .send()
            .await
            .expect(200);
        assert_eq!(body["page"], page);
        assert!(items(&body).len() <= page_size);
        paged.extend(items(&body));
        if body["has_more"] != true {
            break;
        }
    }
    assert_eq!(paged, events);
    for bad in ["page=0", "per_page=0", "per_page=501"] {
        daemon
            .get(&format!("/api/v2/finance/audit?{bad}"))
            .bearer(&viewer)
            .send()
            .await
            .expect_problem(400, "invalid-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_eyes_rerun_request_for_a_date_never_settled_is_refused() {
    let setup = setup_with(
        &config("[server]\nrequire_rerun_approval = true\n"),
        &day_transactions(DAY, 1),
    );
    let alice = setup.token("alice", "operator");
    let daemon = setup.start();
    // As without four-eyes: there is no revision to rerun, so nothing waits for an approval
    // that could only fail.
    let problem = rerun(&daemon, &alice, DAY, &json!({ "reason": "too early" }))
        .await
        .expect_problem(409, "nothing-to-do");
    assert!(text(&problem["detail"]).contains(DAY), "{problem}");
    let requests = get(&daemon, &alice, "/rerun-requests").await.expect(200);
    assert!(items(&requests).is_empty(), "{requests}");
}
