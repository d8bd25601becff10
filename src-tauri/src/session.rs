//! The console's session with one daemon: connect (verify, then keep the token in the keyring),
//! and every read and action the screens need, over `settle_client`. Free of Tauri types.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::NaiveDate;
use serde::Serialize;
use settle_chart::{render_success_rates, render_top_merchants, ChartFormat};
use settle_client::{
    AuditEvent, Client, ClientError, HistoryQuery, IdempotencyKey, LinesPage, LinesQuery, Page,
    Payout, RerunOutcome, RunAccepted, Secret, Settlement, SettlementDetail, SettlementLine,
    Summary,
};
use tokio::sync::RwLock;

use crate::credentials::{CredentialError, CredentialStore, TokenSecret};
use crate::error::CommandError;
use crate::export_path::ExportPathGate;
use crate::preferences::{self, Preferences, PreferencesFile};
use crate::server_url::normalize_server_url;
use crate::views::{concerns_date, revision_changes, RevisionChanges};

/// Every call to the daemon is bounded by this; the UI shows progress meanwhile.
pub const TIMEOUT_MS: u64 = 15_000;
/// The daemon's largest page.
const MAX_PER_PAGE: u32 = 200;
/// How many of the newest audit events the detail screen searches for a date.
const AUDIT_SCAN_LIMIT: u32 = 2_000;
/// The largest revision whose lines are compared in full (pages of `MAX_PER_PAGE`).
const MAX_COMPARED_LINES: u64 = 50_000;
/// Chart sizes, in pixels.
const CHART_WIDTH_PX: u32 = 960;
const DAILY_CHART_HEIGHT_PX: u32 = 520;
/// Statistics cover at most this many days (the daemon's limit too).
const MAX_RANGE_DAYS: i64 = 366;

/// The connected daemon and the keyring its token lives in.
struct Connected {
    client: Client,
    server_url: String,
    keyring: &'static str,
}

/// One console window's state: where its token lives, what it remembers, what it is connected to.
pub struct Console {
    keyring_service: String,
    preferences: PreferencesFile,
    connected: RwLock<Option<Connected>>,
    /// Where the save dialog last said to save the export, for one `export_csv`.
    export_path: ExportPathGate,
}

/// The answer to a successful `connect`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    /// The normalised server URL, also the token's account in the keyring.
    pub server_url: String,
    /// Where the token is kept, for the UI to say so.
    pub keyring: &'static str,
}

/// A settlement date as the detail screen shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SettlementView {
    #[serde(flatten)]
    pub detail: SettlementDetail,
    /// Every revision of the date, oldest first.
    pub revisions: Vec<Settlement>,
    /// Every revision's payouts.
    pub payouts: Vec<Payout>,
}

/// The audit events about one date among the newest `scanned`.
#[derive(Debug, Clone, Serialize)]
pub struct DateAudit {
    pub events: Vec<AuditEvent>,
    pub scanned: u32,
    /// False when older events exist that were not searched.
    pub complete: bool,
}

/// The statistics screen: the summary and its three charts as `data:image/png` URLs.
#[derive(Debug, Clone, Serialize)]
pub struct Statistics {
    pub summary: Summary,
    /// None when no completed settlement lies in the range.
    pub daily_chart: Option<String>,
    pub success_rate_chart: Option<String>,
    pub top_merchants_chart: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Exported {
    pub path: String,
    pub bytes: u64,
}

impl Console {
    /// A console keeping tokens under `keyring_service` and preferences in `preferences_path`.
    pub fn new(keyring_service: &str, preferences_path: PathBuf) -> Console {
        Console {
            keyring_service: keyring_service.to_string(),
            preferences: PreferencesFile::new(preferences_path),
            connected: RwLock::new(None),
            export_path: ExportPathGate::new(),
        }
    }

    pub fn preferences(&self) -> Preferences {
        self.preferences.load()
    }

    pub fn set_language(&self, code: &str) -> Result<Preferences, CommandError> {
        let code = preferences::language(code)?;
        self.preferences.update(|p| p.language = code)
    }

