//! Transactions in SQLite: batch inserts with date assignment against sealed dates, single records
//! from the payments service with idempotency keys and refund limits, keyset paging.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rusqlite::{params, Connection};
use uuid::Uuid;

use settle_core::compute::{PaymentKey, RefundedPayment};
use settle_core::model::{Fence, Transaction, TransactionKind};
use settle_core::returns::{self, ReturnTarget};
use settle_core::store::{
    InsertConflict, InsertOutcome, RecordOutcome, StoreError, TransactionRecord, TransactionStore,
};

use super::rows::{self, date_text, instant_text, TRANSACTION_COLUMNS};
use super::{backend, query_all, query_one, Decision, SqliteStore};

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

/// Where a stored transaction landed.
#[derive(Debug, Clone, Copy)]
struct Placement {
    settlement_date: NaiveDate,
    late: bool,
}

/// The insert of one transaction; a row that would repeat an id, reference or idempotency key
/// is left out (`ON CONFLICT DO NOTHING`).
static INSERT_TRANSACTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO transactions ({TRANSACTION_COLUMNS}, idempotency_principal, idempotency_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         ON CONFLICT DO NOTHING"
    )
});

/// Stores one transaction on its date: the natural one, or the first unsealed date after it
/// (marked late). Returns where it landed, or `None` when a row with the same id, reference or
/// idempotency key is already there (nothing is written then; the caller looks at that row).
fn insert_transaction(
    tx: &rusqlite::Transaction,
    record: &TransactionRecord,
    sealed: &BTreeSet<NaiveDate>,
) -> Result<Option<Placement>, StoreError> {
    let mut settlement_date = record.natural_date;
    while sealed.contains(&settlement_date) {
        settlement_date = settlement_date.succ_opt().ok_or_else(|| {
            StoreError::Backend(format!("no settlement date after {settlement_date}"))
        })?;
    }
    let late = settlement_date != record.natural_date;
    let t = &record.transaction;
    let (principal, key) = match &record.idempotency {
        Some(tag) => (Some(tag.actor.as_str()), Some(tag.key.as_str())),
        None => (None, None),
    };
    let inserted_rows = tx
        .prepare_cached(&INSERT_TRANSACTION)
        .and_then(|mut statement| {
            statement.execute(params![
                record
                    .id
                    .hyphenated()
                    .encode_lower(&mut Uuid::encode_buffer()) as &str,
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
                principal,
                key,
            ])
        })
        .map_err(backend)?;
    Ok((inserted_rows > 0).then_some(Placement {
        settlement_date,
        late,
    }))
}

/// The transaction as stored by `insert_transaction`.
fn stored(record: &TransactionRecord, placement: Placement) -> Transaction {
    let t = &record.transaction;
    Transaction {
        id: record.id,
        merchant_id: t.merchant_id.clone(),
        kind: t.kind,
        status: t.status,
        amount_minor: t.amount_minor,
        currency: t.currency,
        method: t.method,
        occurred_at: t.occurred_at,
        external_ref: t.external_ref.clone(),
        refund_of: t.refund_of.clone(),
        created_at: record.created_at,
        settlement_date: placement.settlement_date,
        late: placement.late,
    }
}

/// A row the database refused as a duplicate although no row shares its id or reference.
fn unexplained_refusal(record: &TransactionRecord) -> StoreError {
    StoreError::Backend(format!(
        "transaction {} (merchant {} reference {:?}) was refused as a duplicate, but no stored row has its id or reference",
        record.id, record.transaction.merchant_id, record.transaction.external_ref
    ))
}

/// What is already stored under the record's reference or id, if anything.
enum Existing {
    None,
    Identical(Transaction),
    Different(Transaction),
}

fn existing(connection: &Connection, record: &TransactionRecord) -> Result<Existing, StoreError> {
    let t = &record.transaction;
    if let Some(stored) = transaction_by_ref(connection, &t.merchant_id, &t.external_ref)? {
        return Ok(if t.is_recorded_by(&stored) {
            Existing::Identical(stored)
        } else {
            Existing::Different(stored)
        });
    }
    Ok(match transaction_by_id(connection, record.id)? {
        Some(stored) => Existing::Different(stored),
        None => Existing::None,
    })
}

