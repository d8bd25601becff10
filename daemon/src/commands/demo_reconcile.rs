//! The demo's reconciliation: writes the month's transaction report, payout report and camt.053
//! bank statement with one discrepancy of each kind planted, imports and reconciles them, and
//! prints the exceptions left for people. Running it again imports nothing new.

use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::{Days, NaiveDate};
use settle_core::model::Transaction;
use settle_core::reconcile::records::date_transactions;
use settle_core::reconcile::simulated::{demo_plants, month_statements, SimulatedStatements};
use settle_core::reconcile::{ImportFile, ItemSide, ItemStatus, StatementFormat, StatementKind};
use settle_core::store::SharedStore;

use super::reconcile::{items_table, print_exception_summary, print_import_report};
use crate::context::Context;

/// Writes, imports and reconciles the statements of `first..=last` into `out_dir`.
pub async fn run(
    context: &Context,
    store: &SharedStore,
    first: NaiveDate,
    last: NaiveDate,
    out_dir: &Path,
) -> Result<()> {
    let (payouts, transactions) = month_records(store, first, last).await?;
    let calendar = context.settings.calendar;
    let simulated = month_statements(
        &payouts,
        &transactions,
        |at| calendar.date_of(at).unwrap_or_else(|_| at.date_naive()),
        first,
        last,
        &demo_plants(),
    );
    let month = first.format("%Y-%m");
    let files = [
        (
            StatementKind::Provider,
            format!("provider-report-{month}.csv"),
            simulated.provider_csv(),
        ),
        (
            StatementKind::Payouts,
            format!("payout-report-{month}.csv"),
            simulated.payouts_csv(),
        ),
        (
            StatementKind::Bank,
            format!("bank-statement-{month}.camt053.xml"),
            simulated.bank_camt053(),
        ),
    ];
    let service = context.reconciliation_service(store.clone());
    let actor = context.actor.as_str();
    println!("\nReconciliation of {first} to {last}");
    for (kind, name, text) in files {
        let path = out_dir.join(&name);
        crate::files::write_atomically(&path, |out| out.write_all(text.as_bytes()))?;
        let file = ImportFile {
            kind,
            bytes: text.into_bytes(),
            format: (kind == StatementKind::Bank).then_some(StatementFormat::Camt053),
            profile: None,
        };
        let report = service
            .import_file(file, actor)
            .await
            .with_context(|| format!("{} was not imported", path.display()))?;
        println!("wrote {}", path.display());
        print_import_report(&report);
    }
    let report = service.run(None, None, actor).await?;
    for run in &report.kinds {
        println!(
            "  {}: {} matched now ({} to review), {} duplicate(s)",
            run.kind, run.matches, run.matches_to_review, run.duplicates
        );
    }
    print_planted(&simulated);
    let mut expected = 0;
    let mut grouped = 0;
    for kind in StatementKind::ALL {
        for item in service.items(*kind).await? {
            expected += u32::from(item.item.status == ItemStatus::Expected);
            grouped += u32::from(
                item.item.rule.as_deref() == Some("group") && item.item.side == ItemSide::Theirs,
            );
        }
    }
    let exceptions = service.exceptions(None, None).await?;
    println!(
        "\n{} open exception(s); {expected} item(s) expected later; {grouped} bank debit(s) matched to several payouts",
        exceptions.len()
    );
    if !exceptions.is_empty() {
        println!("{}", items_table(&exceptions));
    }
    print_exception_summary(&exceptions);
    Ok(())
}

fn print_planted(simulated: &SimulatedStatements) {
    println!("  planted in the statements:");
    for p in &simulated.planted {
        let effect = if p.exceptions.is_empty() {
            "no exception expected".to_string()
        } else {
            p.exceptions
                .iter()
                .map(|e| format!("{} exception, {} side", e.kind, e.side))
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!("    {}: {} ({effect})", p.discrepancy.label(), p.target);
    }
    for p in &simulated.skipped {
        println!(
            "    {}: no eligible record this month, not planted",
            p.discrepancy.label()
        );
    }
}

/// The month's payouts and transactions, as stored.
async fn month_records(
    store: &SharedStore,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<(Vec<settle_core::model::Payout>, Vec<Transaction>)> {
    let mut payouts = Vec::new();
    let mut transactions = Vec::new();
    let mut date = first;
    while date <= last {
        payouts.extend(store.payouts(date).await?);
        transactions.extend(date_transactions(store, date).await?);
        date = date + Days::new(1);
    }
    Ok((payouts, transactions))
}
