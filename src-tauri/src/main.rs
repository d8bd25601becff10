//! settle-console: Settle's desktop console, a Tauri 2 shell over the daemon's API. The UI (`ui/`)
//! calls the commands in `commands`; the API token lives in the OS keyring (`credentials`).

// A release build on Windows opens no console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
mod credentials;

fn main() {
    let result = tauri::Builder::default()
        .manage(commands::ConsoleState::default())
        .invoke_handler(tauri::generate_handler![
            commands::connect,
            commands::sign_out
        ])
        .run(tauri::generate_context!("../tauri.conf.json"));
    if let Err(error) = result {
        eprintln!("settle-console: {error}");
        std::process::exit(1);
    }
}
