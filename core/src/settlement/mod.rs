//! Settling a business date: the pure fold (`compute`), the run that claims, folds and writes
//! (`runner`), and four-eyes reruns (`rerun_approval`).

pub mod compute;
pub mod fee_ledger;
pub mod rerun_approval;
pub mod runner;

pub use compute::{compute, ComputedSettlement, RefundedPayment, SettlementComputation};
pub use rerun_approval::{ClaimedRerun, RerunApprovalError, RerunApprovals, RerunAsk};
pub use runner::{RunError, RunOutcome, RunRequest, SettlementRunner};
