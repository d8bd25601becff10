//! The payments service over a real store: idempotency under 200 concurrent identical requests,
//! key reuse with another body, corrected retries, retention, and refund limits under races.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use settle_core::calendar::BusinessCalendar;
use settle_core::idempotency::{Idempotency, IdempotencyKey, IdempotencySettings, Outcome};
use settle_core::payments::{problems, Operation, PaymentService};
use settle_core::store::SharedStore;
use settle_core::time::{Clock, ManualClock};
use settle_store_sqlite::SqliteStore;

struct Fixture {
    service: PaymentService,
    store: SharedStore,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn start() -> DateTime<Utc> {
    "2026-11-20T10:00:00Z".parse().unwrap()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path().join("p.db")).await.unwrap());
    let clock = Arc::new(ManualClock::new(start()));
    let idempotency = Idempotency::new(store.clone(), IdempotencySettings::default());
    let service = PaymentService::new(
        store.clone(),
        idempotency,
        BusinessCalendar::default(),
        clock.clone(),
    );
    Fixture {
        service,
        store,
        clock,
        _dir: dir,
    }
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(Some(text), false).unwrap()
}

fn payment_body(reference: &str, amount: &str) -> Value {
    json!({
        "merchant_id": "m-1",
        "amount": amount,
        "currency": "USD",
        "method": "card",
        "external_ref": reference,
        "occurred_at": "2026-11-20T12:00:00+03:00",
    })
}

async fn stored_count(store: &SharedStore, references: &[&str]) -> usize {
    let keys = references
        .iter()
        .map(|r| ("m-1".to_string(), r.to_string()))
        .collect();
    store.transactions_by_ref(keys).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_identical_concurrent_requests_execute_once() {
    let f = fixture().await;
    let body = payment_body("pay-1", "12.50");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let service = f.service.clone();
            let body = body.clone();
            tokio::spawn(async move {
                service
                    .execute("token-a", &key("same-key"), Operation::Payment, &body)
                    .await
            })
        })
        .collect();
    let answers: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let new = answers.iter().filter(|a| a.outcome == Outcome::New).count();
    assert_eq!(new, 1, "exactly one execution");
    for answer in &answers {
        match answer.outcome {
            Outcome::New | Outcome::Replay => assert_eq!(answer.response.status, 201),
            Outcome::Conflict => {
                assert_eq!(answer.response.status, 409);
                assert!(answer.retry_after_seconds.unwrap() >= 1);
            }
            Outcome::Mismatch => panic!("identical requests never mismatch"),
        }
    }
    let ids: std::collections::BTreeSet<_> = answers
        .iter()
        .filter(|a| a.response.status == 201)
        .map(|a| a.response.body["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "every replay returns the same transaction");
    assert_eq!(stored_count(&f.store, &["pay-1"]).await, 1);

    let other_body = payment_body("pay-1", "99.00");
    let mismatch = f
        .service
        .execute("token-a", &key("same-key"), Operation::Payment, &other_body)
        .await
        .unwrap();
    assert_eq!(
        (mismatch.outcome, mismatch.response.status),
        (Outcome::Mismatch, 422)
    );
    // The same key is a different key for another actor.
    let other_actor = f
        .service
        .execute(
            "token-b",
            &key("same-key"),
            Operation::Payment,
            &payment_body("pay-2", "1.00"),
        )
        .await
        .unwrap();
    assert_eq!(
        (other_actor.outcome, other_actor.response.status),
        (Outcome::New, 201)
    );
}

#[tokio::test]
async fn a_replay_returns_the_stored_response_even_after_key_order_changes() {
    let f = fixture().await;
    let first = f
        .service
        .execute(
            "p",
            &key("k1"),
            Operation::Payment,
            &payment_body("pay-1", "5.00"),
        )
        .await
        .unwrap();
    let reordered: Value = serde_json::from_str(
        r#"{"occurred_at":"2026-11-20T12:00:00+03:00","external_ref":"pay-1","method":"card","currency":"USD","amount":"5.00","merchant_id":"m-1"}"#,
    )
    .unwrap();
    let again = f
        .service
        .execute("p", &key("k1"), Operation::Payment, &reordered)
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::Replay);
    assert_eq!(again.response, first.response);
    assert_eq!(first.response.body["amount_minor"], 500);
    assert_eq!(first.response.body["amount"], "5.00");
}

