//! `settle check-config`: validates the file and the environment overrides, reporting every
//! problem with its key, or a summary of what is in force.

use anyhow::Result;
use settle_core::config;

use crate::cli::Cli;

pub fn run(cli: &Cli) -> Result<()> {
    let settings = config::load(cli.config.as_deref(), std::env::vars())?;
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
    println!(
        "  store      {}{}",
        settings.store.kind,
        settings
            .store
            .path
            .as_ref()
            .map(|p| format!(" at {}", p.display()))
            .unwrap_or_default()
    );
    println!(
        "  settlement lease {} s, page size {}",
        settings.settlement.lease_seconds, settings.settlement.page_size
    );
    Ok(())
}
