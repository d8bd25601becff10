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
