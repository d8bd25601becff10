//! A reconciliation decision turned into an adjustment on the merchant, through the payment service
//! (so the next settlement pays or collects it): once per decision, never more than its amount.
//!
//! Only a write-off in force or a match with a difference (confirmed, or within tolerance) can
//! become one. The adjustment's reference is `recon-{decision}`: asking again finds it and adds nothing.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde_json::json;
use uuid::Uuid;

use crate::idempotency::IdempotencyKey;
use crate::model::{AuditAction, AuditOutcome, Transaction};
use crate::money::{format_minor, Money};
use crate::payments::{Operation, PaymentService};
use crate::reconcile::service::{ReconcileError, ReconciliationService};
use crate::reconcile::{DecisionAction, DecisionState, StatementKind};
use crate::store::AuditFilter;
use crate::time::format_utc;

/// Audit events of one decision's adjustments read to find where an earlier one went (each
/// request is one event; more than this many requests for one decision is not a real case).
const EARLIER_ADJUSTMENTS_READ: u32 = 1_000;

/// A person's request: the signed amount (negative is a debit to the merchant), why, and the
/// merchant when the decision's records do not name exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustRequest {
    pub decision: String,
    /// Major units, signed, e.g. `"-1.05"`.
    pub amount: String,
    pub reason: String,
    pub merchant_id: Option<String>,
}

/// What asking for the adjustment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdjustOutcome {
    Recorded(Transaction),
    /// The decision already has its adjustment (with the same amount): nothing added.
    AlreadyRecorded(Transaction),
}

impl AdjustOutcome {
    pub fn transaction(&self) -> &Transaction {
        match self {
            AdjustOutcome::Recorded(t) | AdjustOutcome::AlreadyRecorded(t) => t,
        }
    }
}

/// The adjustment's external reference for `decision`.
pub fn adjustment_reference(decision: &str) -> String {
    format!("recon-{decision}")
}

impl ReconciliationService {
    /// The merchants the decision's records of ours belong to.
    /// The adjustment already recorded for `decision`, whichever merchant it went to: the
    /// merchant asked for, each merchant of the decision's records, and each merchant an earlier
    /// successful adjustment of it names in the audit trail (a decision of no merchant's records,
    /// or of several, lets the person name one, so one per decision is checked across them all).
    async fn earlier_adjustment(
        &self,
        decision: &str,
        merchant_id: &str,
        merchants: &[String],
    ) -> Result<Option<Transaction>, ReconcileError> {
        let mut candidates: BTreeSet<String> = merchants.iter().cloned().collect();
        candidates.insert(merchant_id.to_string());
        let filter = AuditFilter {
            subject: Some(format!("decision={decision}")),
            action: Some(AuditAction::ReconciliationAdjustment.as_str().to_string()),
            ..AuditFilter::default()
        };
        for event in self
            .store()
            .audit_events_matching(&filter, EARLIER_ADJUSTMENTS_READ, 0)
            .await?
        {
            if event.outcome != AuditOutcome::Succeeded.as_str() {
                continue;
            }
            let transaction = event.detail["transaction"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok());
            if let Some(id) = transaction {
                if let Some(t) = self.store().transaction(id).await? {
                    candidates.insert(t.merchant_id);
                }
            }
        }
        let reference = adjustment_reference(decision);
        let keys = candidates
            .into_iter()
            .map(|merchant| (merchant, reference.clone()))
            .collect();
        Ok(self
            .store()
            .transactions_by_ref(keys)
            .await?
            .into_iter()
            .next())
    }

    async fn merchants_of(
        &self,
        kind: StatementKind,
        ours: &[String],
    ) -> Result<Vec<String>, ReconcileError> {
        let mut merchants = Vec::new();
        for id in ours {
            let merchant = match kind {
                StatementKind::Provider => {
                    let uuid = Uuid::parse_str(id).map_err(|_| {
                        ReconcileError::Invalid(format!("{id:?} is not a transaction id"))
                    })?;
                    self.store().transaction(uuid).await?.map(|t| t.merchant_id)
                }
                StatementKind::Bank | StatementKind::Payouts => {
                    // A payout reference starts with its settlement date.
                    let date = id
                        .get(..10)
                        .and_then(|d| d.parse::<NaiveDate>().ok())
                        .ok_or_else(|| {
                            ReconcileError::Invalid(format!("{id:?} is not a payout reference"))
                        })?;
                    self.store()
                        .payouts(date)
                        .await?
                        .into_iter()
                        .find(|p| &p.reference == id)
                        .map(|p| p.merchant_id)
                }
            };
            if let Some(merchant) = merchant {
                if !merchants.contains(&merchant) {
                    merchants.push(merchant);
                }
            }
        }
        Ok(merchants)
    }

