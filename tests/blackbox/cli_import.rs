//! `settle import` on the real binary: good files, duplicates, every kind of bad input (named by
//! line and column, nothing written), and `--skip-invalid` with its rejects file.

use crate::support::{transactions_csv, Sandbox};

const GOOD_ROWS: &[&str] = &[
    "p-1,m-1,payment,completed,12.50,USD,card,2024-03-10T10:00:00+03:00,",
    "p-2,m-1,payment,completed,1500,YER,cash,2024-03-10T11:00:00+03:00,",
    "r-1,m-1,refund,completed,2.50,USD,card,2024-03-10T12:00:00+03:00,p-1",
];

async fn stored_refs(sandbox: &Sandbox, refs: &[&str]) -> usize {
    let store = sandbox.store().await;
    let keys = refs
        .iter()
        .map(|r| ("m-1".to_string(), r.to_string()))
        .collect();
    store.transactions_by_ref(keys).await.unwrap().len()
}

#[tokio::test]
async fn a_good_file_imports_and_a_second_import_changes_nothing() {
    let sandbox = Sandbox::new();
    let file = sandbox.write("good.csv", transactions_csv(GOOD_ROWS));
    let first = sandbox.run(&["import", file.to_str().unwrap()]);
    first.assert_ok();
    assert!(
        first
            .stdout
            .contains("3 rows, 3 new, 0 already present, 0 rejected"),
        "{}",
        first.stdout
    );
    let second = sandbox.run(&["import", file.to_str().unwrap()]);
    second.assert_ok();
    assert!(
        second.stdout.contains("3 rows, 0 new, 3 already present"),
        "{}",
        second.stdout
    );
    assert_eq!(stored_refs(&sandbox, &["p-1", "r-1"]).await, 2);
    let audit = sandbox.store().await.audit_events(10, 0).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "transactions.import")
            .count(),
        2
    );
    assert_eq!(audit[0].actor, "cli:tester");
}

#[tokio::test]
async fn columns_may_come_in_any_order_with_an_id_and_a_byte_order_mark() {
    let sandbox = Sandbox::new();
    let text = "\u{feff}occurred_at,amount,currency,id,merchant_id,external_ref,kind,status,method\n\
                2024-03-10T10:00:00Z,3.25,USD,6f1c7a44-2b7e-4c59-9a59-6c1f0f5f1a10,m-1,p-9,payment,completed,card\n";
    let file = sandbox.write("reordered.csv", text);
    sandbox.run(&["import", file.to_str().unwrap()]).assert_ok();
    let store = sandbox.store().await;
    let found = store
        .transaction("6f1c7a44-2b7e-4c59-9a59-6c1f0f5f1a10".parse().unwrap())
        .await
        .unwrap()
        .expect("stored with the given id");
    assert_eq!(
        (found.amount_minor, found.external_ref.as_str()),
        (325, "p-9")
    );
}

