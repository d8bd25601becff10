//! `settle check-config`: validates the file and the environment overrides, reporting every
//! problem with its key, or a summary of what is in force.

use anyhow::Result;
use settle_core::config::{self, StoreKind};
use settle_store_mongo::redact_uri;

use crate::cli::Cli;
use crate::context::{apply_store_options, mongo_password, MISSING_URI, MONGO_PASSWORD_VARIABLE};
use crate::exit::Exit;

pub fn run(cli: &Cli) -> Result<()> {
    let mut settings = config::load(cli.config.as_deref(), std::env::vars())?;
    apply_store_options(cli, &mut settings.store)?;
    if settings.store.kind == StoreKind::Mongodb && settings.store.uri.is_none() {
        return Err(Exit::bad_input(MISSING_URI));
    }
    let source = cli
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "no configuration file (defaults)".into());
    println!("configuration OK: {source}");
    println!(
        "  business   timezone {}, cutoff {}, grace {} min",
        settings.calendar.timezone.name(),
        settings.calendar.cutoff,
        settings.calendar.grace_minutes
    );
    println!(
        "  fees       default {}%, {} method override(s), {} merchant override(s)",
        settings.fee_schedule.default.percent.unwrap_or_default(),
        settings.fee_schedule.methods.len(),
        settings.fee_schedule.merchants.len()
    );
    match (settings.store.kind, &settings.store.uri) {
        (StoreKind::Mongodb, Some(uri)) => {
            let password = if config::mongo_uri_has_password(uri) {
                "password: in the URI".to_string()
            } else if mongo_password().is_some() {
                format!("password: from {MONGO_PASSWORD_VARIABLE} or the credential mongo-password")
            } else {
                "no password".to_string()
            };
            println!(
                "  store      mongodb at {}, database {} ({password})",
                redact_uri(uri),
                settings.store.database
            );
        }
        _ => println!(
            "  store      {}{}",
            settings.store.kind,
            settings
                .store
                .path
                .as_ref()
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_default()
        ),
    }
    println!(
        "  settlement lease {} s, page size {}",
        settings.settlement.lease_seconds, settings.settlement.page_size
    );
    Ok(())
}
