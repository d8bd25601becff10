//! OFX bank (and card) statements, 1.x SGML (leaf tags left unclosed) and 2.x XML, read by one
//! tolerant tag reader: STMTRS/CCSTMTRS with CURDEF, the account, BANKTRANLIST and LEDGERBAL.
//!
//! OFX states no opening balance, so only the closing one (LEDGERBAL) is kept and the balance check
//! has nothing to compare; dates are the date part of OFX's `YYYYMMDD[HHMMSS…][[±H]:TZ]`.

use chrono::NaiveDate;
use settle_domain::money::Currency;
use settle_domain::reconcile::{
    StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use crate::amount::parse_amount;
use crate::StatementError;

/// An element: a leaf with a value, or an aggregate with children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    value: Option<String>,
    children: Vec<Node>,
    line: usize,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn at(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .try_fold(self, |node, name| node.child(name))
    }

    fn value_at(&self, path: &str) -> Option<&str> {
        self.at(path)
            .and_then(|n| n.value.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// Reads the tags after `<OFX>` into a tree.
fn tree(text: &str) -> Result<Node, StatementError> {
    let start = text
        .find("<OFX>")
        .ok_or_else(|| StatementError::file("no <OFX> element: this is not an OFX file"))?;
    let line_at = |offset: usize| 1 + text[..offset].matches('\n').count();
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut position = start;
    while let Some(open) = text[position..].find('<') {
        let tag_start = position + open;
        let Some(close) = text[tag_start..].find('>') else {
            return Err(StatementError::new(
                format!("line {}", line_at(tag_start)),
                None,
                "a tag is not closed with >",
            ));
        };
        let tag = &text[tag_start + 1..tag_start + close];
        let after = tag_start + close + 1;
        let next = text[after..].find('<').map_or(text.len(), |n| after + n);
        let value = text[after..next].trim();
        position = next;
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            // Closing an aggregate closes every unclosed element inside it; closing a leaf that
            // was already complete does nothing.
            if let Some(depth) = stack.iter().rposition(|n| n.name == name) {
                while stack.len() > depth {
                    let node = stack.pop().expect("an open aggregate");
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return Err(StatementError::file("unbalanced tags")),
                    }
                }
            }
            continue;
        }
        let name = tag.trim().to_string();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(StatementError::new(
                format!("line {}", line_at(tag_start)),
                None,
                format!("<{tag}> is not an OFX tag"),
            ));
        }
        let node = Node {
            name,
            value: None,
            children: Vec::new(),
            line: line_at(tag_start),
        };
        if value.is_empty() {
            stack.push(node);
        } else {
            let leaf = Node {
                value: Some(unescape(value)),
                ..node
            };
            stack.last_mut().expect("the document").children.push(leaf);
        }
    }
    while stack.len() > 1 {
        let node = stack.pop().expect("an open aggregate");
        stack.last_mut().expect("the document").children.push(node);
    }
    let document = stack.pop().expect("the document");
    document
        .children
        .into_iter()
        .find(|n| n.name == "OFX")
        .ok_or_else(|| StatementError::file("no <OFX> element"))
}

fn err(node: &Node, field: &str, message: impl Into<String>) -> StatementError {
    StatementError::new(format!("line {}", node.line), Some(field), message)
}

fn date(node: &Node, field: &str) -> Result<NaiveDate, StatementError> {
    let text = node
        .value_at(field)
        .ok_or_else(|| err(node, field, "missing"))?;
    text.get(..8)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        .ok_or_else(|| {
            err(
                node.child(field).unwrap_or(node),
                field,
                format!("{text:?} is not a date YYYYMMDD…"),
            )
        })
}

fn amount(node: &Node, field: &str, currency: Currency) -> Result<i64, StatementError> {
    let text = node
        .value_at(field)
        .ok_or_else(|| err(node, field, "missing"))?;
    let text = text.strip_prefix('+').unwrap_or(text);
    let comma = !text.contains('.') && text.contains(',');
    parse_amount(text, currency, comma)
        .map_err(|e| err(node.child(field).unwrap_or(node), field, e))
}

