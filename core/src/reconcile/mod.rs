//! Reconciliation in Settle: the domain's statements, rules, matcher and decisions (re-exported), and
//! the service that imports statements, runs the rules and records people's decisions.

pub use settle_domain::reconcile::*;

pub mod adjustment;
pub mod metrics;
pub mod records;
pub mod report;
pub mod service;
pub mod settings;
pub mod simulated;

pub use adjustment::{AdjustOutcome, AdjustRequest};
pub use service::{
    ExpectRequest, ImportFile, ImportReport, KindItem, KindRun, ReconcileError,
    ReconciliationService, RunReport, WriteOffRequest,
};
pub use settings::ReconciliationSettings;

/// The SHA-256 of a statement file, hex: what its import records and an API request is keyed on.
pub fn file_sha256(bytes: &[u8]) -> String {
    settle_statements::file_sha256(bytes)
}
