//! Configuration: one TOML file plus `SETTLE_SECTION__KEY` environment overrides, validated in full.
//! Every problem is reported with its key (not only the first), and defaults work with no file at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use toml::{Table, Value};

use crate::calendar::{parse_timezone, BusinessCalendar, Cutoff, DEFAULT_GRACE_MINUTES};
use crate::idempotency::IdempotencySettings;
use crate::limits::{AmountLimits, MAX_AMOUNT_MINOR_CEILING};
use crate::model::fees::{AmountByCurrency, FeeRule, FeeSchedule, MerchantFees};
use crate::model::PaymentMethod;
use crate::money::{Currency, Money};
use crate::retry::{PolicyName, RetryPolicy};
use crate::settlement::runner::{DEFAULT_LEASE_SECONDS, DEFAULT_PAGE_SIZE};
pub use crate::telemetry::settings::{OtlpProtocol, TelemetrySettings};

/// Prefix of environment overrides: `SETTLE_BUSINESS__TIMEZONE=Asia/Riyadh` sets `business.timezone`.
pub const ENV_PREFIX: &str = "SETTLE_";
const ENV_SEPARATOR: &str = "__";

/// The sections (and `data_dir`) a configuration file may have.
const TOP_LEVEL_KEYS: &[&str] = &[
    "business",
    "fees",
    "store",
    "settlement",
    "data_dir",
    "idempotency",
    "payments",
    "payouts",
    "notifications",
    "retry",
    "server",
    "scheduler",
    "telemetry",
];

/// Everything the configuration decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub calendar: BusinessCalendar,
    pub fee_schedule: FeeSchedule,
    pub store: StoreSettings,
    pub settlement: SettlementSettings,
    /// `data_dir` from the file, if set; command-line and environment take precedence.
    pub data_dir: Option<PathBuf>,
    pub idempotency: IdempotencySettings,
    pub payments: PaymentSettings,
    /// The payout provider's base URL; payouts are off without one.
    pub provider_url: Option<String>,
    /// Where settlement notifications are posted; off without one.
    pub webhook_url: Option<String>,
    pub retry: RetrySettings,
    pub server: ServerSettings,
    pub scheduler: SchedulerSettings,
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// Every currency the configuration names (in fee rules and amount limits), in code order.
    pub fn named_currencies(&self) -> Vec<Currency> {
        let schedule = &self.fee_schedule;
        let rules = std::iter::once(&schedule.default)
            .chain(schedule.methods.values())
            .chain(schedule.merchants.values().flat_map(|merchant| {
                std::iter::once(&merchant.rule).chain(merchant.methods.values())
            }));
        let mut currencies = std::collections::BTreeSet::new();
        for rule in rules {
            for amounts in [&rule.fixed, &rule.min, &rule.max] {
                currencies.extend(amounts.0.keys().copied());
            }
        }
        let limits = &self.payments.amount_limits.per_currency;
        currencies.extend(limits.0.keys().copied());
        currencies.into_iter().collect()
    }
}

/// `[payments]`: rules every way of recording a transaction applies (API, CLI, import).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentSettings {
    /// The per-transaction maximum per currency (`max_amount_minor`, `max_amount.CODE`).
    pub amount_limits: AmountLimits,
}

/// `settle serve`: where it listens and how it treats requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Address to listen on (default 127.0.0.1:8787).
    pub listen: String,
    /// PEM certificate chain and private key: HTTPS when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Whether `/metrics` needs a token too (default: no, like /healthz and /readyz).
    pub metrics_require_token: bool,
    /// Four-eyes: a rerun needs a second operator's approval.
    pub require_rerun_approval: bool,
    /// Largest request body accepted (413 above it).
    pub body_limit_bytes: usize,
    /// A request taking longer is answered 503 (and its work is not left half-done: see README).
    pub request_timeout_ms: u64,
    /// On SIGTERM, how long the daemon waits for the running settlement before releasing it.
    pub shutdown_timeout_ms: u64,
}

/// The nightly scheduler of `settle serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// After downtime, settle at most this many past dates (the oldest are left to a person).
    pub max_catch_up_days: u32,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: DEFAULT_LISTEN.into(),
            tls_cert: None,
            tls_key: None,
            metrics_require_token: false,
            require_rerun_approval: false,
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            enabled: true,
            max_catch_up_days: 7,
        }
    }
}

