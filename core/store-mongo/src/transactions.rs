//! Transactions in MongoDB. Without a multi-document transaction, the date a transaction lands on
//! is kept consistent with claims by a small protocol on each transaction's own document:
//!
//! - A writer stores it `open` on its natural date (or the first unsealed date after it), then
//!   checks the seals again; if its date was sealed meanwhile, it moves the transaction to the next
//!   unsealed date (marked late) — but only while it is still `open`.
//! - A run first freezes the date's `open` transactions under its fencing token (`frozen`), then
//!   reads exactly those. A transaction is thus either frozen by the run or moved past it, never
//!   both, never neither. A first revision also takes in `open` stragglers of completed dates
//!   (a writer that died between its insert and its check), as late.
//! - A run that learns it lost its lease after freezing returns what it froze to `open`.
//!
//! Refund limits use a version on the payment's document: a refund reserves its amount by
//! compare-and-set, then is inserted, so two concurrent refunds cannot both pass.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use uuid::Uuid;

use settle_core::compute::{PaymentKey, RefundedPayment};
use settle_core::model::{Fence, NewTransaction, Transaction, TransactionKind, TransactionStatus};
use settle_core::returns::{self, ReturnRefusal, ReturnTarget};
use settle_core::store::{
    InsertConflict, InsertOutcome, RecordOutcome, StoreError, TransactionRecord, TransactionStore,
};

use super::collections::{SETTLEMENTS, TRANSACTIONS};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, point, MongoStore};

const OPEN: &str = "open";
const FROZEN: &str = "frozen";
/// Set on the rows of a batch until the whole batch is known to stand: a run never freezes such a
/// row, so taking the batch back (all or nothing) can never meet a row a run already counted.
const PENDING_BATCH: &str = "pending_batch";
/// References looked up per query.
const LOOKUP_BATCH: usize = 500;
/// How often a writer chases a date that keeps being sealed under it.
const MOVE_ATTEMPTS: usize = 16;
/// An unmaterialised refund reservation older than this belongs to a writer that died.
const RESERVATION_TTL_SECONDS: i64 = 120;
/// Compare-and-set rounds on a payment's reservations before giving up.
const RESERVATION_ATTEMPTS: usize = 32;

/// Whether a stored reservation is an earlier attempt of `record`'s own request (same
/// idempotency principal and key).
fn own_attempt(reservation: &Document, record: &TransactionRecord) -> bool {
    let Some(tag) = &record.idempotency else {
        return false;
    };
    reservation.get_str("principal").ok() == Some(tag.actor.as_str())
        && reservation.get_str("key").ok() == Some(tag.key.as_str())
}

/// The fencing token of a run: revision first, then lease version, so later revisions and later
/// claims of a revision always compare greater.
fn token(fence: &Fence) -> i64 {
    (i64::from(fence.revision) << 32) | (fence.lease_version & 0xFFFF_FFFF)
}

fn transaction_document(
    record: &TransactionRecord,
    settlement_date: NaiveDate,
    late: bool,
) -> Document {
    let stored = Transaction {
        settlement_date,
        late,
        ..as_stored(record)
    };
    let tag = record
        .idempotency
        .as_ref()
        .map(|tag| (tag.actor.as_str(), tag.key.as_str()));
    let mut document = d::transaction_document(&stored, record.natural_date, tag);
    document.insert("state", OPEN);
    document
}

/// `filter` restricted to rows that stand (not of a batch still pending).
fn standing(mut filter: Document) -> Document {
    filter.insert(PENDING_BATCH, doc! { "$exists": false });
    filter
}

/// The first date at or after `date` that is not sealed.
fn first_unsealed(
    mut date: NaiveDate,
    sealed: &BTreeSet<NaiveDate>,
) -> Result<NaiveDate, StoreError> {
    while sealed.contains(&date) {
        date = date
            .succ_opt()
            .ok_or_else(|| StoreError::Backend(format!("no settlement date after {date}")))?;
    }
    Ok(date)
}

/// A transaction as it would be stored, for conflicts found inside one batch.
fn as_stored(record: &TransactionRecord) -> Transaction {
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
        settlement_date: record.natural_date,
        late: false,
    }
}

