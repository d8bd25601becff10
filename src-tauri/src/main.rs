//! The `settle-console` binary: starts the desktop console (`settle_console::run`) and reports a
//! failure to start on standard error.

// A release build on Windows opens no console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    if let Err(error) = settle_console::run() {
        eprintln!("settle-console: {error}");
        std::process::exit(1);
    }
}
