//! Transactions in SQLite: batch inserts with date assignment against sealed dates, single records
//! from the payments service with idempotency keys and refund limits, keyset paging.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::model::{Fence, Transaction, TransactionKind};
use crate::settlement::compute::{PaymentKey, RefundedPayment};
use crate::store::{
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

/// Stores one transaction on its date: the natural one, or the first unsealed date after it
/// (marked late). Returns the stored transaction.
fn insert_transaction(
    tx: &rusqlite::Transaction,
    record: &TransactionRecord,
    sealed: &BTreeSet<NaiveDate>,
) -> Result<Transaction, StoreError> {
    let mut settlement_date = record.natural_date;
    while sealed.contains(&settlement_date) {
        settlement_date = settlement_date.succ_opt().ok_or_else(|| {
            StoreError::Backend(format!("no settlement date after {settlement_date}"))
        })?;
    }
    let late = settlement_date != record.natural_date;
    let t = &record.transaction;
    let (principal, key) = match &record.idempotency {
        Some(tag) => (Some(tag.principal.as_str()), Some(tag.key.as_str())),
        None => (None, None),
    };
    tx.prepare_cached(&format!(
        "INSERT INTO transactions ({TRANSACTION_COLUMNS}, idempotency_principal, idempotency_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
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
            principal,
            key,
        ])
    })
    .map_err(backend)?;
    Ok(Transaction {
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
        settlement_date,
        late,
    })
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

/// Checks a refund or chargeback against its payment; `Some(outcome)` refuses it.
fn refund_refusal(
    connection: &Connection,
    record: &TransactionRecord,
) -> Result<Option<RecordOutcome>, StoreError> {
    let t = &record.transaction;
    let returns_a_payment = matches!(
        t.kind,
        TransactionKind::Refund | TransactionKind::Chargeback
    );
    let (true, Some(reference)) = (returns_a_payment, &t.refund_of) else {
        return Ok(None);
    };
    let Some(payment) = transaction_by_ref(connection, &t.merchant_id, reference)? else {
        return Ok(Some(RecordOutcome::PaymentNotFound));
    };
    let reason = payment.why_not_returnable(t.currency);
    if let Some(reason) = reason {
        return Ok(Some(RecordOutcome::NotRefundable { payment, reason }));
    }
    let returned_minor: i64 = connection
        .query_row(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM transactions WHERE merchant_id = ?1 AND refund_of = ?2 \
             AND kind IN ('refund', 'chargeback') AND status IN ('completed', 'pending')",
            params![t.merchant_id, reference],
            |row| row.get(0),
        )
        .map_err(backend)?;
    let total = returned_minor.checked_add(t.amount_minor);
    if total.is_none_or(|total| total > payment.amount_minor) {
        return Ok(Some(RecordOutcome::ExceedsPayment {
            payment,
            returned_minor,
        }));
    }
    Ok(None)
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
                match existing(tx, record)? {
                    Existing::Identical(_) => outcome.duplicates += 1,
                    Existing::Different(existing) => {
                        outcome.conflicts.push(InsertConflict { index, existing })
                    }
                    Existing::None => {
                        let stored = insert_transaction(tx, record, &sealed)?;
                        outcome.inserted += 1;
                        outcome.late += u64::from(stored.late);
                    }
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

    async fn record_transaction(
        &self,
        record: TransactionRecord,
    ) -> Result<RecordOutcome, StoreError> {
        self.write(move |tx| {
            if let Some(tag) = &record.idempotency {
                if let Some(stored) = transaction_by_idempotency_key(tx, &tag.principal, &tag.key)?
                {
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
            Ok(RecordOutcome::Inserted(insert_transaction(
                tx, &record, &sealed,
            )?))
        })
        .await
    }

    async fn freeze_transactions(&self, fence: &Fence) -> Result<u64, StoreError> {
        // Dates are assigned atomically with claims here: the date's rows are already final.
        let date = date_text(fence.settlement_date);
        self.read(move |connection| {
            let count: i64 = connection
                .query_row(
                    "SELECT COUNT(*) FROM transactions WHERE settlement_date = ?1",
                    params![date],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            Ok(count as u64)
        })
        .await
    }

    fn run_transactions<'a>(
        &'a self,
        fence: &Fence,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Transaction, StoreError>> {
        // Keyset pages of the date (its rows are final once claimed), flattened into one stream.
        let date = fence.settlement_date;
        let pages = futures::stream::try_unfold(
            Some(None),
            move |after: Option<Option<Uuid>>| async move {
                let Some(after) = after else { return Ok(None) };
                let page = self
                    .transactions_page(date, after, batch_size.max(1))
                    .await?;
                let next = page.last().map(|last| Some(last.id));
                Ok::<_, StoreError>(if page.is_empty() {
                    None
                } else {
                    Some((page, next))
                })
            },
        );
        pages
            .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }
}
