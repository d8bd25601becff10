//! Refund fee returns on the real binary: a refund gives back from the fee its payment was actually
//! charged (not today's schedule), and late, back-dated refunds never return a fee twice.

use crate::support::{read_export, transactions_csv, Sandbox};

/// The `fees` and `net` of one merchant line of a date's export.
fn fees_and_net(sandbox: &Sandbox, date: &str, merchant: &str) -> (String, String) {
    let export = sandbox.run(&["export", "--date", date]);
    export.assert_ok();
    let rows = read_export(&export.stdout);
    let row = rows
        .iter()
        .find(|r| r["merchant_id"] == merchant)
        .unwrap_or_else(|| panic!("no line for {merchant} on {date}: {rows:?}"));
    (row["fees"].clone(), row["net"].clone())
}

fn import(sandbox: &Sandbox, name: &str, rows: &[&str]) {
    let csv = sandbox.write(name, transactions_csv(rows));
    sandbox
        .run(&["--config", "settle.toml", "import", csv.to_str().unwrap()])
        .assert_ok();
}

fn run(sandbox: &Sandbox, date: &str) {
    sandbox
        .run(&["--config", "settle.toml", "run", "--date", date])
        .assert_ok();
}

#[test]
fn a_refund_returns_the_fee_charged_not_the_one_of_todays_schedule() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[fees.default]\npercent = \"1\"\nrefund_returns_percent = true\n",
    );
    import(
        &sandbox,
        "payment.csv",
        &["p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T12:00:00+03:00,"],
    );
    run(&sandbox, "2024-03-10");
    assert_eq!(
        fees_and_net(&sandbox, "2024-03-10", "m-1"),
        ("1.00".into(), "99.00".into())
    );
    // The schedule goes up to 5 %; the payment was charged 1.00 and a full refund returns 1.00.
    sandbox.write(
        "settle.toml",
        "[fees.default]\npercent = \"5\"\nrefund_returns_percent = true\n",
    );
    import(
        &sandbox,
        "refund.csv",
        &["r-1,m-1,refund,completed,100.00,USD,card,2024-03-11T12:00:00+03:00,p-1"],
    );
    run(&sandbox, "2024-03-11");
    assert_eq!(
        fees_and_net(&sandbox, "2024-03-11", "m-1"),
        ("-1.00".into(), "-99.00".into()),
        "the refund gives back exactly the 1.00 charged"
    );
}

#[test]
fn a_late_back_dated_refund_does_not_return_the_fee_again_and_reruns_reproduce_figures() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[fees.default]\npercent = \"2.5\"\nmax = { USD = \"1.00\" }\nrefund_returns_percent = true\n",
    );
    import(
        &sandbox,
        "payment.csv",
        &[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T12:00:00+03:00,",
            "r-1,m-1,refund,completed,60.00,USD,card,2024-03-11T12:00:00+03:00,p-1",
        ],
    );
    run(&sandbox, "2024-03-10");
    run(&sandbox, "2024-03-11");
    // 2.5 % of 60.00 is 1.50; the payment was charged 1.00 (the maximum), all of it returned.
    assert_eq!(
        fees_and_net(&sandbox, "2024-03-11", "m-1"),
        ("-1.00".into(), "-59.00".into())
    );
    // A refund back-dated before the first arrives after its date was settled: it lands late on
    // the next date, and nothing of the fee is left for it.
    import(
        &sandbox,
        "late.csv",
        &["r-0,m-1,refund,completed,40.00,USD,card,2024-03-11T08:00:00+03:00,p-1"],
    );
    run(&sandbox, "2024-03-12");
    assert_eq!(
        fees_and_net(&sandbox, "2024-03-12", "m-1"),
        ("0.00".into(), "-40.00".into()),
        "the late refund must not return the fee a second time"
    );
    // A rerun of either date reproduces its own figures.
    for date in ["2024-03-11", "2024-03-12"] {
        let before = fees_and_net(&sandbox, date, "m-1");
        sandbox
            .run(&[
                "--config",
                "settle.toml",
                "rerun",
                "--date",
                date,
                "--reason",
                "audit check",
            ])
            .assert_ok();
        assert_eq!(
            fees_and_net(&sandbox, date, "m-1"),
            before,
            "rerun of {date}"
        );
    }
}
