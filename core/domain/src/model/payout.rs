//! Payouts: what Settle sends the provider for one merchant, currency and settlement date, under a
//! deterministic reference that is also the provider's idempotency key, so nothing is paid twice.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::SettlementDate;
use crate::money::Currency;

use super::settlement::SettlementLine;
use super::transaction::named_enum;

named_enum!(
    /// `pending` (to send) · `held` (merchant on hold) · `unknown` (sent, answer lost: look it up
    /// before sending again) · `sent` (accepted by the provider) · `confirmed` (paid, per the
    /// provider) · `failed` (rejected by the provider; a rerun pays the difference anew).
    PayoutStatus, "payout status" {
        Pending => "pending",
        Held => "held",
        Unknown => "unknown",
        Sent => "sent",
        Confirmed => "confirmed",
        Failed => "failed",
    }
);

impl PayoutStatus {
    /// Money that is paid or may have been paid: counts against what a date owes a merchant.
    pub fn counts_as_paid(&self) -> bool {
        !matches!(self, PayoutStatus::Failed)
    }

    /// Still waiting for Settle to act (send, or look up then send).
    pub fn awaits_sending(&self) -> bool {
        matches!(self, PayoutStatus::Pending | PayoutStatus::Unknown)
    }
}

/// One payout to one merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payout {
    /// `{settlement_date}.{currency}.r{revision}.{merchant_id}`: unique, deterministic, and the
    /// provider's idempotency key.
    pub reference: String,
    #[schema(value_type = String, format = Date)]
    pub settlement_date: SettlementDate,
    /// The revision whose settlement created it (an adjustment payout when > the first).
    pub revision: u32,
    pub merchant_id: String,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    /// Always positive.
    pub amount_minor: i64,
    pub status: PayoutStatus,
    pub provider_payout_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The payout reference of (date, currency, revision, merchant). The merchant id comes last: it is
/// the only part of variable form, so the reference parses back unambiguously.
pub fn payout_reference(
    settlement_date: SettlementDate,
    currency: Currency,
    revision: u32,
    merchant_id: &str,
) -> String {
    format!("{settlement_date}.{currency}.r{revision}.{merchant_id}")
}

/// What a settlement revision still owes one merchant in one currency (positive: pay it;
/// negative: carry it forward). `target = net + carried_in` (amounts owed from earlier dates,
/// negative); `settled = paid + carried_out` (payouts not failed, and amounts this date already
/// carried forward). `None` on overflow.
pub fn amount_due(
    net_minor: i64,
    carried_in_minor: i64,
    paid_minor: i64,
    carried_out_minor: i64,
) -> Option<i64> {
    let target = net_minor.checked_add(carried_in_minor)?;
    let settled = paid_minor.checked_add(carried_out_minor)?;
    target.checked_sub(settled)
}

/// The payout status a new payout starts in: held while its merchant is on hold.
pub fn initial_payout_status(merchant_held: bool) -> PayoutStatus {
    if merchant_held {
        PayoutStatus::Held
    } else {
        PayoutStatus::Pending
    }
}

/// What planning does with one line's amount due (from [`amount_due`]): pay it, held while the
/// merchant is on hold; carry it forward when negative; nothing when zero. Every store adapter
/// enacts exactly this decision, so the rule lives here once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineDecision {
    Pay {
        reference: String,
        amount_minor: i64,
        status: PayoutStatus,
    },
    Carry(CarryForward),
    Nothing,
}

impl LineDecision {
    /// The decision for `line` of revision `revision` of `settlement_date`.
    pub fn of(
        settlement_date: SettlementDate,
        revision: u32,
        line: &SettlementLine,
        amount_due_minor: i64,
        merchant_held: bool,
    ) -> LineDecision {
        match amount_due_minor.cmp(&0) {
            Ordering::Greater => LineDecision::Pay {
                reference: payout_reference(
                    settlement_date,
                    line.currency,
                    revision,
                    &line.merchant_id,
                ),
                amount_minor: amount_due_minor,
                status: initial_payout_status(merchant_held),
            },
            Ordering::Less => LineDecision::Carry(CarryForward {
                merchant_id: line.merchant_id.clone(),
                currency: line.currency,
                amount_minor: amount_due_minor,
                origin_date: settlement_date,
                origin_revision: revision,
                applied_date: None,
                applied_revision: None,
            }),
            Ordering::Equal => LineDecision::Nothing,
        }
    }
}

