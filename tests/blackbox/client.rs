//! The daemon client (`settle_client`, the desktop console's) against a real `settle serve`:
//! auth and transport errors, whoami, trigger, replay, rerun, retry, four-eyes, and every read typed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Asia::Aden;
use settle_client::{
    problem_types, Client, ClientError, HistoryQuery, IdempotencyKey, LineSort, LinesQuery,
    PayoutStatus, RerunOutcome, RerunRequestStatus, Role, Secret, Settlement, SettlementFigures,
    SettlementStatus, SortOrder, Whoami,
};

use crate::daemon::{Daemon, Setup};
use crate::provider_server::ProviderServer;
use crate::support::{read_export, transactions_csv};

/// The settled date of every test, and the next one (for a late arrival).
const DAY: &str = "2024-03-10";
const NEXT_DAY: &str = "2024-03-11";
/// What the console would use; generous for a loaded test machine.
const TIMEOUT_MS: u64 = 20_000;
/// How long a test waits for a run the daemon continues in the background.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Injected failure right before a run completes (after its lines were saved).
const FAIL_BEFORE_COMPLETE: &str = "settlement.before_complete=error";

/// The import, on `DAY` in Asia/Aden (UTC+3). Fees are 2 % plus 0.10 USD per completed payment.
const ROWS: &[&str] = &[
    "r0,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
    "r1,m-1,payment,completed,50.00,USD,card,2024-03-10T11:00:00+03:00,",
    "r2,m-1,refund,completed,10.00,USD,card,2024-03-10T12:00:00+03:00,r0",
    "r3,m-2,payment,completed,250.00,USD,wallet,2024-03-10T13:00:00+03:00,",
    "r4,m-2,payment,failed,20.00,USD,wallet,2024-03-10T14:00:00+03:00,",
    "r5,m-3,payment,completed,80.00,SAR,cash,2024-03-10T15:00:00+03:00,",
];

/// A merchant line `ROWS` settle to, amounts in minor units.
struct Line {
    merchant: &'static str,
    currency: &'static str,
    transactions: u64,
    completed: u64,
    failed: u64,
    payments: u64,
    refunds: u64,
    gross_minor: i64,
    refunds_minor: i64,
    fees_minor: i64,
    net_minor: i64,
}

const LINES: &[Line] = &[
    // Fees 2.00 + 0.10 and 1.00 + 0.10; the refund returns no fee.
    Line {
        merchant: "m-1",
        currency: "USD",
        transactions: 3,
        completed: 3,
        failed: 0,
        payments: 2,
        refunds: 1,
        gross_minor: 15_000,
        refunds_minor: 1_000,
        fees_minor: 320,
        net_minor: 13_680,
    },
    // Fee 5.00 + 0.10; the failed payment is counted, not settled.
    Line {
        merchant: "m-2",
        currency: "USD",
        transactions: 2,
        completed: 1,
        failed: 1,
        payments: 1,
        refunds: 0,
        gross_minor: 25_000,
        refunds_minor: 0,
        fees_minor: 510,
        net_minor: 24_490,
    },
    // Fee 1.60, nothing fixed in SAR.
    Line {
        merchant: "m-3",
        currency: "SAR",
        transactions: 1,
        completed: 1,
        failed: 0,
        payments: 1,
        refunds: 0,
        gross_minor: 8_000,
        refunds_minor: 0,
        fees_minor: 160,
        net_minor: 7_840,
    },
];

impl Line {
    fn figures(&self) -> SettlementFigures {
        SettlementFigures {
            transaction_count: self.transactions,
            completed_count: self.completed,
            failed_count: self.failed,
            payment_count: self.payments,
            refund_count: self.refunds,
            gross_minor: self.gross_minor,
            refunds_minor: self.refunds_minor,
            fees_minor: self.fees_minor,
            net_minor: self.net_minor,
            ..SettlementFigures::default()
        }
    }
}

fn date(text: &str) -> NaiveDate {
    text.parse().expect("a date")
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("an instant")
}

