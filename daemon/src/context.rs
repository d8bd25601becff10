//! What every command needs, resolved once: settings, data directory, the store, the clock, and
//! who is acting (for the audit trail) and which process holds leases.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use chrono::Duration;
use settle_core::config::{self, Settings, StoreKind, StoreSettings};
use settle_core::idempotency::Idempotency;
use settle_core::notify::{Notifier, WebhookSettings};
use settle_core::payments::PaymentService;
use settle_core::payout::PayoutSender;
use settle_core::provider::{PayoutProvider, ProviderSettings};
use settle_core::reconcile::ReconciliationService;
use settle_core::secret::{self, Secret};
use settle_core::settlement::{SettlementCommands, SettlementRunner};
use settle_core::store::timed::TimedStore;
use settle_core::store::SharedStore;
use settle_core::time::{Clock, SystemClock};
use settle_store_mongo::{redact_uri, MongoStore};
use settle_store_sqlite::SqliteStore;

use crate::cli::Cli;
use crate::exit::Exit;

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
        let mut settings = config::load(cli.config.as_deref(), std::env::vars())?;
        apply_store_options(cli, &mut settings.store)?;
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

    /// Opens the configured store: the SQLite file (creating the data directory and schema if
    /// needed) or the MongoDB database (creating its indexes if needed). A MongoDB password from
    /// the environment or a credential is put into the URI here, and the URI is only ever shown
    /// redacted. Every operation of the store is timed for telemetry.
    pub async fn open_store(&self) -> Result<SharedStore> {
        let store = self.open_bare_store().await?;
        Ok(Arc::new(TimedStore::new(store)))
    }

    async fn open_bare_store(&self) -> Result<SharedStore> {
        match self.settings.store.kind {
            StoreKind::Sqlite => {
                let path = self.sqlite_path();
                if let Some(parent) = path.parent() {
                    create_private_dir(parent)?;
                }
                let store = SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("cannot open the store at {}", path.display()))?;
                Ok(Arc::new(store))
            }
            StoreKind::Mongodb => {
                let (uri, database) = self.mongo_target()?;
                let uri = with_password(&uri, mongo_password().as_ref());
                let store = MongoStore::connect(&uri, &database).await?;
                tracing::info!(uri = %redact_uri(&uri), database = %database, "MongoDB store open");
                Ok(Arc::new(store))
            }
        }
    }

    /// The MongoDB URI (as given, without a password from the environment) and database.
    fn mongo_target(&self) -> Result<(String, String)> {
        let store = &self.settings.store;
        let uri = store
            .uri
            .clone()
            .ok_or_else(|| Exit::bad_input(MISSING_URI))?;
        Ok((uri, store.database.clone()))
    }

    /// Where the data lives, for people: the SQLite file, or the redacted URI and database.
    pub fn store_description(&self) -> String {
        let store = &self.settings.store;
        match (store.kind, &store.uri) {
            (StoreKind::Mongodb, Some(uri)) => {
                format!(
                    "mongodb at {}, database {}",
                    redact_uri(uri),
                    store.database
                )
            }
            (StoreKind::Mongodb, None) => format!("mongodb, database {}", store.database),
            (StoreKind::Sqlite, _) => self.sqlite_path().display().to_string(),
        }
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

    /// The settlement commands (trigger, retry, rerun, approvals) over `runner`.
    pub fn settlement_commands(
        &self,
        store: SharedStore,
        runner: Arc<SettlementRunner>,
    ) -> SettlementCommands {
        SettlementCommands::new(
            store,
            runner,
            self.settings.calendar,
            Arc::clone(&self.clock),
            self.settings.server.require_rerun_approval,
        )
    }

    /// A runner that neither pays out nor notifies (the demo adds its own sandbox payouts).
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
        .with_amount_limits(self.settings.payments.amount_limits.clone())
    }

    /// The reconciliation service on `store`, with this context's calendar, clock and rules.
    pub fn reconciliation_service(&self, store: SharedStore) -> ReconciliationService {
        ReconciliationService::new(
            store,
            self.settings.calendar,
            Arc::clone(&self.clock),
            self.settings.reconciliation.clone(),
        )
    }
}

/// Where a MongoDB password comes from when the URI names a user without one.
pub const MONGO_PASSWORD_VARIABLE: &str = "SETTLE_MONGO_PASSWORD";
pub const MONGO_PASSWORD_CREDENTIAL: &str = "mongo-password";

pub const MISSING_URI: &str = "the MongoDB store needs a connection string: pass --mongo-uri, set \
     SETTLE_MONGO_URI, or set [store] uri in the configuration file";

