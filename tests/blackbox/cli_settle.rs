//! `settle run | rerun | retry | show | history` on the real binary: exact figures, exactly-once
//! under racing processes, crash takeover after lease expiry, late arrivals, refusals.

use std::time::{Duration, Instant};

use settle_core::model::SettlementStatus;

use crate::support::{read_export, transactions_csv, Sandbox};

const FEES: &str = r#"
[fees.default]
percent = "2.5"
fixed = { USD = "0.30" }
refund_returns_percent = true
"#;

/// A day in Aden (UTC+3): 2024-03-10 runs from 2024-03-09T21:00Z to 2024-03-10T21:00Z.
fn day_csv() -> String {
    transactions_csv(&[
        // The window's first instant belongs to it.
        "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T00:00:00+03:00,",
        // The last hour of the local day (the origin's 23:00 UTC job missed it).
        "p-2,m-1,payment,completed,10.10,USD,wallet,2024-03-10T23:59:59.999+03:00,",
        "r-1,m-1,refund,completed,40.00,USD,card,2024-03-10T12:00:00+03:00,p-1",
        "p-3,m-1,payment,failed,5.00,USD,card,2024-03-10T12:00:00+03:00,",
        "c-1,m-1,chargeback,completed,10.00,USD,wallet,2024-03-10T13:00:00+03:00,p-2",
        "a-1,m-2,adjustment,completed,-3.00,USD,other,2024-03-10T14:00:00+03:00,",
        "p-4,m-2,payment,completed,0.01,USD,cash,2024-03-10T15:00:00+03:00,",
        "p-5,m-2,payment,completed,1.234,KWD,card,2024-03-10T16:00:00+03:00,",
        // The window's end belongs to the next date.
        "p-next,m-1,payment,completed,50.00,USD,card,2024-03-11T00:00:00+03:00,",
    ])
}

fn settled_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write("settle.toml", FEES);
    let csv = sandbox.write("day.csv", day_csv());
    sandbox
        .run(&["--config", "settle.toml", "import", csv.to_str().unwrap()])
        .assert_ok();
    sandbox
}

#[test]
fn a_day_settles_to_exact_lines_fees_and_totals() {
    let sandbox = settled_sandbox();
    let ran = sandbox.run(&["--config", "settle.toml", "run", "--date", "2024-03-10"]);
    ran.assert_ok();
    assert!(
        ran.stdout
            .contains("settled 2024-03-10 revision 1: 3 merchant line(s)"),
        "{}",
        ran.stdout
    );

    let export = sandbox.run(&["export", "--date", "2024-03-10"]);
    export.assert_ok();
    let rows = read_export(&export.stdout);
    let line = |merchant: &str, currency: &str| {
        rows.iter()
            .find(|r| r["merchant_id"] == merchant && r["currency"] == currency)
            .unwrap_or_else(|| panic!("no line for {merchant} {currency}: {rows:?}"))
    };
    let m1 = line("m-1", "USD");
    // fees: 2.50+0.30 on 100.00, 0.2525+0.30 -> 0.55 on 10.10, minus 1.00 returned by the 40.00 refund.
    for (column, expected) in [
        ("transaction_count", "5"),
        ("completed_count", "4"),
        ("failed_count", "1"),
        ("payment_count", "2"),
        ("refund_count", "1"),
        ("chargeback_count", "1"),
        ("gross", "110.10"),
        ("refunds", "40.00"),
        ("chargebacks", "10.00"),
        ("fees", "2.35"),
        ("net", "57.75"),
        ("net_minor", "5775"),
    ] {
        assert_eq!(m1[column], expected, "m-1 {column}");
    }
    let m2 = line("m-2", "USD");
    // A 0.01 payment still pays the 0.30 fixed fee; the debit adjustment makes the net negative.
    assert_eq!(
        (
            m2["fees"].as_str(),
            m2["adjustments"].as_str(),
            m2["net"].as_str()
        ),
        ("0.30", "-3.00", "-3.29")
    );
    let kwd = line("m-2", "KWD");
    // 2.5 % of 1.234 is 0.03085: three decimals for KWD, half away from zero.
    assert_eq!(
        (
            kwd["fees"].as_str(),
            kwd["net"].as_str(),
            kwd["net_minor"].as_str()
        ),
        ("0.031", "1.203", "1203")
    );
    assert!(rows
        .iter()
        .all(|r| r["settlement_date"] == "2024-03-10" && r["revision"] == "1"));

    let show = sandbox.run(&["show", "--date", "2024-03-10"]);
    show.assert_ok();
    assert!(show.stdout.contains("completed"), "{}", show.stdout);
    assert!(
        show.stdout.contains("54.46"),
        "USD day net = 57.75 - 3.29:\n{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("2024-03-10 00:00 +03"),
        "window shown in business time:\n{}",
        show.stdout
    );
}

