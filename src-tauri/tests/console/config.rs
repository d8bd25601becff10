//! The web view's security as configured: a strict Content-Security-Policy in tauri.conf.json and
//! one capability granting only the app's own commands and the native save dialog.

use serde_json::Value;

fn read_json(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_slice(&std::fs::read(&full).expect("the file")).expect("JSON")
}

#[test]
fn the_csp_allows_no_remote_origin_and_no_inline_script() {
    let config = read_json("../tauri.conf.json");
    let csp = config["app"]["security"]["csp"]
        .as_object()
        .expect("a CSP object");
    for (directive, sources) in csp {
        let sources = sources.as_str().unwrap();
        for source in sources.split_whitespace() {
            assert!(
                !source.contains("unsafe") && source != "*" && !source.starts_with("https:"),
                "{directive} allows {source}"
            );
            if source.starts_with("http://") {
                assert_eq!(
                    (directive.as_str(), source),
                    ("connect-src", "http://ipc.localhost"),
                    "only the IPC origin"
                );
            }
        }
    }
    assert_eq!(csp["script-src"], "'self'");
    assert_eq!(csp["default-src"], "'self'");
    assert_eq!(csp["object-src"], "'none'");
    assert_eq!(config["app"]["security"]["freezePrototype"], true);
}

#[test]
fn the_window_may_call_the_apps_commands_and_the_save_dialog_only() {
    let capability = read_json("capabilities/main-window.json");
    assert_eq!(capability["windows"], serde_json::json!(["main"]));
    let granted: Vec<&str> = capability["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().expect("a permission name"))
        .collect();
    let build_script =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
            .unwrap();
    for permission in &granted {
        if let Some(command) = permission.strip_prefix("allow-") {
            let command = command.replace('-', "_");
            assert!(
                build_script.contains(&format!("\"{command}\"")),
                "{permission} is not one of the app's commands"
            );
        } else {
            assert_eq!(*permission, "dialog:allow-save", "nothing else is granted");
        }
    }
    assert!(granted.contains(&"dialog:allow-save"));
    assert!(!granted
        .iter()
        .any(|p| p.starts_with("core:") || p.contains("fs:") || p.contains("shell:")));
}