    /// Verifies `token` (or, when empty, the one kept for this server) with one call to the
    /// daemon, and only then keeps it in the keyring and remembers the server.
    pub async fn connect(&self, server_url: &str, token: &str) -> Result<Connection, CommandError> {
        let server_url = normalize_server_url(server_url)?;
        let typed = if token.trim().is_empty() {
            None
        } else {
            Some(TokenSecret::new(token)?)
        };
        let service = self.keyring_service.clone();
        let account = server_url.clone();
        // Keyring calls block (D-Bus, maybe an unlock prompt): off the async threads.
        let (store, token) = blocking(move || {
            let store = CredentialStore::open(&service)?;
            let token = match typed {
                Some(token) => token,
                None => store.load(&account)?.ok_or(CredentialError::InvalidToken(
                    "enter the API token: none is kept for this server yet",
                ))?,
            };
            Ok((store, token))
        })
        .await?;
        let client = Client::new(&server_url, Secret::new(token.expose()), TIMEOUT_MS)?;
        client.verify().await?;
        let keyring = store.backend().name();
        let account = server_url.clone();
        blocking(move || store.store(&account, &token)).await?;
        let remembered = server_url.clone();
        self.preferences
            .update(|p| p.server_url = Some(remembered))?;
        *self.connected.write().await = Some(Connected {
            client,
            server_url: server_url.clone(),
            keyring,
        });
        Ok(Connection {
            server_url,
            keyring,
        })
    }

