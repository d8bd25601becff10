//! The SQLite store as the source of `settle migrate`: every table read page by page in primary
//! key order (keyset paging on row values), turned into the neutral JSON forms.

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde_json::{json, Value};

use settle_core::store::migration::forms::{
    CarryForwardForm, IdempotencyForm, LineForm, TransactionForm,
};
use settle_core::store::migration::{ExportedRecord, MigrationSource, RecordKind};
use settle_core::store::StoreError;

use super::rows::{
    self, API_TOKEN_COLUMNS, CARRY_FORWARD_COLUMNS, FIGURE_COLUMNS, PAYOUT_COLUMNS,
    RERUN_REQUEST_COLUMNS, SETTLEMENT_COLUMNS, TRANSACTION_COLUMNS,
};
use super::{backend, query_all, SqliteStore};

/// How one table is paged: its key columns (the primary key, in order) and what it selects.
struct Table {
    name: &'static str,
    key: &'static [&'static str],
    columns: String,
}

fn table(kind: RecordKind) -> Table {
    let t = |name, key, columns: &str| Table {
        name,
        key,
        columns: columns.to_string(),
    };
    match kind {
        RecordKind::Settlements => t("settlements", &["settlement_date", "revision"], SETTLEMENT_COLUMNS),
        RecordKind::SettlementLines => t(
            "settlement_lines",
            &["settlement_date", "revision", "merchant_id", "currency"],
            &format!("settlement_date, revision, merchant_id, currency, {FIGURE_COLUMNS}"),
        ),
        RecordKind::Transactions => t(
            "transactions",
            &["id"],
            &format!("{TRANSACTION_COLUMNS}, idempotency_principal, idempotency_key"),
        ),
        RecordKind::Payouts => t("payouts", &["reference"], PAYOUT_COLUMNS),
        RecordKind::CarryForwards => t(
            "carry_forwards",
            &["origin_date", "origin_revision", "merchant_id", "currency"],
            &format!("{CARRY_FORWARD_COLUMNS}, created_at"),
        ),
        RecordKind::MerchantHolds => t("merchant_holds", &["merchant_id"], "merchant_id, reason, held_by, held_at"),
        RecordKind::Notifications => t(
            "notifications",
            &["settlement_date", "revision", "event"],
            "settlement_date, revision, event, status, attempts, last_error, created_at",
        ),
        RecordKind::IdempotencyRecords => t(
            "idempotency_records",
            &["principal", "key"],
            "principal, key, fingerprint, state, response_status, response_body, response_headers, locked_until, \
             created_at, expires_at",
        ),
        RecordKind::AuditEvents => t(
            "audit_events",
            &["id"],
            "id, occurred_at, actor, action, subject, outcome, detail",
        ),
        RecordKind::FeeLedgers => t(
            "payment_fee_ledgers",
            &["merchant_id", "external_ref"],
            "merchant_id, external_ref, ledger",
        ),
        RecordKind::ApiTokens => t("api_tokens", &["id"], API_TOKEN_COLUMNS),
        RecordKind::RerunRequests => t("rerun_requests", &["id"], RERUN_REQUEST_COLUMNS),
    }
}

/// Tables that are not a record kind of their own, and why.
#[cfg(test)]
const NOT_RECORD_TABLES: &[(&str, &str)] = &[
    (
        "settlement_totals",
        "carried inside each settlement's record",
    ),
    (
        "store_identity",
        "the store's own identity (migration bookkeeping)",
    ),
    (
        "recon_statements",
        "reconciliation: copied through its port (store::migration::reconciliation)",
    ),
    (
        "recon_entries",
        "reconciliation: copied through its port (store::migration::reconciliation)",
    ),
    (
        "recon_decisions",
        "reconciliation: copied through its port (store::migration::reconciliation)",
    ),
    (
        "recon_claims",
        "reconciliation: restored with each copied decision that holds its items",
    ),
];

/// The table each kind is read from.
#[cfg(test)]
fn source_table(kind: RecordKind) -> &'static str {
    table(kind).name
}

impl SqliteStore {
    /// The store's stable identity (random, made with the schema; never changes).
    pub async fn store_id(&self) -> Result<String, StoreError> {
        self.read(|connection| {
            connection
                .query_row(
                    "SELECT store_id FROM store_identity WHERE singleton = 1",
                    [],
                    |row| row.get(0),
                )
                .map_err(backend)
        })
        .await
    }
}

fn encode(error: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("cannot encode a record: {error}"))
}

