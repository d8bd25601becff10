//! Settling a business date: the commands every way in gives (`commands`), the run that claims,
//! folds (with the pure `crate::compute`) and writes (`runner`), and four-eyes reruns (`rerun_approval`).

pub mod commands;
pub mod lag;
pub mod rerun_approval;
pub mod runner;

/// The pure fold, at its old paths too.
pub use crate::compute::{
    self, compute, fee_ledger, ComputedSettlement, RefundedPayment, SettlementComputation,
};
pub use commands::{RerunOutcome, RerunPath, SettlementCommands};
pub use rerun_approval::{ClaimedRun, RerunApprovalError, RerunApprovals, RerunAsk};
pub use runner::{RunError, RunOutcome, RunRequest, SettlementRunner};