/// Scheduler off, 2 % plus 0.10 USD, then `extra`.
fn config(extra: &str) -> String {
    format!(
        "[scheduler]\nenabled = false\n[fees.default]\npercent = \"2\"\n\
         fixed = {{ USD = \"0.10\" }}\n{extra}"
    )
}

fn import(setup: &Setup, name: &str, rows: &[String]) {
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let file = setup.sandbox.write(name, transactions_csv(&rows));
    setup
        .settle(&["import", file.to_str().expect("utf-8 path")])
        .assert_ok();
}

/// A sandbox configured by `config(extra)` with `ROWS` imported.
fn setup(extra: &str) -> Setup {
    let setup = Setup::sqlite(&config(extra));
    let rows: Vec<String> = ROWS.iter().map(|row| row.to_string()).collect();
    import(&setup, "transactions.csv", &rows);
    setup
}

fn connect(daemon: &Daemon, token: &str) -> Client {
    Client::new(&daemon.base_url, Secret::new(token), TIMEOUT_MS).expect("a client")
}

/// The expected lines by (merchant, currency).
fn expected_lines() -> BTreeMap<(String, String), SettlementFigures> {
    LINES
        .iter()
        .map(|line| {
            (
                (line.merchant.to_string(), line.currency.to_string()),
                line.figures(),
            )
        })
        .collect()
}

/// The expected day totals by currency: (merchant count, figures).
fn expected_totals() -> BTreeMap<String, (u64, SettlementFigures)> {
    let mut totals: BTreeMap<String, (u64, SettlementFigures)> = BTreeMap::new();
    for line in LINES {
        let entry = totals.entry(line.currency.to_string()).or_default();
        entry.0 += 1;
        entry
            .1
            .accumulate(&line.figures(), line.currency.parse().expect("currency"))
            .expect("no overflow");
    }
    totals
}

fn totals_of(settlement: &Settlement) -> BTreeMap<String, (u64, SettlementFigures)> {
    settlement
        .totals
        .iter()
        .map(|t| {
            (
                t.currency.code().to_string(),
                (t.merchant_count, t.figures.clone()),
            )
        })
        .collect()
}

