//! `settle payment …` on the real binary: a process killed between its write and the idempotency
//! completion is taken over without a second transaction; a store failure releases the key.

use std::time::Duration;

use crate::support::Sandbox;

fn record_args<'a>(key: &'a str, amount: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        "settle.toml",
        "payment",
        "record",
        "--merchant",
        "m-1",
        "--amount",
        amount,
        "--currency",
        "USD",
        "--method",
        "card",
        "--external-ref",
        "pay-1",
        "--occurred-at",
        "2026-11-20T12:00:00+03:00",
        "--idempotency-key",
        key,
    ]
}

fn sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write("settle.toml", "[idempotency]\nlock_seconds = 1\n");
    sandbox
}

async fn stored(sandbox: &Sandbox) -> Vec<settle_core::model::Transaction> {
    let store = sandbox.store().await;
    store
        .transactions_by_ref(vec![("m-1".into(), "pay-1".into())])
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_killed_before_completing_is_taken_over_without_recording_twice() {
    let sandbox = sandbox();
    let killed = sandbox.run_with_env(
        &record_args("key-1", "12.50"),
        &[("SETTLE_FAILPOINTS", "idempotency.before_complete=abort")],
    );
    assert_ne!(killed.code, 0, "the process died");
    let written = stored(&sandbox).await;
    assert_eq!(
        written.len(),
        1,
        "the transaction was written before the crash"
    );

    let mut answer = sandbox.run(&record_args("key-1", "12.50"));
    for _ in 0..20 {
        if answer.code != 3 {
            break;
        }
        // Still locked by the dead process: 409 with Retry-After, until the 1 s lock passes.
        assert!(answer.stderr.contains("retry after"), "{}", answer.stderr);
        std::thread::sleep(Duration::from_millis(300));
        answer = sandbox.run(&record_args("key-1", "12.50"));
    }
    answer.assert_ok();
    assert!(answer.stderr.contains("201"), "{}", answer.stderr);
    let body: serde_json::Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(
        body["id"],
        written[0].id.to_string(),
        "the takeover answers with what the first attempt wrote"
    );
    assert_eq!(stored(&sandbox).await.len(), 1);

    let replay = sandbox.run(&record_args("key-1", "12.50"));
    replay.assert_ok();
    assert!(
        replay.stderr.contains("idempotency: replay"),
        "{}",
        replay.stderr
    );
}

#[tokio::test]
async fn a_store_failure_releases_the_key_so_the_same_request_can_succeed() {
    let sandbox = sandbox();
    let failed = sandbox.run_with_env(
        &record_args("key-2", "3.00"),
        &[("SETTLE_FAILPOINTS", "payments.before_record=error")],
    );
    failed.assert_code(1);
    assert!(failed.stderr.contains("503"), "{}", failed.stderr);
    assert!(stored(&sandbox).await.is_empty());
    let retried = sandbox.run(&record_args("key-2", "3.00"));
    retried.assert_ok();
    assert!(
        retried.stderr.contains("201 (idempotency: new)"),
        "{}",
        retried.stderr
    );
}

#[test]
fn bad_input_and_key_reuse_are_refused_with_their_own_exit_status() {
    let sandbox = sandbox();
    let bad_amount = sandbox.run(&record_args("key-3", "3.001"));
    bad_amount.assert_code(2);
    assert!(
        bad_amount.stderr.contains("amount:") && bad_amount.stdout.contains("invalid-request"),
        "{}",
        bad_amount.stdout
    );
    sandbox.run(&record_args("key-3", "3.00")).assert_ok();
    let reused = sandbox.run(&record_args("key-3", "4.00"));
    reused.assert_code(2);
    assert!(
        reused.stdout.contains("idempotency-key-reused"),
        "{}",
        reused.stdout
    );
    let bad_key = sandbox.run(&record_args("has space", "3.00"));
    bad_key.assert_code(2);
    assert!(
        bad_key.stderr.contains("Idempotency-Key"),
        "{}",
        bad_key.stderr
    );
    let generated = sandbox.run(&[
        "payment",
        "adjust",
        "--merchant",
        "m-1",
        "--amount",
        "-1.00",
        "--currency",
        "USD",
        "--external-ref",
        "adj-1",
        "--occurred-at",
        "2026-11-20T12:00:00Z",
        "--reason",
        "damaged parcel",
    ]);
    generated.assert_ok();
    assert!(
        generated.stderr.contains("--idempotency-key"),
        "the made-up key is shown: {}",
        generated.stderr
    );
}

/// `settle payment record` for `merchant` with its own reference and key.
fn record<'a>(merchant: &'a str, reference: &'a str, amount: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        "settle.toml",
        "payment",
        "record",
        "--merchant",
        merchant,
        "--amount",
        amount,
        "--currency",
        "USD",
        "--method",
        "card",
        "--external-ref",
        reference,
        "--occurred-at",
        "2026-11-20T12:00:00+03:00",
        "--idempotency-key",
        reference,
    ]
}

