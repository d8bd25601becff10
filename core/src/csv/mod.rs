//! CSV in and out: the validating transactions import (with its rejects file) and the RFC 4180
//! export of settlement lines for manual reconciliation.

pub mod export;
pub mod import;
mod rejects;

pub use export::{write_settlement_csv, EXPORT_COLUMNS};
pub use import::{
    import_csv, ImportError, ImportOptions, ImportProgress, ImportReport, NoProgress, RowError,
};
