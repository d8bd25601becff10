//! The embedded store: one SQLite file (WAL, full sync), a writer thread (group commit: writes queued
//! together share one `BEGIN IMMEDIATE` transaction) and reader connections on tokio's blocking pool.

mod access;
mod audit;
mod fee_ledgers;
mod idempotency;
mod migration;
mod payouts;
mod reconciliation;
mod rows;
mod schema;
mod settlements;
mod transactions;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use rusqlite::Connection;

use settle_core::store::{Store, StoreError};

pub use schema::SCHEMA_VERSION;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT_MS: u64 = 30_000;
/// Reader connections: reads run side by side (WAL readers do not block each other or the writer).
const READER_CONNECTIONS: usize = 2;

/// Page cache per connection, in KiB (SQLite's default is 2 MiB). Imports and settlement runs
/// touch index pages all over the file; a larger cache keeps them in memory instead of re-reading
/// them from the OS. It is filled only as pages are used, so an idle daemon stays small.
const CACHE_SIZE_KIB: i64 = 65_536;

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Whether a write transaction keeps its changes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decision {
    Commit,
    RollBack,
}

/// The SQLite adapter.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: writer::GroupWriter,
    readers: Arc<Readers>,
}

/// The reader connections; a read takes a free one, or waits its turn on one.
struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let poisoned =
            || StoreError::Backend("a database connection was poisoned by a panic".into());
        for connection in &self.connections {
            match connection.try_lock() {
                Ok(guard) => return work(&guard),
                Err(std::sync::TryLockError::WouldBlock) => continue,
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
            }
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let guard = self.connections[turn % self.connections.len()]
            .lock()
            .map_err(|_| poisoned())?;
        work(&guard)
    }
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
    // A negative cache_size is in KiB.
    connection
        .pragma_update(None, "cache_size", -CACHE_SIZE_KIB)
        .map_err(backend)?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        let opened_path = path.clone();
        let (writer, readers) = tokio::task::spawn_blocking(move || {
            let mut writer = open_connection(&opened_path)?;
            schema::migrate(&mut writer)?;
            let readers = (0..READER_CONNECTIONS)
                .map(|_| open_connection(&opened_path).map(Mutex::new))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((writer, readers))
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(SqliteStore {
            path,
            writer: writer::GroupWriter::start(writer)?,
            readers: Arc::new(Readers {
                connections: readers,
                next: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Like `write`, but `work` decides whether its changes are kept. Writes queued at the same
    /// time share one transaction and one commit (see `writer`); each is answered after it.
    pub(crate) async fn write_deciding<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<(T, Decision), StoreError> + Send + 'static,
    {
        self.writer.write(work).await
    }

    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(work))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
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
