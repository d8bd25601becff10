//! What `settle` writes for people and spreadsheets: CSV exports, charts, the configuration check,
//! and the demo (run twice: the second run changes nothing).

use crate::support::{read_export, transactions_csv, Sandbox};

fn settled() -> Sandbox {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "day.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,2000.00,YER,cash,2024-03-11T10:00:00+03:00,",
            "p-3,\"m-1\",payment,completed,5.00,USD,card,2024-03-11T11:00:00+03:00,",
        ]),
    );
    sandbox.run(&["import", file.to_str().unwrap()]).assert_ok();
    sandbox.run(&["run", "--date", "2024-03-10"]).assert_ok();
    sandbox.run(&["run", "--date", "2024-03-11"]).assert_ok();
    sandbox
}

#[test]
fn export_writes_rfc_4180_with_minor_and_major_amounts() {
    let sandbox = settled();
    let out = sandbox.path().join("out").join("lines.csv");
    sandbox
        .run(&[
            "export",
            "--date",
            "2024-03-10",
            "--out",
            out.to_str().unwrap(),
        ])
        .assert_ok();
    let bytes = std::fs::read(&out).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.starts_with('\u{feff}'), "no BOM unless asked");
    assert!(
        text.contains("\r\n") && !text.replace("\r\n", "").contains('\n'),
        "CRLF line ends"
    );
    let header = text.lines().next().unwrap();
    for column in [
        "settlement_date",
        "revision",
        "merchant_id",
        "currency",
        "completed_count",
        "failed_count",
        "gross_minor",
        "refunds_minor",
        "chargebacks_minor",
        "adjustments_minor",
        "fees_minor",
        "net_minor",
        "gross",
        "fees",
        "net",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} missing from {header}"
        );
    }
    let rows = read_export(&text);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0]["gross_minor"].as_str(),
            rows[0]["gross"].as_str(),
            rows[0]["fees"].as_str(),
            rows[0]["net"].as_str()
        ),
        ("10000", "100.00", "2.50", "97.50")
    );

    let with_bom = sandbox.run(&["export", "--date", "2024-03-10", "--bom"]);
    with_bom.assert_ok();
    assert!(with_bom.stdout.starts_with('\u{feff}'));
}

#[test]
fn export_refuses_a_date_that_was_not_settled() {
    let sandbox = settled();
    let ran = sandbox.run(&["export", "--date", "2024-03-12"]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("no completed revision"),
        "{}",
        ran.stderr
    );
}

