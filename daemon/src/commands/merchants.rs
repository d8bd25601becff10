//! `settle merchant hold | release | list` (payout holds, audited, and the amounts merchants owe that
//! are carried forward) and `settle payouts check` (sent payouts confirmed at the provider, and
//! failed ones rechecked).

use anyhow::Result;
use serde_json::json;
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome};
use settle_core::store::MerchantHold;

use crate::cli::MerchantCommand;
use crate::context::Context;
use crate::exit::Exit;
use crate::output;

pub async fn run(context: Context, command: MerchantCommand) -> Result<()> {
    let store = context.open_store().await?;
    let now = context.clock.now();
    match command {
        MerchantCommand::Hold {
            merchant_id,
            reason,
        } => {
            settle_core::model::validate_merchant_id(&merchant_id)
                .map_err(|e| Exit::bad_input(e.to_string()))?;
            if reason.trim().is_empty() {
                return Err(Exit::bad_input("a hold needs a reason"));
            }
            let hold = MerchantHold {
                merchant_id: merchant_id.clone(),
                reason: reason.clone(),
                held_by: context.actor.clone(),
                held_at: now,
            };
            let held = store.hold_merchant(&hold).await?;
            audit(
                &context,
                &store,
                AuditAction::MerchantHold,
                &merchant_id,
                json!({ "reason": reason, "held_payouts": held }),
            )
            .await?;
            println!("merchant {merchant_id} is on hold: {held} pending payout(s) now wait");
        }
        MerchantCommand::Release { merchant_id } => {
            let Some(released) = store.release_merchant(&merchant_id, now).await? else {
                return Err(Exit::bad_input(format!(
                    "merchant {merchant_id} is not on hold"
                )));
            };
            audit(
                &context,
                &store,
                AuditAction::MerchantRelease,
                &merchant_id,
                json!({ "released_payouts": released }),
            )
            .await?;
            println!("merchant {merchant_id} released: {released} payout(s) to send");
            match context.payout_sender(store.clone())? {
                Some(sender) => {
                    let report = sender
                        .send_awaiting(None, Some(merchant_id.clone()), None)
                        .await?;
                    println!(
                        "sent: {} settled, {} rejected, {} still unsettled",
                        report.settled,
                        report.rejected,
                        report.unsettled.len()
                    );
                    if let Some((reference, error)) = report.unsettled.first() {
                        return Err(anyhow::anyhow!(
                            "{} payout(s) not confirmed sent (first: {reference}: {error}); `settle retry` of their date resends them",
                            report.unsettled.len()
                        ));
                    }
                }
                None => println!(
                    "no payout provider is configured ([payouts] provider_url): nothing sent"
                ),
            }
        }
        MerchantCommand::List => {
            let holds = store.merchant_holds().await?;
            if holds.is_empty() {
                println!("no merchant is on hold");
            } else {
                println!("{}", output::holds_table(&holds));
            }
            let owed = store.carry_forwards(true).await?;
            if owed.is_empty() {
                println!("no amounts carried forward");
            } else {
                println!("Amounts owed, deducted from the next payout");
                println!("{}", output::carry_forwards_table(&owed));
            }
        }
    }
    Ok(())
}

/// `settle payouts check [--date D]`.
pub async fn check_payouts(context: Context, command: crate::cli::PayoutsCommand) -> Result<()> {
    let crate::cli::PayoutsCommand::Check(args) = command;
    let store = context.open_store().await?;
    let Some(sender) = context.payout_sender(store.clone())? else {
        return Err(Exit::bad_input(
            "no payout provider is configured ([payouts] provider_url)",
        ));
    };
    let report = sender.check(args.date, &context.actor).await?;
    let changed = report.changed.len() + report.recovered.len();
    match args.date {
        Some(date) => println!("{changed} payout(s) of {date} changed status"),
        None => println!("{changed} payout(s) changed status"),
    }
    for change in &report.changed {
        println!("{}: {} -> {}", change.reference, change.from, change.to);
    }
    for change in &report.recovered {
        println!(
            "{}: {} -> {} (the provider reports it paid or accepted after all; a rerun of its \
             date deducts anything paid twice)",
            change.reference, change.from, change.to
        );
    }
    for (reference, error) in &report.errors {
        println!("{reference}: not looked up: {error}");
    }
    if let Some(date) = args.date {
        let payouts = store.payouts(date).await?;
        if !payouts.is_empty() {
            println!("{}", output::payouts_table(&payouts));
        }
    }
    Ok(())
}

async fn audit(
    context: &Context,
    store: &settle_core::store::SharedStore,
    action: AuditAction,
    merchant_id: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        action,
        format!("merchant_id={merchant_id}"),
        AuditOutcome::Succeeded,
        detail,
    );
    store.record_audit(&event).await?;
    Ok(())
}
