//! The store ports: domain-shaped traits every store adapter implements with identical semantics.
//! Adapters: `sqlite` (embedded, the default). The contract suite in `tests/` runs against each.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::{BusinessCalendar, SettlementDate, Window};
use crate::fees::FeeSchedule;
use crate::model::{
    AuditEvent, Fence, NewTransaction, RunTrigger, Settlement, SettlementLine, SettlementStatus,
    Transaction,
};
use crate::settlement::compute::{ComputedSettlement, PaymentKey, RefundedPayment};

#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Why a store operation did not happen. The settlement variants are expected outcomes of races
/// and are reported to the user as such; `Backend` and `Corrupt` are faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("settlement {settlement_date} is already settled (revision {revision} completed); use `rerun` with a reason to settle it again")]
    AlreadySettled {
        settlement_date: SettlementDate,
        revision: u32,
    },
    #[error("settlement {settlement_date} revision {revision} is already running (lease held by {owner} until {lease_expires_at})")]
    AlreadyRunning {
        settlement_date: SettlementDate,
        revision: u32,
        owner: String,
        lease_expires_at: DateTime<Utc>,
    },
    #[error("settlement {settlement_date} revision {revision} failed ({error}); use `retry` to resume it")]
    RevisionFailed {
        settlement_date: SettlementDate,
        revision: u32,
        error: String,
    },
    #[error("settlement {settlement_date} has no {what}")]
    NothingToDo {
        settlement_date: SettlementDate,
        what: &'static str,
    },
    #[error("settlement {settlement_date} moved on: expected revision {expected} to be the latest, found {found}")]
    RevisionMoved {
        settlement_date: SettlementDate,
        expected: u32,
        found: u32,
    },
    #[error("lease lost on settlement {} revision {} (version {} was taken over); nothing was written", .0.settlement_date, .0.revision, .0.lease_version)]
    LeaseLost(Fence),
    #[error("store error: {0}")]
    Backend(String),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
}

/// A transaction ready to be stored: validated, with its id, arrival time and natural date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub id: Uuid,
    pub transaction: NewTransaction,
    pub created_at: DateTime<Utc>,
    /// The date whose window contains `occurred_at`. The store moves the transaction to the
    /// next unsealed date (and marks it late) if this one is already sealed.
    pub natural_date: SettlementDate,
}

/// A new transaction whose (merchant_id, external_ref) or id is already stored with other content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertConflict {
    /// Position in the batch.
    pub index: usize,
    pub existing: Transaction,
}

/// What `insert_transactions` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: u64,
    /// Identical to a stored transaction: skipped.
    pub duplicates: u64,
    /// Of the inserted, how many were moved past a settled date.
    pub late: u64,
    /// When non-empty, nothing of the batch was written.
    pub conflicts: Vec<InsertConflict>,
}

/// How a run wants to claim a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimMode {
    /// Settle a date for the first time, or take over a run whose lease expired.
    Run,
    /// Create revision `after_revision + 1`, provided `after_revision` is still the latest and
    /// is not running.
    Rerun { after_revision: u32, reason: String },
    /// Resume the latest revision if it failed or its lease expired.
    Retry,
}

/// Everything a claim needs; the calendar, schedule and window are used only when a new
/// revision is created (a takeover or retry keeps the revision's own).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub settlement_date: SettlementDate,
    pub mode: ClaimMode,
    pub owner: String,
    pub requested_by: String,
    pub trigger: RunTrigger,
    pub now: DateTime<Utc>,
    pub lease_duration: Duration,
    pub calendar: BusinessCalendar,
    pub fee_schedule: FeeSchedule,
    pub window: Window,
}

/// A filter over settlement history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub from: Option<SettlementDate>,
    pub to: Option<SettlementDate>,
    pub status: Option<SettlementStatus>,
    /// Every revision, not only the latest of each date.
    pub all_revisions: bool,
    pub limit: u32,
    pub offset: u32,
}

/// Transactions: recorded once per (merchant_id, external_ref), each assigned to a settlement date.
#[async_trait]
pub trait TransactionStore: Send + Sync {
    /// Stores a batch atomically. A record identical to a stored one is skipped; one that differs
    /// is a conflict and nothing is written. Each record lands on its natural date unless that date
    /// is sealed (a revision was claimed), in which case it lands, marked late, on the first
    /// unsealed date after it. This assignment is atomic with respect to `claim_settlement`: a
    /// transaction is either seen by the claimed run or assigned to a later date.
    async fn insert_transactions(
        &self,
        batch: Vec<TransactionRecord>,
    ) -> Result<InsertOutcome, StoreError>;

    /// Stored transactions with these (merchant_id, external_ref) keys, in no particular order.
    async fn transactions_by_ref(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<Transaction>, StoreError>;

    async fn transaction(&self, id: Uuid) -> Result<Option<Transaction>, StoreError>;

    /// One page of a date's transactions, ordered by id, after `after` (keyset paging).
    async fn transactions_page(
        &self,
        settlement_date: SettlementDate,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Transaction>, StoreError>;

    /// A date's transactions that arrived after their own date was settled.
    async fn late_transactions(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Transaction>, StoreError>;

    /// For each (merchant_id, payment external_ref): the payment and every refund or chargeback
    /// that refers to it. Keys without a stored payment are left out.
    async fn refunded_payments(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<RefundedPayment>, StoreError>;
}

/// Settlements: claimed by compare-and-set under a lease, written with a fence, never changed once completed.
#[async_trait]
pub trait SettlementStore: Send + Sync {
    /// Claims a date (see `ClaimMode`); exactly one concurrent claimant wins. Returns the running
    /// revision with a fresh lease and fencing version.
    async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError>;

    /// Extends the lease, if the fence still holds.
    async fn renew_lease(&self, fence: &Fence, expires_at: DateTime<Utc>)
        -> Result<(), StoreError>;

    /// Writes lines and totals and marks the revision completed, atomically, if the fence holds.
    async fn complete_settlement(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError>;

    /// Marks the revision failed with its error, if the fence holds.
    async fn fail_settlement(
        &self,
        fence: &Fence,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// A revision of a date; the latest when `revision` is `None`.
    async fn settlement(
        &self,
        settlement_date: SettlementDate,
        revision: Option<u32>,
    ) -> Result<Option<Settlement>, StoreError>;

    /// Every revision of a date, oldest first.
    async fn settlement_revisions(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Settlement>, StoreError>;

    /// Settlements by date, newest first.
    async fn settlement_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Vec<Settlement>, StoreError>;

    /// The lines of a revision, ordered by merchant_id then currency.
    async fn settlement_lines(
        &self,
        settlement_date: SettlementDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, StoreError>;
}

/// The audit trail: append-only.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Events newest first.
    async fn audit_events(&self, limit: u32, offset: u32) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Everything Settle keeps, behind one handle.
pub trait Store: TransactionStore + SettlementStore + AuditStore {
    /// `sqlite` or `mongodb`, for messages and metrics.
    fn kind(&self) -> &'static str;
}

/// A shareable store handle.
pub type SharedStore = Arc<dyn Store>;

/// The kinds of store Settle can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
}