fn transaction_by_idempotency_key(
    connection: &Connection,
    principal: &str,
    key: &str,
) -> Result<Option<Transaction>, StoreError> {
    query_one(
        connection,
        &format!(
            "SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE idempotency_principal = ?1 AND idempotency_key = ?2"
        ),
        params![principal, key],
        rows::transaction,
    )
}

/// Checks a refund or chargeback against its payment by the rules of [`returns::check_return`];
/// `Some(outcome)` refuses it. Runs inside the write transaction, so two refunds cannot both pass.
fn refund_refusal(
    connection: &Connection,
    record: &TransactionRecord,
) -> Result<Option<RecordOutcome>, StoreError> {
    let t = &record.transaction;
    let Some(reference) = returns::returned_payment_ref(t) else {
        return Ok(None);
    };
    let Some(payment) = transaction_by_ref(connection, &t.merchant_id, reference)? else {
        return Ok(returns::check_return(t, None, 0)
            .err()
            .map(|refusal| RecordOutcome::refused(refusal, None)));
    };
    // Completed and pending returns count (`returns::counts_as_returned`).
    let returned_minor: i64 = connection
        .query_row(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM transactions WHERE merchant_id = ?1 AND refund_of = ?2 \
             AND kind IN ('refund', 'chargeback') AND status IN ('completed', 'pending')",
            params![t.merchant_id, reference],
            |row| row.get(0),
        )
        .map_err(backend)?;
    Ok(
        returns::check_return(t, Some(&ReturnTarget::from(&payment)), returned_minor)
            .err()
            .map(|refusal| RecordOutcome::refused(refusal, Some(payment))),
    )
}

/// How many parts a run's read is cut into (one reader connection each).
const SCAN_PARTS: usize = 2;