/// An amount a merchant owes, from a negative net (or a rerun that lowered the net after payment),
/// deducted from the merchant's next payout in that currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryForward {
    pub merchant_id: String,
    pub currency: Currency,
    /// Negative: what the merchant owes.
    pub amount_minor: i64,
    pub origin_date: SettlementDate,
    pub origin_revision: u32,
    /// The settlement that deducted it, once one has.
    pub applied_date: Option<SettlementDate>,
    pub applied_revision: Option<u32>,
}

named_enum!(
    /// Whether a webhook notification reached its receiver.
    NotificationStatus, "notification status" {
        Delivered => "delivered",
        Failed => "failed",
    }
);

/// One webhook notification about a settlement revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    #[schema(value_type = String, format = Date)]
    pub settlement_date: SettlementDate,
    pub revision: u32,
    /// `settlement.completed` or `settlement.failed`.
    pub event: String,
    pub status: NotificationStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SettlementFigures;

    #[test]
    fn a_line_decision_pays_held_or_pending_carries_a_debt_and_ignores_zero() {
        let date: SettlementDate = "2024-03-10".parse().unwrap();
        let line = SettlementLine {
            merchant_id: "m-1".into(),
            currency: Currency::from_code("EUR").unwrap(),
            figures: SettlementFigures::default(),
        };
        assert_eq!(
            LineDecision::of(date, 2, &line, 150, false),
            LineDecision::Pay {
                reference: "2024-03-10.EUR.r2.m-1".into(),
                amount_minor: 150,
                status: PayoutStatus::Pending,
            }
        );
        let LineDecision::Pay { status, .. } = LineDecision::of(date, 2, &line, 150, true) else {
            panic!("a positive amount due is paid");
        };
        assert_eq!(status, PayoutStatus::Held);
        let LineDecision::Carry(carried) = LineDecision::of(date, 3, &line, -400, false) else {
            panic!("a negative amount due is carried forward");
        };
        assert_eq!(
            (
                carried.amount_minor,
                carried.origin_date,
                carried.origin_revision
            ),
            (-400, date, 3)
        );
        assert_eq!(carried.applied_date, None);
        assert_eq!(
            LineDecision::of(date, 2, &line, 0, true),
            LineDecision::Nothing
        );
    }

    #[test]
    fn the_amount_due_pays_differences_and_carries_what_is_owed() {
        // First revision: net 97.50, nothing paid.
        assert_eq!(amount_due(9_750, 0, 0, 0), Some(9_750));
        // A rerun raising the net to 99.00 pays the 1.50 difference.
        assert_eq!(amount_due(9_900, 0, 9_750, 0), Some(150));
        // A rerun lowering it to 95.00 after 99.00 was paid carries 4.00 forward.
        assert_eq!(amount_due(9_500, 0, 9_900, 0), Some(-400));
        // Raised back to 99.00: the 4.00 carried out counts as settled, so it is paid back.
        assert_eq!(amount_due(9_900, 0, 9_900, -400), Some(400));
        // The next date deducts what is owed.
        assert_eq!(amount_due(950, -400, 0, 0), Some(550));
        assert_eq!(amount_due(i64::MAX, 1, 0, 0), None);
    }

    #[test]
    fn references_are_deterministic_and_end_with_the_merchant() {
        let usd = Currency::from_code("USD").unwrap();
        let date = "2024-03-10".parse().unwrap();
        assert_eq!(
            payout_reference(date, usd, 1, "m-0001"),
            "2024-03-10.USD.r1.m-0001"
        );
        assert_ne!(
            payout_reference(date, usd, 2, "m-0001"),
            payout_reference(date, usd, 1, "m-0001")
        );
        assert_ne!(
            payout_reference(date, usd, 1, "m.1"),
            payout_reference(date, usd, 1, "m")
        );
    }
}