impl MongoStore {
    async fn find_transactions(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.find_all(TRANSACTIONS, filter, sort, limit, None)
            .await?
            .iter()
            .map(d::transaction)
            .collect()
    }

    /// The transactions stored under `keys`; rows of a batch that has not stood yet only when
    /// `with_pending` (the checks of a new write see them; readers do not).
    async fn by_refs(
        &self,
        keys: &[PaymentKey],
        with_pending: bool,
    ) -> Result<HashMap<PaymentKey, Transaction>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(LOOKUP_BATCH) {
            // Two `$in`s on the unique (merchant_id, external_ref) index, then the exact pairs:
            // far cheaper for a server than hundreds of `$or` branches.
            let wanted: BTreeSet<&PaymentKey> = chunk.iter().collect();
            let merchants: BTreeSet<&str> = chunk.iter().map(|(m, _)| m.as_str()).collect();
            let references: BTreeSet<&str> = chunk.iter().map(|(_, r)| r.as_str()).collect();
            let mut filter = doc! {
                "merchant_id": { "$in": merchants.into_iter().collect::<Vec<_>>() },
                "external_ref": { "$in": references.into_iter().collect::<Vec<_>>() },
            };
            if !with_pending {
                filter = standing(filter);
            }
            for t in self.find_transactions(filter, doc! {}, None).await? {
                let key = (t.merchant_id.clone(), t.external_ref.clone());
                if wanted.contains(&key) {
                    found.insert(key, t);
                }
            }
        }
        Ok(found)
    }

    async fn by_ids(
        &self,
        ids: &[Uuid],
        with_pending: bool,
    ) -> Result<HashMap<Uuid, Transaction>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(LOOKUP_BATCH) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            let mut filter = doc! { "_id": { "$in": ids } };
            if !with_pending {
                filter = standing(filter);
            }
            for t in self.find_transactions(filter, doc! {}, None).await? {
                found.insert(t.id, t);
            }
        }
        Ok(found)
    }

    /// After inserting: if a transaction's date got sealed meanwhile and no run froze it, move it
    /// to the next unsealed date, marked late. Returns how many were moved.
    async fn settle_seal_races(
        &self,
        inserted: &[(Uuid, NaiveDate)],
        sealed_before: &BTreeSet<NaiveDate>,
    ) -> Result<u64, StoreError> {
        let mut moved = 0;
        let mut pending: Vec<(Uuid, NaiveDate)> = inserted.to_vec();
        let mut known_sealed = sealed_before.clone();
        for _ in 0..MOVE_ATTEMPTS {
            let sealed = self.sealed_dates().await?;
            if sealed == known_sealed {
                return Ok(moved);
            }
            known_sealed = sealed;
            let mut still = Vec::new();
            for (id, date) in pending {
                if !known_sealed.contains(&date) {
                    still.push((id, date));
                    continue;
                }
                let target = first_unsealed(date, &known_sealed)?;
                let result = self
                    .collection(TRANSACTIONS)
                    .update_one(
                        doc! { "_id": id.to_string(), "state": OPEN, "settlement_date": date_text(date) },
                        doc! { "$set": { "settlement_date": date_text(target), "late": true } },
                    )
                    .await
                    .map_err(backend)?;
                if result.modified_count == 1 {
                    moved += 1;
                    still.push((id, target));
                }
                // Not modified: a run froze it first, so it is settled with that date.
            }
            pending = still;
        }
        Ok(moved)
    }

    /// The sum of refunds and chargebacks (completed or pending) recorded against a payment, and
    /// their ids.
    async fn returned(&self, payment: &Transaction) -> Result<(i64, BTreeSet<String>), StoreError> {
        let returns = self
            .find_transactions(
                doc! {
                    "merchant_id": &payment.merchant_id,
                    "refund_of": &payment.external_ref,
                    "kind": { "$in": [TransactionKind::Refund.as_str(), TransactionKind::Chargeback.as_str()] },
                    "status": { "$in": [TransactionStatus::Completed.as_str(), TransactionStatus::Pending.as_str()] },
                },
                doc! {},
                None,
            )
            .await?;
        let mut sum: i64 = 0;
        for r in &returns {
            sum = sum
                .checked_add(r.amount_minor)
                .ok_or_else(|| StoreError::Backend("returned amounts overflow".into()))?;
        }
        Ok((sum, returns.iter().map(|r| r.id.to_string()).collect()))
    }

    /// Checks a refund or chargeback against its payment and reserves its amount. `Ok(Err(outcome))`
    /// refuses it; `Ok(Ok(Some(payment id)))` holds a reservation to release after the insert.
    async fn reserve_return(
        &self,
        record: &TransactionRecord,
    ) -> Result<Result<Option<String>, RecordOutcome>, StoreError> {
        let t = &record.transaction;
        let Some(reference) = returns::returned_payment_ref(t) else {
            return Ok(Ok(None));
        };
        for _ in 0..RESERVATION_ATTEMPTS {
            let Some(document) = self
                .collection(TRANSACTIONS)
                .find_one(doc! { "merchant_id": &t.merchant_id, "external_ref": reference })
                .await
                .map_err(backend)?
            else {
                let refusal = returns::check_return(t, None, 0).err();
                return Ok(Err(RecordOutcome::refused(
                    refusal.unwrap_or(ReturnRefusal::PaymentNotFound),
                    None,
                )));
            };
            let payment = d::transaction(&document)?;
            let target = ReturnTarget::from(&payment);
            if let Some(reason) = returns::why_not_returnable(reference, &target, t.currency) {
                return Ok(Err(RecordOutcome::refused(
                    ReturnRefusal::NotRefundable(reason),
                    Some(payment),
                )));
            }
            let version = d::optional_integer(&document, "returns_version")?.unwrap_or(0);
            let (recorded, recorded_ids) = self.returned(&payment).await?;
            // Reservations of writers still in flight: not yet recorded, and recent by the one
            // clock every writer shares, the server's (writers' own clocks may disagree).
            let server_now = self.server_now().await?;
            let oldest_live = server_now - Duration::seconds(RESERVATION_TTL_SECONDS);
            let mut live: Vec<Document> = Vec::new();
            let mut reserved: i64 = 0;
            let mut oldest_reserved_at: Option<chrono::DateTime<chrono::Utc>> = None;
            if let Ok(reservations) = document.get_array("reservations") {
                for reservation in reservations.iter().filter_map(Bson::as_document) {
                    let id = d::text(reservation, "id")?.to_string();
                    let at = d::utc(reservation, "at")?;
                    if recorded_ids.contains(&id) || at < oldest_live {
                        continue;
                    }
                    // This request's own earlier attempt (same key, taken over after its writer
                    // died before writing): replaced by this one, never counted against it.
                    if own_attempt(reservation, record) {
                        continue;
                    }
                    reserved = reserved.saturating_add(d::integer(reservation, "amount_minor")?);
                    oldest_reserved_at = Some(oldest_reserved_at.map_or(at, |o| o.min(at)));
                    live.push(reservation.clone());
                }
            }
            let returned_minor = recorded.saturating_add(reserved);
            if let Err(refusal) = returns::check_return(t, Some(&target), returned_minor) {
                // Refused only because of returns in flight: not a final answer.
                if reserved > 0 && returns::check_return(t, Some(&target), recorded).is_ok() {
                    let expires_at = oldest_reserved_at.unwrap_or(server_now)
                        + Duration::seconds(RESERVATION_TTL_SECONDS);
                    return Ok(Err(RecordOutcome::ReturnsInDoubt {
                        payment,
                        in_doubt_minor: reserved,
                        retry_after_seconds: (expires_at - server_now).num_seconds().max(1),
                    }));
                }
                return Ok(Err(RecordOutcome::refused(refusal, Some(payment))));
            }
            let mut reservation = doc! { "id": record.id.to_string(), "amount_minor": t.amount_minor, "at": instant(server_now) };
            if let Some(tag) = &record.idempotency {
                reservation.insert("principal", &tag.actor);
                reservation.insert("key", &tag.key);
            }
            live.push(reservation);
            let version_filter = if version == 0 {
                doc! { "$in": [Bson::Null, Bson::Int64(0)] }
            } else {
                doc! { "$eq": version }
            };
            let claimed = self
                .collection(TRANSACTIONS)
                .update_one(
                    doc! { "_id": payment.id.to_string(), "returns_version": version_filter },
                    doc! { "$set": { "returns_version": version + 1, "reservations": live } },
                )
                .await
                .map_err(backend)?;
            if claimed.matched_count == 1 {
                return Ok(Ok(Some(payment.id.to_string())));
            }
        }
        Err(StoreError::Backend(
            "too many concurrent refunds of one payment; retry".into(),
        ))
    }

    /// The server's clock (`hello.localTime`): the one clock reservations are stamped and
    /// expired by.
    async fn server_now(&self) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        let hello = self
            .database
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(backend)?;
        let local = hello
            .get_datetime("localTime")
            .map_err(|e| StoreError::Backend(format!("the server did not tell its time: {e}")))?;
        chrono::DateTime::from_timestamp_millis(local.timestamp_millis())
            .ok_or_else(|| StoreError::Backend("the server's time is out of range".into()))
    }

    async fn release_reservation(&self, payment_id: &str, id: Uuid) -> Result<(), StoreError> {
        self.collection(TRANSACTIONS)
            .update_one(
                doc! { "_id": payment_id },
                doc! { "$pull": { "reservations": { "id": id.to_string() } } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// What a record's reference or id already holds, for one record.
    /// A row of a batch that never finished, recorded again identically: it stands now.
    async fn adopt(&self, id: Uuid) -> Result<(), StoreError> {
        self.collection(TRANSACTIONS)
            .update_one(
                doc! { "_id": id.to_string(), PENDING_BATCH: { "$exists": true } },
                doc! { "$unset": { PENDING_BATCH: "" } },
            )
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn existing_outcome(
        &self,
        record: &TransactionRecord,
    ) -> Result<Option<RecordOutcome>, StoreError> {
        if let Some(tag) = &record.idempotency {
            let found = self
                .find_transactions(
                    doc! { "idempotency_principal": &tag.actor, "idempotency_key": &tag.key },
                    doc! {},
                    Some(1),
                )
                .await?;
            if let Some(stored) = found.into_iter().next() {
                return Ok(Some(RecordOutcome::AlreadyRecorded(stored)));
            }
        }
        let t: &NewTransaction = &record.transaction;
        let key = (t.merchant_id.clone(), t.external_ref.clone());
        if let Some(stored) = self
            .by_refs(std::slice::from_ref(&key), true)
            .await?
            .remove(&key)
        {
            return Ok(Some(if t.is_recorded_by(&stored) {
                RecordOutcome::Duplicate(stored)
            } else {
                RecordOutcome::Conflict(stored)
            }));
        }
        if let Some(stored) = self.by_ids(&[record.id], true).await?.remove(&record.id) {
            return Ok(Some(RecordOutcome::Conflict(stored)));
        }
        Ok(None)
    }

    /// Dates whose latest revision completed, before `date`: their open stragglers are late.
    async fn completed_dates_before(&self, date: NaiveDate) -> Result<Vec<String>, StoreError> {
        let documents = self
            .find_all(
                SETTLEMENTS,
                doc! { "settlement_date": { "$lt": date_text(date) } },
                doc! { "settlement_date": 1, "revision": -1 },
                None,
                None,
            )
            .await?;
        let mut dates = Vec::new();
        let mut previous: Option<String> = None;
        for document in &documents {
            let day = d::text(document, "settlement_date")?.to_string();
            if previous.as_deref() == Some(day.as_str()) {
                continue;
            }
            if d::text(document, "status")? == "completed" {
                dates.push(day.clone());
            }
            previous = Some(day);
        }
        Ok(dates)
    }
}

#[async_trait]
impl TransactionStore for MongoStore {
    async fn insert_transactions(
        &self,
        batch: Vec<TransactionRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        // Optimistic: insert everything and let the unique indexes find what is already stored
        // (one round trip for a batch of new transactions, the common case).
        let mut outcome = InsertOutcome::default();
        let mut in_batch: HashMap<PaymentKey, usize> = HashMap::new();
        let mut to_insert: Vec<usize> = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let t = &record.transaction;
            let key = (t.merchant_id.clone(), t.external_ref.clone());
            match in_batch.get(&key) {
                Some(earlier) => {
                    let first = as_stored(&batch[*earlier]);
                    if t.is_recorded_by(&first) {
                        outcome.duplicates += 1;
                    } else {
                        outcome.conflicts.push(InsertConflict {
                            index,
                            existing: first,
                        });
                    }
                }
                None => {
                    in_batch.insert(key, index);
                    to_insert.push(index);
                }
            }
        }
        if !outcome.conflicts.is_empty() || to_insert.is_empty() {
            return Ok(InsertOutcome {
                conflicts: outcome.conflicts,
                duplicates: outcome.duplicates,
                ..InsertOutcome::default()
            });
        }
        let sealed = self.sealed_dates().await?;
        let batch_id = Uuid::new_v4().to_string();
        let mut placed: Vec<(Uuid, NaiveDate, bool)> = Vec::with_capacity(to_insert.len());
        let mut documents = Vec::with_capacity(to_insert.len());
        for index in &to_insert {
            let record = &batch[*index];
            let date = first_unsealed(record.natural_date, &sealed)?;
            let late = date != record.natural_date;
            placed.push((record.id, date, late));
            let mut document = transaction_document(record, date, late);
            document.insert(PENDING_BATCH, &batch_id);
            documents.push(document);
        }
        let mut rejected: BTreeSet<usize> = BTreeSet::new();
        point("store.insert.before_write").await?;
        if let Err(error) = self
            .collection(TRANSACTIONS)
            .insert_many(documents)
            .ordered(false)
            .await
        {
            let mongodb::error::ErrorKind::InsertMany(failure) = error.kind.as_ref() else {
                return Err(backend(error));
            };
            for write_error in failure.write_errors.iter().flatten() {
                if write_error.code != 11000 {
                    return Err(backend(error.clone()));
                }
                rejected.insert(write_error.index);
            }
            if failure.write_concern_error.is_some() {
                return Err(backend(error.clone()));
            }
        }
        // What the unique indexes refused: identical (a duplicate) or different (a conflict).
        // A duplicate may be a row of a batch that never finished (its writer died before the
        // batch stood): this batch adopts it when it stands.
        let mut adopted: Vec<(Uuid, NaiveDate)> = Vec::new();
        for position in &rejected {
            let index = to_insert[*position];
            match self.existing_outcome(&batch[index]).await? {
                Some(RecordOutcome::Duplicate(stored)) => {
                    outcome.duplicates += 1;
                    adopted.push((stored.id, stored.settlement_date));
                }
                Some(
                    RecordOutcome::Conflict(existing) | RecordOutcome::AlreadyRecorded(existing),
                ) => outcome.conflicts.push(InsertConflict { index, existing }),
                _ => {
                    return Err(StoreError::Backend(
                        "a duplicate key without a duplicate".into(),
                    ))
                }
            }
        }
        let written: Vec<(Uuid, NaiveDate)> = placed
            .iter()
            .enumerate()
            .filter(|(position, _)| !rejected.contains(position))
            .map(|(_, (id, date, _))| (*id, *date))
            .collect();
        let ids: Vec<String> = written.iter().map(|(id, _)| id.to_string()).collect();
        if !outcome.conflicts.is_empty() {
            // All or nothing: take back what this batch wrote. No run froze any of it: its rows
            // are still pending.
            point("store.insert.before_rollback").await?;
            self.collection(TRANSACTIONS)
                .delete_many(doc! { "_id": { "$in": ids }, PENDING_BATCH: &batch_id })
                .await
                .map_err(backend)?;
            return Ok(InsertOutcome {
                conflicts: outcome.conflicts,
                ..InsertOutcome::default()
            });
        }
        // The batch stands: its rows (and the ones it adopted) may be settled from now on.
        point("store.insert.before_commit").await?;
        let mut standing = ids;
        standing.extend(adopted.iter().map(|(id, _)| id.to_string()));
        self.collection(TRANSACTIONS)
            .update_many(
                doc! { "_id": { "$in": standing }, PENDING_BATCH: { "$exists": true } },
                doc! { "$unset": { PENDING_BATCH: "" } },
            )
            .await
            .map_err(backend)?;
        outcome.inserted = written.len() as u64;
        outcome.late = placed
            .iter()
            .enumerate()
            .filter(|(position, (_, _, late))| *late && !rejected.contains(position))
            .count() as u64;
        let mut settled = written;
        settled.extend(adopted);
        outcome.late += self.settle_seal_races(&settled, &sealed).await?;
        Ok(outcome)
    }

    async fn transactions_by_ref(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<Transaction>, StoreError> {
        Ok(self.by_refs(&keys, false).await?.into_values().collect())
    }

    async fn transaction(&self, id: Uuid) -> Result<Option<Transaction>, StoreError> {
        Ok(self.by_ids(&[id], false).await?.remove(&id))
    }

    async fn transactions_page(
        &self,
        settlement_date: NaiveDate,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Transaction>, StoreError> {
        let mut filter = standing(doc! { "settlement_date": date_text(settlement_date) });
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after.to_string() });
        }
        self.find_transactions(filter, doc! { "_id": 1 }, Some(i64::from(limit)))
            .await
    }

    async fn late_transactions(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.find_transactions(
            standing(doc! { "settlement_date": date_text(settlement_date), "late": true }),
            doc! { "occurred_at": 1, "_id": 1 },
            None,
        )
        .await
    }

    async fn refunded_payments(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<RefundedPayment>, StoreError> {
        let payments = self.by_refs(&keys, false).await?;
        let mut found = Vec::new();
        for key in &keys {
            let Some(payment) = payments.get(key) else {
                continue;
            };
            if payment.kind != TransactionKind::Payment {
                continue;
            }
            let refunds = self
                .find_transactions(
                    standing(doc! {
                        "merchant_id": &key.0,
                        "refund_of": &key.1,
                        "kind": { "$in": [TransactionKind::Refund.as_str(), TransactionKind::Chargeback.as_str()] },
                    }),
                    doc! {},
                    None,
                )
                .await?;
            found.push(RefundedPayment {
                payment: payment.clone(),
                refunds,
            });
        }
        Ok(found)
    }

    async fn record_transaction(
        &self,
        record: TransactionRecord,
    ) -> Result<RecordOutcome, StoreError> {
        if let Some(existing) = self.existing_outcome(&record).await? {
            if let RecordOutcome::Duplicate(stored) = &existing {
                self.adopt(stored.id).await?;
            }
            return Ok(existing);
        }
        let reservation = match self.reserve_return(&record).await? {
            Ok(reservation) => reservation,
            Err(refusal) => return Ok(refusal),
        };
        // Between a refund's reservation and its write (a writer dying here leaves the one).
        point("store.return.after_reserve").await?;
        let sealed = self.sealed_dates().await?;
        let date = first_unsealed(record.natural_date, &sealed)?;
        let late = date != record.natural_date;
        let inserted = self
            .collection(TRANSACTIONS)
            .insert_one(transaction_document(&record, date, late))
            .await;
        if let Some(payment_id) = &reservation {
            // Between the refund's write and the release of its reservation.
            point("store.return.before_release").await?;
            self.release_reservation(payment_id, record.id).await?;
        }
        match inserted {
            Ok(_) => {}
            Err(error) if is_duplicate_key(&error) => {
                return self.existing_outcome(&record).await?.ok_or_else(|| {
                    StoreError::Backend("a duplicate key without a duplicate".into())
                });
            }
            Err(error) => return Err(backend(error)),
        }
        self.settle_seal_races(&[(record.id, date)], &sealed)
            .await?;
        self.transaction(record.id)
            .await?
            .map(RecordOutcome::Inserted)
            .ok_or_else(|| StoreError::Backend("a recorded transaction vanished".into()))
    }

    async fn freeze_transactions(&self, fence: &Fence) -> Result<Option<u64>, StoreError> {
        self.check_fence(fence).await?;
        let date = date_text(fence.settlement_date);
        let token = token(fence);
        let transactions = self.collection(TRANSACTIONS);
        if fence.revision == 1 {
            let stragglers = self.completed_dates_before(fence.settlement_date).await?;
            if !stragglers.is_empty() {
                transactions
                    .update_many(
                        doc! { "state": OPEN, "settlement_date": { "$in": stragglers } },
                        doc! { "$set": { "settlement_date": &date, "late": true } },
                    )
                    .await
                    .map_err(backend)?;
            }
            transactions
                .update_many(
                    doc! {
                        "settlement_date": &date,
                        "$or": [ { "state": OPEN }, { "state": FROZEN, "freeze_token": { "$lt": token } } ],
                        PENDING_BATCH: { "$exists": false },
                    },
                    doc! { "$set": { "state": FROZEN, "freeze_token": token } },
                )
                .await
                .map_err(backend)?;
        } else {
            // A rerun settles exactly what earlier revisions settled; later arrivals go forward.
            transactions
                .update_many(
                    doc! { "settlement_date": &date, "state": FROZEN, "freeze_token": { "$lt": token } },
                    doc! { "$set": { "freeze_token": token } },
                )
                .await
                .map_err(backend)?;
        }
        // Between the freeze and the fence check that decides whether it stands.
        point("store.freeze.before_fence_check").await?;
        if let Err(lost) = self.check_fence(fence).await {
            if fence.revision == 1 {
                // Whatever this stale run froze goes back to open: the current holder freezes
                // (or the writers move) it.
                transactions
                    .update_many(
                        doc! { "settlement_date": &date, "state": FROZEN, "freeze_token": token },
                        doc! { "$set": { "state": OPEN }, "$unset": { "freeze_token": "" } },
                    )
                    .await
                    .map_err(backend)?;
            }
            return Err(lost);
        }
        transactions
            .count_documents(
                doc! { "settlement_date": &date, "state": FROZEN, "freeze_token": token },
            )
            .await
            .map(Some)
            .map_err(backend)
    }

    fn run_transactions<'a>(
        &'a self,
        fence: &Fence,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Transaction, StoreError>> {
        let filter = doc! {
            "settlement_date": date_text(fence.settlement_date),
            "state": FROZEN,
            "freeze_token": token(fence),
        };
        let collection = self.collection(TRANSACTIONS);
        // One cursor: the server streams the frozen set in batches (getMore), in id order.
        let open = async move {
            let cursor = collection
                .find(filter)
                .sort(doc! { "_id": 1 })
                .batch_size(batch_size.max(1))
                .await
                .map_err(backend)?;
            Ok::<_, StoreError>(
                cursor
                    .map_err(backend)
                    .and_then(|document| async move { d::transaction(&document) }),
            )
        };
        futures::stream::once(open).try_flatten().boxed()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use settle_core::calendar::BusinessCalendar;
    use settle_core::model::{NewTransaction, PaymentMethod, TransactionKind, TransactionStatus};
    use settle_core::money::Currency;
    use settle_core::store::TransactionStore;

    fn record(
        kind: TransactionKind,
        reference: &str,
        clock: chrono::DateTime<Utc>,
    ) -> TransactionRecord {
        let transaction = NewTransaction {
            id: None,
            merchant_id: "m-1".into(),
            kind,
            status: TransactionStatus::Completed,
            amount_minor: 10_000,
            currency: Currency::from_code("USD").unwrap(),
            method: PaymentMethod::Card,
            occurred_at: Utc::now() - Duration::hours(1),
            external_ref: reference.into(),
            refund_of: (kind == TransactionKind::Refund).then(|| "pay-1".to_string()),
        };
        settle_core::ingest::prepare(transaction, &BusinessCalendar::default(), clock).unwrap()
    }

    /// Issue 15 (suspected: reservations expired across two clocks). A writer whose clock runs
    /// ten minutes behind holds a reservation of the whole payment; another writer, on a right
    /// clock, must see it live (the server stamps and expires reservations), not as expired.
    #[tokio::test]
    async fn a_reservation_is_live_by_the_servers_clock_whatever_the_writers_clock() {
        let Some(store) = super::super::test_store().await else {
            return;
        };
        let now = Utc::now();
        let paid = store
            .record_transaction(record(TransactionKind::Payment, "pay-1", now))
            .await
            .unwrap();
        assert!(matches!(paid, RecordOutcome::Inserted(_)), "{paid:?}");
        let behind = record(
            TransactionKind::Refund,
            "ref-1",
            now - Duration::minutes(10),
        );
        let held = store.reserve_return(&behind).await.unwrap();
        assert!(held.is_ok(), "{held:?}");
        let other = store
            .record_transaction(record(TransactionKind::Refund, "ref-2", now))
            .await
            .unwrap();
        assert!(
            matches!(
                other,
                RecordOutcome::ReturnsInDoubt {
                    in_doubt_minor: 10_000,
                    ..
                }
            ),
            "{other:?}"
        );
        store.drop_database().await.unwrap();
    }
}
