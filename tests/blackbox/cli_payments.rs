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
