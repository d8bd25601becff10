//! The store ports: domain-shaped traits every store adapter implements with identical semantics.
//! Adapters: settle-store-sqlite (embedded, the default) and settle-store-mongo; one contract suite in
//! `tests/` runs against both.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::{BusinessCalendar, SettlementDate, Window};
use crate::compute::{ComputedSettlement, PaymentKey, RefundedPayment};
use crate::model::fees::FeeSchedule;
use crate::model::idempotency::{BeginOutcome, StoredResponse};
use crate::model::{
    ApiToken, AuditEvent, CarryForward, Fence, NewTransaction, Notification, PaymentFeeLedger,
    Payout, PayoutStatus, RerunRequest, RerunRequestStatus, RunTrigger, Settlement, SettlementLine,
    SettlementStatus, Transaction,
};

pub mod claim;
pub mod migration;
pub mod reconciliation;
pub mod record;
pub mod rerun_approval;
pub mod settings;
pub mod timed;

pub use reconciliation::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome, ReconciliationStore,
    StatementImport, StoredEntry, StoredStatement,
};
pub use rerun_approval::RerunApproval;

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
    #[error("the fee ledger of merchant {merchant_id} payment {external_ref:?} changed while this run computed; compute again")]
    FeeLedgerMoved {
        merchant_id: String,
        external_ref: String,
    },
    #[error("the name {0:?} is already taken")]
    NameTaken(String),
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
    /// The idempotency key of the request that records it, kept under a unique index so that a
    /// request taken over after a crash finds what the first attempt wrote.
    pub idempotency: Option<IdempotencyTag>,
}

/// (actor, key) of an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyTag {
    /// Who acts, as the audit trail names it (both stores keep it under the name `principal`).
    pub actor: String,
    pub key: String,
}

/// What `record_transaction` did with one transaction recorded through the payments service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Inserted(Transaction),
    /// The same idempotency key already recorded this transaction (a request taken over).
    AlreadyRecorded(Transaction),
    /// Identical to a stored transaction (same merchant_id, external_ref and content).
    Duplicate(Transaction),
    /// The same merchant_id and external_ref are stored with other content.
    Conflict(Transaction),
    /// A refund or chargeback whose payment is not stored.
    PaymentNotFound,
    /// A refund or chargeback of something that cannot be returned (not a completed payment, or
    /// another currency).
    NotRefundable {
        payment: Transaction,
        reason: String,
    },
    /// Refunds plus chargebacks would exceed the payment.
    ExceedsPayment {
        payment: Transaction,
        /// Already returned (completed or pending refunds and chargebacks).
        returned_minor: i64,
    },
    /// The return fits what is recorded, but not with other writers' returns still in flight
    /// (reserved, not yet written, perhaps never to be: a writer may have died). Not an answer
    /// to keep: the caller may retry once they are written or expire.
    ReturnsInDoubt {
        payment: Transaction,
        /// Reserved by returns in flight.
        in_doubt_minor: i64,
        /// Seconds until the oldest of those reservations expires.
        retry_after_seconds: i64,
    },
}

impl RecordOutcome {
    /// The outcome of a return refused by [`crate::returns::check_return`]; `payment` is the
    /// stored payment it was checked against (absent only when it was not found).
    pub fn refused(refusal: crate::returns::ReturnRefusal, payment: Option<Transaction>) -> Self {
        use crate::returns::ReturnRefusal;
        match (refusal, payment) {
            (ReturnRefusal::NotRefundable(reason), Some(payment)) => {
                RecordOutcome::NotRefundable { payment, reason }
            }
            (ReturnRefusal::ExceedsPayment { returned_minor, .. }, Some(payment)) => {
                RecordOutcome::ExceedsPayment {
                    payment,
                    returned_minor,
                }
            }
            _ => RecordOutcome::PaymentNotFound,
        }
    }
}

