//! Choosing the store from the command line and the configuration file, on the real binary:
//! the same commands give the same figures on SQLite and MongoDB, `[store]` selects MongoDB, a
//! password never lives in the file nor appears in any output, an unreachable server is a clear
//! start-up error, and `SETTLE_MONGO_PASSWORD` (or the `mongo-password` credential) authenticates.
//!
//! The MongoDB server is `MONGODB_URI` (a real one of the user's) or the SecantusDB server that
//! `scripts/test.sh` starts (`SETTLE_TEST_MONGODB_URI`); every test uses a fresh database and drops
//! it at the end.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use settle_tests::mongo::FreshDatabase;

use crate::support::{read_export, transactions_csv, Ran, Sandbox};

/// The environment the store options read; cleared so the caller's shell cannot change a test.
const STORE_VARIABLES: &[&str] = &[
    "SETTLE_STORE",
    "SETTLE_MONGO_URI",
    "SETTLE_MONGO_DB",
    "SETTLE_MONGO_PASSWORD",
    "CREDENTIALS_DIRECTORY",
];

const FEES: &str = r#"
[fees.default]
percent = "2.5"
fixed = { USD = "0.30" }
refund_returns_percent = true
"#;

/// 2024-03-10 in Aden (UTC+3): payments, refunds, a chargeback, an adjustment, several merchants
/// and currencies, a failed payment, and one transaction belonging to the next date.
fn day_csv() -> String {
    transactions_csv(&[
        "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T00:00:00+03:00,",
        "p-2,m-1,payment,completed,10.10,USD,wallet,2024-03-10T23:59:59.999+03:00,",
        "r-1,m-1,refund,completed,40.00,USD,card,2024-03-10T12:00:00+03:00,p-1",
        "p-3,m-1,payment,failed,5.00,USD,card,2024-03-10T12:00:00+03:00,",
        "c-1,m-1,chargeback,completed,10.00,USD,wallet,2024-03-10T13:00:00+03:00,p-2",
        "a-1,m-2,adjustment,completed,-3.00,USD,other,2024-03-10T14:00:00+03:00,",
        "p-4,m-2,payment,completed,0.01,USD,cash,2024-03-10T15:00:00+03:00,",
        "p-5,m-2,payment,completed,1.234,KWD,card,2024-03-10T16:00:00+03:00,",
        "p-6,m-3,payment,pending,7.00,SAR,card,2024-03-10T17:00:00+03:00,",
        "p-7,m-3,payment,completed,1500,YER,cash,2024-03-10T18:00:00+03:00,",
        "p-next,m-1,payment,completed,50.00,USD,card,2024-03-11T00:00:00+03:00,",
    ])
}

/// Imported after 2024-03-10 is settled: it lands late on 2024-03-11.
fn late_csv() -> String {
    transactions_csv(&["p-late,m-2,payment,completed,20.00,USD,card,2024-03-10T20:00:00+03:00,"])
}

