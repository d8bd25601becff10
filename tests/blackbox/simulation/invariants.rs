//! The end of a sequence: bring the world to rest (settle what is open, release holds, retry failed
//! runs, send, check, rerun dates whose payouts failed or were recovered), then check every
//! invariant against the store, the provider's ledger and the model, and export every revision.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use settle_core::csv::write_settlement_csv;
use settle_core::model::{PayoutStatus, SettlementStatus, TransactionKind, TransactionStatus};
use settle_core::money::Currency;
use settle_core::provider::ProviderPayoutStatus;
use settle_tests::sim_model::{Key, RevisionStatus};
use uuid::Uuid;

use super::ops::Op;
use super::world::{figures, must, World};
use super::Verdict;

/// Rounds of bringing a world to rest before giving up (each consumes scripted faults).
const MAX_ROUNDS: usize = 30;

/// Every (date, revision)'s export, byte for byte.
pub type Exports = BTreeMap<(NaiveDate, u32), Vec<u8>>;

/// Runs `op` as part of bringing the world to rest, journaled like any other.
async fn rest_op(world: &mut World, op: Op) -> Verdict {
    world.journal.push(format!("(at rest) {op}"));
    world.execute(&op).await
}

fn latest_failed(world: &World) -> Vec<NaiveDate> {
    world
        .model
        .dates
        .iter()
        .filter(|(_, revisions)| {
            revisions
                .last()
                .is_some_and(|r| r.status == RevisionStatus::Failed)
        })
        .map(|(date, _)| *date)
        .collect()
}

/// Settles whatever is open and resolves every payout, until nothing is left to do.
pub async fn bring_to_rest(world: &mut World) -> Verdict {
    for _ in 0..MAX_ROUNDS {
        for date in world.model.unsettled_dates() {
            rest_op(world, Op::Run(date)).await?;
        }
        for merchant in world.holds.clone() {
            rest_op(world, Op::Release(merchant)).await?;
        }
        for date in latest_failed(world) {
            rest_op(world, Op::Retry(date)).await?;
        }
        rest_op(world, Op::SendPayouts).await?;
        rest_op(world, Op::Check { advance_hours: 25 }).await?;
        for date in world.dirty.clone() {
            rest_op(
                world,
                Op::Rerun {
                    date,
                    apply_current_fees: false,
                },
            )
            .await?;
        }
        let awaiting = world
            .payouts()
            .await?
            .values()
            .any(|p| p.status.awaits_sending() || p.status == PayoutStatus::Held);
        let at_rest = !awaiting
            && world.dirty.is_empty()
            && world.holds.is_empty()
            && latest_failed(world).is_empty()
            && world.model.unsettled_dates().is_empty();
        if at_rest {
            return Ok(());
        }
    }
    Err(format!(
        "the world did not come to rest in {MAX_ROUNDS} rounds"
    ))
}

/// Every revision: the model's status and lines, and day totals that are the sum of the lines.
async fn check_revisions(world: &World) -> Verdict {
    for (date, revisions) in &world.model.dates {
        let stored = must(
            world.store.settlement_revisions(*date).await,
            "reading revisions",
        )?;
        ensure!(
            stored.len() == revisions.len(),
            "{date}: {} revision(s) stored, {} modelled",
            stored.len(),
            revisions.len()
        );
        for revision in revisions {
            let settlement = must(
                world.store.settlement(*date, Some(revision.revision)).await,
                "reading a revision",
            )?
            .ok_or_else(|| format!("{date} r{} is missing", revision.revision))?;
            let status = match revision.status {
                RevisionStatus::Completed => SettlementStatus::Completed,
                RevisionStatus::Failed => SettlementStatus::Failed,
            };
            ensure!(
                settlement.status == status,
                "{date} r{}: {} stored, {status} modelled",
                revision.revision,
                settlement.status
            );
            let lines = must(
                world.store.settlement_lines(*date, revision.revision).await,
                "reading lines",
            )?;
            let found: BTreeMap<_, _> = lines
                .iter()
                .map(|l| ((l.merchant_id.clone(), l.currency), figures(l)))
                .collect();
            ensure!(
                found == revision.lines,
                "{date} r{}: lines {found:?}, modelled {:?}",
                revision.revision,
                revision.lines
            );
            if status != SettlementStatus::Completed {
                continue;
            }
            let mut sums: BTreeMap<Currency, (u64, settle_core::model::SettlementFigures)> =
                BTreeMap::new();
            for line in &lines {
                let (count, sum) = sums.entry(line.currency).or_default();
                *count += 1;
                must(
                    sum.accumulate(&line.figures, line.currency),
                    "summing lines",
                )?;
            }
            ensure!(
                settlement.totals.len() == sums.len(),
                "{date} r{}: totals of {} currencies, lines of {}",
                revision.revision,
                settlement.totals.len(),
                sums.len()
            );
            for total in &settlement.totals {
                let (count, sum) = sums.get(&total.currency).cloned().unwrap_or_default();
                ensure!(
                    total.figures == sum && total.merchant_count == count,
                    "{date} r{} {}: totals {:?} are not the sum of the lines {sum:?}",
                    revision.revision,
                    total.currency,
                    total.figures
                );
            }
        }
    }
    Ok(())
}

