//! Copying a whole store into another (`settle migrate`): every kind of record, page by page, in a
//! neutral JSON form. A migration only adds what the target lacks (never overwrites a key it holds),
//! refuses a target holding another store's data, resumes an interrupted copy from its last
//! checkpoint and verifies at the end that the target holds every source record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
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
    ApiTokens,
    RerunRequests,
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
        RecordKind::ApiTokens,
        RecordKind::RerunRequests,
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
            RecordKind::ApiTokens => "api_tokens",
            RecordKind::RerunRequests => "rerun_requests",
        }
    }
}

/// One exported record: its paging cursor (opaque, increasing, and unique to the record within its
/// kind: it is the record's key in the source) and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedRecord {
    pub cursor: String,
    pub value: Value,
}

/// A store that can be read whole.
#[async_trait]
pub trait MigrationSource: Send + Sync {
    /// The store's stable identity: the same for every run against the same store, different
    /// for another store.
    async fn source_id(&self) -> Result<String, StoreError>;

    /// Records of one kind after `after` (a cursor from an earlier page), in cursor order.
    async fn export_page(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<ExportedRecord>, StoreError>;
}

/// What importing one page did, record by record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Inserted: the target did not hold the record's key.
    pub copied: u64,
    /// The target held the key already; what it holds is kept.
    pub present: u64,
    /// Of `present`, how many differ from the source (changed on the target since).
    pub differing: u64,
    /// Copied by an earlier run of this source and removed on the target since (a hold released,
    /// an expired idempotency record): not brought back.
    pub removed: u64,
}

impl ImportOutcome {
    fn add(&mut self, other: ImportOutcome) {
        self.copied += other.copied;
        self.present += other.present;
        self.differing += other.differing;
        self.removed += other.removed;
    }
}

/// The target's record of migrations into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationMarker {
    /// `MigrationSource::source_id` of the store copied in.
    pub source_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A store that can take records copied from another. It only adds: a record whose key the
/// target holds is never overwritten.
#[async_trait]
pub trait MigrationTarget: Send + Sync {
    /// Where the records go, for messages (e.g. "MongoDB database settle").
    fn describe(&self) -> String;

    /// The marker an earlier migration left, if any.
    async fn migration_marker(&self) -> Result<Option<MigrationMarker>, StoreError>;

    /// Records (not migration bookkeeping) the target holds, per kind, for kinds holding any.
    async fn held_records(&self) -> Result<Vec<(RecordKind, u64)>, StoreError>;

