//! `settle import FILE`: validates every row, then stores the file all or nothing (or, with
//! `--skip-invalid`, the valid rows, sending the others to FILE.rejects.csv). Audited.

use anyhow::Result;
use serde_json::json;
use settle_core::csv::{import_csv, ImportError, ImportOptions};
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome};

use crate::cli::ImportArgs;
use crate::context::Context;
use crate::progress::BytesBar;

/// Row errors printed before "and N more".
const PRINTED_ERRORS: usize = 50;

pub async fn run(context: Context, args: ImportArgs) -> Result<()> {
    let store = context.open_store().await?;
    let options = ImportOptions {
        skip_invalid: args.skip_invalid,
        amount_limits: context.settings.payments.amount_limits.clone(),
    };
    let progress = BytesBar::new();
    let result = import_csv(
        &args.file,
        store.as_ref(),
        &context.settings.calendar,
        &options,
        &progress,
        context.clock.now(),
    )
    .await;
    let subject = format!("file={}", args.file.display());
    let (outcome, detail) = match &result {
        Ok(report) => (
            AuditOutcome::Succeeded,
            json!({ "rows": report.rows, "inserted": report.inserted, "duplicates": report.duplicates,
                    "late": report.late, "rejected": report.rejected }),
        ),
        Err(ImportError::InvalidRows { invalid_rows, .. }) => (
            AuditOutcome::Refused,
            json!({ "invalid_rows": invalid_rows }),
        ),
        Err(error) => (AuditOutcome::Failed, json!({ "error": error.to_string() })),
    };
    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        AuditAction::TransactionsImport,
        subject,
        outcome,
        detail,
    );
    store.record_audit(&event).await?;

    match result {
        Ok(report) => {
            println!(
                "imported {}: {} rows, {} new, {} already present, {} rejected",
                args.file.display(),
                report.rows,
                report.inserted,
                report.duplicates,
                report.rejected
            );
            if report.late > 0 {
                println!(
                    "  {} transaction(s) belong to dates already settled; they will settle on the next open date, marked late",
                    report.late
                );
            }
            if let Some(path) = report.rejects_path {
                println!("  rejected rows written to {}", path.display());
            }
            Ok(())
        }
        Err(ImportError::InvalidRows {
            path,
            invalid_rows,
            errors,
        }) => {
            for error in errors.iter().take(PRINTED_ERRORS) {
                eprintln!("{}: {error}", path.display());
            }
            if invalid_rows as usize > PRINTED_ERRORS {
                eprintln!(
                    "… and {} more invalid row(s)",
                    invalid_rows as usize - PRINTED_ERRORS
                );
            }
            Err(ImportError::InvalidRows {
                path,
                invalid_rows,
                errors: Vec::new(),
            }
            .into())
        }
        Err(error) => Err(error.into()),
    }
}