/// Runs `settle` in the sandbox with the store variables cleared, then `env` set.
fn settle(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = sandbox.command(args);
    for name in STORE_VARIABLES {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run settle");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `options` then `args`, as one argument list.
fn with<'a>(options: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    options
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect()
}

/// The same session of commands on one store: import, run, show, refuse a second run, a late
/// arrival, the next date, export both dates. Returns the two exports' bytes.
fn settle_two_days(sandbox: &Sandbox, options: &[String]) -> (Vec<u8>, Vec<u8>) {
    sandbox.write("settle.toml", FEES);
    let day = sandbox.write("day.csv", day_csv());
    let late = sandbox.write("late.csv", late_csv());
    let config = ["--config", "settle.toml"];
    let run = |args: &[&str]| {
        let args: Vec<&str> = with(options, &config)
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        settle(sandbox, &args, &[])
    };

    let imported = run(&["import", day.to_str().unwrap()]);
    imported.assert_ok();
    assert!(
        imported
            .stdout
            .contains("11 rows, 11 new, 0 already present"),
        "{}",
        imported.stdout
    );
    // Importing again skips every row as already present.
    let again = run(&["import", day.to_str().unwrap()]);
    again.assert_ok();
    assert!(
        again.stdout.contains("11 rows, 0 new, 11 already present"),
        "{}",
        again.stdout
    );

    let ran = run(&["run", "--date", "2024-03-10"]);
    ran.assert_ok();
    assert!(
        ran.stdout
            .contains("settled 2024-03-10 revision 1: 5 merchant line(s)"),
        "{}",
        ran.stdout
    );
    let shown = run(&["show", "--date", "2024-03-10"]);
    shown.assert_ok();
    assert!(shown.stdout.contains("completed"), "{}", shown.stdout);
    let again = run(&["run", "--date", "2024-03-10"]);
    again.assert_code(3);
    assert!(again.stderr.contains("already settled"), "{}", again.stderr);

    let imported = run(&["import", late.to_str().unwrap()]);
    imported.assert_ok();
    assert!(
        imported.stdout.contains("marked late"),
        "{}",
        imported.stdout
    );
    run(&["run", "--date", "2024-03-11"]).assert_ok();
    let shown = run(&["show", "--date", "2024-03-11"]);
    shown.assert_ok();
    assert!(shown.stdout.contains("p-late"), "{}", shown.stdout);

    for date in ["2024-03-10", "2024-03-11"] {
        let out = format!("export-{date}.csv");
        run(&["export", "--date", date, "--out", &out]).assert_ok();
    }
    let read =
        |date: &str| std::fs::read(sandbox.path().join(format!("export-{date}.csv"))).unwrap();
    (read("2024-03-10"), read("2024-03-11"))
}

#[test]
fn the_same_commands_give_the_same_export_on_mongodb_and_sqlite() {
    let database = FreshDatabase::new();
    let on_mongodb = Sandbox::new();
    let mongodb = settle_two_days(&on_mongodb, &database.options());
    let on_sqlite = Sandbox::new();
    let sqlite = settle_two_days(&on_sqlite, &[]);

    assert!(
        !on_mongodb.data_dir().join("settle.db").exists(),
        "the MongoDB run must not create a SQLite file"
    );
    assert!(on_sqlite.data_dir().join("settle.db").exists());
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(text(&mongodb.0), text(&sqlite.0), "2024-03-10 differs");
    assert_eq!(text(&mongodb.1), text(&sqlite.1), "2024-03-11 differs");

    // And the figures are the right ones, not merely the same.
    let rows = read_export(&text(&mongodb.0));
    assert_eq!(rows.len(), 5, "{rows:?}");
    let m1 = rows
        .iter()
        .find(|r| r["merchant_id"] == "m-1" && r["currency"] == "USD")
        .unwrap();
    assert_eq!((m1["fees"].as_str(), m1["net"].as_str()), ("2.35", "57.75"));
    let late = read_export(&text(&mongodb.1));
    let m2 = late
        .iter()
        .find(|r| r["merchant_id"] == "m-2" && r["currency"] == "USD")
        .unwrap();
    assert_eq!(m2["late_count"], "1", "{m2:?}");
}

#[test]
fn the_configuration_file_selects_mongodb_and_the_command_line_wins() {
    let database = FreshDatabase::new();
    let sandbox = Sandbox::new();
    sandbox.write(
        "mongo.toml",
        format!(
            "[store]\nkind = \"mongodb\"\nuri = \"{}\"\ndatabase = \"{}\"\n",
            database.uri, database.name
        ),
    );
    let csv = sandbox.write("day.csv", day_csv());

    let checked = settle(&sandbox, &["--config", "mongo.toml", "check-config"], &[]);
    checked.assert_ok();
    assert!(
        checked
            .stdout
            .contains(&format!("store      mongodb at {}", database.uri)),
        "{}",
        checked.stdout
    );
    assert!(
        checked
            .stdout
            .contains(&format!("database {}", database.name)),
        "{}",
        checked.stdout
    );

    settle(
        &sandbox,
        &["--config", "mongo.toml", "import", csv.to_str().unwrap()],
        &[],
    )
    .assert_ok();
    assert!(!sandbox.data_dir().join("settle.db").exists());

    // Another directory, no file: the same database named by the environment sees the import.
    let elsewhere = Sandbox::new();
    let env = [
        ("SETTLE_MONGO_URI", database.uri.as_str()),
        ("SETTLE_MONGO_DB", database.name.as_str()),
    ];
    settle(&elsewhere, &["run", "--date", "2024-03-10"], &env).assert_ok();
    let exported = settle(&elsewhere, &["export", "--date", "2024-03-10"], &env);
    exported.assert_ok();
    assert_eq!(
        read_export(&exported.stdout).len(),
        5,
        "{}",
        exported.stdout
    );

    // The command line wins over the file: --store sqlite uses the data directory.
    let ran = settle(
        &sandbox,
        &["--config", "mongo.toml", "--store", "sqlite", "history"],
        &[],
    );
    ran.assert_ok();
    assert!(
        ran.stdout.contains("no settlements match"),
        "{}",
        ran.stdout
    );
    assert!(sandbox.data_dir().join("settle.db").exists());
    // And so does --mongo-db over `[store] database`: another (empty) database.
    let other = FreshDatabase::new();
    let ran = settle(
        &sandbox,
        &[
            "--config",
            "mongo.toml",
            "--mongo-db",
            &other.name,
            "history",
        ],
        &[],
    );
    ran.assert_ok();
    assert!(
        ran.stdout.contains("no settlements match"),
        "{}",
        ran.stdout
    );
}

#[test]
fn a_password_in_the_configuration_file_is_refused_by_its_key() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "settle.toml",
        "[store]\nkind = \"mongodb\"\nuri = \"mongodb://settle:hunter2@db.example:27017/\"\n",
    );
    for args in [
        &["--config", "settle.toml", "check-config"][..],
        &["--config", "settle.toml", "history"][..],
    ] {
        let ran = settle(&sandbox, args, &[]);
        ran.assert_code(2);
        assert!(ran.stderr.contains("store.uri:"), "{}", ran.stderr);
        assert!(
            ran.stderr.contains("SETTLE_MONGO_PASSWORD"),
            "{}",
            ran.stderr
        );
        assert!(
            !ran.stdout.contains("hunter2") && !ran.stderr.contains("hunter2"),
            "the password is echoed:\n{}{}",
            ran.stdout,
            ran.stderr
        );
    }

    // Without the password the same file is fine, and check-config names the store.
    sandbox.write(
        "settle.toml",
        "[store]\nkind = \"mongodb\"\nuri = \"mongodb://settle@db.example:27017/?replicaSet=rs0\"\n",
    );
    let ran = settle(&sandbox, &["--config", "settle.toml", "check-config"], &[]);
    ran.assert_ok();
    assert!(
        ran.stdout.contains(
            "store      mongodb at mongodb://settle:****@db.example:27017/?replicaSet=rs0, database settle"
        ),
        "{}",
        ran.stdout
    );
}

