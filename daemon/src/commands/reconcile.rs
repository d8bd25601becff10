//! `settle reconcile …`: import statements, run the rules, show a date, list exceptions, record
//! people's decisions and write the report — each through the core's reconciliation service.

use anyhow::{Context as _, Result};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use settle_core::reconcile::report::{report_rows, write_report_csv};
use settle_core::reconcile::{
    AdjustOutcome, AdjustRequest, Decision, DecisionState, ExpectRequest, ImportFile, ImportReport,
    ItemSide, KindItem, ReconciliationService, StatementKind, WriteOffRequest,
};
use settle_core::store::ImportOutcome;

use crate::cli::{ReconcileCommand, ReconcileImportArgs};
use crate::context::Context;
use crate::exit::Exit;
use crate::output::amount;

/// The largest statement file the CLI reads (a month of a busy account is a few MiB).
pub const MAX_STATEMENT_FILE_BYTES: u64 = 512 * 1024 * 1024;

pub async fn run(context: Context, command: ReconcileCommand) -> Result<()> {
    let store = context.open_store().await?;
    let service_store = store.clone();
    let service = context.reconciliation_service(store);
    let actor = context.actor.as_str();
    match command {
        ReconcileCommand::Import(args) => import(&service, args, actor).await?,
        ReconcileCommand::Run { kind, date } => {
            let report = service.run(kind, date, actor).await?;
            if report.kinds.is_empty() {
                println!("no statements imported yet: nothing to reconcile");
            }
            for run in &report.kinds {
                println!(
                    "{}: {} matched ({} to review), {} duplicate(s){}",
                    run.kind,
                    run.matches,
                    run.matches_to_review,
                    run.duplicates,
                    if run.skipped > 0 {
                        format!(", {} decided meanwhile by someone else", run.skipped)
                    } else {
                        String::new()
                    }
                );
            }
            print_exception_summary(&service.exceptions(kind, None).await?);
        }
        ReconcileCommand::Show { date, kind } => {
            let mut items = Vec::new();
            for kind in kinds(kind) {
                items.extend(service.items(kind).await?);
            }
            items.retain(|i| i.item.date == date);
            if items.is_empty() {
                println!("no reconciliation items on {date}");
            } else {
                println!("{}", items_table(&items));
                let rows = report_rows(&items, date, date);
                for ((_, kind, currency), row) in rows {
                    println!(
                        "{kind} {currency}: {} matched, {} with difference ({}), {} unmatched ours, {} unmatched theirs, {} duplicate, {} expected, {} written off",
                        row.matched.count,
                        row.matched_with_difference.count,
                        amount(row.difference_minor, currency),
                        row.unmatched_ours.count,
                        row.unmatched_theirs.count,
                        row.duplicate.count,
                        row.expected.count,
                        row.written_off.count,
                    );
                }
            }
        }
        ReconcileCommand::Exceptions { older_than, kind } => {
            let exceptions = service.exceptions(kind, older_than).await?;
            if exceptions.is_empty() {
                println!("no open exceptions");
            } else {
                println!("{}", items_table(&exceptions));
                print_exception_summary(&exceptions);
            }
        }
        ReconcileCommand::Match {
            kind,
            ours,
            theirs,
            reason,
        } => {
            let d = service
                .match_items(kind, ours, theirs, reason, actor, None)
                .await?;
            println!("matched: decision {}, difference {}", d.id, d.amount_minor);
        }
        ReconcileCommand::Unmatch { decision, reason } => {
            let d = service.unmatch(&decision, reason, actor, None).await?;
            println!("unmatched {decision}: decision {}", d.id);
        }
        ReconcileCommand::Confirm { decision, reason } => {
            let d = service.confirm(&decision, reason, actor).await?;
            println!("confirmed {decision}: decision {}", d.id);
        }
        ReconcileCommand::Expect {
            kind,
            ours,
            theirs,
            until,
            reason,
        } => {
            let (side, id) = match (ours, theirs) {
                (Some(id), _) => (ItemSide::Ours, id),
                (None, Some(id)) => (ItemSide::Theirs, id),
                (None, None) => return Err(Exit::bad_input("name --ours or --theirs")),
            };
            let request = ExpectRequest {
                kind,
                side,
                id,
                expected_by: until,
                reason,
            };
            let d = service.expect(request, actor, None).await?;
            println!("expected until {until}: decision {}", d.id);
        }
        ReconcileCommand::WriteOff {
            kind,
            ours,
            theirs,
            reason,
            category,
        } => {
            let request = WriteOffRequest {
                kind,
                ours,
                theirs,
                reason,
                category,
            };
            let d = service.write_off(request, actor, None).await?;
            print_write_off(&d);
        }
        ReconcileCommand::Approve { decision } => {
            service
                .decide_write_off(&decision, true, None, actor)
                .await?;
            println!("write-off {decision} approved");
        }
        ReconcileCommand::Reject { decision, reason } => {
            service
                .decide_write_off(&decision, false, reason, actor)
                .await?;
            println!("write-off {decision} rejected: its items are open again");
        }
        ReconcileCommand::Adjust {
            decision,
            amount: asked,
            reason,
            merchant,
        } => {
            let payments = context.payment_service(service_store.clone());
            let request = AdjustRequest {
                decision: decision.clone(),
                amount: asked,
                reason,
                merchant_id: merchant,
            };
            let outcome = service.adjust(&payments, request, actor).await?;
            let t = outcome.transaction();
            let what = format!(
                "adjustment {} of {} {} on merchant {} (settles on {})",
                t.id,
                amount(t.amount_minor, t.currency),
                t.currency,
                t.merchant_id,
                t.settlement_date
            );
            match outcome {
                AdjustOutcome::Recorded(_) => println!("recorded {what} for decision {decision}"),
                AdjustOutcome::AlreadyRecorded(_) => {
                    println!("decision {decision} already has {what}: nothing added")
                }
            }
        }
        ReconcileCommand::Report { from, to, out } => {
            if from > to {
                return Err(Exit::bad_input(format!("--from {from} is after --to {to}")));
            }
            let mut items = Vec::new();
            for kind in StatementKind::ALL {
                items.extend(service.items(*kind).await?);
            }
            let rows = report_rows(&items, from, to);
            crate::files::write_atomically(&out, |file| {
                write_report_csv(file, &rows).map_err(std::io::Error::other)
            })?;
            println!("wrote {} ({} rows)", out.display(), rows.len());
        }
    }
    Ok(())
}

