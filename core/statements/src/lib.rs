//! Statement files read into Settle's domain statements, and written from them: ISO 20022 camt.053,
//! SWIFT MT940, OFX, bank CSV by a column profile, and Settle's payout and provider report CSVs.

pub mod amount;
pub mod camt053;
pub mod csv_profile;
mod error;
pub mod mt940;
pub mod ofx;
pub mod reports;
pub mod write;
mod xml;

use chrono_tz::Tz;
use settle_domain::reconcile::{Statement, StatementFormat};
use sha2::{Digest, Sha256};

pub use csv_profile::CsvProfile;
pub use error::StatementError;
pub use reports::{parse_payout_report, parse_provider_report};

/// How to read a file: the business timezone maps instants to dates; `account` names the
/// account of formats that carry none (the reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    pub business_timezone: Tz,
    pub account: Option<String>,
}

/// The file's SHA-256, hex: the sequence of a report that carries none, and kept with imports.
pub fn file_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a bank statement file of `format`; every statement it holds must balance.
pub fn parse_bank(
    format: StatementFormat,
    bytes: &[u8],
    profile: Option<&CsvProfile>,
) -> Result<Vec<Statement>, StatementError> {
    let statements = match format {
        StatementFormat::Camt053 => camt053::parse(bytes)?,
        StatementFormat::Mt940 => mt940::parse(bytes)?,
        StatementFormat::Ofx => ofx::parse(bytes)?,
        StatementFormat::Csv => match profile {
            Some(profile) => csv_profile::parse(bytes, profile)?,
            None => {
                return Err(StatementError::file(
                    "a CSV bank statement needs a column profile (--profile NAME)",
                ))
            }
        },
    };
    check_balances(statements)
}

/// The format of a bank statement file, from its first bytes (`None`: not recognised).
pub fn detect_bank_format(bytes: &[u8]) -> Option<StatementFormat> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    if head.contains("camt.053") || head.contains("BkToCstmrStmt") {
        Some(StatementFormat::Camt053)
    } else if head.contains("OFXHEADER") || head.contains("<OFX>") {
        Some(StatementFormat::Ofx)
    } else if head.contains(":20:") && head.contains(":25:") {
        Some(StatementFormat::Mt940)
    } else {
        None
    }
}

/// Refuses the file when one of its statements does not balance, naming it.
pub(crate) fn check_balances(statements: Vec<Statement>) -> Result<Vec<Statement>, StatementError> {
    for (index, statement) in statements.iter().enumerate() {
        statement.check_balance().map_err(|error| {
            StatementError::new(
                format!("statement {} ({})", index + 1, statement.identity.sequence),
                None,
                error.to_string(),
            )
        })?;
    }
    if statements.is_empty() {
        return Err(StatementError::file("the file holds no statement"));
    }
    Ok(statements)
}