/// What planning a revision's payouts did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutPlan {
    /// Payouts this revision created (none when planned before: planning is idempotent).
    pub created: Vec<Payout>,
    /// Amounts owed that this revision carried forward.
    pub carried: Vec<CarryForward>,
}

/// A merchant whose payouts wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantHold {
    pub merchant_id: String,
    pub reason: String,
    pub held_by: String,
    pub held_at: DateTime<Utc>,
}

/// A change of one payout's status, applied only if the payout is still in `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutUpdate {
    pub reference: String,
    pub from: PayoutStatus,
    pub to: PayoutStatus,
    pub provider_payout_id: Option<String>,
    /// Attempts made in this step, added to the stored count.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub now: DateTime<Utc>,
}

/// A sender's claim to be the only one with a payout in flight (see
/// [`PayoutStore::claim_payout_send`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutClaim {
    pub reference: String,
    /// The status the sender last saw: `pending` or `unknown`.
    pub from: PayoutStatus,
    /// Who claims: unique per sender, so that a claim is never mistaken for another's.
    pub claimed_by: String,
    pub now: DateTime<Utc>,
    /// When the claim lapses unless renewed: later than the sender can have a request in flight.
    pub expires_at: DateTime<Utc>,
}

/// What became of a [`PayoutClaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutClaimOutcome {
    /// The sender holds the claim: the payout, now `unknown`, as stored.
    Claimed(Payout),
    /// Another sender holds a live claim: it may have a request in flight.
    InFlight {
        claimed_by: String,
        expires_at: DateTime<Utc>,
    },
    /// The payout is no longer in `from` (or does not await sending, or does not exist).
    Moved,
}

/// Which payouts [`PayoutStore::payouts_with_status`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutFilter {
    pub status: PayoutStatus,
    /// Only this date's; every date's when `None`.
    pub settlement_date: Option<SettlementDate>,
    /// Only those last changed strictly before this instant.
    pub updated_before: Option<DateTime<Utc>>,
}

/// An idempotent request starting: insert-if-absent of (actor, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyBegin {
    pub actor: String,
    pub key: String,
    /// SHA-256 of the canonical request, hex.
    pub fingerprint: String,
    pub now: DateTime<Utc>,
    /// Until when the first caller holds the key; after that another may take over.
    pub locked_until: DateTime<Utc>,
    /// When the record (and its stored response) is forgotten.
    pub expires_at: DateTime<Utc>,
}

impl IdempotencyBegin {
    /// The lock this begin asks for, to present to `idempotency_complete` or
    /// `idempotency_release` when it answers `New`.
    pub fn lock(&self) -> IdempotencyLock {
        IdempotencyLock {
            actor: self.actor.clone(),
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            locked_until: self.locked_until,
        }
    }
}

/// The lock a caller holds on an in-flight key: the `locked_until` of the begin that answered
/// `New` is its token (stores keep it to the millisecond, and every claim or takeover stores a
/// later one), so a holder that stalled past its lock cannot complete or release the record of
/// whoever took the key over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyLock {
    pub actor: String,
    pub key: String,
    pub fingerprint: String,
    pub locked_until: DateTime<Utc>,
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
    /// How many matching settlements to skip; one past the end gives an empty list.
    pub offset: u64,
}

/// What a page of a revision's lines is ordered by: a key, then merchant_id, then currency, all in
/// the page's direction (descending is the exact reverse of ascending, ties included), comparing
/// text byte by byte. Both stores order the same way, so pages are deterministic and identical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LineSort {
    /// merchant_id, then currency.
    #[default]
    MerchantId,
    NetMinor,
    GrossMinor,
    FeesMinor,
    TransactionCount,
}

impl LineSort {
    pub const ALL: [LineSort; 5] = [
        LineSort::MerchantId,
        LineSort::NetMinor,
        LineSort::GrossMinor,
        LineSort::FeesMinor,
        LineSort::TransactionCount,
    ];