/// `settle payment adjust` for m-1, with its own reference.
fn adjust<'a>(reference: &'a str, amount: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        "settle.toml",
        "payment",
        "adjust",
        "--merchant",
        "m-1",
        "--amount",
        amount,
        "--currency",
        "USD",
        "--external-ref",
        reference,
        "--occurred-at",
        "2026-11-20T12:00:00+03:00",
        "--reason",
        "goodwill",
        "--idempotency-key",
        reference,
    ]
}

#[test]
fn a_huge_payment_is_refused_when_recorded_so_the_day_still_settles_for_every_merchant() {
    let sandbox = sandbox();
    // Two amounts whose sum passes i64 (each 5 × 10^18 minor units): they used to be recorded,
    // and the run of their day then failed for every merchant.
    for reference in ["huge-1", "huge-2"] {
        let refused = sandbox.run(&record("m-big", reference, "50000000000000000.00"));
        refused.assert_code(2);
        assert!(refused.stderr.contains("422"), "{}", refused.stderr);
        let body: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
        assert_eq!(body["field"], "amount", "{body}");
        assert_eq!(
            body["detail"],
            "amount: 50000000000000000.00 USD is above the per-transaction maximum \
             10000000000.00 USD (payments.max_amount_minor)",
            "{body}"
        );
    }
    sandbox.run(&record("m-1", "ordinary", "12.50")).assert_ok();
    // The maximum itself is accepted.
    sandbox
        .run(&record("m-big", "largest", "10000000000.00"))
        .assert_ok();
    let run = sandbox.run(&["--config", "settle.toml", "run", "--date", "2026-11-20"]);
    run.assert_ok();
    let shown = sandbox.run(&["--config", "settle.toml", "show", "--date", "2026-11-20"]);
    shown.assert_ok();
    assert!(
        shown.stdout.contains("m-1") && shown.stdout.contains("m-big"),
        "both merchants are settled: {}",
        shown.stdout
    );
}

#[test]
fn a_configured_maximum_per_currency_limits_payments_and_both_signs_of_adjustments() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[payments]\nmax_amount_minor = 5000000\nmax_amount = { USD = \"1000.00\" }\n",
    );
    sandbox
        .run(&record("m-1", "at-limit", "1000.00"))
        .assert_ok();
    for (args, amount) in [
        (record("m-1", "above", "1000.01"), "1000.01"),
        (adjust("credit", "1000.01"), "1000.01"),
        (adjust("debit", "-1000.01"), "-1000.01"),
    ] {
        let refused = sandbox.run(&args);
        refused.assert_code(2);
        let body: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
        assert_eq!(body["field"], "amount", "{body}");
        assert_eq!(
            body["detail"],
            format!(
                "amount: {amount} USD is above the per-transaction maximum 1000.00 USD \
                 (payments.max_amount.USD)"
            ),
            "{body}"
        );
    }
    sandbox.run(&adjust("debit-ok", "-1000.00")).assert_ok();
    let bad = sandbox.run_with_env(
        &["--config", "settle.toml", "check-config"],
        &[("SETTLE_PAYMENTS__MAX_AMOUNT__EUR", "-5.00")],
    );
    bad.assert_code(2);
    let output = format!("{}{}", bad.stdout, bad.stderr);
    assert!(
        output.contains("payments.max_amount.EUR (from SETTLE_PAYMENTS__MAX_AMOUNT__EUR)"),
        "{output}"
    );
}