    /// Forgets the connected server's token (removed from the keyring) and disconnects.
    pub async fn sign_out(&self) -> Result<(), CommandError> {
        let connected = self.connected.write().await.take();
        if let Some(connected) = connected {
            let service = self.keyring_service.clone();
            blocking(move || {
                CredentialStore::open(&service)?.delete(&connected.server_url)?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// The connected server, if any.
    pub async fn connection(&self) -> Option<Connection> {
        self.connected
            .read()
            .await
            .as_ref()
            .map(|connected| Connection {
                server_url: connected.server_url.clone(),
                keyring: connected.keyring,
            })
    }

    /// The client of the connected daemon.
    async fn client(&self) -> Result<Client, CommandError> {
        self.connected
            .read()
            .await
            .as_ref()
            .map(|connected| connected.client.clone())
            .ok_or(CommandError::NotConnected)
    }

    /// Runs a call; a 401 disconnects, so the UI returns to the connect screen.
    async fn call<T>(&self, result: Result<T, ClientError>) -> Result<T, CommandError> {
        match result {
            Ok(value) => Ok(value),
            Err(error @ ClientError::Unauthorized { .. }) => {
                *self.connected.write().await = None;
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn history(&self, query: &HistoryQuery) -> Result<Page<Settlement>, CommandError> {
        if let (Some(from), Some(to)) = (query.from, query.to) {
            if from > to {
                return Err(CommandError::invalid(
                    "from",
                    format!("{from} is after {to}"),
                ));
            }
        }
        let client = self.client().await?;
        self.call(client.history(query).await).await
    }

    /// One revision of `date` (the latest unless `revision`), every revision and every payout.
    pub async fn settlement(
        &self,
        date: NaiveDate,
        revision: Option<u32>,
    ) -> Result<SettlementView, CommandError> {
        let client = self.client().await?;
        let (detail, revisions, payouts) = tokio::join!(
            client.settlement(date, revision),
            client.revisions(date),
            client.payouts(date)
        );
        Ok(SettlementView {
            detail: self.call(detail).await?,
            revisions: self.call(revisions).await?,
            payouts: self.call(payouts).await?,
        })
    }

    pub async fn lines(
        &self,
        date: NaiveDate,
        query: &LinesQuery,
    ) -> Result<LinesPage, CommandError> {
        let client = self.client().await?;
        self.call(client.lines(date, query).await).await
    }

    /// What `revision` of `date` changed against the revision before it.
    pub async fn revision_changes(
        &self,
        date: NaiveDate,
        revision: u32,
    ) -> Result<RevisionChanges, CommandError> {
        if revision < 2 {
            return Err(CommandError::invalid(
                "revision",
                "the first revision has nothing before it to compare with",
            ));
        }
        let client = self.client().await?;
        let (before, after) = tokio::join!(
            client.settlement(date, Some(revision - 1)),
            client.settlement(date, Some(revision))
        );
        let (before, after) = (self.call(before).await?, self.call(after).await?);
        let before_lines = self.all_lines(&client, date, revision - 1).await?;
        let after_lines = self.all_lines(&client, date, revision).await?;
        Ok(revision_changes(
            &before.settlement,
            &before_lines,
            &after.settlement,
            &after_lines,
        ))
    }

    async fn all_lines(
        &self,
        client: &Client,
        date: NaiveDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, CommandError> {
        let mut lines = Vec::new();
        for page in 1.. {
            let query = LinesQuery {
                revision: Some(revision),
                page: Some(page),
                per_page: Some(MAX_PER_PAGE),
                ..LinesQuery::default()
            };
            let answer = self.call(client.lines(date, &query).await).await?;
            if answer.total > MAX_COMPARED_LINES {
                return Err(CommandError::invalid(
                    "revision",
                    format!(
                        "revision {revision} has {} lines, more than the {MAX_COMPARED_LINES} \
                         the console compares; export both revisions as CSV instead",
                        answer.total
                    ),
                ));
            }
            let done = answer.items.is_empty()
                || lines.len() + answer.items.len() >= answer.total as usize;
            lines.extend(answer.items);
            if done {
                break;
            }
        }
        Ok(lines)
    }

    /// The audit events about `date` among the newest `AUDIT_SCAN_LIMIT`, newest first.
    pub async fn audit_for_date(&self, date: NaiveDate) -> Result<DateAudit, CommandError> {
        let client = self.client().await?;
        let mut events = Vec::new();
        let mut scanned = 0;
        let mut complete = true;
        for page in 1..=AUDIT_SCAN_LIMIT / MAX_PER_PAGE {
            let answer = self
                .call(client.audit(Some(page), Some(MAX_PER_PAGE)).await)
                .await?;
            scanned += u32::try_from(answer.items.len()).unwrap_or(u32::MAX);
            events.extend(answer.items.into_iter().filter(|e| concerns_date(e, date)));
            complete = !answer.has_more;
            if complete {
                break;
            }
        }
        Ok(DateAudit {
            events,
            scanned,
            complete,
        })
    }

    /// The summary of `[from, to]` and its charts, drawn by `settle_chart` (the daily chart
    /// by the daemon, the bar charts here from the summary).
    pub async fn statistics(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Statistics, CommandError> {
        if from > to {
            return Err(CommandError::invalid(
                "from",
                format!("{from} is after {to}"),
            ));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(CommandError::invalid(
                "to",
                format!("choose at most {MAX_RANGE_DAYS} days"),
            ));
        }
        let client = self.client().await?;
        let (summary, daily) = tokio::join!(
            client.summary(from, to, Some(10)),
            client.chart_png(from, to, Some(CHART_WIDTH_PX), Some(DAILY_CHART_HEIGHT_PX))
        );
        let summary = self.call(summary).await?;
        let daily_chart = match daily {
            Ok(png) => Some(png_url(&png)),
            Err(ClientError::NotFound { .. }) => None,
            Err(error) => return self.call(Err(error)).await,
        };
        let (success_rate_chart, top_merchants_chart) = if summary.currencies.is_empty() {
            (None, None)
        } else {
            let currencies = summary.currencies.clone();
            let merchants = summary.top_merchants.clone();
            let rows = u32::try_from(currencies.len() + merchants.len()).unwrap_or(u32::MAX);
            let panels = u32::try_from(currencies.len()).unwrap_or(u32::MAX);
            // Drawing takes a few milliseconds of CPU: not on the async threads.
            tokio::task::spawn_blocking(move || {
                let success = render_success_rates(
                    &currencies,
                    ChartFormat::Png,
                    CHART_WIDTH_PX,
                    (34 + 26 * panels + 20).max(120),
                )?;
                let top = render_top_merchants(
                    &merchants,
                    ChartFormat::Png,
                    CHART_WIDTH_PX,
                    (34 * panels + 26 * rows + 20).max(120),
                )?;
                Ok::<_, CommandError>((Some(png_url(&success)), Some(png_url(&top))))
            })
            .await
            .map_err(|error| CommandError::Internal(error.to_string()))??
        };
        Ok(Statistics {
            summary,
            daily_chart,
            success_rate_chart,
            top_merchants_chart,
        })
    }

    /// Settles `date` (or the latest closed business date).
    pub async fn trigger(
        &self,
        date: Option<NaiveDate>,
        key: &str,
    ) -> Result<RunAccepted, CommandError> {
        let key = action_key(key)?;
        let client = self.client().await?;
        self.call(client.trigger(date, &key).await).await
    }

    /// Settles `date` again for `reason` (required, trimmed, at most 500 characters).
    pub async fn rerun(
        &self,
        date: NaiveDate,
        reason: &str,
        apply_current_fees: bool,
        key: &str,
    ) -> Result<RerunOutcome, CommandError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(CommandError::invalid(
                "reason",
                "say why this date is settled again",
            ));
        }
        if reason.chars().count() > 500 {
            return Err(CommandError::invalid("reason", "at most 500 characters"));
        }
        let key = action_key(key)?;
        let client = self.client().await?;
        self.call(client.rerun(date, reason, apply_current_fees, &key).await)
            .await
    }

    /// Resumes the failed latest revision of `date`.
    pub async fn retry(&self, date: NaiveDate, key: &str) -> Result<RunAccepted, CommandError> {
        let key = action_key(key)?;
        let client = self.client().await?;
        self.call(client.retry(date, &key).await).await
    }

    /// Remembers the save dialog's answer for the next `export_csv` (once); returns it as text.
    pub fn remember_export_path(&self, chosen: PathBuf) -> Result<String, CommandError> {
        self.export_path.remember(chosen)
    }

    /// Writes the CSV export of `date` (latest completed revision unless `revision`) to `path`,
    /// whole or not at all: through a temporary file beside it, then renamed. `path` must be the
    /// one the save dialog answered (`remember_export_path`), and serves one export.
    pub async fn export_csv(
        &self,
        date: NaiveDate,
        revision: Option<u32>,
        bom: bool,
        path: &Path,
    ) -> Result<Exported, CommandError> {
        let path = self.export_path.take(path)?;
        let client = self.client().await?;
        let csv = self
            .call(client.export_csv(date, revision, bom).await)
            .await?;
        let target = path.clone();
        let bytes = u64::try_from(csv.len()).unwrap_or(u64::MAX);
        tokio::task::spawn_blocking(move || write_whole(&target, &csv))
            .await
            .map_err(|error| CommandError::Internal(error.to_string()))??;
        Ok(Exported {
            path: path.display().to_string(),
            bytes,
        })
    }
}

/// A fresh key for an action dialog: made when the dialog opens, sent with each submission.
pub fn new_action_key() -> String {
    IdempotencyKey::fresh().as_str().to_string()
}

fn action_key(key: &str) -> Result<IdempotencyKey, CommandError> {
    IdempotencyKey::parse(Some(key), true)
        .map_err(|error| CommandError::invalid("idempotency_key", error.to_string()))
}

/// `data:image/png;base64,…`, which the CSP allows for images (and nothing else).
fn png_url(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    let failed = |message: String| CommandError::Export {
        path: path.display().to_string(),
        message,
    };
    let folder = path
        .parent()
        .filter(|folder| folder.is_dir())
        .ok_or_else(|| failed("its folder does not exist".to_string()))?;
    let mut file =
        tempfile::NamedTempFile::new_in(folder).map_err(|error| failed(error.to_string()))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|error| failed(error.to_string()))?;
    file.as_file()
        .sync_all()
        .map_err(|error| failed(error.to_string()))?;
    file.persist(path)
        .map_err(|error| failed(error.error.to_string()))?;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    task: impl FnOnce() -> Result<T, CredentialError> + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(task)
        .await
        .map_err(|error| CommandError::Internal(error.to_string()))?
        .map_err(CommandError::from)
}

/// A date typed or picked in the UI (`YYYY-MM-DD`), named by its field when it is not one.
pub fn parse_date(field: &'static str, text: &str) -> Result<NaiveDate, CommandError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| CommandError::invalid(field, format!("{text:?} is not a date (YYYY-MM-DD)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_the_ui_are_checked_and_named() {
        assert_eq!(
            parse_date("from", " 2024-03-10 ").unwrap(),
            NaiveDate::from_ymd_opt(2024, 3, 10).unwrap()
        );
        for bad in ["2024-02-30", "10/03/2024", ""] {
            let error = parse_date("from", bad).unwrap_err();
            assert!(error.to_string().starts_with("from: "), "{error}");
        }
    }

    #[test]
    fn action_keys_are_fresh_uuids_and_checked() {
        let (a, b) = (new_action_key(), new_action_key());
        assert_ne!(a, b);
        assert!(action_key(&a).is_ok());
        let error = action_key("not-a-uuid").unwrap_err();
        assert_eq!(
            serde_json::to_value(&error).unwrap()["field"],
            "idempotency_key"
        );
    }

    #[test]
    fn an_export_is_written_whole_or_not_at_all() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("export.csv");
        write_whole(&path, b"a,b\n1,2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a,b\n1,2\n");
        let missing = folder.path().join("missing").join("export.csv");
        let error = write_whole(&missing, b"x").unwrap_err();
        assert!(
            error.to_string().contains("its folder does not exist"),
            "{error}"
        );
        assert!(!missing.exists());
        assert_eq!(
            std::fs::read_dir(folder.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
