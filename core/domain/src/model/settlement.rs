//! A settlement: one revision of one business date, its per-merchant lines and per-currency totals.
//! Revisions are immutable once completed; a lease with a fencing version guards the running one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::{BusinessCalendar, SettlementDate, Window};
use crate::model::fees::FeeSchedule;
use crate::money::{Currency, MoneyError};

use super::transaction::named_enum;

named_enum!(
    /// Where a revision stands. `running` holds a lease; `failed` keeps its error and can be retried.
    SettlementStatus, "settlement status" {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
    }
);

named_enum!(
    /// Who started a revision: the nightly scheduler or a person.
    RunTrigger, "trigger" {
        Scheduler => "scheduler",
        Manual => "manual",
    }
);

/// The lease of a running revision. `version` is the fencing token: it grows with every claim, and
/// every write made under the lease must present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
    pub version: i64,
}

/// What a lease holder presents with each write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub settlement_date: SettlementDate,
    pub revision: u32,
    pub lease_version: i64,
}

/// Counts and amounts shared by a merchant's line and a currency's day totals.
/// `net_minor = gross_minor - refunds_minor - chargebacks_minor + adjustments_minor - fees_minor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettlementFigures {
    /// Every transaction included, whatever its status.
    pub transaction_count: u64,
    pub completed_count: u64,
    pub failed_count: u64,
    pub cancelled_count: u64,
    pub pending_count: u64,
    /// Completed transactions per kind.
    pub payment_count: u64,
    pub refund_count: u64,
    pub chargeback_count: u64,
    pub adjustment_count: u64,
    /// Transactions that arrived after their own date had been settled.
    pub late_count: u64,
    pub gross_minor: i64,
    pub refunds_minor: i64,
    pub chargebacks_minor: i64,
    pub adjustments_minor: i64,
    pub fees_minor: i64,
    pub net_minor: i64,
}

/// A sum that would overflow `i64` minor units.
fn add(a: i64, b: i64, currency: Currency) -> Result<i64, MoneyError> {
    a.checked_add(b).ok_or(MoneyError::Overflow(currency))
}

impl SettlementFigures {
    /// Adds another set of figures of the same currency, refusing to overflow.
    pub fn accumulate(
        &mut self,
        other: &SettlementFigures,
        currency: Currency,
    ) -> Result<(), MoneyError> {
        self.transaction_count += other.transaction_count;
        self.completed_count += other.completed_count;
        self.failed_count += other.failed_count;
        self.cancelled_count += other.cancelled_count;
        self.pending_count += other.pending_count;
        self.payment_count += other.payment_count;
        self.refund_count += other.refund_count;
        self.chargeback_count += other.chargeback_count;
        self.adjustment_count += other.adjustment_count;
        self.late_count += other.late_count;
        self.gross_minor = add(self.gross_minor, other.gross_minor, currency)?;
        self.refunds_minor = add(self.refunds_minor, other.refunds_minor, currency)?;
        self.chargebacks_minor = add(self.chargebacks_minor, other.chargebacks_minor, currency)?;
        self.adjustments_minor = add(self.adjustments_minor, other.adjustments_minor, currency)?;
        self.fees_minor = add(self.fees_minor, other.fees_minor, currency)?;
        self.net_minor = add(self.net_minor, other.net_minor, currency)?;
        Ok(())
    }

    /// The net identity, recomputed with overflow checks.
    pub fn expected_net_minor(&self) -> Option<i64> {
        self.gross_minor
            .checked_sub(self.refunds_minor)?
            .checked_sub(self.chargebacks_minor)?
            .checked_add(self.adjustments_minor)?
            .checked_sub(self.fees_minor)
    }
}

/// What one merchant is owed (or owes) in one currency for one settlement revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettlementLine {
    pub merchant_id: String,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    #[serde(flatten)]
    pub figures: SettlementFigures,
}

/// A currency's day totals: the exact sum of that currency's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CurrencyTotals {
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    pub merchant_count: u64,
    #[serde(flatten)]
    pub figures: SettlementFigures,
}

/// One revision of one settlement date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settlement {
    #[schema(value_type = String, format = Date)]
    pub settlement_date: SettlementDate,
    pub revision: u32,
    pub status: SettlementStatus,
    pub trigger: RunTrigger,
    /// Who asked for it (`cli:USER`, later an API token's name).
    pub requested_by: String,
    /// Required for revisions after the first.
    pub reason: Option<String>,
    /// The calendar and fees this revision was computed with.
    #[schema(value_type = Object)]
    pub calendar: BusinessCalendar,
    #[schema(value_type = Object)]
    pub fee_schedule: FeeSchedule,
    pub window: Window,
    /// Present while running; kept after, to show who ran it.
    pub lease: Option<Lease>,
    /// The fencing token of the latest claim.
    pub lease_version: i64,
    /// How many times this revision was claimed (1 + retries + takeovers).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// When the lines and totals were saved (before payouts); a resumed run reuses them.
    pub computed_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Empty until completed.
    pub totals: Vec<CurrencyTotals>,
}

impl Settlement {
    pub fn fence(&self) -> Fence {
        Fence {
            settlement_date: self.settlement_date,
            revision: self.revision,
            lease_version: self.lease_version,
        }
    }
}
