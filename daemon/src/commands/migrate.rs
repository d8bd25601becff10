//! `settle migrate --from sqlite:PATH --to mongodb://…`: copies every record of an embedded store
//! into MongoDB. Running it again is harmless; an interrupted copy resumes where it stopped.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use settle_core::model::AuditEvent;
use settle_core::store::migration::migrate;
use settle_core::store::mongo::{redact_uri, MongoStore};
use settle_core::store::sqlite::SqliteStore;
use settle_core::store::AuditStore;

use crate::cli::MigrateArgs;
use crate::context::Context;
use crate::exit::Exit;

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
    let report = migrate(&source, &target, &|kind, copied| {
        eprintln!("  {}: {copied}", kind.as_str());
    })
    .await?;
    if report.resumed {
        println!("resumed an interrupted copy");
    }
    for (kind, copied) in &report.copied {
        println!("  {:<20} {copied}", kind.as_str());
    }
    let detail = serde_json::json!({
        "from": path.display().to_string(),
        "to": redact_uri(&args.to),
        "database": args.to_db,
        "copied": report.copied.iter().map(|(k, n)| (k.as_str(), n)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        "store.migrate",
        "store=mongodb",
        "succeeded",
        detail,
    );
    target.record_audit(&event).await?;
    println!("done: the MongoDB store holds everything the SQLite store holds");
    Ok(())
}
