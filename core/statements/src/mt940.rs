//! SWIFT MT940 customer statements: `:20:`, `:25:`, `:28C:`, `:60F/M:`, `:61:` with its `:86:`,
//! `:62F/M:`; several messages per file, the quirks of real banks (NONREF, no entry date, `?2x` fields).
//!
//! `:61:` is `YYMMDD[MMDD](C|D|RC|RD)[funds code]amount<type><customer ref>[//bank ref]`, with an
//! optional supplementary line; `RC` (a reversed credit) is a debit and `RD` a credit, both marked as
//! reversals. An entry date's year is the value date's, moved across a year end when the months are
//! more than six apart.

use chrono::{Datelike, NaiveDate};
use settle_domain::money::Currency;
use settle_domain::reconcile::{
    StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use crate::amount::parse_amount;
use crate::StatementError;

/// What a customer reference says when there is none.
const NO_REFERENCE: &str = "NONREF";

/// One tag of a message, with its (joined) lines and the line it starts on.
struct Tag {
    name: String,
    lines: Vec<String>,
    line: usize,
}

fn err(line: usize, field: &str, message: impl Into<String>) -> StatementError {
    StatementError::new(format!("line {line}"), Some(field), message)
}

/// Splits the file into messages of tags. A message ends at a line `-` or `-}`, or where the
/// next `:20:` begins; SWIFT block headers (`{1:…}{2:…}{4:`) are skipped.
fn messages(text: &str) -> Result<Vec<Vec<Tag>>, StatementError> {
    let mut messages = Vec::new();
    let mut current: Vec<Tag> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let mut line = raw.trim_end_matches('\r');
        if let Some(position) = line.find("{4:") {
            line = &line[position + 3..];
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed == "-" || trimmed == "-}" || trimmed.starts_with("{5:") {
            if !current.is_empty() {
                messages.push(std::mem::take(&mut current));
            }
            continue;
        }
        if trimmed.starts_with('{') {
            continue;
        }
        if let Some(rest) = line.strip_prefix(':') {
            if let Some((name, value)) = rest.split_once(':') {
                if (2..=3).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    if name == "20" && !current.is_empty() {
                        messages.push(std::mem::take(&mut current));
                    }
                    current.push(Tag {
                        name: name.to_string(),
                        lines: vec![value.to_string()],
                        line: number,
                    });
                    continue;
                }
            }
        }
        match current.last_mut() {
            Some(tag) => tag.lines.push(line.to_string()),
            None => {
                return Err(err(
                    number,
                    "tag",
                    format!("{trimmed:?} is outside any :tag:"),
                ))
            }
        }
    }
    if !current.is_empty() {
        messages.push(current);
    }
    Ok(messages)
}

fn yymmdd(text: &str, line: usize, field: &str) -> Result<NaiveDate, StatementError> {
    let bad = || err(line, field, format!("{text:?} is not a date YYMMDD"));
    if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let year: i32 = text[..2].parse().map_err(|_| bad())?;
    let month: u32 = text[2..4].parse().map_err(|_| bad())?;
    let day: u32 = text[4..6].parse().map_err(|_| bad())?;
    // SWIFT: years 00–79 are 2000–2079, 80–99 are 1980–1999.
    let year = if year < 80 { 2000 + year } else { 1900 + year };
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(bad)
}

/// `C|D YYMMDD CCY amount` of a balance tag.
fn balance(tag: &Tag) -> Result<(StatedBalance, Currency), StatementError> {
    let value = tag.lines[0].trim();
    let field = tag.name.as_str();
    if value.len() < 11 {
        return Err(err(
            tag.line,
            field,
            format!("{value:?} is not a balance D/C YYMMDD CCY amount"),
        ));
    }
    let sign = match value.get(..1).unwrap_or("") {
        "C" => 1,
        "D" => -1,
        other => {
            return Err(err(
                tag.line,
                field,
                format!("{other:?} is neither C nor D"),
            ))
        }
    };
    let date = yymmdd(value.get(1..7).unwrap_or(""), tag.line, field)?;
    let code = value.get(7..10).unwrap_or("");
    let currency = Currency::from_code(code).map_err(|e| err(tag.line, field, e.to_string()))?;
    let minor = parse_amount(value.get(10..).unwrap_or(""), currency, true)
        .map_err(|e| err(tag.line, field, e))?;
    Ok((
        StatedBalance {
            amount_minor: sign * minor,
            date,
        },
        currency,
    ))
}

