//! `settle serve` as a process: the scheduler's catch-up at start, two daemons racing for the nightly
//! job on one store (SQLite and MongoDB), a killed run's lease taken over, and graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde_json::Value;
use settle_tests::mongo::FreshDatabase;

use crate::daemon::{Daemon, Setup};
use crate::provider_server::{Behaviour, ProviderServer};
use crate::support::transactions_csv;

/// The default calendar's grace after the 24:00 cutoff.
const GRACE_MINUTES: u32 = 10;

/// How long a test waits for something a daemon does in the background.
const PATIENCE: Duration = Duration::from_secs(30);

/// What the scheduler logs when a catch-up pass is over.
const TICK_DONE: &str = "scheduler tick settled=";

/// A date long closed, for the tests that trigger by hand (the scheduler stays off).
const PAST_DATE: &str = "2024-03-10";

/// The latest settleable date at `now` under the default calendar (Asia/Aden, cutoff 24:00, grace
/// 10 min), computed independently of the daemon: date D opens for settlement at D+1 00:10 local.
fn latest_settleable(now: DateTime<Utc>) -> NaiveDate {
    let local = now.with_timezone(&chrono_tz::Asia::Aden);
    let opens = NaiveTime::from_hms_opt(0, GRACE_MINUTES, 0).expect("a time");
    let days_back = if local.time() >= opens { 1 } else { 2 };
    local.date_naive() - Days::new(days_back)
}

/// A completed USD card payment at noon (Aden) of `date`.
fn payment_row(reference: &str, merchant_id: &str, amount: &str, date: NaiveDate) -> String {
    format!("{reference},{merchant_id},payment,completed,{amount},USD,card,{date}T12:00:00+03:00,")
}

/// `settle import` of `rows` through the CLI, against the setup's store.
fn import(setup: &Setup, rows: &[String]) {
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let file = setup
        .sandbox
        .write("transactions.csv", transactions_csv(&rows));
    setup
        .settle(&["import", file.to_str().expect("utf-8 path")])
        .assert_ok();
}

