//! Bank statements in CSV, read by a column profile (`[reconciliation.profiles.NAME]` in the config):
//! which header names hold the date, the amount (signed, or debit and credit), the currency and the rest.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Deserialize;
use settle_domain::money::Currency;
use settle_domain::reconcile::{
    Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use crate::amount::parse_amount;
use crate::{file_sha256, StatementError};

/// How a bank's CSV is laid out. Columns are named by their header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvProfile {
    /// The account the file is of (bank CSVs rarely say).
    pub account: String,
    /// The currency of every line, or the column holding it.
    pub currency: Option<String>,
    pub currency_column: Option<String>,
    /// Default `,`.
    pub delimiter: Option<char>,
    pub date_column: String,
    /// chrono's format, default `%Y-%m-%d` (e.g. `%d.%m.%Y`).
    pub date_format: Option<String>,
    pub value_date_column: Option<String>,
    /// A signed amount, or a debit and a credit column (each unsigned, one of them filled).
    pub amount_column: Option<String>,
    pub debit_column: Option<String>,
    pub credit_column: Option<String>,
    /// `.` (default) or `,`.
    pub decimal_separator: Option<char>,
    /// Removed before reading an amount, e.g. `.` in `1.234,56`.
    pub thousands_separator: Option<char>,
    #[serde(default)]
    pub reference_columns: Vec<String>,
    pub description_column: Option<String>,
    pub counterparty_column: Option<String>,
    pub external_id_column: Option<String>,
}

impl CsvProfile {
    /// Whether the profile can read a file (the config reports the first problem under its key).
    pub fn check(&self) -> Result<(), String> {
        if self.account.trim().is_empty() {
            return Err("account must not be empty".into());
        }
        match (&self.currency, &self.currency_column) {
            (Some(code), None) => {
                Currency::from_code(code).map_err(|e| e.to_string())?;
            }
            (None, Some(_)) => {}
            _ => return Err("name exactly one of currency and currency_column".into()),
        }
        match (&self.amount_column, &self.debit_column, &self.credit_column) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => {
                return Err(
                    "name either amount_column, or both debit_column and credit_column".into(),
                )
            }
        }
        if !matches!(self.decimal_separator, None | Some('.') | Some(',')) {
            return Err("decimal_separator is '.' or ','".into());
        }
        if self.thousands_separator.is_some()
            && self.thousands_separator == self.decimal_separator.or(Some('.'))
        {
            return Err("thousands_separator must differ from the decimal separator".into());
        }
        let format = self.date_format();
        let sample = NaiveDate::from_ymd_opt(2026, 12, 31).expect("a date");
        let written = sample.format(format).to_string();
        if NaiveDate::parse_from_str(&written, format).ok() != Some(sample) {
            return Err(format!("date_format {format:?} does not read a whole date"));
        }
        Ok(())
    }

    fn date_format(&self) -> &str {
        self.date_format.as_deref().unwrap_or("%Y-%m-%d")
    }
}