/// The year of an entry date MMDD given its value date.
fn entry_date(value_date: NaiveDate, mmdd: &str, line: usize) -> Result<NaiveDate, StatementError> {
    let bad = || err(line, "61", format!("{mmdd:?} is not an entry date MMDD"));
    let month: u32 = mmdd[..2].parse().map_err(|_| bad())?;
    let day: u32 = mmdd[2..].parse().map_err(|_| bad())?;
    let mut year = value_date.year();
    let apart = month as i32 - value_date.month() as i32;
    if apart > 6 {
        year -= 1;
    } else if apart < -6 {
        year += 1;
    }
    NaiveDate::from_ymd_opt(year, month, day).ok_or_else(bad)
}

/// The words of `:86:`: German structured fields (`?20`…`?29` purpose, `?32`/`?33` name) joined,
/// else the lines joined with spaces; and the tokens worth matching on.
fn information(lines: &[String]) -> (String, Vec<String>, Option<String>) {
    let joined: String = lines
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("");
    if joined.contains("?2") || joined.contains("?3") {
        let mut purpose = Vec::new();
        let mut name = Vec::new();
        for part in joined.split('?').skip(1) {
            let (Some(code), Some(text)) = (part.get(..2), part.get(2..)) else {
                continue;
            };
            match code {
                "20" | "21" | "22" | "23" | "24" | "25" | "26" | "27" | "28" | "29" => {
                    purpose.push(text.to_string())
                }
                "32" | "33" => name.push(text.to_string()),
                _ => {}
            }
        }
        let description = purpose.join("");
        let mut references = Vec::new();
        for token in purpose.iter().flat_map(|p| p.split_whitespace()) {
            // `EREF+ref`, `KREF+ref`, `MREF+ref`: the value after the keyword.
            let value = token.split_once('+').map_or(token, |(_, v)| v);
            if !value.is_empty() && !references.iter().any(|r: &String| r == value) {
                references.push(value.to_string());
            }
        }
        let party = Some(name.join("")).filter(|n| !n.is_empty());
        return (description, references, party);
    }
    let description = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    let mut references = Vec::new();
    for token in description.split_whitespace() {
        if !references.iter().any(|r: &String| r == token) {
            references.push(token.to_string());
        }
    }
    (description, references, None)
}

