//! Idempotency records in SQLite: insert-if-absent under the write lock, fingerprint check,
//! takeover of expired locks, stored responses until expiry, and the reaper.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;

use settle_core::model::idempotency::{BeginOutcome, StoredResponse};
use settle_core::store::{IdempotencyBegin, IdempotencyLock, IdempotencyStore, StoreError};

use super::rows::{self, instant_text};
use super::{backend, query_one, SqliteStore};

/// The stored state of one key.
struct Record {
    fingerprint: String,
    completed: bool,
    response: Option<StoredResponse>,
    locked_until: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

fn record(row: &rusqlite::Row) -> Result<Record, StoreError> {
    let completed = rows::text(row, "state")? == "completed";
    let response = if completed {
        Some(StoredResponse {
            status: u16::try_from(rows::integer(row, "response_status")?)
                .map_err(|e| StoreError::Corrupt(format!("response_status: {e}")))?,
            body: rows::json(row, "response_body")?,
            headers: rows::json(row, "response_headers")?,
        })
    } else {
        None
    };
    Ok(Record {
        fingerprint: rows::text(row, "fingerprint")?,
        completed,
        response,
        locked_until: rows::instant(row, "locked_until")?,
        expires_at: rows::instant(row, "expires_at")?,
    })
}

/// The record of one key, if any.
fn find(
    connection: &rusqlite::Connection,
    principal: &str,
    key: &str,
) -> Result<Option<Record>, StoreError> {
    query_one(
        connection,
        "SELECT fingerprint, state, response_status, response_body, response_headers, locked_until, expires_at \
         FROM idempotency_records WHERE principal = ?1 AND key = ?2",
        params![principal, key],
        record,
    )
}

/// Unlinks transactions from expired keys (selected by `condition` on idempotency_records): after
/// expiry a key counts as new, and must not find what it recorded before.
fn forget_links(
    tx: &rusqlite::Transaction,
    condition: &str,
    values: impl rusqlite::Params,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "UPDATE transactions SET idempotency_principal = NULL, idempotency_key = NULL \
             WHERE idempotency_key IS NOT NULL AND (idempotency_principal, idempotency_key) IN \
             (SELECT principal, key FROM idempotency_records WHERE {condition})"
        ),
        values,
    )
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn idempotency_begin(&self, begin: IdempotencyBegin) -> Result<BeginOutcome, StoreError> {
        // A completed record with this fingerprint stays as it is until it expires: a replay is
        // answered from the reader connection, without queueing a write.
        let (principal, key) = (begin.actor.clone(), begin.key.clone());
        let found = self
            .read(move |connection| find(connection, &principal, &key))
            .await?;
        if let Some(Record {
            completed: true,
            response: Some(response),
            fingerprint,
            expires_at,
            ..
        }) = found
        {
            if expires_at > begin.now && fingerprint == begin.fingerprint {
                return Ok(BeginOutcome::Replay(response));
            }
        }
        self.write(move |tx| {
            let found = find(tx, &begin.actor, &begin.key)?;
            let claim_new = |tx: &rusqlite::Transaction| -> Result<BeginOutcome, StoreError> {
                tx.execute(
                    "INSERT OR REPLACE INTO idempotency_records \
                     (principal, key, fingerprint, state, response_status, response_body, response_headers, \
                      locked_until, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, 'in_flight', NULL, NULL, NULL, ?4, ?5, ?6)",
                    params![
                        begin.actor,
                        begin.key,
                        begin.fingerprint,
                        instant_text(begin.locked_until),
                        instant_text(begin.now),
                        instant_text(begin.expires_at)
                    ],
                )
                .map_err(backend)?;
                Ok(BeginOutcome::New)
            };
            match found {
                None => claim_new(tx),
                // Expiry is checked here too: the reaper may not have run yet.
                Some(existing) if existing.expires_at <= begin.now => {
                    forget_links(tx, "principal = ?1 AND key = ?2", params![begin.actor, begin.key])?;
                    claim_new(tx)
                }
                Some(existing) if existing.fingerprint != begin.fingerprint => Ok(BeginOutcome::Mismatch),
                Some(Record {
                    completed: true,
                    response: Some(response),
                    ..
                }) => Ok(BeginOutcome::Replay(response)),
                Some(existing) if existing.locked_until > begin.now => Ok(BeginOutcome::Conflict {
                    locked_until: existing.locked_until,
                }),
                // In flight, but its holder stopped: take over, keeping the original expiry.
                Some(_) => {
                    tx.execute(
                        "UPDATE idempotency_records SET locked_until = ?1 WHERE principal = ?2 AND key = ?3",
                        params![
                            // Exactly the begin's: it is the lock the taker presents.
                            instant_text(begin.locked_until),
                            begin.actor,
                            begin.key
                        ],
                    )
                    .map_err(backend)?;
                    Ok(BeginOutcome::New)
                }
            }
        })
        .await
    }

    async fn idempotency_complete(
        &self,
        lock: &IdempotencyLock,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let (principal, key, fingerprint, locked_until) = (
            lock.actor.clone(),
            lock.key.clone(),
            lock.fingerprint.clone(),
            instant_text(lock.locked_until),
        );
        let response = response.clone();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE idempotency_records SET state = 'completed', response_status = ?1, response_body = ?2, \
                 response_headers = ?3 WHERE principal = ?4 AND key = ?5 AND fingerprint = ?6 AND state = 'in_flight' \
                 AND locked_until = ?7",
                params![
                    response.status,
                    response.body.to_string(),
                    serde_json::to_string(&response.headers).map_err(|e| StoreError::Backend(e.to_string()))?,
                    principal,
                    key,
                    fingerprint,
                    locked_until
                ],
            )
            .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn idempotency_release(&self, lock: &IdempotencyLock) -> Result<bool, StoreError> {
        let (principal, key, fingerprint, locked_until) = (
            lock.actor.clone(),
            lock.key.clone(),
            lock.fingerprint.clone(),
            instant_text(lock.locked_until),
        );
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "DELETE FROM idempotency_records WHERE principal = ?1 AND key = ?2 AND fingerprint = ?3 \
                     AND state = 'in_flight' AND locked_until = ?4",
                    params![principal, key, fingerprint, locked_until],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn idempotency_reap(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write(move |tx| {
            forget_links(tx, "expires_at <= ?1", params![instant_text(now)])?;
            let deleted = tx
                .execute(
                    "DELETE FROM idempotency_records WHERE expires_at <= ?1",
                    params![instant_text(now)],
                )
                .map_err(backend)?;
            Ok(deleted as u64)
        })
        .await
    }
}
