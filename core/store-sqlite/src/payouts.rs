//! Payouts, merchant holds and carried-forward amounts in SQLite. Planning is one fenced write
//! transaction per revision and idempotent: a resumed run plans nothing twice.
//!
//! A payout's in-flight claim is two columns, `claimed_by` and `claim_expires_at` (instants as
//! fixed-width text, so text order is time order), set and cleared by compare-and-set.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, OptionalExtension};

use settle_core::model::{amount_due, CarryForward, Fence, LineDecision, Payout, SettlementLine};
use settle_core::store::{
    MerchantHold, PayoutClaim, PayoutClaimOutcome, PayoutFilter, PayoutPlan, PayoutStore,
    PayoutUpdate, StoreError,
};

use super::rows::{self, date_text, instant_text, CARRY_FORWARD_COLUMNS, PAYOUT_COLUMNS};
use super::settlements::fenced_update;
use super::{backend, query_all, query_one, SqliteStore};

fn sum(
    tx: &rusqlite::Transaction,
    sql: &str,
    values: impl rusqlite::Params,
) -> Result<i64, StoreError> {
    tx.query_row(sql, values, |row| row.get(0)).map_err(backend)
}

fn overflow(line: &SettlementLine) -> StoreError {
    StoreError::Backend(format!(
        "payout amounts of {} {} overflow",
        line.merchant_id, line.currency
    ))
}

/// Plans one line: applies open carry-forwards, then pays or carries the difference between what
/// the date owes the merchant and what it already settled. A line this revision already paid or
/// carried is left alone: a retry must not apply carry-forwards opened since, for the revision's
/// own carry-forward (one per revision) could not hold the new amount.
fn plan_line(
    tx: &rusqlite::Transaction,
    fence: &Fence,
    line: &SettlementLine,
    held: &BTreeSet<String>,
    now: &str,
    plan: &mut PayoutPlan,
) -> Result<(), StoreError> {
    let date = date_text(fence.settlement_date);
    let (merchant, currency) = (line.merchant_id.as_str(), line.currency.code());
    let planned = sum(
        tx,
        "SELECT (SELECT COUNT(*) FROM payouts WHERE settlement_date = ?1 AND revision = ?2 \
         AND merchant_id = ?3 AND currency = ?4) + (SELECT COUNT(*) FROM carry_forwards \
         WHERE origin_date = ?1 AND origin_revision = ?2 AND merchant_id = ?3 AND currency = ?4)",
        params![date, fence.revision, merchant, currency],
    )?;
    if planned > 0 {
        return Ok(());
    }
    tx.execute(
        "UPDATE carry_forwards SET applied_date = ?1, applied_revision = ?2 \
         WHERE merchant_id = ?3 AND currency = ?4 AND applied_date IS NULL AND origin_date != ?1",
        params![date, fence.revision, merchant, currency],
    )
    .map_err(backend)?;
    let carried_in = sum(
        tx,
        "SELECT COALESCE(SUM(amount_minor), 0) FROM carry_forwards \
         WHERE merchant_id = ?1 AND currency = ?2 AND applied_date = ?3",
        params![merchant, currency, date],
    )?;
    let paid = sum(
        tx,
        "SELECT COALESCE(SUM(amount_minor), 0) FROM payouts \
         WHERE settlement_date = ?1 AND merchant_id = ?2 AND currency = ?3 AND status != 'failed'",
        params![date, merchant, currency],
    )?;
    // Amounts this date already carried forward count as settled: a later revision that raises
    // the net again must pay them back.
    let carried_out = sum(
        tx,
        "SELECT COALESCE(SUM(amount_minor), 0) FROM carry_forwards \
         WHERE merchant_id = ?1 AND currency = ?2 AND origin_date = ?3",
        params![merchant, currency, date],
    )?;
    let difference = amount_due(line.figures.net_minor, carried_in, paid, carried_out)
        .ok_or_else(|| overflow(line))?;
    let decision = LineDecision::of(
        fence.settlement_date,
        fence.revision,
        line,
        difference,
        held.contains(merchant),
    );
    match decision {
        LineDecision::Pay {
            reference,
            amount_minor,
            status,
        } => {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO payouts (reference, settlement_date, revision, merchant_id, currency, \
                     amount_minor, status, provider_payout_id, attempts, last_error, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0, NULL, ?8, ?8)",
                    params![reference, date, fence.revision, merchant, currency, amount_minor, status.as_str(), now],
                )
                .map_err(backend)?;
            if inserted == 1 {
                plan.created.extend(payout_by_reference(tx, &reference)?);
            }
        }
        LineDecision::Carry(carried) => {
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO carry_forwards (merchant_id, currency, amount_minor, origin_date, \
                     origin_revision, applied_date, applied_revision, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)",
                    params![merchant, currency, carried.amount_minor, date, fence.revision, now],
                )
                .map_err(backend)?;
            if inserted == 1 {
                plan.carried.push(carried);
            }
        }
        LineDecision::Nothing => {}
    }
    Ok(())
}

