//! Payouts: what Settle sends the provider for one merchant, currency and settlement date, under a
//! deterministic reference that is also the provider's idempotency key, so nothing is paid twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::SettlementDate;
use crate::money::Currency;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    /// `{settlement_date}.{currency}.r{revision}.{merchant_id}`: unique, deterministic, and the
    /// provider's idempotency key.
    pub reference: String,
    pub settlement_date: SettlementDate,
    /// The revision whose settlement created it (an adjustment payout when > the first).
    pub revision: u32,
    pub merchant_id: String,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
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
