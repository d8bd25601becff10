//! The web view's security as configured: a strict Content-Security-Policy in tauri.conf.json and
//! one capability granting only the app's own commands (the export's save dialog is opened from Rust).

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
fn the_window_may_call_the_apps_commands_only() {
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
            panic!("{permission} is granted: only the app's own commands may be");
        }
    }
    assert!(granted.contains(&"allow-choose-export-path"));
    assert!(!granted.iter().any(|p| p.starts_with("dialog:")));
    assert!(!granted
        .iter()
        .any(|p| p.starts_with("core:") || p.contains("fs:") || p.contains("shell:")));
}

/// The keys of one language's block in ui/i18n.js (`    "key": "text",` lines).
fn words(i18n: &str, language: &str) -> std::collections::BTreeSet<String> {
    let start = i18n
        .find(&format!("\n  {language}: {{"))
        .expect("the language block");
    let block = &i18n[start..];
    let block = &block[..block.find("\n  },").expect("the block's end")];
    block
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"'))
        .filter_map(|rest| rest.split_once("\":").map(|(key, _)| key.to_string()))
        .collect()
}

/// Every quoted key after `marker` in `text` (`data-i18n="…"`, `t("…"`), where `marker` does not
/// continue a longer name (`createElement("td")` is not `t("d"`).
fn keys_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
        .filter_map(|(at, _)| {
            text[at + marker.len()..]
                .split_once('"')
                .map(|(key, _)| key.to_string())
        })
        .collect()
}

#[test]
fn every_word_the_ui_shows_exists_in_english_and_arabic() {
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui");
    let read = |name: &str| std::fs::read_to_string(ui.join(name)).expect("a UI file");
    let i18n = read("i18n.js");
    let (english, arabic) = (words(&i18n, "en"), words(&i18n, "ar"));
    assert!(english.len() > 100, "{} English words", english.len());
    assert_eq!(
        english.symmetric_difference(&arabic).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "words missing in one language"
    );
    let mut used = keys_after(&read("index.html"), "data-i18n=\"");
    used.extend(keys_after(&read("main.js"), "t(\""));
    assert!(used.len() > 50);
    for key in used {
        assert!(
            english.contains(&key),
            "the UI uses {key:?}, which has no words"
        );
    }
    // Keys built from API values: every value the daemon sends has its words.
    for (prefix, values) in [
        ("status", &["pending", "running", "completed", "failed"][..]),
        ("trigger", &["scheduler", "manual"]),
        (
            "payout",
            &["pending", "held", "unknown", "sent", "confirmed", "failed"],
        ),
        ("outcome", &["succeeded", "failed", "refused"]),
    ] {
        for value in values {
            assert!(
                english.contains(&format!("{prefix}.{value}")),
                "{prefix}.{value}"
            );
        }
    }
}
