//! ISO 20022 camt.053 (BankToCustomerStatement), versions .001.02 and .001.08 and their relatives:
//! statements, balances (OPBD/PRCD, CLBD), booked entries and their transaction details.
//!
//! Pending entries (`Sts` PDNG or INFO) are left out: the booked closing balance does not hold them.
//! An entry whose several `TxDtls` each carry an amount summing to the entry's becomes one entry
//! per detail (a batched booking); otherwise it stays one entry with every detail's references.

use chrono::{DateTime, NaiveDate};
use settle_domain::money::Currency;
use settle_domain::reconcile::{
    StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use crate::amount::parse_amount;
use crate::xml::{self, Element};
use crate::StatementError;

/// What an end-to-end id says when there is none.
const NOT_PROVIDED: &str = "NOTPROVIDED";

pub fn parse(bytes: &[u8]) -> Result<Vec<Statement>, StatementError> {
    let document = xml::parse(bytes)?;
    if document.name != "Document" {
        return Err(StatementError::file(format!(
            "the root element is {}, not a camt.053 Document",
            document.name
        )));
    }
    let Some(body) = document.child("BkToCstmrStmt") else {
        return Err(StatementError::file(
            "no BkToCstmrStmt: this is not a camt.053 statement",
        ));
    };
    body.children("Stmt")
        .enumerate()
        .map(|(index, stmt)| statement(stmt, &format!("Stmt[{}]", index + 1)))
        .collect()
}

fn at(path: &str, element: &Element) -> String {
    format!("{path} (line {})", element.line)
}

fn required<'a>(element: &'a Element, child: &str, path: &str) -> Result<&'a str, StatementError> {
    element
        .text_at(child)
        .ok_or_else(|| StatementError::new(at(path, element), Some(child), "missing"))
}

/// A `Dt` or `DtTm` (date part) below `element`.
fn date_of(element: &Element, path: &str) -> Result<NaiveDate, StatementError> {
    if let Some(text) = element.text_at("Dt") {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            StatementError::new(
                at(path, element),
                Some("Dt"),
                format!("{text:?} is not a date YYYY-MM-DD"),
            )
        });
    }
    if let Some(text) = element.text_at("DtTm") {
        return datetime_date(text).ok_or_else(|| {
            StatementError::new(
                at(path, element),
                Some("DtTm"),
                format!("{text:?} is not a date-time"),
            )
        });
    }
    Err(StatementError::new(
        at(path, element),
        Some("Dt"),
        "missing",
    ))
}

/// The date of an ISO date-time as the bank wrote it (its own offset, or none).
fn datetime_date(text: &str) -> Option<NaiveDate> {
    DateTime::parse_from_rfc3339(text)
        .map(|d| d.date_naive())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text.get(..19)?, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|d| d.date())
        })
}

fn currency_of(element: &Element, path: &str) -> Result<Currency, StatementError> {
    let code = element.attribute("Ccy").ok_or_else(|| {
        StatementError::new(at(path, element), Some("Ccy"), "the amount has no currency")
    })?;
    Currency::from_code(code)
        .map_err(|e| StatementError::new(at(path, element), Some("Ccy"), e.to_string()))
}

/// A signed amount: `Amt` below `parent` with the sign of `CdtDbtInd`.
fn signed_amount(
    parent: &Element,
    amount: &Element,
    path: &str,
) -> Result<(i64, Currency), StatementError> {
    let currency = currency_of(amount, &format!("{path}/Amt"))?;
    let minor = parse_amount(&amount.text, currency, false)
        .map_err(|e| StatementError::new(at(&format!("{path}/Amt"), amount), Some("Amt"), e))?;
    if minor < 0 {
        return Err(StatementError::new(
            at(&format!("{path}/Amt"), amount),
            Some("Amt"),
            "amounts are unsigned; CdtDbtInd gives the direction",
        ));
    }
    let sign = match parent.text_at("CdtDbtInd") {
        Some("CRDT") => 1,
        Some("DBIT") => -1,
        Some(other) => {
            return Err(StatementError::new(
                at(path, parent),
                Some("CdtDbtInd"),
                format!("{other:?} is neither CRDT nor DBIT"),
            ))
        }
        None => {
            return Err(StatementError::new(
                at(path, parent),
                Some("CdtDbtInd"),
                "missing",
            ))
        }
    };
    Ok((sign * minor, currency))
}