/// Every transaction stored exactly once, on the model's date, late as modelled; returns the id
/// of each, by (merchant_id, external_ref).
async fn check_transactions(world: &World) -> Result<BTreeMap<Uuid, Key>, String> {
    let mut dates: BTreeSet<NaiveDate> = world.model.dates.keys().copied().collect();
    dates.extend(world.model.transactions.iter().map(|t| t.settlement_date));
    let mut seen: BTreeMap<Key, (NaiveDate, bool)> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for date in dates {
        let mut after = None;
        loop {
            let page = must(
                world.store.transactions_page(date, after, 100).await,
                "reading transactions",
            )?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for tx in page {
                let key = (tx.merchant_id.clone(), tx.external_ref.clone());
                ensure!(
                    seen.insert(key.clone(), (tx.settlement_date, tx.late))
                        .is_none(),
                    "{}/{} is stored twice",
                    key.0,
                    key.1
                );
                ids.insert(tx.id, key);
            }
        }
    }
    ensure!(
        seen.len() == world.model.transactions.len(),
        "{} transactions stored, {} modelled",
        seen.len(),
        world.model.transactions.len()
    );
    for tx in &world.model.transactions {
        let key = (tx.new.merchant_id.clone(), tx.new.external_ref.clone());
        ensure!(
            seen.get(&key) == Some(&(tx.settlement_date, tx.late)),
            "{}/{}: stored as {:?}, modelled on {} (late: {})",
            key.0,
            key.1,
            seen.get(&key),
            tx.settlement_date,
            tx.late
        );
    }
    Ok(ids)
}

/// Per payment: refunds plus chargebacks never above it; the fee ledgers the model's, each return
/// within its share and the sum recorded exact.
async fn check_returns_and_fees(world: &World, ids: &BTreeMap<Uuid, Key>) -> Verdict {
    let payments: Vec<Key> = world
        .model
        .transactions
        .iter()
        .filter(|t| t.new.kind == TransactionKind::Payment)
        .map(|t| (t.new.merchant_id.clone(), t.new.external_ref.clone()))
        .collect();
    for found in must(
        world.store.refunded_payments(payments.clone()).await,
        "reading refunded payments",
    )? {
        let returned: i64 = found
            .refunds
            .iter()
            .filter(|r| {
                matches!(
                    r.status,
                    TransactionStatus::Completed | TransactionStatus::Pending
                )
            })
            .map(|r| r.amount_minor)
            .sum();
        ensure!(
            returned <= found.payment.amount_minor,
            "payment {}/{} of {} had {returned} returned",
            found.payment.merchant_id,
            found.payment.external_ref,
            found.payment.amount_minor
        );
    }
    let stored = must(
        world.store.fee_ledgers(payments).await,
        "reading fee ledgers",
    )?;
    let stored: BTreeMap<Key, _> = stored
        .into_iter()
        .map(|l| ((l.merchant_id.clone(), l.external_ref.clone()), l))
        .collect();
    let modelled: BTreeSet<&Key> = world.model.ledgers.keys().collect();
    ensure!(
        stored.keys().collect::<BTreeSet<_>>() == modelled,
        "fee ledgers of {:?} stored, of {modelled:?} modelled",
        stored.keys().collect::<Vec<_>>()
    );
    for (key, ledger) in &stored {
        let model = &world.model.ledgers[key];
        let sum: i64 = ledger.returns.iter().map(|r| r.returned_minor).sum();
        ensure!(
            sum == ledger.returned_minor && ledger.returns.iter().all(|r| r.returned_minor >= 0),
            "{}/{}: returns {:?} do not add up to {}",
            key.0,
            key.1,
            ledger.returns,
            ledger.returned_minor
        );
        let returns: Vec<(String, i64, NaiveDate, u32)> = ledger
            .returns
            .iter()
            .map(|r| {
                let refund = ids
                    .get(&r.refund_id)
                    .map(|k| k.1.clone())
                    .unwrap_or_default();
                (refund, r.returned_minor, r.settlement_date, r.revision)
            })
            .collect();
        let expected: Vec<(String, i64, NaiveDate, u32)> = model
            .returns
            .iter()
            .map(|r| {
                (
                    r.refund_ref.clone(),
                    r.returned_minor,
                    r.settlement_date,
                    r.revision,
                )
            })
            .collect();
        ensure!(
            returns == expected && ledger.charge.fee_minor == model.charge.fee_minor,
            "{}/{}: fee ledger charged {} returned {returns:?}, modelled charged {} returned {expected:?}",
            key.0,
            key.1,
            ledger.charge.fee_minor,
            model.charge.fee_minor
        );
    }
    let violations = world.model.fee_return_violations();
    ensure!(violations.is_empty(), "fee returns: {violations:?}");
    Ok(())
}