/// Issue 15 (defect 5), MongoDB, where a refund reserves its amount on the payment before it is
/// written: a process killed between the two leaves a reservation whose refund never existed. A
/// refund with another key is then told to retry (409, not a stored 422 "0.00 left"), and the
/// killed request's own retry, once its key's lock has passed, replaces the reservation and
/// records the refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_killed_after_its_reservation_refuses_no_one() {
    use crate::daemon::Setup;
    use settle_tests::mongo::FreshDatabase;
    let database = FreshDatabase::new();
    let setup = Setup::with_options("[idempotency]\nlock_seconds = 1\n", database.options());
    // `record_args` names the sandbox's own config; `Setup` passes its config itself.
    let paid = setup.settle(&record_args("pay-key", "100.00")[2..]);
    paid.assert_ok();
    let payment: serde_json::Value = serde_json::from_str(&paid.stdout).unwrap();
    let payment_id = payment["id"].as_str().unwrap().to_string();
    let refund_args = |key: &'static str, reference: &'static str| {
        vec![
            "payment".to_string(),
            "refund".into(),
            "--payment".into(),
            payment_id.clone(),
            "--amount".into(),
            "100.00".into(),
            "--external-ref".into(),
            reference.into(),
            "--occurred-at".into(),
            "2026-11-20T13:00:00+03:00".into(),
            "--idempotency-key".into(),
            key.into(),
        ]
    };
    let run = |args: Vec<String>, env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = setup.spawn_with_stderr(&args, env);
        child.wait_with_output().expect("settle payment refund")
    };
    let killed = run(
        refund_args("refund-key-1", "ref-1"),
        &[("SETTLE_FAILPOINTS", "store.return.after_reserve=kill")],
    );
    assert!(!killed.status.success(), "the process died");
    let store = database.store().await;
    let refunds = |store: settle_core::store::SharedStore| async move {
        store
            .transactions_by_ref(vec![
                ("m-1".into(), "ref-1".into()),
                ("m-1".into(), "ref-2".into()),
            ])
            .await
            .unwrap()
    };
    assert!(
        refunds(store.clone()).await.is_empty(),
        "no refund was written"
    );

    // Another refund of the whole payment: in doubt, so "retry later", and nothing is kept.
    let other = setup.settle(
        &refund_args("refund-key-2", "ref-2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(other.code, 3, "{} {}", other.stdout, other.stderr);
    assert!(
        other.stdout.contains("returns-in-flight"),
        "{}",
        other.stdout
    );
    assert!(
        !other.stdout.contains("refund-exceeds-payment"),
        "{}",
        other.stdout
    );

    // The killed request's own retry takes its key over and records the refund.
    let mut retried = setup.settle(
        &refund_args("refund-key-1", "ref-1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    for _ in 0..20 {
        if retried.code != 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        retried = setup.settle(
            &refund_args("refund-key-1", "ref-1")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
    }
    retried.assert_ok();
    assert!(retried.stderr.contains("201"), "{}", retried.stderr);
    // Now the other key's answer is final: the payment is fully refunded.
    let final_answer = setup.settle(
        &refund_args("refund-key-2", "ref-2")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        final_answer.stdout.contains("refund-exceeds-payment"),
        "{} {}",
        final_answer.stdout,
        final_answer.stderr
    );
    let written = refunds(store).await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].external_ref, "ref-1");
}

/// On MongoDB a refund's reservation is released after the refund is written: a process killed
/// between the two leaves a reservation whose refund exists. It is counted once (as the refund),
/// so the rest of the payment can still be refunded at once, and the killed request's retry
/// records nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_killed_before_its_reservation_is_released_is_counted_once() {
    use crate::daemon::Setup;
    use settle_tests::mongo::FreshDatabase;
    let database = FreshDatabase::new();
    let setup = Setup::with_options("[idempotency]\nlock_seconds = 1\n", database.options());
    let paid = setup.settle(&record_args("pay-key", "100.00")[2..]);
    paid.assert_ok();
    let payment: serde_json::Value = serde_json::from_str(&paid.stdout).unwrap();
    let payment_id = payment["id"].as_str().unwrap().to_string();
    let refund = |key: &str, reference: &str, amount: &str, env: &[(&str, &str)]| {
        let args = [
            "payment",
            "refund",
            "--payment",
            &payment_id,
            "--amount",
            amount,
            "--external-ref",
            reference,
            "--occurred-at",
            "2026-11-20T13:00:00+03:00",
            "--idempotency-key",
            key,
        ];
        let output = setup
            .spawn_with_stderr(&args, env)
            .wait_with_output()
            .expect("settle payment refund");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (killed, _) = refund(
        "refund-key-1",
        "ref-1",
        "40.00",
        &[("SETTLE_FAILPOINTS", "store.return.before_release=kill")],
    );
    assert!(!killed.success(), "the process died");
    let store = database.store().await;
    let written = |store: settle_core::store::SharedStore| async move {
        let mut refs: Vec<(String, i64)> = store
            .transactions_by_ref(vec![
                ("m-1".into(), "ref-1".into()),
                ("m-1".into(), "ref-2".into()),
            ])
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.external_ref, t.amount_minor))
            .collect();
        refs.sort();
        refs
    };
    assert_eq!(written(store.clone()).await, [("ref-1".to_string(), 4_000)]);

    // The 60.00 left is refundable now: the reservation is not counted beside its refund.
    let (rest, answer) = refund("refund-key-2", "ref-2", "60.00", &[]);
    assert!(rest.success(), "{answer}");
    // The killed request's retry, once its key's lock has passed, adds nothing.
    std::thread::sleep(Duration::from_millis(1_200));
    let (retried, answer) = refund("refund-key-1", "ref-1", "40.00", &[]);
    assert!(retried.success(), "{answer}");
    assert_eq!(
        written(store).await,
        [("ref-1".to_string(), 4_000), ("ref-2".to_string(), 6_000)]
    );
}
