//! Reconciliation end to end: the real `settle` binary settles two days through a real HTTP
//! provider on 127.0.0.1, then imports a camt.053 bank statement and a payout report written from
//! what it paid with known discrepancies, reconciles them, and works the exceptions — on SQLite
//! and on MongoDB.

use chrono::NaiveDate;
use settle_core::model::Payout;
use settle_core::money::Currency;
use settle_core::reconcile::{
    StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};
use settle_core::store::SharedStore;
use settle_statements::write::{camt053, payout_report, Camt053Version};

use crate::provider_server::ProviderServer;
use crate::support::{read_export, transactions_csv, Ran, Sandbox};
use settle_tests::mongo::FreshDatabase;

pub(crate) fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

struct World {
    sandbox: Sandbox,
    store_options: Vec<String>,
    _provider: ProviderServer,
}

impl World {
    fn settle_as(&self, user: &str, args: &[&str]) -> Ran {
        let mut full: Vec<&str> = vec!["--config", "settle.toml"];
        full.extend(self.store_options.iter().map(String::as_str));
        full.extend_from_slice(args);
        tokio::task::block_in_place(|| self.sandbox.run_with_env(&full, &[("USER", user)]))
    }

    fn settle(&self, args: &[&str]) -> Ran {
        self.settle_as("alice", args)
    }

    async fn store(&self, database: Option<&FreshDatabase>) -> SharedStore {
        match database {
            Some(database) => database.store().await,
            None => self.sandbox.store().await,
        }
    }
}

/// Two settled days: 2024-03-10 (three merchants) and 2024-03-11 (two), paid through the provider.
fn settled_world(database: Option<&FreshDatabase>) -> World {
    let provider = ProviderServer::start();
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        format!(
            "[fees.default]\npercent = \"2.5\"\n[payouts]\nprovider_url = \"{}\"\n",
            provider.base_url()
        ),
    );
    let world = World {
        sandbox,
        store_options: database.map(|d| d.options()).unwrap_or_default(),
        _provider: provider,
    };
    let file = world.sandbox.write(
        "days.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,50.00,USD,card,2024-03-10T11:00:00+03:00,",
            "p-3,m-3,payment,completed,30.00,USD,card,2024-03-10T12:00:00+03:00,",
            "p-4,m-1,payment,completed,40.00,USD,card,2024-03-11T10:00:00+03:00,",
            "p-5,m-4,payment,completed,25.00,USD,card,2024-03-11T11:00:00+03:00,",
        ]),
    );
    world
        .settle(&["import", file.to_str().unwrap()])
        .assert_ok();
    world.settle(&["run", "--date", "2024-03-10"]).assert_ok();
    world.settle(&["run", "--date", "2024-03-11"]).assert_ok();
    world
}

pub(crate) fn entry(
    amount_minor: i64,
    booked: &str,
    references: &[&str],
    external_id: &str,
) -> StatementEntry {
    StatementEntry {
        value_date: Some(day(booked)),
        references: references.iter().map(|r| r.to_string()).collect(),
        external_id: Some(external_id.into()),
        ..StatementEntry::new(amount_minor, usd(), day(booked))
    }
}

/// The bank statement: the 10th's payouts paid as one batched debit, the 11th's m-1 payout by
/// reference — and booked twice (a duplicate line) — m-4's payout missing, a bank fee and an
/// unexplained debit.
pub(crate) fn bank_statement(payouts_10: &[Payout], payouts_11: &[Payout]) -> Statement {
    let batch: i64 = payouts_10.iter().map(|p| p.amount_minor).sum();
    let m1 = payouts_11.iter().find(|p| p.merchant_id == "m-1").unwrap();
    let entries = vec![
        entry(-batch, "2024-03-11", &[], "BNK-1"),
        entry(-m1.amount_minor, "2024-03-12", &[&m1.reference], "BNK-2"),
        entry(-m1.amount_minor, "2024-03-12", &[&m1.reference], "BNK-2"),
        entry(-150, "2024-03-12", &["FEE"], "BNK-3"),
        entry(-25_000, "2024-03-14", &["UNKNOWN-DEBIT"], "BNK-4"),
    ];
    let total: i64 = entries.iter().map(|e| e.amount_minor).sum();
    Statement {
        identity: StatementIdentity {
            kind: StatementKind::Bank,
            account: "YE15CBYE0001000000123456789".into(),
            period_start: day("2024-03-10"),
            period_end: day("2024-03-31"),
            sequence: "1".into(),
        },
        format: StatementFormat::Camt053,
        currency: usd(),
        opening_balance: Some(StatedBalance {
            amount_minor: 1_000_000,
            date: day("2024-03-10"),
        }),
        closing_balance: Some(StatedBalance {
            amount_minor: 1_000_000 + total,
            date: day("2024-03-31"),
        }),
        entries,
    }
}