/// At rest: the provider paid, plus what is carried forward, is what the latest completed
/// revisions owe, per merchant and currency; each payout as the provider has it.
async fn check_money(world: &World) -> Verdict {
    let payouts = world.payouts().await?;
    let ledger: BTreeMap<String, _> = world
        .provider
        .ledger()
        .into_iter()
        .map(|e| (e.reference.clone(), e))
        .collect();
    for (reference, payout) in &payouts {
        let entry = ledger.get(reference);
        let agrees = match payout.status {
            PayoutStatus::Sent => entry.is_some_and(|e| e.status == ProviderPayoutStatus::Accepted),
            PayoutStatus::Confirmed => {
                entry.is_some_and(|e| e.status == ProviderPayoutStatus::Paid)
            }
            PayoutStatus::Failed => entry.is_none_or(|e| e.status == ProviderPayoutStatus::Failed),
            other => return Err(format!("at rest, payout {reference} is still {other}")),
        };
        ensure!(
            agrees,
            "at rest, payout {reference} is {} but {:?} at the provider",
            payout.status,
            entry.map(|e| e.status)
        );
    }
    let mut paid: BTreeMap<(String, Currency), i64> = BTreeMap::new();
    for entry in ledger.values() {
        if entry.status != ProviderPayoutStatus::Failed {
            *paid
                .entry((entry.merchant_id.clone(), entry.currency))
                .or_default() += entry.amount_minor;
        }
    }
    let carries = must(
        world.store.carry_forwards(false).await,
        "reading carry-forwards",
    )?;
    let mut carried: BTreeMap<(String, Currency), i64> = BTreeMap::new();
    for carry in carries.iter().filter(|c| c.applied_date.is_none()) {
        *carried
            .entry((carry.merchant_id.clone(), carry.currency))
            .or_default() += carry.amount_minor;
    }
    let owed = world.model.owed();
    let keys: BTreeSet<_> = owed
        .keys()
        .chain(paid.keys())
        .chain(carried.keys())
        .collect();
    for key in keys {
        let (owed, paid, carried) = (
            owed.get(key).copied().unwrap_or(0),
            paid.get(key).copied().unwrap_or(0),
            carried.get(key).copied().unwrap_or(0),
        );
        ensure!(
            paid + carried == owed,
            "{} {}: the provider paid {paid} and {carried} is carried forward, but the latest \
             completed revisions owe {owed}{}",
            key.0,
            key.1,
            money_detail(world, key, &payouts, &carries)
        );
    }
    Ok(())
}

/// Where one merchant's money in one currency stands, date by date: for a failure report.
fn money_detail(
    world: &World,
    key: &(String, Currency),
    payouts: &BTreeMap<String, settle_core::model::Payout>,
    carries: &[settle_core::model::CarryForward],
) -> String {
    let mut text = String::new();
    for (date, revisions) in &world.model.dates {
        for revision in revisions {
            if let Some(line) = revision.lines.get(key) {
                text.push_str(&format!(
                    "\n  {date} r{} ({:?}): net {}",
                    revision.revision, revision.status, line.net_minor
                ));
            }
        }
    }
    for payout in payouts
        .values()
        .filter(|p| p.merchant_id == key.0 && p.currency == key.1)
    {
        text.push_str(&format!(
            "\n  payout {} {} {}",
            payout.reference, payout.amount_minor, payout.status
        ));
    }
    for carry in carries
        .iter()
        .filter(|c| c.merchant_id == key.0 && c.currency == key.1)
    {
        text.push_str(&format!(
            "\n  carried {} from {} r{}, applied to {:?} r{:?}",
            carry.amount_minor,
            carry.origin_date,
            carry.origin_revision,
            carry.applied_date,
            carry.applied_revision
        ));
    }
    text
}

/// Checks every invariant of a world at rest.
pub async fn check_at_rest(world: &World) -> Verdict {
    check_revisions(world).await?;
    let ids = check_transactions(world).await?;
    check_returns_and_fees(world, &ids).await?;
    check_money(world).await
}

/// The export of every revision of every date.
pub async fn exports(world: &World) -> Result<Exports, String> {
    let mut exports = Exports::new();
    for (date, revisions) in &world.model.dates {
        for revision in revisions {
            let settlement = must(
                world.store.settlement(*date, Some(revision.revision)).await,
                "reading a revision",
            )?
            .ok_or_else(|| format!("{date} r{} is missing", revision.revision))?;
            let lines = must(
                world.store.settlement_lines(*date, revision.revision).await,
                "reading lines",
            )?;
            let mut bytes = Vec::new();
            must(
                write_settlement_csv(&mut bytes, &settlement, &lines, false),
                "exporting",
            )?;
            exports.insert((*date, revision.revision), bytes);
        }
    }
    Ok(exports)
}
