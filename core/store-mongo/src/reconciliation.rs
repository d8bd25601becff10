//! Reconciliation in MongoDB, with the semantics of the SQLite adapter and no multi-document
//! transaction: an import document commits a file, and decisions become visible only when settled.
//!
//! Import: the file's entries are written first (upserts by `_id`, invisible on their own), then one
//! `recon_imports` document holding the file's new statements: that single insert is the commit
//! point, so a crash leaves either the whole file or nothing visible (orphan entries of a crashed
//! import are overwritten when the file is imported again). Its `_id` is a hash of the statement
//! ids, so two concurrent imports of one file store it once.
//!
//! Decisions: each is inserted with `settling: true` (invisible to reads), then its claims
//! (`recon_claims`, `_id` = kind and item, so each item has one) or its compare-and-set on the
//! target (which records `changed_by`), then `settling` is cleared. A claim found taken rolls the
//! decision back. A retry of the same decision finishes one left settling at once (its own claims
//! and target change count as done); otherwise the next writer finishes it after `SETTLING_SECONDS`: an acting decision whose target it changed is completed, anything else is
//! rolled back (its claims released, its document deleted).

use async_trait::async_trait;
use chrono::{Duration, Utc};
use mongodb::bson::{doc, Bson, Document};
use sha2::{Digest, Sha256};

use settle_core::reconcile::{Decision, DecisionAction, DecisionState, StatementKind};
use settle_core::store::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome, ReconciliationStore,
    StatementImport, StoreError, StoredEntry, StoredStatement,
};

use super::collections::{RECON_CLAIMS, RECON_DECISIONS, RECON_ENTRIES, RECON_IMPORTS};
use super::documents::{date_text, instant};
use super::{backend, is_duplicate_key, MongoStore};

/// How long a decision may stay half-written before another writer finishes it.
const SETTLING_SECONDS: i64 = 60;

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(
    document: &Document,
    what: &str,
) -> Result<T, StoreError> {
    let text = document
        .get_str("body")
        .map_err(|e| StoreError::Corrupt(format!("{what}.body: {e}")))?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}.body: {e}")))
}

fn decision_of(document: &Document) -> Result<Decision, StoreError> {
    let mut decision: Decision = from_json(document, RECON_DECISIONS)?;
    decision.state = document
        .get_str("state")
        .map_err(|e| StoreError::Corrupt(format!("{RECON_DECISIONS}.state: {e}")))?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{RECON_DECISIONS}.state: {e}")))?;
    Ok(decision)
}

fn claim_id(kind: StatementKind, item: &str) -> String {
    format!("{kind}|{item}")
}

/// The state an acting decision moves its target to, from the states it may act on.
fn transition(
    action: DecisionAction,
    target: &Decision,
) -> Option<(Vec<&'static str>, DecisionState)> {
    if !target.action.claims_items() {
        return None;
    }
    match action {
        DecisionAction::Unmatch => Some((
            vec![
                DecisionState::InForce.as_str(),
                DecisionState::AwaitingApproval.as_str(),
            ],
            DecisionState::Reversed,
        )),
        DecisionAction::Approve if target.action == DecisionAction::WriteOff => Some((
            vec![DecisionState::AwaitingApproval.as_str()],
            DecisionState::InForce,
        )),
        DecisionAction::Reject if target.action == DecisionAction::WriteOff => Some((
            vec![DecisionState::AwaitingApproval.as_str()],
            DecisionState::Rejected,
        )),
        _ => None,
    }
}

/// A decision as first written: settling (invisible to reads) until its claims or its target's
/// change are made.
fn settling_document(d: &Decision) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": &d.id,
        "kind": d.kind.as_str(),
        "action": d.action.as_str(),
        "state": d.state.as_str(),
        "target": d.target.clone().map(Bson::String).unwrap_or(Bson::Null),
        "decided_at": instant(d.decided_at),
        "written_at": instant(Utc::now()),
        "settling": true,
        "body": to_json(d)?,
    })
}

