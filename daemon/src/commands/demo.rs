//! `settle demo`: a reproducible month of marketplace transactions, every day settled and paid out
//! through a loopback sandbox provider, a summary table, the last day's CSV export, a PNG chart, and
//! the month's statements reconciled with their planted discrepancies. Running it again changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{bail, Result};
use chrono::{Days, NaiveDate};
use settle_core::chart::{render_daily_chart, ChartFormat};
use settle_core::config::StoreKind;
use settle_core::csv::write_settlement_csv;
use settle_core::demo::{generate, DemoSpec};
use settle_core::ingest;
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome, RunTrigger, SettlementFigures};
use settle_core::money::Currency;
use settle_core::settlement::{RunError, RunRequest};
use settle_core::store::StoreError;

use settle_core::payout::PayoutSender;
use settle_core::provider::{PayoutProvider, ProviderSettings};

use super::sandbox_provider::SandboxProvider;
use crate::cli::DemoArgs;
use crate::context::Context;
use crate::output;
use crate::progress;

/// Transactions stored per batch (one database transaction each).
const INSERT_BATCH: usize = 5_000;

/// `explicit_data_dir`: the user named a data directory (option, environment or file).
pub async fn run(context: Context, explicit_data_dir: bool, args: DemoArgs) -> Result<()> {
    // The demo keeps its fake money out of the real store unless a data directory is given.
    let explicit_data_dir = explicit_data_dir || context.settings.data_dir.is_some();
    let context = if explicit_data_dir {
        context
    } else {
        let data_dir = args.out_dir.join("data");
        context.with_data_dir(data_dir)
    };
    let spec = DemoSpec::standard();
    let last_date = spec.first_date + Days::new(u64::from(spec.days) - 1);
    let now = context.clock.now();
    if let Err(error) = context.settings.calendar.ensure_settleable(last_date, now) {
        bail!("the demo month ends on {last_date}, which cannot be settled yet: {error}");
    }
    let store = context.open_store().await?;
    println!(
        "Settle demo: {} to {last_date}, store {}",
        spec.first_date,
        context.store_description()
    );

    let transactions = generate(&spec, &context.settings.calendar);
    let total = transactions.len();
    let bar = progress::steps(total as u64, "storing");
    let (mut inserted, mut duplicates) = (0_u64, 0_u64);
    let mut remaining = transactions.into_iter();
    loop {
        let batch: Vec<_> = remaining.by_ref().take(INSERT_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        let size = batch.len() as u64;
        let outcome =
            ingest::record(store.as_ref(), &context.settings.calendar, batch, now).await?;
        if let Some(conflict) = outcome.conflicts.first() {
            bail!(
                "the store already holds merchant {} reference {:?} with other content; run the demo on an empty --data-dir",
                conflict.existing.merchant_id,
                conflict.existing.external_ref
            );
        }
        inserted += outcome.inserted;
        duplicates += outcome.duplicates;
        bar.inc(size);
    }
    bar.finish_and_clear();
    println!("  {total} generated transactions: {inserted} stored, {duplicates} already present");

    // Demo money is not real: payouts go to a sandbox on loopback, never to the configured
    // provider, and nobody is notified, whatever the configuration says.
    let sandbox = SandboxProvider::start().await?;
    let provider = PayoutProvider::new(ProviderSettings {
        base_url: sandbox.base_url().to_string(),
        token: None,
        policy: context.settings.retry.payment.clone(),
    })
    .map_err(|e| anyhow::anyhow!("the demo's sandbox provider: {e}"))?;
    let sender = PayoutSender::new(
        store.clone(),
        Arc::new(provider),
        Arc::clone(&context.clock),
    );
    let runner = context
        .runner_without_payouts(store.clone())
        .with_payouts(sender);
    let bar = progress::steps(u64::from(spec.days), "settling");
    let (mut settled, mut already) = (0, 0);
    let mut date = spec.first_date;
    while date <= last_date {
        match runner
            .execute(date, RunRequest::Run, &context.actor, RunTrigger::Manual)
            .await
        {
            Ok(_) => settled += 1,
            Err(RunError::Refused(StoreError::AlreadySettled { .. })) => already += 1,
            Err(error) => return Err(error.into()),
        }
        bar.inc(1);
        date = date + Days::new(1);
    }
    bar.finish_and_clear();
    println!(
        "  {} days: {settled} settled now, {already} already settled\n",
        spec.days
    );

    let points = super::export::daily_points(&store, spec.first_date, last_date).await?;
    print_month_summary(&store, spec.first_date, last_date).await?;

    std::fs::create_dir_all(&args.out_dir)?;
    let last = super::export::latest_completed(&store, last_date)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{last_date} has no completed settlement"))?;
    let lines = store.settlement_lines(last_date, last.revision).await?;
    let csv_path = args.out_dir.join(format!("settlement-{last_date}.csv"));
    crate::files::write_atomically(&csv_path, |out| {
        write_settlement_csv(out, &last, &lines, false)
    })?;
    let chart_path = args.out_dir.join("stats.png");
    let png = render_daily_chart(&points, ChartFormat::Png, 1200, 900)?;
    crate::files::write_atomically(&chart_path, |out| out.write_all(&png))?;
    println!(
        "\nwrote {} ({} merchant lines)",
        csv_path.display(),
        lines.len()
    );
    println!("wrote {}", chart_path.display());
    super::demo_reconcile::run(&context, &store, spec.first_date, last_date, &args.out_dir).await?;
    let options = match context.settings.store.kind {
        StoreKind::Sqlite => format!("--data-dir {} ", context.data_dir.display()),
        StoreKind::Mongodb => String::new(),
    };
    println!("\nexplore: settle {options}show --date {last_date}");
    println!("work the exceptions: settle {options}reconcile exceptions");
    if context.settings.store.kind == StoreKind::Mongodb {
        println!("(with the same store options as this demo)");
    }

    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        AuditAction::DemoRun,
        format!("from={} to={last_date}", spec.first_date),
        AuditOutcome::Succeeded,
        serde_json::json!({ "inserted": inserted, "duplicates": duplicates, "settled": settled }),
    );
    store.record_audit(&event).await?;
    Ok(())
}

/// Sums the month per currency from the stored day totals and prints one table; the merchant
/// count is the number of distinct merchants with a line in that currency during the month.
async fn print_month_summary(
    store: &settle_core::store::SharedStore,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<()> {
    let mut month: BTreeMap<Currency, (BTreeSet<String>, SettlementFigures)> = BTreeMap::new();
    let mut date = from;
    while date <= to {
        if let Some(settlement) = super::export::latest_completed(store, date).await? {
            for total in &settlement.totals {
                let entry = month.entry(total.currency).or_default();
                entry.1.accumulate(&total.figures, total.currency)?;
            }
            for line in store.settlement_lines(date, settlement.revision).await? {
                month
                    .entry(line.currency)
                    .or_default()
                    .0
                    .insert(line.merchant_id);
            }
        }
        date = date + Days::new(1);
    }
    let totals: Vec<_> = month
        .into_iter()
        .map(
            |(currency, (merchants, figures))| settle_core::model::CurrencyTotals {
                currency,
                merchant_count: merchants.len() as u64,
                figures,
            },
        )
        .collect();
    println!("Month {from} to {to}, per currency");
    println!("{}", output::totals_table(&totals));
    Ok(())
}
