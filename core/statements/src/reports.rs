//! Settle's report CSVs: the payout provider's payout report and the payment provider's transaction
//! report, read into one statement per currency (identity: account, dates, the file's hash).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use settle_domain::money::Currency;
use settle_domain::reconcile::{
    Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use crate::amount::parse_amount;
use crate::{file_sha256, ParseOptions, StatementError};

pub const PAYOUT_REPORT_COLUMNS: &[&str] = &[
    "reference",
    "amount",
    "currency",
    "status",
    "paid_at",
    "provider_payout_id",
];
pub const PROVIDER_REPORT_COLUMNS: &[&str] = &[
    "reference",
    "amount",
    "currency",
    "fee",
    "status",
    "booked_at",
];

/// Most lines one report may hold.
pub const MAX_REPORT_LINES: usize = 20_000_000;

/// The payout report: `paid` lines become entries (money paid out, positive); `failed` and
/// `pending` lines are not money on the account and are left out.
pub fn parse_payout_report(
    bytes: &[u8],
    options: &ParseOptions,
) -> Result<Vec<Statement>, StatementError> {
    parse(
        bytes,
        options,
        StatementKind::Payouts,
        PAYOUT_REPORT_COLUMNS,
    )
}

/// The transaction report: `captured` lines (positive) and `refunded` lines (negative); `failed`
/// lines moved no money and are left out. `fee` is what the provider charged on the line.
pub fn parse_provider_report(
    bytes: &[u8],
    options: &ParseOptions,
) -> Result<Vec<Statement>, StatementError> {
    parse(
        bytes,
        options,
        StatementKind::Provider,
        PROVIDER_REPORT_COLUMNS,
    )
}

fn parse(
    bytes: &[u8],
    options: &ParseOptions,
    kind: StatementKind,
    columns: &[&str],
) -> Result<Vec<Statement>, StatementError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| StatementError::new("line 1", None, format!("unreadable header: {e}")))?
        .clone();
    let found: Vec<&str> = header.iter().map(str::trim).collect();
    if found != columns {
        return Err(StatementError::new(
            "line 1",
            None,
            format!(
                "the header must be exactly `{}`, found `{}`",
                columns.join(","),
                found.join(",")
            ),
        ));
    }
    let mut entries: BTreeMap<Currency, Vec<StatementEntry>> = BTreeMap::new();
    for (index, record) in reader.records().enumerate() {
        let line = format!("line {}", index + 2);
        if index >= MAX_REPORT_LINES {
            return Err(StatementError::new(
                line,
                None,
                format!("more than {MAX_REPORT_LINES} lines"),
            ));
        }
        let record =
            record.map_err(|e| StatementError::new(&line, None, format!("unreadable: {e}")))?;
        let cell = |i: usize| record.get(i).unwrap_or("").trim();
        let bad = |field: &str, message: String| StatementError::new(&line, Some(field), message);
        let reference = cell(0);
        if reference.is_empty() {
            return Err(bad("reference", "empty".into()));
        }
        let currency = Currency::from_code(cell(2)).map_err(|e| bad("currency", e.to_string()))?;
        let amount_minor = parse_amount(cell(1), currency, false).map_err(|e| bad("amount", e))?;
        let status = if kind == StatementKind::Payouts {
            cell(3)
        } else {
            cell(4)
        };
        let instant_column = if kind == StatementKind::Payouts {
            "paid_at"
        } else {
            "booked_at"
        };
        let instant_text = cell(if kind == StatementKind::Payouts { 4 } else { 5 });
        let booked_at: DateTime<Utc> = DateTime::parse_from_rfc3339(instant_text)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                bad(
                    instant_column,
                    format!("{instant_text:?} is not an RFC 3339 instant with an offset"),
                )
            })?;
        let (keep, fee_minor, external_id) = match kind {
            StatementKind::Payouts => {
                let keep = match status {
                    "paid" => true,
                    "failed" | "pending" => false,
                    other => {
                        return Err(bad(
                            "status",
                            format!("{other:?} is not paid, failed or pending"),
                        ))
                    }
                };
                if amount_minor <= 0 {
                    return Err(bad("amount", "a payout is a positive amount".into()));
                }
                let id = Some(cell(5).to_string()).filter(|id| !id.is_empty());
                (keep, None, id)
            }
            _ => {
                let keep = match status {
                    "captured" if amount_minor > 0 => true,
                    "refunded" if amount_minor < 0 => true,
                    "failed" => false,
                    "captured" | "refunded" => {
                        return Err(bad(
                            "amount",
                            "a captured line is positive and a refunded line negative".into(),
                        ))
                    }
                    other => {
                        return Err(bad(
                            "status",
                            format!("{other:?} is not captured, refunded or failed"),
                        ))
                    }
                };
                let fee = parse_amount(cell(3), currency, false).map_err(|e| bad("fee", e))?;
                if fee < 0 {
                    return Err(bad("fee", "a fee is never negative".into()));
                }
                (keep, Some(fee), None)
            }
        };
        if !keep {
            continue;
        }
        let booking_date = booked_at
            .with_timezone(&options.business_timezone)
            .date_naive();
        entries.entry(currency).or_default().push(StatementEntry {
            source: line,
            amount_minor,
            currency,
            booking_date,
            value_date: None,
            booked_at: Some(booked_at),
            references: vec![reference.to_string()],
            external_id,
            counterparty: None,
            description: String::new(),
            fee_minor,
            status: Some(status.to_string()),
            reversal: false,
        });
    }
    let hash = file_sha256(bytes);
    let account = options.account.clone().unwrap_or_else(|| kind.to_string());
    let statements = entries
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
                    kind,
                    account: account.clone(),
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
        .collect();
    crate::check_balances(statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{payout_report, provider_report};

    fn options() -> ParseOptions {
        ParseOptions {
            business_timezone: "Asia/Aden".parse().unwrap(),
            account: None,
        }
    }

    const PROVIDER: &str = "reference,amount,currency,fee,status,booked_at\n\
        ord-1,120.50,USD,3.61,captured,2026-10-01T21:30:00Z\n\
        ord-2,-20.00,USD,0.00,refunded,2026-10-02T08:00:00+03:00\n\
        ord-3,5000,YER,0,captured,2026-10-02T10:00:00Z\n\
        ord-4,9.99,USD,0.30,failed,2026-10-02T10:00:00Z\n";

    #[test]
    fn a_provider_report_reads_per_currency_with_business_dates_and_fees() {
        let statements = parse_provider_report(PROVIDER.as_bytes(), &options()).unwrap();
        let codes: Vec<&str> = statements.iter().map(|s| s.currency.code()).collect();
        assert_eq!(codes, vec!["USD", "YER"]);
        let usd = &statements[0];
        assert_eq!(usd.identity.kind, StatementKind::Provider);
        assert_eq!(usd.identity.account, "provider");
        assert_eq!(usd.entries.len(), 2, "the failed line moved no money");
        // 21:30 UTC is 00:30 the next day in Aden.
        assert_eq!(usd.entries[0].booking_date.to_string(), "2026-10-02");
        assert_eq!(usd.entries[0].fee_minor, Some(361));
        assert_eq!(usd.entries[1].amount_minor, -2_000);
        assert_eq!(usd.entries[1].source, "line 3");
        assert!(usd.identity.sequence.ends_with(".USD"));
        // Written back, it reads the same.
        let again = parse_provider_report(
            provider_report(std::slice::from_ref(usd)).as_bytes(),
            &options(),
        )
        .unwrap();
        assert_eq!(again[0].entries, usd.entries);
    }

    #[test]
    fn a_payout_report_keeps_paid_lines_and_reads_back() {
        let text = "reference,amount,currency,status,paid_at,provider_payout_id\n\
            2026-10-01.USD.r1.m-1,100.00,USD,paid,2026-10-02T09:00:00Z,po_1\n\
            2026-10-01.USD.r1.m-2,50.00,USD,failed,2026-10-02T09:00:00Z,po_2\n";
        let statements = parse_payout_report(text.as_bytes(), &options()).unwrap();
        assert_eq!(statements[0].entries.len(), 1);
        assert_eq!(
            statements[0].entries[0].external_id.as_deref(),
            Some("po_1")
        );
        let again =
            parse_payout_report(payout_report(&statements[..1]).as_bytes(), &options()).unwrap();
        assert_eq!(again[0].entries, statements[0].entries);
    }

    #[test]
    fn bad_lines_are_refused_naming_line_and_field() {
        let cases = [
            (PROVIDER.replace("120.50", "12O.50"), "line 2, field amount"),
            (PROVIDER.replace("3.61", "-3.61"), "line 2, field fee"),
            (PROVIDER.replace("-20.00", "20.00"), "line 3, field amount"),
            (
                PROVIDER.replace("2026-10-02T10:00:00Z\nord-4", "2026-10-02 10:00\nord-4"),
                "line 4, field booked_at",
            ),
            (
                PROVIDER.replace(",captured,2026-10-01", ",settled,2026-10-01"),
                "line 2, field status",
            ),
            (PROVIDER.replace("fee,status", "status,fee"), "line 1"),
            (PROVIDER.replace("YER", "XXX"), "line 4, field currency"),
        ];
        for (text, expected) in cases {
            let error = parse_provider_report(text.as_bytes(), &options()).unwrap_err();
            assert!(
                error.to_string().starts_with(expected),
                "{error} (expected {expected})"
            );
        }
        let empty = "reference,amount,currency,fee,status,booked_at\n";
        assert!(parse_provider_report(empty.as_bytes(), &options()).is_err());
    }
}
