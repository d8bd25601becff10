//! The built desktop app end to end: a daemon with the demo's month, the app under Xvfb driven by
//! tauri-driver and Debian's WebKitWebDriver, its token in gnome-keyring. Screenshots go to
//! `target/console-screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::demo::DemoServer;
use crate::keyring_session::{wrap, Session};

/// How long the UI may take to show something after an action (generous: a loaded CI machine).
const UI_WAIT: Duration = Duration::from_secs(60);

/// A child process killed (with its process group) when dropped.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, mut command: Command) -> Process {
    let child = command.spawn().unwrap_or_else(|error| {
        panic!("cannot start {name} ({error}): run ./scripts/test.sh, which installs it")
    });
    Process { child }
}

/// The built app next to this test binary: target/<profile>/settle-console.
fn app_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target folder");
    let app = profile_dir.join(format!("settle-console{}", std::env::consts::EXE_SUFFIX));
    assert!(
        app.exists(),
        "{} is missing: build it first (`cargo build --workspace`, as scripts/test.sh does)",
        app.display()
    );
    app
}

fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).expect("the target folder");
    let folder = target.join("console-screenshots");
    std::fs::create_dir_all(&folder).expect("a screenshot folder");
    folder
}

/// Xvfb on the first free display, which it reports on stdout (`-displayfd 1`).
fn start_xvfb() -> (Process, String) {
    let mut command = Command::new("Xvfb");
    command
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut xvfb = spawn("Xvfb", command);
    let stdout = xvfb.child.stdout.take().expect("Xvfb's stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("Xvfb reports its display");
    let display = format!(":{}", line.trim());
    assert!(line.trim().parse::<u32>().is_ok(), "Xvfb said {line:?}");
    (xvfb, display)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// tauri-driver (and through it WebKitWebDriver and the app) inside a D-Bus session with an
/// unlocked gnome-keyring, on `display`.
fn start_driver(display: &str, home: &Path) -> (Process, u16) {
    let driver = which("tauri-driver");
    let port = free_port();
    let native_port = free_port();
    let mut command = wrap(Session::GnomeKeyring, &driver, home);
    command
        .args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native_port.to_string(),
        ])
        .env("DISPLAY", display)
        // The export's save dialog answers this (the test-only `e2e-save-dialog-preset` build):
        // WebDriver cannot drive a native dialog.
        .env(
            settle_console::save_dialog::PRESET_ANSWER_VARIABLE,
            export_path(home),
        )
        // WebKitGTK under Xvfb: no GPU, so no accelerated compositing.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    (spawn("tauri-driver", command), port)
}

/// Where the end-to-end test's save dialog says to save the export.
fn export_path(home: &Path) -> PathBuf {
    home.join("settlement.csv")
}

/// A program on PATH or in ~/.cargo/bin (where `cargo install tauri-driver` puts it).
fn which(program: &str) -> PathBuf {
    let mut places: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into_os_string()))
    {
        places.push(Path::new(&home).join("bin"));
    }
    places
        .into_iter()
        .map(|place| place.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is missing: run ./scripts/test.sh, which installs it (cargo install tauri-driver --locked)"))
}

async fn wait_for_driver(port: u16) {
    let url = format!("http://127.0.0.1:{port}/status");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + UI_WAIT;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tauri-driver did not answer on {url}");
}

