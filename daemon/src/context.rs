//! What every command needs, resolved once: settings, data directory, the store, the clock, and
//! who is acting (for the audit trail) and which process holds leases.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::Duration;
use settle_core::config::{self, Settings};
use settle_core::settlement::SettlementRunner;
use settle_core::store::sqlite::SqliteStore;
use settle_core::store::SharedStore;
use settle_core::time::{Clock, SystemClock};

use crate::cli::Cli;

/// The name of the embedded store's file inside the data directory.
pub const SQLITE_FILE: &str = "settle.db";

pub struct Context {
    pub settings: Settings,
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// `cli:USER`.
    pub actor: String,
}

impl Context {
    /// Loads and validates the configuration (file + `SETTLE_*__*` environment overrides).
    pub fn load(cli: &Cli) -> Result<Context> {
        let settings = config::load(cli.config.as_deref(), std::env::vars())?;
        let data_dir = match (&cli.data_dir, &settings.data_dir) {
            (Some(dir), _) | (None, Some(dir)) => dir.clone(),
            (None, None) => default_data_dir()?,
        };
        Ok(Context {
            settings,
            data_dir,
            clock: Arc::new(SystemClock),
            actor: local_actor(),
        })
    }

    /// Uses another data directory (the demo keeps its own unless told otherwise).
    pub fn with_data_dir(mut self, data_dir: PathBuf) -> Context {
        self.data_dir = data_dir;
        self
    }

    /// The SQLite file: `store.path` (relative to the data directory) or `DATA_DIR/settle.db`.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.settings.store.path {
            Some(path) if path.is_absolute() => path.clone(),
            Some(path) => self.data_dir.join(path),
            None => self.data_dir.join(SQLITE_FILE),
        }
    }

    /// Opens the store, creating the data directory and schema if needed.
    pub async fn open_store(&self) -> Result<SharedStore> {
        let path = self.sqlite_path();
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let store = SqliteStore::open(&path)
            .await
            .with_context(|| format!("cannot open the store at {}", path.display()))?;
        Ok(Arc::new(store))
    }

    pub fn runner(&self, store: SharedStore) -> SettlementRunner {
        SettlementRunner::new(
            store,
            Arc::clone(&self.clock),
            self.settings.calendar,
            self.settings.fee_schedule.clone(),
            lease_owner(),
        )
        .with_lease_duration(Duration::seconds(self.settings.settlement.lease_seconds))
        .with_page_size(self.settings.settlement.page_size)
    }
}

fn default_data_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "settle")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .context("cannot find the platform data directory; pass --data-dir")
}

/// Creates a directory readable only by its owner (it holds financial data).
fn create_private_dir(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() || path.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("cannot create the data directory {}", path.display()))
}

/// The person at the terminal, as the audit trail names them.
fn local_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// This process, as leases name it: `host:pid`.
fn lease_owner() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}