fn statement_line(tag: &Tag, currency: Currency) -> Result<StatementEntry, StatementError> {
    let line = tag.line;
    let value = tag.lines[0].trim();
    let value_date = yymmdd(value.get(..6).unwrap_or(""), line, "61")?;
    let mut rest = &value[6..];
    let mut booking_date = value_date;
    if rest
        .get(..4)
        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    {
        booking_date = entry_date(value_date, &rest[..4], line)?;
        rest = &rest[4..];
    }
    let (sign, reversal, after) = if let Some(r) = rest.strip_prefix("RC") {
        (-1, true, r)
    } else if let Some(r) = rest.strip_prefix("RD") {
        (1, true, r)
    } else if let Some(r) = rest.strip_prefix('C') {
        (1, false, r)
    } else if let Some(r) = rest.strip_prefix('D') {
        (-1, false, r)
    } else {
        return Err(err(
            line,
            "61",
            format!("{rest:?} has no C, D, RC or RD mark"),
        ));
    };
    // An optional funds code: the third letter of the currency, a letter before the amount.
    let after = match after.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => &after[1..],
        _ => after,
    };
    let amount_end = after
        .find(|c: char| !(c.is_ascii_digit() || c == ','))
        .unwrap_or(after.len());
    let amount_text = &after[..amount_end];
    if amount_text.is_empty() {
        return Err(err(line, "61", format!("{after:?} has no amount")));
    }
    let minor = parse_amount(amount_text, currency, true).map_err(|e| err(line, "61", e))?;
    let tail = &after[amount_end..];
    let type_ok = tail.get(..4).is_some_and(|t| {
        t.starts_with(['N', 'F', 'S']) && t[1..].bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !type_ok {
        return Err(err(
            line,
            "61",
            format!("{amount_text}{} is not an amount followed by its transaction type (N, F or S and three characters)", tail.chars().take(6).collect::<String>()),
        ));
    }
    let Some(references_text) = tail.get(4..) else {
        return Err(err(
            line,
            "61",
            "the transaction type (N, F or S and three characters) is missing",
        ));
    };
    let (customer, bank) = match references_text.split_once("//") {
        Some((customer, bank)) => (customer.trim(), Some(bank.trim())),
        None => (references_text.trim(), None),
    };
    let mut references = Vec::new();
    if !customer.is_empty() && customer != NO_REFERENCE {
        references.push(customer.to_string());
    }
    let external_id = bank.filter(|b| !b.is_empty()).map(str::to_string);
    let supplementary = tag
        .lines
        .get(1)
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    Ok(StatementEntry {
        source: format!("line {line}"),
        amount_minor: sign * minor,
        currency,
        booking_date,
        value_date: Some(value_date),
        booked_at: None,
        references,
        external_id,
        counterparty: None,
        description: supplementary,
        fee_minor: None,
        status: None,
        reversal,
    })
}

fn statement(tags: &[Tag]) -> Result<Statement, StatementError> {
    let first_line = tags.first().map_or(1, |t| t.line);
    let find = |name: &str| tags.iter().find(|t| t.name == name);
    let account = find("25")
        .map(|t| t.lines[0].trim().to_string())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| err(first_line, "25", "the account (:25:) is missing"))?;
    let reference = find("20")
        .map(|t| t.lines[0].trim().to_string())
        .unwrap_or_default();
    let sequence = find("28C")
        .or_else(|| find("28"))
        .map(|t| t.lines[0].trim().to_string())
        .unwrap_or(reference);
    let opening_tag = find("60F").or_else(|| find("60M")).ok_or_else(|| {
        err(
            first_line,
            "60F",
            "the opening balance (:60F: or :60M:) is missing",
        )
    })?;
    let closing_tag = find("62F").or_else(|| find("62M")).ok_or_else(|| {
        err(
            first_line,
            "62F",
            "the closing balance (:62F: or :62M:) is missing",
        )
    })?;
    let (opening, currency) = balance(opening_tag)?;
    let (closing, closing_currency) = balance(closing_tag)?;
    if closing_currency != currency {
        return Err(err(
            closing_tag.line,
            &closing_tag.name,
            format!("the closing balance is in {closing_currency}, the opening in {currency}"),
        ));
    }
    let mut entries: Vec<StatementEntry> = Vec::new();
    for tag in tags {
        match tag.name.as_str() {
            "61" => entries.push(statement_line(tag, currency)?),
            "86" => {
                if let Some(entry) = entries.last_mut() {
                    let (description, references, party) = information(&tag.lines);
                    for reference in references {
                        if !entry.references.contains(&reference) {
                            entry.references.push(reference);
                        }
                    }
                    if !description.is_empty() {
                        entry.description = if entry.description.is_empty() {
                            description
                        } else {
                            format!("{} {description}", entry.description)
                        };
                    }
                    entry.counterparty = entry.counterparty.take().or(party);
                }
            }
            _ => {}
        }
    }
    let (period_start, period_end) = (
        opening.date.min(closing.date),
        opening.date.max(closing.date),
    );
    Ok(Statement {
        identity: StatementIdentity {
            kind: StatementKind::Bank,
            account,
            period_start,
            period_end,
            sequence,
        },
        format: StatementFormat::Mt940,
        currency,
        opening_balance: Some(opening),
        closing_balance: Some(closing),
        entries,
    })
}