#[tokio::test]
async fn a_rejected_request_is_not_stored_so_a_corrected_retry_succeeds() {
    let f = fixture().await;
    let bad = payment_body("pay-1", "5.001");
    let refused = f
        .service
        .execute("p", &key("k"), Operation::Payment, &bad)
        .await
        .unwrap();
    assert_eq!(refused.response.status, 422);
    assert_eq!(refused.response.body["type"], problems::INVALID_REQUEST);
    assert_eq!(refused.response.body["field"], "amount");
    let unknown_field = json!({"merchant_id": "m-1", "amount": "5.00", "currency": "USD", "method": "card",
        "external_ref": "pay-1", "occurred_at": "2026-11-20T12:00:00Z", "colour": "red"});
    let refused_again = f
        .service
        .execute("p", &key("k"), Operation::Payment, &unknown_field)
        .await
        .unwrap();
    assert_eq!(refused_again.response.status, 422);
    assert!(refused_again.response.body["detail"]
        .as_str()
        .unwrap()
        .contains("colour"));

    let corrected = f
        .service
        .execute(
            "p",
            &key("k"),
            Operation::Payment,
            &payment_body("pay-1", "5.00"),
        )
        .await
        .unwrap();
    assert_eq!(
        (corrected.outcome, corrected.response.status),
        (Outcome::New, 201)
    );
    assert_eq!(stored_count(&f.store, &["pay-1"]).await, 1);
}

#[tokio::test]
async fn keys_are_kept_for_the_retention_period_then_count_as_new() {
    let f = fixture().await;
    let body = payment_body("pay-1", "5.00");
    f.service
        .execute("p", &key("k"), Operation::Payment, &body)
        .await
        .unwrap();
    f.clock.advance(Duration::hours(23));
    let within = f
        .service
        .execute("p", &key("k"), Operation::Payment, &body)
        .await
        .unwrap();
    assert_eq!(within.outcome, Outcome::Replay);
    assert_eq!(f.store.idempotency_reap(f.clock.now()).await.unwrap(), 0);

    f.clock.advance(Duration::hours(2));
    // After expiry the key is new; the transaction itself is recognised by its reference.
    let after = f
        .service
        .execute("p", &key("k"), Operation::Payment, &body)
        .await
        .unwrap();
    assert_eq!((after.outcome, after.response.status), (Outcome::New, 200));
    assert_eq!(stored_count(&f.store, &["pay-1"]).await, 1);
    f.clock.advance(Duration::hours(25));
    assert_eq!(
        f.store.idempotency_reap(f.clock.now()).await.unwrap(),
        1,
        "the reaper deletes expired records"
    );
    // A reaped key is new even for another request: it no longer finds what it recorded.
    let reused = f
        .service
        .execute(
            "p",
            &key("k"),
            Operation::Payment,
            &payment_body("pay-2", "7.00"),
        )
        .await
        .unwrap();
    assert_eq!(
        (reused.outcome, reused.response.status),
        (Outcome::New, 201)
    );
    assert_eq!(reused.response.body["external_ref"], "pay-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_exceed_the_payment() {
    let f = fixture().await;
    let paid = f
        .service
        .execute(
            "p",
            &key("pay"),
            Operation::Payment,
            &payment_body("pay-1", "100.00"),
        )
        .await
        .unwrap();
    let payment_id: uuid::Uuid = paid.response.body["id"].as_str().unwrap().parse().unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let service = f.service.clone();
            tokio::spawn(async move {
                let body = json!({"amount": "30.00", "external_ref": format!("ref-{n}"), "occurred_at": "2026-11-20T13:00:00Z"});
                service.execute("p", &key(&format!("refund-{n}")), Operation::Refund(payment_id), &body).await
            })
        })
        .collect();
    let statuses: Vec<u16> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().response.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 422).count(),
        7,
        "{statuses:?}"
    );

    let chargeback =
        json!({"amount": "10.01", "external_ref": "cb-1", "occurred_at": "2026-11-20T14:00:00Z"});
    let too_much = f
        .service
        .execute(
            "p",
            &key("cb"),
            Operation::Chargeback(payment_id),
            &chargeback,
        )
        .await
        .unwrap();
    assert_eq!(too_much.response.status, 422);
    assert_eq!(
        too_much.response.body["type"],
        problems::REFUND_EXCEEDS_PAYMENT
    );
    assert!(too_much.response.body["detail"]
        .as_str()
        .unwrap()
        .contains("10.00 USD left"));
    let exact =
        json!({"amount": "10.00", "external_ref": "cb-1", "occurred_at": "2026-11-20T14:00:00Z"});
    let fits = f
        .service
        .execute("p", &key("cb-2"), Operation::Chargeback(payment_id), &exact)
        .await
        .unwrap();
    assert_eq!(fits.response.status, 201);
    assert_eq!(fits.response.body["kind"], "chargeback");
    assert_eq!(fits.response.body["refund_of"], "pay-1");
}