impl SqliteStore {
    /// Cuts the date's id range into `(after, until)` parts: ids `> after` (all if `None`) and
    /// `<= until`. Two index seeks, no scan.
    async fn scan_parts(&self, date: NaiveDate) -> Result<Vec<(Option<Uuid>, Uuid)>, StoreError> {
        let bounds = self
            .read(move |connection| {
                connection
                    .query_row(
                        "SELECT MIN(id), MAX(id) FROM transactions WHERE settlement_date = ?1",
                        params![date_text(date)],
                        |row| {
                            Ok((
                                row.get::<_, Option<String>>(0)?,
                                row.get::<_, Option<String>>(1)?,
                            ))
                        },
                    )
                    .map_err(backend)
            })
            .await?;
        let parse = |text: String| {
            Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("column id: {e}")))
        };
        let (Some(low), Some(high)) = bounds else {
            return Ok(Vec::new());
        };
        let (low, high) = (parse(low)?, parse(high)?);
        // Stored ids are lowercase hyphenated UUIDs: their text order is their numeric order.
        let (low, span) = (low.as_u128(), high.as_u128() - low.as_u128());
        let mut parts = Vec::with_capacity(SCAN_PARTS);
        let mut after: Option<Uuid> = None;
        for part in 1..SCAN_PARTS as u128 {
            let until = Uuid::from_u128(low + span / SCAN_PARTS as u128 * part);
            if after.is_none_or(|after| until > after) {
                parts.push((after, until));
                after = Some(until);
            }
        }
        parts.push((after, high));
        Ok(parts)
    }

    /// One keyset page of the date's rows with ids in `(after, until]`, ordered by id.
    async fn page_in_range(
        &self,
        date: NaiveDate,
        after: Option<Uuid>,
        until: Uuid,
        limit: u32,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {TRANSACTION_COLUMNS} FROM transactions \
                     WHERE settlement_date = ?1 AND id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4"
                ),
                params![
                    date_text(date),
                    after.map(|id| id.to_string()).unwrap_or_default(),
                    until.to_string(),
                    limit
                ],
                rows::transaction,
            )
        })
        .await
    }
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
                // Insert first and look only when the row was refused: a new row costs one
                // statement, not two lookups and an insert.
                if let Some(placement) = insert_transaction(tx, record, &sealed)? {
                    outcome.inserted += 1;
                    outcome.late += u64::from(placement.late);
                    continue;
                }
                match existing(tx, record)? {
                    Existing::Identical(_) => outcome.duplicates += 1,
                    Existing::Different(existing) => {
                        outcome.conflicts.push(InsertConflict { index, existing })
                    }
                    Existing::None => return Err(unexplained_refusal(record)),
                }
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
            // One read transaction for the whole batch: one snapshot, and no lock taken per lookup.
            let snapshot = connection.unchecked_transaction().map_err(backend)?;
            let mut found = Vec::new();
            for (merchant_id, external_ref) in &keys {
                found.extend(transaction_by_ref(&snapshot, merchant_id, external_ref)?);
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
        self.page_in_range(settlement_date, after, Uuid::max(), limit)
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
            let snapshot = connection.unchecked_transaction().map_err(backend)?;
            let connection: &Connection = &snapshot;
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

    async fn record_transaction(
        &self,
        record: TransactionRecord,
    ) -> Result<RecordOutcome, StoreError> {
        self.write(move |tx| {
            if let Some(tag) = &record.idempotency {
                if let Some(stored) = transaction_by_idempotency_key(tx, &tag.actor, &tag.key)? {
                    return Ok(RecordOutcome::AlreadyRecorded(stored));
                }
            }
            match existing(tx, &record)? {
                Existing::Identical(stored) => return Ok(RecordOutcome::Duplicate(stored)),
                Existing::Different(stored) => return Ok(RecordOutcome::Conflict(stored)),
                Existing::None => {}
            }
            if let Some(refusal) = refund_refusal(tx, &record)? {
                return Ok(refusal);
            }
            let sealed = sealed_dates(tx)?;
            match insert_transaction(tx, &record, &sealed)? {
                Some(placement) => Ok(RecordOutcome::Inserted(stored(&record, placement))),
                None => Err(unexplained_refusal(&record)),
            }
        })
        .await
    }

    async fn freeze_transactions(&self, _fence: &Fence) -> Result<Option<u64>, StoreError> {
        // Dates are assigned atomically with claims here: the date's rows are already final.
        Ok(None)
    }

    fn run_transactions<'a>(
        &'a self,
        fence: &Fence,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Transaction, StoreError>> {
        // The date's rows are final once claimed. Its id range is cut in `SCAN_PARTS` parts; a task
        // per part reads keyset pages on its own reader connection, a page ahead of the fold, so
        // the reads run side by side and overlap the fold (which does not depend on order).
        let date = fence.settlement_date;
        let page_rows = batch_size.max(1);
        let (pages_tx, pages_rx) = tokio::sync::mpsc::channel(SCAN_PARTS);
        let store = self.clone();
        tokio::spawn(async move {
            let parts = match store.scan_parts(date).await {
                Ok(parts) => parts,
                Err(error) => {
                    let _ = pages_tx.send(Err(error)).await;
                    return;
                }
            };
            for (after, until) in parts {
                let (store, pages_tx) = (store.clone(), pages_tx.clone());
                tokio::spawn(async move {
                    let mut after = after;
                    loop {
                        let page = store.page_in_range(date, after, until, page_rows).await;
                        let last = match &page {
                            Ok(rows) if rows.is_empty() => return,
                            Ok(rows) => rows.last().map(|row| row.id),
                            Err(_) => None,
                        };
                        // The reader went away (it finished or failed): stop reading.
                        if pages_tx.send(page).await.is_err() || last.is_none() {
                            return;
                        }
                        after = last;
                    }
                });
            }
        });
        futures::stream::unfold(pages_rx, |mut pages_rx| async move {
            pages_rx.recv().await.map(|page| (page, pages_rx))
        })
        .map_ok(|page: Vec<Transaction>| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}
