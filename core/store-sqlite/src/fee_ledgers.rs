//! Refunded payments' fee ledgers in SQLite: one row per payment, the ledger as JSON, written with a
//! revision's result inside its transaction and only if each ledger is still at the version read.

use rusqlite::{params, Connection, OptionalExtension};

use settle_core::compute::PaymentKey;
use settle_core::model::{FeeLedgerWrite, PaymentFeeLedger};
use settle_core::store::StoreError;

use super::backend;

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("payment_fee_ledgers.ledger: {error}"))
}

/// The stored ledgers of these payments; keys without one are left out.
pub(super) fn read(
    connection: &Connection,
    keys: &[PaymentKey],
) -> Result<Vec<PaymentFeeLedger>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT ledger FROM payment_fee_ledgers WHERE merchant_id = ?1 AND external_ref = ?2",
        )
        .map_err(backend)?;
    let mut found = Vec::new();
    for (merchant_id, external_ref) in keys {
        let text: Option<String> = statement
            .query_row(params![merchant_id, external_ref], |row| row.get(0))
            .optional()
            .map_err(backend)?;
        if let Some(text) = text {
            found.push(serde_json::from_str(&text).map_err(corrupt)?);
        }
    }
    Ok(found)
}

/// Writes each ledger if the stored one is still at its expected version; otherwise fails with
/// `FeeLedgerMoved` (the caller's transaction then writes nothing).
pub(super) fn write(
    tx: &rusqlite::Transaction,
    writes: &[FeeLedgerWrite],
) -> Result<(), StoreError> {
    for write in writes {
        let ledger = &write.ledger;
        let stored: Option<i64> = tx
            .query_row(
                "SELECT version FROM payment_fee_ledgers WHERE merchant_id = ?1 AND external_ref = ?2",
                params![ledger.merchant_id, ledger.external_ref],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?;
        let stored = stored.map(|v| v as u64);
        if stored != write.expected_version {
            return Err(StoreError::FeeLedgerMoved {
                merchant_id: ledger.merchant_id.clone(),
                external_ref: ledger.external_ref.clone(),
            });
        }
        let text = serde_json::to_string(ledger).map_err(corrupt)?;
        let version = i64::try_from(ledger.version)
            .map_err(|_| StoreError::Backend("a fee ledger version overflowed".into()))?;
        tx.execute(
            "INSERT INTO payment_fee_ledgers (merchant_id, external_ref, version, ledger) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (merchant_id, external_ref) DO UPDATE SET version = excluded.version, ledger = excluded.ledger",
            params![ledger.merchant_id, ledger.external_ref, version, text],
        )
        .map_err(backend)?;
    }
    Ok(())
}