fn statement(response: &Node, transaction_id: Option<&str>) -> Result<Statement, StatementError> {
    let code = response
        .value_at("CURDEF")
        .ok_or_else(|| err(response, "CURDEF", "missing"))?;
    let currency = Currency::from_code(code).map_err(|e| err(response, "CURDEF", e.to_string()))?;
    let account = response
        .value_at("BANKACCTFROM/ACCTID")
        .or_else(|| response.value_at("CCACCTFROM/ACCTID"))
        .ok_or_else(|| err(response, "ACCTID", "missing"))?;
    let list = response
        .child("BANKTRANLIST")
        .ok_or_else(|| err(response, "BANKTRANLIST", "missing"))?;
    let period_start = date(list, "DTSTART")?;
    let period_end = date(list, "DTEND")?;
    let mut entries = Vec::new();
    for trn in list.children.iter().filter(|c| c.name == "STMTTRN") {
        let mut references = Vec::new();
        for field in ["REFNUM", "CHECKNUM", "SRVRTID"] {
            if let Some(v) = trn.value_at(field) {
                references.push(v.to_string());
            }
        }
        let description = trn.value_at("MEMO").unwrap_or("").to_string();
        for token in description.split_whitespace() {
            if !references.iter().any(|r| r == token) {
                references.push(token.to_string());
            }
        }
        entries.push(StatementEntry {
            source: format!("line {}", trn.line),
            amount_minor: amount(trn, "TRNAMT", currency)?,
            currency,
            booking_date: date(trn, "DTPOSTED")?,
            value_date: match trn.value_at("DTUSER") {
                Some(_) => Some(date(trn, "DTUSER")?),
                None => None,
            },
            booked_at: None,
            references,
            external_id: trn.value_at("FITID").map(str::to_string),
            counterparty: trn.value_at("NAME").map(str::to_string),
            description,
            fee_minor: None,
            status: trn.value_at("TRNTYPE").map(str::to_lowercase),
            reversal: false,
        });
    }
    let closing_balance = match response.child("LEDGERBAL") {
        Some(ledger) => Some(StatedBalance {
            amount_minor: amount(ledger, "BALAMT", currency)?,
            date: date(ledger, "DTASOF")?,
        }),
        None => None,
    };
    Ok(Statement {
        identity: StatementIdentity {
            kind: StatementKind::Bank,
            account: account.to_string(),
            period_start,
            period_end,
            sequence: transaction_id
                .map(str::to_string)
                .unwrap_or_else(|| format!("{period_start}/{period_end}")),
        },
        format: StatementFormat::Ofx,
        currency,
        opening_balance: None,
        closing_balance,
        entries,
    })
}