impl MongoStore {
    async fn decision_document(&self, id: &str) -> Result<Option<Document>, StoreError> {
        self.collection(RECON_DECISIONS)
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)
    }

    async fn release_claims(&self, decision_id: &str) -> Result<(), StoreError> {
        self.collection(RECON_CLAIMS)
            .delete_many(doc! { "decision_id": decision_id })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn settled(&self, id: &str) -> Result<(), StoreError> {
        self.collection(RECON_DECISIONS)
            .update_one(doc! { "_id": id }, doc! { "$set": { "settling": false } })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn roll_back(&self, id: &str) -> Result<(), StoreError> {
        self.release_claims(id).await?;
        self.collection(RECON_DECISIONS)
            .delete_one(doc! { "_id": id, "settling": true })
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Finishes decisions a crashed writer left settling (see the module comment).
    async fn finish_abandoned(&self) -> Result<(), StoreError> {
        let before = instant(Utc::now() - Duration::seconds(SETTLING_SECONDS));
        let abandoned = self
            .find_all(
                RECON_DECISIONS,
                doc! { "settling": true, "written_at": { "$lt": before } },
                doc! { "_id": 1 },
                None,
                None,
            )
            .await?;
        for document in abandoned {
            let decision = decision_of(&document)?;
            let changed_target = match &decision.target {
                Some(target) if decision.action.acts_on_decision() => self
                    .decision_document(target)
                    .await?
                    .is_some_and(|t| t.get_str("changed_by").ok() == Some(decision.id.as_str())),
                _ => false,
            };
            if changed_target {
                let target = decision.target.clone().unwrap_or_default();
                if decision.action != DecisionAction::Approve {
                    self.release_claims(&target).await?;
                }
                self.settled(&decision.id).await?;
            } else {
                self.roll_back(&decision.id).await?;
            }
        }
        Ok(())
    }

    /// Claims the items of a decision written settling; when one is claimed by another decision,
    /// rolls this one back and names the holder. A claim made by an earlier attempt of this same
    /// decision counts as made.
    async fn claim_items(&self, d: &Decision) -> Result<Option<DecisionWrite>, StoreError> {
        for key in d.item_keys() {
            let claim = doc! { "_id": claim_id(d.kind, &key), "decision_id": &d.id };
            if let Err(error) = self.collection(RECON_CLAIMS).insert_one(claim).await {
                if !is_duplicate_key(&error) {
                    return Err(backend(error));
                }
                let by = self
                    .collection(RECON_CLAIMS)
                    .find_one(doc! { "_id": claim_id(d.kind, &key) })
                    .await
                    .map_err(backend)?
                    .and_then(|c| c.get_str("decision_id").ok().map(str::to_string))
                    .unwrap_or_default();
                if by == d.id {
                    continue;
                }
                self.roll_back(&d.id).await?;
                return Ok(Some(DecisionWrite::ItemTaken { item: key, by }));
            }
        }
        Ok(None)
    }

    /// Writes the decision settling; false when it is stored and settled already. Stored but
    /// still settling means an earlier attempt of this same decision stopped midway: this one
    /// finishes it (its own claims and target change are kept).
    async fn insert_settling(&self, d: &Decision) -> Result<bool, StoreError> {
        let document = settling_document(d)?;
        if let Err(error) = self.collection(RECON_DECISIONS).insert_one(document).await {
            if !is_duplicate_key(&error) {
                return Err(backend(error));
            }
            return Ok(self
                .decision_document(&d.id)
                .await?
                .is_some_and(|stored| stored.get_bool("settling").ok() == Some(true)));
        }
        Ok(true)
    }

    async fn record_one(&self, d: &Decision) -> Result<DecisionWrite, StoreError> {
        if !self.insert_settling(d).await? {
            return Ok(DecisionWrite::AlreadyRecorded);
        }
        if d.action.claims_items() {
            if let Some(taken) = self.claim_items(d).await? {
                return Ok(taken);
            }
            self.settled(&d.id).await?;
            return Ok(DecisionWrite::Recorded);
        }
        if !d.action.acts_on_decision() {
            self.settled(&d.id).await?;
            return Ok(DecisionWrite::Recorded);
        }
        let target_id = d.target.clone().unwrap_or_default();
        let target = match self.decision_document(&target_id).await? {
            Some(t) if t.get_bool("settling").ok() == Some(false) => Some(decision_of(&t)?),
            _ => None,
        };
        let change = target
            .as_ref()
            .filter(|t| t.kind == d.kind)
            .and_then(|t| transition(d.action, t));
        let Some((from, to)) = change else {
            self.roll_back(&d.id).await?;
            return Ok(DecisionWrite::TargetNotOpen { target: target_id });
        };
        let changed = self
            .collection(RECON_DECISIONS)
            .update_one(
                doc! { "_id": &target_id, "state": { "$in": from } },
                doc! { "$set": { "state": to.as_str(), "changed_by": &d.id } },
            )
            .await
            .map_err(backend)?;
        let already_mine = changed.modified_count == 0
            && self
                .decision_document(&target_id)
                .await?
                .is_some_and(|t| t.get_str("changed_by").ok() == Some(d.id.as_str()));
        if changed.modified_count == 0 && !already_mine {
            self.roll_back(&d.id).await?;
            return Ok(DecisionWrite::TargetNotOpen { target: target_id });
        }
        if to != DecisionState::InForce {
            self.release_claims(&target_id).await?;
        }
        self.settled(&d.id).await?;
        Ok(DecisionWrite::Recorded)
    }

    /// One decision copied from another store, as it is there (see the port): written settling
    /// like a new one, with the claims of one that holds its items, then settled. A crash midway
    /// leaves it settling, so the next writer rolls it back and a second copy writes it again.
    async fn restore_one(&self, d: &Decision) -> Result<DecisionWrite, StoreError> {
        if !self.insert_settling(d).await? {
            return Ok(DecisionWrite::AlreadyRecorded);
        }
        if d.holds_items() {
            if let Some(taken) = self.claim_items(d).await? {
                return Ok(taken);
            }
        }
        self.settled(&d.id).await?;
        Ok(DecisionWrite::Recorded)
    }

    /// Writes decisions one by one, after finishing those a crashed writer left settling: as new
    /// ones (`record_one`), or as copied from another store (`restore_one`).
    async fn write_decisions(
        &self,
        decisions: &[Decision],
        restored: bool,
    ) -> Result<Vec<DecisionWrite>, StoreError> {
        self.finish_abandoned().await?;
        let mut writes = Vec::with_capacity(decisions.len());
        for d in decisions {
            writes.push(if restored {
                self.restore_one(d).await?
            } else {
                self.record_one(d).await?
            });
        }
        Ok(writes)
    }

    /// The committed statements, each once (the earliest import of an identity wins).
    async fn committed_statements(&self) -> Result<Vec<StoredStatement>, StoreError> {
        let imports = self
            .find_all(
                RECON_IMPORTS,
                doc! {},
                doc! { "imported_at": 1, "_id": 1 },
                None,
                None,
            )
            .await?;
        let mut seen = std::collections::BTreeMap::new();
        for import in imports {
            let statements: Vec<StoredStatement> = from_json(&import, RECON_IMPORTS)?;
            for s in statements {
                seen.entry(s.id.clone()).or_insert(s);
            }
        }
        Ok(seen.into_values().collect())
    }
}

#[async_trait]
impl ReconciliationStore for MongoStore {
    async fn import_statements(
        &self,
        imports: Vec<StatementImport>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let stored: std::collections::BTreeMap<String, StoredStatement> = self
            .committed_statements()
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut outcomes = Vec::with_capacity(imports.len());
        let mut new = Vec::new();
        for import in &imports {
            match stored.get(&import.statement.id) {
                Some(earlier) => outcomes.push(ImportOutcome::AlreadyImported {
                    imported_at: earlier.imported_at,
                    imported_by: earlier.imported_by.clone(),
                }),
                None => {
                    outcomes.push(ImportOutcome::Imported);
                    new.push(import);
                }
            }
        }
        if new.is_empty() {
            return Ok(outcomes);
        }
        for import in &new {
            for e in &import.entries {
                let document = doc! {
                    "_id": &e.id,
                    "statement_id": &e.statement_id,
                    "kind": e.kind.as_str(),
                    "booking_date": date_text(e.entry.booking_date),
                    "body": to_json(e)?,
                };
                self.collection(RECON_ENTRIES)
                    .replace_one(doc! { "_id": &e.id }, document)
                    .upsert(true)
                    .await
                    .map_err(backend)?;
            }
        }
        super::point("reconciliation.import.before_commit").await?;
        let statements: Vec<&StoredStatement> = new.iter().map(|i| &i.statement).collect();
        let mut digest = Sha256::new();
        for s in &statements {
            digest.update(s.id.as_bytes());
            digest.update([0x1e]);
        }
        let import = doc! {
            "_id": hex::encode(digest.finalize()),
            "imported_at": instant(statements[0].imported_at),
            "body": to_json(&statements)?,
        };
        if let Err(error) = self.collection(RECON_IMPORTS).insert_one(import).await {
            if !is_duplicate_key(&error) {
                return Err(backend(error));
            }
            // Another import of the same file committed first: report what it stored.
            let committed: std::collections::BTreeMap<String, StoredStatement> = self
                .committed_statements()
                .await?
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
            for (outcome, import) in outcomes.iter_mut().zip(&imports) {
                if let (ImportOutcome::Imported, Some(s)) =
                    (&*outcome, committed.get(&import.statement.id))
                {
                    *outcome = ImportOutcome::AlreadyImported {
                        imported_at: s.imported_at,
                        imported_by: s.imported_by.clone(),
                    };
                }
            }
        }
        Ok(outcomes)
    }

    async fn statements(
        &self,
        kind: Option<StatementKind>,
    ) -> Result<Vec<StoredStatement>, StoreError> {
        Ok(self
            .committed_statements()
            .await?
            .into_iter()
            .filter(|s| kind.is_none_or(|k| s.identity.kind == k))
            .collect())
    }

    async fn statement_entries(
        &self,
        filter: &EntryFilter,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let committed: std::collections::BTreeSet<String> = self
            .statements(Some(filter.kind))
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut query = doc! { "kind": filter.kind.as_str() };
        let mut dates = Document::new();
        if let Some(from) = filter.booked_from {
            dates.insert("$gte", date_text(from));
        }
        if let Some(to) = filter.booked_to {
            dates.insert("$lte", date_text(to));
        }
        if !dates.is_empty() {
            query.insert("booking_date", dates);
        }
        let documents = self
            .find_all(RECON_ENTRIES, query, doc! { "_id": 1 }, None, None)
            .await?;
        let mut entries = Vec::with_capacity(documents.len());
        for document in documents {
            let entry: StoredEntry = from_json(&document, RECON_ENTRIES)?;
            if committed.contains(&entry.statement_id) {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| (&a.statement_id, a.position).cmp(&(&b.statement_id, b.position)));
        Ok(entries)
    }

    async fn record_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError> {
        self.write_decisions(&decisions, false).await
    }

    async fn restore_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError> {
        self.write_decisions(&decisions, true).await
    }

    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, StoreError> {
        let mut query = doc! { "settling": false };
        if let Some(kind) = filter.kind {
            query.insert("kind", kind.as_str());
        }
        if !filter.states.is_empty() {
            let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            query.insert("state", doc! { "$in": states });
        }
        self.find_all(
            RECON_DECISIONS,
            query,
            doc! { "decided_at": 1, "_id": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(decision_of)
        .collect()
    }

    async fn decision(&self, id: &str) -> Result<Option<Decision>, StoreError> {
        match self.decision_document(id).await? {
            Some(document) if document.get_bool("settling").ok() == Some(false) => {
                decision_of(&document).map(Some)
            }
            _ => Ok(None),
        }
    }
}