async fn session(port: u16, app: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("wry"));
    capabilities.insert(
        "tauri:options".into(),
        json!({ "application": app.to_str().expect("a UTF-8 path") }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with the app")
}

/// Waits until `css` matches a displayed element.
async fn visible(client: &Client, css: &str) -> Element {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if element.is_displayed().await.unwrap_or(false) {
                return element;
            }
        }
        assert!(Instant::now() < deadline, "{css} did not appear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the script (an expression) is truthy, returning its value.
async fn until(client: &Client, what: &str, expression: &str) -> Value {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let value = client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or(Value::Null);
        if !(value.is_null() || value == json!(false) || value == json!("") || value == json!(0)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {expression} stayed false"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png)
        .expect("the screenshot saved");
}

/// The text of the element `css` once it is displayed.
async fn text_of(client: &Client, css: &str) -> String {
    visible(client, css)
        .await
        .text()
        .await
        .expect("the element's text")
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let element = visible(client, css).await;
    element.clear().await.expect("cleared");
    if !text.is_empty() {
        element.send_keys(text).await.expect("typed");
    }
}

async fn click(client: &Client, css: &str) {
    visible(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|error| panic!("click {css}: {error}"));
}

#[test]
fn the_console_connects_inspects_reruns_and_exports() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // The provider server runs on the runtime's threads while the demo command blocks this one.
    let server = {
        let _context = runtime.enter();
        DemoServer::start()
    };
    let (_xvfb, display) = start_xvfb();
    let home = tempfile::tempdir().expect("a home for the app");
    let (driver, port) = start_driver(&display, home.path());
    let app = app_binary();
    runtime.block_on(async {
        wait_for_driver(port).await;
        let client = session(port, &app).await;
        let result = drive(&client, &server, home.path()).await;
        let _ = client.close().await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
    drop(driver);
}

/// The scenario; a panic is caught so that the WebDriver session (and the app) is closed.
async fn drive(
    client: &Client,
    server: &DemoServer,
    home: &Path,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(scenario(client, server, home))
        .catch_unwind()
        .await
}

async fn scenario(client: &Client, server: &DemoServer, home: &Path) {
    let date = server.last_date.to_string();

    // Connect: a wrong token is refused with a clear message, the right one is kept.
    visible(client, "#connect-form").await;
    screenshot(client, "01-connect").await;
    type_into(client, "#server-url", &server.daemon.base_url).await;
    type_into(client, "#token", &format!("stl_{}", "0".repeat(64))).await;
    click(client, "#connect-button").await;
    let message = text_of(client, "#connect-error").await;
    assert!(message.contains("refused the token"), "{message}");
    type_into(client, "#token", &server.operator_token).await;
    click(client, "#connect-button").await;

    // History: the demo's dates, newest first, with status chips.
    visible(client, "#history-rows tr[data-date]").await;
    let first = until(
        client,
        "the newest date",
        "document.querySelector('#history-rows tr')?.dataset.date",
    )
    .await;
    assert_eq!(first, json!(date));
    let chips = until(
        client,
        "status chips",
        "document.querySelectorAll('#history-rows .chip-completed').length",
    )
    .await;
    assert!(chips.as_u64().unwrap() >= 1);
    let keyring = text_of(client, "#connected-keyring").await;
    assert_eq!(keyring, "Secret Service");
    screenshot(client, "02-history").await;

    // Detail: totals, lines, payouts and the audit trail of the newest date.
    click(client, &format!("#history-rows tr[data-date='{date}'] td")).await;
    visible(client, "#detail-body").await;
    until(
        client,
        "lines",
        "document.querySelectorAll('#lines-rows tr').length > 1",
    )
    .await;
    until(
        client,
        "audit",
        "document.querySelectorAll('#audit-rows tr').length >= 1",
    )
    .await;
    let totals = until(
        client,
        "totals",
        "document.querySelectorAll('#totals-rows tr').length",
    )
    .await;
    assert!(totals.as_u64().unwrap() >= 1);
    screenshot(client, "03-detail").await;

    // Search the lines table for one merchant.
    let merchant = until(
        client,
        "a merchant",
        "document.querySelector('#lines-rows tr td')?.textContent",
    )
    .await;
    let merchant = merchant.as_str().unwrap().to_string();
    type_into(client, "#lines-search", &merchant).await;
    until(
        client,
        "the search",
        &format!("[...document.querySelectorAll('#lines-rows tr')].every(r => r.cells[0].textContent.includes({merchant:?}))"),
    )
    .await;

    // Arabic: the whole page right to left, words and numbers in Arabic.
    let select = visible(client, "#app-language").await;
    select.select_by_value("ar").await.expect("Arabic chosen");
    let dir = until(
        client,
        "rtl",
        "document.documentElement.dir === 'rtl' && document.documentElement.dir",
    )
    .await;
    assert_eq!(dir, json!("rtl"));
    assert_eq!(
        client
            .execute("return document.documentElement.lang;", vec![])
            .await
            .unwrap(),
        json!("ar")
    );
    let heading = text_of(client, "#detail-view h3").await;
    assert_eq!(heading, "الإجماليات حسب العملة");
    screenshot(client, "04-detail-arabic").await;
    visible(client, "#app-language")
        .await
        .select_by_value("en")
        .await
        .unwrap();
    until(client, "ltr", "document.documentElement.dir === 'ltr'").await;

    // Rerun: a reason and a confirmation, then the new revision is shown.
    click(client, "#rerun-button").await;
    visible(client, "#action-dialog").await;
    click(client, "#action-submit").await;
    let refusal = text_of(client, "#action-error").await;
    assert!(refusal.contains("Say why"), "{refusal}");
    type_into(client, "#action-reason", "bank file corrected").await;
    click(client, "#action-confirm").await;
    screenshot(client, "05-rerun-dialog").await;
    click(client, "#action-submit").await;
    until(
        client,
        "revision 2",
        "document.querySelector('#detail-revision')?.value === '2'",
    )
    .await;
    until(
        client,
        "completed",
        "document.querySelector('#detail-status')?.dataset.status === 'completed'",
    )
    .await;
    let revisions = until(
        client,
        "two revisions",
        "document.querySelectorAll('#revisions-rows tr').length === 2 && 2",
    )
    .await;
    assert_eq!(revisions, json!(2));
    click(client, "#revisions-rows button[data-revision='2']").await;
    until(client, "the changes", "!document.querySelector('#changes').hidden && document.querySelectorAll('#changes-rows tr').length >= 1").await;
    client
        .execute(
            "document.getElementById('revisions-table').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    screenshot(client, "06-rerun-done").await;
    let api = server.get_json(&format!("/api/v2/finance/settlement/{date}/revisions"));
    assert_eq!(
        api["items"].as_array().unwrap().len(),
        2,
        "the daemon holds exactly one new revision"
    );

    // The web view cannot reach the daemon itself (the CSP allows only the app's IPC), nor open
    // a dialog itself (no dialog permission: the export's save dialog is opened from Rust).
    let fetched = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0]).then(() => done('reached'), () => done('blocked'));",
            vec![json!(format!("{}/healthz", server.daemon.base_url))],
        )
        .await
        .expect("the fetch settled");
    assert_eq!(fetched, json!("blocked"));
    let dialog = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             window.__TAURI__.core.invoke('plugin:dialog|save', { options: {} }) \
               .then(() => done('opened'), (error) => done(String(error)));",
            vec![],
        )
        .await
        .expect("the dialog call settled");
    assert_ne!(
        dialog,
        json!("opened"),
        "the web view opened a dialog itself"
    );

    // Export writes nowhere the save dialog did not answer, even when the web view names a path.
    let elsewhere = home.join("elsewhere.csv");
    let refused = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             window.__TAURI__.core.invoke('export_csv', \
               { date: arguments[0], revision: 2, bom: false, path: arguments[1] }) \
               .then(() => done('written'), (error) => done(error.field || String(error)));",
            vec![json!(date), json!(elsewhere.to_str().unwrap())],
        )
        .await
        .expect("the export call settled");
    assert_eq!(refused, json!("path"));
    assert!(!elsewhere.exists());

    // Export CSV…: the button opens the save dialog (answered by the test build) and saves there.
    let path = export_path(home);
    click(client, "#export-button").await;
    let saved = until(client, "saved", "document.querySelector('#app-message')?.textContent.startsWith('Saved') && document.querySelector('#app-message').textContent").await;
    assert!(
        saved.as_str().unwrap().contains("settlement.csv"),
        "{saved}"
    );
    let expected = server.get_bytes(&format!(
        "/api/v2/finance/settlement/{date}/export.csv?revision=2"
    ));
    assert_eq!(std::fs::read(&path).unwrap(), expected);

    // Statistics: charts as images (PNG data URLs), never markup.
    click(client, "#nav-statistics").await;
    let from = server
        .last_date
        .checked_sub_days(chrono::Days::new(13))
        .unwrap()
        .to_string();
    set_date(client, "#statistics-from", &from).await;
    set_date(client, "#statistics-to", &date).await;
    click(client, "#statistics-apply").await;
    visible(client, "#statistics-body").await;
    for id in ["chart-daily", "chart-success", "chart-top"] {
        let loaded = until(
            client,
            id,
            &format!("document.getElementById('{id}').complete && document.getElementById('{id}').naturalWidth"),
        )
        .await;
        assert_eq!(loaded, json!(960));
        let src = client
            .execute(
                &format!("return document.getElementById('{id}').src.slice(0, 22);"),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(src, json!("data:image/png;base64,"));
    }
    let svg = client
        .execute("return document.querySelectorAll('svg').length;", vec![])
        .await
        .unwrap();
    assert_eq!(svg, json!(0));
    screenshot(client, "07-statistics").await;

    // What the app remembers on disk: the server, never the token.
    let preferences = std::fs::read_to_string(
        home.join("config")
            .join("org.settle.console")
            .join("preferences.json"),
    )
    .expect("the preferences file");
    assert!(
        preferences.contains(&server.daemon.base_url),
        "{preferences}"
    );
    assert!(!preferences.contains("stl_"), "{preferences}");

    // Sign out: the token leaves the keyring, so an empty token field no longer connects.
    click(client, "#sign-out-button").await;
    visible(client, "#connect-form").await;
    let url = visible(client, "#server-url")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        url.as_deref(),
        Some(server.daemon.base_url.as_str()),
        "the server is remembered"
    );
    type_into(client, "#token", "").await;
    click(client, "#connect-button").await;
    let message = text_of(client, "#connect-error").await;
    assert!(message.contains("none is kept"), "{message}");

    // A token revoked while connected: the next call returns to the connect screen, saying why.
    type_into(client, "#token", &server.operator_token).await;
    click(client, "#connect-button").await;
    visible(client, "#history-rows tr[data-date]").await;
    server.setup.settle(&["token", "revoke", "ana"]).assert_ok();
    click(client, "#history-apply").await;
    let message = text_of(client, "#connect-error").await;
    assert!(message.contains("refused the token"), "{message}");
    screenshot(client, "08-token-revoked").await;
}

/// Sets a date input (typing into one depends on the locale's field order).
async fn set_date(client: &Client, css: &str, value: &str) {
    client
        .execute(
            "const input = document.querySelector(arguments[0]); input.value = arguments[1]; \
             input.dispatchEvent(new Event('input', { bubbles: true }));",
            vec![json!(css), json!(value)],
        )
        .await
        .expect("the date set");
}
