//! Idempotency records in MongoDB: one document per (principal, key) under a unique index, claimed
//! by insert-if-absent, with the semantics of the SQLite adapter (fingerprint check, replay of the
//! stored response, takeover of a passed lock, expiry, reaper).
//!
//! No multi-document transaction is used. Every change of a record is a single-document
//! compare-and-set: a claim is an `insert_one` (a duplicate key means another caller was first),
//! the reuse of an expired record or the takeover of a passed lock is an update filtered on every
//! field the decision was taken on (`_id`, fingerprint, state, `locked_until`, `expires_at`,
//! `unlink_pending`). A caller that loses such a race reads the record again and decides anew, so
//! it never returns an outcome the current record does not justify.
//!
//! An expired key must not find what it recorded (transactions carry `idempotency_principal` and
//! `idempotency_key` under a unique index). Before a claim of a key whose record is absent or
//! expired returns `New`, the links still held by transactions are removed: when there are any,
//! the claim is written with `unlink_pending: true`, the links are removed, then the flag is
//! cleared. Only the winner of the claim unlinks, so a loser can never unlink what the winner
//! records; and a caller that crashes between its claim and clearing the flag leaves the flag for
//! whoever takes the key over after its lock, who unlinks before recording anything (the crashed
//! caller never got `New`, so every link it finds is stale). The server's TTL index may delete
//! expired records without unlinking; the next claim of such a key unlinks then. The reaper removes
//! the links of each expired record made before that record expired (so never those of a newer use
//! of the key), then deletes the records still expired; a crash in between is harmless for the
//! same reason.
//!
//! Document: `principal`, `key`, `fingerprint`, `state` (`in_flight` | `completed`),
//! `response_status` (Int64), `response_body` (JSON text), `response_headers` (array of
//! `[name, value]`), `locked_until`, `created_at`, `expires_at` (DateTime), `unlink_pending` (bool).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};

use settle_core::model::idempotency::{BeginOutcome, StoredResponse};
use settle_core::store::{IdempotencyBegin, IdempotencyLock, IdempotencyStore, StoreError};

use super::collections::{IDEMPOTENCY_RECORDS, TRANSACTIONS};
use super::documents::{self as d, instant};
use super::{backend, is_duplicate_key, MongoStore};

const IN_FLIGHT: &str = "in_flight";
const COMPLETED: &str = "completed";
/// Compare-and-set rounds on one key before giving up (each lost round means another caller
/// changed the record meanwhile).
const BEGIN_ATTEMPTS: usize = 16;
/// Expired records handled per request of the reaper.
const REAP_BATCH: usize = 500;

/// The stored state of one key.
struct Record {
    id: Bson,
    fingerprint: String,
    completed: bool,
    response: Option<StoredResponse>,
    locked_until: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    unlink_pending: bool,
    /// The fields a decision is taken on, exactly as stored: the compare-and-set filter.
    as_read: Document,
}

fn corrupt(field: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("field {field}: {detail}"))
}

fn headers(document: &Document) -> Result<Vec<(String, String)>, StoreError> {
    let field = "response_headers";
    let items = document.get_array(field).map_err(|e| corrupt(field, e))?;
    items
        .iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([Bson::String(name), Bson::String(value)]) => Ok((name.clone(), value.clone())),
            _ => Err(corrupt(
                field,
                format!("expected [name, value], found {item}"),
            )),
        })
        .collect()
}

fn record(document: &Document) -> Result<Record, StoreError> {
    let state = d::text(document, "state")?;
    let completed = state == COMPLETED;
    let response = if completed {
        Some(StoredResponse {
            status: u16::try_from(d::integer(document, "response_status")?)
                .map_err(|e| corrupt("response_status", e))?,
            body: d::json_value(document, "response_body")?,
            headers: headers(document)?,
        })
    } else {
        None
    };
    let id = document
        .get("_id")
        .cloned()
        .ok_or_else(|| corrupt("_id", "missing"))?;
    let field = |name: &str| document.get(name).cloned().unwrap_or(Bson::Null);
    let unlink_pending = document.get_bool("unlink_pending").unwrap_or(false);
    let as_read = doc! {
        "_id": id.clone(),
        "fingerprint": field("fingerprint"),
        "state": state,
        "locked_until": field("locked_until"),
        "expires_at": field("expires_at"),
        "unlink_pending": if unlink_pending { Bson::Boolean(true) } else { doc! { "$ne": true }.into() },
    };
    Ok(Record {
        id,
        fingerprint: d::text(document, "fingerprint")?.to_string(),
        completed,
        response,
        locked_until: d::utc(document, "locked_until")?,
        expires_at: d::utc(document, "expires_at")?,
        unlink_pending,
        as_read,
    })
}