/// The daemon's output without terminal colours.
fn plain_output(daemon: &Daemon) -> String {
    let raw = daemon.output();
    let mut plain = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Polls the daemon's output until it contains `needle`; panics after `within`.
async fn wait_for_log(daemon: &Daemon, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !plain_output(daemon).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the daemon never logged {needle:?} within {within:?}; its output:\n{}",
            plain_output(daemon)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every revision of every date, newest first. (One default page of 50 is enough here; the
/// route cannot parse `per_page` yet: its flattened `Page` receives the query values as strings.)
async fn all_revisions(daemon: &Daemon, token: &str) -> Vec<Value> {
    let body = daemon
        .get("/api/v2/finance/settlement/history?all_revisions=true")
        .bearer(token)
        .send()
        .await
        .expect(200);
    assert_eq!(body["has_more"], false, "{body}");
    body["items"].as_array().expect("items").clone()
}

/// `GET …/{date}/revisions`: the date's revisions, oldest first.
async fn revisions(daemon: &Daemon, token: &str, date: NaiveDate) -> Vec<Value> {
    let body = daemon
        .get(&format!("/api/v2/finance/settlement/{date}/revisions"))
        .bearer(token)
        .send()
        .await
        .expect(200);
    body["items"].as_array().expect("items").clone()
}

/// The whole audit trail.
async fn audit_events(daemon: &Daemon, token: &str) -> Vec<Value> {
    let body = daemon
        .get("/api/v2/finance/audit?per_page=500")
        .bearer(token)
        .send()
        .await
        .expect(200);
    assert_eq!(body["has_more"], false, "{body}");
    body["items"].as_array().expect("items").clone()
}

/// The audit trail once each of `dates` has a successful `settlement.run` event. A run audits
/// its outcome just after it completes, so a reader who saw `completed` may be a moment early.
async fn audit_events_after_runs(daemon: &Daemon, token: &str, dates: &[NaiveDate]) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events = audit_events(daemon, token).await;
        let audited = |date: &NaiveDate| {
            run_outcomes(&events, *date)
                .iter()
                .any(|o| o == "succeeded")
        };
        if dates.iter().all(audited) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no successful run audited for some of {dates:?}:\n{events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The outcomes of the `settlement.run` events of `date`, in the trail's order.
fn run_outcomes(events: &[Value], date: NaiveDate) -> Vec<String> {
    let subject = format!("settlement_date={date}");
    events
        .iter()
        .filter(|e| e["action"] == "settlement.run" && e["subject"] == subject.as_str())
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn date_of(settlement: &Value) -> NaiveDate {
    settlement["settlement_date"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("a settlement date: {settlement}"))
}

fn instant_of(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("an RFC 3339 instant: {value}"))
}

/// Asserts that every settled date was settled once (one completed revision 1, claimed once, by
/// the scheduler), lies in `window`, and has exactly one successful run in the audit trail.
/// Returns the settled dates.
async fn assert_each_date_settled_once(
    daemon: &Daemon,
    token: &str,
    window: (NaiveDate, NaiveDate),
) -> BTreeSet<NaiveDate> {
    let history = all_revisions(daemon, token).await;
    let dates: Vec<NaiveDate> = history.iter().map(date_of).collect();
    let events = audit_events_after_runs(daemon, token, &dates).await;
    let mut settled = BTreeSet::new();
    for settlement in &history {
        let date = date_of(settlement);
        assert!(
            settled.insert(date),
            "{date} has several revisions: {history:?}"
        );
        assert!(
            window.0 <= date && date <= window.1,
            "{date} is outside the catch-up window {window:?}"
        );
        assert_eq!(settlement["revision"], 1, "{settlement}");
        assert_eq!(settlement["status"], "completed", "{settlement}");
        assert_eq!(settlement["attempts"], 1, "claimed once: {settlement}");
        assert_eq!(settlement["trigger"], "scheduler", "{settlement}");
        assert_eq!(settlement["requested_by"], "scheduler", "{settlement}");
        let outcomes = run_outcomes(&events, date);
        assert_eq!(
            outcomes.iter().filter(|o| *o == "succeeded").count(),
            1,
            "{date}: one successful run in the audit trail: {outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|o| o == "succeeded" || o == "refused"),
            "{date}: {outcomes:?}"
        );
    }
    settled
}

/// Triggers `date` on `daemon` (a Run claim) until it is taken over, with a fresh idempotency key
/// each time: every refusal must be `already-running` and sent before `expires_at`, the take-over
/// must come after it. Returns the 202 body.
async fn take_over_after_expiry(
    daemon: &Daemon,
    token: &str,
    date: NaiveDate,
    expires_at: DateTime<Utc>,
) -> Value {
    let trigger = format!("/api/v2/finance/settlement/trigger/{date}");
    let deadline = Instant::now() + PATIENCE;
    for attempt in 1.. {
        let sent_at = Utc::now();
        let reply = daemon
            .post(&trigger)
            .bearer(token)
            .key(&format!("take-over-{date}-{attempt}"))
            .send()
            .await;
        if reply.status == 202 {
            assert!(
                Utc::now() >= expires_at,
                "{date} taken over before its lease expired at {expires_at}"
            );
            return reply.json();
        }
        reply.expect_problem(409, "already-running");
        assert!(
            sent_at < expires_at,
            "{date} refused after its lease expired at {expires_at}: {}",
            reply.text()
        );
        assert!(Instant::now() < deadline, "{date} was never taken over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns or panics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_catches_up_recent_dates_once_at_start_and_leaves_older_ones() {
    const MAX_CATCH_UP_DAYS: u64 = 4;
    let latest = latest_settleable(Utc::now());
    // Inside the window even if a nightly fire moves it on by a day during the test.
    let recent: Vec<NaiveDate> = (0..MAX_CATCH_UP_DAYS - 1)
        .rev()
        .map(|back| latest - Days::new(back))
        .collect();
    let too_old = latest - Days::new(MAX_CATCH_UP_DAYS + 2);
    let setup = Setup::sqlite(&format!(
        "[scheduler]\nenabled = true\nmax_catch_up_days = {MAX_CATCH_UP_DAYS}\n"
    ));
    let mut rows = vec![payment_row("p-old", "m-1", "99.00", too_old)];
    for (index, date) in recent.iter().enumerate() {
        rows.push(payment_row(&format!("p-{index}-a"), "m-1", "10.00", *date));
        rows.push(payment_row(
            &format!("p-{index}-b"),
            "m-2",
            &format!("{}.00", index + 1),
            *date,
        ));
    }
    import(&setup, &rows);
    let viewer = setup.token("viewer", "viewer");

    let mut daemon = setup.start();
    for date in &recent {
        daemon
            .wait_for_status(&viewer, &date.to_string(), &["completed"])
            .await;
    }
    wait_for_log(&daemon, TICK_DONE, PATIENCE).await;
    let ready = daemon.get("/readyz").send().await.expect(200);
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["scheduler"], "alive", "{ready}");
    assert_eq!(ready["store"]["reachable"], true, "{ready}");
    assert!(ready["last_tick"].is_string(), "{ready}");

    for (index, date) in recent.iter().enumerate() {
        let revisions = revisions(&daemon, &viewer, *date).await;
        assert_eq!(revisions.len(), 1, "{date}: {revisions:?}");
        let totals = &revisions[0]["totals"];
        assert_eq!(totals[0]["transaction_count"], 2, "{date}: {totals}");
        let gross_minor = 1_000 + 100 * (index as i64 + 1);
        assert_eq!(totals[0]["gross_minor"], gross_minor, "{date}: {totals}");
    }
    daemon
        .get(&format!("/api/v2/finance/settlement/{too_old}"))
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(404, "not-found");
    let window = (
        latest - Days::new(MAX_CATCH_UP_DAYS - 1),
        latest_settleable(Utc::now()),
    );
    let settled = assert_each_date_settled_once(&daemon, &viewer, window).await;
    assert!(settled.is_superset(&recent.iter().copied().collect()));
    assert!(!settled.contains(&too_old));
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", daemon.output());

    // A restart catches up from the last completed date: nothing is settled again.
    let again = setup.start();
    wait_for_log(&again, TICK_DONE, PATIENCE).await;
    let window = (window.0, latest_settleable(Utc::now()));
    let settled_again = assert_each_date_settled_once(&again, &viewer, window).await;
    assert!(settled_again.is_superset(&settled), "{settled_again:?}");
    again
        .get(&format!("/api/v2/finance/settlement/{too_old}"))
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(404, "not-found");
    let ready = again.get("/readyz").send().await.expect(200);
    assert_eq!(ready["scheduler"], "alive", "{ready}");
}

/// Three daemons on one store start together with the scheduler on and a payout provider: each due
/// date is settled once, each merchant paid once, and the audit trail shows one run per date.
async fn daemons_race_for_the_nightly_job(options: Vec<String>) {
    const DAEMONS: usize = 3;
    const MAX_CATCH_UP_DAYS: u64 = 4;
    // Each run holds its date a little after paying, so that the two passes overlap.
    const HOLD: &[(&str, &str)] = &[("SETTLE_FAILPOINTS", "settlement.before_complete=sleep(200)")];
    let provider = ProviderServer::start();
    let config = format!(
        "[scheduler]\nenabled = true\nmax_catch_up_days = {MAX_CATCH_UP_DAYS}\n[payouts]\nprovider_url = \"{}\"\n",
        provider.base_url()
    );
    let setup = Setup::with_options(&config, options);
    let latest = latest_settleable(Utc::now());
    let paid_dates: Vec<NaiveDate> = (0..MAX_CATCH_UP_DAYS - 1)
        .rev()
        .map(|back| latest - Days::new(back))
        .collect();
    let mut rows = Vec::new();
    let mut merchants_due = BTreeSet::new();
    for (index, date) in paid_dates.iter().enumerate() {
        for (merchant, amount) in [("a", "120.00"), ("b", "35.50"), ("c", "7.25")] {
            let merchant_id = format!("m-{index}-{merchant}");
            rows.push(payment_row(
                &format!("p-{index}-{merchant}-1"),
                &merchant_id,
                amount,
                *date,
            ));
            rows.push(payment_row(
                &format!("p-{index}-{merchant}-2"),
                &merchant_id,
                "10.00",
                *date,
            ));
            merchants_due.insert((*date, merchant_id));
        }
    }
    import(&setup, &rows);
    let viewer = setup.token("viewer", "viewer");

    let mut daemons: Vec<_> = futures::future::join_all((0..DAEMONS).map(|_| {
        let setup = setup.clone();
        tokio::task::spawn_blocking(move || setup.start_with_env(HOLD))
    }))
    .await
    .into_iter()
    .map(|daemon| daemon.expect("a daemon"))
    .collect();
    for daemon in &daemons {
        wait_for_log(daemon, TICK_DONE, PATIENCE).await;
    }
    for date in &paid_dates {
        daemons[0]
            .wait_for_status(&viewer, &date.to_string(), &["completed"])
            .await;
    }
    let window = (
        latest - Days::new(MAX_CATCH_UP_DAYS - 1),
        latest_settleable(Utc::now()),
    );
    let settled = assert_each_date_settled_once(&daemons[1], &viewer, window).await;
    assert!(
        settled.is_superset(&paid_dates.iter().copied().collect()),
        "{settled:?}"
    );
    // Each date was settled by exactly one of the processes.
    let settled_by_processes: usize = daemons
        .iter()
        .map(|d| plain_output(d).matches("scheduler settled a date").count())
        .sum();
    let outputs: Vec<String> = daemons.iter().map(plain_output).collect();
    assert_eq!(
        settled_by_processes,
        settled.len(),
        "{}",
        outputs.join("\n---\n")
    );

    // The provider's ledger: one payout per merchant and date, of the line's net, and no other POST.
    let ledger = provider.ledger();
    let mut paid: BTreeMap<(NaiveDate, String), i64> = BTreeMap::new();
    for entry in &ledger {
        let key = (entry.settlement_date, entry.merchant_id.clone());
        assert!(
            paid.insert(key, entry.amount_minor).is_none(),
            "paid twice: {entry:?}\n{ledger:?}"
        );
    }
    assert_eq!(
        paid.keys().cloned().collect::<BTreeSet<_>>(),
        merchants_due,
        "{ledger:?}"
    );
    assert_eq!(
        provider.post_count() as usize,
        ledger.len(),
        "one POST per payout"
    );
    for date in &paid_dates {
        let lines = daemons[0]
            .get(&format!("/api/v2/finance/settlement/{date}/lines"))
            .bearer(&viewer)
            .send()
            .await
            .expect(200);
        let lines = lines["items"].as_array().expect("items");
        assert_eq!(lines.len(), 3, "{date}: {lines:?}");
        for line in lines {
            let merchant_id = line["merchant_id"].as_str().expect("merchant_id");
            assert_eq!(
                Some(&line["net_minor"].as_i64().expect("net_minor")),
                paid.get(&(*date, merchant_id.to_string())),
                "{date} {merchant_id}"
            );
        }
    }

    for daemon in &mut daemons {
        let ready = daemon.get("/readyz").send().await.expect(200);
        assert_eq!(ready["scheduler"], "alive", "{ready}");
        let status = daemon.terminate(Duration::from_secs(20));
        assert!(status.success(), "{status:?}\n{}", daemon.output());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_one_sqlite_store_settle_and_pay_each_due_date_once() {
    daemons_race_for_the_nightly_job(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_one_mongodb_database_settle_and_pay_each_due_date_once() {
    let database = FreshDatabase::new();
    daemons_race_for_the_nightly_job(database.options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_keeps_its_lease_until_expiry_then_another_daemon_completes_it() {
    const LEASE_SECONDS: i64 = 6;
    let date: NaiveDate = PAST_DATE.parse().unwrap();
    let setup = Setup::sqlite(&format!(
        "[scheduler]\nenabled = false\n[settlement]\nlease_seconds = {LEASE_SECONDS}\n"
    ));
    import(
        &setup,
        &[
            payment_row("p-1", "m-1", "100.00", date),
            payment_row("p-2", "m-2", "50.00", date),
        ],
    );
    let operator = setup.token("operator", "operator");
    let trigger = format!("/api/v2/finance/settlement/trigger/{date}");

    // The first daemon claims the date, then hangs right after the claim until it is killed.
    let mut crashed =
        setup.start_with_env(&[("SETTLE_FAILPOINTS", "settlement.after_claim=sleep(120000)")]);
    let claimed = crashed
        .post(&trigger)
        .bearer(&operator)
        .key("trigger-first")
        .send()
        .await
        .expect(202);
    let lease = claimed["settlement"]["lease"].clone();
    assert_eq!(claimed["settlement"]["status"], "running", "{claimed}");
    let crashed_owner = lease["owner"].as_str().expect("lease owner").to_string();
    assert!(
        crashed_owner.ends_with(&format!(":{}", crashed.pid())),
        "{crashed_owner}"
    );
    let expires_at = instant_of(&lease["expires_at"]);
    wait_for_log(&crashed, "settlement.after_claim", PATIENCE).await;
    crashed.kill();

    let taker = setup.start();
    let left = taker
        .wait_for_status(&operator, PAST_DATE, &["running"])
        .await;
    assert_eq!(left["settlement"]["lease"]["owner"], crashed_owner.as_str());
    assert_eq!(
        instant_of(&left["settlement"]["lease"]["expires_at"]),
        expires_at
    );

    // Before the lease expires every claim is refused as already running, with Retry-After.
    let sent_at = Utc::now();
    assert!(
        sent_at < expires_at,
        "the second daemon took longer to start than the {LEASE_SECONDS} s lease"
    );
    let refused = taker
        .post(&trigger)
        .bearer(&operator)
        .key("trigger-early")
        .send()
        .await;
    let problem = refused.expect_problem(409, "already-running");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&crashed_owner)),
        "{problem}"
    );
    let retry_after_seconds: i64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(
        (1..=LEASE_SECONDS).contains(&retry_after_seconds),
        "{retry_after_seconds}"
    );

    // Once it has expired, a trigger (a Run claim) takes the revision over.
    let resumed = take_over_after_expiry(&taker, &operator, date, expires_at).await;
    assert_eq!(resumed["settlement"]["revision"], 1, "{resumed}");
    let done = taker
        .wait_for_status(&operator, PAST_DATE, &["completed"])
        .await;
    let settlement = &done["settlement"];
    assert_eq!(settlement["revision"], 1, "{settlement}");
    assert_eq!(settlement["attempts"], 2, "{settlement}");
    assert_eq!(settlement["lease_version"], 2, "{settlement}");
    assert!(
        settlement["lease"]["owner"]
            .as_str()
            .is_some_and(|o| o.ends_with(&format!(":{}", taker.pid()))),
        "{settlement}"
    );
    assert_eq!(
        settlement["totals"][0]["gross_minor"], 15_000,
        "{settlement}"
    );
    assert_eq!(revisions(&taker, &operator, date).await.len(), 1);
    let events = audit_events_after_runs(&taker, &operator, &[date]).await;
    let outcomes = run_outcomes(&events, date);
    assert_eq!(
        outcomes.iter().filter(|o| *o == "succeeded").count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| o == "refused"), "{outcomes:?}");
    let succeeded = events
        .iter()
        .find(|e| e["action"] == "settlement.run" && e["outcome"] == "succeeded")
        .expect("the successful run");
    assert_eq!(succeeded["detail"]["resumed"], true, "{succeeded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_stops_between_pages_releases_the_lease_and_exits_0() {
    const SHUTDOWN_TIMEOUT_MS: u64 = 3_000;
    const PAGE_SIZE: usize = 100;
    const PAGE_HOLD_MS: u64 = 1_500;
    const EXIT_MARGIN: Duration = Duration::from_secs(3);
    let date: NaiveDate = PAST_DATE.parse().unwrap();
    let setup = Setup::sqlite(&format!(
        "[scheduler]\nenabled = false\n[settlement]\npage_size = {PAGE_SIZE}\n\
         [server]\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n"
    ));
    // Two and a half pages: the run looks for a shutdown after each full page.
    let transaction_count = 2 * PAGE_SIZE + PAGE_SIZE / 2;
    let rows: Vec<String> = (0..transaction_count)
        .map(|i| payment_row(&format!("p-{i}"), &format!("m-{}", i % 5), "1.00", date))
        .collect();
    import(&setup, &rows);
    let operator = setup.token("operator", "operator");
    let trigger = format!("/api/v2/finance/settlement/trigger/{date}");

    let mut stopping = setup.start_with_env(&[(
        "SETTLE_FAILPOINTS",
        &format!("settlement.after_page=sleep({PAGE_HOLD_MS})"),
    )]);
    let started = stopping
        .post(&trigger)
        .bearer(&operator)
        .key("trigger-before-stop")
        .send()
        .await
        .expect(202);
    assert_eq!(started["settlement"]["status"], "running", "{started}");
    // The run is now holding after its first page.
    wait_for_log(&stopping, "settlement.after_page", PATIENCE).await;
    let address = stopping.address();
    let signalled_at = Instant::now();
    stopping.send_sigterm();

    // It stops accepting connections while it still drains the run.
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(&address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stopping.try_wait().is_none(),
        "it refused connections only by having exited already; its output:\n{}",
        stopping.output()
    );
    let status = tokio::task::block_in_place(|| {
        stopping.wait(Duration::from_millis(SHUTDOWN_TIMEOUT_MS) + EXIT_MARGIN)
    });
    let exited_after = signalled_at.elapsed();
    assert!(status.success(), "{status:?}\n{}", stopping.output());
    assert!(
        exited_after <= Duration::from_millis(SHUTDOWN_TIMEOUT_MS) + EXIT_MARGIN,
        "{exited_after:?}"
    );
    assert!(
        TcpStream::connect(&address).is_err(),
        "nothing listens once it has exited"
    );
    assert!(
        plain_output(&stopping).contains("releasing the lease"),
        "{}",
        stopping.output()
    );

    // A fresh daemon finds the date released (or completed) and settles it at once.
    let fresh = setup.start();
    let left = fresh
        .wait_for_status(&operator, PAST_DATE, &["running", "completed"])
        .await;
    let settlement = &left["settlement"];
    if settlement["status"] == "running" {
        assert!(
            instant_of(&settlement["lease"]["expires_at"]) <= Utc::now(),
            "the lease was released: {settlement}"
        );
        let resumed = fresh
            .post(&trigger)
            .bearer(&operator)
            .key("trigger-after-stop")
            .send()
            .await
            .expect(202);
        assert_eq!(resumed["settlement"]["revision"], 1, "{resumed}");
    }
    let done = fresh
        .wait_for_status(&operator, PAST_DATE, &["completed"])
        .await;
    let totals = &done["settlement"]["totals"][0];
    assert_eq!(totals["transaction_count"], transaction_count, "{totals}");
    assert_eq!(totals["gross_minor"], 100 * transaction_count, "{totals}");
    assert_eq!(revisions(&fresh, &operator, date).await.len(), 1);
    let outcomes = run_outcomes(
        &audit_events_after_runs(&fresh, &operator, &[date]).await,
        date,
    );
    assert!(
        outcomes.iter().any(|o| o == "interrupted"),
        "the first run stopped between pages: {outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "succeeded").count(),
        1,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_daemon_exits_0_promptly() {
    const SHUTDOWN_TIMEOUT_MS: u64 = 20_000;
    const PROMPT_EXIT: Duration = Duration::from_secs(5);
    let setup = Setup::sqlite(&format!(
        "[scheduler]\nenabled = true\nmax_catch_up_days = 2\n\
         [server]\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n"
    ));
    let mut daemon = setup.start();
    wait_for_log(&daemon, TICK_DONE, PATIENCE).await;
    // Leaves an idle keep-alive connection in the client's pool: it must not hold the exit.
    daemon.get("/readyz").send().await.expect(200);
    let address = daemon.address();
    let signalled_at = Instant::now();
    let status = tokio::task::block_in_place(|| daemon.terminate(PROMPT_EXIT));
    let exited_after = signalled_at.elapsed();
    assert!(status.success(), "{status:?}\n{}", daemon.output());
    assert!(exited_after < PROMPT_EXIT, "{exited_after:?}");
    let output = plain_output(&daemon);
    assert!(output.contains("nightly scheduler stopped"), "{output}");
    assert!(TcpStream::connect(&address).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_cannot_stop_keep_their_leases_and_the_exit_stays_within_shutdown_timeout() {
    const SHUTDOWN_TIMEOUT_MS: u64 = 3_000;
    const EXIT_MARGIN: Duration = Duration::from_millis(1_500);
    const LEASE_SECONDS: i64 = 8;
    // A payout's send claim outlasts the longest provider call by a margin: a stopped sender's
    // claims expire within the lease, so the fresh daemon below need not wait minutes for them.
    const PAYMENT_DEADLINE_MS: u64 = 4_000;
    // Both runs get stuck sending their payout: the provider records it, then answers far later.
    let provider = ProviderServer::start();
    provider.script([
        Behaviour::CommitThenHang { delay_ms: 60_000 },
        Behaviour::CommitThenHang { delay_ms: 60_000 },
    ]);
    let config = |scheduler: bool| {
        format!(
            "[scheduler]\nenabled = {scheduler}\nmax_catch_up_days = 1\n[settlement]\nlease_seconds = {LEASE_SECONDS}\n\
             [server]\nshutdown_timeout_ms = {SHUTDOWN_TIMEOUT_MS}\n[payouts]\nprovider_url = \"{}\"\n\
             [retry.payment]\nattempt_timeout_ms = {PAYMENT_DEADLINE_MS}\ndeadline_ms = {PAYMENT_DEADLINE_MS}\n",
            provider.base_url()
        )
    };
    let setup = Setup::sqlite(&config(true));
    let manual_date: NaiveDate = PAST_DATE.parse().unwrap();
    let latest = latest_settleable(Utc::now());
    let next = latest + Days::new(1);
    // The scheduler settles one date, `latest` (or `next` should it open meanwhile): both owe a
    // payout. `next` 00:00 local is already past whichever it is.
    import(
        &setup,
        &[
            payment_row("p-manual", "m-1", "80.00", manual_date),
            payment_row("p-latest", "m-2", "20.00", latest),
            format!("p-next,m-3,payment,completed,30.00,USD,card,{next}T00:00:00+03:00,"),
        ],
    );
    let operator = setup.token("operator", "operator");

    let mut stopping = setup.start();
    stopping
        .post(&format!("/api/v2/finance/settlement/trigger/{manual_date}"))
        .bearer(&operator)
        .key("trigger-manual")
        .send()
        .await
        .expect(202);
    let deadline = Instant::now() + PATIENCE;
    while provider.post_count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two runs never reached the provider; daemon output:\n{}",
            stopping.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = all_revisions(&stopping, &operator).await;
    assert_eq!(running.len(), 2, "{running:?}");
    let leases: Vec<(NaiveDate, DateTime<Utc>)> = running
        .iter()
        .map(|s| {
            assert_eq!(s["status"], "running", "{s}");
            (date_of(s), instant_of(&s["lease"]["expires_at"]))
        })
        .collect();

    let signalled_at = Instant::now();
    stopping.send_sigterm();
    let bound = Duration::from_millis(SHUTDOWN_TIMEOUT_MS) + EXIT_MARGIN;
    let status = tokio::task::block_in_place(|| stopping.wait(PATIENCE));
    let exited_after = signalled_at.elapsed();
    assert!(status.success(), "{status:?}\n{}", stopping.output());
    assert!(
        exited_after <= bound,
        "exited {exited_after:?} after SIGTERM, beyond shutdown_timeout_ms plus {EXIT_MARGIN:?}; output:\n{}",
        plain_output(&stopping)
    );

    // Each run kept its lease; once it expires a fresh daemon resumes it and pays nobody twice.
    crate::daemon::write_config(&setup.sandbox, &config(false));
    let fresh = setup.start();
    for (date, expires_at) in &leases {
        let resumed = take_over_after_expiry(&fresh, &operator, *date, *expires_at).await;
        assert_eq!(resumed["settlement"]["revision"], 1, "{resumed}");
        let done = fresh
            .wait_for_status(&operator, &date.to_string(), &["completed"])
            .await;
        assert_eq!(done["settlement"]["attempts"], 2, "{done}");
    }
    let ledger = provider.ledger();
    let paid: BTreeSet<(NaiveDate, String)> = ledger
        .iter()
        .map(|e| (e.settlement_date, e.merchant_id.clone()))
        .collect();
    assert_eq!(paid.len(), 2, "one payout per date: {ledger:?}");
    assert!(
        paid.contains(&(manual_date, "m-1".to_string())),
        "{ledger:?}"
    );
}
