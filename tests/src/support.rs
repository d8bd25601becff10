//! Helpers for black-box tests: find the real `settle` binary, run it in a temporary directory,
//! write CSV fixtures, and open the same SQLite store to look at what was written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use settle_core::store::SharedStore;
use settle_store_sqlite::SqliteStore;

/// The `settle` binary built next to this test binary (`SETTLE_BIN` overrides).
pub fn settle_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SETTLE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/blackbox-HASH -> target/<profile>/settle
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join(format!("settle{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace`, as scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A throw-away working directory with its own data directory and optional config file.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// What a finished `settle` process left behind.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Ran {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Ran {
        assert_eq!(
            self.code, code,
            "unexpected exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Sandbox {
    // Making one creates a directory: not what `Default` suggests.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Writes a file in the sandbox and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write fixture");
        path
    }

    /// A `settle` command in the sandbox with `--data-dir` set and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(settle_bin());
        command
            .current_dir(self.path())
            .env_remove("SETTLE_CONFIG")
            .env_remove("SETTLE_FAILPOINTS")
            .env_remove("SETTLE_LOG")
            .env_remove("SETTLE_STORE")
            .env_remove("SETTLE_MONGO_URI")
            .env_remove("SETTLE_MONGO_DB")
            .env_remove("SETTLE_MONGO_PASSWORD")
            .env("USER", "tester")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args);
        for (name, _) in std::env::vars() {
            // Configuration overrides, and OpenTelemetry's own variables (an endpoint in the
            // caller's shell would turn export on).
            if (name.starts_with("SETTLE_") && name.contains("__")) || name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        Ran::from(self.command(args).output().expect("run settle"))
    }

    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        Ran::from(command.output().expect("run settle"))
    }

    /// Opens the sandbox's store directly, to check what the binary wrote.
    pub async fn store(&self) -> SharedStore {
        Arc::new(
            SqliteStore::open(self.data_dir().join("settle.db"))
                .await
                .expect("open store"),
        )
    }
}

/// The header every transactions fixture uses.
pub const CSV_HEADER: &str =
    "external_ref,merchant_id,kind,status,amount,currency,method,occurred_at,refund_of";

/// A transactions CSV from rows written after the header.
pub fn transactions_csv(rows: &[&str]) -> String {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

/// Parses an export CSV into header-keyed rows.
pub fn read_export(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|record| {
            let record = record.expect("record");
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
