//! Payment operations — record a payment, refund, chargeback or adjustment — each idempotent by
//! key and audited. Shared by the HTTP API and the command line; answers are HTTP-shaped responses.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::calendar::BusinessCalendar;
use crate::idempotency::{
    fingerprint, problem, Answer, HandlerOutcome, Idempotency, IdempotencyKey, StoredResponse,
};
use crate::ingest;
use crate::limits::{check_amount_limit, AmountLimits};
use crate::model::{
    AuditAction, AuditEvent, AuditOutcome, NewTransaction, PaymentMethod, Transaction,
    TransactionKind, TransactionStatus,
};
use crate::money::{format_minor, Currency, Money};
use crate::store::{IdempotencyTag, RecordOutcome, SharedStore, StoreError};
use crate::time::{format_utc, parse_rfc3339, Clock};

/// `[payments]`: rules every way of recording a transaction applies (API, CLI, import).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentSettings {
    /// The per-transaction maximum per currency (`max_amount_minor`, `max_amount.CODE`).
    pub amount_limits: AmountLimits,
}

/// Problem types (RFC 9457) of payment operations: the one list of the domain.
pub use crate::problem_types as problems;

/// The API paths the operations answer to; part of each request's fingerprint.
pub mod paths {
    pub const PAYMENTS: &str = "/api/v2/payments";
    pub const ADJUSTMENTS: &str = "/api/v2/adjustments";

    pub fn refunds(payment_id: uuid::Uuid) -> String {
        format!("/api/v2/payments/{payment_id}/refunds")
    }

    pub fn chargebacks(payment_id: uuid::Uuid) -> String {
        format!("/api/v2/payments/{payment_id}/chargebacks")
    }
}

/// `POST /payments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    merchant_id: String,
    amount: String,
    currency: String,
    method: String,
    external_ref: String,
    occurred_at: String,
    /// Default `completed`.
    #[serde(default)]
    status: Option<String>,
}

/// `POST /payments/{id}/refunds` and `/chargebacks`: merchant and currency come from the payment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnBody {
    amount: String,
    external_ref: String,
    occurred_at: String,
    /// Kept in the audit trail (read from the raw body there).
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

/// `POST /adjustments`: signed; negative is a debit to the merchant. A reason is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    merchant_id: String,
    amount: String,
    currency: String,
    external_ref: String,
    occurred_at: String,
    reason: String,
}

/// Which operation, for audit names and fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Payment,
    Refund(Uuid),
    Chargeback(Uuid),
    Adjustment,
}

impl Operation {
    pub fn path(&self) -> String {
        match self {
            Operation::Payment => paths::PAYMENTS.to_string(),
            Operation::Refund(id) => paths::refunds(*id),
            Operation::Chargeback(id) => paths::chargebacks(*id),
            Operation::Adjustment => paths::ADJUSTMENTS.to_string(),
        }
    }

    fn action(&self) -> AuditAction {
        match self {
            Operation::Payment => AuditAction::PaymentsRecordPayment,
            Operation::Refund(_) => AuditAction::PaymentsRecordRefund,
            Operation::Chargeback(_) => AuditAction::PaymentsRecordChargeback,
            Operation::Adjustment => AuditAction::PaymentsRecordAdjustment,
        }
    }
}

/// A validation failure: nothing was executed, nothing is stored.
fn invalid(field: &str, message: impl std::fmt::Display) -> HandlerOutcome {
    let mut response = problem(
        422,
        problems::INVALID_REQUEST,
        "Invalid request",
        &format!("{field}: {message}"),
    );
    response.body["field"] = json!(field);
    HandlerOutcome::NothingChanged(response)
}

/// The JSON form of a stored transaction.
pub fn transaction_json(t: &Transaction) -> Value {
    json!({
        "id": t.id,
        "merchant_id": t.merchant_id,
        "kind": t.kind,
        "status": t.status,
        "amount": format_minor(t.amount_minor, t.currency),
        "amount_minor": t.amount_minor,
        "currency": t.currency,
        "method": t.method,
        "external_ref": t.external_ref,
        "refund_of": t.refund_of,
        "occurred_at": format_utc(t.occurred_at),
        "created_at": format_utc(t.created_at),
        "settlement_date": t.settlement_date,
        "late": t.late,
    })
}

fn created(status: u16, t: &Transaction) -> HandlerOutcome {
    HandlerOutcome::Completed(StoredResponse {
        status,
        body: transaction_json(t),
        headers: vec![("location".into(), format!("{}/{}", paths::PAYMENTS, t.id))],
    })
}

/// Records payments, refunds, chargebacks and adjustments.
#[derive(Clone)]
pub struct PaymentService {
    store: SharedStore,
    idempotency: Idempotency,
    calendar: BusinessCalendar,
    clock: Arc<dyn Clock>,
    limits: AmountLimits,
}

impl PaymentService {
    pub fn new(
        store: SharedStore,
        idempotency: Idempotency,
        calendar: BusinessCalendar,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PaymentService {
            store,
            idempotency,
            calendar,
            clock,
            limits: AmountLimits::default(),
        }
    }