#[test]
fn an_open_date_and_a_settled_date_are_refused() {
    let sandbox = settled_sandbox();
    let far = sandbox.run(&["run", "--date", "2099-01-01"]);
    far.assert_code(3);
    assert!(far.stderr.contains("still open"), "{}", far.stderr);
    sandbox.run(&["run", "--date", "2024-03-10"]).assert_ok();
    let again = sandbox.run(&["run", "--date", "2024-03-10"]);
    again.assert_code(3);
    assert!(again.stderr.contains("already settled"), "{}", again.stderr);
    let retry = sandbox.run(&["retry", "--date", "2024-03-10"]);
    retry.assert_code(3);
}

#[test]
fn a_day_without_transactions_is_still_a_settled_day() {
    let sandbox = Sandbox::new();
    let ran = sandbox.run(&["run", "--date", "2024-01-02"]);
    ran.assert_ok();
    assert!(ran.stdout.contains("zero totals"), "{}", ran.stdout);
    let show = sandbox.run(&["show", "--date", "2024-01-02"]);
    assert!(
        show.stdout.contains("completed") && show.stdout.contains("zero totals"),
        "{}",
        show.stdout
    );
}

#[tokio::test]
async fn a_rerun_needs_a_reason_uses_the_stored_fees_and_keeps_revision_one() {
    let sandbox = settled_sandbox();
    sandbox
        .run(&["--config", "settle.toml", "run", "--date", "2024-03-10"])
        .assert_ok();
    let before = sandbox
        .run(&["export", "--date", "2024-03-10", "--revision", "1"])
        .stdout
        .clone();

    let blank = sandbox.run(&["rerun", "--date", "2024-03-10", "--reason", "  "]);
    blank.assert_code(2);
    assert!(blank.stderr.contains("reason"), "{}", blank.stderr);

    // The configuration changes; a plain rerun keeps the fees the date was settled with.
    sandbox.write("cheaper.toml", "[fees.default]\npercent = \"1\"\n");
    sandbox
        .run(&[
            "--config",
            "cheaper.toml",
            "rerun",
            "--date",
            "2024-03-10",
            "--reason",
            "recount",
        ])
        .assert_ok();
    let second = read_export(&sandbox.run(&["export", "--date", "2024-03-10"]).stdout);
    assert!(second.iter().all(|r| r["revision"] == "2"));
    let m1 = second.iter().find(|r| r["merchant_id"] == "m-1").unwrap();
    assert_eq!(m1["fees"], "2.35", "stored schedule applies");

    sandbox
        .run(&[
            "--config",
            "cheaper.toml",
            "rerun",
            "--date",
            "2024-03-10",
            "--reason",
            "apply the new rate",
            "--apply-current-fees",
        ])
        .assert_ok();
    let third = read_export(&sandbox.run(&["export", "--date", "2024-03-10"]).stdout);
    let m1 = third.iter().find(|r| r["merchant_id"] == "m-1").unwrap();
    // 1 % of 100.00 + 1 % of 10.10 (0.101 -> 0.10), no fixed part, refund returns nothing (setting gone).
    assert_eq!(
        (m1["revision"].as_str(), m1["fees"].as_str()),
        ("3", "1.10")
    );

    let after = sandbox
        .run(&["export", "--date", "2024-03-10", "--revision", "1"])
        .stdout
        .clone();
    assert_eq!(before, after, "revision 1 never changes");
    let store = sandbox.store().await;
    let revisions = store
        .settlement_revisions("2024-03-10".parse().unwrap())
        .await
        .unwrap();
    let reasons: Vec<_> = revisions.iter().map(|r| r.reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("recount".into()),
            Some("apply the new rate".into())
        ]
    );
    let audit = store.audit_events(50, 0).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "settlement.rerun")
            .count(),
        3,
        "refused ones too"
    );
}

