//! Copying a whole store into another (`settle migrate`): every kind of record, page by page, in a
//! neutral JSON form. A migration only adds what the target lacks (never overwrites a key it holds),
//! refuses a target holding another store's data, resumes an interrupted copy from its last
//! checkpoint and verifies at the end, per kind, the target's content against the source's
//! (counts and a SHA-256 digest of each side).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::reconciliation::ReconciliationStore;
use super::StoreError;

pub mod reconciliation;

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

    /// Its reconciliation records, copied after every kind (`reconciliation::copy`); none when
    /// the store keeps none.
    fn reconciliation(&self) -> Option<&dyn ReconciliationStore> {
        None
    }

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

    /// Where copied reconciliation records go; none when the target keeps none.
    fn reconciliation(&self) -> Option<&dyn ReconciliationStore> {
        None
    }

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

    /// Compares `records` with what the target holds under their keys: each record's content in
    /// the target's form (bookkeeping fields dropped) and the target's, restricted to the same
    /// fields, so that equal content gives equal bytes.
    async fn verify_page(
        &self,
        kind: RecordKind,
        records: &[ExportedRecord],
    ) -> Result<VerifyPage, StoreError>;

    /// Where an interrupted copy of `kind` stopped, if it did.
    async fn migration_checkpoint(&self, kind: RecordKind) -> Result<Option<String>, StoreError>;

    /// Records progress; `None` clears it (the copy of every kind finished).
    async fn save_migration_checkpoint(
        &self,
        kind: RecordKind,
        cursor: Option<String>,
    ) -> Result<(), StoreError>;
}

/// One source record compared with the target's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The record's key (its cursor).
    pub key: String,
    /// The record's canonical content as the target keeps it, bookkeeping fields dropped.
    pub source: Vec<u8>,
    /// The target's record under the same key, restricted to the same fields in the same
    /// canonical form; `None` when the target lacks the key.
    pub target: Option<Vec<u8>>,
    /// Held, and different from the source by the target's rule (the rule that counts
    /// `ImportOutcome::differing`).
    pub differs: bool,
}

/// The comparison of one page of source records with the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyPage {
    /// The page's records in its order, except those in `removed`.
    pub records: Vec<VerifiedRecord>,
    /// Records copied by an earlier run and removed on the target since: left out of both sides.
    pub removed: u64,
}

/// A SHA-256 digest over one side of a kind: for each record in cursor order, its key and its
/// canonical content, each preceded by its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// The first 16 hex digits, for messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl std::fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

fn feed(hasher: &mut Sha256, key: &str, content: &[u8]) {
    hasher.update((key.len() as u64).to_be_bytes());
    hasher.update(key.as_bytes());
    hasher.update((content.len() as u64).to_be_bytes());
    hasher.update(content);
}

/// The final comparison of one kind: the source's records (less those removed on the target
/// after a copy) against what the target holds under their keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindVerification {
    /// Source records compared.
    pub source: u64,
    /// Of those, how many the target holds by key.
    pub held: u64,
    /// Of those, how many the target lacks.
    pub missing: u64,
    /// Held by key, but the content differs.
    pub differing: u64,
    /// Copied by an earlier run and removed on the target since: in neither count nor digest.
    pub removed: u64,
    /// Over the source's records compared.
    pub source_digest: ContentDigest,
    /// Over the target's records held under those keys.
    pub target_digest: ContentDigest,
}

impl KindVerification {
    /// The target holds exactly the source's content.
    pub fn equal(&self) -> bool {
        self.missing == 0 && !self.changed()
    }

    /// Records the target holds differ from the source's (by the target's rule, or by digest
    /// when nothing is missing).
    pub fn changed(&self) -> bool {
        self.differing > 0 || (self.missing == 0 && self.source_digest != self.target_digest)
    }

