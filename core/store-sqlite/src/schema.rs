//! The SQLite schema as numbered migrations, applied in order at open and recorded in `user_version`.
//! Append new migrations; never edit one that has shipped.

use rusqlite::{Connection, TransactionBehavior};

use settle_core::store::StoreError;

use super::backend;

/// Migration N (1-based) brings the schema from version N-1 to N.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE transactions (
    id               TEXT PRIMARY KEY NOT NULL,
    merchant_id      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('payment', 'refund', 'chargeback', 'adjustment')),
    status           TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled', 'pending')),
    amount_minor     INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    method           TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    external_ref     TEXT NOT NULL,
    refund_of        TEXT,
    created_at       TEXT NOT NULL,
    settlement_date  TEXT NOT NULL,
    late             INTEGER NOT NULL CHECK (late IN (0, 1)),
    UNIQUE (merchant_id, external_ref)
) STRICT;
CREATE INDEX transactions_by_settlement_date ON transactions (settlement_date, id);
CREATE INDEX transactions_by_refund_of ON transactions (merchant_id, refund_of) WHERE refund_of IS NOT NULL;

CREATE TABLE settlements (
    settlement_date  TEXT NOT NULL,
    revision         INTEGER NOT NULL CHECK (revision >= 1),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    "trigger"        TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    reason           TEXT,
    calendar         TEXT NOT NULL,
    fee_schedule     TEXT NOT NULL,
    window_start     TEXT NOT NULL,
    window_end       TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    lease_version    INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    completed_at     TEXT,
    error            TEXT,
    PRIMARY KEY (settlement_date, revision)
) STRICT;

CREATE TABLE settlement_lines (
    settlement_date   TEXT NOT NULL,
    revision          INTEGER NOT NULL,
    merchant_id       TEXT NOT NULL,
    currency          TEXT NOT NULL,
    transaction_count INTEGER NOT NULL,
    completed_count   INTEGER NOT NULL,
    failed_count      INTEGER NOT NULL,
    cancelled_count   INTEGER NOT NULL,
    pending_count     INTEGER NOT NULL,
    payment_count     INTEGER NOT NULL,
    refund_count      INTEGER NOT NULL,
    chargeback_count  INTEGER NOT NULL,
    adjustment_count  INTEGER NOT NULL,
    late_count        INTEGER NOT NULL,
    gross_minor       INTEGER NOT NULL,
    refunds_minor     INTEGER NOT NULL,
    chargebacks_minor INTEGER NOT NULL,
    adjustments_minor INTEGER NOT NULL,
    fees_minor        INTEGER NOT NULL,
    net_minor         INTEGER NOT NULL,
    PRIMARY KEY (settlement_date, revision, merchant_id, currency),
    FOREIGN KEY (settlement_date, revision) REFERENCES settlements (settlement_date, revision)
) STRICT;

CREATE TABLE settlement_totals (
    settlement_date   TEXT NOT NULL,
    revision          INTEGER NOT NULL,
    currency          TEXT NOT NULL,
    merchant_count    INTEGER NOT NULL,
    transaction_count INTEGER NOT NULL,
    completed_count   INTEGER NOT NULL,
    failed_count      INTEGER NOT NULL,
    cancelled_count   INTEGER NOT NULL,
    pending_count     INTEGER NOT NULL,
    payment_count     INTEGER NOT NULL,
    refund_count      INTEGER NOT NULL,
    chargeback_count  INTEGER NOT NULL,
    adjustment_count  INTEGER NOT NULL,
    late_count        INTEGER NOT NULL,
    gross_minor       INTEGER NOT NULL,
    refunds_minor     INTEGER NOT NULL,
    chargebacks_minor INTEGER NOT NULL,
    adjustments_minor INTEGER NOT NULL,
    fees_minor        INTEGER NOT NULL,
    net_minor         INTEGER NOT NULL,
    PRIMARY KEY (settlement_date, revision, currency),
    FOREIGN KEY (settlement_date, revision) REFERENCES settlements (settlement_date, revision)
) STRICT;

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY NOT NULL,
    occurred_at TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_events_by_time ON audit_events (occurred_at);
"#,
    r#"
ALTER TABLE transactions ADD COLUMN idempotency_principal TEXT;
ALTER TABLE transactions ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX transactions_by_idempotency_key
    ON transactions (idempotency_principal, idempotency_key) WHERE idempotency_key IS NOT NULL;

ALTER TABLE settlements ADD COLUMN computed_at TEXT;

CREATE TABLE idempotency_records (
    principal        TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    response_status  INTEGER,
    response_body    TEXT,
    response_headers TEXT,
    locked_until     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    PRIMARY KEY (principal, key)
) STRICT;
CREATE INDEX idempotency_records_by_expiry ON idempotency_records (expires_at);

CREATE TABLE payouts (
    reference          TEXT PRIMARY KEY NOT NULL,
    settlement_date    TEXT NOT NULL,
    revision           INTEGER NOT NULL,
    merchant_id        TEXT NOT NULL,
    currency           TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    status             TEXT NOT NULL CHECK (status IN ('pending', 'held', 'unknown', 'sent', 'confirmed', 'failed')),
    provider_payout_id TEXT,
    attempts           INTEGER NOT NULL,
    last_error         TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
) STRICT;
CREATE INDEX payouts_by_line ON payouts (settlement_date, merchant_id, currency);
CREATE INDEX payouts_by_merchant_status ON payouts (merchant_id, status);

