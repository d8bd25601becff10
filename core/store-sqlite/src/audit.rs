//! The audit trail and webhook notification records in SQLite: append-only events, one
//! notification row per (settlement_date, revision, event).

use async_trait::async_trait;
use chrono::NaiveDate;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};

use settle_core::model::{AuditEvent, Notification};
use settle_core::store::{AuditFilter, AuditStore, NotificationStore, StoreError};

use super::rows::{self, date_text, instant_text};
use super::{backend, query_all, SqliteStore};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO audit_events (id, occurred_at, actor, action, subject, outcome, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    event.id.to_string(),
                    instant_text(event.occurred_at),
                    event.actor,
                    event.action,
                    event.subject,
                    event.outcome,
                    event.detail.to_string()
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn audit_events_matching(
        &self,
        filter: &AuditFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // SQLite's OFFSET is a signed 64-bit integer: an offset beyond it is past any end.
        let Ok(offset) = i64::try_from(offset) else {
            return Ok(Vec::new());
        };
        if filter.is_empty_range() {
            return Ok(Vec::new());
        }
        let (from, to) = filter.stored_bounds();
        // Only the conditions that are set, so that the planner can use the index of one
        // (`x = ?` rather than `(? IS NULL OR x = ?)`, which no index serves).
        let conditions = [
            ("subject = ?", filter.subject.clone()),
            ("action = ?", filter.action.clone()),
            ("actor = ?", filter.actor.clone()),
            ("occurred_at >= ?", from.map(instant_text)),
            ("occurred_at < ?", to.map(instant_text)),
        ];
        let (clauses, mut values): (Vec<&str>, Vec<Value>) = conditions
            .into_iter()
            .filter_map(|(clause, value)| value.map(|value| (clause, Value::Text(value))))
            .unzip();
        let mut sql = String::from(
            "SELECT id, occurred_at, actor, action, subject, outcome, detail FROM audit_events",
        );
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY occurred_at DESC, id DESC LIMIT ? OFFSET ?");
        values.push(Value::Integer(i64::from(limit)));
        values.push(Value::Integer(offset));
        self.read(move |connection| {
            query_all(
                connection,
                &sql,
                params_from_iter(values),
                rows::audit_event,
            )
        })
        .await
    }
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn record_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        let n = notification.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO notifications (settlement_date, revision, event, status, attempts, last_error, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (settlement_date, revision, event) DO UPDATE SET status = excluded.status, \
                 attempts = notifications.attempts + excluded.attempts, last_error = excluded.last_error",
                params![
                    date_text(n.settlement_date),
                    n.revision,
                    n.event,
                    n.status.as_str(),
                    n.attempts,
                    n.last_error,
                    instant_text(n.created_at)
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn notifications(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Notification>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                "SELECT settlement_date, revision, event, status, attempts, last_error, created_at \
                 FROM notifications WHERE settlement_date = ?1 ORDER BY revision, created_at",
                params![date_text(settlement_date)],
                rows::notification,
            )
        })
        .await
    }
}