/// The neutral JSON form of one row.
fn form(kind: RecordKind, row: &rusqlite::Row) -> Result<Value, StoreError> {
    let value = match kind {
        RecordKind::Settlements => {
            let mut settlement = rows::settlement(row)?;
            settlement.totals = Vec::new();
            serde_json::to_value(settlement).map_err(encode)?
        }
        RecordKind::SettlementLines => serde_json::to_value(LineForm {
            settlement_date: rows::parsed(row, "settlement_date")?,
            revision: u32::try_from(rows::integer(row, "revision")?).unwrap_or_default(),
            line: rows::line(row)?,
        })
        .map_err(encode)?,
        RecordKind::Transactions => serde_json::to_value(TransactionForm {
            transaction: rows::transaction(row)?,
            idempotency_principal: rows::optional_text(row, "idempotency_principal")?,
            idempotency_key: rows::optional_text(row, "idempotency_key")?,
        })
        .map_err(encode)?,
        RecordKind::Payouts => serde_json::to_value(rows::payout(row)?).map_err(encode)?,
        RecordKind::CarryForwards => serde_json::to_value(CarryForwardForm {
            carry: rows::carry_forward(row)?,
            created_at: rows::instant(row, "created_at")?,
        })
        .map_err(encode)?,
        RecordKind::MerchantHolds => json!({
            "merchant_id": rows::text(row, "merchant_id")?,
            "reason": rows::text(row, "reason")?,
            "held_by": rows::text(row, "held_by")?,
            "held_at": rows::instant(row, "held_at")?,
        }),
        RecordKind::Notifications => {
            serde_json::to_value(rows::notification(row)?).map_err(encode)?
        }
        RecordKind::IdempotencyRecords => {
            let response = if rows::text(row, "state")? == "completed" {
                Some(settle_core::model::idempotency::StoredResponse {
                    status: u16::try_from(rows::integer(row, "response_status")?).unwrap_or(500),
                    body: rows::json(row, "response_body")?,
                    headers: rows::json(row, "response_headers")?,
                })
            } else {
                None
            };
            serde_json::to_value(IdempotencyForm {
                principal: rows::text(row, "principal")?,
                key: rows::text(row, "key")?,
                fingerprint: rows::text(row, "fingerprint")?,
                response,
                locked_until: rows::instant(row, "locked_until")?,
                created_at: rows::instant(row, "created_at")?,
                expires_at: rows::instant(row, "expires_at")?,
            })
            .map_err(encode)?
        }
        RecordKind::AuditEvents => serde_json::to_value(rows::audit_event(row)?).map_err(encode)?,
        RecordKind::FeeLedgers => rows::json::<Value>(row, "ledger")?,
        RecordKind::ApiTokens => serde_json::to_value(rows::api_token(row)?).map_err(encode)?,
        RecordKind::RerunRequests => {
            serde_json::to_value(rows::rerun_request(row)?).map_err(encode)?
        }
    };
    Ok(value)
}

/// The cursor of a row: its key columns as a JSON array.
fn cursor(table: &Table, row: &rusqlite::Row) -> Result<String, StoreError> {
    let mut values = Vec::with_capacity(table.key.len());
    for column in table.key {
        let value: SqlValue = row.get(*column).map_err(backend)?;
        values.push(match value {
            SqlValue::Integer(n) => json!(n),
            SqlValue::Text(text) => json!(text),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "key column {column}: {other:?}"
                )))
            }
        });
    }
    Ok(Value::Array(values).to_string())
}

fn page(
    connection: &Connection,
    kind: RecordKind,
    after: Option<String>,
    limit: u32,
) -> Result<Vec<ExportedRecord>, StoreError> {
    let table = table(kind);
    let key = table.key.join(", ");
    let mut bound: Vec<SqlValue> = Vec::new();
    let condition = match after {
        None => "1 = 1".to_string(),
        Some(after) => {
            let values: Vec<Value> = serde_json::from_str(&after)
                .map_err(|e| StoreError::Backend(format!("bad migration cursor: {e}")))?;
            for value in values {
                bound.push(match value {
                    Value::Number(n) => SqlValue::Integer(n.as_i64().unwrap_or_default()),
                    Value::String(text) => SqlValue::Text(text),
                    other => {
                        return Err(StoreError::Backend(format!(
                            "bad migration cursor value {other}"
                        )))
                    }
                });
            }
            let placeholders = (1..=bound.len())
                .map(|n| format!("?{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({key}) > ({placeholders})")
        }
    };
    bound.push(SqlValue::Integer(i64::from(limit)));
    let sql = format!(
        "SELECT {} FROM {} WHERE {condition} ORDER BY {key} LIMIT ?{}",
        table.columns,
        table.name,
        bound.len()
    );
    let mut records = query_all(connection, &sql, params_from_iter(bound), |row| {
        Ok(ExportedRecord {
            cursor: cursor(&table, row)?,
            value: form(kind, row)?,
        })
    })?;
    if kind == RecordKind::Settlements {
        // Totals live in their own table here; the neutral form carries them inside.
        for record in &mut records {
            let settlement: settle_core::model::Settlement =
                serde_json::from_value(record.value.clone()).map_err(encode)?;
            let settlement = super::settlements::with_totals(connection, settlement)?;
            record.value["totals"] = serde_json::to_value(&settlement.totals).map_err(encode)?;
        }
    }
    Ok(records)
}

#[async_trait]
impl MigrationSource for SqliteStore {
    async fn source_id(&self) -> Result<String, StoreError> {
        self.store_id().await
    }

    fn reconciliation(&self) -> Option<&dyn settle_core::store::ReconciliationStore> {
        Some(self)
    }

    async fn export_page(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<ExportedRecord>, StoreError> {
        self.read(move |connection| page(connection, kind, after, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the schema is either copied as a record kind or listed as not one.
    #[tokio::test]
    async fn every_table_is_migrated_or_listed_as_not_a_record_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("settle.db"))
            .await
            .unwrap();
        let tables: Vec<String> = store
            .read(|connection| {
                query_all(
                    connection,
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' ORDER BY name",
                    [],
                    |row| rows::text(row, "name"),
                )
            })
            .await
            .unwrap();
        assert!(tables.len() > 5, "{tables:?}");
        for name in &tables {
            let migrated = RecordKind::ORDER
                .iter()
                .any(|kind| source_table(*kind) == name);
            let listed = NOT_RECORD_TABLES.iter().any(|(table, _)| table == name);
            assert!(
                migrated ^ listed,
                "table {name}: migrated {migrated}, listed as not a record kind {listed}"
            );
        }
        let id = store.store_id().await.unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(store.store_id().await.unwrap(), id);
    }
}
