//! `settle migrate` for reconciliation: statements with their entries, then decisions as they are
//! (state included, claims restored with those holding items), through the reconciliation port.
//!
//! Copied after every record kind and verified with them, by the same rule: the target only gains
//! what it lacks (a statement or decision it holds is kept as it is), and the final comparison
//! counts and digests each part on both sides. The parts are read whole per statement kind (the
//! port has no paging): a limit for stores of many millions of entries, named in the README.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{feed, ContentDigest, ImportOutcome, KindVerification, MigrationError};
use crate::store::reconciliation::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome as StatementOutcome,
    ReconciliationStore, StatementImport, StoredEntry,
};
use crate::store::StoreError;
use settle_domain::reconcile::StatementKind;

/// The parts of reconciliation copied, in order (a statement's entries travel with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationPart {
    Statements,
    Entries,
    Decisions,
}

impl ReconciliationPart {
    pub const ORDER: [ReconciliationPart; 3] = [
        ReconciliationPart::Statements,
        ReconciliationPart::Entries,
        ReconciliationPart::Decisions,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ReconciliationPart::Statements => "recon_statements",
            ReconciliationPart::Entries => "recon_entries",
            ReconciliationPart::Decisions => "recon_decisions",
        }
    }
}

/// What the migration did with one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartReport {
    pub part: ReconciliationPart,
    pub outcome: ImportOutcome,
    /// The final comparison, once everything was copied.
    pub verified: KindVerification,
}

/// Statements stored per call (each call is all-or-nothing on the target).
const STATEMENT_BATCH: usize = 100;
/// Decisions restored per call.
const DECISION_BATCH: usize = 1_000;

fn every_entry(kind: StatementKind) -> EntryFilter {
    EntryFilter {
        kind,
        booked_from: None,
        booked_to: None,
    }
}

/// Copies into `target` every statement (with its entries) and decision of `source` it lacks.
/// A decision whose item the target has decided otherwise is not copied, and fails the copy
/// (`Incomplete`): the target's own decision is kept, and a person chooses.
pub async fn copy(
    source: &dyn ReconciliationStore,
    target: &dyn ReconciliationStore,
) -> Result<Vec<PartReport>, MigrationError> {
    let mut statements = ImportOutcome::default();
    let mut entries = ImportOutcome::default();
    for kind in StatementKind::ALL.iter().copied() {
        let held: BTreeMap<String, _> = target
            .statements(Some(kind))
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut entries_of: BTreeMap<String, Vec<StoredEntry>> = BTreeMap::new();
        for entry in source.statement_entries(&every_entry(kind)).await? {
            entries_of
                .entry(entry.statement_id.clone())
                .or_default()
                .push(entry);
        }
        let mut lacking = Vec::new();
        for statement in source.statements(Some(kind)).await? {
            let own = entries_of.remove(&statement.id).unwrap_or_default();
            match held.get(&statement.id) {
                Some(stored) => {
                    statements.present += 1;
                    statements.differing += u64::from(stored != &statement);
                    entries.present += own.len() as u64;
                }
                None => lacking.push(StatementImport {
                    statement,
                    entries: own,
                }),
            }
        }
        while !lacking.is_empty() {
            let rest = lacking.split_off(lacking.len().min(STATEMENT_BATCH));
            let batch = std::mem::replace(&mut lacking, rest);
            let sizes: Vec<u64> = batch.iter().map(|i| i.entries.len() as u64).collect();
            for (outcome, size) in target.import_statements(batch).await?.iter().zip(sizes) {
                match outcome {
                    StatementOutcome::Imported => {
                        statements.copied += 1;
                        entries.copied += size;
                    }
                    StatementOutcome::AlreadyImported { .. } => {
                        statements.present += 1;
                        entries.present += size;
                    }
                }
            }
        }
    }
    let mut decisions = ImportOutcome::default();
    let held: BTreeMap<String, _> = target
        .decisions(&DecisionFilter::default())
        .await?
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect();
    let mut lacking = Vec::new();
    for decision in source.decisions(&DecisionFilter::default()).await? {
        match held.get(&decision.id) {
            Some(stored) => {
                decisions.present += 1;
                decisions.differing += u64::from(stored != &decision);
            }
            None => lacking.push(decision),
        }
    }
    while !lacking.is_empty() {
        let rest = lacking.split_off(lacking.len().min(DECISION_BATCH));
        let batch = std::mem::replace(&mut lacking, rest);
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        for (write, id) in target.restore_decisions(batch).await?.into_iter().zip(ids) {
            match write {
                DecisionWrite::Recorded => decisions.copied += 1,
                DecisionWrite::AlreadyRecorded => decisions.present += 1,
                DecisionWrite::ItemTaken { item, by } => {
                    return Err(MigrationError::Incomplete(format!(
                        "reconciliation decision {id} was not copied: its item {item} is decided \
                         on the target by {by} (kept); the migration is not marked finished: \
                         unmatch one of them, then run settle migrate again"
                    )))
                }
                DecisionWrite::TargetNotOpen { target } => {
                    return Err(MigrationError::Incomplete(format!(
                        "reconciliation decision {id} was not copied (its target {target} is not \
                         open on the target store)"
                    )))
                }
            }
        }
    }
    Ok(vec![
        part(ReconciliationPart::Statements, statements),
        part(ReconciliationPart::Entries, entries),
        part(ReconciliationPart::Decisions, decisions),
    ])
}

