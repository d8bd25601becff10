//! `settle migrate --from sqlite:PATH --to mongodb://…`: copies into MongoDB every record of an
//! embedded store that the target lacks (never overwriting one it holds), then verifies the copy's
//! content per kind (counts and a digest of each side).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome};
use settle_core::store::migration::{migrate, ImportOutcome, KindVerification, MigrationError};
use settle_core::store::AuditStore;
use settle_store_mongo::{redact_uri, MongoStore};
use settle_store_sqlite::SqliteStore;

use crate::cli::MigrateArgs;
use crate::context::Context;
use crate::exit::{Exit, FAILED};

pub async fn run(context: Context, args: MigrateArgs) -> Result<()> {
    let Some(path) = args.from.strip_prefix("sqlite:").map(PathBuf::from) else {
        return Err(Exit::bad_input(format!(
            "--from must be sqlite:PATH, not {:?}",
            args.from
        )));
    };
    if !path.is_file() {
        return Err(Exit::bad_input(format!(
            "{} is not a SQLite database file",
            path.display()
        )));
    }
    if !(args.to.starts_with("mongodb://") || args.to.starts_with("mongodb+srv://")) {
        return Err(Exit::bad_input(format!(
            "--to must be a mongodb:// URI, not {}",
            redact_uri(&args.to)
        )));
    }
    let source = SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let uri = crate::context::with_password(&args.to, crate::context::mongo_password().as_ref());
    let target = MongoStore::connect(&uri, &args.to_db).await?;
    println!(
        "copying {} into {} (database {})",
        path.display(),
        redact_uri(&args.to),
        args.to_db
    );
    let clock = context.clock.clone();
    let report = match migrate(&source, &target, &move || clock.now(), &|kind, copied| {
        eprintln!("  {}: {copied}", kind.as_str());
    })
    .await
    {
        Ok(report) => report,
        Err(MigrationError::Refused(message)) => return Err(Exit::refused(message)),
        Err(MigrationError::Incomplete(message)) => {
            return Err(Exit {
                code: FAILED,
                message,
            }
            .into())
        }
        Err(MigrationError::Store(error)) => return Err(error.into()),
    };
    if report.resumed {
        println!("resumed an interrupted copy");
    }
    if report.again {
        println!(
            "this store was migrated here before: only records the target lacks are added; \
             records it holds are kept as they are"
        );
    }
    println!(
        "  {:<20} {:>8} {:>8} {:>8} {:>8}",
        "kind", "copied", "present", "differ", "removed"
    );
    let parts: Vec<(&str, ImportOutcome, KindVerification)> = report
        .kinds
        .iter()
        .map(|k| (k.kind.as_str(), k.outcome, k.verified))
        .chain(
            report
                .reconciliation
                .iter()
                .map(|p| (p.part.as_str(), p.outcome, p.verified)),
        )
        .collect();
    for (name, outcome, _) in &parts {
        println!(
            "  {:<20} {:>8} {:>8} {:>8} {:>8}",
            name, outcome.copied, outcome.present, outcome.differing, outcome.removed
        );
    }
    let caught_up: u64 = report.kinds.iter().map(|k| k.caught_up).sum();
    if caught_up > 0 {
        println!(
            "{caught_up} record(s) the source gained behind the checkpoint were found by the \
             verification and copied"
        );
    }
    let differing: u64 = parts.iter().map(|(_, o, _)| o.differing).sum();
    if differing > 0 {
        println!(
            "{differing} record(s) differ from the source: the target's were kept (changed there since)"
        );
    }
    println!(
        "verified per kind: the source's records (less those removed on the target after an \
         earlier copy) and the target's under the same keys, counted and digested (SHA-256)"
    );
    for (name, _, verified) in &parts {
        println!("  {name}: {}", verified.summary());
    }
    let changed: Vec<&str> = parts
        .iter()
        .filter(|(_, _, v)| v.changed())
        .map(|(name, _, _)| *name)
        .collect();
    if !changed.is_empty() {
        println!(
            "differing on the target (its own changes since the earlier copy, kept): {}",
            changed.join(", ")
        );
    }
    let detail = serde_json::json!({
        "from": path.display().to_string(),
        "to": redact_uri(&args.to),
        "database": args.to_db,
        "source_id": report.source_id,
        "copied": parts.iter().map(|(name, o, _)| (*name, o.copied)).collect::<std::collections::BTreeMap<_, _>>(),
        "present": parts.iter().map(|(name, o, _)| (*name, o.present)).collect::<std::collections::BTreeMap<_, _>>(),
        "differing": parts.iter().map(|(name, o, _)| (*name, o.differing)).collect::<std::collections::BTreeMap<_, _>>(),
        "verified": parts.iter().map(|(name, _, v)| (*name, serde_json::json!({
            "source": v.source,
            "target": v.held,
            "differing": v.differing,
            "removed": v.removed,
            "source_digest": v.source_digest.to_string(),
            "target_digest": v.target_digest.to_string(),
        }))).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        AuditAction::StoreMigrate,
        "store=mongodb",
        AuditOutcome::Succeeded,
        detail,
    );
    target.record_audit(&event).await?;
    let removed: u64 = parts.iter().map(|(_, _, v)| v.removed).sum();
    let sameness = if changed.is_empty() {
        "with equal content"
    } else {
        "(some changed there since the earlier copy)"
    };
    if removed > 0 {
        println!(
            "done: verified, the MongoDB store holds every record of the SQLite store {sameness} \
             except {removed} removed there after an earlier copy"
        );
    } else {
        println!(
            "done: verified, the MongoDB store holds every record of the SQLite store {sameness}"
        );
    }
    Ok(())
}
