//! Statements in domain terms: what a bank, the payout provider or the payment provider says happened,
//! as exact signed minor units with booking and value dates; every parser produces these, nothing else.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::money::{format_minor, Currency};

use crate::model::named_enum;

named_enum!(
    /// Who wrote the statement: `bank` (camt.053, MT940, OFX or a CSV profile) · `payouts` (the
    /// payout provider's payout report) · `provider` (the payment provider's transaction report).
    StatementKind, "statement kind" {
        Bank => "bank",
        Payouts => "payouts",
        Provider => "provider",
    }
);

named_enum!(
    /// The file format a statement arrived in.
    StatementFormat, "statement format" {
        Camt053 => "camt053",
        Mt940 => "mt940",
        Ofx => "ofx",
        Csv => "csv",
    }
);

/// What identifies a statement, so that importing it twice adds nothing: the account it is of, the
/// period it covers, and the sender's own sequence number (or id) for it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct StatementIdentity {
    pub kind: StatementKind,
    pub account: String,
    #[schema(value_type = String, format = Date)]
    pub period_start: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub period_end: NaiveDate,
    pub sequence: String,
}

impl StatementIdentity {
    /// One stable text key: `kind/account/start/end/sequence`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.kind, self.account, self.period_start, self.period_end, self.sequence
        )
    }
}

/// A balance a statement states (opening or closing), signed: negative is a debit balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatedBalance {
    pub amount_minor: i64,
    pub date: NaiveDate,
}

/// One statement: identity, currency, optional balances, and its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub identity: StatementIdentity,
    pub format: StatementFormat,
    pub currency: Currency,
    pub opening_balance: Option<StatedBalance>,
    pub closing_balance: Option<StatedBalance>,
    pub entries: Vec<StatementEntry>,
}

/// One entry (a bank booking, a payout report line, a transaction report line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    /// Where it came from in the file, for people and errors: `line 12`, `Ntry[3]/TxDtls[2]`.
    pub source: String,
    /// Signed: a credit to the account is positive, a debit negative. For the payout report, paid
    /// out is positive; for the transaction report, a capture is positive and a refund negative.
    pub amount_minor: i64,
    pub currency: Currency,
    pub booking_date: NaiveDate,
    /// When the money is available; banks often differ from the booking date.
    pub value_date: Option<NaiveDate>,
    /// When the sender says it happened, as an instant, where the format gives one (UTC).
    pub booked_at: Option<DateTime<Utc>>,
    /// References to match on, most specific first: end-to-end id, payout reference, external
    /// reference, remittance information tokens.
    pub references: Vec<String>,
    /// The sender's own id for this entry (bank's AcctSvcrRef, provider's payout or charge id).
    pub external_id: Option<String>,
    pub counterparty: Option<String>,
    pub description: String,
    /// Provider transaction reports: the fee it charged on this line (positive), where stated.
    pub fee_minor: Option<i64>,
    /// The sender's status where it states one (`paid`, `failed`, `captured`, `refunded`).
    pub status: Option<String>,
    /// A reversal (storno) of an earlier entry.
    pub reversal: bool,
}

impl StatementEntry {
    /// An entry of `amount_minor` booked on `booking_date`, with nothing else stated yet.
    pub fn new(amount_minor: i64, currency: Currency, booking_date: NaiveDate) -> StatementEntry {
        StatementEntry {
            source: String::new(),
            amount_minor,
            currency,
            booking_date,
            value_date: None,
            booked_at: None,
            references: vec![],
            external_id: None,
            counterparty: None,
            description: String::new(),
            fee_minor: None,
            status: None,
            reversal: false,
        }
    }
}

/// Why a statement's balances do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error(
        "the statement does not balance: opening {opening} + entries {entries} = {expected}, \
         but the closing balance is {closing}"
    )]
    Unbalanced {
        opening: String,
        entries: String,
        expected: String,
        closing: String,
    },
    #[error("the entries' total overflows")]
    Overflow,
    #[error("{at}: the entry is in {entry} but the statement is in {statement}")]
    CurrencyMismatch {
        at: String,
        entry: Currency,
        statement: Currency,
    },
}

impl Statement {
    /// Σ of the entries' signed amounts.
    pub fn entries_total_minor(&self) -> Option<i64> {
        self.entries
            .iter()
            .try_fold(0i64, |sum, e| sum.checked_add(e.amount_minor))
    }

    /// Opening balance + entries = closing balance, when the statement states both; every entry
    /// in the statement's currency. A statement that breaks either is refused on import.
    pub fn check_balance(&self) -> Result<(), BalanceError> {
        for entry in &self.entries {
            if entry.currency != self.currency {
                return Err(BalanceError::CurrencyMismatch {
                    at: entry.source.clone(),
                    entry: entry.currency,
                    statement: self.currency,
                });
            }
        }
        let total = self.entries_total_minor().ok_or(BalanceError::Overflow)?;
        if let (Some(opening), Some(closing)) = (self.opening_balance, self.closing_balance) {
            let expected = opening
                .amount_minor
                .checked_add(total)
                .ok_or(BalanceError::Overflow)?;
            if expected != closing.amount_minor {
                return Err(BalanceError::Unbalanced {
                    opening: format_minor(opening.amount_minor, self.currency),
                    entries: format_minor(total, self.currency),
                    expected: format_minor(expected, self.currency),
                    closing: format_minor(closing.amount_minor, self.currency),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn entry(amount_minor: i64) -> StatementEntry {
        StatementEntry {
            source: "line 1".into(),
            ..StatementEntry::new(
                amount_minor,
                usd(),
                NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            )
        }
    }

    fn statement(opening: i64, closing: i64, entries: &[i64]) -> Statement {
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        Statement {
            identity: StatementIdentity {
                kind: StatementKind::Bank,
                account: "DE89370400440532013000".into(),
                period_start: date,
                period_end: date,
                sequence: "1".into(),
            },
            format: StatementFormat::Camt053,
            currency: usd(),
            opening_balance: Some(StatedBalance {
                amount_minor: opening,
                date,
            }),
            closing_balance: Some(StatedBalance {
                amount_minor: closing,
                date,
            }),
            entries: entries.iter().map(|a| entry(*a)).collect(),
        }
    }

    #[test]
    fn a_balanced_statement_passes_and_an_unbalanced_one_names_the_figures() {
        assert_eq!(
            statement(10_000, 7_500, &[-3_000, 500]).check_balance(),
            Ok(())
        );
        let err = statement(10_000, 7_501, &[-3_000, 500])
            .check_balance()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the statement does not balance: opening 100.00 + entries -25.00 = 75.00, but the \
             closing balance is 75.01"
        );
    }

    #[test]
    fn an_entry_in_another_currency_is_refused() {
        let mut s = statement(0, 100, &[100]);
        s.entries[0].currency = Currency::from_code("EUR").unwrap();
        assert!(matches!(
            s.check_balance(),
            Err(BalanceError::CurrencyMismatch { .. })
        ));
    }
}