fn statement(stmt: &Element, path: &str) -> Result<Statement, StatementError> {
    let id = required(stmt, "Id", path)?;
    let sequence = stmt
        .text_at("ElctrncSeqNb")
        .or_else(|| stmt.text_at("LglSeqNb"))
        .unwrap_or(id);
    let account = stmt
        .text_at("Acct/Id/IBAN")
        .or_else(|| stmt.text_at("Acct/Id/Othr/Id"))
        .ok_or_else(|| StatementError::new(at(path, stmt), Some("Acct/Id"), "missing"))?;

    let mut opening = None;
    let mut closing = None;
    let mut currency =
        match stmt.text_at("Acct/Ccy") {
            Some(code) => Some(Currency::from_code(code).map_err(|e| {
                StatementError::new(at(path, stmt), Some("Acct/Ccy"), e.to_string())
            })?),
            None => None,
        };
    for (index, balance) in stmt.children("Bal").enumerate() {
        let bal_path = format!("{path}/Bal[{}]", index + 1);
        let code = balance
            .text_at("Tp/CdOrPrtry/Cd")
            .or_else(|| balance.text_at("Tp/CdOrPrtry/Prtry"))
            .unwrap_or("");
        let amount = balance
            .child("Amt")
            .ok_or_else(|| StatementError::new(at(&bal_path, balance), Some("Amt"), "missing"))?;
        let (minor, ccy) = signed_amount(balance, amount, &bal_path)?;
        let date = date_of(
            balance.child("Dt").ok_or_else(|| {
                StatementError::new(at(&bal_path, balance), Some("Dt"), "missing")
            })?,
            &format!("{bal_path}/Dt"),
        )?;
        currency.get_or_insert(ccy);
        let stated = StatedBalance {
            amount_minor: minor,
            date,
        };
        match code {
            "OPBD" | "PRCD" if opening.is_none() => opening = Some(stated),
            "CLBD" => closing = Some(stated),
            _ => {}
        }
    }

    let mut entries = Vec::new();
    for (index, ntry) in stmt.children("Ntry").enumerate() {
        let ntry_path = format!("{path}/Ntry[{}]", index + 1);
        let status = ntry
            .text_at("Sts/Cd")
            .or_else(|| ntry.text_at("Sts"))
            .unwrap_or("BOOK");
        if matches!(status, "PDNG" | "INFO") {
            continue;
        }
        entries.extend(entry(ntry, &ntry_path)?);
    }
    let currency = currency
        .or_else(|| entries.first().map(|e: &StatementEntry| e.currency))
        .ok_or_else(|| {
            StatementError::new(
                at(path, stmt),
                Some("Acct/Ccy"),
                "no currency: no account currency, balance or entry",
            )
        })?;

    let (period_start, period_end) = match stmt.child("FrToDt") {
        Some(range) => {
            let from = range
                .text_at("FrDtTm")
                .or_else(|| range.text_at("FrDt"))
                .and_then(|t| {
                    datetime_date(t).or_else(|| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
                });
            let to = range
                .text_at("ToDtTm")
                .or_else(|| range.text_at("ToDt"))
                .and_then(|t| {
                    datetime_date(t).or_else(|| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
                });
            match (from, to) {
                (Some(from), Some(to)) if from <= to => (from, to),
                _ => {
                    return Err(StatementError::new(
                        at(&format!("{path}/FrToDt"), range),
                        Some("FrToDt"),
                        "not a range of dates from ≤ to",
                    ))
                }
            }
        }
        None => {
            let dates: Vec<NaiveDate> = opening
                .iter()
                .chain(closing.iter())
                .map(|b| b.date)
                .chain(entries.iter().map(|e| e.booking_date))
                .collect();
            match (dates.iter().min(), dates.iter().max()) {
                (Some(from), Some(to)) => (*from, *to),
                _ => {
                    return Err(StatementError::new(
                        at(path, stmt),
                        Some("FrToDt"),
                        "no period: no FrToDt, balance or entry",
                    ))
                }
            }
        }
    };
    Ok(Statement {
        identity: StatementIdentity {
            kind: StatementKind::Bank,
            account: account.to_string(),
            period_start,
            period_end,
            sequence: sequence.to_string(),
        },
        format: StatementFormat::Camt053,
        currency,
        opening_balance: opening,
        closing_balance: closing,
        entries,
    })
}

/// The references of one transaction detail: end-to-end id, instruction id, remittance.
fn detail_references(detail: &Element, references: &mut Vec<String>) {
    for path in [
        "Refs/EndToEndId",
        "Refs/InstrId",
        "Refs/MsgId",
        "Refs/PmtInfId",
    ] {
        if let Some(value) = detail.text_at(path).filter(|v| *v != NOT_PROVIDED) {
            push_unique(references, value);
        }
    }
    if let Some(remittance) = detail.child("RmtInf") {
        for ustrd in remittance.children("Ustrd") {
            for token in ustrd.text.split_whitespace() {
                push_unique(references, token);
            }
        }
        for strd in remittance.children("Strd") {
            if let Some(reference) = strd.text_at("CdtrRefInf/Ref") {
                push_unique(references, reference);
            }
        }
    }
}

fn push_unique(references: &mut Vec<String>, value: &str) {
    if !references.iter().any(|r| r == value) {
        references.push(value.to_string());
    }
}

fn counterparty(detail: &Element, credit: bool) -> Option<String> {
    // A credit comes from the debtor; a debit goes to the creditor (.02 `Nm`, .08 `Pty/Nm`).
    let party = if credit {
        "RltdPties/Dbtr"
    } else {
        "RltdPties/Cdtr"
    };
    detail
        .text_at(&format!("{party}/Nm"))
        .or_else(|| detail.text_at(&format!("{party}/Pty/Nm")))
        .map(str::to_string)
}

fn remittance_text(detail: &Element) -> String {
    detail
        .child("RmtInf")
        .map(|r| {
            r.children("Ustrd")
                .map(|u| u.text.trim().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn entry(ntry: &Element, path: &str) -> Result<Vec<StatementEntry>, StatementError> {
    let amount = ntry
        .child("Amt")
        .ok_or_else(|| StatementError::new(at(path, ntry), Some("Amt"), "missing"))?;
    let (amount_minor, currency) = signed_amount(ntry, amount, path)?;
    let booking_date = date_of(
        ntry.child("BookgDt")
            .ok_or_else(|| StatementError::new(at(path, ntry), Some("BookgDt"), "missing"))?,
        &format!("{path}/BookgDt"),
    )?;
    let value_date = match ntry.child("ValDt") {
        Some(value) => Some(date_of(value, &format!("{path}/ValDt"))?),
        None => None,
    };
    let reversal = ntry.text_at("RvslInd") == Some("true");
    let external_id = ntry
        .text_at("AcctSvcrRef")
        .or_else(|| ntry.text_at("NtryRef"))
        .map(str::to_string);
    let info = ntry.text_at("AddtlNtryInf").unwrap_or("").to_string();
    let details: Vec<&Element> = ntry
        .children("NtryDtls")
        .flat_map(|d| d.children("TxDtls"))
        .collect();
    let base = StatementEntry {
        source: path.to_string(),
        amount_minor,
        currency,
        booking_date,
        value_date,
        booked_at: None,
        references: vec![],
        external_id,
        counterparty: None,
        description: info,
        fee_minor: None,
        status: None,
        reversal,
    };

    // A batched booking: every detail has its own amount, and they sum to the entry's.
    if details.len() > 1 {
        let mut parts = Vec::with_capacity(details.len());
        for (index, detail) in details.iter().enumerate() {
            let detail_path = format!("{path}/TxDtls[{}]", index + 1);
            let own = detail
                .child("Amt")
                .or_else(|| detail.at("AmtDtls/TxAmt/Amt"));
            let Some(own) = own else {
                parts.clear();
                break;
            };
            let sign_holder = if detail.text_at("CdtDbtInd").is_some() {
                *detail
            } else {
                ntry
            };
            let (minor, ccy) = signed_amount(sign_holder, own, &detail_path)?;
            if ccy != currency {
                parts.clear();
                break;
            }
            parts.push((detail_path, minor, *detail));
        }
        let sum: i128 = parts.iter().map(|(_, m, _)| *m as i128).sum();
        if !parts.is_empty() && sum == amount_minor as i128 {
            return Ok(parts
                .into_iter()
                .map(|(detail_path, minor, detail)| {
                    let mut references = Vec::new();
                    detail_references(detail, &mut references);
                    let external_id = detail
                        .text_at("Refs/AcctSvcrRef")
                        .map(|r| r.to_string())
                        .or_else(|| {
                            base.external_id
                                .clone()
                                .map(|e| format!("{e}/{detail_path}"))
                        });
                    let description = remittance_text(detail);
                    StatementEntry {
                        source: detail_path,
                        amount_minor: minor,
                        references,
                        external_id,
                        counterparty: counterparty(detail, minor > 0),
                        description: if description.is_empty() {
                            base.description.clone()
                        } else {
                            description
                        },
                        ..base.clone()
                    }
                })
                .collect());
        }
    }
    let mut references = Vec::new();
    let mut description = base.description.clone();
    let mut party = None;
    for detail in &details {
        detail_references(detail, &mut references);
        let text = remittance_text(detail);
        if description.is_empty() {
            description = text;
        }
        party = party.or_else(|| counterparty(detail, amount_minor > 0));
    }
    Ok(vec![StatementEntry {
        references,
        counterparty: party,
        description,
        ..base
    }])
}

#[cfg(test)]
#[path = "camt053_tests.rs"]
mod tests;
