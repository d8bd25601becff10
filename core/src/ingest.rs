//! Recording transactions: validate, give each an id and its natural settlement date, store in
//! batches. Shared by the CSV importer, the demo and (later) the payments API.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::calendar::{BusinessCalendar, CalendarError};
use crate::model::NewTransaction;
use crate::store::{InsertOutcome, StoreError, TransactionRecord, TransactionStore};

/// Turns a validated transaction into a record ready for the store. A new id is a UUIDv7: ids
/// given in one process ascend, so the store's id indexes grow at their end, not at random pages.
pub fn prepare(
    transaction: NewTransaction,
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
) -> Result<TransactionRecord, CalendarError> {
    let natural_date = calendar.date_of(transaction.occurred_at)?;
    Ok(TransactionRecord {
        id: transaction.id.unwrap_or_else(Uuid::now_v7),
        transaction,
        created_at: now,
        natural_date,
        idempotency: None,
    })
}

/// Errors of `record`.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Prepares and stores one batch atomically (see `TransactionStore::insert_transactions`).
pub async fn record(
    store: &dyn TransactionStore,
    calendar: &BusinessCalendar,
    batch: Vec<NewTransaction>,
    now: DateTime<Utc>,
) -> Result<InsertOutcome, RecordError> {
    let records = batch
        .into_iter()
        .map(|transaction| prepare(transaction, calendar, now))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(store.insert_transactions(records).await?)
}