/// Reads `bytes` with `profile`: one statement per currency, no balances (a CSV states none).
pub fn parse(bytes: &[u8], profile: &CsvProfile) -> Result<Vec<Statement>, StatementError> {
    profile.check().map_err(StatementError::file)?;
    let delimiter = profile.delimiter.unwrap_or(',');
    if !delimiter.is_ascii() {
        return Err(StatementError::file(
            "the delimiter must be one ASCII character",
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter as u8)
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| StatementError::new("line 1", None, format!("unreadable header: {e}")))?
        .clone();
    let index_of = |name: &str| -> Result<usize, StatementError> {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            StatementError::new("line 1", Some(name), "no such column in the header")
        })
    };
    let optional = |name: &Option<String>| name.as_deref().map(index_of).transpose();
    let date_at = index_of(&profile.date_column)?;
    let value_date_at = optional(&profile.value_date_column)?;
    let amount_at = optional(&profile.amount_column)?;
    let debit_at = optional(&profile.debit_column)?;
    let credit_at = optional(&profile.credit_column)?;
    let currency_at = optional(&profile.currency_column)?;
    let description_at = optional(&profile.description_column)?;
    let counterparty_at = optional(&profile.counterparty_column)?;
    let external_id_at = optional(&profile.external_id_column)?;
    let reference_at: Vec<usize> = profile
        .reference_columns
        .iter()
        .map(|c| index_of(c))
        .collect::<Result<_, _>>()?;
    let fixed = profile
        .currency
        .as_deref()
        .map(Currency::from_code)
        .transpose()
        .map_err(|e| StatementError::file(e.to_string()))?;
    let comma = profile.decimal_separator == Some(',');

    let mut entries: BTreeMap<Currency, Vec<StatementEntry>> = BTreeMap::new();
    for (index, record) in reader.records().enumerate() {
        let line = format!("line {}", index + 2);
        let record =
            record.map_err(|e| StatementError::new(&line, None, format!("unreadable: {e}")))?;
        let cell = |i: usize| record.get(i).unwrap_or("").trim();
        let named = |i: Option<usize>| i.map(cell).filter(|v| !v.is_empty()).map(str::to_string);
        let bad = |column: &str, message: String| StatementError::new(&line, Some(column), message);
        let currency = match (fixed, currency_at) {
            (Some(currency), _) => currency,
            (None, Some(at)) => Currency::from_code(cell(at)).map_err(|e| {
                bad(
                    profile.currency_column.as_deref().unwrap_or("currency"),
                    e.to_string(),
                )
            })?,
            (None, None) => unreachable!("check() requires a currency or its column"),
        };
        let read = |text: &str, column: &str| -> Result<i64, StatementError> {
            let mut text = text.to_string();
            if let Some(separator) = profile.thousands_separator {
                text.retain(|c| c != separator);
            }
            parse_amount(&text, currency, comma).map_err(|e| bad(column, e))
        };
        let amount_minor = match (amount_at, debit_at, credit_at) {
            (Some(at), _, _) => read(cell(at), profile.amount_column.as_deref().unwrap_or(""))?,
            (None, Some(debit), Some(credit)) => {
                let (debit_name, credit_name) = (
                    profile.debit_column.as_deref().unwrap_or(""),
                    profile.credit_column.as_deref().unwrap_or(""),
                );
                match (cell(debit), cell(credit)) {
                    ("", "") => {
                        return Err(bad(
                            debit_name,
                            format!("neither {debit_name} nor {credit_name} holds an amount"),
                        ))
                    }
                    (d, "") => -read(d, debit_name)?.abs(),
                    ("", c) => read(c, credit_name)?.abs(),
                    _ => {
                        return Err(bad(
                            debit_name,
                            format!("both {debit_name} and {credit_name} hold an amount"),
                        ))
                    }
                }
            }
            _ => unreachable!("check() requires an amount or debit and credit columns"),
        };
        let date = |at: usize, column: &str| {
            NaiveDate::parse_from_str(cell(at), profile.date_format()).map_err(|_| {
                bad(
                    column,
                    format!(
                        "{:?} is not a date of the form {}",
                        cell(at),
                        profile.date_format()
                    ),
                )
            })
        };
        let booking_date = date(date_at, &profile.date_column)?;
        let value_date = match value_date_at {
            Some(at) if !cell(at).is_empty() => Some(date(
                at,
                profile.value_date_column.as_deref().unwrap_or(""),
            )?),
            _ => None,
        };
        entries.entry(currency).or_default().push(StatementEntry {
            source: line.clone(),
            amount_minor,
            currency,
            booking_date,
            value_date,
            booked_at: None,
            references: reference_at
                .iter()
                .map(|at| cell(*at))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            external_id: named(external_id_at),
            counterparty: named(counterparty_at),
            description: named(description_at).unwrap_or_default(),
            fee_minor: None,
            status: None,
            reversal: false,
        });
    }
    let hash = file_sha256(bytes);
    Ok(entries
        .into_iter()
        .map(|(currency, entries)| {
            let start = entries
                .iter()
                .map(|e| e.booking_date)
                .min()
                .expect("one entry");
            let end = entries
                .iter()
                .map(|e| e.booking_date)
                .max()
                .expect("one entry");
            Statement {
                identity: StatementIdentity {
                    kind: StatementKind::Bank,
                    account: profile.account.clone(),
                    period_start: start,
                    period_end: end,
                    sequence: format!("{}.{currency}", &hash[..16]),
                },
                format: StatementFormat::Csv,
                currency,
                opening_balance: None,
                closing_balance: None,
                entries,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str) -> CsvProfile {
        toml::from_str(text).unwrap()
    }

    const GERMAN: &str = "account = \"DE89370400440532013000\"\ncurrency = \"EUR\"\ndelimiter = \";\"\n\
        date_column = \"Buchungstag\"\ndate_format = \"%d.%m.%Y\"\nvalue_date_column = \"Valuta\"\n\
        debit_column = \"Soll\"\ncredit_column = \"Haben\"\ndecimal_separator = \",\"\nthousands_separator = \".\"\n\
        reference_columns = [\"Verwendungszweck\"]\ncounterparty_column = \"Empfaenger\"\n";

    const GERMAN_FILE: &str = "Buchungstag;Valuta;Empfaenger;Verwendungszweck;Soll;Haben\n\
        02.10.2026;03.10.2026;Merchant One;2026-10-01.EUR.r1.m-1;1.234,50;\n\
        05.10.2026;05.10.2026;Kunde;;;20,00\n";

    #[test]
    fn debit_and_credit_columns_with_comma_decimals_read_signed() {
        let p = profile(GERMAN);
        p.check().unwrap();
        let statements = parse(GERMAN_FILE.as_bytes(), &p).unwrap();
        let s = &statements[0];
        assert_eq!(s.identity.account, "DE89370400440532013000");
        let amounts: Vec<i64> = s.entries.iter().map(|e| e.amount_minor).collect();
        assert_eq!(amounts, vec![-123_450, 2_000]);
        assert_eq!(
            s.entries[0].references,
            vec!["2026-10-01.EUR.r1.m-1".to_string()]
        );
        assert_eq!(s.entries[0].value_date.unwrap().to_string(), "2026-10-03");
        assert_eq!(s.entries[0].counterparty.as_deref(), Some("Merchant One"));
        assert!(s.entries[1].references.is_empty());
        assert_eq!(
            (
                s.identity.period_start.to_string(),
                s.identity.period_end.to_string()
            ),
            ("2026-10-02".into(), "2026-10-05".into())
        );
    }

    #[test]
    fn a_signed_amount_column_with_a_currency_column_reads_per_currency() {
        let p = profile("account = \"ACC\"\ncurrency_column = \"ccy\"\ndate_column = \"date\"\namount_column = \"amount\"\nexternal_id_column = \"id\"\n");
        let file = "date,amount,ccy,id\n2026-10-01,-10.00,USD,A\n2026-10-02,5,JPY,B\n";
        let statements = parse(file.as_bytes(), &p).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].currency.code(), "JPY");
        assert_eq!(statements[1].entries[0].amount_minor, -1_000);
        assert_eq!(statements[1].entries[0].external_id.as_deref(), Some("A"));
    }

    #[test]
    fn bad_profiles_and_lines_are_refused_by_name() {
        let p = profile(GERMAN);
        let missing = GERMAN_FILE.replace("Valuta", "Wert");
        let error = parse(missing.as_bytes(), &p).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1, field Valuta: no such column in the header"
        );
        let error = parse(
            GERMAN_FILE
                .replace("05.10.2026;05", "2026-10-05;05")
                .as_bytes(),
            &p,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("line 3, field Buchungstag: \"2026-10-05\" is not a date"),
            "{error}"
        );
        let error = parse(GERMAN_FILE.replace("1.234,50", "1.234,5x").as_bytes(), &p).unwrap_err();
        assert!(
            error.to_string().starts_with("line 2, field Soll:"),
            "{error}"
        );
        let error =
            parse(GERMAN_FILE.replace(";;20,00", ";1,00;20,00").as_bytes(), &p).unwrap_err();
        assert!(error.to_string().contains("both Soll and Haben"), "{error}");

        let no_amount = profile("account = \"A\"\ncurrency = \"USD\"\ndate_column = \"d\"\n");
        assert!(no_amount.check().unwrap_err().contains("amount_column"));
        let both = profile("account = \"A\"\ncurrency = \"USD\"\ncurrency_column = \"c\"\ndate_column = \"d\"\namount_column = \"a\"\n");
        assert!(both
            .check()
            .unwrap_err()
            .contains("exactly one of currency"));
        let bad_format = profile("account = \"A\"\ncurrency = \"USD\"\ndate_column = \"d\"\namount_column = \"a\"\ndate_format = \"%Y\"\n");
        assert!(bad_format.check().unwrap_err().contains("date_format"));
        assert!(toml::from_str::<CsvProfile>("account = \"A\"\ncolour = 1\n").is_err());
    }
}
