//! Reconciliation in SQLite: statements and entries written in one transaction per file, decisions
//! with their item claims (a primary key per kind and item) so no item is decided twice.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};

use settle_core::reconcile::{Decision, DecisionAction, DecisionState, StatementKind};
use settle_core::store::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome, ReconciliationStore,
    StatementImport, StoreError, StoredEntry, StoredStatement,
};

use super::rows::{date_text, instant_text};
use super::{backend, query_all, query_one, SqliteStore};

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn statement_row(row: &rusqlite::Row) -> Result<StoredStatement, StoreError> {
    let text: String = row.get(0).map_err(backend)?;
    from_json(&text, "recon_statements.body")
}

fn entry_row(row: &rusqlite::Row) -> Result<StoredEntry, StoreError> {
    let text: String = row.get(0).map_err(backend)?;
    from_json(&text, "recon_entries.body")
}

/// The body holds the decision as recorded; its state lives in its own column.
fn decision_row(row: &rusqlite::Row) -> Result<Decision, StoreError> {
    let text: String = row.get(0).map_err(backend)?;
    let state: String = row.get(1).map_err(backend)?;
    let mut decision: Decision = from_json(&text, "recon_decisions.body")?;
    decision.state = state
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("recon_decisions.state: {e}")))?;
    Ok(decision)
}

const DECISION_COLUMNS: &str = "body, state";

fn decision_by_id(tx: &rusqlite::Connection, id: &str) -> Result<Option<Decision>, StoreError> {
    query_one(
        tx,
        &format!("SELECT {DECISION_COLUMNS} FROM recon_decisions WHERE id = ?1"),
        params![id],
        decision_row,
    )
}

/// Inserts the decision unless its id is stored already (false then).
fn insert_decision(tx: &Transaction, d: &Decision) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO recon_decisions (id, kind, action, state, target, decided_at, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        )
        .map_err(backend)?
        .execute(params![
            d.id,
            d.kind.as_str(),
            d.action.as_str(),
            d.state.as_str(),
            d.target,
            instant_text(d.decided_at),
            to_json(d)?
        ])
        .map_err(backend)?;
    Ok(inserted == 1)
}

/// Claims the items of a decision just inserted; when one is claimed by another decision, takes
/// back the decision and the claims made so far and names the holder. One write per claim (no
/// lookup first): the primary key refuses a taken item.
fn claim_items(tx: &Transaction, d: &Decision) -> Result<Option<DecisionWrite>, StoreError> {
    let mut claim = tx
        .prepare_cached(
            "INSERT INTO recon_claims (kind, item, decision_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT (kind, item) DO NOTHING",
        )
        .map_err(backend)?;
    for key in d.item_keys() {
        if claim
            .execute(params![d.kind.as_str(), key, d.id])
            .map_err(backend)?
            == 1
        {
            continue;
        }
        let by: String = tx
            .query_row(
                "SELECT decision_id FROM recon_claims WHERE kind = ?1 AND item = ?2",
                params![d.kind.as_str(), key],
                |row| row.get(0),
            )
            .map_err(backend)?;
        release_claims(tx, &d.id)?;
        tx.execute("DELETE FROM recon_decisions WHERE id = ?1", params![d.id])
            .map_err(backend)?;
        return Ok(Some(DecisionWrite::ItemTaken { item: key, by }));
    }
    Ok(None)
}

fn set_state(tx: &Transaction, id: &str, state: DecisionState) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE recon_decisions SET state = ?1 WHERE id = ?2",
        params![state.as_str(), id],
    )
    .map_err(backend)?;
    Ok(())
}

fn release_claims(tx: &Transaction, decision_id: &str) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM recon_claims WHERE decision_id = ?1",
        params![decision_id],
    )
    .map_err(backend)?;
    Ok(())
}

/// One decision, under the write transaction (see the port for the rules).
fn record_one(tx: &Transaction, d: &Decision) -> Result<DecisionWrite, StoreError> {
    if !d.action.acts_on_decision() {
        if !insert_decision(tx, d)? {
            return Ok(DecisionWrite::AlreadyRecorded);
        }
        if d.action.claims_items() {
            if let Some(taken) = claim_items(tx, d)? {
                return Ok(taken);
            }
        }
        return Ok(DecisionWrite::Recorded);
    }
    if decision_by_id(tx, &d.id)?.is_some() {
        return Ok(DecisionWrite::AlreadyRecorded);
    }
    let target_id = d.target.clone().unwrap_or_default();
    let not_open = || DecisionWrite::TargetNotOpen {
        target: target_id.clone(),
    };
    let Some(target) = decision_by_id(tx, &target_id)? else {
        return Ok(not_open());
    };
    if target.kind != d.kind || !target.action.claims_items() {
        return Ok(not_open());
    }
    let next = match (d.action, target.state) {
        (DecisionAction::Unmatch, DecisionState::InForce | DecisionState::AwaitingApproval) => {
            DecisionState::Reversed
        }
        (DecisionAction::Approve, DecisionState::AwaitingApproval)
            if target.action == DecisionAction::WriteOff =>
        {
            DecisionState::InForce
        }
        (DecisionAction::Reject, DecisionState::AwaitingApproval)
            if target.action == DecisionAction::WriteOff =>
        {
            DecisionState::Rejected
        }
        _ => return Ok(not_open()),
    };
    set_state(tx, &target.id, next)?;
    if next != DecisionState::InForce {
        release_claims(tx, &target.id)?;
    }
    insert_decision(tx, d)?;
    Ok(DecisionWrite::Recorded)
}

