//! Settling a business date: the pure fold (`compute`) and the run that claims, folds and writes (`runner`).

pub mod compute;
pub mod fee_ledger;
pub mod runner;

pub use compute::{compute, ComputedSettlement, RefundedPayment, SettlementComputation};
pub use runner::{RunError, RunOutcome, RunRequest, SettlementRunner};
