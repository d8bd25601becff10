//! Build script of the console: compiles `tauri.conf.json` (at the repository root), the app's
//! command permissions and the capabilities in `capabilities/` into the binary's Tauri context.

/// The app's own commands; each gets `allow-…`/`deny-…` permissions, and only what a capability in
/// `capabilities/` grants can be invoked from the UI.
const COMMANDS: &[&str] = &[
    "startup",
    "set_language",
    "connect",
    "sign_out",
    "history",
    "settlement",
    "lines",
    "revision_changes",
    "audit_for_date",
    "statistics",
    "new_action_key",
    "trigger",
    "rerun",
    "retry",
    "choose_export_path",
    "export_csv",
];

fn main() {
    // Relative paths printed here are resolved by cargo against this package, whatever the
    // working directory below.
    println!("cargo:rerun-if-changed=capabilities");
    // tauri.conf.json lives at the repository root and its paths (`ui`, the icons) are written
    // relative to the root, so tauri-build runs from there.
    std::env::set_current_dir("..").expect("the repository root is the parent of src-tauri");
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("src-tauri/capabilities/**/*")
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(error) = tauri_build::try_build(attributes) {
        panic!("tauri-build failed: {error:#}");
    }
}