/// Polls `settlement(date, revision)` until the run finished (completed or failed).
async fn finished(client: &Client, day: NaiveDate, revision: u32) -> Settlement {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let last = client.settlement(day, Some(revision)).await;
        if let Ok(detail) = &last {
            if matches!(
                detail.settlement.status,
                SettlementStatus::Completed | SettlementStatus::Failed
            ) {
                return detail.settlement.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{day} revision {revision} never finished; last answer {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Triggers `day` under a new key and waits for it to complete.
async fn settle(client: &Client, day: NaiveDate) -> Settlement {
    let accepted = client
        .trigger(Some(day), &IdempotencyKey::fresh())
        .await
        .expect("triggered");
    let settlement = finished(client, day, accepted.settlement.revision).await;
    assert_eq!(
        settlement.status,
        SettlementStatus::Completed,
        "{settlement:?}"
    );
    settlement
}

#[track_caller]
fn assert_problem(result: Result<impl std::fmt::Debug, ClientError>, status: u16, kind: &str) {
    match result {
        Err(ClientError::Problem {
            status: found,
            problem_type,
            title,
            instance,
            ..
        }) => {
            assert_eq!((found, problem_type.as_str()), (status, kind));
            assert!(!title.is_empty());
            assert!(
                instance.is_some_and(|i| i.starts_with("urn:settle:request:")),
                "a problem names its request"
            );
        }
        other => panic!("expected a {status} {kind} problem, got {other:?}"),
    }
}

fn tomorrow_in_aden() -> NaiveDate {
    Utc::now()
        .with_timezone(&Aden)
        .date_naive()
        .succ_opt()
        .expect("tomorrow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_the_url_and_token_and_roles_are_enforced() {
    let setup = setup("");
    let viewer = setup.token("desk-viewer", "viewer");
    let leaver = setup.token("leaver", "operator");
    let daemon = setup.start();

    connect(&daemon, &viewer)
        .verify()
        .await
        .expect("a good token");

    let forged = "stl_forged0000000000000000000000";
    let refused = connect(&daemon, forged).verify().await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Unauthorized { detail } if detail.contains("not valid")),
        "{refused:?}"
    );
    assert!(!refused.to_string().contains(forged) && !format!("{refused:?}").contains(forged));

    let forbidden = connect(&daemon, &viewer)
        .trigger(Some(date(DAY)), &IdempotencyKey::fresh())
        .await
        .unwrap_err();
    assert!(
        matches!(&forbidden, ClientError::Forbidden { detail } if detail.contains("operator")),
        "{forbidden:?}"
    );
    assert!(connect(&daemon, &viewer)
        .revisions(date(DAY))
        .await
        .is_err_and(|e| matches!(e, ClientError::NotFound { .. })));

    setup.settle(&["token", "revoke", "leaver"]).assert_ok();
    let revoked = connect(&daemon, &leaver).verify().await.unwrap_err();
    assert!(
        matches!(&revoked, ClientError::Unauthorized { detail } if detail.contains("revoked")),
        "{revoked:?}"
    );

    // The right host, but not where the API is.
    let elsewhere = Client::new(
        &format!("{}/not-settle", daemon.base_url),
        Secret::new(&viewer),
        TIMEOUT_MS,
    )
    .expect("a client");
    let not_settle = elsewhere.verify().await.unwrap_err();
    assert!(
        matches!(&not_settle, ClientError::InvalidResponse(detail) if detail.contains("does not serve the Settle API")),
        "{not_settle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_each_token_its_name_and_role() {
    let setup = Setup::sqlite(&config(""));
    let tokens: Vec<(Role, String)> = [Role::Viewer, Role::Operator, Role::Admin]
        .into_iter()
        .map(|role| {
            (
                role,
                setup.token(&format!("desk-{role}"), &role.to_string()),
            )
        })
        .collect();
    let daemon = setup.start();
    for (role, token) in &tokens {
        let me = connect(&daemon, token).whoami().await.expect("whoami");
        assert_eq!(
            me,
            Whoami {
                name: format!("desk-{role}"),
                role: *role,
            }
        );
    }
    let forged = "stl_forged0000000000000000000000";
    let refused = connect(&daemon, forged).whoami().await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Unauthorized { .. }),
        "{refused:?}"
    );
    assert!(!format!("{refused:?}").contains(forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable_and_a_silent_server_times_out() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let token = "stl_unsent0000000000000000000000";
    let unreachable = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(token),
        5_000,
    )
    .expect("a client")
    .verify()
    .await
    .unwrap_err();
    match &unreachable {
        ClientError::Unreachable { url, reason } => {
            assert_eq!(url, &format!("http://127.0.0.1:{port}/"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(!unreachable.to_string().contains(token));

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = silent.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let started = Instant::now();
    let timed_out = Client::new(&format!("http://{address}"), Secret::new(token), 200)
        .expect("a client")
        .verify()
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(timed_out, ClientError::Timeout { after_ms: 200 });
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5),
        "timed out after {elapsed:?}"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_settles_once_per_key_and_an_open_date_is_a_problem() {
    let setup = setup("");
    let operator = setup.token("ops-ana", "operator");
    let daemon = setup.start();
    let client = connect(&daemon, &operator);
    let day = date(DAY);

    let key = IdempotencyKey::fresh();
    let first = client.trigger(Some(day), &key).await.expect("triggered");
    assert!(!first.replayed);
    assert_eq!(
        first.status_url,
        format!("/api/v2/finance/settlement/{DAY}")
    );
    assert_eq!(
        (first.settlement.settlement_date, first.settlement.revision),
        (day, 1)
    );
    assert_eq!(first.settlement.requested_by, "token:ops-ana");
    // A double click: the same key answers the same, and nothing runs twice.
    let again = client.trigger(Some(day), &key).await.expect("replayed");
    assert!(again.replayed);
    assert_eq!(
        (&again.settlement, &again.status_url),
        (&first.settlement, &first.status_url)
    );

    let settled = finished(&client, day, 1).await;
    assert_eq!(settled.status, SettlementStatus::Completed, "{settled:?}");
    assert_eq!(totals_of(&settled), expected_totals());
    assert_eq!(client.revisions(day).await.expect("revisions").len(), 1);
    let replayed_later = client.trigger(Some(day), &key).await.expect("replayed");
    assert!(replayed_later.replayed && replayed_later.settlement.revision == 1);

    // Another key is another request: refused, the date is settled.
    assert_problem(
        client.trigger(Some(day), &IdempotencyKey::fresh()).await,
        409,
        problem_types::ALREADY_SETTLED,
    );
    assert_eq!(client.revisions(day).await.expect("revisions").len(), 1);

    let open = tomorrow_in_aden();
    assert_problem(
        client.trigger(Some(open), &IdempotencyKey::fresh()).await,
        409,
        problem_types::DATE_STILL_OPEN,
    );
    assert!(client
        .settlement(open, None)
        .await
        .is_err_and(|e| matches!(e, ClientError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_parses_into_typed_structs_matching_the_import() {
    let provider = ProviderServer::start();
    let setup = setup(&format!(
        "[payouts]\nprovider_url = \"{}\"\n[retry.payment]\nmax_retries = 2\nbase_delay_ms = 10\n\
         max_delay_ms = 50\nattempt_timeout_ms = 2000\ndeadline_ms = 10000\n",
        provider.base_url()
    ));
    let operator = setup.token("ops-ana", "operator");
    let viewer = setup.token("desk-viewer", "viewer");
    let daemon = setup.start();
    let day = date(DAY);
    settle(&connect(&daemon, &operator), day).await;
    let client = connect(&daemon, &viewer);

    // History.
    let history = client
        .history(&HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(
        (history.page, history.per_page, history.has_more),
        (1, 50, false)
    );
    assert_eq!(history.items.len(), 1);
    assert_eq!(history.items[0].settlement_date, day);
    assert_eq!(history.items[0].status, SettlementStatus::Completed);
    assert_eq!(totals_of(&history.items[0]), expected_totals());
    for query in [
        HistoryQuery {
            status: Some(SettlementStatus::Failed),
            ..HistoryQuery::default()
        },
        HistoryQuery {
            from: Some(date(NEXT_DAY)),
            ..HistoryQuery::default()
        },
    ] {
        let none = client.history(&query).await.expect("history");
        assert!(none.items.is_empty(), "{query:?}: {none:?}");
    }

    // One settlement: window in Asia/Aden (UTC+3, cutoff 24:00), totals, nothing late.
    let detail = client.settlement(day, None).await.expect("settlement");
    let settlement = &detail.settlement;
    assert_eq!(settlement.revision, 1);
    assert_eq!(settlement.window.start, utc("2024-03-09T21:00:00Z"));
    assert_eq!(settlement.window.end, utc("2024-03-10T21:00:00Z"));
    assert_eq!(settlement.calendar.timezone, Aden);
    assert_eq!(totals_of(settlement), expected_totals());
    assert!(settlement.completed_at.is_some());
    assert!(detail.late_transactions.is_empty() && detail.notifications.is_empty());

    // Lines: all, sorted, searched, paged.
    let lines = client
        .lines(day, &LinesQuery::default())
        .await
        .expect("lines");
    assert_eq!(
        (lines.settlement_date, lines.revision, lines.total),
        (day, 1, 3)
    );
    let found: BTreeMap<(String, String), SettlementFigures> = lines
        .items
        .iter()
        .map(|l| {
            (
                (l.merchant_id.clone(), l.currency.code().to_string()),
                l.figures.clone(),
            )
        })
        .collect();
    assert_eq!(found, expected_lines());
    let merchants = |page: &settle_client::LinesPage| -> Vec<String> {
        page.items.iter().map(|l| l.merchant_id.clone()).collect()
    };
    let by_net = client
        .lines(
            day,
            &LinesQuery {
                sort: Some(LineSort::NetMinor),
                order: Some(SortOrder::Desc),
                ..LinesQuery::default()
            },
        )
        .await
        .expect("lines");
    assert_eq!(merchants(&by_net), ["m-2", "m-1", "m-3"]);
    let searched = client
        .lines(
            day,
            &LinesQuery {
                q: Some("m-3".into()),
                ..LinesQuery::default()
            },
        )
        .await
        .expect("lines");
    assert_eq!(
        (merchants(&searched), searched.total),
        (vec!["m-3".into()], 1)
    );
    let second_page = client
        .lines(
            day,
            &LinesQuery {
                page: Some(2),
                per_page: Some(1),
                ..LinesQuery::default()
            },
        )
        .await
        .expect("lines");
    assert_eq!(
        (merchants(&second_page), second_page.page, second_page.total),
        (vec!["m-2".into()], 2, 3)
    );
    assert_problem(
        client
            .lines(
                day,
                &LinesQuery {
                    per_page: Some(501),
                    ..LinesQuery::default()
                },
            )
            .await,
        400,
        problem_types::INVALID_REQUEST,
    );

    // Revisions and payouts: one payout per line, its net, sent to the provider.
    let revisions = client.revisions(day).await.expect("revisions");
    assert_eq!(revisions.len(), 1);
    assert_eq!(revisions[0], *settlement);
    let payouts = client.payouts(day).await.expect("payouts");
    let paid: BTreeMap<String, i64> = payouts
        .iter()
        .map(|p| (p.reference.clone(), p.amount_minor))
        .collect();
    let owed: BTreeMap<String, i64> = LINES
        .iter()
        .map(|l| {
            (
                format!("{DAY}.{}.r1.{}", l.currency, l.merchant),
                l.net_minor,
            )
        })
        .collect();
    assert_eq!(paid, owed);
    assert!(payouts.iter().all(|p| p.status == PayoutStatus::Sent
        && p.revision == 1
        && p.provider_payout_id.is_some()));
    assert!(client
        .payouts(date(NEXT_DAY))
        .await
        .expect("payouts")
        .is_empty());

    // Summary: per currency, decimal strings and success rates; top merchants by volume.
    let summary = client.summary(day, day, Some(10)).await.expect("summary");
    assert_eq!(
        (summary.from, summary.to, summary.settled_days),
        (day, day, 1)
    );
    let currencies: BTreeMap<&str, (&str, &str, &str, &str, i64)> = summary
        .currencies
        .iter()
        .map(|c| {
            (
                c.currency.code(),
                (
                    c.gross.as_str(),
                    c.fees.as_str(),
                    c.net.as_str(),
                    c.success_rate.as_str(),
                    c.figures.net_minor,
                ),
            )
        })
        .collect();
    assert_eq!(
        currencies,
        BTreeMap::from([
            ("SAR", ("80.00", "1.60", "78.40", "1.0000", 7_840)),
            // 4 completed of 5 decided.
            ("USD", ("400.00", "8.30", "381.70", "0.8000", 38_170)),
        ])
    );
    let top: Vec<(&str, &str, &str)> = summary
        .top_merchants
        .iter()
        .map(|m| (m.currency.code(), m.merchant_id.as_str(), m.gross.as_str()))
        .collect();
    assert_eq!(
        top,
        [
            ("SAR", "m-3", "80.00"),
            ("USD", "m-2", "250.00"),
            ("USD", "m-1", "150.00")
        ]
    );

    // Audit: the operator's trigger, newest first, paged.
    let audit = client.audit(Some(1), Some(100)).await.expect("audit");
    assert!(
        audit.items.iter().any(|e| e.actor == "token:ops-ana"
            && e.action == "http.request"
            && e.subject == format!("POST /api/v2/finance/settlement/trigger/{DAY}")
            && e.outcome == "succeeded"),
        "{:#?}",
        audit.items
    );
    assert!(audit
        .items
        .windows(2)
        .all(|pair| pair[0].occurred_at >= pair[1].occurred_at));
    let one = client.audit(None, Some(1)).await.expect("audit");
    assert_eq!((one.items.len(), one.has_more), (1, true));

    // The chart: a PNG of the asked size (IHDR width and height, big-endian).
    let png = client
        .chart_png(day, day, Some(640), Some(480))
        .await
        .expect("chart");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 640);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 480);
    assert!(client
        .chart_png(date("2023-01-01"), date("2023-01-31"), None, None)
        .await
        .is_err_and(|e| matches!(e, ClientError::NotFound { .. })));

    // The export: exactly the route's bytes, with and without a byte order mark.
    let csv = client.export_csv(day, None, false).await.expect("export");
    let served = daemon
        .get(&format!("/api/v2/finance/settlement/{DAY}/export.csv"))
        .bearer(&viewer)
        .send()
        .await;
    assert_eq!(served.status, 200);
    assert_eq!(csv, served.body);
    let rows = read_export(std::str::from_utf8(&csv).expect("utf-8"));
    let nets: BTreeMap<String, String> = rows
        .iter()
        .map(|row| (row["merchant_id"].clone(), row["net_minor"].clone()))
        .collect();
    let expected_nets: BTreeMap<String, String> = LINES
        .iter()
        .map(|l| (l.merchant.to_string(), l.net_minor.to_string()))
        .collect();
    assert_eq!(nets, expected_nets);
    let with_bom = client.export_csv(day, Some(1), true).await.expect("export");
    assert_eq!(with_bom[..3], *b"\xEF\xBB\xBF");
    assert_eq!(with_bom[3..], csv[..]);

    // A late arrival for the settled day goes to the next date and is listed there.
    import(
        &setup,
        "late.csv",
        &[format!(
            "late-1,m-1,payment,completed,5.00,USD,card,{DAY}T16:00:00+03:00,"
        )],
    );
    let next = settle(&connect(&daemon, &operator), date(NEXT_DAY)).await;
    assert_eq!(next.revision, 1);
    let detail = client
        .settlement(date(NEXT_DAY), None)
        .await
        .expect("settlement");
    let late = &detail.late_transactions;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(
        (
            late[0].external_ref.as_str(),
            late[0].amount.as_str(),
            late[0].amount_minor,
            late[0].currency.code(),
            late[0].late,
            late[0].settlement_date,
            late[0].occurred_at,
        ),
        (
            "late-1",
            "5.00",
            500,
            "USD",
            true,
            date(NEXT_DAY),
            utc("2024-03-10T13:00:00Z")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_makes_revision_two_and_retry_resumes_a_failed_run() {
    let setup = setup("");
    let operator = setup.token("ops-ana", "operator");
    let day = date(DAY);

    let failing = setup.start_with_env(&[("SETTLE_FAILPOINTS", FAIL_BEFORE_COMPLETE)]);
    let accepted = connect(&failing, &operator)
        .trigger(Some(day), &IdempotencyKey::fresh())
        .await
        .expect("triggered");
    let failed = finished(
        &connect(&failing, &operator),
        day,
        accepted.settlement.revision,
    )
    .await;
    assert_eq!(failed.status, SettlementStatus::Failed);
    assert!(failed
        .error
        .as_deref()
        .is_some_and(|e| e.contains("settlement.before_complete")));
    drop(failing);

    let daemon = setup.start();
    let client = connect(&daemon, &operator);
    assert_problem(
        client.retry(date(NEXT_DAY), &IdempotencyKey::fresh()).await,
        409,
        problem_types::NOTHING_TO_DO,
    );
    let retried = client
        .retry(day, &IdempotencyKey::fresh())
        .await
        .expect("retried");
    assert_eq!(
        retried.settlement.revision, 1,
        "the failed revision resumes"
    );
    let resumed = finished(&client, day, 1).await;
    assert_eq!(resumed.status, SettlementStatus::Completed);
    assert_eq!(resumed.attempts, 2);
    assert_eq!(totals_of(&resumed), expected_totals());

    let reason = "chargeback file arrived late";
    let key = IdempotencyKey::fresh();
    let RerunOutcome::Started(rerun) = client.rerun(day, reason, false, &key).await.expect("rerun")
    else {
        panic!("no four-eyes: the rerun starts at once");
    };
    assert_eq!(rerun.settlement.revision, 2);
    assert!(!rerun.replayed);
    let RerunOutcome::Started(again) = client
        .rerun(day, reason, false, &key)
        .await
        .expect("replayed")
    else {
        panic!("a replay answers the same");
    };
    assert!(again.replayed && again.settlement == rerun.settlement);
    let second = finished(&client, day, 2).await;
    assert_eq!(second.status, SettlementStatus::Completed);
    assert_eq!(second.reason.as_deref(), Some(reason));
    assert_eq!(totals_of(&second), expected_totals());

    let revisions = client.revisions(day).await.expect("revisions");
    assert_eq!(
        revisions.iter().map(|s| s.revision).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        client
            .settlement(day, Some(1))
            .await
            .expect("revision 1")
            .settlement,
        resumed
    );
    let every = client
        .history(&HistoryQuery {
            all_revisions: true,
            ..HistoryQuery::default()
        })
        .await
        .expect("history");
    assert_eq!(every.items.len(), 2);
    assert_problem(
        client
            .rerun(day, " ", false, &IdempotencyKey::fresh())
            .await,
        422,
        problem_types::INVALID_REQUEST,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_reruns_are_approved_or_rejected_by_another_operator() {
    let setup = setup("[server]\nrequire_rerun_approval = true\n");
    let alice = setup.token("alice", "operator");
    let bob = setup.token("bob", "operator");
    let daemon = setup.start();
    let (alice, bob) = (connect(&daemon, &alice), connect(&daemon, &bob));
    let day = date(DAY);
    settle(&alice, day).await;

    let RerunOutcome::AwaitingApproval(pending) = alice
        .rerun(day, "fees corrected", true, &IdempotencyKey::fresh())
        .await
        .expect("requested")
    else {
        panic!("four-eyes: a rerun waits for approval");
    };
    let request = &pending.rerun_request;
    assert_eq!(
        (
            request.status,
            request.requested_by.as_str(),
            request.apply_current_fees
        ),
        (RerunRequestStatus::Pending, "token:alice", true)
    );
    let waiting = bob
        .rerun_requests(Some(RerunRequestStatus::Pending))
        .await
        .expect("requests");
    assert_eq!(
        waiting.iter().map(|r| r.id).collect::<Vec<_>>(),
        [request.id]
    );

    assert_problem(
        alice.approve(request.id, &IdempotencyKey::fresh()).await,
        403,
        problem_types::APPROVAL_REFUSED,
    );
    let approved = bob
        .approve(request.id, &IdempotencyKey::fresh())
        .await
        .expect("approved");
    assert_eq!(approved.settlement.revision, 2);
    assert_eq!(
        finished(&bob, day, 2).await.status,
        SettlementStatus::Completed
    );

    let RerunOutcome::AwaitingApproval(second) = alice
        .rerun(day, "once more", false, &IdempotencyKey::fresh())
        .await
        .expect("requested")
    else {
        panic!("four-eyes: a rerun waits for approval");
    };
    let rejected = bob
        .reject(second.rerun_request.id, &IdempotencyKey::fresh())
        .await
        .expect("rejected");
    assert_eq!(
        (rejected.status, rejected.decided_by.as_deref()),
        (RerunRequestStatus::Rejected, Some("token:bob"))
    );
    assert_eq!(alice.rerun_requests(None).await.expect("requests").len(), 2);
    assert!(alice
        .rerun_requests(Some(RerunRequestStatus::Pending))
        .await
        .expect("requests")
        .is_empty());
    assert!(alice
        .approve(uuid::Uuid::new_v4(), &IdempotencyKey::fresh())
        .await
        .is_err_and(|e| matches!(e, ClientError::NotFound { .. })));
    assert_eq!(alice.revisions(day).await.expect("revisions").len(), 2);
}
