//! `settle run | rerun | retry`: one settlement date through the runner's claim, with the result
//! printed as day totals. Refusals (already settled, already running, still open, a rerun that
//! needs approval) exit with 3.

use std::sync::Arc;

use anyhow::Result;
use chrono::NaiveDate;
use settle_core::model::RunTrigger;
use settle_core::settlement::{
    RerunApprovalError, RerunApprovals, RerunAsk, RunOutcome, RunRequest,
};

use crate::cli::RerunArgs;
use crate::context::Context;
use crate::exit::{self, Exit};
use crate::output;

pub async fn run(context: Context, date: NaiveDate) -> Result<()> {
    execute(context, date, RunRequest::Run).await
}

/// A rerun under the four-eyes rule of `RerunApprovals`: refused while reruns need approval,
/// unless `--without-approval` (audited).
pub async fn rerun(context: Context, args: RerunArgs) -> Result<()> {
    let store = context.open_store().await?;
    let runner = Arc::new(context.runner(store.clone())?);
    let approvals = RerunApprovals::new(
        store,
        Arc::clone(&runner),
        Arc::clone(&context.clock),
        context.settings.server.require_rerun_approval,
    );
    let ask = RerunAsk {
        reason: args.reason,
        apply_current_fees: args.apply_current_fees,
    };
    let claimed = approvals
        .claim_direct(args.date, ask, &context.actor, args.without_approval)
        .await
        .map_err(|error| match error {
            RerunApprovalError::Run(run) => anyhow::Error::from(run),
            RerunApprovalError::Store(store) => anyhow::Error::from(store),
            refused => Exit {
                code: exit::REFUSED,
                message: refused.to_string(),
            }
            .into(),
        })?;
    let outcome = runner
        .settle(
            claimed.settlement,
            &claimed.run,
            &context.actor,
            RunTrigger::Manual,
        )
        .await?;
    print_outcome(&outcome);
    Ok(())
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
