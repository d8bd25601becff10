//! `settle run | rerun | retry`: one settlement date through core's settlement commands, with the result
//! printed as day totals. Refusals (already settled, already running, still open, a rerun that
//! needs approval) exit with 3.

use std::sync::Arc;

use anyhow::Result;
use chrono::NaiveDate;
use settle_core::settlement::{
    ClaimedRun, RerunApprovalError, RerunAsk, RerunOutcome, RerunPath, RunOutcome,
    SettlementCommands,
};

use crate::cli::RerunArgs;
use crate::context::Context;
use crate::exit::{self, Exit};
use crate::output;

pub async fn run(context: Context, date: NaiveDate) -> Result<()> {
    let commands = commands(&context).await?;
    let claimed = commands.trigger(date, &context.actor).await?;
    settle(&context, &commands, claimed).await
}

pub async fn retry(context: Context, date: NaiveDate) -> Result<()> {
    let commands = commands(&context).await?;
    let claimed = commands.retry(date, &context.actor).await?;
    settle(&context, &commands, claimed).await
}

/// A rerun under the four-eyes rule: refused while reruns need approval, unless
/// `--without-approval` (audited).
pub async fn rerun(context: Context, args: RerunArgs) -> Result<()> {
    let commands = commands(&context).await?;
    let ask = RerunAsk {
        reason: args.reason,
        apply_current_fees: args.apply_current_fees,
    };
    let path = RerunPath::Direct {
        without_approval: args.without_approval,
    };
    let asked = commands
        .rerun(args.date, ask, &context.actor, path)
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
    match asked {
        RerunOutcome::Claimed(claimed) => settle(&context, &commands, *claimed).await,
        RerunOutcome::Requested(request) => anyhow::bail!(
            "rerun request {} was recorded instead of a run: another operator approves it",
            request.id
        ),
    }
}

/// The settlement commands over the configured store and a runner that pays out and notifies.
async fn commands(context: &Context) -> Result<SettlementCommands> {
    let store = context.open_store().await?;
    let runner = Arc::new(context.runner(store.clone())?);
    Ok(context.settlement_commands(store, runner))
}

async fn settle(
    context: &Context,
    commands: &SettlementCommands,
    claimed: ClaimedRun,
) -> Result<()> {
    let outcome = commands.settle(claimed, &context.actor).await?;
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
