//! The audit trail and webhook notification records in MongoDB: append-only events, one
//! notification document per (settlement_date, revision, event).
//!
//! Each write touches one document, so no multi-document transaction is needed: an audit event is
//! one `insert_one` keyed by its id (`_id`), and a notification is one upsert under the unique
//! (settlement_date, revision, event) index that sets status and error and adds the attempts
//! atomically (`$set` / `$inc`, `created_at` only on insert). Two first records of one event may
//! race to insert; the loser's duplicate key is retried as an update of the winner's document.
//!
//! Documents: `audit_events` (`_id` = event id, `occurred_at` DateTime, `actor`, `action`,
//! `subject`, `outcome`, `detail` as JSON text, so any JSON value round-trips exactly; listed by
//! `occurred_at` and `_id` descending, with an index per filter field: subject, action, actor);
//! `notifications` (`settlement_date`, `revision`, `event`, `status`, `attempts` Int64,
//! `last_error`, `created_at`).

use async_trait::async_trait;
use chrono::NaiveDate;
use mongodb::bson::{doc, Bson, Document};

use settle_core::model::{AuditEvent, Notification};
use settle_core::store::{AuditFilter, AuditStore, NotificationStore, StoreError};

use super::collections::{AUDIT_EVENTS, NOTIFICATIONS};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, MongoStore};

/// Upserts of one notification retried after losing the insert race.
const UPSERT_ATTEMPTS: usize = 3;

fn audit_event(document: &Document) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: d::parsed(document, "_id")?,
        occurred_at: d::utc(document, "occurred_at")?,
        actor: d::text(document, "actor")?.to_string(),
        action: d::text(document, "action")?.to_string(),
        subject: d::text(document, "subject")?.to_string(),
        outcome: d::text(document, "outcome")?.to_string(),
        detail: d::json_value(document, "detail")?,
    })
}

fn notification(document: &Document) -> Result<Notification, StoreError> {
    Ok(Notification {
        settlement_date: d::parsed(document, "settlement_date")?,
        revision: d::small(document, "revision")?,
        event: d::text(document, "event")?.to_string(),
        status: d::parsed(document, "status")?,
        attempts: d::small(document, "attempts")?,
        last_error: d::optional_text(document, "last_error")?,
        created_at: d::utc(document, "created_at")?,
    })
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.collection(AUDIT_EVENTS)
            .insert_one(doc! {
                "_id": event.id.to_string(),
                "occurred_at": instant(event.occurred_at),
                "actor": &event.actor,
                "action": &event.action,
                "subject": &event.subject,
                "outcome": &event.outcome,
                "detail": d::json_text(&event.detail),
            })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn audit_events_matching(
        &self,
        filter: &AuditFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit"; SQL's `LIMIT 0` returns nothing. The server
        // takes a signed 64-bit skip: an offset beyond it is past any end, as in SQLite.
        if limit == 0 || i64::try_from(offset).is_err() || filter.is_empty_range() {
            return Ok(Vec::new());
        }
        self.find_all(
            AUDIT_EVENTS,
            audit_query(filter),
            doc! { "occurred_at": -1, "_id": -1 },
            Some(i64::from(limit)),
            Some(offset),
        )
        .await?
        .iter()
        .map(audit_event)
        .collect()
    }
}

/// The query document of a filter: equality on each text field that is set, a range on
/// `occurred_at` (each bound rounded up to the millisecond a BSON DateTime holds).
fn audit_query(filter: &AuditFilter) -> Document {
    let mut query = Document::new();
    for (field, value) in [
        ("subject", &filter.subject),
        ("action", &filter.action),
        ("actor", &filter.actor),
    ] {
        if let Some(value) = value {
            // `$eq`, so that a value that looks like an operator document is still only text.
            query.insert(field, doc! { "$eq": value.as_str() });
        }
    }
    let (from, to) = filter.stored_bounds();
    let mut range = Document::new();
    if let Some(from) = from {
        range.insert("$gte", instant(from));
    }
    if let Some(to) = to {
        range.insert("$lt", instant(to));
    }
    if !range.is_empty() {
        query.insert("occurred_at", range);
    }
    query
}

#[async_trait]
impl NotificationStore for MongoStore {
    async fn record_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        let n = notification;
        let filter = doc! {
            "settlement_date": date_text(n.settlement_date),
            "revision": i64::from(n.revision),
            "event": &n.event,
        };
        let update = doc! {
            "$set": {
                "status": n.status.as_str(),
                "last_error": n.last_error.clone().map(Bson::String).unwrap_or(Bson::Null),
            },
            "$inc": { "attempts": i64::from(n.attempts) },
            "$setOnInsert": { "created_at": instant(n.created_at) },
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .collection(NOTIFICATIONS)
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if is_duplicate_key(&error) && attempt < UPSERT_ATTEMPTS => continue,
                Err(error) => return Err(backend(error)),
            }
        }
    }

    async fn notifications(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Notification>, StoreError> {
        self.find_all(
            NOTIFICATIONS,
            doc! { "settlement_date": date_text(settlement_date) },
            doc! { "revision": 1, "created_at": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(notification)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;
    use settle_core::model::{AuditAction, AuditOutcome, NotificationStatus};

    async fn store() -> Option<MongoStore> {
        super::super::test_store().await
    }

    fn at(text: &str) -> DateTime<Utc> {
        super::super::test_instant(text)
    }

    #[tokio::test]
    async fn events_round_trip_and_page() {
        let Some(store) = store().await else { return };
        let t0 = at("2024-03-10T10:00:00.123Z");
        let details = [
            serde_json::json!(null),
            serde_json::json!("text"),
            serde_json::json!([1, u64::MAX, {"$x": "y"}]),
        ];
        let mut events = Vec::new();
        for (n, detail) in details.into_iter().enumerate() {
            let event = AuditEvent::new(
                t0 + Duration::seconds(n as i64),
                "a",
                AuditAction::HttpRequest,
                "c",
                AuditOutcome::Succeeded,
                detail,
            );
            store.record_audit(&event).await.unwrap();
            events.push(event);
        }
        events.reverse();
        assert_eq!(store.audit_events(10, 0).await.unwrap(), events);
        assert_eq!(store.audit_events(1, 1).await.unwrap(), events[1..2]);
        assert!(store.audit_events(0, 0).await.unwrap().is_empty());
        assert!(store.record_audit(&events[0]).await.is_err(), "append-only");
        store.drop_database().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_of_one_event_add_up() {
        let Some(store) = store().await else { return };
        let notification = Notification {
            settlement_date: "2024-03-10".parse().unwrap(),
            revision: 2,
            event: "settlement.completed".into(),
            status: NotificationStatus::Failed,
            attempts: 1,
            last_error: Some("down".into()),
            created_at: at("2024-03-11T00:00:00Z"),
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, notification) = (store.clone(), notification.clone());
                tokio::spawn(async move { store.record_notification(&notification).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let recorded = store
            .notifications(notification.settlement_date)
            .await
            .unwrap();
        assert_eq!(
            recorded,
            vec![Notification {
                attempts: 8,
                ..notification
            }]
        );
        store.drop_database().await.unwrap();
    }
}
