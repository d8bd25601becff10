//! The embedded store: one SQLite file (WAL, full sync), a writer and a reader connection, every
//! multi-row write in one `BEGIN IMMEDIATE` transaction. Blocking work runs on tokio's blocking pool.

mod rows;
mod schema;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, params_from_iter, Connection, TransactionBehavior};
use uuid::Uuid;

use crate::model::{
    AuditEvent, Fence, Settlement, SettlementFigures, SettlementLine, SettlementStatus,
    Transaction, TransactionKind,
};
use crate::settlement::compute::{ComputedSettlement, PaymentKey, RefundedPayment};

use super::{
    AuditStore, ClaimMode, ClaimRequest, HistoryFilter, InsertConflict, InsertOutcome,
    SettlementStore, Store, StoreError, TransactionRecord, TransactionStore,
};
use rows::{date_text, instant_text, FIGURE_COLUMNS, SETTLEMENT_COLUMNS, TRANSACTION_COLUMNS};

pub use schema::SCHEMA_VERSION;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT_MS: u64 = 30_000;

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Whether a write transaction keeps its changes.
enum Decision {
    Commit,
    RollBack,
}

/// The SQLite adapter.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(|e| {
        StoreError::Backend(format!("cannot open the database {}: {e}", path.display()))
    })?;
    connection
        .busy_timeout(StdDuration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(backend)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    // FULL: a committed settlement survives a power cut, not only a process crash.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(backend)?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        let opened_path = path.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            let mut writer = open_connection(&opened_path)?;
            schema::migrate(&mut writer)?;
            let reader = open_connection(&opened_path)?;
            Ok::<_, StoreError>((writer, reader))
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(SqliteStore {
            path,
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with<T, F>(connection: &Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(connection);
        tokio::task::spawn_blocking(move || {
            let mut guard = connection.lock().map_err(|_| {
                StoreError::Backend("a database connection was poisoned by a panic".into())
            })?;
            work(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    /// Runs `work` inside one write transaction; it commits only if `work` succeeds.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_deciding(move |tx| work(tx).map(|value| (value, Decision::Commit)))
            .await
    }

    /// Like `write`, but `work` decides whether its changes are kept.
    async fn write_deciding<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<(T, Decision), StoreError> + Send + 'static,
    {
        Self::with(&self.writer, move |connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let (value, decision) = work(&tx)?;
            match decision {
                Decision::Commit => tx.commit().map_err(backend)?,
                Decision::RollBack => tx.rollback().map_err(backend)?,
            }
            Ok(value)
        })
        .await
    }

    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::with(&self.reader, move |connection| work(connection)).await
    }
}

/// Runs a query and maps every row with a domain decoder.
fn query_all<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(backend)?;
    let mut rows = statement.query(params).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

fn query_one<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(query_all(connection, sql, params, decode)?
        .into_iter()
        .next())
}

fn transaction_by_ref(
    connection: &Connection,
    merchant_id: &str,
    external_ref: &str,
) -> Result<Option<Transaction>, StoreError> {
    query_one(
        connection,
        &format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE merchant_id = ?1 AND external_ref = ?2"),
        params![merchant_id, external_ref],
        rows::transaction,
    )
}

fn transaction_by_id(connection: &Connection, id: Uuid) -> Result<Option<Transaction>, StoreError> {
    query_one(
        connection,
        &format!("SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE id = ?1"),
        params![id.to_string()],
        rows::transaction,
    )
}

/// Dates that have at least one revision: new transactions no longer land on them.
fn sealed_dates(connection: &Connection) -> Result<BTreeSet<NaiveDate>, StoreError> {
    query_all(
        connection,
        "SELECT DISTINCT settlement_date FROM settlements",
        [],
        |row| {
            let text: String = row.get(0).map_err(backend)?;
            text.parse()
                .map_err(|e| StoreError::Corrupt(format!("settlement_date {text:?}: {e}")))
        },
    )
    .map(|dates| dates.into_iter().collect())
}

fn insert_transaction(
    tx: &rusqlite::Transaction,
    record: &TransactionRecord,
    settlement_date: NaiveDate,
    late: bool,
) -> Result<(), StoreError> {
    let t = &record.transaction;
    tx.prepare_cached(&format!(
        "INSERT INTO transactions ({TRANSACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))
    .and_then(|mut statement| {
        statement.execute(params![
            record.id.to_string(),
            t.merchant_id,
            t.kind.as_str(),
            t.status.as_str(),
            t.amount_minor,
            t.currency.code(),
            t.method.as_str(),
            instant_text(t.occurred_at),
            t.external_ref,
            t.refund_of,
            instant_text(record.created_at),
            date_text(settlement_date),
            i64::from(late),
        ])
    })
    .map_err(backend)?;
    Ok(())
}

fn latest_revision(
    connection: &Connection,
    date: NaiveDate,
) -> Result<Option<Settlement>, StoreError> {
    query_one(
        connection,
        &format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 ORDER BY revision DESC LIMIT 1"
        ),
        params![date_text(date)],
        rows::settlement,
    )
}

fn settlement_with_totals(
    connection: &Connection,
    date: NaiveDate,
    revision: Option<u32>,
) -> Result<Option<Settlement>, StoreError> {
    let found = match revision {
        None => latest_revision(connection, date)?,
        Some(revision) => query_one(
            connection,
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 AND revision = ?2"),
            params![date_text(date), revision],
            rows::settlement,
        )?,
    };
    found.map(|s| with_totals(connection, s)).transpose()
}

fn with_totals(
    connection: &Connection,
    mut settlement: Settlement,
) -> Result<Settlement, StoreError> {
    settlement.totals = query_all(
        connection,
        &format!(
            "SELECT currency, merchant_count, {FIGURE_COLUMNS} FROM settlement_totals \
             WHERE settlement_date = ?1 AND revision = ?2 ORDER BY currency"
        ),
        params![date_text(settlement.settlement_date), settlement.revision],
        rows::totals,
    )?;
    Ok(settlement)
}

/// Inserts a brand-new running revision.
fn insert_revision(
    tx: &rusqlite::Transaction,
    request: &ClaimRequest,
    revision: u32,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let calendar =
        serde_json::to_string(&request.calendar).map_err(|e| StoreError::Backend(e.to_string()))?;
    let fee_schedule = serde_json::to_string(&request.fee_schedule)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let now = instant_text(request.now);
    tx.execute(
        &format!(
            "INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES \
             (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 1, ?12, ?12, NULL, NULL)"
        ),
        params![
            date_text(request.settlement_date),
            revision,
            request.trigger.as_str(),
            request.requested_by,
            reason,
            calendar,
            fee_schedule,
            instant_text(request.window.start),
            instant_text(request.window.end),
            request.owner,
            instant_text(request.now + request.lease_duration),
            now,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

/// Takes over an existing revision: new owner, new lease, fencing version + 1.
fn take_over(
    tx: &rusqlite::Transaction,
    current: &Settlement,
    request: &ClaimRequest,
) -> Result<(), StoreError> {
    let changed = tx
        .execute(
            "UPDATE settlements SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, \
             lease_version = lease_version + 1, attempts = attempts + 1, started_at = ?3, error = NULL \
             WHERE settlement_date = ?4 AND revision = ?5 AND lease_version = ?6",
            params![
                request.owner,
                instant_text(request.now + request.lease_duration),
                instant_text(request.now),
                date_text(current.settlement_date),
                current.revision,
                current.lease_version,
            ],
        )
        .map_err(backend)?;
    if changed != 1 {
        return Err(StoreError::Backend(
            "the revision changed during its claim".into(),
        ));
    }
    Ok(())
}

fn lease_is_live(settlement: &Settlement, now: DateTime<Utc>) -> bool {
    settlement.status == SettlementStatus::Running
        && settlement
            .lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at > now)
}

fn already_running(settlement: &Settlement) -> StoreError {
    let lease = settlement.lease.clone();
    StoreError::AlreadyRunning {
        settlement_date: settlement.settlement_date,
        revision: settlement.revision,
        owner: lease.as_ref().map(|l| l.owner.clone()).unwrap_or_default(),
        lease_expires_at: lease.map(|l| l.expires_at).unwrap_or(settlement.started_at),
    }
}

/// Decides and applies a claim inside the write transaction.
fn claim(tx: &rusqlite::Transaction, request: &ClaimRequest) -> Result<u32, StoreError> {
    let date = request.settlement_date;
    let latest = latest_revision(tx, date)?;
    let now = request.now;
    match (&request.mode, latest) {
        (ClaimMode::Run, None) => {
            insert_revision(tx, request, 1, None)?;
            Ok(1)
        }
        (ClaimMode::Rerun { .. } | ClaimMode::Retry, None) => Err(StoreError::NothingToDo {
            settlement_date: date,
            what: "revision yet; use `run` to settle it first",
        }),
        (_, Some(current)) if lease_is_live(&current, now) => Err(already_running(&current)),
        (ClaimMode::Run | ClaimMode::Retry, Some(current))
            if current.status == SettlementStatus::Completed =>
        {
            Err(StoreError::AlreadySettled {
                settlement_date: date,
                revision: current.revision,
            })
        }
        (ClaimMode::Run, Some(current)) if current.status == SettlementStatus::Failed => {
            Err(StoreError::RevisionFailed {
                settlement_date: date,
                revision: current.revision,
                error: current.error.clone().unwrap_or_default(),
            })
        }
        // Running with an expired lease (its process died), or failed and asked to retry.
        (ClaimMode::Run | ClaimMode::Retry, Some(current)) => {
            take_over(tx, &current, request)?;
            Ok(current.revision)
        }
        (
            ClaimMode::Rerun {
                after_revision,
                reason,
            },
            Some(current),
        ) => {
            if current.revision != *after_revision {
                return Err(StoreError::RevisionMoved {
                    settlement_date: date,
                    expected: *after_revision,
                    found: current.revision,
                });
            }
            if current.status == SettlementStatus::Running
                || current.status == SettlementStatus::Pending
            {
                return Err(StoreError::RevisionFailed {
                    settlement_date: date,
                    revision: current.revision,
                    error: "its run stopped before finishing (lease expired)".into(),
                });
            }
            let revision = current.revision + 1;
            insert_revision(tx, request, revision, Some(reason))?;
            Ok(revision)
        }
    }
}

/// Applies a fenced update; zero rows changed means the lease was lost.
fn fenced_update(
    tx: &rusqlite::Transaction,
    fence: &Fence,
    set_clause: &str,
    values: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE settlements SET {set_clause} WHERE settlement_date = ?{a} AND revision = ?{b} \
         AND lease_version = ?{c} AND status = 'running'",
        a = values.len() + 1,
        b = values.len() + 2,
        c = values.len() + 3,
    );
    let date = date_text(fence.settlement_date);
    let mut all: Vec<&dyn rusqlite::ToSql> = values.to_vec();
    all.push(&date);
    all.push(&fence.revision);
    all.push(&fence.lease_version);
    let changed = tx.execute(&sql, params_from_iter(all)).map_err(backend)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(fence.clone()))
    }
}

/// Inserts one row of figures (a merchant line or a currency's totals) of a revision.
fn insert_figures(
    tx: &rusqlite::Transaction,
    table: &str,
    key_columns: [&str; 2],
    date: &str,
    revision: u32,
    keys: [&dyn rusqlite::ToSql; 2],
    figures: &SettlementFigures,
) -> Result<(), StoreError> {
    let placeholders = (5..=20)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO {table} (settlement_date, revision, {}, {}, {FIGURE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, {placeholders})",
        key_columns[0], key_columns[1]
    );
    let figures = rows::figures_params(figures);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&date, &revision, keys[0], keys[1]];
    values.extend(figures.iter().map(|v| v as &dyn rusqlite::ToSql));
    tx.prepare_cached(&sql)
        .and_then(|mut statement| statement.execute(params_from_iter(values)))
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl TransactionStore for SqliteStore {
    async fn insert_transactions(
        &self,
        batch: Vec<TransactionRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        self.write_deciding(move |tx| {
            let sealed = sealed_dates(tx)?;
            let mut outcome = InsertOutcome::default();
            for (index, record) in batch.iter().enumerate() {
                let t = &record.transaction;
                if let Some(existing) = transaction_by_ref(tx, &t.merchant_id, &t.external_ref)? {
                    if t.is_recorded_by(&existing) {
                        outcome.duplicates += 1;
                    } else {
                        outcome.conflicts.push(InsertConflict { index, existing });
                    }
                    continue;
                }
                if let Some(existing) = transaction_by_id(tx, record.id)? {
                    outcome.conflicts.push(InsertConflict { index, existing });
                    continue;
                }
                let mut settlement_date = record.natural_date;
                while sealed.contains(&settlement_date) {
                    settlement_date = settlement_date.succ_opt().ok_or_else(|| {
                        StoreError::Backend(format!("no settlement date after {settlement_date}"))
                    })?;
                }
                let late = settlement_date != record.natural_date;
                insert_transaction(tx, record, settlement_date, late)?;
                outcome.inserted += 1;
                outcome.late += u64::from(late);
            }
            if outcome.conflicts.is_empty() {
                Ok((outcome, Decision::Commit))
            } else {
                let nothing_written = InsertOutcome {
                    conflicts: outcome.conflicts,
                    ..InsertOutcome::default()
                };
                Ok((nothing_written, Decision::RollBack))
            }
        })
        .await
    }

    async fn transactions_by_ref(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.read(move |connection| {
            let mut found = Vec::new();
            for (merchant_id, external_ref) in &keys {
                found.extend(transaction_by_ref(connection, merchant_id, external_ref)?);
            }
            Ok(found)
        })
        .await
    }

    async fn transaction(&self, id: Uuid) -> Result<Option<Transaction>, StoreError> {
        self.read(move |connection| transaction_by_id(connection, id))
            .await
    }

    async fn transactions_page(
        &self,
        settlement_date: NaiveDate,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {TRANSACTION_COLUMNS} FROM transactions \
                     WHERE settlement_date = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ),
                params![
                    date_text(settlement_date),
                    after.map(|id| id.to_string()).unwrap_or_default(),
                    limit
                ],
                rows::transaction,
            )
        })
        .await
    }

    async fn late_transactions(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {TRANSACTION_COLUMNS} FROM transactions \
                     WHERE settlement_date = ?1 AND late = 1 ORDER BY occurred_at, id"
                ),
                params![date_text(settlement_date)],
                rows::transaction,
            )
        })
        .await
    }

    async fn refunded_payments(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<RefundedPayment>, StoreError> {
        self.read(move |connection| {
            let mut found = Vec::new();
            for (merchant_id, external_ref) in &keys {
                let Some(payment) = transaction_by_ref(connection, merchant_id, external_ref)? else {
                    continue;
                };
                if payment.kind != TransactionKind::Payment {
                    continue;
                }
                let refunds = query_all(
                    connection,
                    &format!(
                        "SELECT {TRANSACTION_COLUMNS} FROM transactions \
                         WHERE merchant_id = ?1 AND refund_of = ?2 AND kind IN ('refund', 'chargeback')"
                    ),
                    params![merchant_id, external_ref],
                    rows::transaction,
                )?;
                found.push(RefundedPayment { payment, refunds });
            }
            Ok(found)
        })
        .await
    }
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError> {
        let date = request.settlement_date;
        let revision = self.write(move |tx| claim(tx, &request)).await?;
        self.settlement(date, Some(revision))
            .await?
            .ok_or_else(|| StoreError::Backend("a claimed revision vanished".into()))
    }

    async fn renew_lease(
        &self,
        fence: &Fence,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |tx| {
            fenced_update(
                tx,
                &fence,
                "lease_expires_at = ?1",
                &[&instant_text(expires_at)],
            )
        })
        .await
    }

    async fn complete_settlement(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError> {
        let fence = fence.clone();
        let result = result.clone();
        let (date, revision) = (fence.settlement_date, fence.revision);
        self.write(move |tx| {
            let now = instant_text(now);
            fenced_update(
                tx,
                &fence,
                "status = 'completed', completed_at = ?1, lease_expires_at = ?1, error = NULL",
                &[&now],
            )?;
            let date = date_text(fence.settlement_date);
            for line in &result.lines {
                let keys: [&dyn rusqlite::ToSql; 2] = [&line.merchant_id, &line.currency.code()];
                insert_figures(
                    tx,
                    "settlement_lines",
                    ["merchant_id", "currency"],
                    &date,
                    fence.revision,
                    keys,
                    &line.figures,
                )?;
            }
            for total in &result.totals {
                let merchant_count = i64::try_from(total.merchant_count).unwrap_or(i64::MAX);
                let keys: [&dyn rusqlite::ToSql; 2] = [&total.currency.code(), &merchant_count];
                insert_figures(
                    tx,
                    "settlement_totals",
                    ["currency", "merchant_count"],
                    &date,
                    fence.revision,
                    keys,
                    &total.figures,
                )?;
            }
            Ok(())
        })
        .await?;
        self.settlement(date, Some(revision))
            .await?
            .ok_or_else(|| StoreError::Backend("a completed revision vanished".into()))
    }

    async fn fail_settlement(
        &self,
        fence: &Fence,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        let error = error.to_string();
        self.write(move |tx| {
            fenced_update(
                tx,
                &fence,
                "status = 'failed', error = ?1, lease_expires_at = ?2",
                &[&error, &instant_text(now)],
            )
        })
        .await
    }

    async fn settlement(
        &self,
        settlement_date: NaiveDate,
        revision: Option<u32>,
    ) -> Result<Option<Settlement>, StoreError> {
        self.read(move |connection| settlement_with_totals(connection, settlement_date, revision))
            .await
    }

    async fn settlement_revisions(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Settlement>, StoreError> {
        self.read(move |connection| {
            let revisions = query_all(
                connection,
                &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 ORDER BY revision"),
                params![date_text(settlement_date)],
                rows::settlement,
            )?;
            revisions.into_iter().map(|s| with_totals(connection, s)).collect()
        })
        .await
    }

    async fn settlement_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Vec<Settlement>, StoreError> {
        let filter = filter.clone();
        self.read(move |connection| {
            let latest_only = if filter.all_revisions {
                "1 = 1"
            } else {
                "s.revision = (SELECT MAX(revision) FROM settlements WHERE settlement_date = s.settlement_date)"
            };
            let sql = format!(
                "SELECT {columns} FROM settlements s WHERE {latest_only} \
                 AND (?1 IS NULL OR s.settlement_date >= ?1) AND (?2 IS NULL OR s.settlement_date <= ?2) \
                 AND (?3 IS NULL OR s.status = ?3) \
                 ORDER BY s.settlement_date DESC, s.revision DESC LIMIT ?4 OFFSET ?5",
                columns = SETTLEMENT_COLUMNS
                    .split(", ")
                    .map(|c| format!("s.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let limit = if filter.limit == 0 { u32::MAX } else { filter.limit };
            let found = query_all(
                connection,
                &sql,
                params![
                    filter.from.map(date_text),
                    filter.to.map(date_text),
                    filter.status.map(|s| s.as_str()),
                    limit,
                    filter.offset
                ],
                rows::settlement,
            )?;
            found.into_iter().map(|s| with_totals(connection, s)).collect()
        })
        .await
    }

    async fn settlement_lines(
        &self,
        settlement_date: NaiveDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT merchant_id, currency, {FIGURE_COLUMNS} FROM settlement_lines \
                     WHERE settlement_date = ?1 AND revision = ?2 ORDER BY merchant_id, currency"
                ),
                params![date_text(settlement_date), revision],
                rows::line,
            )
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO audit_events (id, occurred_at, actor, action, subject, outcome, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    event.id.to_string(),
                    instant_text(event.occurred_at),
                    event.actor,
                    event.action,
                    event.subject,
                    event.outcome,
                    event.detail.to_string()
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn audit_events(&self, limit: u32, offset: u32) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                "SELECT id, occurred_at, actor, action, subject, outcome, detail FROM audit_events \
                 ORDER BY occurred_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                params![limit, offset],
                rows::audit_event,
            )
        })
        .await
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
