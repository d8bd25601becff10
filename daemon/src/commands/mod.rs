//! One module per command; `dispatch` loads the context, starts telemetry and logging, hands over,
//! and flushes telemetry at the end.
//! Commands print results for people on stdout and return errors for `main` to report.

mod check_config;
mod demo;
mod demo_reconcile;
mod export;
mod import;
mod merchants;
mod migrate;
mod payments;
mod reconcile;
mod sandbox_provider;
mod service;
mod settle;
mod show;
mod tokens;

use std::time::Duration;

use anyhow::Result;
use settle_core::telemetry;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit::Exit;

pub async fn dispatch(cli: Cli) -> Result<()> {
    if let Command::CheckConfig = cli.command {
        crate::logging::init(cli.verbose);
        return check_config::run(&cli);
    }
    if let Command::Service(command) = &cli.command {
        crate::logging::init(cli.verbose);
        // Loads no configuration: --config names the file the service will read.
        return service::run(&cli, command);
    }
    let context = match Context::load(&cli) {
        Ok(context) => context,
        Err(error) => {
            crate::logging::init(cli.verbose);
            return Err(error);
        }
    };
    let started = telemetry::start(&context.settings.telemetry, std::env::vars());
    crate::logging::init(cli.verbose);
    let started = started.map_err(|error| Exit::bad_input(format!("telemetry: {error}")))?;
    if let Some(plan) = &started.plan {
        tracing::info!("{}", plan.summary());
    }
    if started.metrics_not_pushed {
        tracing::warn!(
            "metrics were recorded before telemetry started: they are not pushed over OTLP"
        );
    }
    let result = run(cli, context).await;
    // One-shot commands flush what they recorded; `serve` has flushed within its shutdown bound.
    telemetry::shutdown(FLUSH_TIMEOUT).await;
    result
}

/// How long a command waits, at its end, for spans and metrics to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

async fn run(cli: Cli, context: Context) -> Result<()> {
    let explicit_data_dir = cli.data_dir.is_some();
    match cli.command {
        Command::Demo(args) => demo::run(context, explicit_data_dir, args).await,
        Command::Import(args) => import::run(context, args).await,
        Command::Run(args) => settle::run(context, args.date).await,
        Command::Rerun(args) => settle::rerun(context, args).await,
        Command::Retry(args) => settle::retry(context, args.date).await,
        Command::Show(args) => show::show(context, args).await,
        Command::History(args) => show::history(context, args).await,
        Command::Export(args) => export::export(context, args).await,
        Command::Chart(args) => export::chart(context, args).await,
        Command::Payment(command) => payments::run(context, command).await,
        Command::Merchant(command) => merchants::run(context, command).await,
        Command::Payouts(command) => merchants::check_payouts(context, command).await,
        Command::Token(command) => tokens::run(context, command).await,
        Command::Reconcile(command) => reconcile::run(context, command).await,
        Command::Migrate(args) => migrate::run(context, args).await,
        Command::Serve(args) => {
            crate::serve::run(
                context,
                args.listen,
                tokio_util::sync::CancellationToken::new(),
            )
            .await
        }
        Command::CheckConfig => unreachable!("handled above"),
        Command::Service(_) => unreachable!("handled above"),
    }
}
