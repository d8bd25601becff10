//! camt.053 read from files shaped as the ISO 20022 messages are (both versions, namespaces,
//! batched and reversed entries, several statements), refused with the element named, and
//! written then read back unchanged.

use super::*;
use crate::write::{camt053 as write_camt053, Camt053Version};
use proptest::prelude::*;

const V02: &str = include_str!("../tests/data/camt053_v02_two_statements.xml");
const V08: &str = include_str!("../tests/data/camt053_v08_prefixed.xml");

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

#[test]
fn a_v02_file_with_two_statements_reads_with_batches_reversals_and_value_dates() {
    let statements = crate::check_balances(parse(V02.as_bytes()).unwrap()).unwrap();
    assert_eq!(statements.len(), 2);
    let usd = &statements[0];
    assert_eq!(usd.identity.account, "YE15CBYE0001000000123456789");
    assert_eq!(usd.identity.sequence, "301");
    assert_eq!(
        (usd.identity.period_start, usd.identity.period_end),
        (day("2026-10-01"), day("2026-10-31"))
    );
    assert_eq!(usd.opening_balance.unwrap().amount_minor, 1_000_000);
    assert_eq!(usd.closing_balance.unwrap().amount_minor, 896_225);
    let amounts: Vec<i64> = usd.entries.iter().map(|e| e.amount_minor).collect();
    // The batched debit split in three; the pending entry left out.
    assert_eq!(
        amounts,
        vec![-50_000, -30_000, -20_000, 1_275, -1_275, -3_775]
    );
    let first = &usd.entries[0];
    assert_eq!(first.source, "Stmt[1]/Ntry[1]/TxDtls[1]");
    assert_eq!(
        first.references,
        vec!["2026-10-01.USD.r1.m-001".to_string()]
    );
    assert_eq!(first.counterparty.as_deref(), Some("Merchant One"));
    assert_eq!(first.booking_date, day("2026-10-02"));
    assert_eq!(first.value_date, Some(day("2026-10-03")));
    assert!(usd.entries[2]
        .references
        .contains(&"2026-10-01.USD.r1.m-003".to_string()));
    assert!(!usd.entries[2].references.iter().any(|r| r == "NOTPROVIDED"));
    assert!(usd.entries[4].reversal && !usd.entries[3].reversal);
    assert_eq!(
        usd.entries[3].counterparty.as_deref(),
        Some("Card Acquirer")
    );
    assert_eq!(usd.entries[5].booking_date, day("2026-10-30"));
    assert_eq!(usd.entries[5].description, "Account maintenance fee");
    assert_eq!(usd.entries[5].external_id.as_deref(), Some("BNK-7802"));

    let sar = &statements[1];
    assert_eq!(sar.identity.account, "SAR-ACC-9");
    assert_eq!(sar.closing_balance.unwrap().amount_minor, -25_050);
    assert_eq!(
        sar.entries[0].references,
        vec!["2026-10-08.SAR.r1.m-004".to_string(), "INS-1".to_string()]
    );
}

#[test]
fn a_v08_file_with_a_namespace_prefix_reads_in_three_decimals() {
    let statements = crate::check_balances(parse(V08.as_bytes()).unwrap()).unwrap();
    let s = &statements[0];
    assert_eq!(s.currency.code(), "KWD");
    assert_eq!(s.entries.len(), 1, "the pending entry is left out");
    assert_eq!(s.entries[0].amount_minor, -31);
    assert_eq!(
        s.entries[0].counterparty.as_deref(),
        Some("Merchant Nine & Co")
    );
    assert_eq!(
        (s.identity.period_start, s.identity.period_end),
        (day("2026-10-01"), day("2026-10-02"))
    );
}

#[test]
fn an_unbalanced_statement_is_refused_with_its_figures() {
    let broken = V02.replace(
        "<Amt Ccy=\"USD\">8962.25</Amt>",
        "<Amt Ccy=\"USD\">8962.26</Amt>",
    );
    let error = crate::check_balances(parse(broken.as_bytes()).unwrap()).unwrap_err();
    assert_eq!(error.at, "statement 1 (301)");
    assert!(
        error
            .message
            .contains("opening 10000.00 + entries -1037.75 = 8962.25"),
        "{error}"
    );
    assert!(
        error.message.contains("closing balance is 8962.26"),
        "{error}"
    );
}