fn exceptions(world: &World) -> Vec<String> {
    let ran = world.settle(&["reconcile", "exceptions"]);
    ran.assert_ok();
    ran.stdout
        .lines()
        .filter(|l| l.starts_with('│') && (l.contains(" bank ") || l.contains(" payouts ")))
        .map(str::to_string)
        .collect()
}

async fn reconcile_a_month(database: Option<FreshDatabase>) {
    let world = settled_world(database.as_ref());
    let store = world.store(database.as_ref()).await;
    let payouts_10 = store.payouts(day("2024-03-10")).await.unwrap();
    let payouts_11 = store.payouts(day("2024-03-11")).await.unwrap();
    assert_eq!((payouts_10.len(), payouts_11.len()), (3, 2));

    // An unbalanced statement is refused, naming the figures, and nothing is stored.
    let mut broken = bank_statement(&payouts_10, &payouts_11);
    broken.closing_balance.as_mut().unwrap().amount_minor += 1;
    let file = world
        .sandbox
        .write("broken.xml", camt053(&[broken], Camt053Version::V02));
    let ran = world.settle(&[
        "reconcile",
        "import",
        file.to_str().unwrap(),
        "--kind",
        "bank",
    ]);
    ran.assert_code(2);
    assert!(ran.stderr.contains("does not balance"), "{}", ran.stderr);
    assert!(store.statements(None).await.unwrap().is_empty());

    let statement = bank_statement(&payouts_10, &payouts_11);
    let file = world
        .sandbox
        .write("bank.xml", camt053(&[statement], Camt053Version::V08));
    let import = [
        "reconcile",
        "import",
        file.to_str().unwrap(),
        "--kind",
        "bank",
    ];
    let ran = world.settle(&import);
    ran.assert_ok();
    assert!(ran.stdout.contains("imported bank statement of YE15CBYE0001000000123456789 2024-03-10 to 2024-03-31 (sequence 1): 5 entries"), "{}", ran.stdout);
    let again = world.settle(&import);
    again.assert_ok();
    assert!(
        again.stdout.contains("already imported"),
        "{}",
        again.stdout
    );
    assert_eq!(
        store
            .statement_entries(&settle_core::store::EntryFilter {
                kind: StatementKind::Bank,
                booked_from: None,
                booked_to: None
            })
            .await
            .unwrap()
            .len(),
        5
    );

    // The payout report: every payout, m-2's short by a provider fee of 0.75.
    let mut report_entries = Vec::new();
    for p in payouts_10.iter().chain(&payouts_11) {
        let short = if p.merchant_id == "m-2" { 75 } else { 0 };
        let mut e = entry(
            p.amount_minor - short,
            "2024-03-11",
            &[&p.reference],
            &format!("po-{}", p.reference),
        );
        e.booked_at = Some("2024-03-11T09:00:00Z".parse().unwrap());
        e.status = Some("paid".into());
        report_entries.push(e);
    }
    let report = Statement {
        entries: report_entries,
        opening_balance: None,
        closing_balance: None,
        ..bank_statement(&payouts_10, &payouts_11)
    };
    let file = world
        .sandbox
        .write("payouts.csv", payout_report(std::slice::from_ref(&report)));
    world
        .settle(&[
            "reconcile",
            "import",
            file.to_str().unwrap(),
            "--kind",
            "payouts",
        ])
        .assert_ok();

    let ran = world.settle(&["reconcile", "run"]);
    ran.assert_ok();
    assert!(
        ran.stdout
            .contains("bank: 2 matched (0 to review), 1 duplicate(s)"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("payouts: 5 matched (1 to review), 0 duplicate(s)"),
        "{}",
        ran.stdout
    );
    // Running again decides nothing new.
    let rerun = world.settle(&["reconcile", "run"]);
    assert!(
        rerun
            .stdout
            .contains("bank: 0 matched (0 to review), 0 duplicate(s)"),
        "{}",
        rerun.stdout
    );

    // Exactly the planted discrepancies are exceptions: m-4's missing payout, the duplicate line,
    // the fee, the unknown debit, and m-2's short payout.
    let open = exceptions(&world);
    let m4 = payouts_11.iter().find(|p| p.merchant_id == "m-4").unwrap();
    let m2 = payouts_10.iter().find(|p| p.merchant_id == "m-2").unwrap();
    assert_eq!(open.len(), 5, "{open:#?}");
    assert!(
        open.iter()
            .any(|l| l.contains(&m4.reference) && l.contains("unmatched")),
        "{open:#?}"
    );
    assert!(
        open.iter().any(|l| l.contains("duplicate (review)")),
        "{open:#?}"
    );
    assert!(
        open.iter().any(|l| l.contains(&m2.reference)
            && l.contains("matched_with_difference (review)")
            && l.contains("-0.75")),
        "{open:#?}"
    );

    // Work them: confirm the short payout and the duplicate, write off the fee, expect m-4's
    // payout; the large write-off waits for a second person.
    let items = store.decisions(&Default::default()).await.unwrap();
    let short = items
        .iter()
        .find(|d| d.ours.contains(&m2.reference) && d.kind == StatementKind::Payouts)
        .unwrap();
    world
        .settle(&[
            "reconcile",
            "confirm",
            &short.id,
            "--reason",
            "provider fee, per contract",
        ])
        .assert_ok();
    let duplicate = items
        .iter()
        .find(|d| d.action == settle_core::reconcile::DecisionAction::Duplicate)
        .unwrap();
    world
        .settle(&[
            "reconcile",
            "confirm",
            &duplicate.id,
            "--reason",
            "bank booked it twice; reversal asked",
        ])
        .assert_ok();
    let entries = store
        .statement_entries(&settle_core::store::EntryFilter {
            kind: StatementKind::Bank,
            booked_from: None,
            booked_to: None,
        })
        .await
        .unwrap();
    let fee = entries
        .iter()
        .find(|e| e.entry.references == ["FEE"])
        .unwrap();
    let unknown = entries
        .iter()
        .find(|e| e.entry.references == ["UNKNOWN-DEBIT"])
        .unwrap();
    world
        .settle(&[
            "reconcile",
            "write-off",
            "--kind",
            "bank",
            "--theirs",
            &fee.id,
            "--reason",
            "monthly fee",
            "--category",
            "bank_fee",
        ])
        .assert_ok();
    let ran = world.settle(&[
        "reconcile",
        "write-off",
        "--kind",
        "bank",
        "--theirs",
        &unknown.id,
        "--reason",
        "untraceable",
        "--category",
        "unrecoverable",
    ]);
    ran.assert_ok();
    assert!(ran.stdout.contains("waits for approval"), "{}", ran.stdout);
    let waiting = store
        .decisions(&settle_core::store::DecisionFilter {
            kind: None,
            states: vec![settle_core::reconcile::DecisionState::AwaitingApproval],
        })
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    world
        .settle(&["reconcile", "approve", &waiting[0].id])
        .assert_code(3);
    world
        .settle_as("bob", &["reconcile", "approve", &waiting[0].id])
        .assert_ok();
    world
        .settle_as("bob", &["reconcile", "approve", &waiting[0].id])
        .assert_code(3);
    world
        .settle(&[
            "reconcile",
            "expect",
            "--kind",
            "bank",
            "--ours",
            &m4.reference,
            "--until",
            "2099-01-01",
            "--reason",
            "paid late by the bank",
        ])
        .assert_ok();
    // A bad write-off: an unknown item, and a category that does not exist.
    world
        .settle(&[
            "reconcile",
            "write-off",
            "--kind",
            "bank",
            "--theirs",
            "nope",
            "--reason",
            "x",
            "--category",
            "other",
        ])
        .assert_code(2);
    world
        .settle(&[
            "reconcile",
            "write-off",
            "--kind",
            "bank",
            "--theirs",
            &fee.id,
            "--reason",
            "x",
            "--category",
            "misc",
        ])
        .assert_code(2);
    let ran = world.settle(&["reconcile", "exceptions"]);
    assert!(ran.stdout.contains("no open exceptions"), "{}", ran.stdout);

    // The confirmed short payout becomes a credit to m-2 through the payment service: once, never
    // more than the difference, and only from a decision in force.
    let confirmed = format!("{}-confirmed", short.id);
    let adjust = |decision: &str, amount: &str, extra: &[&str]| {
        let mut args = vec![
            "reconcile",
            "adjust",
            decision,
            "--amount",
            amount,
            "--reason",
            "the provider's fee is ours to bear",
        ];
        args.extend_from_slice(extra);
        world.settle(&args)
    };
    let ran = adjust(&confirmed, "0.76", &[]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("more than the decision's 0.75"),
        "{}",
        ran.stderr
    );
    let ran = adjust(&short.id, "0.75", &[]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("only a write-off in force"),
        "{}",
        ran.stderr
    );
    let ran = adjust(&waiting[0].id, "-1.00", &[]);
    ran.assert_code(2);
    assert!(ran.stderr.contains("give the merchant"), "{}", ran.stderr);
    // A write-off of no merchant's record goes to the merchant named, once: naming another
    // merchant afterwards is refused, naming the first one again adds nothing.
    adjust(&waiting[0].id, "-1.00", &["--merchant", "m-1"]).assert_ok();
    let ran = adjust(&waiting[0].id, "-1.00", &["--merchant", "m-3"]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("already has its adjustment") && ran.stderr.contains("merchant m-1"),
        "{}",
        ran.stderr
    );
    let ran = adjust(&waiting[0].id, "-1.00", &["--merchant", "m-1"]);
    ran.assert_ok();
    assert!(ran.stdout.contains("nothing added"), "{}", ran.stdout);
    adjust(&confirmed, "0.75", &["--merchant", "m-1"]).assert_code(2);
    let ran = adjust(&confirmed, "0.75", &[]);
    ran.assert_ok();
    assert!(ran.stdout.contains("recorded adjustment"), "{}", ran.stdout);
    let ran = adjust(&confirmed, "0.75", &[]);
    ran.assert_ok();
    assert!(ran.stdout.contains("nothing added"), "{}", ran.stdout);
    let ran = adjust(&confirmed, "0.50", &[]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("already has its adjustment"),
        "{}",
        ran.stderr
    );
    let adjustments = store
        .transactions_by_ref(vec![(
            "m-2".to_string(),
            settle_core::reconcile::adjustment::adjustment_reference(&confirmed),
        )])
        .await
        .unwrap();
    assert_eq!(adjustments.len(), 1, "one adjustment for the decision");
    let adjustment = &adjustments[0];
    assert_eq!(
        adjustment.kind,
        settle_core::model::TransactionKind::Adjustment
    );
    assert_eq!((adjustment.amount_minor, adjustment.currency), (75, usd()));
    // It lands on the open business date: the next settlement collects it.
    let today = settle_core::calendar::BusinessCalendar::default()
        .date_of(chrono::Utc::now())
        .unwrap();
    assert!(adjustment.settlement_date >= today, "{adjustment:?}");

    // The report: per date, kind and currency, Excel-safe, exact decimals.
    world
        .settle(&[
            "reconcile",
            "report",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
            "--out",
            "report.csv",
        ])
        .assert_ok();
    let text = std::fs::read_to_string(world.sandbox.path().join("report.csv")).unwrap();
    let rows = read_export(&text);
    let bank_14 = rows
        .iter()
        .find(|r| r["business_date"] == "2024-03-14" && r["kind"] == "bank")
        .unwrap();
    assert_eq!(bank_14["written_off_count"], "1");
    assert_eq!(bank_14["written_off_amount"], "-250.00");
    let payouts_11_row = rows
        .iter()
        .find(|r| r["business_date"] == "2024-03-11" && r["kind"] == "payouts")
        .unwrap();
    assert_eq!(payouts_11_row["with_difference_count"], "1");
    assert_eq!(payouts_11_row["difference_amount"], "-0.75");
    assert_eq!(payouts_11_row["matched_count"], "4");

    // Every decision is audited.
    let audit = store.audit_events(1_000, 0).await.unwrap();
    for action in [
        "reconciliation.import",
        "reconciliation.run",
        "reconciliation.confirm",
        "reconciliation.write_off",
        "reconciliation.write_off_approved",
        "reconciliation.expect",
        "reconciliation.adjustment",
        "payments.record_adjustment",
    ] {
        assert!(
            audit.iter().any(|e| e.action == action),
            "no {action} event"
        );
    }
    assert!(audit
        .iter()
        .any(|e| e.action == "reconciliation.write_off_approved"
            && e.actor == "cli:alice"
            && e.outcome == "refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_reconciled_to_its_planted_exceptions_on_sqlite() {
    reconcile_a_month(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_reconciled_to_its_planted_exceptions_on_mongodb() {
    reconcile_a_month(Some(FreshDatabase::new())).await;
}

#[test]
fn a_bank_csv_is_imported_by_its_configured_profile_and_other_formats_are_detected() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[reconciliation.profiles.bank-x]\naccount = \"DE89370400440532013000\"\ncurrency = \"EUR\"\n\
         delimiter = \";\"\ndate_column = \"Buchungstag\"\ndate_format = \"%d.%m.%Y\"\n\
         debit_column = \"Soll\"\ncredit_column = \"Haben\"\ndecimal_separator = \",\"\n\
         reference_columns = [\"Verwendungszweck\"]\n",
    );
    let file = sandbox.write(
        "bank.csv",
        "Buchungstag;Verwendungszweck;Soll;Haben\n02.10.2026;2026-10-01.EUR.r1.m-1;97,50;\n05.10.2026;;;20,00\n",
    );
    let path = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut full = vec!["--config", "settle.toml"];
        full.extend_from_slice(args);
        sandbox.run(&full)
    };
    let ran = run(&[
        "reconcile",
        "import",
        path,
        "--kind",
        "bank",
        "--profile",
        "bank-x",
    ]);
    ran.assert_ok();
    assert!(
        ran.stdout.contains("2026-10-02 to 2026-10-05") && ran.stdout.contains(": 2 entries"),
        "{}",
        ran.stdout
    );
    // An unknown profile is named with the configured ones; a CSV without a profile is refused.
    let ran = run(&[
        "reconcile",
        "import",
        path,
        "--kind",
        "bank",
        "--profile",
        "bank-y",
    ]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("no CSV profile \"bank-y\"") && ran.stderr.contains("bank-x"),
        "{}",
        ran.stderr
    );
    run(&["reconcile", "import", path, "--kind", "bank"]).assert_code(2);
    // A bad line is named, and nothing of the file is kept.
    let bad = sandbox.write(
        "bad.csv",
        "Buchungstag;Verwendungszweck;Soll;Haben\n02.10.2026;x;97,5x;\n",
    );
    let ran = run(&[
        "reconcile",
        "import",
        bad.to_str().unwrap(),
        "--kind",
        "bank",
        "--profile",
        "bank-x",
    ]);
    ran.assert_code(2);
    assert!(ran.stderr.contains("line 2, field Soll"), "{}", ran.stderr);

    // MT940 and OFX are recognised by their content.
    let mt940 = sandbox.write(
        "bank.sta",
        ":20:S1\r\n:25:ACC-9\r\n:28C:1/1\r\n:60F:C261001EUR0,\r\n:61:2610021002D5,00NTRFNONREF//B1\r\n:62F:D261002EUR5,00\r\n-\r\n",
    );
    let ran = run(&[
        "reconcile",
        "import",
        mt940.to_str().unwrap(),
        "--kind",
        "bank",
    ]);
    ran.assert_ok();
    assert!(
        ran.stdout.contains("imported bank statement of ACC-9"),
        "{}",
        ran.stdout
    );
    let not_a_statement = sandbox.write("notes.txt", "hello");
    let ran = run(&[
        "reconcile",
        "import",
        not_a_statement.to_str().unwrap(),
        "--kind",
        "bank",
    ]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("not camt.053, MT940 or OFX"),
        "{}",
        ran.stderr
    );
}

/// A statement spanning more than a reconciliation reads (a typo'd year, a file of decades) is
/// refused by the run with both dates and the limit named, not failed as a store error.
#[test]
fn a_statement_spanning_too_many_days_is_refused_by_the_run() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "provider.csv",
        "reference,amount,currency,fee,status,booked_at\n\
         p-1,10.00,USD,0.15,captured,2023-01-05T10:00:00Z\n\
         p-2,12.00,USD,0.18,captured,2024-06-01T10:00:00Z\n",
    );
    sandbox
        .run(&[
            "reconcile",
            "import",
            file.to_str().unwrap(),
            "--kind",
            "provider",
        ])
        .assert_ok();
    let ran = sandbox.run(&["reconcile", "run"]);
    ran.assert_code(2);
    assert!(
        ran.stderr.contains("at most 400 days")
            && ran.stderr.contains("2023-01-05")
            && ran.stderr.contains("2024-06-01"),
        "{}",
        ran.stderr
    );
}
