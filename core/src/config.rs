//! Configuration: one TOML file plus `SETTLE_SECTION__KEY` environment overrides, validated in full.
//! Every problem is reported with its key (not only the first), and defaults work with no file at all.
//!
//! The file's shape is declared with serde in `config/file.rs`, leniently (each value keeps its
//! own problem, so that one bad value never hides the next); `config/env.rs` lays the environment
//! over the file; this module checks the result into [`Settings`], naming each problem's key. The
//! settings themselves live with the modules they configure, and are re-exported here.

mod env;
mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Table;

use crate::calendar::{parse_timezone, BusinessCalendar, DEFAULT_GRACE_MINUTES};
use crate::idempotency::IdempotencySettings;
use crate::limits::{AmountLimits, MAX_AMOUNT_MINOR_CEILING};
use crate::model::fees::{AmountByCurrency, FeeRule, FeeSchedule, MerchantFees};
use crate::model::PaymentMethod;
use crate::money::{Currency, Money};
use crate::retry::RetryPolicy;
use file::{
    AmountText, Entries, FeeRuleFile, FeesFile, Field, FileShape, Flag, Int, Parsed, Percent,
    RetryPolicyFile, Section, ServerFile, Text,
};

pub use crate::payments::PaymentSettings;
pub use crate::reconcile::ReconciliationSettings;
pub use crate::retry::RetrySettings;
pub use crate::scheduler::SchedulerSettings;
pub use crate::settlement::runner::SettlementSettings;
pub use crate::store::settings::{
    check_mongo_database, check_mongo_uri, mongo_uri_has_password, StoreKind, StoreSettings,
    DEFAULT_MONGO_DATABASE,
};
pub use crate::telemetry::settings::{OtlpProtocol, TelemetrySettings};
pub use env::ENV_PREFIX;

/// Everything the configuration decides.
#[derive(Debug, Clone, Default, PartialEq)]
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
    pub reconciliation: ReconciliationSettings,
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
    let mut check = Check::default();
    for (name, value) in env {
        env::apply(&mut check, &mut table, &name, value);
    }
    let settings = check.settings(table);
    if check.problems.is_empty() {
        Ok(settings)
    } else {
        Err(fail(check.problems))
    }
}

/// Checks what the file (with the environment) holds into settings, collecting every problem.
#[derive(Default)]
struct Check {
    problems: Vec<ConfigProblem>,
    /// Keys set from the environment, to say so in messages.
    from_env: BTreeMap<String, String>,
}

impl Check {
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

