//! CSV in and out: the validating transactions import (with its rejects file) and the RFC 4180
//! export of settlement lines for manual reconciliation; every cell written through `cell`'s
//! formula-injection rule.

mod cell;
pub mod export;
pub mod import;

pub use cell::{safe_cell, write_safe_record};
pub use export::{write_settlement_csv, EXPORT_COLUMNS};
pub use import::{
    import_csv, ImportError, ImportOptions, ImportProgress, ImportReport, NoProgress, RowError,
};
