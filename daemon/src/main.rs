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
    if !matches!(
        cli.command,
        cli::Command::Serve(_) | cli::Command::Service(_)
    ) {
        end_quietly_on_a_closed_pipe();
    }
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

/// A one-shot command whose output goes to a closed pipe (`settle run … | head -1`) ends as
/// Unix tools do, by SIGPIPE, instead of panicking in `println!`. Not for `serve`: a long-running
/// process must outlive a peer that goes away (its sockets are written with MSG_NOSIGNAL anyway).
#[cfg(unix)]
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Windows has no SIGPIPE; a write to a closed pipe there is an error like any other.
#[cfg(not(unix))]
fn end_quietly_on_a_closed_pipe() {}