    /// A value, if set and well formed; its problem is reported under `key`.
    fn value<T>(&mut self, key: &str, field: Option<Field<T>>) -> Option<T> {
        match field?.0 {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// A section's fields, once its unknown keys are reported: any key that is not a field of
    /// `T`, or that is one of `refused` (fields this use of the section does not allow).
    fn section<T: DeserializeOwned>(
        &mut self,
        key: &str,
        section: Option<Section<T>>,
        refused: &[&str],
    ) -> Option<T> {
        match section? {
            Section::Table { keys, body } => {
                let allowed: BTreeSet<&str> = file::field_names::<T>()
                    .iter()
                    .copied()
                    .filter(|field| !refused.contains(field))
                    .collect();
                for name in keys.iter().filter(|name| !allowed.contains(name.as_str())) {
                    let full = if key.is_empty() {
                        name.clone()
                    } else {
                        format!("{key}.{name}")
                    };
                    let expected = allowed.iter().copied().collect::<Vec<_>>().join(", ");
                    self.problem(&full, format!("unknown key (expected one of: {expected})"));
                }
                Some(body)
            }
            Section::Invalid(message) => {
                self.problem(key, message);
                None
            }
        }
    }

    /// The entries of a table of free keys (none if it is not a table: that is reported).
    fn entries<T>(&mut self, key: &str, entries: Option<Entries<T>>) -> Vec<(String, T)> {
        match entries {
            None => Vec::new(),
            Some(Entries::Table(entries)) => entries,
            Some(Entries::Invalid(message)) => {
                self.problem(key, message);
                Vec::new()
            }
        }
    }

    fn settings(&mut self, table: Table) -> Settings {
        let mut settings = Settings::default();
        let Some(file) = self.section::<FileShape>("", Some(file::read(table)), &[]) else {
            return settings;
        };
        if let Some(business) = self.section("business", file.business, &[]) {
            let calendar = &mut settings.calendar;
            if let Some(Text(name)) = self.value("business.timezone", business.timezone) {
                match parse_timezone(&name) {
                    Ok(timezone) => calendar.timezone = timezone,
                    Err(error) => self.problem("business.timezone", error.to_string()),
                }
            }
            if let Some(Parsed(cutoff)) = self.value("business.cutoff", business.cutoff) {
                calendar.cutoff = cutoff;
            }
            calendar.grace_minutes = self
                .value("business.grace_minutes", business.grace_minutes)
                .map(|Int(minutes)| minutes as u32)
                .unwrap_or(DEFAULT_GRACE_MINUTES);
        }
        if let Some(fees) = self.section("fees", file.fees, &[]) {
            settings.fee_schedule = self.fee_schedule(fees);
        }
        if let Some(store) = self.section("store", file.store, &[]) {
            if let Some(Parsed(kind)) = self.value("store.kind", store.kind) {
                settings.store.kind = kind;
            }
            settings.store.path = self.value("store.path", store.path).map(|Text(p)| p.into());
            settings.store.uri = self.mongo_uri("store.uri", store.uri);
            if let Some(Text(database)) = self.value("store.database", store.database) {
                match check_mongo_database(&database) {
                    Ok(()) => settings.store.database = database,
                    Err(message) => self.problem("store.database", message),
                }
            }
        }
        if let Some(settlement) = self.section("settlement", file.settlement, &[]) {
            let lease = self.value("settlement.lease_seconds", settlement.lease_seconds);
            if let Some(Int(seconds)) = lease {
                settings.settlement.lease_seconds = seconds;
            }
            if let Some(Int(size)) = self.value("settlement.page_size", settlement.page_size) {
                settings.settlement.page_size = size as u32;
            }
        }
        settings.data_dir = self
            .value("data_dir", file.data_dir)
            .map(|Text(p)| p.into());
        if let Some(idempotency) = self.section("idempotency", file.idempotency, &[]) {
            let ours = &mut settings.idempotency;
            let hours = self.value("idempotency.retention_hours", idempotency.retention_hours);
            if let Some(Int(hours)) = hours {
                ours.retention = chrono::Duration::hours(hours);
            }
            let lock = self.value("idempotency.lock_seconds", idempotency.lock_seconds);
            if let Some(Int(seconds)) = lock {
                ours.lock = chrono::Duration::seconds(seconds);
            }
            let strict = self.value("idempotency.require_uuid_v4", idempotency.require_uuid_v4);
            if let Some(Flag(strict)) = strict {
                ours.require_uuid_v4 = strict;
            }
        }
        if let Some(payments) = self.section("payments", file.payments, &[]) {
            let limits = &mut settings.payments.amount_limits;
            let minor = self.value("payments.max_amount_minor", payments.max_amount_minor);
            if let Some(Int(minor)) = minor {
                limits.default_max_minor = minor;
            }
            self.amount_limits(payments.max_amount, limits);
        }
        if let Some(payouts) = self.section("payouts", file.payouts, &[]) {
            settings.provider_url = self.url("payouts.provider_url", payouts.provider_url);
        }
        if let Some(notifications) = self.section("notifications", file.notifications, &[]) {
            let url = notifications.webhook_url;
            settings.webhook_url = self.url("notifications.webhook_url", url);
        }
        if let Some(server) = self.section("server", file.server, &[]) {
            self.server(server, &mut settings.server);
        }
        if let Some(reconciliation) = self.section("reconciliation", file.reconciliation, &[]) {
            let above = self.value(
                "reconciliation.approval_above_minor",
                reconciliation.approval_above_minor,
            );
            if let Some(Int(minor)) = above {
                settings.reconciliation.approval_above_minor = minor;
            }
            match reconciliation.profiles {
                None => {}
                Some(toml::Value::Table(profiles)) => {
                    for (name, value) in profiles {
                        let key = format!("reconciliation.profiles.{name}");
                        match value.try_into::<crate::reconcile::settings::CsvProfile>() {
                            Ok(profile) => match profile.check() {
                                Ok(()) => {
                                    settings.reconciliation.profiles.insert(name, profile);
                                }
                                Err(message) => self.problem(&key, message),
                            },
                            Err(error) => self.problem(&key, error.message().to_string()),
                        }
                    }
                }
                Some(other) => self.problem(
                    "reconciliation.profiles",
                    format!("expected a table of profiles, found {}", other.type_str()),
                ),
            }
        }
        if let Some(scheduler) = self.section("scheduler", file.scheduler, &[]) {
            if let Some(Flag(enabled)) = self.value("scheduler.enabled", scheduler.enabled) {
                settings.scheduler.enabled = enabled;
            }
            let days = self.value("scheduler.max_catch_up_days", scheduler.max_catch_up_days);
            if let Some(Int(days)) = days {
                settings.scheduler.max_catch_up_days = days as u32;
            }
        }
        if let Some(retry) = self.section("retry", file.retry, &[]) {
            for (section, policy) in [
                (retry.database, &mut settings.retry.database),
                (retry.external_api, &mut settings.retry.external_api),
                (retry.payment, &mut settings.retry.payment),
            ] {
                let key = format!("retry.{}", policy.name.as_str());
                if let Some(section) = self.section(&key, section, &[]) {
                    self.retry_policy(&key, section, policy);
                }
            }
        }
        self.telemetry(file.telemetry, &mut settings.telemetry);
        for problem in settings.fee_schedule.validate() {
            self.problem(&problem.key, problem.message);
        }
        settings
    }

    fn server(&mut self, file: ServerFile, server: &mut ServerSettings) {
        if let Some(Text(listen)) = self.value("server.listen", file.listen) {
            if listen.parse::<std::net::SocketAddr>().is_ok() {
                server.listen = listen;
            } else {
                self.problem(
                    "server.listen",
                    format!("{listen:?} is not an address such as 127.0.0.1:8787"),
                );
            }
        }
        server.tls_cert = self
            .value("server.tls_cert", file.tls_cert)
            .map(|Text(p)| p.into());
        server.tls_key = self
            .value("server.tls_key", file.tls_key)
            .map(|Text(p)| p.into());
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            self.problem(
                "server.tls_cert",
                "set both tls_cert and tls_key, or neither",
            );
        }
        let metrics = self.value("server.metrics_require_token", file.metrics_require_token);
        if let Some(Flag(flag)) = metrics {
            server.metrics_require_token = flag;
        }
        let approval = self.value("server.require_rerun_approval", file.require_rerun_approval);
        if let Some(Flag(flag)) = approval {
            server.require_rerun_approval = flag;
        }
        if let Some(Int(bytes)) = self.value("server.body_limit_bytes", file.body_limit_bytes) {
            server.body_limit_bytes = bytes as usize;
        }
        let request = self.value("server.request_timeout_ms", file.request_timeout_ms);
        if let Some(Int(ms)) = request {
            server.request_timeout_ms = ms as u64;
        }
        let shutdown = self.value("server.shutdown_timeout_ms", file.shutdown_timeout_ms);
        if let Some(Int(ms)) = shutdown {
            server.shutdown_timeout_ms = ms as u64;
        }
    }

    /// Headers may carry API keys: in the file they are refused (before any other problem of the
    /// section), with a pointer to the environment.
    fn telemetry(
        &mut self,
        mut section: Option<Section<file::TelemetryFile>>,
        telemetry: &mut TelemetrySettings,
    ) {
        if let Some(Section::Table { keys, .. }) = &mut section {
            let headers = ["headers", "otlp_headers"];
            if let Some(name) = headers.iter().find(|name| keys.iter().any(|k| k == *name)) {
                self.problem(
                    &format!("telemetry.{name}"),
                    "headers may carry API keys and do not belong in the file: set \
                     OTEL_EXPORTER_OTLP_HEADERS in the environment",
                );
            }
            keys.retain(|key| !headers.contains(&key.as_str()));
        }
        let Some(file) = self.section("telemetry", section, &[]) else {
            return;
        };
        telemetry.otlp_endpoint = self.url("telemetry.otlp_endpoint", file.otlp_endpoint);
        if let Some(Parsed(protocol)) = self.value("telemetry.otlp_protocol", file.otlp_protocol) {
            telemetry.otlp_protocol = Some(protocol);
        }
        if let Some(Text(environment)) = self.value("telemetry.environment", file.environment) {
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
            .value("telemetry.export_interval_ms", file.export_interval_ms)
            .map(|Int(ms)| ms as u64);
    }

    fn amount_limits(
        &mut self,
        file: Option<Entries<Field<AmountText>>>,
        limits: &mut AmountLimits,
    ) {
        let per_currency = self.amounts("payments.max_amount", file);
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
    }

    fn retry_policy(&mut self, key: &str, file: RetryPolicyFile, policy: &mut RetryPolicy) {
        let field = |name: &str| format!("{key}.{name}");
        if let Some(Int(n)) = self.value(&field("max_retries"), file.max_retries) {
            policy.max_retries = n as u32;
        }
        if let Some(Int(ms)) = self.value(&field("base_delay_ms"), file.base_delay_ms) {
            policy.base_delay_ms = ms as u64;
        }
        if let Some(Int(ms)) = self.value(&field("max_delay_ms"), file.max_delay_ms) {
            policy.max_delay_ms = ms as u64;
        }
        let attempt = self.value(&field("attempt_timeout_ms"), file.attempt_timeout_ms);
        if let Some(Int(ms)) = attempt {
            policy.attempt_timeout_ms = ms as u64;
        }
        if let Some(Int(ms)) = self.value(&field("deadline_ms"), file.deadline_ms) {
            policy.deadline_ms = ms as u64;
        }
    }

    /// An http(s) URL. Credentials in it are refused: secrets never live in the file.
    fn url(&mut self, key: &str, field: Option<Field<Text>>) -> Option<String> {
        let Text(url) = self.value(key, field)?;
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
    fn mongo_uri(&mut self, key: &str, field: Option<Field<Text>>) -> Option<String> {
        let Text(uri) = self.value(key, field)?;
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

    fn fee_schedule(&mut self, fees: FeesFile) -> FeeSchedule {
        let mut schedule = FeeSchedule::default();
        if let Some(default) = self.section("fees.default", fees.default, &["methods"]) {
            let rule = self.fee_rule("fees.default", default);
            // The built-in 2.5 % applies unless the file names another percentage.
            schedule.default = FeeRule {
                percent: rule.percent.or(schedule.default.percent),
                ..rule
            };
        }
        schedule.methods = self.method_rules("fees.methods", fees.methods);
        for (merchant_id, section) in self.entries("fees.merchants", fees.merchants) {
            let key = format!("fees.merchants.{merchant_id}");
            let Some(mut file) = self.section(&key, Some(section), &[]) else {
                continue;
            };
            let methods = file.methods.take();
            let rule = self.fee_rule(&key, file);
            let methods = self.method_rules(&format!("{key}.methods"), methods);
            schedule
                .merchants
                .insert(merchant_id, MerchantFees { rule, methods });
        }
        schedule
    }

    fn method_rules(
        &mut self,
        key: &str,
        file: Option<Entries<Section<FeeRuleFile>>>,
    ) -> BTreeMap<PaymentMethod, FeeRule> {
        let mut rules = BTreeMap::new();
        for (name, section) in self.entries(key, file) {
            let method_key = format!("{key}.{name}");
            let method = match name.parse::<PaymentMethod>() {
                Ok(method) => method,
                Err(error) => {
                    self.problem(&method_key, error);
                    continue;
                }
            };
            if let Some(file) = self.section(&method_key, Some(section), &["methods"]) {
                rules.insert(method, self.fee_rule(&method_key, file));
            }
        }
        rules
    }

    fn fee_rule(&mut self, key: &str, file: FeeRuleFile) -> FeeRule {
        let percent = self.value(&format!("{key}.percent"), file.percent);
        let refund_key = format!("{key}.refund_returns_percent");
        let refund_returns_percent = self.value(&refund_key, file.refund_returns_percent);
        FeeRule {
            percent: percent.map(|Percent(percent)| percent),
            fixed: self.amounts(&format!("{key}.fixed"), file.fixed),
            min: self.amounts(&format!("{key}.min"), file.min),
            max: self.amounts(&format!("{key}.max"), file.max),
            refund_returns_percent: refund_returns_percent.map(|Flag(flag)| flag),
        }
    }

    /// `{ USD = "0.30", JPY = 30 }`: amounts per currency, exact in that currency.
    fn amounts(&mut self, key: &str, file: Option<Entries<Field<AmountText>>>) -> AmountByCurrency {
        let mut amounts = AmountByCurrency::default();
        for (code, field) in self.entries(key, file) {
            let amount_key = format!("{key}.{code}");
            let currency = match Currency::from_code(&code) {
                Ok(currency) => currency,
                Err(error) => {
                    self.problem(&amount_key, error.to_string());
                    continue;
                }
            };
            let Some(AmountText(text)) = self.value(&amount_key, Some(field)) else {
                continue;
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
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::calendar::Cutoff;

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
    fn reconciliation_settings_are_read_and_bad_ones_named() {
        let text = "[reconciliation]\napproval_above_minor = 50000\n\
                    [reconciliation.profiles.bank-x]\naccount = \"ACC-1\"\ncurrency = \"USD\"\n\
                    date_column = \"Date\"\namount_column = \"Amount\"\n\
                    [reconciliation.profiles.bank-z]\naccount = \"ACC-2\"\ndate_column = \"D\"\n";
        let found = problems(text, no_env());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("reconciliation.profiles.bank-z: name exactly one of currency"),
            "{found:?}"
        );
        let text = text
            .split("[reconciliation.profiles.bank-z]")
            .next()
            .unwrap();
        let settings = parse(text, "test.toml", no_env()).unwrap();
        assert_eq!(settings.reconciliation.approval_above_minor, 50_000);
        assert_eq!(settings.reconciliation.profiles["bank-x"].account, "ACC-1");
        assert_eq!(
            Settings::default().reconciliation.approval_above_minor,
            10_000
        );

        let found = problems(
            "[reconciliation]\napproval_above_minor = -1\nthreshold = 3\n\
             [reconciliation.profiles.bank-y]\naccount = \"A\"\ncolour = \"red\"\n",
            no_env(),
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reconciliation.approval_above_minor: -1 is out of range")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reconciliation.threshold: unknown key")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reconciliation.profiles.bank-y:") && p.contains("colour")),
            "{found:?}"
        );
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