#[test]
fn store_options_that_do_not_fit_are_refused_as_bad_input() {
    let sandbox = Sandbox::new();
    for (args, expected) in [
        (
            &["--store", "mongodb", "history"][..],
            "the MongoDB store needs a connection string",
        ),
        (
            &["--store", "mongodb", "check-config"][..],
            "the MongoDB store needs a connection string",
        ),
        (
            &["--store", "sqlite", "--mongo-db", "x", "history"][..],
            "apply only to the MongoDB store",
        ),
        (
            &["--mongo-uri", "settle:hunter2@db.example", "history"][..],
            "--mongo-uri: expected a mongodb:// or mongodb+srv:// URI",
        ),
        (
            &[
                "--mongo-uri",
                "mongodb://db.example/",
                "--mongo-db",
                "a.b",
                "history",
            ][..],
            "--mongo-db:",
        ),
        (
            &["--store", "postgres", "history"][..],
            "possible values: sqlite, mongodb",
        ),
    ] {
        let ran = settle(&sandbox, args, &[]);
        ran.assert_code(2);
        assert!(ran.stderr.contains(expected), "{args:?}: {}", ran.stderr);
        assert_never_printed(&ran, &["hunter2"]);
    }
    assert!(!sandbox.data_dir().exists(), "nothing is created");
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[track_caller]
fn assert_never_printed(ran: &Ran, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !ran.stdout.contains(secret) && !ran.stderr.contains(secret),
            "{secret:?} was printed:\nstdout:\n{}\nstderr:\n{}",
            ran.stdout,
            ran.stderr
        );
    }
}

#[test]
fn an_unreachable_server_is_a_clear_error_that_never_shows_the_password() {
    let sandbox = Sandbox::new();
    let csv = sandbox.write("day.csv", day_csv());
    let port = closed_port();
    let uri = format!("mongodb://settle:hunter2@127.0.0.1:{port}/?serverSelectionTimeoutMS=500");
    let expected = format!("cannot reach MongoDB at 127.0.0.1:{port}");

    // On the command line (with debug logs), and from the environment.
    let ran = settle(
        &sandbox,
        &[
            "-vv",
            "--store",
            "mongodb",
            "--mongo-uri",
            &uri,
            "import",
            csv.to_str().unwrap(),
        ],
        &[],
    );
    ran.assert_code(1);
    assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    assert_never_printed(&ran, &["hunter2"]);

    let ran = settle(
        &sandbox,
        &["run", "--date", "2024-03-10"],
        &[("SETTLE_MONGO_URI", &uri), ("SETTLE_STORE", "mongodb")],
    );
    ran.assert_code(1);
    assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    assert_never_printed(&ran, &["hunter2"]);

    // check-config shows the URI redacted and does not connect.
    let ran = settle(&sandbox, &["--mongo-uri", &uri, "check-config"], &[]);
    ran.assert_ok();
    assert!(
        ran.stdout.contains(&format!(
            "mongodb at mongodb://settle:****@127.0.0.1:{port}/"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("password: in the URI"),
        "{}",
        ran.stdout
    );
    assert_never_printed(&ran, &["hunter2"]);
    // --help does not show the environment's URI either.
    let ran = settle(&sandbox, &["--help"], &[("SETTLE_MONGO_URI", &uri)]);
    ran.assert_ok();
    assert_never_printed(&ran, &["hunter2"]);
}

#[test]
fn the_password_from_the_environment_is_put_into_the_uri_but_never_printed() {
    let sandbox = Sandbox::new();
    let port = closed_port();
    let uri = format!("mongodb://settle@127.0.0.1:{port}/?serverSelectionTimeoutMS=500");
    let password = "p@ss w:rd/%x";
    let encoded = "p%40ss%20w%3Ard%2F%25x";

    let ran = settle(
        &sandbox,
        &["-vv", "--mongo-uri", &uri, "history"],
        &[("SETTLE_MONGO_PASSWORD", password)],
    );
    ran.assert_code(1);
    assert!(
        ran.stderr
            .contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
        "{}",
        ran.stderr
    );
    assert_never_printed(&ran, &[password, encoded, "p@ss"]);

    let ran = settle(
        &sandbox,
        &["--mongo-uri", &uri, "check-config"],
        &[("SETTLE_MONGO_PASSWORD", password)],
    );
    ran.assert_ok();
    assert!(
        ran.stdout.contains("password: from SETTLE_MONGO_PASSWORD"),
        "{}",
        ran.stdout
    );
    assert_never_printed(&ran, &[password, encoded]);
}

/// A SecantusDB server of the test's own, with authentication on: the binary `scripts/test.sh`
/// installed (`SETTLE_TEST_SECANTUSD`, else `.tools/venv/bin/secantusd-py`).
fn secantusd() -> Option<PathBuf> {
    let path = std::env::var_os("SETTLE_TEST_SECANTUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/secantusd-py")
        });
    path.is_file().then_some(path)
}