/// Every statement response of the file (bank and credit card).
pub fn parse(bytes: &[u8]) -> Result<Vec<Statement>, StatementError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        StatementError::new(format!("line {line}"), None, "not UTF-8")
    })?;
    let ofx = tree(text)?;
    let mut statements = Vec::new();
    for set in ofx
        .children
        .iter()
        .filter(|c| c.name == "BANKMSGSRSV1" || c.name == "CREDITCARDMSGSRSV1")
    {
        for wrapper in set
            .children
            .iter()
            .filter(|c| c.name == "STMTTRNRS" || c.name == "CCSTMTTRNRS")
        {
            let response = wrapper
                .child("STMTRS")
                .or_else(|| wrapper.child("CCSTMTRS"))
                .ok_or_else(|| err(wrapper, "STMTRS", "missing"))?;
            statements.push(statement(response, wrapper.value_at("TRNUID"))?);
        }
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{ofx as write_ofx, OfxVersion};
    use proptest::prelude::*;

    const SGML: &str = include_str!("../tests/data/ofx1_sgml.ofx");
    const XML: &str = include_str!("../tests/data/ofx2_xml.ofx");

    #[test]
    fn sgml_and_xml_files_of_the_same_statement_read_the_same_entries() {
        let sgml = parse(SGML.as_bytes()).unwrap();
        let xml = parse(XML.as_bytes()).unwrap();
        assert_eq!(sgml.len(), 1);
        let (a, b) = (&sgml[0], &xml[0]);
        assert_eq!(a.identity, b.identity);
        assert_eq!(a.identity.account, "0123456789");
        assert_eq!(a.identity.sequence, "1001");
        assert_eq!(a.identity.period_end.to_string(), "2026-10-31");
        assert_eq!(a.closing_balance, b.closing_balance);
        assert_eq!(a.closing_balance.unwrap().amount_minor, 90_100);
        assert_eq!(a.opening_balance, None);
        let strip = |s: &Statement| {
            s.entries
                .iter()
                .map(|e| StatementEntry {
                    source: String::new(),
                    ..e.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(a), strip(b));
        let payout = &a.entries[0];
        assert_eq!(payout.amount_minor, -9_750);
        assert_eq!(payout.booking_date.to_string(), "2026-10-02");
        assert_eq!(
            payout.value_date.map(|d| d.to_string()).as_deref(),
            Some("2026-10-03")
        );
        assert_eq!(payout.references[0], "2026-10-01.USD.r1.m-1");
        assert_eq!(payout.counterparty.as_deref(), Some("Merchant One & Co"));
        assert_eq!(payout.external_id.as_deref(), Some("FIT-1"));
        assert_eq!(a.entries[1].status.as_deref(), Some("fee"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_line_and_tag() {
        let error = parse(SGML.replace("<TRNAMT>-97.50", "<TRNAMT>-97.5O").as_bytes()).unwrap_err();
        assert_eq!(
            (error.at.as_str(), error.field.as_deref()),
            ("line 43", Some("TRNAMT")),
            "{error}"
        );
        let error = parse(
            XML.replace("<DTPOSTED>20261031<", "<DTPOSTED>2026-10-31<")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("DTPOSTED"), "{error}");
        let error = parse(SGML.replace("<CURDEF>USD", "<CURDEF>XXX").as_bytes()).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("CURDEF"), "{error}");
        assert!(parse(b"OFXHEADER:100\n").is_err());
    }

    proptest! {
        #[test]
        fn written_statements_read_back(
            rows in prop::collection::vec((-5_000_000i64..5_000_000, 0u32..28), 1..15),
            xml in any::<bool>(),
        ) {
            let currency = Currency::from_code("KWD").unwrap();
            let start: NaiveDate = "2026-10-01".parse().unwrap();
            let entries: Vec<StatementEntry> = rows.iter().enumerate().map(|(i, (amount, offset))| StatementEntry {
                source: String::new(),
                amount_minor: *amount,
                currency,
                booking_date: start + chrono::Duration::days(*offset as i64),
                value_date: None,
                booked_at: None,
                references: vec![format!("REF{i}")],
                external_id: Some(format!("F{i}")),
                counterparty: Some(format!("M <{i}> & Co")),
                description: String::new(),
                fee_minor: None,
                status: None,
                reversal: false,
            }).collect();
            let s = Statement {
                identity: StatementIdentity { kind: StatementKind::Bank, account: "A1".into(), period_start: start, period_end: "2026-10-31".parse().unwrap(), sequence: "9".into() },
                format: StatementFormat::Ofx,
                currency,
                opening_balance: None,
                closing_balance: Some(StatedBalance { amount_minor: 12_345, date: "2026-10-31".parse().unwrap() }),
                entries,
            };
            let version = if xml { OfxVersion::Xml2 } else { OfxVersion::Sgml1 };
            let read = parse(write_ofx(std::slice::from_ref(&s), version).as_bytes()).unwrap();
            prop_assert_eq!(&read[0].identity, &s.identity);
            prop_assert_eq!(read[0].closing_balance, s.closing_balance);
            prop_assert_eq!(read[0].entries.len(), s.entries.len());
            for (a, b) in read[0].entries.iter().zip(&s.entries) {
                prop_assert_eq!(a.amount_minor, b.amount_minor);
                prop_assert_eq!(a.booking_date, b.booking_date);
                prop_assert_eq!(&a.references, &b.references);
                prop_assert_eq!(&a.external_id, &b.external_id);
                prop_assert_eq!(&a.counterparty, &b.counterparty);
            }
        }

        #[test]
        fn no_input_makes_the_reader_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let _ = parse(&bytes);
            let mut mutated = SGML.as_bytes().to_vec();
            let at = position.index(mutated.len());
            mutated[at] = byte;
            let _ = parse(&mutated);
        }
    }
}
