//! The reconciliation port: statements stored once by identity, their entries, and the decisions
//! (append-only records whose state later decisions move) with one claim per decided item.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Currency;
use settle_domain::reconcile::{
    Decision, DecisionState, StatementEntry, StatementFormat, StatementIdentity, StatementKind,
};

use super::StoreError;

/// A statement as stored: its identity (and the key made of it), what it states, who imported it.
/// Both adapters keep it (and [`StoredEntry`], [`Decision`]) as this serde shape beside the
/// columns they index, so the conversion is written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredStatement {
    /// [`StatementIdentity::key`].
    pub id: String,
    pub identity: StatementIdentity,
    pub format: StatementFormat,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub opening_balance_minor: Option<i64>,
    pub closing_balance_minor: Option<i64>,
    pub entry_count: u32,
    /// SHA-256 of the file it came from (several statements may share one file).
    pub file_sha256: String,
    pub imported_at: DateTime<Utc>,
    pub imported_by: String,
}

/// One entry as stored, under an id made of its statement's id and its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// `{statement id}#{position}`.
    pub id: String,
    pub statement_id: String,
    pub kind: StatementKind,
    /// 0-based, in file order.
    pub position: u32,
    pub entry: StatementEntry,
}

impl StoredEntry {
    pub fn id_of(statement_id: &str, position: u32) -> String {
        format!("{statement_id}#{position}")
    }
}

/// A statement and its entries, to be stored together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementImport {
    pub statement: StoredStatement,
    pub entries: Vec<StoredEntry>,
}

/// What storing one statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    /// A statement with this identity is stored already: nothing was written for it.
    AlreadyImported {
        imported_at: DateTime<Utc>,
        imported_by: String,
    },
}

/// Which entries to read: of one kind, booked within the dates given (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFilter {
    pub kind: StatementKind,
    pub booked_from: Option<NaiveDate>,
    pub booked_to: Option<NaiveDate>,
}

/// What recording one decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionWrite {
    Recorded,
    /// A decision with this id is stored already (a rerun of the same match, a retried request):
    /// nothing changed.
    AlreadyRecorded,
    /// An item is decided by another decision in force: nothing was written.
    ItemTaken {
        item: String,
        by: String,
    },
    /// The decision it acts on does not exist, is of another kind, or is not in a state it can
    /// act on (unmatch: in force or awaiting approval; approve, reject: awaiting approval).
    TargetNotOpen {
        target: String,
    },
}

/// Which decisions to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    pub kind: Option<StatementKind>,
    /// Only decisions in one of these states; every state when empty.
    pub states: Vec<DecisionState>,
}

/// Reconciliation: statements and decisions. Each operation is atomic on its own.
#[async_trait]
pub trait ReconciliationStore: Send + Sync {
    /// Stores the statements of one file, all or nothing: either every new statement with all its
    /// entries is stored, or none (an entry is never visible without its whole statement). A
    /// statement whose identity is stored already is left as it is (`AlreadyImported`).
    async fn import_statements(
        &self,
        imports: Vec<StatementImport>,
    ) -> Result<Vec<ImportOutcome>, StoreError>;

    /// Every stored statement (of `kind`, when given), by identity.
    async fn statements(
        &self,
        kind: Option<StatementKind>,
    ) -> Result<Vec<StoredStatement>, StoreError>;

    /// The entries `filter` selects, by statement id then position.
    async fn statement_entries(&self, filter: &EntryFilter)
        -> Result<Vec<StoredEntry>, StoreError>;

    /// Records decisions in order, each atomically on its own:
    /// - one that claims items (`match`, `duplicate`, `write_off`): stored with its claims unless
    ///   one of its items is claimed already (`ItemTaken`);
    /// - `expect`: stored (it claims nothing);
    /// - `unmatch`: its target (in force or awaiting approval, of the same kind, claiming items)
    ///   becomes `reversed` and its claims are released;
    /// - `approve` / `reject`: its target (a write-off awaiting approval) becomes `in_force` /
    ///   `rejected` (its claims released);
    ///
    /// and a decision whose id is stored already changes nothing (`AlreadyRecorded`).
    async fn record_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError>;

    /// Stores decisions copied from another store (`settle migrate`) as they are there, state
    /// included, each atomically with the claims of one that holds its items
    /// ([`Decision::holds_items`]); no other decision moves. One whose id is stored already is
    /// left as it is (`AlreadyRecorded`); one whose item another decision claims is refused
    /// (`ItemTaken`).
    async fn restore_decisions(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<DecisionWrite>, StoreError>;

    /// The decisions `filter` selects, oldest first (by `decided_at`, then id).
    async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, StoreError>;

    async fn decision(&self, id: &str) -> Result<Option<Decision>, StoreError>;
}
