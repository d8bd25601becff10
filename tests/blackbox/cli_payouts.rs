//! Payouts and notifications end to end: the real `settle` binary against a real HTTP provider
//! and webhook receiver on 127.0.0.1 that fail, time out and answer late on purpose.
//!
//! The provider keeps its own ledger: whatever happens, it must hold exactly one payout per
//! reference, and what it paid must match what the settlements owe.

use settle_core::model::{PayoutStatus, SettlementStatus};
use settle_core::money::Currency;
use settle_core::notify::{EVENT_COMPLETED, EVENT_FAILED};
use settle_core::provider::ProviderPayoutStatus;
use settle_core::secret::Secret;

use crate::provider_server::{Behaviour, ProviderServer};
use crate::support::{transactions_csv, Ran, Sandbox};
use crate::webhook_receiver::WebhookReceiver;

const WEBHOOK_SECRET: &str = "whsec-test-0123456789";

/// A sandbox configured to pay through `provider` and notify `receiver`, with fast retries.
fn sandbox(provider: &ProviderServer, receiver: &WebhookReceiver, percent: &str) -> Sandbox {
    let sandbox = Sandbox::new();
    let fast = "max_retries = 2\nbase_delay_ms = 10\nmax_delay_ms = 50\nattempt_timeout_ms = 300\ndeadline_ms = 5000\n";
    sandbox.write(
        "settle.toml",
        format!(
            "[fees.default]\npercent = \"{percent}\"\n[payouts]\nprovider_url = \"{}\"\n[notifications]\nwebhook_url = \"{}\"\n\
             [retry.payment]\n{fast}[retry.external_api]\n{fast}",
            provider.base_url(),
            receiver.url()
        ),
    );
    sandbox
}

/// Runs `settle` while the servers keep answering on this runtime's other threads.
fn settle(sandbox: &Sandbox, args: &[&str]) -> Ran {
    let mut full = vec!["--config", "settle.toml"];
    full.extend_from_slice(args);
    tokio::task::block_in_place(|| {
        sandbox.run_with_env(&full, &[("SETTLE_WEBHOOK_SECRET", WEBHOOK_SECRET)])
    })
}

fn import(sandbox: &Sandbox, rows: &[&str]) {
    let file = sandbox.write("day.csv", transactions_csv(rows));
    settle(sandbox, &["import", file.to_str().unwrap()]).assert_ok();
}

fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