struct Server {
    child: Child,
}

impl Server {
    fn start(binary: &Path, port: u16, storage: &Path, auth: bool) -> Server {
        let mut command = Command::new(binary);
        command
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--standalone",
            ])
            .arg("--storage-path")
            .arg(storage)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            command.arg("--auth");
        }
        let server = Server {
            child: command.spawn().expect("start secantusd-py"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "secantusd-py did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Stops the server cleanly (SIGTERM, so it checkpoints what it holds), waiting for it to exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_password_from_the_environment_or_a_credential_authenticates() {
    let Some(binary) = secantusd() else {
        eprintln!(
            "skipped: no secantusd-py (run ./scripts/test.sh, or set SETTLE_TEST_SECANTUSD) to \
             start a server with authentication"
        );
        return;
    };
    let python = binary.with_file_name("python");
    let storage = tempfile::tempdir().unwrap();
    let port = closed_port();
    let password = "p@ss w:rd/%x";

    // Users are provisioned before authentication is switched on (SecantusDB's way, as mongod's).
    let server = Server::start(&binary, port, storage.path(), false);
    let created = Command::new(&python)
        .arg("-c")
        .arg(
            "import sys; from pymongo import MongoClient; \
             c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000); \
             c.admin.command('createUser', 'settle', pwd=sys.argv[2], roles=['root'])",
        )
        .arg(format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
        .arg(password)
        .output()
        .expect("run the venv's python");
    assert!(
        created.status.success(),
        "createUser: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    server.stop();
    let _server = Server::start(&binary, port, storage.path(), true);

    let sandbox = Sandbox::new();
    let csv = sandbox.write("day.csv", day_csv());
    let uri = format!("mongodb://settle@127.0.0.1:{port}/?directConnection=true&authSource=admin");
    let options = ["--mongo-uri", uri.as_str(), "--mongo-db", "settle_auth"];
    let run = |tail: &[&str], env: &[(&str, &str)]| {
        let mut args: Vec<&str> = options.to_vec();
        args.extend_from_slice(tail);
        settle(&sandbox, &args, env)
    };

    // From the environment: percent-encoded into the URI, and the server accepts it.
    let ran = run(
        &["import", csv.to_str().unwrap()],
        &[("SETTLE_MONGO_PASSWORD", password)],
    );
    ran.assert_ok();
    assert_never_printed(&ran, &[password]);

    // From the systemd credential `mongo-password` (a trailing newline is dropped).
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("mongo-password"),
        format!("{password}\n"),
    )
    .unwrap();
    let directory = credentials.path().to_str().unwrap();
    let ran = run(
        &["run", "--date", "2024-03-10"],
        &[("CREDENTIALS_DIRECTORY", directory)],
    );
    ran.assert_ok();
    assert!(ran.stdout.contains("settled 2024-03-10"), "{}", ran.stdout);

    // A wrong password, or none, is refused by the server, and never printed.
    let ran = run(&["history"], &[("SETTLE_MONGO_PASSWORD", "not-it-42")]);
    ran.assert_code(1);
    assert!(
        ran.stderr
            .contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
        "{}",
        ran.stderr
    );
    assert_never_printed(&ran, &["not-it-42"]);
    run(&["history"], &[]).assert_code(1);
}
