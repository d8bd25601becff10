//! settle-console: Settle's desktop console, a Tauri 2 shell over the daemon's API. The UI (`ui/`)
//! calls the commands in `commands`, which wrap the `Console` session; the token stays in the keyring.

pub mod commands;
pub mod credentials;
pub mod error;
pub mod export_path;
pub mod preferences;
pub mod save_dialog;
pub mod server_url;
pub mod session;
pub mod views;

use tauri::Manager;

/// The file the console remembers the last server and the language in, in the app's config folder.
const PREFERENCES_FILE: &str = "preferences.json";

/// Starts the app: one window, the save dialog plugin, the session and the commands.
pub fn run() -> Result<(), tauri::Error> {
    tauri::Builder::default()
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            let folder = app.path().app_config_dir()?;
            app.manage(session::Console::new(
                credentials::SERVICE,
                folder.join(PREFERENCES_FILE),
            ));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::startup,
            commands::set_language,
            commands::connect,
            commands::sign_out,
            commands::history,
            commands::settlement,
            commands::lines,
            commands::revision_changes,
            commands::audit_for_date,
            commands::statistics,
            commands::new_action_key,
            commands::trigger,
            commands::rerun,
            commands::retry,
            commands::choose_export_path,
            commands::export_csv,
        ])
        .run(tauri::generate_context!("../tauri.conf.json"))
}