/// Applies the command line's store options (and their environment variables, `SETTLE_STORE`,
/// `SETTLE_MONGO_URI`, `SETTLE_MONGO_DB`) over the file's `[store]` section: the command line
/// wins. `--mongo-uri` without `--store` means MongoDB. Mistakes are bad input (exit 2), and no
/// message repeats a URI. A missing URI is found when the store is opened (or by check-config).
pub fn apply_store_options(cli: &Cli, store: &mut StoreSettings) -> Result<()> {
    if let Some(uri) = &cli.mongo_uri {
        // Not repeated even redacted: a malformed URI may hide its password from `redact_uri`.
        config::check_mongo_uri(uri)
            .map_err(|message| Exit::bad_input(format!("--mongo-uri: {message}")))?;
    }
    if let Some(database) = &cli.mongo_db {
        config::check_mongo_database(database)
            .map_err(|message| Exit::bad_input(format!("--mongo-db: {message}")))?;
    }
    let kind = match (cli.store, &cli.mongo_uri) {
        (Some(kind), _) => kind,
        (None, Some(_)) => StoreKind::Mongodb,
        (None, None) => store.kind,
    };
    if kind == StoreKind::Sqlite && (cli.mongo_uri.is_some() || cli.mongo_db.is_some()) {
        return Err(Exit::bad_input(
            "--mongo-uri and --mongo-db (SETTLE_MONGO_URI, SETTLE_MONGO_DB) apply only to the \
             MongoDB store, but the store is sqlite: add --store mongodb",
        ));
    }
    store.kind = kind;
    if let Some(uri) = &cli.mongo_uri {
        store.uri = Some(uri.clone());
    }
    if let Some(database) = &cli.mongo_db {
        store.database = database.clone();
    }
    Ok(())
}

/// The MongoDB password from `SETTLE_MONGO_PASSWORD` or the systemd credential `mongo-password`.
pub fn mongo_password() -> Option<Secret> {
    secret::from_environment(MONGO_PASSWORD_VARIABLE, MONGO_PASSWORD_CREDENTIAL)
}

/// Puts `password` (percent-encoded) into the URI's userinfo when the URI names a user without a
/// password. A URI that carries its own password keeps it; one without a user is left as it is
/// (with a warning, since the password then has nobody to authenticate).
pub fn with_password(uri: &str, password: Option<&Secret>) -> String {
    let Some(password) = password else {
        return uri.to_string();
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
        tracing::warn!(
            "{MONGO_PASSWORD_VARIABLE} (or the credential {MONGO_PASSWORD_CREDENTIAL}) is set but the \
             MongoDB URI names no user: the password is not used"
        );
        return uri.to_string();
    };
    let user = match userinfo.split_once(':') {
        Some((_, existing)) if !existing.is_empty() => return uri.to_string(),
        Some((user, _)) => user,
        None => userinfo,
    };
    format!(
        "{scheme}://{user}:{}@{hosts}{tail}",
        percent_encode(password.expose())
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
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

/// The person at the terminal, as the audit trail names them: `cli:` + `$USER` (else `$LOGNAME`,
/// else `$USERNAME`), and without any of them the OS account this process runs as.
fn local_actor() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(os_account);
    format!("cli:{user}")
}

/// The account this process runs as, asked of the OS: on Unix the effective uid's name in the
/// password database (`uid:<n>` when it has none, as in a container with an arbitrary uid), on
/// Windows the account name.
fn os_account() -> String {
    match whoami::username() {
        Ok(name) if !name.trim().is_empty() => name,
        _ => unnamed_account(),
    }
}

#[cfg(unix)]
fn unnamed_account() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    format!("uid:{uid}")
}

#[cfg(not(unix))]
fn unnamed_account() -> String {
    "unknown".to_string()
}

/// This process, as leases name it: `host:pid`.
fn lease_owner() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_from_the_environment_goes_into_the_userinfo_encoded() {
        let password = Secret::new("p@ss:w/rd%");
        assert_eq!(
            with_password(
                "mongodb://settle@db1:27017,db2/?replicaSet=rs0",
                Some(&password)
            ),
            "mongodb://settle:p%40ss%3Aw%2Frd%25@db1:27017,db2/?replicaSet=rs0"
        );
        assert_eq!(
            with_password("mongodb+srv://settle:@cluster.example", Some(&password)),
            "mongodb+srv://settle:p%40ss%3Aw%2Frd%25@cluster.example"
        );
        // The URI's own password is the user's choice and wins.
        assert_eq!(
            with_password("mongodb://settle:own@db1/", Some(&password)),
            "mongodb://settle:own@db1/"
        );
        // Without a user there is nobody to authenticate.
        assert_eq!(
            with_password("mongodb://db1/?a=b@c", Some(&password)),
            "mongodb://db1/?a=b@c"
        );
        assert_eq!(
            with_password("mongodb://settle@db1/", None),
            "mongodb://settle@db1/"
        );
    }
}