    /// `source N, target N, missing N, differing N, removed N, digest source X = target X`
    /// (`!=` when the digests differ), with 16-digit digests.
    pub fn summary(&self) -> String {
        format!(
            "source {}, target {}, missing {}, differing {}, removed {}, digest source {} {} target {}",
            self.source,
            self.held,
            self.missing,
            self.differing,
            self.removed,
            self.source_digest.short(),
            if self.source_digest == self.target_digest { "=" } else { "!=" },
            self.target_digest.short()
        )
    }
}

/// What a migration did with one kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindReport {
    pub kind: RecordKind,
    pub outcome: ImportOutcome,
    /// The final comparison of content, once every kind was copied and caught up.
    pub verified: KindVerification,
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
    /// Reconciliation's parts, when both stores keep reconciliation records.
    pub reconciliation: Vec<reconciliation::PartReport>,
}

/// Why a migration did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The target holds data that is not this source's earlier copy: nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The copy ran but the target lacks source records, or (on a first migration) holds some
    /// with other content: the migration is not marked finished.
    #[error("{0}")]
    Incomplete(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records copied per page (and per checkpoint).
pub const PAGE_SIZE: u32 = 1_000;

/// Copies into `target` every record of `source` it lacks, then compares, per kind, the source's
/// records with the target's (`verify`). Refuses a target holding data that is not an earlier copy
/// of this same source. `progress` is told each page; `now` gives the marker's times.
///
/// The rule: a source record the target lacks always fails (`Incomplete`). On a first migration
/// (no earlier run of this source finished) a record the target holds with other content fails
/// too, as does any difference of counts or digests; on a later run such records are the target's
/// own changes since the copy (it only adds, never overwrites) and are reported, not a failure.
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
            verified: KindVerification::default(),
            caught_up,
        });
    }
    let stores = source.reconciliation().zip(target.reconciliation());
    if let Some((from, to)) = stores {
        report.reconciliation = reconciliation::copy(from, to).await?;
    }
    // Verify the content, after every kind was caught up (the source may have changed meanwhile).
    for entry in &mut report.kinds {
        entry.verified = verify(source, target, entry.kind).await?;
    }
    if let Some((from, to)) = stores {
        for entry in &mut report.reconciliation {
            entry.verified = reconciliation::verify(from, to, entry.part).await?;
        }
    }
    let verified: Vec<(&str, KindVerification)> = report
        .kinds
        .iter()
        .map(|k| (k.kind.as_str(), k.verified))
        .chain(
            report
                .reconciliation
                .iter()
                .map(|p| (p.part.as_str(), p.verified)),
        )
        .collect();
    let missing = verified.iter().any(|(_, v)| v.missing > 0);
    let changed = !report.again && verified.iter().any(|(_, v)| v.changed());
    let failing: Vec<String> = verified
        .iter()
        .filter(|(_, v)| v.missing > 0 || (!report.again && v.changed()))
        .map(|(name, v)| format!("\n  {name}: {}", v.summary()))
        .collect();
    if !failing.is_empty() {
        let mut why = Vec::new();
        if missing {
            why.push("it lacks source records: run settle migrate again");
        }
        if changed {
            why.push(
                "on this first migration it holds copied records with other content (changed \
                 there since their copy; a migration never overwrites): migrate into an empty \
                 database",
            );
        }
        return Err(MigrationError::Incomplete(format!(
            "the copy does not match the source in {}; the migration is not marked finished:{}\n{}",
            target.describe(),
            failing.concat(),
            why.join("\n")
        )));
    }
    // Finished: a later run starts from the beginning again (and only adds what is new).
    for kind in RecordKind::ORDER {
        target.save_migration_checkpoint(*kind, None).await?;
    }
    target.finish_migration(now()).await?;
    Ok(report)
}