/// Each bad file: what the error must say. Every one exits 2 and writes nothing.
fn bad_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let with_row = |row: &str| {
        let mut rows = GOOD_ROWS.to_vec();
        rows.insert(1, row);
        transactions_csv(&rows).into_bytes()
    };
    let mut invalid_utf8 = transactions_csv(&GOOD_ROWS[..1]).into_bytes();
    invalid_utf8.extend_from_slice(
        b"p-8,m-\xff\xfe,payment,completed,1.00,USD,card,2024-03-10T10:00:00Z,\n",
    );
    vec![
        ("empty file", Vec::new(), "empty or has no header"),
        (
            "unknown column",
            b"external_ref,merchant_id,kind,status,amount,currency,method,occurred_at,colour\n"
                .to_vec(),
            "unknown column \"colour\"",
        ),
        (
            "missing column",
            b"external_ref,merchant_id,kind,status,amount,method,occurred_at\n".to_vec(),
            "lacks required column(s): currency",
        ),
        (
            "duplicate column",
            b"external_ref,merchant_id,kind,status,amount,currency,method,occurred_at,amount\n"
                .to_vec(),
            "appears twice",
        ),
        (
            "too many decimals",
            with_row("p-8,m-1,payment,completed,12.345,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column amount: \"12.345\" has 3 decimal places but USD allows 2",
        ),
        (
            "exponent",
            with_row("p-8,m-1,payment,completed,1e3,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column amount: \"1e3\"",
        ),
        (
            "comma decimal",
            with_row("p-8,m-1,payment,completed,\"12,5\",USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column amount: \"12,5\"",
        ),
        (
            "not a number",
            with_row("p-8,m-1,payment,completed,NaN,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column amount: \"NaN\"",
        ),
        (
            "zero payment",
            with_row("p-8,m-1,payment,completed,0.00,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column amount: a payment amount must be greater than zero",
        ),
        (
            "negative refund",
            with_row("p-8,m-1,refund,completed,-1.00,USD,card,2024-03-10T10:00:00Z,p-1"),
            "line 3, column amount",
        ),
        (
            "overflow",
            with_row(
                "p-8,m-1,payment,completed,99999999999999999999,USD,card,2024-03-10T10:00:00Z,",
            ),
            "too large",
        ),
        (
            "unknown currency",
            with_row("p-8,m-1,payment,completed,1.00,XYZ,card,2024-03-10T10:00:00Z,"),
            "line 3, column currency: unknown currency \"XYZ\"",
        ),
        (
            "impossible date",
            with_row("p-8,m-1,payment,completed,1.00,USD,card,2024-02-30T10:00:00Z,"),
            "line 3, column occurred_at: \"2024-02-30T10:00:00Z\"",
        ),
        (
            "date without offset",
            with_row("p-8,m-1,payment,completed,1.00,USD,card,2024-03-10 10:00:00,"),
            "line 3, column occurred_at",
        ),
        (
            "unknown kind",
            with_row("p-8,m-1,sale,completed,1.00,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column kind: unknown kind \"sale\"",
        ),
        (
            "unknown status",
            with_row("p-8,m-1,payment,done,1.00,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column status",
        ),
        (
            "unknown method",
            with_row("p-8,m-1,payment,completed,1.00,USD,cheque,2024-03-10T10:00:00Z,"),
            "line 3, column method",
        ),
        (
            "missing field",
            with_row("p-8,m-1,payment,completed,1.00,USD,card"),
            "line 3: has 7 fields but the header has 9",
        ),
        (
            "empty merchant",
            with_row("p-8,,payment,completed,1.00,USD,card,2024-03-10T10:00:00Z,"),
            "line 3, column merchant_id: is empty",
        ),
        (
            "refund_of on a payment",
            with_row("p-8,m-1,payment,completed,1.00,USD,card,2024-03-10T10:00:00Z,p-1"),
            "line 3, column refund_of",
        ),
        (
            "invalid UTF-8",
            invalid_utf8,
            "line 3, column merchant_id: not valid UTF-8",
        ),
        (
            "unbalanced quote",
            with_row("p-8,m-1,payment,completed,\"1.00,USD,card,2024-03-10T10:00:00Z,"),
            "unbalanced quote",
        ),
        (
            "a 10 MB line",
            with_row(&format!(
                "p-9,{},payment,completed,1.00,USD,card,2024-03-10T10:00:00Z,",
                "m".repeat(10 * 1024 * 1024)
            )),
            "line 3, column merchant_id: \"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm…\" (10485760 bytes) is longer than 64",
        ),
        (
            "same reference twice with different content",
            with_row("p-1,m-1,payment,completed,99.00,USD,card,2024-03-10T10:00:00+03:00,"),
            "line 3, column external_ref: merchant m-1 reference \"p-1\" already appears on line 2",
        ),
    ]
}

#[tokio::test]
async fn every_bad_file_is_refused_with_a_clear_message_and_nothing_written() {
    for (name, contents, expected) in bad_files() {
        let sandbox = Sandbox::new();
        let file = sandbox.write("bad.csv", &contents);
        let ran = sandbox.run(&["import", file.to_str().unwrap()]);
        assert_eq!(ran.code, 2, "{name}: exit status\n{}", ran.stderr);
        assert!(
            ran.stderr.len() < 2_000,
            "{name}: a message of {} bytes",
            ran.stderr.len()
        );
        assert!(
            ran.stderr.contains(expected),
            "{name}: expected {expected:?} in\n{}",
            ran.stderr
        );
        if sandbox.data_dir().join("settle.db").exists() {
            assert_eq!(
                stored_refs(&sandbox, &["p-1", "p-2", "r-1", "p-8"]).await,
                0,
                "{name}: nothing written"
            );
        }
    }
}

#[tokio::test]
async fn a_reference_stored_with_other_content_is_a_bad_row_naming_the_difference() {
    let sandbox = Sandbox::new();
    let file = sandbox.write("first.csv", transactions_csv(GOOD_ROWS));
    sandbox.run(&["import", file.to_str().unwrap()]).assert_ok();
    let changed = sandbox.write(
        "changed.csv",
        transactions_csv(&[
            "p-3,m-1,payment,completed,7.00,USD,card,2024-03-10T10:00:00Z,",
            "p-1,m-1,payment,completed,13.50,USD,card,2024-03-10T10:00:00+03:00,",
        ]),
    );
    let ran = sandbox.run(&["import", changed.to_str().unwrap()]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("line 3, column external_ref")
            && ran.stderr.contains("amount 13.50 (stored: 12.50)"),
        "{}",
        ran.stderr
    );
    assert_eq!(stored_refs(&sandbox, &["p-3"]).await, 0, "all or nothing");
}

/// Refunds and chargebacks against `p-1` (12.50 USD, of which `r-1` refunded 2.50) and against
/// payments of the file itself, each row with the reason the payment service would refuse it for.
const RETURN_ROWS: &[(&str, Option<(&str, &str)>)] = &[
    (
        "r-2,m-1,refund,completed,11.00,USD,card,2024-03-11T10:00:00Z,p-1",
        Some(("amount", "payment p-1 has 10.00 USD left to return")),
    ),
    (
        "r-3,m-1,refund,completed,1.00,USD,card,2024-03-11T10:00:00Z,p-404",
        Some((
            "refund_of",
            "merchant m-1 has no payment \"p-404\" to return",
        )),
    ),
    (
        "r-4,m-1,refund,completed,1.00,YER,card,2024-03-11T10:00:00Z,p-1",
        Some(("refund_of", "payment p-1 is in USD, not YER")),
    ),
    (
        "r-5,m-2,refund,completed,1.00,USD,card,2024-03-11T10:00:00Z,p-1",
        Some(("refund_of", "merchant m-2 has no payment \"p-1\" to return")),
    ),
    (
        "p-5,m-1,payment,completed,20.00,USD,card,2024-03-11T10:00:00Z,",
        None,
    ),
    (
        "r-6,m-1,refund,completed,15.00,USD,card,2024-03-11T11:00:00Z,p-5",
        None,
    ),
    (
        "c-1,m-1,chargeback,completed,6.00,USD,card,2024-03-11T12:00:00Z,p-5",
        Some(("amount", "payment p-5 has 5.00 USD left to return")),
    ),
    (
        "r-7,m-1,refund,completed,10.00,USD,card,2024-03-11T12:00:00Z,p-1",
        None,
    ),
    (
        "r-8,m-1,refund,pending,0.01,USD,card,2024-03-11T13:00:00Z,p-1",
        Some(("amount", "payment p-1 has 0.00 USD left to return")),
    ),
    (
        "r-9,m-1,refund,completed,1.00,USD,card,2024-03-11T13:00:00Z,p-6",
        Some(("refund_of", "merchant m-1 has no payment \"p-6\" to return")),
    ),
    (
        "p-6,m-1,payment,completed,3.00,USD,card,2024-03-11T14:00:00Z,",
        None,
    ),
];

#[tokio::test]
async fn refunds_and_chargebacks_are_imported_only_within_what_their_payment_has_left() {
    let sandbox = Sandbox::new();
    let first = sandbox.write("first.csv", transactions_csv(GOOD_ROWS));
    sandbox
        .run(&["import", first.to_str().unwrap()])
        .assert_ok();
    let rows: Vec<&str> = RETURN_ROWS.iter().map(|(row, _)| *row).collect();
    let file = sandbox.write("returns.csv", transactions_csv(&rows));

    // All or nothing: every refused row is named with its line, column and reason.
    let refused = sandbox.run(&["import", file.to_str().unwrap()]);
    refused.assert_code(2);
    for (index, (_, refusal)) in RETURN_ROWS.iter().enumerate() {
        let line = index + 2;
        if let Some((column, reason)) = refusal {
            let expected = format!("line {line}, column {column}: {reason}");
            assert!(
                refused.stderr.contains(&expected),
                "{expected}\n{}",
                refused.stderr
            );
        } else {
            assert!(
                !refused.stderr.contains(&format!("line {line},")),
                "line {line} is good\n{}",
                refused.stderr
            );
        }
    }
    assert_eq!(
        stored_refs(&sandbox, &["p-5", "r-6", "r-7", "p-6"]).await,
        0
    );

    // --skip-invalid writes exactly the good rows; what is stored never exceeds a payment.
    let skipped = sandbox.run(&["import", "--skip-invalid", file.to_str().unwrap()]);
    skipped.assert_ok();
    assert!(
        skipped
            .stdout
            .contains("11 rows, 4 new, 0 already present, 7 rejected"),
        "{}",
        skipped.stdout
    );
    assert_eq!(
        stored_refs(&sandbox, &["p-5", "r-6", "r-7", "p-6"]).await,
        4
    );
    let store = sandbox.store().await;
    let keys = ["p-1", "p-5"]
        .iter()
        .map(|r| ("m-1".to_string(), r.to_string()))
        .collect();
    let mut refunded = store.refunded_payments(keys).await.unwrap();
    refunded.sort_by(|a, b| a.payment.external_ref.cmp(&b.payment.external_ref));
    let returned: Vec<(String, i64, i64)> = refunded
        .iter()
        .map(|p| {
            (
                p.payment.external_ref.clone(),
                p.payment.amount_minor,
                p.refunds.iter().map(|r| r.amount_minor).sum(),
            )
        })
        .collect();
    assert_eq!(
        returned,
        [("p-1".into(), 1_250, 1_250), ("p-5".into(), 2_000, 1_500)]
    );

    // The same rows through the API's rule: a refund above what is left is refused there too.
    let again = sandbox.write(
        "again.csv",
        transactions_csv(&["r-10,m-1,refund,completed,0.01,USD,card,2024-03-12T10:00:00Z,p-1"]),
    );
    let ran = sandbox.run(&["import", again.to_str().unwrap()]);
    ran.assert_code(2);
    assert!(
        ran.stderr
            .contains("line 2, column amount: payment p-1 has 0.00 USD left to return"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn an_amount_above_the_per_transaction_maximum_is_refused_on_import() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[payments]\nmax_amount_minor = 100000\n[payments.max_amount]\nYER = \"50\"\n",
    );
    let file = sandbox.write(
        "big.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,1000.00,USD,card,2024-03-10T10:00:00Z,",
            "p-2,m-1,payment,completed,1000.01,USD,card,2024-03-10T10:00:00Z,",
            "p-3,m-1,payment,completed,51,YER,cash,2024-03-10T10:00:00Z,",
        ]),
    );
    let ran = sandbox.run(&["--config", "settle.toml", "import", file.to_str().unwrap()]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("line 3, column amount: 1000.01 USD is above the per-transaction maximum 1000.00 USD (payments.max_amount_minor)"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("line 4, column amount")
            && ran.stderr.contains("payments.max_amount.YER"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("line 2,"), "{}", ran.stderr);
    assert_eq!(stored_refs(&sandbox, &["p-1"]).await, 0, "all or nothing");
}

#[tokio::test]
async fn skip_invalid_imports_the_good_rows_and_writes_the_rejects_file() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "mixed.csv",
        transactions_csv(&[
            GOOD_ROWS[0],
            "p-8,m-1,payment,completed,12.345,USD,card,2024-03-10T10:00:00Z,",
            GOOD_ROWS[1],
            "p-9,m-1,payment,completed,1.00,ABC,card,2024-03-10T10:00:00Z,",
        ]),
    );
    let ran = sandbox.run(&["import", "--skip-invalid", file.to_str().unwrap()]);
    ran.assert_ok();
    assert!(
        ran.stdout
            .contains("4 rows, 2 new, 0 already present, 2 rejected"),
        "{}",
        ran.stdout
    );
    assert_eq!(
        stored_refs(&sandbox, &["p-1", "p-2", "p-8", "p-9"]).await,
        2
    );
    let rejects = std::fs::read_to_string(sandbox.path().join("mixed.csv.rejects.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(rejects.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[..4], ["line", "column", "reason", "external_ref"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0][0], &rows[0][1], &rows[0][3]),
        ("3", "amount", "p-8")
    );
    assert!(rows[0][2].contains("3 decimal places"));
    assert_eq!((&rows[1][0], &rows[1][1]), ("5", "currency"));
}

#[tokio::test]
async fn rejects_file_cells_cannot_be_read_as_spreadsheet_formulas() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "formula.csv",
        transactions_csv(&[
            GOOD_ROWS[0],
            "\"=HYPERLINK(\"\"x\"\")\",m-1,adjustment,completed,-5.00,ABC,other,2024-03-10T10:00:00Z,",
            "\"@SUM(A1)\",m-1,payment,completed,1.00,ABC,card,2024-03-10T10:00:00Z,",
        ]),
    );
    let ran = sandbox.run(&["import", "--skip-invalid", file.to_str().unwrap()]);
    ran.assert_ok();
    let rejects = std::fs::read_to_string(sandbox.path().join("formula.csv.rejects.csv")).unwrap();
    assert!(
        rejects.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "the rejects file as written:\n{rejects}"
    );
    let mut reader = csv::Reader::from_reader(rejects.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{rejects}");
    assert_eq!(&rows[0][3], "'=HYPERLINK(\"x\")");
    assert_eq!(&rows[0][7], "-5.00", "a signed amount stays a number");
    assert_eq!(&rows[1][3], "'@SUM(A1)");
    for row in &rows {
        assert!(
            row.iter()
                .all(|cell| !cell.starts_with(['=', '+', '@', '\t', '\r'])),
            "{row:?}"
        );
    }
}
