//! The native save dialog for the CSV export, opened from Rust (tauri-plugin-dialog) so that the
//! path an export may write to is the user's answer, never text from the web view.

use std::path::PathBuf;

use tauri::{Runtime, WebviewWindow};
use tauri_plugin_dialog::DialogExt;

use crate::error::CommandError;

/// Only in builds with the `e2e-save-dialog-preset` feature, which the console's own tests enable
/// (its self dev-dependency in Cargo.toml) and no other build does: when this variable is set, the
/// dialog is not shown and its value is the answer. WebDriver cannot drive a native dialog, so the
/// end-to-end test answers it this way.
#[cfg(feature = "e2e-save-dialog-preset")]
pub const PRESET_ANSWER_VARIABLE: &str = "SETTLE_CONSOLE_E2E_SAVE_PATH";

/// Asks where to save `file_name` over `window`: the chosen path, or None when cancelled.
pub async fn ask<R: Runtime>(
    window: &WebviewWindow<R>,
    title: &str,
    file_name: &str,
) -> Result<Option<PathBuf>, CommandError> {
    #[cfg(feature = "e2e-save-dialog-preset")]
    if let Some(answer) = std::env::var_os(PRESET_ANSWER_VARIABLE) {
        return Ok(Some(PathBuf::from(answer)));
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    window
        .dialog()
        .file()
        .set_parent(window)
        .set_title(title)
        .set_file_name(file_name)
        .add_filter("CSV", &["csv"])
        .save_file(move |chosen| {
            // The receiver only goes away if the command was dropped; nothing is waiting then.
            let _ = answer.send(chosen);
        });
    let chosen = answered
        .await
        .map_err(|_| CommandError::Internal("the save dialog closed without an answer".into()))?;
    chosen
        .map(|chosen| {
            chosen
                .into_path()
                .map_err(|error| CommandError::invalid("path", error.to_string()))
        })
        .transpose()
}