    /// The name the API uses, which is also the stored field sorted on.
    pub fn as_str(&self) -> &'static str {
        match self {
            LineSort::MerchantId => "merchant_id",
            LineSort::NetMinor => "net_minor",
            LineSort::GrossMinor => "gross_minor",
            LineSort::FeesMinor => "fees_minor",
            LineSort::TransactionCount => "transaction_count",
        }
    }

    /// The key named `name` (exactly, as [`LineSort::as_str`] writes it), if any.
    pub fn from_name(name: &str) -> Option<LineSort> {
        LineSort::ALL.into_iter().find(|sort| sort.as_str() == name)
    }
}

/// Which lines of a revision [`SettlementStore::settlement_lines_page`] returns, in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinesQuery {
    pub sort: LineSort,
    pub descending: bool,
    /// Only lines whose merchant_id contains this text (anywhere, case and all); every line when
    /// `None` or empty.
    pub merchant_contains: Option<String>,
    /// At most this many lines (0: none).
    pub limit: u32,
    /// How many matching lines to skip; one past the end gives an empty page.
    pub offset: u64,
}

/// One page of a revision's lines, and how many lines match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinesPage {
    pub items: Vec<SettlementLine>,
    /// Every line the query matches, on any page.
    pub total: u64,
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

    /// Fixes the set of transactions the run holding `fence` settles, before it reads them: for a
    /// first revision every transaction assigned to the date (and stragglers of earlier settled
    /// dates, which it takes as late); for a rerun exactly what the earlier revisions settled. A
    /// store that assigns dates atomically with claims (SQLite) has nothing to do. Returns how many
    /// transactions the run will read, when the store counted them while freezing (SQLite does
    /// not: counting would cost a pass over the date's index and serve only a log line).
    async fn freeze_transactions(&self, fence: &Fence) -> Result<Option<u64>, StoreError>;

    /// The transactions frozen for the run holding `fence`, each exactly once, in no promised order
    /// (the fold does not depend on it), streamed with bounded memory (`batch_size` per round
    /// trip): a day of a million transactions is never all in memory.
    fn run_transactions<'a>(
        &'a self,
        fence: &Fence,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Transaction, StoreError>>;

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

    /// Records one transaction from the payments service, atomically: a key already used returns
    /// what it recorded; a refund or chargeback is checked against its payment (same merchant and
    /// currency, completed, and refunds plus chargebacks never above the payment), so two
    /// concurrent refunds cannot both pass.
    async fn record_transaction(
        &self,
        record: TransactionRecord,
    ) -> Result<RecordOutcome, StoreError>;
}

