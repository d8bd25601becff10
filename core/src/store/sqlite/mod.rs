//! The embedded store: one SQLite file (WAL, full sync), a writer and a reader connection, every
//! multi-row write in one `BEGIN IMMEDIATE` transaction. Blocking work runs on tokio's blocking pool.

mod access;
mod audit;
mod idempotency;
mod migration;
mod payouts;
mod rows;
mod schema;
mod settlements;
mod transactions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rusqlite::{Connection, TransactionBehavior};

use super::{Store, StoreError};

pub use schema::SCHEMA_VERSION;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT_MS: u64 = 30_000;

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Whether a write transaction keeps its changes.
pub(crate) enum Decision {
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
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_deciding(move |tx| work(tx).map(|value| (value, Decision::Commit)))
            .await
    }

    /// Like `write`, but `work` decides whether its changes are kept.
    pub(crate) async fn write_deciding<T, F>(&self, work: F) -> Result<T, StoreError>
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

    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::with(&self.reader, move |connection| work(connection)).await
    }
}

/// Runs a query and maps every row with a domain decoder.
pub(crate) fn query_all<T>(
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

pub(crate) fn query_one<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(query_all(connection, sql, params, decode)?
        .into_iter()
        .next())
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