#[tokio::test]
async fn returns_of_unknown_or_unsettleable_payments_are_refused_and_every_call_is_audited() {
    let f = fixture().await;
    let body =
        json!({"amount": "1.00", "external_ref": "r-1", "occurred_at": "2026-11-20T13:00:00Z"});
    let missing = f
        .service
        .execute(
            "p",
            &key("a"),
            Operation::Refund(uuid::Uuid::new_v4()),
            &body,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            missing.response.status,
            missing.response.body["type"].as_str()
        ),
        (404, Some(problems::PAYMENT_NOT_FOUND))
    );

    let mut pending = payment_body("pay-p", "5.00");
    pending["status"] = json!("pending");
    let pending = f
        .service
        .execute("p", &key("b"), Operation::Payment, &pending)
        .await
        .unwrap();
    let id: uuid::Uuid = pending.response.body["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let refused = f
        .service
        .execute("p", &key("c"), Operation::Refund(id), &body)
        .await
        .unwrap();
    assert_eq!(refused.response.status, 422);
    assert_eq!(
        refused.response.body["type"],
        problems::PAYMENT_NOT_REFUNDABLE
    );

    let debit = json!({"merchant_id": "m-1", "amount": "-3.00", "currency": "USD", "external_ref": "adj-1",
        "occurred_at": "2026-11-20T13:00:00Z", "reason": "courier damage"});
    let adjusted = f
        .service
        .execute("p", &key("d"), Operation::Adjustment, &debit)
        .await
        .unwrap();
    assert_eq!(
        (
            adjusted.response.status,
            adjusted.response.body["amount_minor"].as_i64()
        ),
        (201, Some(-300))
    );
    let no_reason = json!({"merchant_id": "m-1", "amount": "1.00", "currency": "USD", "external_ref": "adj-2",
        "occurred_at": "2026-11-20T13:00:00Z", "reason": " "});
    let refused = f
        .service
        .execute("p", &key("e"), Operation::Adjustment, &no_reason)
        .await
        .unwrap();
    assert_eq!(
        (
            refused.response.status,
            refused.response.body["field"].as_str()
        ),
        (422, Some("reason"))
    );

    let audit = f.store.audit_events(20, 0).await.unwrap();
    assert_eq!(audit.len(), 5);
    assert!(audit
        .iter()
        .all(|e| e.actor == "p" && e.action.starts_with("payments.")));
    let adjustment = audit
        .iter()
        .find(|e| e.action == "payments.record_adjustment" && e.outcome == "succeeded")
        .unwrap();
    assert_eq!(adjustment.detail["reason"], "courier damage");
}
