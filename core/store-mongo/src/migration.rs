//! MongoDB as the target of `settle migrate`: a record is inserted only when the target lacks its
//! key and was never given it by this source, so nothing the target holds is overwritten.
//!
//! Bookkeeping lives in `migrations` (the marker `_id: "marker"` with the source's identity and the
//! started/finished times, and one checkpoint per kind so an interrupted copy resumes) and in
//! `migration_copied` (one document per record copied, `_id` = kind and source key, so a record
//! removed on the target after its copy, such as a released hold, is not brought back).
//!
//! The final verification compares each source record, in the document this adapter would write
//! with the bookkeeping fields dropped, with the stored document restricted to the same fields, both
//! in one canonical BSON form (`canonical_content`), so equal content gives equal digests.
//!
//! Transactions are placed as this adapter keeps them: on a date that already has a revision
//! they arrive frozen under the latest revision's fencing token (so a later rerun settles exactly
//! them), otherwise open.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use settle_core::model::{ApiToken, AuditEvent, Notification, Payout, RerunRequest, Settlement};
use settle_core::store::migration::forms::{
    CarryForwardForm, IdempotencyForm, LineForm, TransactionForm,
};
use settle_core::store::migration::{
    ExportedRecord, ImportOutcome, MigrationMarker, MigrationTarget, RecordKind, VerifiedRecord,
    VerifyPage,
};
use settle_core::store::{MerchantHold, StoreError};

use super::collections::{
    API_TOKENS, AUDIT_EVENTS, CARRY_FORWARDS, FEE_LEDGERS, IDEMPOTENCY_RECORDS, MERCHANT_HOLDS,
    NOTIFICATIONS, PAYOUTS, RERUN_REQUESTS, SETTLEMENTS, SETTLEMENT_LINES, TRANSACTIONS,
};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, MongoStore};

/// Where the marker and the checkpoints of interrupted copies are kept.
const MIGRATIONS: &str = "migrations";
/// One document per record copied, by kind and source key.
const MIGRATION_COPIED: &str = "migration_copied";
const MARKER: &str = "marker";

/// Collections that are not a record kind of their own, and why (the `collections` module names
/// only record collections; the bookkeeping ones are here).
#[cfg(test)]
const NOT_RECORD_COLLECTIONS: &[(&str, &str)] = &[
    (MIGRATIONS, "migration marker and checkpoints"),
    (MIGRATION_COPIED, "which records a migration copied"),
    (
        super::collections::LINE_PLANS,
        "MongoDB's own planning decisions; a line planned before (on SQLite) is known by its payout or carry-forward",
    ),
    (super::collections::RECON_IMPORTS, "reconciliation: copied through its port (store::migration::reconciliation)"),
    (super::collections::RECON_ENTRIES, "reconciliation: copied through its port (store::migration::reconciliation)"),
    (super::collections::RECON_DECISIONS, "reconciliation: copied through its port (store::migration::reconciliation)"),
    (super::collections::RECON_CLAIMS, "reconciliation: restored with each copied decision that holds its items"),
];

/// The collection each kind is written to.
pub fn target_collection(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Settlements => SETTLEMENTS,
        RecordKind::SettlementLines => SETTLEMENT_LINES,
        RecordKind::Transactions => TRANSACTIONS,
        RecordKind::Payouts => PAYOUTS,
        RecordKind::CarryForwards => CARRY_FORWARDS,
        RecordKind::MerchantHolds => MERCHANT_HOLDS,
        RecordKind::Notifications => NOTIFICATIONS,
        RecordKind::IdempotencyRecords => IDEMPOTENCY_RECORDS,
        RecordKind::AuditEvents => AUDIT_EVENTS,
        RecordKind::FeeLedgers => FEE_LEDGERS,
        RecordKind::ApiTokens => API_TOKENS,
        RecordKind::RerunRequests => RERUN_REQUESTS,
    }
}

