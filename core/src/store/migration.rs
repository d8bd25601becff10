//! Copying a whole store into another (`settle migrate`): every kind of record, page by page, in a
//! neutral JSON form, written idempotently so that running it again is harmless and an interrupted
//! copy resumes from its last checkpoint.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;

/// The kinds of records, in the order they are copied: settlements before transactions, so that a
/// target can tell which dates are sealed when it places each transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Settlements,
    SettlementLines,
    Transactions,
    Payouts,
    CarryForwards,
    MerchantHolds,
    Notifications,
    IdempotencyRecords,
    AuditEvents,
    FeeLedgers,
}

impl RecordKind {
    pub const ORDER: &'static [RecordKind] = &[
        RecordKind::Settlements,
        RecordKind::SettlementLines,
        RecordKind::Transactions,
        RecordKind::Payouts,
        RecordKind::CarryForwards,
        RecordKind::MerchantHolds,
        RecordKind::Notifications,
        RecordKind::IdempotencyRecords,
        RecordKind::AuditEvents,
        RecordKind::FeeLedgers,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::Settlements => "settlements",
            RecordKind::SettlementLines => "settlement_lines",
            RecordKind::Transactions => "transactions",
            RecordKind::Payouts => "payouts",
            RecordKind::CarryForwards => "carry_forwards",
            RecordKind::MerchantHolds => "merchant_holds",
            RecordKind::Notifications => "notifications",
            RecordKind::IdempotencyRecords => "idempotency_records",
            RecordKind::AuditEvents => "audit_events",
            RecordKind::FeeLedgers => "fee_ledgers",
        }
    }
}

/// One exported record: its paging cursor (opaque, increasing) and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedRecord {
    pub cursor: String,
    pub value: Value,
}

/// A store that can be read whole.
#[async_trait]
pub trait MigrationSource: Send + Sync {
    /// Records of one kind after `after` (a cursor from an earlier page), in cursor order.
    async fn export_page(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<ExportedRecord>, StoreError>;
}

/// A store that can take records copied from another, idempotently.
#[async_trait]
pub trait MigrationTarget: Send + Sync {
    /// Writes records (insert, or replace what the same key holds). Returns how many were written.
    async fn import_records(
        &self,
        kind: RecordKind,
        records: Vec<Value>,
    ) -> Result<u64, StoreError>;

    /// Where an interrupted copy of `kind` stopped, if it did.
    async fn migration_checkpoint(&self, kind: RecordKind) -> Result<Option<String>, StoreError>;

    /// Records progress; `None` clears it (the copy of every kind finished).
    async fn save_migration_checkpoint(
        &self,
        kind: RecordKind,
        cursor: Option<String>,
    ) -> Result<(), StoreError>;
}

/// What a migration copied, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub copied: Vec<(RecordKind, u64)>,
    /// True when an earlier, interrupted run was resumed.
    pub resumed: bool,
}

/// Records copied per page (and per checkpoint).
pub const PAGE_SIZE: u32 = 1_000;

/// Copies everything from `source` into `target`. `progress` is told each page.
pub async fn migrate(
    source: &dyn MigrationSource,
    target: &dyn MigrationTarget,
    progress: &(dyn Fn(RecordKind, u64) + Send + Sync),
) -> Result<MigrationReport, StoreError> {
    let mut report = MigrationReport::default();
    for kind in RecordKind::ORDER {
        let mut after = target.migration_checkpoint(*kind).await?;
        report.resumed |= after.is_some();
        let mut copied = 0;
        loop {
            let page = source.export_page(*kind, after.clone(), PAGE_SIZE).await?;
            let Some(last) = page.last() else { break };
            let cursor = last.cursor.clone();
            let values = page.into_iter().map(|record| record.value).collect();
            copied += target.import_records(*kind, values).await?;
            target
                .save_migration_checkpoint(*kind, Some(cursor.clone()))
                .await?;
            crate::failpoint::hit("migration.after_page")
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            progress(*kind, copied);
            after = Some(cursor);
        }
        report.copied.push((*kind, copied));
    }
    // Finished: a later run starts from the beginning again (and finds everything present).
    for kind in RecordKind::ORDER {
        target.save_migration_checkpoint(*kind, None).await?;
    }
    Ok(report)
}

/// The neutral forms of records that carry more than their domain type.
pub mod forms {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::{Deserialize, Serialize};

    use crate::idempotency::StoredResponse;
    use crate::model::{CarryForward, SettlementLine, Transaction};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct TransactionForm {
        #[serde(flatten)]
        pub transaction: Transaction,
        pub idempotency_principal: Option<String>,
        pub idempotency_key: Option<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct LineForm {
        pub settlement_date: NaiveDate,
        pub revision: u32,
        #[serde(flatten)]
        pub line: SettlementLine,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct CarryForwardForm {
        #[serde(flatten)]
        pub carry: CarryForward,
        pub created_at: DateTime<Utc>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct IdempotencyForm {
        pub principal: String,
        pub key: String,
        pub fingerprint: String,
        /// `None` while the request is in flight.
        pub response: Option<StoredResponse>,
        pub locked_until: DateTime<Utc>,
        pub created_at: DateTime<Utc>,
        pub expires_at: DateTime<Utc>,
    }
}
