//! `settle`: the command line of Settle. Parses arguments, sets up logging, runs one command and
//! turns its outcome into an exit status (0 ok, 1 failed, 2 bad input, 3 refused by state).

mod cli;
mod commands;
mod context;
mod exit;
mod files;
mod logging;
mod output;
mod progress;
mod serve;
mod service;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Logging starts in `dispatch`, once telemetry (configured by the file) is set up.
    let cli = cli::Cli::parse();
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