/// Every statement (message) of the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<Statement>, StatementError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        StatementError::new(
            format!("line {line}"),
            None,
            "not UTF-8 (SWIFT text is ASCII)",
        )
    })?;
    messages(text)?.iter().map(|tags| statement(tags)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::mt940 as write_mt940;
    use proptest::prelude::*;

    const TWO_MESSAGES: &str = include_str!("../tests/data/mt940_two_messages.sta");

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn two_messages_read_with_funds_codes_reversals_year_ends_and_german_fields() {
        let statements = crate::check_balances(parse(TWO_MESSAGES.as_bytes()).unwrap()).unwrap();
        assert_eq!(statements.len(), 2);
        let first = &statements[0];
        assert_eq!(first.identity.account, "DE89370400440532013000");
        assert_eq!(first.identity.sequence, "00042/001");
        assert_eq!(first.currency.code(), "EUR");
        let amounts: Vec<i64> = first.entries.iter().map(|e| e.amount_minor).collect();
        assert_eq!(amounts, vec![-15_050, 20_000, -1_225]);
        let payout = &first.entries[0];
        assert_eq!(payout.references[0], "2026-12-29.EUR.r1.m-1");
        assert_eq!(payout.external_id.as_deref(), Some("BNK-1001"));
        assert_eq!(payout.counterparty.as_deref(), Some("Merchant One GmbH"));
        assert!(
            payout.description.starts_with("PAYOUT M-1 EREF+"),
            "{}",
            payout.description
        );
        assert_eq!(payout.source, "line 6");
        // Value date 31 Dec, entry date 2 Jan: the next year.
        let incoming = &first.entries[1];
        assert_eq!(
            (incoming.value_date, incoming.booking_date),
            (Some(day("2026-12-31")), day("2027-01-02"))
        );
        assert!(incoming.references.iter().all(|r| r != "NONREF"));
        assert_eq!(incoming.description, "Incoming transfer from a customer");
        let reversed = &first.entries[2];
        assert!(reversed.reversal);
        assert_eq!(
            reversed.booking_date,
            day("2026-12-31"),
            "no entry date: the value date"
        );
        let second = &statements[1];
        assert_eq!(second.identity.sequence, "00042/002");
        assert_eq!(
            second.entries[0].amount_minor, 75,
            "RD: a reversed debit is a credit"
        );
        assert_eq!(second.closing_balance.unwrap().amount_minor, 103_800);
        assert_eq!(
            (second.identity.period_start, second.identity.period_end),
            (day("2026-12-31"), day("2027-01-02"))
        );
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line_and_tag() {
        let error = parse(TWO_MESSAGES.replace("DR150,50", "DR150.50").as_bytes()).unwrap_err();
        assert_eq!(
            (error.at.as_str(), error.field.as_deref()),
            ("line 6", Some("61")),
            "{error}"
        );
        let error = parse(
            TWO_MESSAGES
                .replace(":60F:C261230EUR", ":60F:X261230EUR")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("60F"), "{error}");
        let error = parse(TWO_MESSAGES.replace("261230EUR", "261330EUR").as_bytes()).unwrap_err();
        assert!(error.message.contains("not a date YYMMDD"), "{error}");
        let error = parse(
            TWO_MESSAGES
                .replacen(":25:DE89370400440532013000\n", "", 1)
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("25"), "{error}");
        let unbalanced = TWO_MESSAGES.replace(":62M:C261231EUR1037,25", ":62M:C261231EUR1037,26");
        let error = crate::check_balances(parse(unbalanced.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(error.at, "statement 1 (00042/001)");
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    proptest! {
        #[test]
        fn written_statements_read_back(
            rows in prop::collection::vec((-5_000_000i64..5_000_000, 0u32..28, any::<bool>()), 1..15),
            code in prop::sample::select(vec!["EUR", "JPY", "KWD"]),
            opening in -1_000_000i64..1_000_000,
        ) {
            let currency = Currency::from_code(code).unwrap();
            let start = day("2026-10-01");
            let entries: Vec<StatementEntry> = rows.iter().enumerate().filter(|(_, r)| r.0 != 0).map(|(i, (amount, offset, reversal))| StatementEntry {
                source: String::new(),
                amount_minor: *amount,
                currency,
                booking_date: start + chrono::Duration::days(*offset as i64),
                value_date: Some(start + chrono::Duration::days(*offset as i64)),
                booked_at: None,
                references: vec![format!("REF{i}")],
                external_id: Some(format!("B{i}")),
                counterparty: None,
                description: String::new(),
                fee_minor: None,
                status: None,
                reversal: *reversal,
            }).collect();
            let total: i64 = entries.iter().map(|e| e.amount_minor).sum();
            let s = Statement {
                identity: StatementIdentity { kind: StatementKind::Bank, account: "ACC1".into(), period_start: start, period_end: day("2026-10-31"), sequence: "7/1".into() },
                format: StatementFormat::Mt940,
                currency,
                opening_balance: Some(StatedBalance { amount_minor: opening, date: start }),
                closing_balance: Some(StatedBalance { amount_minor: opening + total, date: day("2026-10-31") }),
                entries,
            };
            let read = crate::check_balances(parse(write_mt940(std::slice::from_ref(&s)).as_bytes()).unwrap()).unwrap();
            prop_assert_eq!(&read[0].identity, &s.identity);
            for (a, b) in read[0].entries.iter().zip(&s.entries) {
                prop_assert_eq!(a.amount_minor, b.amount_minor);
                prop_assert_eq!(a.booking_date, b.booking_date);
                prop_assert_eq!(&a.references, &b.references);
                prop_assert_eq!(&a.external_id, &b.external_id);
                prop_assert_eq!(a.reversal, b.reversal);
            }
            prop_assert_eq!(read[0].entries.len(), s.entries.len());
        }

        #[test]
        fn no_input_makes_the_reader_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let _ = parse(&bytes);
            let mut mutated = TWO_MESSAGES.as_bytes().to_vec();
            let at = position.index(mutated.len());
            mutated[at] = byte;
            let _ = parse(&mutated);
        }
    }
}