    /// Records the adjustment `request` asks for on the merchant, through `payments`.
    pub async fn adjust(
        &self,
        payments: &PaymentService,
        request: AdjustRequest,
        actor: &str,
    ) -> Result<AdjustOutcome, ReconcileError> {
        let result = self.adjust_unaudited(payments, &request, actor).await;
        let (outcome, detail) = match &result {
            Ok(AdjustOutcome::Recorded(t)) => (
                AuditOutcome::Succeeded,
                json!({ "transaction": t.id.to_string(), "amount_minor": t.amount_minor }),
            ),
            Ok(AdjustOutcome::AlreadyRecorded(t)) => (
                AuditOutcome::Succeeded,
                json!({ "transaction": t.id.to_string(), "already_recorded": true }),
            ),
            Err(error) => (AuditOutcome::Refused, json!({ "error": error.to_string() })),
        };
        let mut detail = detail;
        detail["reason"] = json!(request.reason);
        detail["amount"] = json!(request.amount);
        self.audit(
            actor,
            AuditAction::ReconciliationAdjustment,
            format!("decision={}", request.decision),
            outcome,
            detail,
        )
        .await?;
        result
    }

    async fn adjust_unaudited(
        &self,
        payments: &PaymentService,
        request: &AdjustRequest,
        actor: &str,
    ) -> Result<AdjustOutcome, ReconcileError> {
        if request.reason.trim().is_empty() {
            return Err(ReconcileError::Invalid(
                "an adjustment needs a reason".into(),
            ));
        }
        let decision = self
            .store()
            .decision(&request.decision)
            .await?
            .ok_or_else(|| ReconcileError::UnknownDecision(request.decision.clone()))?;
        let eligible = decision.state == DecisionState::InForce
            && match decision.action {
                DecisionAction::WriteOff => true,
                DecisionAction::Match => decision.amount_minor != 0 && !decision.needs_review,
                _ => false,
            };
        if !eligible {
            return Err(ReconcileError::Invalid(format!(
                "decision {} is a {} ({}{}): only a write-off in force or a match with a \
                 difference (confirmed) becomes an adjustment",
                decision.id,
                decision.action,
                decision.state,
                if decision.needs_review {
                    ", to review"
                } else {
                    ""
                }
            )));
        }
        let currency = decision.currency.ok_or_else(|| {
            ReconcileError::Invalid(format!("decision {} has no currency", decision.id))
        })?;
        let amount = Money::parse_major(&request.amount, currency)
            .map_err(|e| ReconcileError::Invalid(format!("amount: {e}")))?;
        if amount.minor == 0 {
            return Err(ReconcileError::Invalid(
                "amount: an adjustment is not zero".into(),
            ));
        }
        if amount.minor.unsigned_abs() > decision.amount_minor.unsigned_abs() {
            return Err(ReconcileError::Invalid(format!(
                "amount: {} is more than the decision's {} {currency}",
                request.amount,
                format_minor(decision.amount_minor.abs(), currency)
            )));
        }
        let merchants = self.merchants_of(decision.kind, &decision.ours).await?;
        let merchant_id = match (&request.merchant_id, merchants.as_slice()) {
            (Some(m), []) => m.clone(),
            (Some(m), found) if found.contains(m) => m.clone(),
            (Some(m), found) => {
                return Err(ReconcileError::Invalid(format!(
                    "merchant {m:?} is not the decision's (its records are {})",
                    found.join(", ")
                )))
            }
            (None, [one]) => one.clone(),
            (None, []) => {
                return Err(ReconcileError::Invalid(format!(
                    "decision {} names no record of a merchant: give the merchant",
                    decision.id
                )))
            }
            (None, many) => {
                return Err(ReconcileError::Invalid(format!(
                    "decision {} covers several merchants ({}): give the merchant",
                    decision.id,
                    many.join(", ")
                )))
            }
        };
        let reference = adjustment_reference(&decision.id);
        if let Some(found) = self
            .earlier_adjustment(&decision.id, &merchant_id, &merchants)
            .await?
        {
            if found.amount_minor != amount.minor || found.merchant_id != merchant_id {
                return Err(ReconcileError::Invalid(format!(
                    "decision {} already has its adjustment {} of {} {currency} on merchant {}",
                    decision.id,
                    found.id,
                    format_minor(found.amount_minor, currency),
                    found.merchant_id
                )));
            }
            return Ok(AdjustOutcome::AlreadyRecorded(found));
        }
        let key = IdempotencyKey::parse(Some(&reference), false)
            .map_err(|e| ReconcileError::Invalid(format!("the adjustment's key: {e}")))?;
        let body = json!({
            "merchant_id": merchant_id,
            "amount": request.amount,
            "currency": currency.code(),
            "external_ref": reference,
            "occurred_at": format_utc(self.clock().now()),
            "reason": format!("reconciliation {}: {}", decision.id, request.reason),
        });
        let answer = payments
            .execute(actor, &key, Operation::Adjustment, &body)
            .await?;
        let status = answer.response.status;
        if !(200..300).contains(&status) {
            let detail = answer
                .response
                .body
                .get("detail")
                .and_then(|d| d.as_str())
                .unwrap_or("refused")
                .to_string();
            return Err(ReconcileError::Invalid(format!(
                "the payment service refused the adjustment (HTTP {status}): {detail}"
            )));
        }
        let recorded = self
            .store()
            .transactions_by_ref(vec![(merchant_id, reference)])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ReconcileError::Invalid("the adjustment was accepted but is not stored".into())
            })?;
        Ok(AdjustOutcome::Recorded(recorded))
    }
}
