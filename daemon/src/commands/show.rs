//! `settle show` (one revision: header, totals, lines, late transactions) and `settle history`
//! (settlements newest first, filtered by date range and status).

use anyhow::{Context as _, Result};
use settle_core::model::SettlementStatus;
use settle_core::store::HistoryFilter;

use crate::cli::{HistoryArgs, ShowArgs};
use crate::context::Context;
use crate::exit::Exit;
use crate::output;

pub async fn show(context: Context, args: ShowArgs) -> Result<()> {
    let store = context.open_store().await?;
    let settlement = store
        .settlement(args.date, args.revision)
        .await?
        .with_context(|| match args.revision {
            Some(revision) => format!("settlement {} has no revision {revision}", args.date),
            None => format!("settlement {} has not been run", args.date),
        })
        .map_err(|e| Exit::bad_input(format!("{e:#}")))?;
    print!("{}", output::settlement_header(&settlement));
    let revisions = store.settlement_revisions(args.date).await?;
    if revisions.len() > 1 {
        let list = revisions
            .iter()
            .map(|r| format!("{} ({})", r.revision, r.status))
            .collect::<Vec<_>>()
            .join(", ");
        println!("  revisions  {list}");
    }
    if settlement.status != SettlementStatus::Completed {
        return Ok(());
    }
    println!();
    if settlement.totals.is_empty() {
        println!("No transactions: settled with zero totals.");
        return Ok(());
    }
    println!("Totals per currency");
    println!("{}", output::totals_table(&settlement.totals));
    let lines = store
        .settlement_lines(args.date, settlement.revision)
        .await?;
    let shown = args.lines.unwrap_or(lines.len()).min(lines.len());
    println!("\nMerchant lines ({shown} of {})", lines.len());
    println!("{}", output::lines_table(&lines[..shown]));
    let payouts = store.payouts(args.date).await?;
    if !payouts.is_empty() {
        println!("\nPayouts ({})", payouts.len());
        println!("{}", output::payouts_table(&payouts));
    }
    let notifications = store.notifications(args.date).await?;
    if !notifications.is_empty() {
        println!("\nNotifications");
        println!("{}", output::notifications_table(&notifications));
    }
    let late = store.late_transactions(args.date).await?;
    if late.is_empty() {
        println!("\nNo late transactions.");
    } else {
        println!(
            "\nLate transactions ({}): arrived after their own date was settled",
            late.len()
        );
        println!("{}", output::late_table(&late));
    }
    Ok(())
}

pub async fn history(context: Context, args: HistoryArgs) -> Result<()> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<SettlementStatus>)
        .transpose()
        .map_err(Exit::bad_input)?;
    let store = context.open_store().await?;
    let filter = HistoryFilter {
        from: args.from,
        to: args.to,
        status,
        all_revisions: args.all_revisions,
        limit: args.limit,
        offset: 0,
    };
    let settlements = store.settlement_history(&filter).await?;
    if settlements.is_empty() {
        println!("no settlements match");
    } else {
        println!("{}", output::history_table(&settlements));
    }
    Ok(())
}