/// A record's key in the target: the filter selecting the document that holds it.
fn key(kind: RecordKind, value: &Value) -> Result<Document, StoreError> {
    let value = value.clone();
    Ok(match kind {
        RecordKind::Settlements => {
            let s: Settlement = decode(value)?;
            doc! { "settlement_date": date_text(s.settlement_date), "revision": i64::from(s.revision) }
        }
        RecordKind::SettlementLines => {
            let form: LineForm = decode(value)?;
            doc! {
                "settlement_date": date_text(form.settlement_date),
                "revision": i64::from(form.revision),
                "merchant_id": &form.line.merchant_id,
                "currency": form.line.currency.code(),
            }
        }
        RecordKind::Transactions => {
            let form: TransactionForm = decode(value)?;
            doc! { "_id": form.transaction.id.to_string() }
        }
        RecordKind::Payouts => {
            let p: Payout = decode(value)?;
            doc! { "_id": &p.reference }
        }
        RecordKind::CarryForwards => {
            let c = decode::<CarryForwardForm>(value)?.carry;
            doc! {
                "origin_date": date_text(c.origin_date),
                "origin_revision": i64::from(c.origin_revision),
                "merchant_id": &c.merchant_id,
                "currency": c.currency.code(),
            }
        }
        RecordKind::MerchantHolds => {
            let hold: MerchantHold = decode(value)?;
            doc! { "_id": &hold.merchant_id }
        }
        RecordKind::Notifications => {
            let n: Notification = decode(value)?;
            doc! {
                "settlement_date": date_text(n.settlement_date),
                "revision": i64::from(n.revision),
                "event": &n.event,
            }
        }
        RecordKind::IdempotencyRecords => {
            let form: IdempotencyForm = decode(value)?;
            doc! { "principal": &form.principal, "key": &form.key }
        }
        RecordKind::AuditEvents => {
            let e: AuditEvent = decode(value)?;
            doc! { "_id": e.id.to_string() }
        }
        RecordKind::FeeLedgers => {
            let ledger: settle_core::model::PaymentFeeLedger = decode(value)?;
            doc! { "merchant_id": &ledger.merchant_id, "external_ref": &ledger.external_ref }
        }
        RecordKind::ApiTokens => {
            let token: ApiToken = decode(value)?;
            doc! { "_id": token.id.to_string() }
        }
        RecordKind::RerunRequests => {
            let request: RerunRequest = decode(value)?;
            doc! { "_id": request.id.to_string() }
        }
    })
}

/// Fields the target's adapter keeps for its own bookkeeping; they never make a record "differ".
const BOOKKEEPING_FIELDS: &[&str] = &[
    "state",
    "freeze_token",
    "lease_version",
    "superseded",
    "lines_version",
    "unlink_pending",
    "approving_token",
];

fn number(value: &Bson) -> Option<f64> {
    match value {
        Bson::Int32(n) => Some(f64::from(*n)),
        // Counts and amounts in minor units; exact far beyond any real value.
        #[allow(clippy::cast_precision_loss)]
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    }
}

/// True when the target's document differs from the source's in a field the source carries.
fn differs(source: &Document, target: &Document) -> bool {
    source.iter().any(|(field, value)| {
        if BOOKKEEPING_FIELDS.contains(&field.as_str()) {
            return false;
        }
        match (target.get(field), value) {
            (Some(held), value) => match (number(held), number(value)) {
                (Some(a), Some(b)) => a != b,
                _ => held != value,
            },
            (None, Bson::Null) => false,
            (None, _) => true,
        }
    })
}