    /// The per-transaction maxima (`[payments]`) instead of the defaults.
    pub fn with_amount_limits(mut self, limits: AmountLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs one operation for `actor` under its idempotency key and audits the answer.
    pub async fn execute(
        &self,
        actor: &str,
        key: &IdempotencyKey,
        operation: Operation,
        body: &Value,
    ) -> Result<Answer, StoreError> {
        let now = self.clock.now();
        let request_fingerprint = fingerprint("POST", &operation.path(), body);
        let tag = IdempotencyTag {
            actor: actor.to_string(),
            key: key.as_str().to_string(),
        };
        let answer = self
            .idempotency
            .run(actor, key, &request_fingerprint, now, || {
                self.handle(operation, body, tag, now)
            })
            .await?;
        self.audit(actor, operation, body, &answer).await?;
        Ok(answer)
    }

    async fn audit(
        &self,
        actor: &str,
        operation: Operation,
        body: &Value,
        answer: &Answer,
    ) -> Result<(), StoreError> {
        let status = answer.response.status;
        let outcome = AuditOutcome::of_http_status(status);
        let subject = answer
            .response
            .body
            .get("id")
            .and_then(Value::as_str)
            .map(|id| format!("transaction={id}"))
            .unwrap_or_else(|| format!("path={}", operation.path()));
        let detail = json!({
            "idempotency": answer.outcome.as_str(),
            "status": status,
            "external_ref": body.get("external_ref"),
            "reason": body.get("reason"),
            "problem": answer.response.body.get("type"),
        });
        let event = AuditEvent::new(
            self.clock.now(),
            actor,
            operation.action(),
            subject,
            outcome,
            detail,
        );
        self.store.record_audit(&event).await
    }

    async fn handle(
        &self,
        operation: Operation,
        body: &Value,
        tag: IdempotencyTag,
        now: DateTime<Utc>,
    ) -> Result<HandlerOutcome, StoreError> {
        let transaction = match self.build(operation, body).await? {
            Ok(transaction) => transaction,
            Err(rejection) => return Ok(rejection),
        };
        let mut record = match ingest::prepare(transaction, &self.calendar, now) {
            Ok(record) => record,
            Err(error) => return Ok(invalid("occurred_at", error)),
        };
        record.idempotency = Some(tag);
        let recorded = match crate::failpoint::hit("payments.before_record") {
            Ok(()) => self.store.record_transaction(record).await,
            Err(injected) => Err(StoreError::Backend(injected.to_string())),
        };
        let outcome = match recorded {
            Ok(outcome) => outcome,
            // The write was one database transaction: nothing of it stayed. Release the key.
            Err(error) => {
                tracing::error!(%error, "recording a transaction failed");
                return Ok(HandlerOutcome::NothingChanged(problem(
                    503,
                    problems::STORE_UNAVAILABLE,
                    "Store unavailable",
                    "the transaction was not recorded; retry with the same Idempotency-Key",
                )));
            }
        };
        if let RecordOutcome::Inserted(t) = &outcome {
            // Only a write counts: a takeover finding its own earlier write, or a duplicate, does not.
            crate::telemetry::transaction_recorded(t);
        }
        Ok(match outcome {
            RecordOutcome::Inserted(t) | RecordOutcome::AlreadyRecorded(t) => created(201, &t),
            RecordOutcome::Duplicate(t) => created(200, &t),
            RecordOutcome::Conflict(existing) => HandlerOutcome::Completed(problem(
                409,
                problems::EXTERNAL_REF_CONFLICT,
                "External reference already used",
                &format!(
                    "merchant {} already has a transaction with external_ref {:?} and other content",
                    existing.merchant_id, existing.external_ref
                ),
            )),
            RecordOutcome::PaymentNotFound => HandlerOutcome::Completed(problem(
                404,
                problems::PAYMENT_NOT_FOUND,
                "Payment not found",
                "the payment to return does not exist",
            )),
            RecordOutcome::NotRefundable { reason, .. } => HandlerOutcome::Completed(problem(
                422,
                problems::PAYMENT_NOT_REFUNDABLE,
                "Payment cannot be returned",
                &reason,
            )),
            RecordOutcome::ExceedsPayment { payment, returned_minor } => {
                HandlerOutcome::Completed(problem(
                    422,
                    problems::REFUND_EXCEEDS_PAYMENT,
                    "Refund exceeds the payment",
                    &crate::returns::remaining_message(
                        &payment.external_ref,
                        payment.amount_minor.saturating_sub(returned_minor).max(0),
                        payment.currency,
                    ),
                ))
            }
            // Decided on reservations that may never become refunds: released, not kept.
            RecordOutcome::ReturnsInDoubt {
                payment,
                in_doubt_minor,
                retry_after_seconds,
            } => {
                let mut response = problem(
                    409,
                    problems::RETURNS_IN_FLIGHT,
                    "Other returns of the payment are in flight",
                    &format!(
                        "{} of payment {} is reserved by refunds or chargebacks not yet written; \
                         retry in {retry_after_seconds} s",
                        format_minor(in_doubt_minor, payment.currency),
                        payment.external_ref
                    ),
                );
                response
                    .headers
                    .push(("Retry-After".into(), retry_after_seconds.max(1).to_string()));
                HandlerOutcome::NothingChanged(response)
            }
        })
    }

    /// Turns a request body into a validated transaction, or a rejection to answer with.
    async fn build(
        &self,
        operation: Operation,
        body: &Value,
    ) -> Result<Result<NewTransaction, HandlerOutcome>, StoreError> {
        let parsed = match operation {
            Operation::Payment => parse::<PaymentBody>(body).and_then(payment_transaction),
            Operation::Adjustment => parse::<AdjustmentBody>(body).and_then(adjustment_transaction),
            Operation::Refund(id) | Operation::Chargeback(id) => {
                let kind = if matches!(operation, Operation::Refund(_)) {
                    TransactionKind::Refund
                } else {
                    TransactionKind::Chargeback
                };
                let returned = parse::<ReturnBody>(body);
                let payment = self.store.transaction(id).await?;
                match (returned, payment) {
                    (Err(rejection), _) => Err(rejection),
                    (Ok(_), None) => {
                        return Ok(Err(HandlerOutcome::Completed(problem(
                            404,
                            problems::PAYMENT_NOT_FOUND,
                            "Payment not found",
                            &format!("no payment has id {id}"),
                        ))))
                    }
                    (Ok(body), Some(payment)) => return_transaction(body, &payment, kind),
                }
            }
        };
        Ok(parsed.and_then(|t| {
            let t = t.validated().map_err(|e| invalid(e.field, &e.message))?;
            check_amount_limit(&t, &self.limits).map_err(|e| invalid(e.field, &e.message))?;
            Ok(t)
        }))
    }
}

/// The typed body, or a 422 naming the member that is wrong, missing or unknown.
fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, HandlerOutcome> {
    serde_path_to_error::deserialize(body).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let field = if path != "." {
            path
        } else {
            quoted_member(&message).unwrap_or_else(|| "body".to_string())
        };
        if field == "amount" && message.starts_with("invalid type") {
            // The usual mistake: amounts are exact decimal strings, never JSON numbers.
            return invalid(
                &field,
                format!("send the amount as a decimal string such as \"12.50\" ({message})"),
            );
        }
        invalid(&field, message)
    })
}