#[tokio::test]
async fn a_rerun_that_needs_approval_is_refused_unless_run_explicitly_without_approval() {
    let sandbox = settled_sandbox();
    sandbox.write(
        "four-eyes.toml",
        format!("{FEES}\n[server]\nrequire_rerun_approval = true\n"),
    );
    let with_four_eyes = |args: &[&str]| {
        let mut all = vec!["--config", "four-eyes.toml"];
        all.extend_from_slice(args);
        sandbox.run(&all)
    };
    with_four_eyes(&["run", "--date", "2024-03-10"]).assert_ok();

    // As over the API: a rerun needs a second operator's approval.
    let refused = with_four_eyes(&["rerun", "--date", "2024-03-10", "--reason", "recount"]);
    refused.assert_code(3);
    for expected in [
        "require_rerun_approval",
        "/api/v2/finance/settlement/rerun/2024-03-10",
        "/rerun-requests/{id}/approve",
        "--without-approval",
    ] {
        assert!(
            refused.stderr.contains(expected),
            "{expected}: {}",
            refused.stderr
        );
    }
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    assert_eq!(store.settlement_revisions(date).await.unwrap().len(), 1);

    // An admin's explicit bypass runs it, audited with the reason.
    let bypassed = with_four_eyes(&[
        "rerun",
        "--date",
        "2024-03-10",
        "--reason",
        "provider file corrected",
        "--without-approval",
    ]);
    bypassed.assert_ok();
    assert!(
        bypassed.stdout.contains("settled 2024-03-10 revision 2"),
        "{}",
        bypassed.stdout
    );
    let revisions = store.settlement_revisions(date).await.unwrap();
    assert_eq!(revisions.len(), 2);
    let reason = revisions[1].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("provider file corrected (without approval, by cli:"),
        "{reason}"
    );
    let audit = store.audit_events(50, 0).await.unwrap();
    let bypass: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "settlement.rerun_approval_bypassed")
        .collect();
    assert_eq!(bypass.len(), 1, "{audit:?}");
    assert_eq!(bypass[0].detail["reason"], "provider file corrected");
    assert_eq!(bypass[0].subject, "settlement_date=2024-03-10");
    assert!(bypass[0].actor.starts_with("cli:"), "{}", bypass[0].actor);
}