/// Idempotency records: one per (actor, key), claimed by insert-if-absent.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the key or says why not. An expired record counts as absent; an in-flight record
    /// whose lock has passed is taken over (`New`).
    async fn idempotency_begin(&self, begin: IdempotencyBegin) -> Result<BeginOutcome, StoreError>;

    /// Stores the response of a completed request, to be replayed until the record expires, if
    /// the record is still in flight under `lock`. False when it is not (the lock passed and
    /// another request took the key over, or the record expired): nothing was changed.
    async fn idempotency_complete(
        &self,
        lock: &IdempotencyLock,
        response: &StoredResponse,
    ) -> Result<bool, StoreError>;

    /// Forgets an in-flight record whose request changed nothing, so a retry can succeed, if it is
    /// still held under `lock`. False when it is not: the record of a takeover is never deleted.
    async fn idempotency_release(&self, lock: &IdempotencyLock) -> Result<bool, StoreError>;

    /// Deletes expired records; returns how many.
    async fn idempotency_reap(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Payouts, holds and amounts carried forward.
#[async_trait]
pub trait PayoutStore: Send + Sync {
    /// Creates the revision's payouts, atomically and idempotently, if the fence holds. For each
    /// line: target = net + every amount owed applied to this date; the difference from what the
    /// date already settled (payouts not failed, plus amounts it carried forward) becomes a payout
    /// when positive (held if the merchant is on hold) and is carried forward when negative. Open
    /// carry-forwards of the merchant and currency from other dates are applied to this date.
    async fn plan_payouts(
        &self,
        fence: &Fence,
        lines: &[SettlementLine],
        now: DateTime<Utc>,
    ) -> Result<PayoutPlan, StoreError>;

    /// Every payout of a date, all revisions, ordered by merchant, currency, revision.
    async fn payouts(&self, settlement_date: SettlementDate) -> Result<Vec<Payout>, StoreError>;

    /// Payouts to send (pending or unknown), optionally of one date or one merchant.
    async fn payouts_awaiting(
        &self,
        settlement_date: Option<SettlementDate>,
        merchant_id: Option<String>,
    ) -> Result<Vec<Payout>, StoreError>;

    /// Applies a status change if the payout is still in `update.from`; `None` if it moved on. A
    /// payout that leaves `pending`/`unknown` loses any in-flight claim (the provider's word, e.g.
    /// a callback, is final); one that stays keeps it.
    async fn update_payout(&self, update: &PayoutUpdate) -> Result<Option<Payout>, StoreError>;

    /// Claims a payout for sending, by compare-and-set: only if it is still in `claim.from`, that
    /// status is `pending` or `unknown`, and no other sender holds a live claim (none, one expired
    /// at `claim.now`, or the claimer's own, which is renewed). The payout becomes `unknown`,
    /// durably, with the claim: exactly one sender may have a payout in flight at a time.
    async fn claim_payout_send(
        &self,
        claim: &PayoutClaim,
    ) -> Result<PayoutClaimOutcome, StoreError>;

    /// Records what a claimed send found and releases the claim: `update` applies only if the
    /// payout is still in `update.from` and claimed by `claimed_by`; `None` otherwise (another
    /// sender took over an expired claim, or the payout moved on).
    async fn finish_payout_send(
        &self,
        update: &PayoutUpdate,
        claimed_by: &str,
    ) -> Result<Option<Payout>, StoreError>;

    /// Payouts in one status per `filter`, ordered by date, merchant, currency, revision.
    async fn payouts_with_status(&self, filter: &PayoutFilter) -> Result<Vec<Payout>, StoreError>;

    /// Puts a merchant on hold: its pending payouts (and new ones) wait. Returns how many were held.
    async fn hold_merchant(&self, hold: &MerchantHold) -> Result<u64, StoreError>;

    /// Releases a hold: held payouts become pending. Returns how many; `None` if not on hold.
    async fn release_merchant(
        &self,
        merchant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError>;

    async fn merchant_holds(&self) -> Result<Vec<MerchantHold>, StoreError>;

    /// Amounts carried forward, optionally only those not yet applied.
    async fn carry_forwards(&self, open_only: bool) -> Result<Vec<CarryForward>, StoreError>;
}

/// Webhook notifications sent about settlements.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Records (or updates) the notification of one event of one revision.
    async fn record_notification(&self, notification: &Notification) -> Result<(), StoreError>;

    async fn notifications(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Notification>, StoreError>;
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

    /// Writes the computed lines and totals (once per revision), atomically, if the fence holds,
    /// and the fee ledgers the result changed, each only if it is still at the version the run read
    /// (`FeeLedgerMoved` otherwise: the run computes again). SQLite writes all or nothing; MongoDB
    /// writes each ledger by compare-and-set before the result, so a ledger written by a run that then
    /// stopped holds returns its successor reuses. The revision stays running: payouts come next.
    async fn save_settlement_result(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The fee ledgers of these payments (merchant_id, external_ref); keys without one are left out.
    async fn fee_ledgers(&self, keys: Vec<PaymentKey>)
        -> Result<Vec<PaymentFeeLedger>, StoreError>;

    /// Marks the revision completed, if the fence holds and its result was saved.
    async fn complete_settlement(
        &self,
        fence: &Fence,
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

    /// One page of a revision's lines (the same lines `settlement_lines` reads), filtered, ordered
    /// and paged by `query` in the store, with the number of lines the filter matches.
    async fn settlement_lines_page(
        &self,
        settlement_date: SettlementDate,
        revision: u32,
        query: &LinesQuery,
    ) -> Result<LinesPage, StoreError>;
}

/// API tokens (as hashes) and four-eyes rerun requests.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new token; a name already used (even by a revoked token) is refused with
    /// `NameTaken`.
    async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError>;

    /// The token with this hash, active or revoked.
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError>;

    /// Every token, ordered by name.
    async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Revokes the token named `name`; `None` if there is none. Revoking twice keeps the first time.
    async fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiToken>, StoreError>;

    async fn create_rerun_request(&self, request: &RerunRequest) -> Result<(), StoreError>;

    async fn rerun_request(&self, id: Uuid) -> Result<Option<RerunRequest>, StoreError>;

    /// Requests, newest first, optionally of one status.
    async fn rerun_requests(
        &self,
        status: Option<RerunRequestStatus>,
    ) -> Result<Vec<RerunRequest>, StoreError>;

    /// Approves a pending request and claims its run as one step, at `claim.now`: the request is
    /// approved (with `run_revision`) only if `claim` is granted; a refused claim leaves it pending
    /// with the refusal as `last_refusal`. `claim` must be a rerun of the request's date after the
    /// revision the request was made against (a fault otherwise). Of concurrent approvals and
    /// rejections of a request at most one decides it, and no approval is ever without its run.
    async fn approve_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        claim: ClaimRequest,
    ) -> Result<RerunApproval, StoreError>;

    /// Rejects a pending request (compare-and-set on `pending`, never while an approval of it is
    /// in flight): `None` if it is not pending then, or unknown.
    async fn reject_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RerunRequest>, StoreError>;
}

/// Which audit events to list: an event matches when it matches every field that is set (text
/// exactly, case and all; `from` inclusive, `to` exclusive). `Default` matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub subject: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Events at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Events strictly before this instant.
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// `from` and `to` as the stores compare them: stores keep instants to the millisecond
    /// (rounded down), so each bound is rounded up to the next whole millisecond, which keeps
    /// `occurred_at >= from` and `occurred_at < to` exact for a bound with finer digits.
    pub fn stored_bounds(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        (self.from.map(ceil_millis), self.to.map(ceil_millis))
    }

    /// True when the range holds no instant (`from` at or after `to`): nothing can match.
    pub fn is_empty_range(&self) -> bool {
        matches!(self.stored_bounds(), (Some(from), Some(to)) if from >= to)
    }
}

/// The first whole millisecond at or after `instant`.
fn ceil_millis(instant: DateTime<Utc>) -> DateTime<Utc> {
    let floor =
        DateTime::<Utc>::from_timestamp_millis(instant.timestamp_millis()).unwrap_or(instant);
    if floor < instant {
        floor + Duration::milliseconds(1)
    } else {
        floor
    }
}

/// The audit trail: append-only.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Events newest first (every event: [`AuditStore::audit_events_matching`] with no filter).
    async fn audit_events(&self, limit: u32, offset: u64) -> Result<Vec<AuditEvent>, StoreError> {
        self.audit_events_matching(&AuditFilter::default(), limit, offset)
            .await
    }

    /// The events `filter` matches, newest first (by `occurred_at`, then id, descending): at most
    /// `limit` (0: none) after skipping `offset` matching ones; one past the end gives an empty list.
    async fn audit_events_matching(
        &self,
        filter: &AuditFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Everything Settle keeps, behind one handle.
pub trait Store:
    TransactionStore
    + SettlementStore
    + IdempotencyStore
    + PayoutStore
    + NotificationStore
    + AccessStore
    + AuditStore
    + ReconciliationStore
{
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
    Mongodb,
}