CREATE TABLE carry_forwards (
    merchant_id      TEXT NOT NULL,
    currency         TEXT NOT NULL,
    amount_minor     INTEGER NOT NULL CHECK (amount_minor < 0),
    origin_date      TEXT NOT NULL,
    origin_revision  INTEGER NOT NULL,
    applied_date     TEXT,
    applied_revision INTEGER,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (origin_date, origin_revision, merchant_id, currency)
) STRICT;
CREATE INDEX carry_forwards_open ON carry_forwards (merchant_id, currency) WHERE applied_date IS NULL;

CREATE TABLE merchant_holds (
    merchant_id TEXT PRIMARY KEY NOT NULL,
    reason      TEXT NOT NULL,
    held_by     TEXT NOT NULL,
    held_at     TEXT NOT NULL
) STRICT;

CREATE TABLE notifications (
    settlement_date TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    event           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('delivered', 'failed')),
    attempts        INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (settlement_date, revision, event)
) STRICT;
"#,
    r#"
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;

CREATE TABLE rerun_requests (
    id                 TEXT PRIMARY KEY NOT NULL,
    settlement_date    TEXT NOT NULL,
    reason             TEXT NOT NULL,
    apply_current_fees INTEGER NOT NULL CHECK (apply_current_fees IN (0, 1)),
    requested_by       TEXT NOT NULL,
    requested_at       TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by         TEXT,
    decided_at         TEXT
) STRICT;
CREATE INDEX rerun_requests_by_time ON rerun_requests (requested_at, id);
CREATE INDEX rerun_requests_by_status ON rerun_requests (status, requested_at, id);
"#,
    // 2: what each refunded payment was charged and its refunds returned (a JSON ledger per payment).
    r#"
CREATE TABLE payment_fee_ledgers (
    merchant_id  TEXT NOT NULL,
    external_ref TEXT NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    ledger       TEXT NOT NULL,
    PRIMARY KEY (merchant_id, external_ref)
) STRICT;
"#,
    // Who has a payout in flight, until when (one sender at a time), and payouts by status and age.
    r#"
ALTER TABLE payouts ADD COLUMN claimed_by TEXT;
ALTER TABLE payouts ADD COLUMN claim_expires_at TEXT;
CREATE INDEX payouts_by_status ON payouts (status, updated_at);
"#,
    // A rerun request keeps the revision it was made against, the revision its approval claimed,
    // and why its last approval could not claim a run.
    r#"
ALTER TABLE rerun_requests ADD COLUMN settlement_revision INTEGER;
ALTER TABLE rerun_requests ADD COLUMN run_revision INTEGER;
ALTER TABLE rerun_requests ADD COLUMN last_refusal TEXT;
"#,
    // The store's stable identity (one row, random), so a migration target can tell this store's
    // earlier copy from another store's data.
    r#"
CREATE TABLE store_identity (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    store_id  TEXT NOT NULL
) STRICT;
INSERT INTO store_identity (singleton, store_id) VALUES (1, lower(hex(randomblob(16))));
"#,
    // The audit trail listed by subject, action or actor, newest first (`GET /finance/audit`).
    r#"
CREATE INDEX audit_events_by_subject ON audit_events (subject, occurred_at, id);
CREATE INDEX audit_events_by_action ON audit_events (action, occurred_at, id);
CREATE INDEX audit_events_by_actor ON audit_events (actor, occurred_at, id);
"#,
    // A revision's lines paged in the order of each figure they sort by (`GET .../lines`); the
    // primary key already orders them by merchant_id and currency.
    r#"
CREATE INDEX settlement_lines_by_net ON settlement_lines (settlement_date, revision, net_minor, merchant_id, currency);
CREATE INDEX settlement_lines_by_gross ON settlement_lines (settlement_date, revision, gross_minor, merchant_id, currency);
CREATE INDEX settlement_lines_by_fees ON settlement_lines (settlement_date, revision, fees_minor, merchant_id, currency);
CREATE INDEX settlement_lines_by_count ON settlement_lines (settlement_date, revision, transaction_count, merchant_id, currency);
"#,
    // Reconciliation: statements (one per identity) and their entries, stored as the core's serde
    // shape beside the columns they are found by; decisions, append-only but for their state; and
    // one claim per decided item, so that no item is decided twice.
    r#"
CREATE TABLE recon_statements (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    body        TEXT NOT NULL
) STRICT;
CREATE TABLE recon_entries (
    id           TEXT PRIMARY KEY NOT NULL,
    statement_id TEXT NOT NULL REFERENCES recon_statements (id),
    kind         TEXT NOT NULL,
    position     INTEGER NOT NULL,
    booking_date TEXT NOT NULL,
    body         TEXT NOT NULL
) STRICT;
CREATE INDEX recon_entries_by_date ON recon_entries (kind, booking_date);
CREATE TABLE recon_decisions (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('in_force', 'awaiting_approval', 'reversed', 'rejected')),
    target     TEXT,
    decided_at TEXT NOT NULL,
    body       TEXT NOT NULL
) STRICT;
CREATE INDEX recon_decisions_by_time ON recon_decisions (kind, decided_at, id);
CREATE TABLE recon_claims (
    kind        TEXT NOT NULL,
    item        TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (kind, item)
) STRICT, WITHOUT ROWID;
CREATE INDEX recon_claims_by_decision ON recon_claims (decision_id);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to `SCHEMA_VERSION`, each migration in its own transaction. Safe when two
/// processes open a new database at once: the version is re-read under the write lock.
pub fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let version: u32 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "the database has schema version {version}, newer than this settle understands ({SCHEMA_VERSION}); upgrade settle"
            )));
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(backend)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
}
