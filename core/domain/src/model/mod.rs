//! The domain records: transactions, settlements with their lines and totals, audit events.
//! Plain data with validation; no I/O.

mod access;
mod audit;
mod fee_ledger;
pub mod fees;
pub mod idempotency;
mod payout;
mod settlement;
mod transaction;

pub use access::{ApiToken, RerunRequest, RerunRequestStatus, Role};
pub use audit::{AuditAction, AuditEvent, AuditOutcome};
pub use fee_ledger::{FeeCharge, FeeLedgerWrite, FeeReturn, PaymentFeeLedger};
pub use payout::{
    amount_due, initial_payout_status, payout_reference, CarryForward, LineDecision, Notification,
    NotificationStatus, Payout, PayoutStatus,
};
pub use settlement::{
    CurrencyTotals, Fence, Lease, RunTrigger, Settlement, SettlementFigures, SettlementLine,
    SettlementStatus,
};
pub(crate) use transaction::named_enum;
pub use transaction::{
    validate_external_ref, validate_merchant_id, FieldError, NewTransaction, PaymentMethod,
    Transaction, TransactionKind, TransactionStatus, MAX_EXTERNAL_REF_BYTES, MAX_MERCHANT_ID_BYTES,
};
