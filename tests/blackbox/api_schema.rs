//! The API document proven against the running daemon: schemathesis generates requests from
//! `GET /api/v2/openapi.json` and checks every answer against it, on the embedded store and MongoDB.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use settle_tests::mongo::FreshDatabase;

use crate::daemon::Setup;

/// The scheduler is off so that only the generated requests settle dates.
const CONFIG: &str = "[scheduler]\nenabled = false\n";
/// Examples per operation and phase: enough to reach every documented refusal, and one store's
/// run stays well under 90 s on a shared two-core machine.
const MAX_EXAMPLES: &str = "25";
/// What a whole run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// The schemathesis settings of this suite (checks narrowed per operation, with the reasons).
const CONFIG_FILE: &str = "blackbox/schemathesis.toml";

/// The schemathesis command `scripts/test.sh` installed: `SETTLE_TEST_SCHEMATHESIS`, else the
/// tools virtual environment's.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SETTLE_TEST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/schemathesis")
        });
    assert!(
        path.is_file(),
        "schemathesis is not installed at {}: run ./scripts/test.sh (it installs the pinned \
         version into .tools/venv), or set SETTLE_TEST_SCHEMATHESIS",
        path.display()
    );
    path
}

/// Starts a daemon on `setup`, fetches its document and runs schemathesis against it with an
/// admin token; fails with schemathesis' output unless every check passed.
async fn document_holds(setup: Setup, store: &str) {
    let binary = schemathesis();
    let admin = setup.token("schema-admin", "admin");
    // What `DELETE /api/v2/tokens/{name}` revokes (pinned in the settings file).
    setup.token("schema-victim", "viewer");
    let daemon = setup.start();
    let document = daemon
        .get("/api/v2/openapi.json")
        .bearer(&admin)
        .send()
        .await
        .expect(200);
    let document_path = setup.sandbox.write(
        "openapi.json",
        serde_json::to_vec_pretty(&document).expect("the document"),
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(CONFIG_FILE);
    let started = Instant::now();
    let output = tokio::task::block_in_place(|| {
        let mut command = Command::new(&binary);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&document_path)
            .args(["--url", &daemon.base_url])
            .args(["-H", &format!("Authorization: Bearer {admin}")])
            .args(["--checks", "all"])
            .args(["--max-examples", MAX_EXAMPLES])
            // The same requests every run (and no database of past failures between runs).
            .arg("--generation-deterministic")
            .args(["--workers", "2"])
            .arg("--no-color")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .current_dir(setup.sandbox.path())
            .stdin(Stdio::null());
        run_with_timeout(command, RUN_TIMEOUT)
    });
    let elapsed = started.elapsed();
    let (code, stdout, stderr) = output;
    println!(
        "schemathesis on the {store} store: exit {code:?} after {:.1} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        code,
        Some(0),
        "schemathesis found answers that break the document on the {store} store \
         (after {:.1} s):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- daemon ---\n{}",
        elapsed.as_secs_f64(),
        daemon.output()
    );
}

/// Runs `command`, killing it (by its own pid) when it outlives `limit`: (exit code, stdout,
/// stderr).
fn run_with_timeout(mut command: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(stdout));
    let stderr = read(Box::new(stderr));
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        code,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_holds_against_the_daemon_on_sqlite() {
    document_holds(Setup::sqlite(CONFIG), "SQLite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_holds_against_the_daemon_on_mongodb() {
    let database = FreshDatabase::new();
    document_holds(Setup::with_options(CONFIG, database.options()), "MongoDB").await;
}