fn payout_by_reference(
    connection: &rusqlite::Connection,
    reference: &str,
) -> Result<Option<Payout>, StoreError> {
    query_one(
        connection,
        &format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE reference = ?1"),
        params![reference],
        rows::payout,
    )
}

/// Applies `update` by compare-and-set on its `from` status and, for a claimed send, on the claim
/// (which it then releases). Leaving `pending`/`unknown` clears any claim.
fn apply_update(
    tx: &rusqlite::Transaction,
    update: &PayoutUpdate,
    claimed_by: Option<&str>,
) -> Result<Option<Payout>, StoreError> {
    let release = claimed_by.is_some() || !update.to.awaits_sending();
    let changed = tx
        .execute(
            "UPDATE payouts SET status = ?1, provider_payout_id = COALESCE(?2, provider_payout_id), \
             attempts = attempts + ?3, last_error = ?4, updated_at = ?5, \
             claimed_by = CASE WHEN ?8 THEN NULL ELSE claimed_by END, \
             claim_expires_at = CASE WHEN ?8 THEN NULL ELSE claim_expires_at END \
             WHERE reference = ?6 AND status = ?7 AND (?9 IS NULL OR claimed_by = ?9)",
            params![
                update.to.as_str(),
                update.provider_payout_id,
                update.attempts,
                update.last_error,
                instant_text(update.now),
                update.reference,
                update.from.as_str(),
                release,
                claimed_by
            ],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Ok(None);
    }
    payout_by_reference(tx, &update.reference)
}

fn held_merchants(connection: &rusqlite::Connection) -> Result<BTreeSet<String>, StoreError> {
    Ok(query_all(
        connection,
        "SELECT merchant_id FROM merchant_holds",
        [],
        |row| row.get::<_, String>(0).map_err(backend),
    )?
    .into_iter()
    .collect())
}

#[async_trait]
impl PayoutStore for SqliteStore {
    async fn plan_payouts(
        &self,
        fence: &Fence,
        lines: &[SettlementLine],
        now: DateTime<Utc>,
    ) -> Result<PayoutPlan, StoreError> {
        let fence = fence.clone();
        let lines = lines.to_vec();
        self.write(move |tx| {
            // Planning is a write under the lease: only the current holder may plan.
            fenced_update(tx, &fence, "lease_version = lease_version", &[])?;
            let held = held_merchants(tx)?;
            let now = instant_text(now);
            let mut plan = PayoutPlan::default();
            for line in &lines {
                plan_line(tx, &fence, line, &held, &now, &mut plan)?;
            }
            Ok(plan)
        })
        .await
    }

