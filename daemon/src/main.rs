//! `settle`: the command line of Settle. Parses arguments, sets up logging, runs one command and
//! turns its outcome into an exit status (0 ok, 1 failed, 2 bad input, 3 refused by state).

mod cli;
mod commands;
mod context;
mod exit;
mod files;
mod output;
mod progress;
mod serve;
mod service;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::FAILED.into();
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code_for(&error).into()
        }
    }
}

/// Logs go to stderr; `SETTLE_LOG` (or `-v`) chooses the level. Output meant for people goes to stdout.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SETTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