    /// Marks a migration from `source_id` as started at `now` (and not finished).
    async fn begin_migration(&self, source_id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Marks the migration as finished at `now`.
    async fn finish_migration(&self, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Inserts the records whose key the target lacks and has never been given by this source;
    /// leaves every other untouched.
    async fn import_records(
        &self,
        kind: RecordKind,
        records: Vec<ExportedRecord>,
    ) -> Result<ImportOutcome, StoreError>;

    /// How many of `records` the target neither holds (by key) nor had removed after a copy.
    async fn count_missing(
        &self,
        kind: RecordKind,
        records: &[ExportedRecord],
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

/// What a migration did with one kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindReport {
    pub kind: RecordKind,
    pub outcome: ImportOutcome,
    /// Source records the target lacks after the copy (verified by key; 0 on success).
    pub missing: u64,
    /// Found by the verification and copied then: records the source gained behind a resumed
    /// copy's checkpoint (or while the copy ran). Included in `outcome.copied`.
    pub caught_up: u64,
}

/// What a migration did, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub kinds: Vec<KindReport>,
    /// True when an earlier, interrupted run was resumed.
    pub resumed: bool,
    /// True when an earlier run of the same source had finished (this run only added).
    pub again: bool,
    pub source_id: String,
}

/// Why a migration did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The target holds data that is not this source's earlier copy: nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The copy ran but the target lacks source records.
    #[error("{0}")]
    Incomplete(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records copied per page (and per checkpoint).
pub const PAGE_SIZE: u32 = 1_000;

/// Copies into `target` every record of `source` it lacks, then checks by key that the target
/// holds every source record. Refuses a target holding data that is not an earlier copy of this
/// same source. `progress` is told each page; `now` gives the marker's times.
pub async fn migrate(
    source: &dyn MigrationSource,
    target: &dyn MigrationTarget,
    now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    progress: &(dyn Fn(RecordKind, u64) + Send + Sync),
) -> Result<MigrationReport, MigrationError> {
    let source_id = source.source_id().await?;
    let mut report = MigrationReport {
        source_id: source_id.clone(),
        ..MigrationReport::default()
    };
    match target.migration_marker().await? {
        Some(marker) if marker.source_id == source_id => {
            report.again = marker.finished_at.is_some();
        }
        Some(marker) => {
            return Err(MigrationError::Refused(format!(
            "{} holds a copy of another store (source {}, not {source_id}); nothing was written",
            target.describe(),
            marker.source_id
        )))
        }
        None => {
            let held = target.held_records().await?;
            if !held.is_empty() {
                let list = held
                    .iter()
                    .map(|(kind, n)| format!("{} {n}", kind.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(MigrationError::Refused(format!(
                    "{} already holds records that were not copied from this store ({list}); \
                     nothing was written: migrate into an empty database",
                    target.describe()
                )));
            }
        }
    }
    target.begin_migration(&source_id, now()).await?;
    for kind in RecordKind::ORDER {
        let mut after = target.migration_checkpoint(*kind).await?;
        report.resumed |= after.is_some();
        let mut outcome = ImportOutcome::default();
        loop {
            let page = source.export_page(*kind, after.clone(), PAGE_SIZE).await?;
            let Some(last) = page.last() else { break };
            let cursor = last.cursor.clone();
            outcome.add(target.import_records(*kind, page).await?);
            target
                .save_migration_checkpoint(*kind, Some(cursor.clone()))
                .await?;
            crate::failpoint::hit("migration.after_page")
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            progress(*kind, outcome.copied);
            after = Some(cursor);
        }
        // A checkpoint only says where the copy stopped, not that the source gained nothing
        // behind it: what the target lacks of this kind is copied now (still only added), before
        // the kinds that refer to it.
        let mut caught_up = 0;
        let mut after = None;
        loop {
            let page = source.export_page(*kind, after, PAGE_SIZE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.cursor.clone());
            if target.count_missing(*kind, &page).await? == 0 {
                continue;
            }
            let late = target.import_records(*kind, page).await?;
            caught_up += late.copied;
            outcome.copied += late.copied;
        }
        report.kinds.push(KindReport {
            kind: *kind,
            outcome,
            missing: 0,
            caught_up,
        });
    }
    // Verify: every source record's key is in the target (or was removed there after a copy),
    // counted again after every kind was caught up (the source may have changed meanwhile).
    for entry in &mut report.kinds {
        let mut after = None;
        loop {
            let page = source.export_page(entry.kind, after, PAGE_SIZE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.cursor.clone());
            entry.missing += target.count_missing(entry.kind, &page).await?;
        }
    }
    let missing: Vec<String> = report
        .kinds
        .iter()
        .filter(|k| k.missing > 0)
        .map(|k| format!("{}: {} missing", k.kind.as_str(), k.missing))
        .collect();
    if !missing.is_empty() {
        return Err(MigrationError::Incomplete(format!(
            "the copy is incomplete: {} lacks source records ({}); run settle migrate again",
            target.describe(),
            missing.join(", ")
        )));
    }
    // Finished: a later run starts from the beginning again (and only adds what is new).
    for kind in RecordKind::ORDER {
        target.save_migration_checkpoint(*kind, None).await?;
    }
    target.finish_migration(now()).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// One record of each kind.
    struct Source;

    #[async_trait]
    impl MigrationSource for Source {
        async fn source_id(&self) -> Result<String, StoreError> {
            Ok("source-a".into())
        }

        async fn export_page(
            &self,
            _kind: RecordKind,
            after: Option<String>,
            _limit: u32,
        ) -> Result<Vec<ExportedRecord>, StoreError> {
            Ok(match after {
                None => vec![ExportedRecord {
                    cursor: "1".into(),
                    value: Value::Null,
                }],
                Some(_) => Vec::new(),
            })
        }
    }

    /// A target that keeps records of every kind but `loses`, and remembers its marker.
    #[derive(Default)]
    struct Target {
        loses: Option<RecordKind>,
        held: Vec<(RecordKind, u64)>,
        marker: Mutex<Option<MigrationMarker>>,
    }

    #[async_trait]
    impl MigrationTarget for Target {
        fn describe(&self) -> String {
            "test target".into()
        }

        async fn migration_marker(&self) -> Result<Option<MigrationMarker>, StoreError> {
            Ok(self.marker.lock().unwrap().clone())
        }

        async fn held_records(&self) -> Result<Vec<(RecordKind, u64)>, StoreError> {
            Ok(self.held.clone())
        }

        async fn begin_migration(
            &self,
            source_id: &str,
            now: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            *self.marker.lock().unwrap() = Some(MigrationMarker {
                source_id: source_id.into(),
                started_at: now,
                finished_at: None,
            });
            Ok(())
        }

        async fn finish_migration(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
            if let Some(marker) = self.marker.lock().unwrap().as_mut() {
                marker.finished_at = Some(now);
            }
            Ok(())
        }

        async fn import_records(
            &self,
            _kind: RecordKind,
            records: Vec<ExportedRecord>,
        ) -> Result<ImportOutcome, StoreError> {
            Ok(ImportOutcome {
                copied: records.len() as u64,
                ..ImportOutcome::default()
            })
        }

        async fn count_missing(
            &self,
            kind: RecordKind,
            records: &[ExportedRecord],
        ) -> Result<u64, StoreError> {
            Ok(if Some(kind) == self.loses {
                records.len() as u64
            } else {
                0
            })
        }

        async fn migration_checkpoint(
            &self,
            _kind: RecordKind,
        ) -> Result<Option<String>, StoreError> {
            Ok(None)
        }

        async fn save_migration_checkpoint(
            &self,
            _kind: RecordKind,
            _cursor: Option<String>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
    }

    async fn run(target: &Target) -> Result<MigrationReport, MigrationError> {
        migrate(&Source, target, &Utc::now, &|_, _| {}).await
    }

    #[tokio::test]
    async fn a_copy_missing_records_fails_naming_the_kind_and_is_not_marked_finished() {
        let target = Target {
            loses: Some(RecordKind::ApiTokens),
            ..Target::default()
        };
        let error = run(&target).await.unwrap_err();
        assert!(
            matches!(&error, MigrationError::Incomplete(m) if m.contains("api_tokens: 1 missing")),
            "{error}"
        );
        assert!(target
            .marker
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .finished_at
            .is_none());
    }

    #[tokio::test]
    async fn only_an_empty_target_or_the_same_sources_copy_is_accepted() {
        let target = Target::default();
        let first = run(&target).await.unwrap();
        assert!(!first.again && first.kinds.iter().all(|k| k.outcome.copied == 1));
        assert!(run(&target).await.unwrap().again);

        let other = Target::default();
        *other.marker.lock().unwrap() = Some(MigrationMarker {
            source_id: "source-b".into(),
            started_at: Utc::now(),
            finished_at: None,
        });
        assert!(
            matches!(run(&other).await, Err(MigrationError::Refused(m)) if m.contains("source-b"))
        );

        let used = Target {
            held: vec![(RecordKind::Transactions, 4)],
            ..Target::default()
        };
        let refused = run(&used).await.unwrap_err();
        assert!(
            matches!(&refused, MigrationError::Refused(m) if m.contains("test target") && m.contains("transactions 4")),
            "{refused}"
        );
        assert!(used.marker.lock().unwrap().is_none(), "nothing was written");
    }
}
