//! What every command needs, resolved once: settings, data directory, the store, the clock, and
//! who is acting (for the audit trail) and which process holds leases.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use chrono::Duration;
use settle_core::config::{self, Settings};
use settle_core::idempotency::Idempotency;
use settle_core::notify::{Notifier, WebhookSettings};
use settle_core::payments::PaymentService;
use settle_core::payout::PayoutSender;
use settle_core::provider::{PayoutProvider, ProviderSettings};
use settle_core::secret;
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

    /// The settlement runner, paying out and notifying when those are configured.
    pub fn runner(&self, store: SharedStore) -> Result<SettlementRunner> {
        let mut runner = self.runner_without_payouts(store.clone());
        if let Some(sender) = self.payout_sender(store)? {
            runner = runner.with_payouts(sender);
        }
        if let Some(notifier) = self.notifier()? {
            runner = runner.with_notifier(notifier);
        }
        Ok(runner)
    }

    /// A runner that neither pays out nor notifies (the demo's: its money is not real).
    pub fn runner_without_payouts(&self, store: SharedStore) -> SettlementRunner {
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

    /// Sends payouts through the configured provider; `None` when no provider is configured.
    pub fn payout_sender(&self, store: SharedStore) -> Result<Option<PayoutSender>> {
        let Some(base_url) = &self.settings.provider_url else {
            return Ok(None);
        };
        let provider = PayoutProvider::new(ProviderSettings {
            base_url: base_url.clone(),
            token: secret::from_environment(PROVIDER_TOKEN_VARIABLE, PROVIDER_TOKEN_CREDENTIAL),
            policy: self.settings.retry.payment.clone(),
        })
        .context("payouts.provider_url")?;
        Ok(Some(PayoutSender::new(
            store,
            Arc::new(provider),
            Arc::clone(&self.clock),
        )))
    }

    fn notifier(&self) -> Result<Option<Notifier>> {
        let Some(url) = &self.settings.webhook_url else {
            return Ok(None);
        };
        let Some(secret) =
            secret::from_environment(WEBHOOK_SECRET_VARIABLE, WEBHOOK_SECRET_CREDENTIAL)
        else {
            bail!(
                "notifications.webhook_url is set but there is no signing secret: set {WEBHOOK_SECRET_VARIABLE} \
                 or the systemd credential {WEBHOOK_SECRET_CREDENTIAL}"
            );
        };
        let notifier = Notifier::new(WebhookSettings {
            url: url.clone(),
            secret,
            policy: self.settings.retry.external_api.clone(),
        })
        .context("notifications.webhook_url")?;
        Ok(Some(notifier))
    }

    pub fn payment_service(&self, store: SharedStore) -> PaymentService {
        let idempotency = Idempotency::new(store.clone(), self.settings.idempotency);
        PaymentService::new(
            store,
            idempotency,
            self.settings.calendar,
            Arc::clone(&self.clock),
        )
    }
}

/// Where the provider's API token comes from (never the configuration file).
pub const PROVIDER_TOKEN_VARIABLE: &str = "SETTLE_PROVIDER_TOKEN";
pub const PROVIDER_TOKEN_CREDENTIAL: &str = "provider-token";
/// Where the webhook signing secret comes from.
pub const WEBHOOK_SECRET_VARIABLE: &str = "SETTLE_WEBHOOK_SECRET";
pub const WEBHOOK_SECRET_CREDENTIAL: &str = "webhook-secret";

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