#[test]
fn bad_amounts_and_indicators_are_refused_naming_the_element_and_line() {
    let error = parse(V02.replace(">12.75<", ">12.7x<").as_bytes()).unwrap_err();
    assert!(
        error.at.starts_with("Stmt[1]/Ntry[2]/Amt (line "),
        "{error}"
    );
    assert_eq!(error.field.as_deref(), Some("Amt"));
    let error = parse(V02.replace(">12.75<", ">12.755<").as_bytes()).unwrap_err();
    assert!(error.message.contains("decimal places"), "{error}");
    let error = parse(
        V02.replacen(
            "<CdtDbtInd>DBIT</CdtDbtInd>\n        <Sts>",
            "<CdtDbtInd>DEBIT</CdtDbtInd>\n        <Sts>",
            1,
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(error.field.as_deref(), Some("CdtDbtInd"), "{error}");
    let error =
        parse(b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><Document/>").unwrap_err();
    assert!(error.message.contains("DTD"), "{error}");
    let error = parse(b"<Document><BkToCstmrStmt><Stmt>").unwrap_err();
    assert!(error.message.contains("ends inside"), "{error}");
}

fn arb_statement() -> impl Strategy<Value = Statement> {
    let currencies = prop::sample::select(vec!["USD", "JPY", "KWD", "SAR"]);
    (
        currencies,
        prop::collection::vec(
            (-5_000_000i64..5_000_000, 0u32..28, 0u32..3, any::<bool>()),
            1..20,
        ),
        -1_000_000i64..1_000_000,
    )
        .prop_map(|(code, rows, opening)| {
            let currency = Currency::from_code(code).unwrap();
            let start = day("2026-10-01");
            let entries: Vec<StatementEntry> = rows
                .into_iter()
                .enumerate()
                .filter(|(_, (amount, ..))| *amount != 0)
                .map(
                    |(i, (amount, offset, value_lag, reversal))| StatementEntry {
                        source: format!("Stmt[1]/Ntry[{}]", i + 1),
                        amount_minor: amount,
                        currency,
                        booking_date: start + chrono::Duration::days(offset as i64),
                        value_date: Some(
                            start + chrono::Duration::days((offset + value_lag) as i64),
                        ),
                        booked_at: None,
                        references: vec![format!("REF-{i}"), format!("extra-{i}")],
                        external_id: Some(format!("BNK-{i}")),
                        counterparty: Some(format!("Merchant <{i}> & Co")),
                        description: format!("payout {i}"),
                        fee_minor: None,
                        status: None,
                        reversal,
                    },
                )
                .collect();
            let total: i64 = entries.iter().map(|e| e.amount_minor).sum();
            Statement {
                identity: StatementIdentity {
                    kind: StatementKind::Bank,
                    account: "DE89370400440532013000".into(),
                    period_start: start,
                    period_end: day("2026-10-31"),
                    sequence: "17".into(),
                },
                format: StatementFormat::Camt053,
                currency,
                opening_balance: Some(StatedBalance {
                    amount_minor: opening,
                    date: start,
                }),
                closing_balance: Some(StatedBalance {
                    amount_minor: opening + total,
                    date: day("2026-10-31"),
                }),
                entries,
            }
        })
}

proptest! {
    #[test]
    fn written_statements_read_back_unchanged(s in arb_statement(), v08 in any::<bool>()) {
        let version = if v08 { Camt053Version::V08 } else { Camt053Version::V02 };
        let text = write_camt053(std::slice::from_ref(&s), version);
        let read = crate::check_balances(parse(text.as_bytes()).unwrap()).unwrap();
        prop_assert_eq!(read.len(), 1);
        let r = &read[0];
        prop_assert_eq!(&r.identity, &s.identity);
        prop_assert_eq!(r.opening_balance, s.opening_balance);
        prop_assert_eq!(r.closing_balance, s.closing_balance);
        prop_assert_eq!(r.entries.len(), s.entries.len());
        for (a, b) in r.entries.iter().zip(&s.entries) {
            prop_assert_eq!(a.amount_minor, b.amount_minor);
            prop_assert_eq!(a.booking_date, b.booking_date);
            prop_assert_eq!(a.value_date, b.value_date);
            prop_assert_eq!(&a.references, &b.references);
            prop_assert_eq!(&a.external_id, &b.external_id);
            prop_assert_eq!(&a.counterparty, &b.counterparty);
            prop_assert_eq!(&a.description, &b.description);
            prop_assert_eq!(a.reversal, b.reversal);
        }
    }

    #[test]
    fn no_input_makes_the_reader_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = parse(&bytes);
        let mut mutated = V02.as_bytes().to_vec();
        let at = position.index(mutated.len());
        mutated[at] = byte;
        if let Ok(statements) = parse(&mutated) {
            let _ = crate::check_balances(statements);
        }
    }
}