fn part(part: ReconciliationPart, outcome: ImportOutcome) -> PartReport {
    PartReport {
        part,
        outcome,
        verified: KindVerification::default(),
    }
}

/// Compares every source record of `part` with the target's under the same id: counts, and a
/// digest of each side over the records' stored form.
pub async fn verify(
    source: &dyn ReconciliationStore,
    target: &dyn ReconciliationStore,
    part: ReconciliationPart,
) -> Result<KindVerification, StoreError> {
    match part {
        ReconciliationPart::Statements => compare(
            keyed(source.statements(None).await?, |s| s.id.clone()),
            keyed(target.statements(None).await?, |s| s.id.clone()),
        ),
        ReconciliationPart::Entries => {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for kind in StatementKind::ALL.iter().copied() {
                ours.extend(source.statement_entries(&every_entry(kind)).await?);
                theirs.extend(target.statement_entries(&every_entry(kind)).await?);
            }
            compare(
                keyed(ours, |e| e.id.clone()),
                keyed(theirs, |e| e.id.clone()),
            )
        }
        ReconciliationPart::Decisions => compare(
            keyed(source.decisions(&DecisionFilter::default()).await?, |d| {
                d.id.clone()
            }),
            keyed(target.decisions(&DecisionFilter::default()).await?, |d| {
                d.id.clone()
            }),
        ),
    }
}

fn keyed<T>(records: Vec<T>, key: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    records.into_iter().map(|r| (key(&r), r)).collect()
}

fn content<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Backend(format!("cannot encode: {e}")))
}

/// The source's records in key order against the target's held under the same keys.
fn compare<T: Serialize>(
    source: BTreeMap<String, T>,
    target: BTreeMap<String, T>,
) -> Result<KindVerification, StoreError> {
    let mut verified = KindVerification::default();
    let mut source_digest = Sha256::new();
    let mut target_digest = Sha256::new();
    for (key, record) in &source {
        let ours = content(record)?;
        verified.source += 1;
        feed(&mut source_digest, key, &ours);
        match target.get(key) {
            Some(held) => {
                let theirs = content(held)?;
                verified.held += 1;
                verified.differing += u64::from(theirs != ours);
                feed(&mut target_digest, key, &theirs);
            }
            None => verified.missing += 1,
        }
    }
    verified.source_digest = ContentDigest(source_digest.finalize().into());
    verified.target_digest = ContentDigest(target_digest.finalize().into());
    Ok(verified)
}