    async fn payouts(&self, settlement_date: NaiveDate) -> Result<Vec<Payout>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE settlement_date = ?1 \
                     ORDER BY merchant_id, currency, revision"
                ),
                params![date_text(settlement_date)],
                rows::payout,
            )
        })
        .await
    }

    async fn payouts_awaiting(
        &self,
        settlement_date: Option<NaiveDate>,
        merchant_id: Option<String>,
    ) -> Result<Vec<Payout>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE status IN ('pending', 'unknown') \
                     AND (?1 IS NULL OR settlement_date = ?1) AND (?2 IS NULL OR merchant_id = ?2) \
                     ORDER BY settlement_date, merchant_id, currency, revision"
                ),
                params![settlement_date.map(date_text), merchant_id],
                rows::payout,
            )
        })
        .await
    }

    async fn update_payout(&self, update: &PayoutUpdate) -> Result<Option<Payout>, StoreError> {
        let update = update.clone();
        self.write(move |tx| apply_update(tx, &update, None)).await
    }

    async fn claim_payout_send(
        &self,
        claim: &PayoutClaim,
    ) -> Result<PayoutClaimOutcome, StoreError> {
        let claim = claim.clone();
        self.write(move |tx| {
            if !claim.from.awaits_sending() {
                return Ok(PayoutClaimOutcome::Moved);
            }
            let now = instant_text(claim.now);
            let changed = tx
                .execute(
                    "UPDATE payouts SET status = 'unknown', claimed_by = ?1, claim_expires_at = ?2, \
                     updated_at = ?3 WHERE reference = ?4 AND status = ?5 \
                     AND (claimed_by IS NULL OR claimed_by = ?1 OR claim_expires_at <= ?3)",
                    params![
                        claim.claimed_by,
                        instant_text(claim.expires_at),
                        now,
                        claim.reference,
                        claim.from.as_str()
                    ],
                )
                .map_err(backend)?;
            if changed == 1 {
                return match payout_by_reference(tx, &claim.reference)? {
                    Some(payout) => Ok(PayoutClaimOutcome::Claimed(payout)),
                    None => Ok(PayoutClaimOutcome::Moved),
                };
            }
            let holder = query_one(
                tx,
                "SELECT claimed_by, claim_expires_at FROM payouts \
                 WHERE reference = ?1 AND status = ?2 AND claimed_by IS NOT NULL \
                 AND claim_expires_at > ?3",
                params![claim.reference, claim.from.as_str(), now],
                |row| Ok((rows::text(row, "claimed_by")?, rows::instant(row, "claim_expires_at")?)),
            )?;
            Ok(match holder {
                Some((claimed_by, expires_at)) => PayoutClaimOutcome::InFlight {
                    claimed_by,
                    expires_at,
                },
                None => PayoutClaimOutcome::Moved,
            })
        })
        .await
    }

    async fn finish_payout_send(
        &self,
        update: &PayoutUpdate,
        claimed_by: &str,
    ) -> Result<Option<Payout>, StoreError> {
        let update = update.clone();
        let claimed_by = claimed_by.to_string();
        self.write(move |tx| apply_update(tx, &update, Some(&claimed_by)))
            .await
    }

    async fn payouts_with_status(&self, filter: &PayoutFilter) -> Result<Vec<Payout>, StoreError> {
        let filter = filter.clone();
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE status = ?1 \
                     AND (?2 IS NULL OR settlement_date = ?2) AND (?3 IS NULL OR updated_at < ?3) \
                     ORDER BY settlement_date, merchant_id, currency, revision"
                ),
                params![
                    filter.status.as_str(),
                    filter.settlement_date.map(date_text),
                    filter.updated_before.map(instant_text)
                ],
                rows::payout,
            )
        })
        .await
    }

    async fn hold_merchant(&self, hold: &MerchantHold) -> Result<u64, StoreError> {
        let hold = hold.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO merchant_holds (merchant_id, reason, held_by, held_at) VALUES (?1, ?2, ?3, ?4)",
                params![hold.merchant_id, hold.reason, hold.held_by, instant_text(hold.held_at)],
            )
            .map_err(backend)?;
            let held = tx
                .execute(
                    "UPDATE payouts SET status = 'held', updated_at = ?1 WHERE merchant_id = ?2 AND status = 'pending'",
                    params![instant_text(hold.held_at), hold.merchant_id],
                )
                .map_err(backend)?;
            Ok(held as u64)
        })
        .await
    }

    async fn release_merchant(
        &self,
        merchant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let merchant_id = merchant_id.to_string();
        self.write(move |tx| {
            let was_held = tx
                .query_row(
                    "SELECT 1 FROM merchant_holds WHERE merchant_id = ?1",
                    params![merchant_id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?
                .is_some();
            if !was_held {
                return Ok(None);
            }
            tx.execute("DELETE FROM merchant_holds WHERE merchant_id = ?1", params![merchant_id])
                .map_err(backend)?;
            let released = tx
                .execute(
                    "UPDATE payouts SET status = 'pending', updated_at = ?1 WHERE merchant_id = ?2 AND status = 'held'",
                    params![instant_text(now), merchant_id],
                )
                .map_err(backend)?;
            Ok(Some(released as u64))
        })
        .await
    }

    async fn merchant_holds(&self) -> Result<Vec<MerchantHold>, StoreError> {
        self.read(|connection| {
            query_all(
                connection,
                "SELECT merchant_id, reason, held_by, held_at FROM merchant_holds ORDER BY merchant_id",
                [],
                |row| {
                    Ok(MerchantHold {
                        merchant_id: rows::text(row, "merchant_id")?,
                        reason: rows::text(row, "reason")?,
                        held_by: rows::text(row, "held_by")?,
                        held_at: rows::instant(row, "held_at")?,
                    })
                },
            )
        })
        .await
    }

    async fn carry_forwards(&self, open_only: bool) -> Result<Vec<CarryForward>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {CARRY_FORWARD_COLUMNS} FROM carry_forwards \
                     WHERE (?1 = 0 OR applied_date IS NULL) ORDER BY merchant_id, currency, origin_date"
                ),
                params![i64::from(open_only)],
                rows::carry_forward,
            )
        })
        .await
    }
}
