//! `settle export` (a revision's lines as RFC 4180 CSV, to a file or stdout) and `settle chart`
//! (daily gross, fees and net per currency over a date range, as PNG or SVG).

use std::io::Write;

use anyhow::{Context as _, Result};
use settle_core::chart::{render_daily_chart, ChartFormat, DailyPoint};
use settle_core::csv::write_settlement_csv;
use settle_core::model::SettlementStatus;

use crate::cli::{ChartArgs, ExportArgs};
use crate::context::Context;
use crate::exit::Exit;
use crate::files::write_atomically;

pub async fn export(context: Context, args: ExportArgs) -> Result<()> {
    let store = context.open_store().await?;
    let settlement = match args.revision {
        Some(revision) => store.settlement(args.date, Some(revision)).await?,
        None => latest_completed(&store, args.date).await?,
    }
    .ok_or_else(|| {
        Exit::bad_input(format!(
            "settlement {} has no completed revision to export",
            args.date
        ))
    })?;
    if settlement.status != SettlementStatus::Completed {
        return Err(Exit::bad_input(format!(
            "settlement {} revision {} is {}, not completed: nothing to export",
            settlement.settlement_date, settlement.revision, settlement.status
        )));
    }
    let lines = store
        .settlement_lines(settlement.settlement_date, settlement.revision)
        .await?;
    match &args.out {
        Some(path) => {
            write_atomically(path, |out| {
                write_settlement_csv(out, &settlement, &lines, args.bom)
            })?;
            eprintln!(
                "exported {} line(s) of {} revision {} to {}",
                lines.len(),
                settlement.settlement_date,
                settlement.revision,
                path.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            write_settlement_csv(&mut out, &settlement, &lines, args.bom)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The newest completed revision of a date, if any.
pub async fn latest_completed(
    store: &settle_core::store::SharedStore,
    date: chrono::NaiveDate,
) -> Result<Option<settle_core::model::Settlement>> {
    let revisions = store.settlement_revisions(date).await?;
    Ok(revisions
        .into_iter()
        .rev()
        .find(|s| s.status == SettlementStatus::Completed))
}

pub async fn chart(context: Context, args: ChartArgs) -> Result<()> {
    if args.from > args.to {
        return Err(Exit::bad_input(format!(
            "--from {} is after --to {}",
            args.from, args.to
        )));
    }
    let format = ChartFormat::from_path(&args.out).map_err(|e| Exit::bad_input(e.to_string()))?;
    let store = context.open_store().await?;
    let points = daily_points(&store, args.from, args.to).await?;
    if points.is_empty() {
        return Err(Exit::bad_input(format!(
            "no completed settlements between {} and {}: nothing to chart",
            args.from, args.to
        )));
    }
    let bytes = render_daily_chart(&points, format, args.width, args.height)
        .context("cannot draw the chart")?;
    write_atomically(&args.out, |out| out.write_all(&bytes))?;
    eprintln!(
        "wrote {} ({} day(s))",
        args.out.display(),
        count_days(&points)
    );
    Ok(())
}

fn count_days(points: &[DailyPoint]) -> usize {
    let mut days: Vec<_> = points.iter().map(|p| p.settlement_date).collect();
    days.dedup();
    days.len()
}

/// Daily totals per currency from the latest completed revision of each date in the range.
pub async fn daily_points(
    store: &settle_core::store::SharedStore,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<DailyPoint>> {
    Ok(settle_core::stats::daily_points(store.as_ref(), from, to).await?)
}
