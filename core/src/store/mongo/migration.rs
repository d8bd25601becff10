//! MongoDB as the target of `settle migrate`: each record replaces what its key holds (so a
//! second run is harmless), and a checkpoint per kind lets an interrupted copy resume.
//!
//! Transactions are placed as this adapter keeps them: on a date that already has a revision
//! they arrive frozen under the latest revision's fencing token (so a later rerun settles exactly
//! them), otherwise open.

use std::collections::HashMap;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

use crate::model::{AuditEvent, Notification, Payout, Settlement};
use crate::store::migration::forms::{
    CarryForwardForm, IdempotencyForm, LineForm, TransactionForm,
};
use crate::store::migration::{MigrationTarget, RecordKind};
use crate::store::{MerchantHold, StoreError};

use super::collections::{
    AUDIT_EVENTS, CARRY_FORWARDS, FEE_LEDGERS, IDEMPOTENCY_RECORDS, MERCHANT_HOLDS, NOTIFICATIONS,
    PAYOUTS, SETTLEMENTS, SETTLEMENT_LINES, TRANSACTIONS,
};
use super::documents::{self as d, date_text, instant};
use super::{backend, MongoStore};

/// Where checkpoints of interrupted copies are kept.
const MIGRATIONS: &str = "migrations";

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
    /// Replaces (or inserts) the document `filter` selects.
    async fn upsert(
        &self,
        collection: &str,
        filter: Document,
        document: Document,
    ) -> Result<(), StoreError> {
        self.collection(collection)
            .replace_one(filter, document)
            .upsert(true)
            .await
            .map_err(backend)?;
        Ok(())
    }

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

    async fn import_settlements(&self, values: Vec<Value>) -> Result<u64, StoreError> {
        let mut written = 0;
        for value in values {
            let settlement: Settlement = decode(value)?;
            let date = date_text(settlement.settlement_date);
            let revision = i64::from(settlement.revision);
            self.upsert(
                SETTLEMENTS,
                doc! { "settlement_date": &date, "revision": revision },
                settlement_document(&settlement)?,
            )
            .await?;
            // Revisions arrive in order: the one before this can no longer be retried.
            if revision > 1 {
                self.collection(SETTLEMENTS)
                    .update_one(
                        doc! { "settlement_date": &date, "revision": revision - 1 },
                        doc! { "$set": { "superseded": true } },
                    )
                    .await
                    .map_err(backend)?;
            }
            written += 1;
        }
        Ok(written)
    }

    async fn import_lines(&self, values: Vec<Value>) -> Result<u64, StoreError> {
        let mut versions: HashMap<(String, i64), i64> = HashMap::new();
        let mut written = 0;
        for value in values {
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
            let filter = doc! {
                "settlement_date": &date,
                "revision": revision,
                "lease_version": lease_version,
                "merchant_id": &form.line.merchant_id,
                "currency": form.line.currency.code(),
            };
            self.upsert(SETTLEMENT_LINES, filter, document).await?;
            written += 1;
        }
        Ok(written)
    }

    async fn import_transactions(&self, values: Vec<Value>) -> Result<u64, StoreError> {
        let mut tokens: HashMap<String, Option<(i64, i64)>> = HashMap::new();
        let mut written = 0;
        for value in values {
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
            self.upsert(TRANSACTIONS, doc! { "_id": t.id.to_string() }, document)
                .await?;
            written += 1;
        }
        Ok(written)
    }
}

#[async_trait]
impl MigrationTarget for MongoStore {
    async fn import_records(
        &self,
        kind: RecordKind,
        records: Vec<Value>,
    ) -> Result<u64, StoreError> {
        match kind {
            RecordKind::Settlements => self.import_settlements(records).await,
            RecordKind::SettlementLines => self.import_lines(records).await,
            RecordKind::Transactions => self.import_transactions(records).await,
            other => self.import_other(other, records).await,
        }
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

impl MongoStore {
    /// Payouts, carry-forwards, holds, notifications, idempotency records and audit events, in the
    /// documents the adapter's own modules write (see their module docs).
    async fn import_other(&self, kind: RecordKind, records: Vec<Value>) -> Result<u64, StoreError> {
        let mut written = 0;
        for value in records {
            let (collection, filter, document) = match kind {
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
                    (PAYOUTS, doc! { "_id": &p.reference }, document)
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
                    (CARRY_FORWARDS, filter, document)
                }
                RecordKind::MerchantHolds => {
                    let hold: MerchantHold = decode(value)?;
                    let document = doc! {
                        "_id": &hold.merchant_id,
                        "reason": &hold.reason,
                        "held_by": &hold.held_by,
                        "held_at": instant(hold.held_at),
                    };
                    (MERCHANT_HOLDS, doc! { "_id": &hold.merchant_id }, document)
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
                    (NOTIFICATIONS, filter, document)
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
                    (IDEMPOTENCY_RECORDS, filter, document)
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
                    (AUDIT_EVENTS, doc! { "_id": e.id.to_string() }, document)
                }
                RecordKind::FeeLedgers => {
                    let ledger: crate::model::PaymentFeeLedger = decode(value)?;
                    let filter = doc! {
                        "merchant_id": &ledger.merchant_id,
                        "external_ref": &ledger.external_ref,
                    };
                    let mut document = filter.clone();
                    document.insert(
                        "version",
                        i64::try_from(ledger.version).map_err(|_| {
                            StoreError::Corrupt("a fee ledger version overflowed".into())
                        })?,
                    );
                    document.insert("ledger", d::to_nested(&ledger)?);
                    (FEE_LEDGERS, filter, document)
                }
                RecordKind::Settlements
                | RecordKind::SettlementLines
                | RecordKind::Transactions => {
                    unreachable!("imported by their own methods")
                }
            };
            self.upsert(collection, filter, document).await?;
            written += 1;
        }
        Ok(written)
    }
}

fn optional(value: Option<String>) -> Bson {
    value.map(Bson::String).unwrap_or(Bson::Null)
}
