//! Group commit: one thread owns the write connection and runs the writes queued meanwhile in one
//! transaction, each under its own savepoint, so concurrent writers share one fsync per group.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use rusqlite::{Connection, TransactionBehavior};

use super::{backend, Decision};
use settle_core::store::StoreError;

/// Writes run in one group at most; the rest wait for the next one.
const MAX_GROUP_WRITES: usize = 256;

/// A write waiting for its group: its work, then the caller's answer once the group's fate is known.
trait QueuedWrite: Send {
    /// Runs the work inside the group's transaction; `Decision::RollBack` undoes it (only it).
    fn run(&mut self, tx: &rusqlite::Transaction) -> Decision;
    /// Answers the caller: the work's value if its changes are durable (or it kept none).
    fn answer(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Pending<T, F> {
    work: Option<F>,
    outcome: Option<(Result<T, StoreError>, Decision)>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: FnOnce(&rusqlite::Transaction) -> Result<(T, Decision), StoreError> + Send,
{
    fn run(&mut self, tx: &rusqlite::Transaction) -> Decision {
        let Some(work) = self.work.take() else {
            return Decision::RollBack;
        };
        let (value, decision) = match catch_unwind(AssertUnwindSafe(|| work(tx))) {
            Ok(Ok((value, decision))) => (Ok(value), decision),
            Ok(Err(error)) => (Err(error), Decision::RollBack),
            Err(_) => (
                Err(StoreError::Backend("a database write panicked".into())),
                Decision::RollBack,
            ),
        };
        self.outcome = Some((value, decision));
        decision
    }

    fn answer(self: Box<Self>, committed: Result<(), &StoreError>) {
        let reply = match (self.outcome, committed) {
            // Nothing of it was kept, so the group's fate does not change its answer.
            (Some((value, Decision::RollBack)), _) => value,
            (Some((value, Decision::Commit)), Ok(())) => value,
            (Some((_, Decision::Commit)), Err(error)) => Err(error.clone()),
            (None, Err(error)) => Err(error.clone()),
            (None, Ok(())) => Err(StoreError::Backend(
                "a queued database write was not run".into(),
            )),
        };
        // The caller may have given up waiting; its answer then has nobody to go to.
        let _ = self.reply.send(reply);
    }
}

/// The queue in front of the writer thread. Dropping every clone stops the thread, which then
/// closes the connection.
#[derive(Clone)]
pub(super) struct GroupWriter {
    queue: mpsc::Sender<Box<dyn QueuedWrite>>,
}

impl GroupWriter {
    /// Starts the thread that owns `connection`.
    pub(super) fn start(connection: Connection) -> Result<GroupWriter, StoreError> {
        let (queue, queued) = mpsc::channel();
        std::thread::Builder::new()
            .name("settle-sqlite-writer".into())
            .spawn(move || write_groups(connection, queued))
            .map_err(|e| StoreError::Backend(format!("cannot start the database writer: {e}")))?;
        Ok(GroupWriter { queue })
    }

    /// Queues `work` and waits until its group is committed (or it is known to have kept nothing).
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<(T, Decision), StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending: Box<dyn QueuedWrite> = Box::new(Pending {
            work: Some(work),
            outcome: None,
            reply,
        });
        self.queue
            .send(pending)
            .map_err(|_| StoreError::Backend("the database writer has stopped".into()))?;
        // Waited for on the blocking pool, as the store's reads are: tokio then knows work is in
        // progress (a paused test clock, for one, does not jump ahead while a write runs).
        let stopped = || StoreError::Backend("the database writer stopped before answering".into());
        tokio::task::spawn_blocking(move || answer.blocking_recv())
            .await
            .map_err(|_| stopped())?
            .map_err(|_| stopped())?
    }
}

/// The writer thread: takes what is queued (up to `MAX_GROUP_WRITES`), runs it as one group.
fn write_groups(mut connection: Connection, queued: mpsc::Receiver<Box<dyn QueuedWrite>>) {
    while let Ok(first) = queued.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_WRITES {
            match queued.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        write_group(&mut connection, group);
    }
}

/// One transaction for the group; each write under a savepoint, undone alone if it fails or
/// decides so. Every caller is answered after the commit; if the group fails, none is told its
/// changes were kept.
fn write_group(connection: &mut Connection, mut group: Vec<Box<dyn QueuedWrite>>) {
    let outcome = run_group(connection, &mut group);
    let committed = match &outcome {
        Ok(()) => Ok(()),
        Err(error) => Err(error),
    };
    for write in group {
        write.answer(committed);
    }
}

fn run_group(
    connection: &mut Connection,
    group: &mut [Box<dyn QueuedWrite>],
) -> Result<(), StoreError> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    for write in group.iter_mut() {
        tx.execute_batch("SAVEPOINT queued_write")
            .map_err(backend)?;
        let decision = write.run(&tx);
        // Some errors (disk full, I/O) make SQLite abandon the whole transaction: then the group
        // must not go on, or later writes would run and commit outside it.
        if tx.is_autocommit() {
            return Err(StoreError::Backend(
                "the database abandoned the write transaction".into(),
            ));
        }
        let finish = match decision {
            Decision::Commit => "RELEASE queued_write",
            Decision::RollBack => "ROLLBACK TO queued_write; RELEASE queued_write",
        };
        tx.execute_batch(finish).map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, GroupWriter, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        (dir, GroupWriter::start(connection).unwrap(), reader)
    }

    fn stored(reader: &Connection) -> Vec<i64> {
        let mut statement = reader.prepare("SELECT n FROM t ORDER BY n").unwrap();
        let rows = statement.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Each write inserts n; every third fails after inserting, every fifth decides to roll back,
    /// one panics. Queued together, they share groups; only the kept ones may be stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_write_in_a_group_keeps_or_loses_only_its_own_changes() {
        let (_dir, writer, reader) = writer();
        let writes = (0..300_i64).map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |tx| {
                        tx.execute("INSERT INTO t (n) VALUES (?1)", [n])
                            .map_err(backend)?;
                        if n == 7 {
                            panic!("a write that panics");
                        }
                        if n % 3 == 0 {
                            return Err(StoreError::Backend(format!("write {n} failed")));
                        }
                        let decision = if n % 5 == 0 {
                            Decision::RollBack
                        } else {
                            Decision::Commit
                        };
                        Ok((n, decision))
                    })
                    .await
            })
        });
        let answers = futures::future::join_all(writes).await;
        let mut expected = Vec::new();
        for (n, answer) in (0..300_i64).zip(answers) {
            match answer.unwrap() {
                Ok(value) => {
                    assert_eq!(value, n);
                    assert!(n % 3 != 0 && n != 7, "write {n} should have failed");
                    if n % 5 != 0 {
                        expected.push(n);
                    }
                }
                Err(error) => {
                    assert!(n % 3 == 0 || n == 7, "write {n} failed: {error}");
                }
            }
        }
        assert_eq!(stored(&reader), expected);
        // A write after a panic still works: the thread survived it.
        writer
            .write(|tx| {
                tx.execute("INSERT INTO t (n) VALUES (1000)", [])
                    .map_err(backend)?;
                Ok(((), Decision::Commit))
            })
            .await
            .unwrap();
        assert_eq!(stored(&reader).last(), Some(&1000));
    }

    /// A write that breaks a constraint is refused alone; the group's others commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_statement_does_not_take_the_group_down() {
        let (_dir, writer, reader) = writer();
        let insert = |n: i64| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |tx| {
                        tx.execute("INSERT INTO t (n) VALUES (?1)", [n])
                            .map_err(backend)?;
                        Ok(((), Decision::Commit))
                    })
                    .await
            }
        };
        let (a, b, c) = tokio::join!(insert(1), insert(1), insert(2));
        let failures = [&a, &b].iter().filter(|r| r.is_err()).count();
        assert_eq!(
            failures, 1,
            "exactly one duplicate insert fails: {a:?} {b:?}"
        );
        c.unwrap();
        assert_eq!(stored(&reader), vec![1, 2]);
    }
}