fn peers() -> (ProviderServer, WebhookReceiver) {
    (
        ProviderServer::start(),
        WebhookReceiver::start(Secret::new(WEBHOOK_SECRET)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_merchant_is_paid_once_despite_failures_and_lost_answers() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,50.00,USD,card,2024-03-10T11:00:00+03:00,",
            "p-3,m-3,payment,completed,10.00,SAR,cash,2024-03-10T12:00:00+03:00,",
            "a-4,m-4,adjustment,completed,-5.00,USD,other,2024-03-10T13:00:00+03:00,",
        ],
    );
    // m-1's payout: a 500, then the provider pays but answers after the client gave up.
    provider.script([
        Behaviour::Fail500,
        Behaviour::CommitThenHang { delay_ms: 1_000 },
    ]);
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();

    let ledger = provider.ledger();
    let mut references: Vec<_> = ledger.iter().map(|e| e.reference.clone()).collect();
    references.sort();
    assert_eq!(
        references,
        [
            "2024-03-10.SAR.r1.m-3",
            "2024-03-10.USD.r1.m-1",
            "2024-03-10.USD.r1.m-2"
        ],
        "one payout per merchant and currency, none for a negative net"
    );
    assert_eq!(
        provider.paid_total(usd()),
        9_750 + 4_875,
        "the positive nets: 97.50 + 48.75"
    );
    assert_eq!(
        provider.paid_total(Currency::from_code("SAR").unwrap()),
        975
    );

    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    let payouts = store.payouts(date).await.unwrap();
    assert!(
        payouts.iter().all(|p| p.status == PayoutStatus::Sent),
        "{payouts:?}"
    );
    let owed = store.carry_forwards(true).await.unwrap();
    assert_eq!(
        (
            owed.len(),
            owed[0].merchant_id.as_str(),
            owed[0].amount_minor
        ),
        (1, "m-4", -500)
    );
    let show = settle(&sandbox, &["show", "--date", "2024-03-10"]);
    assert!(
        show.stdout.contains("Payouts (3)") && show.stdout.contains("sent"),
        "{}",
        show.stdout
    );

    let events = receiver.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].event.as_str(), events[0].revision),
        (EVENT_COMPLETED, 1)
    );
    let usd_totals = events[0]
        .totals
        .iter()
        .find(|t| t.currency == "USD")
        .unwrap();
    assert_eq!(
        (usd_totals.net.as_str(), usd_totals.fees.as_str()),
        ("141.25", "3.75")
    );
    assert_eq!(
        receiver.rejected_count(),
        0,
        "every delivery carried a valid signature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_whose_answer_was_lost_is_looked_up_before_anything_is_sent_again() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    // Every attempt is paid by the provider but answered too late: the outcome is unknown.
    provider.script(std::iter::repeat_n(
        Behaviour::CommitThenHang { delay_ms: 1_000 },
        3,
    ));
    let failed = settle(&sandbox, &["run", "--date", "2024-03-10"]);
    failed.assert_code(1);
    assert!(
        failed.stderr.contains("not confirmed sent"),
        "{}",
        failed.stderr
    );
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    assert_eq!(
        store.payouts(date).await.unwrap()[0].status,
        PayoutStatus::Unknown
    );
    assert_eq!(
        store.settlement(date, None).await.unwrap().unwrap().status,
        SettlementStatus::Failed
    );
    assert_eq!(receiver.events().last().unwrap().event, EVENT_FAILED);

    let posts_before = provider.post_count();
    settle(&sandbox, &["retry", "--date", "2024-03-10"]).assert_ok();
    assert_eq!(
        provider.post_count(),
        posts_before,
        "found by lookup: nothing sent again"
    );
    assert_eq!(provider.ledger().len(), 1);
    let payout = &store.payouts(date).await.unwrap()[0];
    assert_eq!(
        (payout.status, payout.amount_minor),
        (PayoutStatus::Sent, 9_750)
    );
    assert_eq!(receiver.events().last().unwrap().event, EVENT_COMPLETED);

    // Confirmation comes from the provider's own status.
    assert!(provider.set_status("2024-03-10.USD.r1.m-1", ProviderPayoutStatus::Paid));
    let checked = settle(&sandbox, &["payouts", "check", "--date", "2024-03-10"]);
    checked.assert_ok();
    assert!(
        checked
            .stdout
            .contains("1 payout(s) of 2024-03-10 changed status"),
        "{}",
        checked.stdout
    );
    assert_eq!(
        store.payouts(date).await.unwrap()[0].status,
        PayoutStatus::Confirmed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_pay_only_the_difference_and_a_lower_net_is_deducted_next_time() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-1,payment,completed,10.00,USD,card,2024-03-11T10:00:00+03:00,",
        ],
    );
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();
    sandbox.write(
        "one.toml",
        std::fs::read_to_string(sandbox.path().join("settle.toml"))
            .unwrap()
            .replace("2.5", "1"),
    );
    sandbox.write(
        "five.toml",
        std::fs::read_to_string(sandbox.path().join("settle.toml"))
            .unwrap()
            .replace("2.5", "5"),
    );
    let rerun = |config: &str, reason: &str| {
        tokio::task::block_in_place(|| {
            sandbox.run_with_env(
                &[
                    "--config",
                    config,
                    "rerun",
                    "--date",
                    "2024-03-10",
                    "--reason",
                    reason,
                    "--apply-current-fees",
                ],
                &[("SETTLE_WEBHOOK_SECRET", WEBHOOK_SECRET)],
            )
        })
    };
    rerun("one.toml", "negotiated rate").assert_ok();
    rerun("five.toml", "rate correction").assert_ok();
    tokio::task::block_in_place(|| {
        sandbox.run_with_env(
            &["--config", "five.toml", "run", "--date", "2024-03-11"],
            &[("SETTLE_WEBHOOK_SECRET", WEBHOOK_SECRET)],
        )
    })
    .assert_ok();

    let mut ledger: Vec<_> = provider
        .ledger()
        .into_iter()
        .map(|e| (e.reference, e.amount_minor))
        .collect();
    ledger.sort();
    assert_eq!(
        ledger,
        [
            ("2024-03-10.USD.r1.m-1".to_string(), 9_750), // 100.00 at 2.5 %
            ("2024-03-10.USD.r2.m-1".to_string(), 150),   // 99.00 at 1 %: pays the 1.50 difference
            ("2024-03-11.USD.r1.m-1".to_string(), 550), // 9.50, less the 4.00 that revision 3 overpaid
        ]
    );
    // What the provider paid equals what the latest revisions owe: 95.00 + 9.50.
    assert_eq!(provider.paid_total(usd()), 9_500 + 950);
    let store = sandbox.store().await;
    assert!(
        store.carry_forwards(true).await.unwrap().is_empty(),
        "the owed 4.00 was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_payouts_wait_until_the_merchant_is_released() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,40.00,USD,card,2024-03-10T10:00:00+03:00,",
        ],
    );
    settle(
        &sandbox,
        &["merchant", "hold", "m-2", "--reason", "KYC review"],
    )
    .assert_ok();
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();
    assert_eq!(provider.ledger().len(), 1, "only m-1 is paid");
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    let held = store
        .payouts(date)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.merchant_id == "m-2")
        .unwrap();
    assert_eq!(held.status, PayoutStatus::Held);
    let list = settle(&sandbox, &["merchant", "list"]);
    assert!(
        list.stdout.contains("m-2") && list.stdout.contains("KYC review"),
        "{}",
        list.stdout
    );

    let released = settle(&sandbox, &["merchant", "release", "m-2"]);
    released.assert_ok();
    assert!(
        released.stdout.contains("1 payout(s) to send"),
        "{}",
        released.stdout
    );
    let paid: Vec<_> = provider
        .ledger()
        .into_iter()
        .map(|e| (e.merchant_id, e.amount_minor))
        .collect();
    assert!(paid.contains(&("m-2".to_string(), 3_900)), "{paid:?}");
    settle(&sandbox, &["merchant", "release", "m-2"]).assert_code(2);
    let audit = store.audit_events(50, 0).await.unwrap();
    assert!(
        audit.iter().any(|e| e.action == "merchant.hold")
            && audit.iter().any(|e| e.action == "merchant.release")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_payout_is_recorded_and_a_rerun_pays_it_anew() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    provider.script([Behaviour::Reject422]);
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    let rejected = &store.payouts(date).await.unwrap()[0];
    assert_eq!(rejected.status, PayoutStatus::Failed);
    assert!(
        rejected.last_error.as_deref().unwrap_or("").contains("422"),
        "{rejected:?}"
    );
    assert_eq!(provider.paid_total(usd()), 0);

    settle(
        &sandbox,
        &[
            "rerun",
            "--date",
            "2024-03-10",
            "--reason",
            "bank details fixed",
        ],
    )
    .assert_ok();
    let ledger = provider.ledger();
    let paid: Vec<_> = ledger
        .iter()
        .filter(|e| e.status != ProviderPayoutStatus::Failed)
        .map(|e| (e.reference.as_str(), e.amount_minor))
        .collect();
    assert_eq!(paid, [("2024-03-10.USD.r2.m-1", 9_750)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_never_fails_the_settlement() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    receiver.fail_next(10);
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();
    assert_eq!(receiver.attempts(), 3, "the external_api policy: 2 retries");
    assert!(receiver.events().is_empty());
    let store = sandbox.store().await;
    let date = "2024-03-10".parse().unwrap();
    assert_eq!(
        store.settlement(date, None).await.unwrap().unwrap().status,
        SettlementStatus::Completed
    );
    let show = settle(&sandbox, &["show", "--date", "2024-03-10"]);
    assert!(
        show.stdout.contains("Notifications") && show.stdout.contains("failed"),
        "{}",
        show.stdout
    );

    // Without the secret, a configured webhook is a startup error, not a silent skip.
    let no_secret = tokio::task::block_in_place(|| {
        sandbox.run(&["--config", "settle.toml", "run", "--date", "2024-03-11"])
    });
    no_secret.assert_code(1);
    assert!(
        no_secret.stderr.contains("SETTLE_WEBHOOK_SECRET"),
        "{}",
        no_secret.stderr
    );
}

/// A sandbox like `sandbox` whose payment attempts may take 5 s (a slow provider is not a lost answer).
fn patient_sandbox(provider: &ProviderServer, receiver: &WebhookReceiver) -> Sandbox {
    let sandbox = sandbox(provider, receiver, "2.5");
    let config = std::fs::read_to_string(sandbox.path().join("settle.toml"))
        .unwrap()
        .replacen("attempt_timeout_ms = 300", "attempt_timeout_ms = 5000", 1)
        .replacen("deadline_ms = 5000", "deadline_ms = 10000", 1);
    sandbox.write("settle.toml", config);
    sandbox
}

/// The payout of `reference`, as the store has it.
async fn stored_payout(sandbox: &Sandbox, reference: &str) -> settle_core::model::Payout {
    let date = reference[..10].parse().unwrap();
    sandbox
        .store()
        .await
        .payouts(date)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.reference == reference)
        .unwrap_or_else(|| panic!("no payout {reference}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_after_a_timed_out_attempt_leaves_the_payout_unknown_and_a_rerun_pays_nothing_twice()
{
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    // Attempt 1: the provider commits the payout but is still working when the client's 300 ms
    // attempt timeout passes; both retries with the same key get 409 "in progress".
    provider.script([Behaviour::CommitThenConflict409 { hang_ms: 3_000 }]);
    let run = settle(&sandbox, &["run", "--date", "2024-03-10"]);
    let posts_after_run = provider.post_count();
    let reference = "2024-03-10.USD.r1.m-1";
    let after_run = stored_payout(&sandbox, reference).await;
    let rerun = settle(
        &sandbox,
        &[
            "rerun",
            "--date",
            "2024-03-10",
            "--reason",
            "payout said failed",
        ],
    );

    let ledger: Vec<_> = provider
        .ledger()
        .into_iter()
        .map(|e| (e.reference, e.amount_minor))
        .collect();
    assert_eq!(
        ledger,
        [(reference.to_string(), 9_750)],
        "the rerun must not pay the committed payout again"
    );
    assert_eq!(
        after_run.status,
        PayoutStatus::Unknown,
        "a 409 is not a refusal: {after_run:?}"
    );
    assert!(
        after_run
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("409"),
        "{after_run:?}"
    );
    assert_eq!(posts_after_run, 3, "one attempt and two retries");
    run.assert_code(1);
    assert!(run.stderr.contains("not confirmed sent"), "{}", run.stderr);
    rerun.assert_ok();
    let store = sandbox.store().await;
    let payouts = store.payouts("2024-03-10".parse().unwrap()).await.unwrap();
    assert_eq!(
        payouts.len(),
        1,
        "revision 2 owes nothing more: {payouts:?}"
    );
    assert_eq!(
        (payouts[0].status, payouts[0].provider_payout_id.as_deref()),
        (PayoutStatus::Sent, Some("po_1")),
        "the rerun looked the unknown payout up"
    );
    assert_eq!(provider.post_count(), 3, "the rerun sent nothing");

    // The provider pays; a lookup confirms it.
    assert!(provider.set_status(reference, ProviderPayoutStatus::Paid));
    settle(&sandbox, &["payouts", "check", "--date", "2024-03-10"]).assert_ok();
    assert_eq!(
        stored_payout(&sandbox, reference).await.status,
        PayoutStatus::Confirmed
    );
    assert_eq!(provider.paid_total(usd()), 9_750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payout_older_than_a_day_is_rechecked_and_a_provider_that_paid_is_believed() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,40.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-3,m-3,payment,completed,20.00,USD,card,2024-03-10T10:00:00+03:00,",
        ],
    );
    // m-1 and m-2: the provider takes them but reports them failed; m-3: refused outright.
    provider.script([
        Behaviour::Status(ProviderPayoutStatus::Failed),
        Behaviour::Status(ProviderPayoutStatus::Failed),
        Behaviour::Reject422,
    ]);
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_ok();
    let store = sandbox.store().await;
    let date: chrono::NaiveDate = "2024-03-10".parse().unwrap();
    let statuses = |payouts: Vec<settle_core::model::Payout>| -> Vec<(String, PayoutStatus)> {
        payouts
            .into_iter()
            .map(|p| (p.merchant_id, p.status))
            .collect()
    };
    assert!(statuses(store.payouts(date).await.unwrap())
        .iter()
        .all(|(_, status)| *status == PayoutStatus::Failed));
    // Later the provider says m-1 was paid after all and m-2 accepted.
    assert!(provider.set_status("2024-03-10.USD.r1.m-1", ProviderPayoutStatus::Paid));
    assert!(provider.set_status("2024-03-10.USD.r1.m-2", ProviderPayoutStatus::Accepted));

    // Failed less than a day ago: not rechecked yet.
    let gets = provider.get_count();
    settle(&sandbox, &["payouts", "check", "--date", "2024-03-10"]).assert_ok();
    assert_eq!(provider.get_count(), gets, "too recent to recheck");
    assert!(statuses(store.payouts(date).await.unwrap())
        .iter()
        .all(|(_, status)| *status == PayoutStatus::Failed));

    // Two days pass (the failures are back-dated in the store).
    for payout in store.payouts(date).await.unwrap() {
        store
            .update_payout(&settle_core::store::PayoutUpdate {
                reference: payout.reference.clone(),
                from: PayoutStatus::Failed,
                to: PayoutStatus::Failed,
                provider_payout_id: None,
                attempts: 0,
                last_error: payout.last_error.clone(),
                now: chrono::Utc::now() - chrono::Duration::days(2),
            })
            .await
            .unwrap()
            .expect("still failed");
    }
    // Without --date: every date's sent and long-failed payouts.
    let checked = settle(&sandbox, &["payouts", "check"]);
    checked.assert_ok();
    assert_eq!(
        statuses(store.payouts(date).await.unwrap()),
        [
            ("m-1".to_string(), PayoutStatus::Confirmed),
            ("m-2".to_string(), PayoutStatus::Sent),
            ("m-3".to_string(), PayoutStatus::Failed),
        ],
        "{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("2024-03-10.USD.r1.m-1"),
        "{}",
        checked.stdout
    );
    let rechecks: Vec<_> = store
        .audit_events(50, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "payout.recheck")
        .map(|e| (e.subject, e.detail["from"].clone(), e.detail["to"].clone()))
        .collect();
    assert_eq!(rechecks.len(), 2, "{rechecks:?}");
    assert!(rechecks.contains(&(
        "payout=2024-03-10.USD.r1.m-1".to_string(),
        serde_json::json!("failed"),
        serde_json::json!("confirmed")
    )));
    // What the provider paid now counts: a rerun pays only m-3 again.
    settle(
        &sandbox,
        &[
            "rerun",
            "--date",
            "2024-03-10",
            "--reason",
            "m-3 bank details fixed",
        ],
    )
    .assert_ok();
    let revision_2: Vec<_> = provider
        .ledger()
        .into_iter()
        .filter(|e| e.reference.contains(".r2."))
        .map(|e| (e.merchant_id, e.amount_minor))
        .collect();
    assert_eq!(revision_2, [("m-3".to_string(), 1_950)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_and_a_merchant_release_never_have_one_payout_in_flight_at_once() {
    let (provider, receiver) = peers();
    let sandbox = patient_sandbox(&provider, &receiver);
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    // Nothing reaches the provider's ledger: the payout is left unknown and the run failed.
    provider.script(std::iter::repeat_n(Behaviour::Fail500, 3));
    settle(&sandbox, &["run", "--date", "2024-03-10"]).assert_code(1);
    let reference = "2024-03-10.USD.r1.m-1";
    assert_eq!(
        stored_payout(&sandbox, reference).await.status,
        PayoutStatus::Unknown
    );
    settle(
        &sandbox,
        &["merchant", "hold", "m-1", "--reason", "bank check"],
    )
    .assert_ok();

    // Both look the unknown payout up (404) at about the same moment; the provider takes 2 s.
    provider.script([Behaviour::SlowCommit { delay_ms: 2_000 }]);
    let spawn = |args: &[&str]| {
        let mut full = vec!["--config", "settle.toml"];
        full.extend_from_slice(args);
        let mut command = sandbox.command(&full);
        command
            .env("SETTLE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command.spawn().expect("spawn settle")
    };
    let retry = spawn(&["retry", "--date", "2024-03-10"]);
    let release = spawn(&["merchant", "release", "m-1"]);
    let (retry, release) = tokio::task::block_in_place(|| {
        (
            retry.wait_with_output().unwrap(),
            release.wait_with_output().unwrap(),
        )
    });
    let shown = |output: &std::process::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert_eq!(
        provider.max_in_flight_per_key(),
        1,
        "two processes had the payout in flight at once\nretry: {}\nrelease: {}",
        shown(&retry),
        shown(&release)
    );
    assert_eq!(provider.ledger().len(), 1);
    assert!(retry.status.success(), "{}", shown(&retry));
    assert!(release.status.success(), "{}", shown(&release));
    let payout = stored_payout(&sandbox, reference).await;
    assert_eq!(
        (payout.status, payout.provider_payout_id.as_deref()),
        (PayoutStatus::Sent, Some("po_1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_fails_again_after_a_retry_notifies_a_second_distinct_failure() {
    let (provider, receiver) = peers();
    let sandbox = sandbox(&provider, &receiver, "2.5");
    import(
        &sandbox,
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,"],
    );
    let failing = |command: &str| {
        let args = ["--config", "settle.toml", command, "--date", "2024-03-10"];
        tokio::task::block_in_place(|| {
            sandbox.run_with_env(
                &args,
                &[
                    ("SETTLE_WEBHOOK_SECRET", WEBHOOK_SECRET),
                    ("SETTLE_FAILPOINTS", "settlement.before_complete=error"),
                ],
            )
        })
    };
    failing("run").assert_code(1);
    // The second failure's first delivery is lost: its redelivery must keep the event's id.
    receiver.fail_next(1);
    failing("retry").assert_code(1);

    let events = receiver.events();
    let failures: Vec<_> = events
        .iter()
        .map(|e| (e.event.as_str(), e.revision, e.event_id.as_str()))
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "each failed attempt is its own event: {failures:?}"
    );
    assert!(failures
        .iter()
        .all(|(event, revision, _)| (*event, *revision) == (EVENT_FAILED, 1)));
    assert_ne!(failures[0].2, failures[1].2, "{failures:?}");
    assert_eq!(
        receiver.attempts(),
        3,
        "one delivery, then one lost and redelivered"
    );
    assert_eq!(
        receiver.accepted_count(),
        2,
        "the redelivery was not a third event"
    );
}
