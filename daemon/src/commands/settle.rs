//! `settle run | rerun | retry`: one settlement date through the runner's claim, with the result
//! printed as day totals. Refusals (already settled, already running, still open) exit with 3.

use anyhow::Result;
use chrono::NaiveDate;
use settle_core::model::RunTrigger;
use settle_core::settlement::{RunOutcome, RunRequest};

use crate::cli::RerunArgs;
use crate::context::Context;
use crate::output;

pub async fn run(context: Context, date: NaiveDate) -> Result<()> {
    execute(context, date, RunRequest::Run).await
}

pub async fn rerun(context: Context, args: RerunArgs) -> Result<()> {
    let request = RunRequest::Rerun {
        reason: args.reason,
        apply_current_fees: args.apply_current_fees,
    };
    execute(context, args.date, request).await
}

pub async fn retry(context: Context, date: NaiveDate) -> Result<()> {
    execute(context, date, RunRequest::Retry).await
}

async fn execute(context: Context, date: NaiveDate, request: RunRequest) -> Result<()> {
    let store = context.open_store().await?;
    let runner = context.runner(store)?;
    let outcome = runner
        .execute(date, request, &context.actor, RunTrigger::Manual)
        .await?;
    print_outcome(&outcome);
    Ok(())
}

fn print_outcome(outcome: &RunOutcome) {
    let s = &outcome.settlement;
    println!(
        "settled {} revision {}{}: {} merchant line(s)",
        s.settlement_date,
        s.revision,
        if outcome.resumed { " (resumed)" } else { "" },
        outcome.line_count
    );
    if s.totals.is_empty() {
        println!("no transactions on this date: settled with zero totals");
    } else {
        println!("{}", output::totals_table(&s.totals));
    }
}