#[tokio::test]
async fn a_failed_run_keeps_its_error_and_retry_resumes_it() {
    let sandbox = settled_sandbox();
    let failed = sandbox.run_with_env(
        &["run", "--date", "2024-03-10"],
        &[("SETTLE_FAILPOINTS", "settlement.before_complete=error")],
    );
    failed.assert_code(1);
    assert!(
        failed.stderr.contains("injected failure"),
        "{}",
        failed.stderr
    );
    let show = sandbox.run(&["show", "--date", "2024-03-10"]);
    assert!(
        show.stdout.contains("failed") && show.stdout.contains("injected failure"),
        "{}",
        show.stdout
    );

    let run = sandbox.run(&["run", "--date", "2024-03-10"]);
    run.assert_code(3);
    assert!(run.stderr.contains("use `retry`"), "{}", run.stderr);
    let retried = sandbox.run(&["retry", "--date", "2024-03-10"]);
    retried.assert_ok();
    assert!(
        retried.stdout.contains("revision 1 (resumed)"),
        "{}",
        retried.stdout
    );
    let store = sandbox.store().await;
    let revisions = store
        .settlement_revisions("2024-03-10".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(revisions.len(), 1);
    assert_eq!(
        (revisions[0].status, revisions[0].attempts),
        (SettlementStatus::Completed, 2)
    );
}

#[tokio::test]
async fn a_crashed_run_blocks_until_its_lease_expires_then_is_taken_over() {
    let sandbox = settled_sandbox();
    sandbox.write("short-lease.toml", "[settlement]\nlease_seconds = 2\n");
    let crashed = sandbox.run_with_env(
        &[
            "--config",
            "short-lease.toml",
            "run",
            "--date",
            "2024-03-10",
        ],
        &[("SETTLE_FAILPOINTS", "settlement.after_claim=abort")],
    );
    assert_ne!(crashed.code, 0, "the process was aborted");
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    let stuck = store.settlement(date, None).await.unwrap().unwrap();
    assert_eq!(stuck.status, SettlementStatus::Running);
    let expires_at = stuck.lease.as_ref().unwrap().expires_at;

    let blocked = sandbox.run(&[
        "--config",
        "short-lease.toml",
        "run",
        "--date",
        "2024-03-10",
    ]);
    if chrono::Utc::now() < expires_at {
        blocked.assert_code(3);
        assert!(
            blocked.stderr.contains("already running"),
            "{}",
            blocked.stderr
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while chrono::Utc::now() <= expires_at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let resumed = sandbox.run(&[
        "--config",
        "short-lease.toml",
        "run",
        "--date",
        "2024-03-10",
    ]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("(resumed)"), "{}", resumed.stdout);
    let done = store.settlement(date, None).await.unwrap().unwrap();
    assert_eq!(
        (done.revision, done.status, done.lease_version),
        (1, SettlementStatus::Completed, 2)
    );
}

#[test]
fn a_late_transaction_settles_on_the_next_open_date_and_is_listed() {
    let sandbox = settled_sandbox();
    sandbox.run(&["run", "--date", "2024-03-10"]).assert_ok();
    let late = sandbox.write(
        "late.csv",
        transactions_csv(&[
            "p-late,m-1,payment,completed,20.00,USD,card,2024-03-10T09:00:00+03:00,",
        ]),
    );
    let imported = sandbox.run(&["import", late.to_str().unwrap()]);
    imported.assert_ok();
    assert!(
        imported.stdout.contains("already settled"),
        "{}",
        imported.stdout
    );

    sandbox.run(&["run", "--date", "2024-03-11"]).assert_ok();
    let rows = read_export(&sandbox.run(&["export", "--date", "2024-03-11"]).stdout);
    let m1 = rows.iter().find(|r| r["merchant_id"] == "m-1").unwrap();
    // p-next (50.00) belongs to 03-11; p-late (20.00) joins it, marked late.
    assert_eq!(
        (m1["gross"].as_str(), m1["late_count"].as_str()),
        ("70.00", "1")
    );
    let show = sandbox.run(&["show", "--date", "2024-03-11"]);
    assert!(
        show.stdout.contains("Late transactions (1)"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("p-late") && show.stdout.contains("2024-03-10T06:00:00.000Z"),
        "{}",
        show.stdout
    );
    let before = read_export(&sandbox.run(&["export", "--date", "2024-03-10"]).stdout);
    let m1_before = before.iter().find(|r| r["merchant_id"] == "m-1").unwrap();
    assert_eq!(
        m1_before["gross"], "110.10",
        "the settled date is not changed"
    );
}

#[test]
fn history_lists_settlements_newest_first_and_filters_by_status() {
    let sandbox = settled_sandbox();
    sandbox.run(&["run", "--date", "2024-03-10"]).assert_ok();
    sandbox.run(&["run", "--date", "2024-03-11"]).assert_ok();
    sandbox
        .run_with_env(
            &["run", "--date", "2024-03-12"],
            &[("SETTLE_FAILPOINTS", "settlement.before_complete=error")],
        )
        .assert_code(1);
    let history = sandbox.run(&["history"]);
    history.assert_ok();
    let order: Vec<usize> = ["2024-03-12", "2024-03-11", "2024-03-10"]
        .iter()
        .map(|d| {
            history
                .stdout
                .find(d)
                .unwrap_or_else(|| panic!("{d} missing:\n{}", history.stdout))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", history.stdout);
    let failed = sandbox.run(&["history", "--status", "failed"]);
    assert!(
        failed.stdout.contains("2024-03-12") && !failed.stdout.contains("2024-03-11"),
        "{}",
        failed.stdout
    );
    let bad = sandbox.run(&["history", "--status", "done"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("\"done\""), "{}", bad.stderr);
}

/// Issue 15: `settle run … | head -1` must not panic when the reader goes away. The pipe is
/// closed before the command writes anything: it ends by SIGPIPE, quietly, with its settlement
/// stored.
#[cfg(unix)]
#[test]
fn output_to_a_closed_pipe_ends_quietly_after_the_work_is_done() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let sandbox = settled_sandbox();
    let mut child = sandbox
        .command(&["--config", "settle.toml", "run", "--date", "2024-03-10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start settle run");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("settle run ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "ends as a Unix tool does on a closed pipe: {:?} {stderr}",
        output.status
    );
    let shown = sandbox.run(&["--config", "settle.toml", "show", "--date", "2024-03-10"]);
    shown.assert_ok();
    assert!(shown.stdout.contains("completed"), "{}", shown.stdout);
}