/// One decision copied from another store, as it is there (see the port).
fn restore_one(tx: &Transaction, d: &Decision) -> Result<DecisionWrite, StoreError> {
    if !insert_decision(tx, d)? {
        return Ok(DecisionWrite::AlreadyRecorded);
    }
    if d.holds_items() {
        if let Some(taken) = claim_items(tx, d)? {
            return Ok(taken);
        }
    }
    Ok(DecisionWrite::Recorded)
}

#[async_trait]
impl ReconciliationStore for SqliteStore {
    async fn import_statements(
        &self,
        imports: Vec<StatementImport>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        self.write(move |tx| {
            let mut outcomes = Vec::with_capacity(imports.len());
            for import in &imports {
                let s = &import.statement;
                let stored: Option<String> = tx
                    .query_row(
                        "SELECT body FROM recon_statements WHERE id = ?1",
                        params![s.id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                if let Some(body) = stored {
                    let earlier: StoredStatement = from_json(&body, "recon_statements.body")?;
                    outcomes.push(ImportOutcome::AlreadyImported {
                        imported_at: earlier.imported_at,
                        imported_by: earlier.imported_by,
                    });
                    continue;
                }
                tx.execute(
                    "INSERT INTO recon_statements (id, kind, imported_at, body) VALUES (?1, ?2, ?3, ?4)",
                    params![s.id, s.identity.kind.as_str(), instant_text(s.imported_at), to_json(s)?],
                )
                .map_err(backend)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO recon_entries (id, statement_id, kind, position, booking_date, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(backend)?;
                for e in &import.entries {
                    insert
                        .execute(params![
                            e.id,
                            e.statement_id,
                            e.kind.as_str(),
                            e.position,
                            date_text(e.entry.booking_date),
                            to_json(e)?
                        ])
                        .map_err(backend)?;
                }
                outcomes.push(ImportOutcome::Imported);
            }
            Ok(outcomes)
        })
        .await
    }

    async fn statements(
        &self,
        kind: Option<StatementKind>,
    ) -> Result<Vec<StoredStatement>, StoreError> {
        self.read(move |connection| match kind {
            Some(kind) => query_all(
                connection,
                "SELECT body FROM recon_statements WHERE kind = ?1 ORDER BY id",
                params![kind.as_str()],
                statement_row,
            ),
            None => query_all(
                connection,
                "SELECT body FROM recon_statements ORDER BY id",
                [],
                statement_row,
            ),
        })
        .await
    }

    async fn statement_entries(
        &self,
        filter: &EntryFilter,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let filter = filter.clone();
        self.read(move |connection| {
            query_all(
                connection,
                "SELECT body FROM recon_entries WHERE kind = ?1 \
                 AND (?2 IS NULL OR booking_date >= ?2) AND (?3 IS NULL OR booking_date <= ?3) \
                 ORDER BY statement_id, position",
                params![
                    filter.kind.as_str(),
                    filter.booked_from.map(date_text),
                    filter.booked_to.map(date_text)
                ],
                entry_row,
            )
        })
        .await
    }

    async fn record_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError> {
        self.write(move |tx| decisions.iter().map(|d| record_one(tx, d)).collect())
            .await
    }

    async fn restore_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError> {
        self.write(move |tx| decisions.iter().map(|d| restore_one(tx, d)).collect())
            .await
    }

    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, StoreError> {
        let filter = filter.clone();
        self.read(move |connection| {
            let all = query_all(
                connection,
                &format!(
                    "SELECT {DECISION_COLUMNS} FROM recon_decisions WHERE (?1 IS NULL OR kind = ?1) \
                     ORDER BY decided_at, id"
                ),
                params![filter.kind.map(|k| k.as_str())],
                decision_row,
            )?;
            Ok(all
                .into_iter()
                .filter(|d| filter.states.is_empty() || filter.states.contains(&d.state))
                .collect())
        })
        .await
    }

    async fn decision(&self, id: &str) -> Result<Option<Decision>, StoreError> {
        let id = id.to_string();
        self.read(move |connection| decision_by_id(connection, &id))
            .await
    }
}