/// A value in a canonical form: numbers (top-level fields only) as the Double `differs` compares
/// them by, documents with their fields sorted (BSON documents are equal whatever their order),
/// -0.0 as 0.0. Values `differs` finds equal have equal canonical forms.
fn canonical_value(value: &Bson, top_level: bool) -> Bson {
    match value {
        Bson::Double(n) if *n == 0.0 => Bson::Double(0.0),
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) if top_level => {
            Bson::Double(number(value).map_or(0.0, |n| if n == 0.0 { 0.0 } else { n }))
        }
        Bson::Document(document) => {
            let mut fields: Vec<(&String, &Bson)> = document.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            Bson::Document(
                fields
                    .into_iter()
                    .map(|(field, value)| (field.clone(), canonical_value(value, false)))
                    .collect(),
            )
        }
        Bson::Array(values) => Bson::Array(
            values
                .iter()
                .map(|value| canonical_value(value, false))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The canonical content `differs` compares, as BSON bytes: the fields of `source` (the source
/// record in the target's form) but bookkeeping, in its order, with their values taken from
/// `from` (`source` itself, or the target's document: a field it lacks counts as null).
fn canonical_content(source: &Document, from: &Document) -> Result<Vec<u8>, StoreError> {
    let content: Document = source
        .keys()
        .filter(|field| !BOOKKEEPING_FIELDS.contains(&field.as_str()))
        .map(|field| {
            let value = from.get(field).unwrap_or(&Bson::Null);
            (field.clone(), canonical_value(value, true))
        })
        .collect();
    let mut bytes = Vec::new();
    content
        .to_writer(&mut bytes)
        .map_err(|e| StoreError::Backend(format!("cannot encode a record's content: {e}")))?;
    Ok(bytes)
}

fn ledger_id(kind: RecordKind, cursor: &str) -> String {
    format!("{}:{cursor}", kind.as_str())
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, StoreError> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::Backend(format!("cannot read a migrated record: {e}")))
}

fn settlement_document(s: &Settlement) -> Result<Document, StoreError> {
    let lease = s.lease.as_ref();
    Ok(doc! {
        "settlement_date": date_text(s.settlement_date),
        "revision": i64::from(s.revision),
        "status": s.status.as_str(),
        "trigger": s.trigger.as_str(),
        "requested_by": &s.requested_by,
        "reason": s.reason.clone().map(Bson::String).unwrap_or(Bson::Null),
        "calendar": d::to_nested(&s.calendar)?,
        "fee_schedule": d::to_nested(&s.fee_schedule)?,
        "window_start": instant(s.window.start),
        "window_end": instant(s.window.end),
        "lease_owner": lease.map(|l| Bson::String(l.owner.clone())).unwrap_or(Bson::Null),
        "lease_expires_at": lease.map(|l| Bson::DateTime(instant(l.expires_at))).unwrap_or(Bson::Null),
        "lease_version": s.lease_version,
        "attempts": i64::from(s.attempts),
        "created_at": instant(s.created_at),
        "started_at": instant(s.started_at),
        "computed_at": s.computed_at.map(|t| Bson::DateTime(instant(t))).unwrap_or(Bson::Null),
        "completed_at": s.completed_at.map(|t| Bson::DateTime(instant(t))).unwrap_or(Bson::Null),
        "error": s.error.clone().map(Bson::String).unwrap_or(Bson::Null),
        "totals": s.totals.iter().map(d::totals_document).collect::<Vec<_>>(),
        "lines_version": if s.computed_at.is_some() { Bson::Int64(s.lease_version) } else { Bson::Null },
        "superseded": false,
    })
}

impl MongoStore {
    /// The latest revision's lease version and fencing token of a date, if it has one.
    async fn latest_fence(&self, date: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let found = self
            .find_all(
                SETTLEMENTS,
                doc! { "settlement_date": date },
                doc! { "revision": -1 },
                Some(1),
                None,
            )
            .await?;
        Ok(match found.first() {
            Some(document) => {
                let revision = d::integer(document, "revision")?;
                let lease_version = d::integer(document, "lease_version")?;
                Some((
                    lease_version,
                    (revision << 32) | (lease_version & 0xFFFF_FFFF),
                ))
            }
            None => None,
        })
    }

    /// After a settlement revision is inserted: the one before it can no longer be retried.
    async fn after_settlement_inserted(&self, filter: &Document) -> Result<(), StoreError> {
        let date = d::text(filter, "settlement_date")?.to_string();
        let revision = d::integer(filter, "revision")?;
        if revision > 1 {
            self.collection(SETTLEMENTS)
                .update_one(
                    doc! { "settlement_date": &date, "revision": revision - 1 },
                    doc! { "$set": { "superseded": true } },
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn line_document(
        &self,
        value: Value,
        versions: &mut HashMap<(String, i64), i64>,
    ) -> Result<Document, StoreError> {
        let form: LineForm = decode(value)?;
        let date = date_text(form.settlement_date);
        let revision = i64::from(form.revision);
        let key = (date.clone(), revision);
        let lease_version = match versions.get(&key) {
            Some(version) => *version,
            None => {
                let settlement = self
                    .collection(SETTLEMENTS)
                    .find_one(doc! { "settlement_date": &date, "revision": revision })
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| {
                        StoreError::Backend(format!(
                            "lines of {date} r{revision} without their settlement"
                        ))
                    })?;
                let version = d::integer(&settlement, "lease_version")?;
                versions.insert(key, version);
                version
            }
        };
        let mut document = d::figures_document(&form.line.figures);
        document.insert("settlement_date", &date);
        document.insert("revision", revision);
        document.insert("lease_version", lease_version);
        document.insert("merchant_id", &form.line.merchant_id);
        document.insert("currency", form.line.currency.code());
        Ok(document)
    }

    async fn transaction_document(
        &self,
        value: Value,
        tokens: &mut HashMap<String, Option<(i64, i64)>>,
    ) -> Result<Document, StoreError> {
        let form: TransactionForm = decode(value)?;
        let t = &form.transaction;
        let date = date_text(t.settlement_date);
        let fence = match tokens.get(&date) {
            Some(fence) => *fence,
            None => {
                let fence = self.latest_fence(&date).await?;
                tokens.insert(date.clone(), fence);
                fence
            }
        };
        let tag = form
            .idempotency_principal
            .as_deref()
            .zip(form.idempotency_key.as_deref());
        let mut document = d::transaction_document(t, t.settlement_date, tag);
        match fence {
            Some((_, token)) => {
                document.insert("state", "frozen");
                document.insert("freeze_token", token);
            }
            None => {
                document.insert("state", "open");
            }
        }
        Ok(document)
    }
}

impl MongoStore {
    /// The document the adapter keeps for one source record.
    async fn document(
        &self,
        kind: RecordKind,
        value: Value,
        versions: &mut HashMap<(String, i64), i64>,
        tokens: &mut HashMap<String, Option<(i64, i64)>>,
    ) -> Result<Document, StoreError> {
        match kind {
            RecordKind::Settlements => settlement_document(&decode(value)?),
            RecordKind::SettlementLines => self.line_document(value, versions).await,
            RecordKind::Transactions => self.transaction_document(value, tokens).await,
            other => other_document(other, value),
        }
    }

    /// Which of `records` an earlier run of this migration copied.
    async fn copied_before(
        &self,
        kind: RecordKind,
        records: &[ExportedRecord],
    ) -> Result<HashSet<String>, StoreError> {
        let ids: Vec<String> = records.iter().map(|r| ledger_id(kind, &r.cursor)).collect();
        let found: Vec<Document> = self
            .collection(MIGRATION_COPIED)
            .find(doc! { "_id": { "$in": ids } })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        Ok(found
            .iter()
            .filter_map(|document| document.get_str("_id").ok().map(str::to_string))
            .collect())
    }

    async fn note_copied(&self, id: &str) -> Result<(), StoreError> {
        self.collection(MIGRATION_COPIED)
            .update_one(doc! { "_id": id }, doc! { "$set": { "copied": true } })
            .upsert(true)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl MigrationTarget for MongoStore {
    fn describe(&self) -> String {
        format!("MongoDB database {}", self.database_name())
    }

    fn reconciliation(&self) -> Option<&dyn settle_core::store::ReconciliationStore> {
        Some(self)
    }

    async fn migration_marker(&self) -> Result<Option<MigrationMarker>, StoreError> {
        let Some(document) = self
            .collection(MIGRATIONS)
            .find_one(doc! { "_id": MARKER })
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        Ok(Some(MigrationMarker {
            source_id: d::text(&document, "source_id")?.to_string(),
            started_at: d::utc(&document, "started_at")?,
            finished_at: d::optional_utc(&document, "finished_at")?,
        }))
    }

    async fn held_records(&self) -> Result<Vec<(RecordKind, u64)>, StoreError> {
        let mut held = Vec::new();
        for kind in RecordKind::ORDER {
            let count = self
                .collection(target_collection(*kind))
                .count_documents(doc! {})
                .await
                .map_err(backend)?;
            if count > 0 {
                held.push((*kind, count));
            }
        }
        Ok(held)
    }

    async fn begin_migration(&self, source_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.collection(MIGRATIONS)
            .update_one(
                doc! { "_id": MARKER },
                doc! {
                    "$set": { "source_id": source_id, "started_at": instant(now), "finished_at": Bson::Null },
                    "$setOnInsert": { "first_started_at": instant(now) },
                },
            )
            .upsert(true)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn finish_migration(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.collection(MIGRATIONS)
            .update_one(
                doc! { "_id": MARKER },
                doc! { "$set": { "finished_at": instant(now) } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn import_records(
        &self,
        kind: RecordKind,
        records: Vec<ExportedRecord>,
    ) -> Result<ImportOutcome, StoreError> {
        let copied_before = self.copied_before(kind, &records).await?;
        let collection = self.collection(target_collection(kind));
        let mut versions = HashMap::new();
        let mut tokens = HashMap::new();
        let mut outcome = ImportOutcome::default();
        for record in records {
            let filter = key(kind, &record.value)?;
            let id = ledger_id(kind, &record.cursor);
            let held = collection.find_one(filter.clone()).await.map_err(backend)?;
            match held {
                Some(held) => {
                    outcome.present += 1;
                    let document = self
                        .document(kind, record.value, &mut versions, &mut tokens)
                        .await?;
                    if differs(&document, &held) {
                        outcome.differing += 1;
                    }
                    if !copied_before.contains(&id) {
                        self.note_copied(&id).await?;
                    }
                }
                None if copied_before.contains(&id) => outcome.removed += 1,
                None => {
                    let document = self
                        .document(kind, record.value, &mut versions, &mut tokens)
                        .await?;
                    match collection.insert_one(document).await {
                        Ok(_) => {
                            outcome.copied += 1;
                            if kind == RecordKind::Settlements {
                                self.after_settlement_inserted(&filter).await?;
                            }
                        }
                        // Another key of the target (a name, an external reference) holds it.
                        Err(error) if is_duplicate_key(&error) => {
                            outcome.present += 1;
                            outcome.differing += 1;
                        }
                        Err(error) => return Err(backend(error)),
                    }
                    self.note_copied(&id).await?;
                }
            }
        }
        Ok(outcome)
    }

    async fn count_missing(
        &self,
        kind: RecordKind,
        records: &[ExportedRecord],
    ) -> Result<u64, StoreError> {
        let copied_before = self.copied_before(kind, records).await?;
        let collection = self.collection(target_collection(kind));
        let mut missing = 0;
        for record in records {
            if copied_before.contains(&ledger_id(kind, &record.cursor)) {
                // Copied (or found present) by a migration: present, or removed on the target.
                continue;
            }
            let filter = key(kind, &record.value)?;
            if collection
                .find_one(filter)
                .await
                .map_err(backend)?
                .is_none()
            {
                missing += 1;
            }
        }
        Ok(missing)
    }

    async fn verify_page(
        &self,
        kind: RecordKind,
        records: &[ExportedRecord],
    ) -> Result<VerifyPage, StoreError> {
        let copied_before = self.copied_before(kind, records).await?;
        let collection = self.collection(target_collection(kind));
        let mut versions = HashMap::new();
        let mut tokens = HashMap::new();
        let mut page = VerifyPage::default();
        for record in records {
            let filter = key(kind, &record.value)?;
            let held = collection.find_one(filter).await.map_err(backend)?;
            if held.is_none() && copied_before.contains(&ledger_id(kind, &record.cursor)) {
                page.removed += 1;
                continue;
            }
            let document = self
                .document(kind, record.value.clone(), &mut versions, &mut tokens)
                .await?;
            page.records.push(VerifiedRecord {
                key: record.cursor.clone(),
                source: canonical_content(&document, &document)?,
                target: held
                    .as_ref()
                    .map(|held| canonical_content(&document, held))
                    .transpose()?,
                differs: held.as_ref().is_some_and(|held| differs(&document, held)),
            });
        }
        Ok(page)
    }

    async fn migration_checkpoint(&self, kind: RecordKind) -> Result<Option<String>, StoreError> {
        let found = self
            .collection(MIGRATIONS)
            .find_one(doc! { "_id": kind.as_str() })
            .await
            .map_err(backend)?;
        Ok(found.and_then(|document| document.get_str("cursor").ok().map(str::to_string)))
    }

    async fn save_migration_checkpoint(
        &self,
        kind: RecordKind,
        cursor: Option<String>,
    ) -> Result<(), StoreError> {
        let collection = self.collection(MIGRATIONS);
        match cursor {
            Some(cursor) => {
                collection
                    .replace_one(
                        doc! { "_id": kind.as_str() },
                        doc! { "_id": kind.as_str(), "cursor": cursor },
                    )
                    .upsert(true)
                    .await
                    .map_err(backend)?;
            }
            None => {
                collection
                    .delete_one(doc! { "_id": kind.as_str() })
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }
}

/// Payouts, carry-forwards, holds, notifications, idempotency records, audit events, fee ledgers,
/// API tokens and rerun requests, in the documents the adapter's own modules write (see their
/// module docs).
fn other_document(kind: RecordKind, value: Value) -> Result<Document, StoreError> {
    let document = match kind {
        RecordKind::Payouts => {
            let p: Payout = decode(value)?;
            let document = doc! {
                "_id": &p.reference,
                "settlement_date": date_text(p.settlement_date),
                "revision": i64::from(p.revision),
                "merchant_id": &p.merchant_id,
                "currency": p.currency.code(),
                "amount_minor": p.amount_minor,
                "status": p.status.as_str(),
                "provider_payout_id": optional(p.provider_payout_id),
                "attempts": i64::from(p.attempts),
                "last_error": optional(p.last_error),
                "created_at": instant(p.created_at),
                "updated_at": instant(p.updated_at),
            };
            document
        }
        RecordKind::CarryForwards => {
            let form: CarryForwardForm = decode(value)?;
            let c = form.carry;
            let filter = doc! {
                "origin_date": date_text(c.origin_date),
                "origin_revision": i64::from(c.origin_revision),
                "merchant_id": &c.merchant_id,
                "currency": c.currency.code(),
            };
            let mut document = filter.clone();
            document.insert("amount_minor", c.amount_minor);
            document.insert("applied_date", optional(c.applied_date.map(date_text)));
            document.insert(
                "applied_revision",
                c.applied_revision
                    .map(|r| Bson::Int64(i64::from(r)))
                    .unwrap_or(Bson::Null),
            );
            document.insert("created_at", instant(form.created_at));
            document
        }
        RecordKind::MerchantHolds => {
            let hold: MerchantHold = decode(value)?;
            let document = doc! {
                "_id": &hold.merchant_id,
                "reason": &hold.reason,
                "held_by": &hold.held_by,
                "held_at": instant(hold.held_at),
            };
            document
        }
        RecordKind::Notifications => {
            let n: Notification = decode(value)?;
            let filter = doc! {
                "settlement_date": date_text(n.settlement_date),
                "revision": i64::from(n.revision),
                "event": &n.event,
            };
            let mut document = filter.clone();
            document.insert("status", n.status.as_str());
            document.insert("attempts", i64::from(n.attempts));
            document.insert("last_error", optional(n.last_error));
            document.insert("created_at", instant(n.created_at));
            document
        }
        RecordKind::IdempotencyRecords => {
            let form: IdempotencyForm = decode(value)?;
            let filter = doc! { "principal": &form.principal, "key": &form.key };
            let mut document = filter.clone();
            document.insert("fingerprint", &form.fingerprint);
            match &form.response {
                Some(response) => {
                    document.insert("state", "completed");
                    document.insert("response_status", i64::from(response.status));
                    document.insert("response_body", d::json_text(&response.body));
                    let headers: Vec<Bson> = response
                        .headers
                        .iter()
                        .map(|(name, value)| {
                            Bson::Array(vec![
                                Bson::String(name.clone()),
                                Bson::String(value.clone()),
                            ])
                        })
                        .collect();
                    document.insert("response_headers", headers);
                }
                None => {
                    document.insert("state", "in_flight");
                }
            }
            document.insert("locked_until", instant(form.locked_until));
            document.insert("created_at", instant(form.created_at));
            document.insert("expires_at", instant(form.expires_at));
            document.insert("unlink_pending", false);
            document
        }
        RecordKind::AuditEvents => {
            let e: AuditEvent = decode(value)?;
            let document = doc! {
                "_id": e.id.to_string(),
                "occurred_at": instant(e.occurred_at),
                "actor": &e.actor,
                "action": &e.action,
                "subject": &e.subject,
                "outcome": &e.outcome,
                "detail": d::json_text(&e.detail),
            };
            document
        }
        RecordKind::FeeLedgers => {
            let ledger: settle_core::model::PaymentFeeLedger = decode(value)?;
            let filter = doc! {
                "merchant_id": &ledger.merchant_id,
                "external_ref": &ledger.external_ref,
            };
            let mut document = filter.clone();
            document.insert(
                "version",
                i64::try_from(ledger.version)
                    .map_err(|_| StoreError::Corrupt("a fee ledger version overflowed".into()))?,
            );
            document.insert("ledger", d::to_nested(&ledger)?);
            document
        }
        RecordKind::ApiTokens => super::access::token_document(&decode::<ApiToken>(value)?),
        RecordKind::RerunRequests => {
            super::access::rerun_request_document(&decode::<RerunRequest>(value)?)
        }
        RecordKind::Settlements | RecordKind::SettlementLines | RecordKind::Transactions => {
            unreachable!("built by their own methods")
        }
    };
    Ok(document)
}

fn optional(value: Option<String>) -> Bson {
    value.map(Bson::String).unwrap_or(Bson::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collection names declared in the adapter's `collections` module.
    fn declared_collections() -> Vec<String> {
        let source = include_str!("lib.rs");
        let start = source.find("pub mod collections {").unwrap();
        let end = start + source[start..].find('}').unwrap();
        source[start..end]
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub const "))
            .map(|line| line.split('"').nth(1).unwrap().to_string())
            .collect()
    }

    /// What `differs` finds equal has equal canonical content; what it finds different does not.
    #[test]
    fn canonical_content_agrees_with_differs() {
        let source = doc! {
            "_id": "t-1",
            "amount_minor": 1000_i64,
            "state": "open",
            "refund_of": Bson::Null,
            "calendar": { "zone": "UTC", "days": [1_i64, 2_i64] },
        };
        let same = doc! {
            "calendar": { "days": [1_i64, 2_i64], "zone": "UTC" },
            "amount_minor": 1000_i32,
            "_id": "t-1",
            "state": "frozen",
            "freeze_token": 7_i64,
        };
        assert!(!differs(&source, &same));
        assert_eq!(
            canonical_content(&source, &source).unwrap(),
            canonical_content(&source, &same).unwrap()
        );
        let mut changed = same.clone();
        changed.insert("amount_minor", 1001_i64);
        assert!(differs(&source, &changed));
        assert_ne!(
            canonical_content(&source, &source).unwrap(),
            canonical_content(&source, &changed).unwrap()
        );
    }

    /// Every collection is either written as a record kind or listed as not one.
    #[test]
    fn every_collection_is_migrated_or_listed_as_not_a_record_kind() {
        let mut names = declared_collections();
        assert!(names.len() > 5, "{names:?}");
        names.extend(
            NOT_RECORD_COLLECTIONS
                .iter()
                .map(|(name, _)| name.to_string()),
        );
        for name in &names {
            let migrated = RecordKind::ORDER
                .iter()
                .any(|kind| target_collection(*kind) == name);
            let listed = NOT_RECORD_COLLECTIONS.iter().any(|(c, _)| c == name);
            assert!(
                migrated ^ listed,
                "collection {name}: migrated {migrated}, listed as not a record kind {listed}"
            );
        }
        for kind in RecordKind::ORDER {
            assert!(
                names.iter().any(|name| name == target_collection(*kind)),
                "{kind:?} is written to an undeclared collection"
            );
        }
    }
}