fn key_filter(principal: &str, key: &str) -> Document {
    doc! { "principal": principal, "key": key }
}

fn links_filter(principal: &str, key: &str) -> Document {
    doc! { "idempotency_principal": principal, "idempotency_key": key }
}

/// The record `lock` holds: in flight, with its fingerprint.
fn held(lock: &IdempotencyLock) -> Document {
    let mut filter = key_filter(&lock.actor, &lock.key);
    filter.insert("fingerprint", &lock.fingerprint);
    filter.insert("state", IN_FLIGHT);
    filter.insert("locked_until", instant(lock.locked_until));
    filter
}

/// A record claimed afresh by `begin`, in flight.
fn fresh(begin: &IdempotencyBegin, unlink_pending: bool) -> Document {
    doc! {
        "principal": &begin.actor,
        "key": &begin.key,
        "fingerprint": &begin.fingerprint,
        "state": IN_FLIGHT,
        "response_status": Bson::Null,
        "response_body": Bson::Null,
        "response_headers": Bson::Null,
        "locked_until": instant(begin.locked_until),
        "created_at": instant(begin.now),
        "expires_at": instant(begin.expires_at),
        "unlink_pending": unlink_pending,
    }
}

impl MongoStore {
    /// Whether transactions still carry this key (left by an earlier, expired use of it).
    async fn has_links(&self, principal: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .collection(TRANSACTIONS)
            .find_one(links_filter(principal, key))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(backend)?
            .is_some())
    }

    /// Finishes a claim of a record written with `unlink_pending`: removes every link to the key,
    /// then clears the flag. Only the holder of the claim calls it, before it records anything.
    async fn unlink_claimed(&self, id: Bson, principal: &str, key: &str) -> Result<(), StoreError> {
        self.collection(TRANSACTIONS)
            .update_many(
                links_filter(principal, key),
                doc! { "$unset": { "idempotency_principal": "", "idempotency_key": "" } },
            )
            .await
            .map_err(backend)?;
        self.collection(IDEMPOTENCY_RECORDS)
            .update_one(
                doc! { "_id": id, "unlink_pending": true },
                doc! { "$set": { "unlink_pending": false } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// One round of `begin`: the outcome, or `None` when a compare-and-set lost to another caller.
    async fn try_begin(
        &self,
        begin: &IdempotencyBegin,
    ) -> Result<Option<BeginOutcome>, StoreError> {
        let records = self.collection(IDEMPOTENCY_RECORDS);
        let found = records
            .find_one(key_filter(&begin.actor, &begin.key))
            .await
            .map_err(backend)?;
        let existing = found.as_ref().map(record).transpose()?;
        // The record this caller now holds, and whether it must unlink before answering `New`.
        let (claimed, unlink) = match existing {
            None => {
                let unlink = self.has_links(&begin.actor, &begin.key).await?;
                match records.insert_one(fresh(begin, unlink)).await {
                    Ok(inserted) => (inserted.inserted_id, unlink),
                    Err(error) if is_duplicate_key(&error) => return Ok(None),
                    Err(error) => return Err(backend(error)),
                }
            }
            // Expiry is checked here too: the reaper (or the TTL monitor) may not have run yet.
            Some(existing) if existing.expires_at <= begin.now => {
                let unlink = self.has_links(&begin.actor, &begin.key).await?;
                let replaced = records
                    .replace_one(existing.as_read, fresh(begin, unlink))
                    .await
                    .map_err(backend)?;
                if replaced.matched_count == 0 {
                    return Ok(None);
                }
                (existing.id, unlink)
            }
            Some(existing) if existing.fingerprint != begin.fingerprint => {
                return Ok(Some(BeginOutcome::Mismatch))
            }
            Some(Record {
                completed: true,
                response: Some(response),
                ..
            }) => return Ok(Some(BeginOutcome::Replay(response))),
            Some(existing) if existing.locked_until > begin.now => {
                return Ok(Some(BeginOutcome::Conflict {
                    locked_until: existing.locked_until,
                }))
            }
            // In flight, but its holder stopped: take over, keeping the original expiry. The new
            // `locked_until` is exactly the begin's: it is the lock the taker presents.
            Some(existing) => {
                let taken = records
                    .update_one(
                        existing.as_read,
                        doc! { "$set": { "locked_until": instant(begin.locked_until) } },
                    )
                    .await
                    .map_err(backend)?;
                if taken.matched_count == 0 {
                    return Ok(None);
                }
                // A holder that stopped before unlinking left the flag: its links are all stale.
                (existing.id, existing.unlink_pending)
            }
        };
        if unlink {
            self.unlink_claimed(claimed, &begin.actor, &begin.key)
                .await?;
        }
        Ok(Some(BeginOutcome::New))
    }
}

#[async_trait]
impl IdempotencyStore for MongoStore {
    async fn idempotency_begin(&self, begin: IdempotencyBegin) -> Result<BeginOutcome, StoreError> {
        for _ in 0..BEGIN_ATTEMPTS {
            if let Some(outcome) = self.try_begin(&begin).await? {
                return Ok(outcome);
            }
        }
        Err(StoreError::Backend(
            "too many concurrent requests with one idempotency key; retry".into(),
        ))
    }

    async fn idempotency_complete(
        &self,
        lock: &IdempotencyLock,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let headers: Vec<Bson> = response
            .headers
            .iter()
            .map(|(name, value)| Bson::Array(vec![name.as_str().into(), value.as_str().into()]))
            .collect();
        let filter = held(lock);
        let updated = self
            .collection(IDEMPOTENCY_RECORDS)
            .update_one(
                filter,
                doc! { "$set": {
                    "state": COMPLETED,
                    "response_status": i64::from(response.status),
                    "response_body": d::json_text(&response.body),
                    "response_headers": headers,
                } },
            )
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }

    async fn idempotency_release(&self, lock: &IdempotencyLock) -> Result<bool, StoreError> {
        let deleted = self
            .collection(IDEMPOTENCY_RECORDS)
            .delete_one(held(lock))
            .await
            .map_err(backend)?;
        Ok(deleted.deleted_count == 1)
    }

    async fn idempotency_reap(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let expired_filter = doc! { "expires_at": { "$lte": instant(now) } };
        let expired = self
            .find_all(
                IDEMPOTENCY_RECORDS,
                expired_filter.clone(),
                doc! { "_id": 1 },
                None,
                None,
            )
            .await?;
        let mut deleted = 0;
        for chunk in expired.chunks(REAP_BATCH) {
            // Links first, then records: a crash in between leaves links whose key is free, which
            // the next claim of the key removes. A link made after the record expired belongs to
            // a newer use of the key and stays.
            let mut links = Vec::with_capacity(chunk.len());
            let mut ids = Vec::with_capacity(chunk.len());
            for document in chunk {
                let mut link =
                    links_filter(d::text(document, "principal")?, d::text(document, "key")?);
                link.insert(
                    "created_at",
                    doc! { "$lt": instant(d::utc(document, "expires_at")?) },
                );
                links.push(link);
                ids.push(document.get("_id").cloned().unwrap_or(Bson::Null));
            }
            self.collection(TRANSACTIONS)
                .update_many(
                    doc! { "$or": links },
                    doc! { "$unset": { "idempotency_principal": "", "idempotency_key": "" } },
                )
                .await
                .map_err(backend)?;
            // Only records still expired: one reused meanwhile has a later expiry.
            let mut filter = expired_filter.clone();
            filter.insert("_id", doc! { "$in": ids });
            deleted += self
                .collection(IDEMPOTENCY_RECORDS)
                .delete_many(filter)
                .await
                .map_err(backend)?
                .deleted_count;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use settle_core::calendar::BusinessCalendar;
    use settle_core::model::{NewTransaction, PaymentMethod, TransactionKind, TransactionStatus};
    use settle_core::money::Currency;
    use settle_core::store::{IdempotencyTag, RecordOutcome, TransactionStore};

    async fn store() -> Option<MongoStore> {
        super::super::test_store().await
    }

    fn at(text: &str) -> DateTime<Utc> {
        super::super::test_instant(text)
    }

    /// Records of the tests expire long after they end: the server's TTL monitor (real time) never
    /// deletes them under a test.
    const FAR_FUTURE: &str = "2099-03-10T10:00:00Z";

    fn begin(fingerprint: &str, now: DateTime<Utc>) -> IdempotencyBegin {
        IdempotencyBegin {
            actor: "p".into(),
            key: "k".into(),
            fingerprint: fingerprint.into(),
            now,
            locked_until: now + Duration::seconds(60),
            expires_at: now + Duration::hours(24),
        }
    }

    fn recorded(reference: &str, now: DateTime<Utc>) -> settle_core::store::TransactionRecord {
        let transaction = NewTransaction {
            id: None,
            merchant_id: "m-1".into(),
            kind: TransactionKind::Payment,
            status: TransactionStatus::Completed,
            amount_minor: 100,
            currency: Currency::from_code("USD").unwrap(),
            method: PaymentMethod::Card,
            occurred_at: at("2024-03-10T10:00:00Z"),
            external_ref: reference.into(),
            refund_of: None,
        };
        let mut record =
            settle_core::ingest::prepare(transaction, &BusinessCalendar::default(), now).unwrap();
        record.idempotency = Some(IdempotencyTag {
            actor: "p".into(),
            key: "k".into(),
        });
        record
    }

    #[tokio::test]
    async fn responses_round_trip_exactly() {
        let Some(store) = store().await else { return };
        let t0 = at(FAR_FUTURE);
        assert_eq!(
            store.idempotency_begin(begin("fp", t0)).await.unwrap(),
            BeginOutcome::New
        );
        let response = StoredResponse {
            status: 422,
            body: serde_json::json!([u64::MAX, -1, 1.5, null, "x", {"$set": {"a.b": [true]}}]),
            headers: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        };
        assert!(store
            .idempotency_complete(&begin("fp", t0).lock(), &response)
            .await
            .unwrap());
        assert_eq!(
            store.idempotency_begin(begin("fp", t0)).await.unwrap(),
            BeginOutcome::Replay(response)
        );
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_or_forgotten_key_no_longer_finds_what_it_recorded() {
        let Some(store) = store().await else { return };
        let t0 = at(FAR_FUTURE);
        assert_eq!(
            store.idempotency_begin(begin("fp", t0)).await.unwrap(),
            BeginOutcome::New
        );
        assert!(matches!(
            store.record_transaction(recorded("r-1", t0)).await.unwrap(),
            RecordOutcome::Inserted(_)
        ));
        // Expired, not reaped: reused.
        let t1 = t0 + Duration::hours(25);
        assert_eq!(
            store.idempotency_begin(begin("fp", t1)).await.unwrap(),
            BeginOutcome::New
        );
        assert!(matches!(
            store.record_transaction(recorded("r-2", t1)).await.unwrap(),
            RecordOutcome::Inserted(_)
        ));
        // Deleted behind the adapter's back (the TTL monitor): the next claim unlinks.
        store
            .collection(IDEMPOTENCY_RECORDS)
            .delete_many(doc! {})
            .await
            .unwrap();
        assert_eq!(
            store.idempotency_begin(begin("fp", t1)).await.unwrap(),
            BeginOutcome::New
        );
        assert!(matches!(
            store.record_transaction(recorded("r-3", t1)).await.unwrap(),
            RecordOutcome::Inserted(_)
        ));
        // A holder that stopped between its claim and its unlinking: the taker unlinks.
        store
            .collection(IDEMPOTENCY_RECORDS)
            .update_many(doc! {}, doc! { "$set": { "unlink_pending": true } })
            .await
            .unwrap();
        let t2 = t1 + Duration::seconds(61);
        assert_eq!(
            store.idempotency_begin(begin("fp", t2)).await.unwrap(),
            BeginOutcome::New
        );
        assert!(matches!(
            store.record_transaction(recorded("r-4", t2)).await.unwrap(),
            RecordOutcome::Inserted(_)
        ));
        // A takeover without the flag keeps what the first holder recorded.
        let t3 = t2 + Duration::seconds(61);
        assert_eq!(
            store.idempotency_begin(begin("fp", t3)).await.unwrap(),
            BeginOutcome::New
        );
        assert!(matches!(
            store.record_transaction(recorded("r-5", t3)).await.unwrap(),
            RecordOutcome::AlreadyRecorded(t) if t.external_ref == "r-4"
        ));
        // The reaper unlinks what an expired record recorded.
        assert_eq!(
            store
                .idempotency_reap(t3 + Duration::hours(25))
                .await
                .unwrap(),
            1
        );
        let linked = store
            .collection(TRANSACTIONS)
            .count_documents(doc! { "idempotency_key": { "$exists": true } })
            .await
            .unwrap();
        assert_eq!(linked, 0);
        store.drop_database().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_begins_have_exactly_one_winner() {
        let Some(store) = store().await else { return };
        let t0 = at(FAR_FUTURE);
        for round in 0..3 {
            // Round 0: absent; round 1: lock passed; round 2: expired.
            let now = t0 + [Duration::zero(), Duration::seconds(61), Duration::hours(25)][round];
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.idempotency_begin(begin("fp", now)).await })
                })
                .collect();
            let mut new = 0;
            for task in tasks {
                match task.await.unwrap().unwrap() {
                    BeginOutcome::New => new += 1,
                    BeginOutcome::Conflict { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(new, 1, "round {round}");
        }
        store.drop_database().await.unwrap();
    }
}