/// The three retry policies, each adjustable under `[retry.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    pub database: RetryPolicy,
    pub external_api: RetryPolicy,
    pub payment: RetryPolicy,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            database: RetryPolicy::database(),
            external_api: RetryPolicy::external_api(),
            payment: RetryPolicy::payment(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sqlite` (the default) or `mongodb`.
    pub kind: StoreKind,
    /// The SQLite file; relative paths are relative to the data directory.
    pub path: Option<PathBuf>,
    /// The MongoDB connection string. From the file it never holds a password (that comes from
    /// `SETTLE_MONGO_PASSWORD` or the systemd credential `mongo-password`).
    pub uri: Option<String>,
    /// The MongoDB database (default `settle`).
    pub database: String,
}

/// The MongoDB database used unless `[store] database` or `--mongo-db` names another.
pub const DEFAULT_MONGO_DATABASE: &str = "settle";

/// Which store adapter holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// The embedded SQLite file: one machine, zero setup.
    #[default]
    Sqlite,
    /// A MongoDB server, replica set or cluster shared by several processes or machines.
    Mongodb,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Mongodb => "mongodb",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreKind, String> {
        match text {
            "sqlite" => Ok(StoreKind::Sqlite),
            "mongodb" => Ok(StoreKind::Mongodb),
            other => Err(format!(
                "unknown store {other:?} (expected \"sqlite\" or \"mongodb\")"
            )),
        }
    }
}

/// Checks a `mongodb://` or `mongodb+srv://` connection string's shape (not its reachability).
/// Messages never repeat the string: it may hold a password.
pub fn check_mongo_uri(uri: &str) -> Result<(), String> {
    let Some(rest) = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
    else {
        return Err("expected a mongodb:// or mongodb+srv:// URI".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit('@').next().unwrap_or("");
    if hosts.is_empty() {
        return Err("the URI names no host".into());
    }
    Ok(())
}

/// True when a MongoDB URI carries a (non-empty) password in its userinfo: `mongodb://user:pw@…`.
pub fn mongo_uri_has_password(uri: &str) -> bool {
    let rest = uri.split_once("://").map(|(_, rest)| rest).unwrap_or(uri);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty()),
        None => false,
    }
}

/// A MongoDB database name: 1 to 63 bytes, none of `/\. "$` nor NUL.
pub fn check_mongo_database(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        return Err(format!(
            "{name:?} contains {bad:?}; a database name cannot contain / \\ . space \" $"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSettings {
    pub lease_seconds: i64,
    pub page_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            calendar: BusinessCalendar::default(),
            fee_schedule: FeeSchedule::default(),
            store: StoreSettings {
                kind: StoreKind::Sqlite,
                path: None,
                uri: None,
                database: DEFAULT_MONGO_DATABASE.into(),
            },
            settlement: SettlementSettings {
                lease_seconds: DEFAULT_LEASE_SECONDS,
                page_size: DEFAULT_PAGE_SIZE,
            },
            data_dir: None,
            idempotency: IdempotencySettings::default(),
            payments: PaymentSettings::default(),
            provider_url: None,
            webhook_url: None,
            retry: RetrySettings::default(),
            server: ServerSettings::default(),
            scheduler: SchedulerSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

/// One problem, named by its key (e.g. `business.cutoff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// All the problems found, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "{} has {count} problem{}:",
            self.source_name,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads the file (if any), applies environment overrides and validates everything.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let (text, source_name) = match path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, path.display().to_string()),
            Err(error) => {
                return Err(ConfigError {
                    source_name: path.display().to_string(),
                    problems: vec![ConfigProblem {
                        key: "(file)".into(),
                        message: format!("cannot read the configuration file: {error}"),
                    }],
                })
            }
        },
        None => (String::new(), "the configuration (defaults)".to_string()),
    };
    parse(&text, &source_name, env)
}

/// Parses configuration text with environment overrides.
pub fn parse(
    text: &str,
    source_name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let fail = |problems| ConfigError {
        source_name: source_name.to_string(),
        problems,
    };
    let mut table: Table = text.parse().map_err(|error: toml::de::Error| {
        fail(vec![ConfigProblem {
            key: "(syntax)".into(),
            message: error.to_string().trim().replace('\n', " "),
        }])
    })?;
    let mut reader = Reader::default();
    for (name, value) in env {
        reader.apply_env(&mut table, &name, value);
    }
    let settings = reader.settings(&table);
    if reader.problems.is_empty() {
        Ok(settings)
    } else {
        Err(fail(reader.problems))
    }
}

/// Walks the TOML table, collecting problems instead of stopping at the first.
#[derive(Default)]
struct Reader {
    problems: Vec<ConfigProblem>,
    /// Keys set from the environment, to say so in messages.
    from_env: BTreeMap<String, String>,
}

impl Reader {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = match self.from_env.get(key) {
            Some(variable) => format!("{key} (from {variable})"),
            None => key.to_string(),
        };
        self.problems.push(ConfigProblem {
            key,
            message: message.into(),
        });
    }

    /// `SETTLE_FEES__DEFAULT__FIXED__USD=0.30` sets `fees.default.fixed.USD = "0.30"`. Variables
    /// without a section separator (`SETTLE_CONFIG`, `SETTLE_DATA_DIR`…) are not configuration keys.
    fn apply_env(&mut self, table: &mut Table, name: &str, value: String) {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            return;
        };
        if !path.contains(ENV_SEPARATOR) {
            return;
        }
        let mut segments: Vec<String> = Vec::new();
        for raw in path.split(ENV_SEPARATOR) {
            let currency_position = segments.last().is_some_and(|parent| {
                matches!(parent.as_str(), "fixed" | "min" | "max" | "max_amount")
            });
            segments.push(if currency_position {
                raw.to_ascii_uppercase()
            } else {
                raw.to_ascii_lowercase()
            });
        }
        let key = segments.join(".");
        self.from_env.insert(key.clone(), name.to_string());
        let (last, parents) = segments.split_last().expect("at least two segments");
        let mut node = table;
        for segment in parents {
            let entry = node
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            match entry {
                Value::Table(inner) => node = inner,
                _ => {
                    self.problem(&key, format!("{segment} is not a section"));
                    return;
                }
            }
        }
        node.insert(last.clone(), Value::String(value));
    }

    fn settings(&mut self, table: &Table) -> Settings {
        let mut settings = Settings::default();
        self.known_keys("", table, TOP_LEVEL_KEYS);
        if let Some(business) = self.section(table, "business") {
            settings.calendar = self.calendar(&business);
        }
        if let Some(fees) = self.section(table, "fees") {
            settings.fee_schedule = self.fee_schedule(&fees);
        }
        if let Some(store) = self.section(table, "store") {
            self.known_keys("store", &store, &["kind", "path", "uri", "database"]);
            if let Some(kind) = self.string(&store, "store.kind") {
                match kind.parse::<StoreKind>() {
                    Ok(kind) => settings.store.kind = kind,
                    Err(message) => self.problem("store.kind", message),
                }
            }
            settings.store.path = self.string(&store, "store.path").map(PathBuf::from);
            settings.store.uri = self.mongo_uri(&store, "store.uri");
            if let Some(database) = self.string(&store, "store.database") {
                match check_mongo_database(&database) {
                    Ok(()) => settings.store.database = database,
                    Err(message) => self.problem("store.database", message),
                }
            }
        }
        if let Some(settlement) = self.section(table, "settlement") {
            self.known_keys("settlement", &settlement, &["lease_seconds", "page_size"]);
            if let Some(seconds) = self.integer(&settlement, "settlement.lease_seconds", 1, 86_400)
            {
                settings.settlement.lease_seconds = seconds;
            }
            if let Some(size) = self.integer(&settlement, "settlement.page_size", 100, 100_000) {
                settings.settlement.page_size = size as u32;
            }
        }
        settings.data_dir = self.string(table, "data_dir").map(PathBuf::from);
        if let Some(idempotency) = self.section(table, "idempotency") {
            settings.idempotency = self.idempotency(&idempotency);
        }
        if let Some(payments) = self.section(table, "payments") {
            settings.payments = self.payments(&payments);
        }
        if let Some(payouts) = self.section(table, "payouts") {
            self.known_keys("payouts", &payouts, &["provider_url"]);
            settings.provider_url = self.url(&payouts, "payouts.provider_url");
        }
        if let Some(notifications) = self.section(table, "notifications") {
            self.known_keys("notifications", &notifications, &["webhook_url"]);
            settings.webhook_url = self.url(&notifications, "notifications.webhook_url");
        }
        if let Some(server) = self.section(table, "server") {
            settings.server = self.server(&server);
        }
        if let Some(scheduler) = self.section(table, "scheduler") {
            self.known_keys("scheduler", &scheduler, &["enabled", "max_catch_up_days"]);
            if let Some(enabled) = self.boolean(&scheduler, "scheduler.enabled") {
                settings.scheduler.enabled = enabled;
            }
            if let Some(days) = self.integer(&scheduler, "scheduler.max_catch_up_days", 1, 366) {
                settings.scheduler.max_catch_up_days = days as u32;
            }
        }
        if let Some(retry) = self.section(table, "retry") {
            self.known_keys("retry", &retry, &["database", "external_api", "payment"]);
            for (name, policy) in [
                (PolicyName::Database, &mut settings.retry.database),
                (PolicyName::ExternalApi, &mut settings.retry.external_api),
                (PolicyName::Payment, &mut settings.retry.payment),
            ] {
                let key = format!("retry.{}", name.as_str());
                if let Some(section) = self.section(&retry, &key) {
                    self.retry_policy(&key, &section, policy);
                }
            }
        }
        if let Some(telemetry) = self.section(table, "telemetry") {
            settings.telemetry = self.telemetry(&telemetry);
        }
        for problem in settings.fee_schedule.validate() {
            self.problem(&problem.key, problem.message);
        }
        settings
    }

    fn server(&mut self, table: &Table) -> ServerSettings {
        self.known_keys(
            "server",
            table,
            &[
                "listen",
                "tls_cert",
                "tls_key",
                "metrics_require_token",
                "require_rerun_approval",
                "body_limit_bytes",
                "request_timeout_ms",
                "shutdown_timeout_ms",
            ],
        );
        let mut server = ServerSettings::default();
        if let Some(listen) = self.string(table, "server.listen") {
            if listen.parse::<std::net::SocketAddr>().is_ok() {
                server.listen = listen;
            } else {
                self.problem(
                    "server.listen",
                    format!("{listen:?} is not an address such as 127.0.0.1:8787"),
                );
            }
        }
        server.tls_cert = self.string(table, "server.tls_cert").map(PathBuf::from);
        server.tls_key = self.string(table, "server.tls_key").map(PathBuf::from);
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            self.problem(
                "server.tls_cert",
                "set both tls_cert and tls_key, or neither",
            );
        }
        if let Some(flag) = self.boolean(table, "server.metrics_require_token") {
            server.metrics_require_token = flag;
        }
        if let Some(flag) = self.boolean(table, "server.require_rerun_approval") {
            server.require_rerun_approval = flag;
        }
        if let Some(bytes) = self.integer(table, "server.body_limit_bytes", 1_024, 64 * 1024 * 1024)
        {
            server.body_limit_bytes = bytes as usize;
        }
        if let Some(ms) = self.integer(table, "server.request_timeout_ms", 100, 600_000) {
            server.request_timeout_ms = ms as u64;
        }
        if let Some(ms) = self.integer(table, "server.shutdown_timeout_ms", 100, 600_000) {
            server.shutdown_timeout_ms = ms as u64;
        }
        server
    }

    fn telemetry(&mut self, table: &Table) -> TelemetrySettings {
        let keys = [
            "otlp_endpoint",
            "otlp_protocol",
            "environment",
            "export_interval_ms",
        ];
        if table.contains_key("headers") || table.contains_key("otlp_headers") {
            let key = if table.contains_key("headers") {
                "telemetry.headers"
            } else {
                "telemetry.otlp_headers"
            };
            self.problem(
                key,
                "headers may carry API keys and do not belong in the file: set \
                 OTEL_EXPORTER_OTLP_HEADERS in the environment",
            );
        }
        let others: Table = table
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "headers" | "otlp_headers"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        self.known_keys("telemetry", &others, &keys);
        let mut telemetry = TelemetrySettings {
            otlp_endpoint: self.url(table, "telemetry.otlp_endpoint"),
            ..TelemetrySettings::default()
        };
        if let Some(protocol) = self.string(table, "telemetry.otlp_protocol") {
            match protocol.parse::<OtlpProtocol>() {
                Ok(protocol) => telemetry.otlp_protocol = Some(protocol),
                Err(message) => self.problem("telemetry.otlp_protocol", message),
            }
        }
        if let Some(environment) = self.string(table, "telemetry.environment") {
            let fits = !environment.trim().is_empty()
                && environment.len() <= 64
                && environment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if fits {
                telemetry.environment = Some(environment);
            } else {
                self.problem(
                    "telemetry.environment",
                    format!(
                        "{environment:?} is not a short name such as \"production\" (1 to 64 \
                         letters, digits, '-', '_' or '.')"
                    ),
                );
            }
        }
        telemetry.export_interval_ms = self
            .integer(table, "telemetry.export_interval_ms", 100, 3_600_000)
            .map(|ms| ms as u64);
        telemetry
    }

    fn payments(&mut self, table: &Table) -> PaymentSettings {
        self.known_keys("payments", table, &["max_amount_minor", "max_amount"]);
        let mut limits = AmountLimits::default();
        if let Some(minor) = self.integer(
            table,
            "payments.max_amount_minor",
            1,
            MAX_AMOUNT_MINOR_CEILING,
        ) {
            limits.default_max_minor = minor;
        }
        let per_currency = self.amounts(table, "payments.max_amount", "max_amount");
        for (currency, minor) in per_currency.0 {
            let key = format!("payments.max_amount.{}", currency.code());
            if minor <= 0 {
                self.problem(&key, "the maximum must be greater than zero");
            } else if minor > MAX_AMOUNT_MINOR_CEILING {
                self.problem(
                    &key,
                    format!(
                        "{} {code} is above the largest maximum Settle allows, {} {code} \
                         ({MAX_AMOUNT_MINOR_CEILING} minor units), which keeps a day's sums far \
                         from overflowing",
                        Money::new(minor, currency),
                        Money::new(MAX_AMOUNT_MINOR_CEILING, currency),
                        code = currency.code(),
                    ),
                );
            } else {
                limits.per_currency.0.insert(currency, minor);
            }
        }
        PaymentSettings {
            amount_limits: limits,
        }
    }

    fn idempotency(&mut self, table: &Table) -> IdempotencySettings {
        self.known_keys(
            "idempotency",
            table,
            &["retention_hours", "lock_seconds", "require_uuid_v4"],
        );
        let mut settings = IdempotencySettings::default();
        if let Some(hours) = self.integer(table, "idempotency.retention_hours", 1, 24 * 90) {
            settings.retention = chrono::Duration::hours(hours);
        }
        if let Some(seconds) = self.integer(table, "idempotency.lock_seconds", 1, 3_600) {
            settings.lock = chrono::Duration::seconds(seconds);
        }
        if let Some(strict) = self.boolean(table, "idempotency.require_uuid_v4") {
            settings.require_uuid_v4 = strict;
        }
        settings
    }

    fn retry_policy(&mut self, key: &str, table: &Table, policy: &mut RetryPolicy) {
        self.known_keys(
            key,
            table,
            &[
                "max_retries",
                "base_delay_ms",
                "max_delay_ms",
                "attempt_timeout_ms",
                "deadline_ms",
            ],
        );
        let field = |name: &str| format!("{key}.{name}");
        if let Some(n) = self.integer(table, &field("max_retries"), 0, 20) {
            policy.max_retries = n as u32;
        }
        if let Some(ms) = self.integer(table, &field("base_delay_ms"), 0, 600_000) {
            policy.base_delay_ms = ms as u64;
        }
        if let Some(ms) = self.integer(table, &field("max_delay_ms"), 0, 3_600_000) {
            policy.max_delay_ms = ms as u64;
        }
        if let Some(ms) = self.integer(table, &field("attempt_timeout_ms"), 1, 3_600_000) {
            policy.attempt_timeout_ms = ms as u64;
        }
        if let Some(ms) = self.integer(table, &field("deadline_ms"), 1, 86_400_000) {
            policy.deadline_ms = ms as u64;
        }
    }

    /// An http(s) URL. Credentials in it are refused: secrets never live in the file.
    fn url(&mut self, table: &Table, key: &str) -> Option<String> {
        let url = self.string(table, key)?;
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        if !scheme_ok {
            self.problem(key, format!("{url:?} is not an http(s) URL"));
            None
        } else if authority.contains('@') {
            self.problem(
                key,
                "credentials do not belong in the file; use the environment or a systemd credential",
            );
            None
        } else {
            Some(url.trim_end_matches('/').to_string())
        }
    }

    /// A MongoDB URI. A password in it is refused (and never repeated): secrets never live in
    /// the file.
    fn mongo_uri(&mut self, table: &Table, key: &str) -> Option<String> {
        let uri = self.string(table, key)?;
        if let Err(message) = check_mongo_uri(&uri) {
            self.problem(key, message);
            None
        } else if mongo_uri_has_password(&uri) {
            self.problem(
                key,
                "a password does not belong in the file: write the URI without it \
                 (mongodb://USER@HOST/) and set SETTLE_MONGO_PASSWORD or the systemd credential \
                 mongo-password",
            );
            None
        } else {
            Some(uri)
        }
    }

    fn boolean(&mut self, table: &Table, key: &str) -> Option<bool> {
        let name = key.rsplit('.').next().unwrap_or(key);
        match table.get(name)? {
            Value::Boolean(flag) => Some(*flag),
            Value::String(text) if text == "true" || text == "false" => Some(text == "true"),
            other => {
                self.problem(key, format!("expected true or false, found {other}"));
                None
            }
        }
    }

    fn calendar(&mut self, business: &Table) -> BusinessCalendar {
        self.known_keys(
            "business",
            business,
            &["timezone", "cutoff", "grace_minutes"],
        );
        let mut calendar = BusinessCalendar::default();
        if let Some(name) = self.string(business, "business.timezone") {
            match parse_timezone(&name) {
                Ok(timezone) => calendar.timezone = timezone,
                Err(error) => self.problem("business.timezone", error.to_string()),
            }
        }
        if let Some(cutoff) = self.string(business, "business.cutoff") {
            match cutoff.parse::<Cutoff>() {
                Ok(cutoff) => calendar.cutoff = cutoff,
                Err(error) => self.problem("business.cutoff", error.to_string()),
            }
        }
        calendar.grace_minutes = self
            .integer(business, "business.grace_minutes", 0, 24 * 60)
            .map(|m| m as u32)
            .unwrap_or(DEFAULT_GRACE_MINUTES);
        calendar
    }

    fn fee_schedule(&mut self, fees: &Table) -> FeeSchedule {
        self.known_keys("fees", fees, &["default", "methods", "merchants"]);
        let mut schedule = FeeSchedule::default();
        if let Some(default) = self.section(fees, "fees.default") {
            let rule = self.fee_rule("fees.default", &default, &[]);
            // The built-in 2.5 % applies unless the file names another percentage.
            schedule.default = FeeRule {
                percent: rule.percent.or(schedule.default.percent),
                ..rule
            };
        }
        if let Some(methods) = self.section(fees, "fees.methods") {
            schedule.methods = self.method_rules("fees.methods", &methods);
        }
        if let Some(merchants) = self.section(fees, "fees.merchants") {
            for (merchant_id, value) in &merchants {
                let key = format!("fees.merchants.{merchant_id}");
                let Some(table) = self.as_table(&key, value) else {
                    continue;
                };
                let rule = self.fee_rule(&key, &table, &["methods"]);
                let methods = match self.section(&table, &format!("{key}.methods")) {
                    Some(methods) => self.method_rules(&format!("{key}.methods"), &methods),
                    None => BTreeMap::new(),
                };
                schedule
                    .merchants
                    .insert(merchant_id.clone(), MerchantFees { rule, methods });
            }
        }
        schedule
    }

    fn method_rules(&mut self, key: &str, table: &Table) -> BTreeMap<PaymentMethod, FeeRule> {
        let mut rules = BTreeMap::new();
        for (name, value) in table {
            let method_key = format!("{key}.{name}");
            let method = match name.parse::<PaymentMethod>() {
                Ok(method) => method,
                Err(error) => {
                    self.problem(&method_key, error);
                    continue;
                }
            };
            if let Some(rule_table) = self.as_table(&method_key, value) {
                rules.insert(method, self.fee_rule(&method_key, &rule_table, &[]));
            }
        }
        rules
    }

    fn fee_rule(&mut self, key: &str, table: &Table, extra_keys: &[&str]) -> FeeRule {
        let mut allowed = vec!["percent", "fixed", "min", "max", "refund_returns_percent"];
        allowed.extend_from_slice(extra_keys);
        self.known_keys(key, table, &allowed);
        let percent_key = format!("{key}.percent");
        let percent = match table.get("percent") {
            None => None,
            Some(Value::String(text)) => match Decimal::from_str_exact(text) {
                Ok(percent) => Some(percent),
                Err(_) => {
                    self.problem(
                        &percent_key,
                        format!("{text:?} is not a decimal number such as \"2.5\""),
                    );
                    None
                }
            },
            Some(Value::Integer(n)) => Some(Decimal::from(*n)),
            Some(Value::Float(_)) => {
                self.problem(
                    &percent_key,
                    "write the percentage as a string, e.g. \"2.5\": TOML floats are binary and inexact",
                );
                None
            }
            Some(other) => {
                self.problem(
                    &percent_key,
                    format!("expected a decimal string, found {}", other.type_str()),
                );
                None
            }
        };
        let refund_returns_percent = match table.get("refund_returns_percent") {
            None => None,
            Some(Value::Boolean(flag)) => Some(*flag),
            Some(Value::String(text)) if text == "true" || text == "false" => Some(text == "true"),
            Some(other) => {
                self.problem(
                    &format!("{key}.refund_returns_percent"),
                    format!("expected true or false, found {other}"),
                );
                None
            }
        };
        FeeRule {
            percent,
            fixed: self.amounts(table, &format!("{key}.fixed"), "fixed"),
            min: self.amounts(table, &format!("{key}.min"), "min"),
            max: self.amounts(table, &format!("{key}.max"), "max"),
            refund_returns_percent,
        }
    }

    /// `{ USD = "0.30", JPY = 30 }`: amounts per currency, exact in that currency.
    fn amounts(&mut self, table: &Table, key: &str, name: &str) -> AmountByCurrency {
        let mut amounts = AmountByCurrency::default();
        let Some(value) = table.get(name) else {
            return amounts;
        };
        let Some(per_currency) = self.as_table(key, value) else {
            return amounts;
        };
        for (code, value) in &per_currency {
            let amount_key = format!("{key}.{code}");
            let currency = match Currency::from_code(code) {
                Ok(currency) => currency,
                Err(error) => {
                    self.problem(&amount_key, error.to_string());
                    continue;
                }
            };
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Integer(n) => n.to_string(),
                Value::Float(_) => {
                    self.problem(
                        &amount_key,
                        "write the amount as a string, e.g. \"0.30\": TOML floats are inexact",
                    );
                    continue;
                }
                other => {
                    self.problem(
                        &amount_key,
                        format!("expected a decimal string, found {}", other.type_str()),
                    );
                    continue;
                }
            };
            match Money::parse_major(&text, currency) {
                Ok(money) => {
                    amounts.0.insert(currency, money.minor);
                }
                Err(error) => self.problem(&amount_key, error.to_string()),
            }
        }
        amounts
    }

    fn known_keys(&mut self, section: &str, table: &Table, allowed: &[&str]) {
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        for key in table.keys() {
            if !allowed.contains(key.as_str()) {
                let full = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                let expected = allowed.iter().copied().collect::<Vec<_>>().join(", ");
                self.problem(&full, format!("unknown key (expected one of: {expected})"));
            }
        }
    }

    fn as_table(&mut self, key: &str, value: &Value) -> Option<Table> {
        match value {
            Value::Table(table) => Some(table.clone()),
            other => {
                self.problem(key, format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// A sub-table by its full dotted key (only the last segment is looked up in `table`).
    fn section(&mut self, table: &Table, key: &str) -> Option<Table> {
        let name = key.rsplit('.').next().unwrap_or(key);
        table.get(name).and_then(|value| self.as_table(key, value))
    }

    fn string(&mut self, table: &Table, key: &str) -> Option<String> {
        let name = key.rsplit('.').next().unwrap_or(key);
        match table.get(name)? {
            Value::String(text) => Some(text.clone()),
            other => {
                self.problem(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, table: &Table, key: &str, min: i64, max: i64) -> Option<i64> {
        let name = key.rsplit('.').next().unwrap_or(key);
        let value = match table.get(name)? {
            Value::Integer(n) => *n,
            Value::String(text) => match text.parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    self.problem(key, format!("{text:?} is not a whole number"));
                    return None;
                }
            },
            other => {
                self.problem(
                    key,
                    format!("expected a whole number, found {}", other.type_str()),
                );
                return None;
            }
        };
        if value < min || value > max {
            self.problem(key, format!("{value} is out of range ({min} to {max})"));
            return None;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn problems(text: &str, env: Vec<(String, String)>) -> Vec<String> {
        parse(text, "test.toml", env)
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn no_file_means_defaults() {
        let settings = parse("", "defaults", no_env()).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.calendar.timezone.name(), "Asia/Aden");
        assert_eq!(settings.calendar.cutoff, Cutoff::END_OF_DAY);
        assert_eq!(
            settings.fee_schedule.default.percent,
            Some(Decimal::new(25, 1))
        );
    }

    #[test]
    fn payments_limits_default_far_below_overflow_and_take_per_currency_overrides() {
        let usd = Currency::from_code("USD").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        let defaults = parse("", "defaults", no_env()).unwrap();
        assert_eq!(
            defaults.payments.amount_limits.max_minor(usd),
            crate::limits::DEFAULT_MAX_AMOUNT_MINOR
        );
        let text = r#"
            [payments]
            max_amount_minor = 5000000
            max_amount = { USD = "250000.00" }
        "#;
        let env = vec![(
            "SETTLE_PAYMENTS__MAX_AMOUNT__JPY".to_string(),
            "9000".to_string(),
        )];
        let limits = parse(text, "limits", env).unwrap().payments.amount_limits;
        assert_eq!(limits.max_minor(usd), 25_000_000);
        assert_eq!(limits.key(usd), "payments.max_amount.USD");
        assert_eq!(limits.max_minor(jpy), 9_000);
        let sar = Currency::from_code("SAR").unwrap();
        assert_eq!(limits.max_minor(sar), 5_000_000);
        assert_eq!(limits.key(sar), "payments.max_amount_minor");
    }

    #[test]
    fn bad_payments_limits_are_reported_by_key() {
        let text = r#"
            [payments]
            max_amount_minor = 0
            max_amount = { USD = "0", EUR = "20000000000000.00", SAR = "1.234", XYZ = "1", JPY = 1.5 }
            maximum = 3
        "#;
        let found = problems(text, no_env());
        for key in [
            "payments.max_amount_minor: 0 is out of range",
            "payments.max_amount.USD: the maximum must be greater than zero",
            "payments.max_amount.EUR: 20000000000000.00 EUR is above the largest maximum",
            "payments.max_amount.SAR:",
            "payments.max_amount.XYZ:",
            "payments.max_amount.JPY:",
            "payments.maximum: unknown key",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key)),
                "{key} in {found:#?}"
            );
        }
        let too_big = problems(
            "[payments]\nmax_amount_minor = 1000000000000001\n",
            no_env(),
        );
        assert!(
            too_big[0].starts_with("payments.max_amount_minor: 1000000000000001 is out of range"),
            "{too_big:?}"
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            [business]
            timezone = "Asia/Aden"      # IANA name
            cutoff = "24:00"            # local time at which a settlement day ends
            [fees.default]
            percent = "2.5"             # decimal string
            fixed = { USD = "0.30" }    # per currency, optional
            [fees.methods.cash]
            percent = "1"
            [fees.merchants."m-0001"]
            percent = "1.75"
            max = { USD = "5.00" }
            [fees.merchants."m-0001".methods.wallet]
            fixed = { USD = "0" }
        "#;
        let settings = parse(text, "example", no_env()).unwrap();
        let usd = Currency::from_code("USD").unwrap();
        let rule = settings
            .fee_schedule
            .resolve("m-0001", PaymentMethod::Card, usd);
        assert_eq!(
            (rule.percent, rule.fixed_minor, rule.max_minor),
            (Decimal::new(175, 2), 30, Some(500))
        );
        let wallet = settings
            .fee_schedule
            .resolve("m-0001", PaymentMethod::Wallet, usd);
        assert_eq!(wallet.fixed_minor, 0);
        let cash = settings
            .fee_schedule
            .resolve("m-other", PaymentMethod::Cash, usd);
        assert_eq!(cash.percent, Decimal::ONE);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [business]
            timezone = "Mars/Olympus"
            cutoff = "00:00"
            grace_minutes = -5
            colour = "blue"
            [fees.default]
            percent = 2.5
            fixed = { USD = "0.305", XYZ = "1" }
            [fees.methods.cheque]
            percent = "1"
            [store]
            kind = "postgres"
        "#;
        let found = problems(text, no_env());
        let joined = found.join("\n");
        for key in [
            "business.timezone:",
            "business.cutoff:",
            "business.grace_minutes:",
            "business.colour:",
            "fees.default.percent:",
            "fees.default.fixed.USD:",
            "fees.default.fixed.XYZ:",
            "fees.methods.cheque:",
            "store.kind:",
        ] {
            assert!(joined.contains(key), "missing {key} in:\n{joined}");
        }
        assert!(joined.contains("inexact"), "{joined}");
        assert!(joined.contains("ambiguous"), "{joined}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let found = problems("[business\ntimezone = 1", no_env());
        assert!(found[0].contains("line 1"), "{found:?}");
    }

    #[test]
    fn environment_overrides_the_file_and_is_named_in_errors() {
        let env = vec![
            (
                "SETTLE_BUSINESS__TIMEZONE".to_string(),
                "Europe/Berlin".to_string(),
            ),
            (
                "SETTLE_FEES__DEFAULT__FIXED__usd".to_string(),
                "0.25".to_string(),
            ),
            (
                "SETTLE_BUSINESS__GRACE_MINUTES".to_string(),
                "15".to_string(),
            ),
            ("SETTLE_CONFIG".to_string(), "ignored.toml".to_string()),
        ];
        let settings = parse("[business]\ntimezone = \"Asia/Aden\"", "t", env).unwrap();
        assert_eq!(settings.calendar.timezone.name(), "Europe/Berlin");
        assert_eq!(settings.calendar.grace_minutes, 15);
        let usd = Currency::from_code("USD").unwrap();
        assert_eq!(settings.fee_schedule.default.fixed.get(usd), Some(25));

        let bad = vec![("SETTLE_BUSINESS__CUTOFF".to_string(), "7am".to_string())];
        let found = problems("", bad);
        assert!(
            found[0].starts_with("business.cutoff (from SETTLE_BUSINESS__CUTOFF):"),
            "{found:?}"
        );
    }

    #[test]
    fn payouts_notifications_idempotency_and_retry_are_configurable() {
        let text = r#"
            [idempotency]
            retention_hours = 48
            lock_seconds = 5
            require_uuid_v4 = true
            [payouts]
            provider_url = "https://payouts.example/v1/"
            [notifications]
            webhook_url = "http://127.0.0.1:9000/hook"
            [retry.payment]
            max_retries = 4
            base_delay_ms = 50
        "#;
        let settings = parse(text, "t", no_env()).unwrap();
        assert_eq!(settings.idempotency.retention, chrono::Duration::hours(48));
        assert_eq!(settings.idempotency.lock, chrono::Duration::seconds(5));
        assert!(settings.idempotency.require_uuid_v4);
        assert_eq!(
            settings.provider_url.as_deref(),
            Some("https://payouts.example/v1")
        );
        assert_eq!(
            settings.webhook_url.as_deref(),
            Some("http://127.0.0.1:9000/hook")
        );
        assert_eq!(
            (
                settings.retry.payment.max_retries,
                settings.retry.payment.base_delay_ms
            ),
            (4, 50)
        );
        assert_eq!(settings.retry.database, RetryPolicy::database());

        let bad = r#"
            [payouts]
            provider_url = "https://user:pw@payouts.example"
            [notifications]
            webhook_url = "ftp://x"
            [retry.sometimes]
            max_retries = 1
        "#;
        let joined = problems(bad, no_env()).join("\n");
        for key in [
            "payouts.provider_url:",
            "notifications.webhook_url:",
            "retry.sometimes:",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        assert!(
            !joined.contains("pw@"),
            "a password must never be echoed: {joined}"
        );
    }

    #[test]
    fn the_store_section_chooses_mongodb_without_a_password_in_the_file() {
        let text = r#"
            [store]
            kind = "mongodb"
            uri = "mongodb://settle@db1:27017,db2:27017/?replicaSet=rs0"
            database = "settle_prod"
        "#;
        let settings = parse(text, "t", no_env()).unwrap();
        assert_eq!(settings.store.kind, StoreKind::Mongodb);
        assert_eq!(
            settings.store.uri.as_deref(),
            Some("mongodb://settle@db1:27017,db2:27017/?replicaSet=rs0")
        );
        assert_eq!(settings.store.database, "settle_prod");
        let defaults = parse("[store]\nkind = \"sqlite\"", "t", no_env()).unwrap();
        assert_eq!(defaults.store.kind, StoreKind::Sqlite);
        assert_eq!(defaults.store.database, DEFAULT_MONGO_DATABASE);

        let bad = r#"
            [store]
            kind = "mongo"
            uri = "mongodb://settle:hunter2@db1:27017/"
            database = "a.b"
        "#;
        let joined = problems(bad, no_env()).join("\n");
        for key in ["store.kind:", "store.uri:", "store.database:"] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        assert!(joined.contains("SETTLE_MONGO_PASSWORD"), "{joined}");
        assert!(
            !joined.contains("hunter2"),
            "a password is never echoed: {joined}"
        );

        let env = vec![(
            "SETTLE_STORE__URI".to_string(),
            "mongodb+srv://u:p%40ss@cluster.example/".to_string(),
        )];
        let found = problems("", env);
        assert!(
            found[0].starts_with("store.uri (from SETTLE_STORE__URI):"),
            "{found:?}"
        );
        assert!(!found[0].contains("p%40ss"), "{found:?}");
        let found = problems("[store]\nuri = \"postgres://db/\"", no_env());
        assert!(found[0].starts_with("store.uri:"), "{found:?}");
    }

    #[test]
    fn mongo_uri_passwords_are_detected() {
        assert!(mongo_uri_has_password("mongodb://u:p@h/"));
        assert!(mongo_uri_has_password("mongodb://u:p@h"));
        assert!(mongo_uri_has_password("mongodb+srv://u:p%2F@h/db?x=1"));
        assert!(!mongo_uri_has_password("mongodb://u@h/"));
        assert!(!mongo_uri_has_password("mongodb://u:@h/"));
        assert!(!mongo_uri_has_password(
            "mongodb://h:27017/?directConnection=true"
        ));
        assert!(!mongo_uri_has_password("mongodb://h/?authSource=a@b"));
        assert!(check_mongo_uri("mongodb://@/").is_err());
        assert!(check_mongo_database("settle_cli_1").is_ok());
        assert!(check_mongo_database("").is_err());
        assert!(check_mongo_database("a$b").is_err());
    }

    #[test]
    fn the_server_and_scheduler_are_configurable() {
        let text = r#"
            [server]
            listen = "0.0.0.0:9443"
            tls_cert = "/etc/settle/cert.pem"
            tls_key = "/etc/settle/key.pem"
            require_rerun_approval = true
            [scheduler]
            max_catch_up_days = 3
        "#;
        let settings = parse(text, "t", no_env()).unwrap();
        assert_eq!(settings.server.listen, "0.0.0.0:9443");
        assert!(settings.server.require_rerun_approval && !settings.server.metrics_require_token);
        assert_eq!(settings.scheduler.max_catch_up_days, 3);
        assert!(settings.scheduler.enabled);
        let bad = "[server]\nlisten = \"localhost\"\ntls_cert = \"c.pem\"\n[scheduler]\nmax_catch_up_days = 0\n";
        let joined = problems(bad, no_env()).join("\n");
        for key in [
            "server.listen:",
            "server.tls_cert:",
            "scheduler.max_catch_up_days:",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
    }

    #[test]
    fn telemetry_is_off_by_default_and_configurable() {
        let defaults = parse("", "t", no_env()).unwrap();
        assert_eq!(defaults.telemetry, TelemetrySettings::default());
        let text = r#"
            [telemetry]
            otlp_endpoint = "http://127.0.0.1:4318/"
            otlp_protocol = "grpc"
            environment = "production"
            export_interval_ms = 500
        "#;
        let settings = parse(text, "t", no_env()).unwrap();
        assert_eq!(
            settings.telemetry,
            TelemetrySettings {
                otlp_endpoint: Some("http://127.0.0.1:4318".into()),
                otlp_protocol: Some(OtlpProtocol::Grpc),
                environment: Some("production".into()),
                export_interval_ms: Some(500),
            }
        );
        let env = vec![
            (
                "SETTLE_TELEMETRY__OTLP_ENDPOINT".to_string(),
                "https://collector.example:4318".to_string(),
            ),
            (
                "SETTLE_TELEMETRY__EXPORT_INTERVAL_MS".to_string(),
                "2000".to_string(),
            ),
        ];
        let overridden = parse(text, "t", env).unwrap().telemetry;
        assert_eq!(
            overridden.otlp_endpoint.as_deref(),
            Some("https://collector.example:4318")
        );
        assert_eq!(overridden.export_interval_ms, Some(2000));
        assert_eq!(overridden.otlp_protocol, Some(OtlpProtocol::Grpc));
    }

    #[test]
    fn telemetry_problems_name_their_keys_and_headers_stay_out_of_the_file() {
        let bad = r#"
            [telemetry]
            otlp_endpoint = "https://user:apikey@collector.example"
            otlp_protocol = "http/json"
            environment = "prod env!"
            export_interval_ms = 10
            headers = "x-api-key=hunter2"
            colour = "blue"
        "#;
        let joined = problems(bad, no_env()).join("\n");
        for key in [
            "telemetry.otlp_endpoint:",
            "telemetry.otlp_protocol:",
            "telemetry.environment:",
            "telemetry.export_interval_ms:",
            "telemetry.headers:",
            "telemetry.colour:",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        assert!(joined.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{joined}");
        assert!(
            !joined.contains("hunter2") && !joined.contains("apikey"),
            "secrets are never echoed: {joined}"
        );
        let found = problems(
            "",
            vec![(
                "SETTLE_TELEMETRY__OTLP_PROTOCOL".to_string(),
                "udp".to_string(),
            )],
        );
        assert!(
            found[0].starts_with("telemetry.otlp_protocol (from SETTLE_TELEMETRY__OTLP_PROTOCOL):"),
            "{found:?}"
        );
    }

    #[test]
    fn min_above_max_is_refused() {
        let text = r#"
            [fees.default]
            min = { USD = "2.00" }
            max = { USD = "1.00" }
        "#;
        let joined = problems(text, no_env()).join("\n");
        assert!(joined.contains("exceeds the maximum"), "{joined}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = load(Some(Path::new("does/not/exist.toml")), no_env()).unwrap_err();
        assert!(error.to_string().contains("does/not/exist.toml"));
    }
}