#[test]
fn charts_are_written_as_png_or_svg_by_extension() {
    let sandbox = settled();
    sandbox
        .run(&[
            "chart",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
            "--out",
            "stats.png",
        ])
        .assert_ok();
    let png = std::fs::read(sandbox.path().join("stats.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
    sandbox
        .run(&[
            "chart",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
            "--out",
            "stats.svg",
            "--width",
            "800",
            "--height",
            "600",
        ])
        .assert_ok();
    let svg = std::fs::read_to_string(sandbox.path().join("stats.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("USD") && svg.contains("YER"),
        "both currencies charted"
    );

    let jpg = sandbox.run(&[
        "chart",
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-31",
        "--out",
        "stats.jpg",
    ]);
    jpg.assert_code(2);
    assert!(jpg.stderr.contains("stats.jpg"), "{}", jpg.stderr);
    let empty = sandbox.run(&[
        "chart",
        "--from",
        "2023-01-01",
        "--to",
        "2023-01-31",
        "--out",
        "empty.png",
    ]);
    empty.assert_code(2);
    assert!(
        empty.stderr.contains("nothing to chart"),
        "{}",
        empty.stderr
    );
    assert!(!sandbox.path().join("empty.png").exists());
    let backwards = sandbox.run(&[
        "chart",
        "--from",
        "2024-03-31",
        "--to",
        "2024-03-01",
        "--out",
        "x.png",
    ]);
    backwards.assert_code(2);
}

#[test]
fn check_config_accepts_a_good_file_and_names_every_problem_of_a_bad_one() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "good.toml",
        "[business]\ntimezone = \"Asia/Riyadh\"\ncutoff = \"23:00\"\n[fees.default]\npercent = \"2.5\"\nfixed = { USD = \"0.30\" }\n",
    );
    let good = sandbox.run(&["--config", "good.toml", "check-config"]);
    good.assert_ok();
    assert!(
        good.stdout.contains("Asia/Riyadh") && good.stdout.contains("23:00"),
        "{}",
        good.stdout
    );

    sandbox.write(
        "bad.toml",
        "[business]\ntimezone = \"Nowhere/City\"\ncutoff = \"00:00\"\n[fees.default]\npercent = 2.5\nfixed = { USD = \"0.301\" }\n",
    );
    let bad = sandbox.run(&["--config", "bad.toml", "check-config"]);
    bad.assert_code(2);
    for key in [
        "business.timezone",
        "business.cutoff",
        "fees.default.percent",
        "fees.default.fixed.USD",
    ] {
        assert!(bad.stderr.contains(key), "{key} not named:\n{}", bad.stderr);
    }
    let from_env = sandbox.run_with_env(&["check-config"], &[("SETTLE_BUSINESS__CUTOFF", "7pm")]);
    from_env.assert_code(2);
    assert!(
        from_env.stderr.contains("SETTLE_BUSINESS__CUTOFF"),
        "{}",
        from_env.stderr
    );
    let missing = sandbox.run(&["--config", "missing.toml", "check-config"]);
    missing.assert_code(2);
    assert!(
        missing.stderr.contains("missing.toml"),
        "{}",
        missing.stderr
    );
    // Every other command refuses to start on a bad configuration, too.
    sandbox
        .run(&["--config", "bad.toml", "history"])
        .assert_code(2);
}

#[test]
fn the_demo_settles_a_month_and_a_second_run_changes_nothing() {
    let sandbox = Sandbox::new();
    // As a new user runs it: no --data-dir, so the demo keeps its store in ./settle-demo/data.
    let demo = |sandbox: &Sandbox| {
        let output = std::process::Command::new(crate::support::settle_bin())
            .current_dir(sandbox.path())
            .env("USER", "tester")
            .env_remove("SETTLE_CONFIG")
            .env_remove("SETTLE_DATA_DIR")
            .arg("demo")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, first, stderr) = demo(&sandbox);
    assert_eq!(code, Some(0), "{first}\n{stderr}");
    assert!(first.contains("31 settled now"), "{first}");
    let out = sandbox.path().join("settle-demo");
    let csv_path = out.join("settlement-2026-10-31.csv");
    let first_csv = std::fs::read(&csv_path).unwrap();
    let rows = read_export(&String::from_utf8(first_csv.clone()).unwrap());
    assert!(
        rows.len() > 200,
        "several hundred merchants: {}",
        rows.len()
    );
    let currencies: std::collections::BTreeSet<_> =
        rows.iter().map(|r| r["currency"].clone()).collect();
    assert_eq!(currencies.len(), 3);
    assert!(std::fs::read(out.join("stats.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let stored: usize = first
        .lines()
        .find(|l| l.contains("generated transactions"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (45_000..=55_000).contains(&stored),
        "~50k transactions stored: {first}"
    );

    // The month's statements are written, imported and reconciled: every planted discrepancy
    // that must reach people is one open exception, and nothing else is.
    for name in [
        "provider-report-2026-10.csv",
        "payout-report-2026-10.csv",
        "bank-statement-2026-10.camt053.xml",
    ] {
        assert!(out.join(name).is_file(), "{name} written: {first}");
    }
    let bank = std::fs::read(out.join("bank-statement-2026-10.camt053.xml")).unwrap();
    crate::statements_xsd::validate(&bank, settle_statements::write::Camt053Version::V08)
        .expect("the demo's bank statement is valid camt.053.001.08");
    let planted: Vec<&str> = first
        .lines()
        .skip_while(|l| !l.contains("planted in the statements"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert_eq!(planted.len(), 6, "one of each kind planted: {first}");
    let must_be_exceptions = planted
        .iter()
        .filter(|l| l.contains(" exception, "))
        .count();
    assert_eq!(must_be_exceptions, 4, "{first}");
    let summary = |text: &str| {
        text.lines()
            .find(|l| l.contains("open exception(s);"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no exception summary: {text}"))
    };
    assert!(
        summary(&first).starts_with(&format!(
            "{must_be_exceptions} open exception(s); 1 item(s) expected later; 1 bank debit(s) matched to several payouts"
        )),
        "{first}"
    );
    assert!(
        first.contains("matched_with_difference (review)"),
        "{first}"
    );
    assert!(first.contains("duplicate (review)"), "{first}");

    let (code, second, stderr) = demo(&sandbox);
    assert_eq!(code, Some(0), "{second}\n{stderr}");
    assert!(second.contains(": 0 stored,"), "{second}");
    assert!(
        second.contains("0 settled now, 31 already settled"),
        "{second}"
    );
    assert_eq!(
        std::fs::read(&csv_path).unwrap(),
        first_csv,
        "the export is reproduced byte for byte"
    );
    assert_eq!(
        second.matches("nothing added").count(),
        9,
        "three statements per file, each already imported: {second}"
    );
    assert!(!second.contains("\nimported "), "{second}");
    assert_eq!(summary(&second), summary(&first));
}