/// The member a serde message such as "missing field `amount`" names.
fn quoted_member(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let length = message[start..].find('`')?;
    (message.starts_with("missing field") || message.starts_with("unknown field"))
        .then(|| message[start..start + length].to_string())
}

fn currency(code: &str) -> Result<Currency, HandlerOutcome> {
    Currency::from_code(code).map_err(|e| invalid("currency", e))
}

fn amount(text: &str, currency: Currency) -> Result<i64, HandlerOutcome> {
    Money::parse_major(text, currency)
        .map(|m| m.minor)
        .map_err(|e| invalid("amount", e))
}

fn occurred_at(text: &str) -> Result<DateTime<Utc>, HandlerOutcome> {
    parse_rfc3339(text).map_err(|e| invalid("occurred_at", e))
}

fn payment_transaction(body: PaymentBody) -> Result<NewTransaction, HandlerOutcome> {
    let currency = currency(&body.currency)?;
    let status = match body.status.as_deref() {
        None => TransactionStatus::Completed,
        Some(text) => text.parse().map_err(|e: String| invalid("status", e))?,
    };
    Ok(NewTransaction {
        id: None,
        merchant_id: body.merchant_id,
        kind: TransactionKind::Payment,
        status,
        amount_minor: amount(&body.amount, currency)?,
        currency,
        method: body
            .method
            .parse::<PaymentMethod>()
            .map_err(|e| invalid("method", e))?,
        occurred_at: occurred_at(&body.occurred_at)?,
        external_ref: body.external_ref,
        refund_of: None,
    })
}

fn adjustment_transaction(body: AdjustmentBody) -> Result<NewTransaction, HandlerOutcome> {
    if body.reason.trim().is_empty() {
        return Err(invalid("reason", "an adjustment needs a reason"));
    }
    let currency = currency(&body.currency)?;
    Ok(NewTransaction {
        id: None,
        merchant_id: body.merchant_id,
        kind: TransactionKind::Adjustment,
        status: TransactionStatus::Completed,
        amount_minor: amount(&body.amount, currency)?,
        currency,
        method: PaymentMethod::Other,
        occurred_at: occurred_at(&body.occurred_at)?,
        external_ref: body.external_ref,
        refund_of: None,
    })
}

fn return_transaction(
    body: ReturnBody,
    payment: &Transaction,
    kind: TransactionKind,
) -> Result<NewTransaction, HandlerOutcome> {
    Ok(NewTransaction {
        id: None,
        merchant_id: payment.merchant_id.clone(),
        kind,
        status: TransactionStatus::Completed,
        amount_minor: amount(&body.amount, payment.currency)?,
        currency: payment.currency,
        method: payment.method,
        occurred_at: occurred_at(&body.occurred_at)?,
        external_ref: body.external_ref,
        refund_of: Some(payment.external_ref.clone()),
    })
}
