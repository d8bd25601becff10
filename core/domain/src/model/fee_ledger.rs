//! A refunded payment's fee ledger: the fee it was charged (its parts and the revision whose schedule
//! charged it) and the fee its refunds have returned so far, a running amount consumed in settlement order.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::SettlementDate;
use crate::money::Currency;

/// The fee a payment was charged, as the revision that settled the payment's date computed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeCharge {
    /// The fee charged: percent part plus fixed part, clamped to the rule's minimum and maximum.
    pub fee_minor: i64,
    /// The rule's percentage, e.g. 2.5 for 2.5 %.
    pub percent: Decimal,
    /// The rule's fixed part in minor units.
    pub fixed_minor: i64,
    /// Whether the charging rule lets a refund return the percentage part.
    pub refund_returns_percent: bool,
    /// The settlement revision whose fee schedule charged it.
    pub settlement_date: SettlementDate,
    pub revision: u32,
}

impl FeeCharge {
    /// Whether `other` charged the same fee by the same rule (whichever revision computed it).
    pub fn same_terms(&self, other: &FeeCharge) -> bool {
        self.fee_minor == other.fee_minor
            && self.percent == other.percent
            && self.fixed_minor == other.fixed_minor
            && self.refund_returns_percent == other.refund_returns_percent
    }
}

/// What one settled refund returned of its payment's fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeReturn {
    pub refund_id: Uuid,
    pub returned_minor: i64,
    /// The settlement revision that computed this return.
    pub settlement_date: SettlementDate,
    pub revision: u32,
    /// The charge this return was computed from: reruns reuse the amount while the payment's
    /// charge keeps these terms. `None` in ledgers written before it was kept, which compare
    /// with the ledger's charge instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<FeeCharge>,
}

/// One refunded payment's ledger, keyed by (merchant_id, external_ref) of the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFeeLedger {
    pub merchant_id: String,
    /// The payment's external_ref (what refunds name in `refund_of`).
    pub external_ref: String,
    pub payment_id: Uuid,
    pub currency: Currency,
    /// The charge the latest returns were capped by.
    pub charge: FeeCharge,
    /// The sum of `returns`: never above what was charged when each return was settled.
    pub returned_minor: i64,
    /// In settlement order: the order the refunds were first settled in.
    pub returns: Vec<FeeReturn>,
    /// Bumped by every write; a write names the version it read (compare-and-set).
    pub version: u64,
}

impl PaymentFeeLedger {
    /// The return a refund already settled, if it was.
    pub fn returned_by(&self, refund_id: Uuid) -> Option<i64> {
        self.return_of(refund_id).map(|r| r.returned_minor)
    }

    /// The stored return of one refund, if it was settled.
    pub fn return_of(&self, refund_id: Uuid) -> Option<&FeeReturn> {
        self.returns.iter().find(|r| r.refund_id == refund_id)
    }

    /// The charge a stored return was computed from (the ledger's charge for older returns).
    pub fn charge_behind<'a>(&'a self, fee_return: &'a FeeReturn) -> &'a FeeCharge {
        fee_return.charge.as_ref().unwrap_or(&self.charge)
    }
}

/// A ledger to store with a revision's result, if the stored one is still at `expected_version`
/// (`None`: no ledger may exist yet). `ledger.version` is the version it is stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeLedgerWrite {
    pub ledger: PaymentFeeLedger,
    pub expected_version: Option<u64>,
}