/// Compares every source record of `kind` with the target's, page by page in cursor order.
async fn verify(
    source: &dyn MigrationSource,
    target: &dyn MigrationTarget,
    kind: RecordKind,
) -> Result<KindVerification, StoreError> {
    let mut verified = KindVerification::default();
    let mut source_digest = Sha256::new();
    let mut target_digest = Sha256::new();
    let mut after = None;
    loop {
        let page = source.export_page(kind, after, PAGE_SIZE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.cursor.clone());
        let checked = target.verify_page(kind, &page).await?;
        verified.removed += checked.removed;
        for record in checked.records {
            verified.source += 1;
            feed(&mut source_digest, &record.key, &record.source);
            match &record.target {
                Some(held) => {
                    verified.held += 1;
                    feed(&mut target_digest, &record.key, held);
                    if record.differs {
                        verified.differing += 1;
                    }
                }
                None => verified.missing += 1,
            }
        }
    }
    verified.source_digest = ContentDigest(source_digest.finalize().into());
    verified.target_digest = ContentDigest(target_digest.finalize().into());
    Ok(verified)
}

/// The neutral forms of records that carry more than their domain type.
pub mod forms {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::{Deserialize, Serialize};

    use crate::model::idempotency::StoredResponse;
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

    /// A target that keeps records of every kind but `loses`, holds those of `changes` with
    /// other content, and remembers its marker.
    #[derive(Default)]
    struct Target {
        loses: Option<RecordKind>,
        changes: Mutex<Option<RecordKind>>,
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

        async fn verify_page(
            &self,
            kind: RecordKind,
            records: &[ExportedRecord],
        ) -> Result<VerifyPage, StoreError> {
            let changed = *self.changes.lock().unwrap() == Some(kind);
            Ok(VerifyPage {
                records: records
                    .iter()
                    .map(|r| VerifiedRecord {
                        key: r.cursor.clone(),
                        source: r.value.to_string().into_bytes(),
                        target: (Some(kind) != self.loses).then(|| {
                            if changed {
                                b"changed".to_vec()
                            } else {
                                r.value.to_string().into_bytes()
                            }
                        }),
                        differs: changed,
                    })
                    .collect(),
                removed: 0,
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
            matches!(&error, MigrationError::Incomplete(m)
                if m.contains("api_tokens: source 1, target 0, missing 1, differing 0")
                    && m.contains("run settle migrate again")
                    && !m.contains("transactions")),
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

    /// Equal content gives equal digests; a record held with other content fails a first
    /// migration (naming the kind, its counts and both digests) but is reported by a later one.
    #[tokio::test]
    async fn content_differing_fails_a_first_migration_only() {
        let target = Target::default();
        let first = run(&target).await.unwrap();
        let settlements = first.kinds[0].verified;
        assert!(settlements.equal(), "{settlements:?}");
        assert_eq!((settlements.source, settlements.held), (1, 1));
        assert_ne!(settlements.source_digest, ContentDigest::default());
        assert!(settlements.summary().ends_with(&format!(
            "digest source {0} = target {0}",
            settlements.source_digest.short()
        )));

        *target.changes.lock().unwrap() = Some(RecordKind::Payouts);
        let again = run(&target).await.unwrap();
        assert!(again.again);
        let payouts = again.kinds[3].verified;
        assert_eq!((payouts.differing, payouts.missing), (1, 0));
        assert_ne!(payouts.source_digest, payouts.target_digest);
        assert_eq!(payouts.source_digest, first.kinds[3].verified.source_digest);

        let fresh = Target::default();
        *fresh.changes.lock().unwrap() = Some(RecordKind::Payouts);
        let error = run(&fresh).await.unwrap_err();
        let expected = format!(
            "payouts: source 1, target 1, missing 0, differing 1, removed 0, digest source {} != target {}",
            payouts.source_digest.short(),
            payouts.target_digest.short()
        );
        assert!(
            matches!(&error, MigrationError::Incomplete(m)
                if m.contains(&expected) && m.contains("empty database") && !m.contains("settlements")),
            "{error}"
        );
        assert!(fresh
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