fn kinds(kind: Option<StatementKind>) -> Vec<StatementKind> {
    match kind {
        Some(kind) => vec![kind],
        None => StatementKind::ALL.to_vec(),
    }
}

async fn import(
    service: &ReconciliationService,
    args: ReconcileImportArgs,
    actor: &str,
) -> Result<()> {
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    if size > MAX_STATEMENT_FILE_BYTES {
        return Err(Exit::bad_input(format!(
            "{} is {size} bytes; a statement file may have at most {MAX_STATEMENT_FILE_BYTES}",
            args.file.display()
        )));
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let format = match args.format.as_deref() {
        Some(text) => Some(text.parse().map_err(Exit::bad_input)?),
        None => None,
    };
    let file = ImportFile {
        kind: args.kind,
        bytes,
        format,
        profile: args.profile,
    };
    let report = service
        .import_file(file, actor)
        .await
        .with_context(|| format!("{} was not imported", args.file.display()))?;
    print_import_report(&report);
    Ok(())
}

/// One line per statement of an import: imported with its entries, or already imported.
pub(crate) fn print_import_report(report: &ImportReport) {
    for (statement, outcome) in &report.statements {
        let identity = &statement.identity;
        let what = format!(
            "{} statement of {} {} to {} (sequence {})",
            identity.kind,
            identity.account,
            identity.period_start,
            identity.period_end,
            identity.sequence
        );
        match outcome {
            ImportOutcome::Imported => {
                println!("imported {what}: {} entries", statement.entry_count)
            }
            ImportOutcome::AlreadyImported {
                imported_at,
                imported_by,
            } => println!(
                "already imported {what} (on {} by {imported_by}): nothing added",
                settle_core::time::format_utc(*imported_at)
            ),
        }
    }
}

fn print_write_off(d: &Decision) {
    match d.state {
        DecisionState::AwaitingApproval => println!(
            "write-off {} of {} waits for approval by another admin (`settle reconcile approve {}`)",
            d.id, d.amount_minor, d.id
        ),
        _ => println!(
            "written off: decision {} ({})",
            d.id,
            d.currency
                .map(|c| format!("{} {c}", amount(d.amount_minor, c)))
                .unwrap_or_else(|| d.amount_minor.to_string())
        ),
    }
}

pub(crate) fn print_exception_summary(exceptions: &[KindItem]) {
    let mut by_kind: std::collections::BTreeMap<
        (StatementKind, settle_core::money::Currency),
        (u64, i64, i64),
    > = Default::default();
    for e in exceptions {
        let entry = by_kind.entry((e.kind, e.item.currency)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(e.item.amount_minor.saturating_abs());
        entry.2 = entry.2.max(e.item.age_days);
    }
    if by_kind.is_empty() {
        println!("open exceptions: none");
    }
    for ((kind, currency), (count, total, oldest)) in by_kind {
        println!(
            "open exceptions, {kind} {currency}: {count}, {} in all, oldest {oldest} day(s)",
            amount(total, currency)
        );
    }
}

pub(crate) fn items_table(items: &[KindItem]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "kind",
        "side",
        "id",
        "date",
        "currency",
        "amount",
        "status",
        "rule",
        "difference",
        "decision",
        "age (days)",
    ]);
    for KindItem { kind, item } in items {
        let status = if item.needs_review {
            format!("{} (review)", item.status)
        } else {
            item.status.to_string()
        };
        table.add_row(vec![
            kind.to_string(),
            item.side.to_string(),
            item.id.clone(),
            item.date.to_string(),
            item.currency.to_string(),
            amount(item.amount_minor, item.currency),
            status,
            item.rule.clone().unwrap_or_default(),
            if item.difference_minor != 0 {
                amount(item.difference_minor, item.currency)
            } else {
                String::new()
            },
            item.decision.clone().unwrap_or_default(),
            item.age_days.to_string(),
        ]);
    }
    for column in [5, 8, 10] {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}
