//! The statements a settled month's counterparties would send (the payment provider's transaction
//! report, the payout report, the bank's camt.053), with discrepancies planted where asked.
//!
//! The demo writes them as files and reconciles them; the property test plants random ones and
//! checks the reconciliation finds exactly those. Every plant says which exceptions it must cause.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};

use crate::model::{Payout, PayoutStatus, Transaction, TransactionKind, TransactionStatus};
use crate::money::Currency;
use crate::reconcile::{
    ItemSide, StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity,
    StatementKind,
};

/// A discrepancy of a known kind, planted in the statements of a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Discrepancy {
    /// The payout report leaves out one of our payouts: an exception (ours, unmatched).
    MissingPayout,
    /// The transaction report states one capture net of the provider's fee: an exception (a
    /// reference match whose difference a person must confirm).
    AmountOffByFee,
    /// One transaction report line appears twice: an exception (the repeat, a duplicate).
    DuplicateLine,
    /// The bank books one date's payouts in one currency as a single debit without references:
    /// no exception (the group rule matches them all to the one debit).
    BatchedDebit,
    /// A payout of the month's last date is not on the bank statement yet (booked after it ends):
    /// no exception (the payout is `expected`).
    LateEntry,
    /// The bank books a charge Settle has no record of: an exception (theirs, unmatched).
    UnknownCharge,
}

impl Discrepancy {
    pub const ALL: [Discrepancy; 6] = [
        Discrepancy::MissingPayout,
        Discrepancy::AmountOffByFee,
        Discrepancy::DuplicateLine,
        Discrepancy::BatchedDebit,
        Discrepancy::LateEntry,
        Discrepancy::UnknownCharge,
    ];

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Discrepancy::MissingPayout => "a missing payout",
            Discrepancy::AmountOffByFee => "an amount off by a fee",
            Discrepancy::DuplicateLine => "a duplicate line",
            Discrepancy::BatchedDebit => "a batched bank debit",
            Discrepancy::LateEntry => "a late entry",
            Discrepancy::UnknownCharge => "an unknown bank charge",
        }
    }
}

/// One discrepancy to plant; `pick` chooses its target among the eligible records (modulo their
/// number), so that the same plants give the same statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plant {
    pub discrepancy: Discrepancy,
    pub pick: u64,
}

/// An exception a plant must cause: the kind, the side, and a reference the item carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpectedException {
    pub kind: StatementKind,
    pub side: ItemSide,
    pub reference: String,
}

/// What was planted where, and what it must cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    pub discrepancy: Discrepancy,
    /// The record of ours it is about (a payout reference or an external reference).
    pub target: String,
    pub exceptions: Vec<ExpectedException>,
}

/// The month's statements and what was planted in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedStatements {
    /// One per currency (the transaction report).
    pub provider: Vec<Statement>,
    /// One per currency (the payout report).
    pub payouts: Vec<Statement>,
    /// One per currency (the bank account of that currency), for one camt.053 file.
    pub bank: Vec<Statement>,
    pub planted: Vec<Planted>,
    /// Plants that found no eligible target (a month too small): not planted.
    pub skipped: Vec<Plant>,
}

impl SimulatedStatements {
    /// The transaction report as the payment provider's CSV.
    pub fn provider_csv(&self) -> String {
        settle_statements::write::provider_report(&self.provider)
    }

    /// The payout report as the payout provider's CSV.
    pub fn payouts_csv(&self) -> String {
        settle_statements::write::payout_report(&self.payouts)
    }

    /// The bank statements as one camt.053.001.08 document.
    pub fn bank_camt053(&self) -> String {
        settle_statements::write::camt053(&self.bank, settle_statements::write::Camt053Version::V08)
    }
}

/// The fee the payment provider states on a capture: 1.5 %, half away from zero. Refunds carry none.
pub fn provider_fee_minor(amount_minor: i64) -> i64 {
    if amount_minor <= 0 {
        return 0;
    }
    let fee = (i128::from(amount_minor) * 15 + 500) / 1_000;
    i64::try_from(fee).unwrap_or(i64::MAX)
}

/// Days a plant's date keeps from the month's last date, so that its exception is due (past the
/// rules' widest window) when the statements end: the default rules' widest window is 5 days.
const DUE_MARGIN_DAYS: i64 = 8;
/// Days an unknown charge keeps from a batched debit, so that no rule could pair them.
const APART_DAYS: i64 = 4;
/// Most payouts one batched debit holds.
const BATCH_SIZE: usize = 4;
/// The opening balance of every demo bank account, in minor units.
const OPENING_MINOR: i64 = 50_000_000_000;

/// Payouts that reached the provider: what a statement can show.
fn paid(payout: &Payout) -> bool {
    matches!(payout.status, PayoutStatus::Sent | PayoutStatus::Confirmed)
}

/// When the provider paid a payout in the simulation: 06:00 UTC the day after its date.
fn paid_at(payout: &Payout) -> DateTime<Utc> {
    (payout.settlement_date + Duration::days(1))
        .and_time(NaiveTime::from_hms_opt(6, 0, 0).expect("06:00"))
        .and_utc()
}

/// A bank-style entry: its value date is its booking date.
fn entry(amount_minor: i64, currency: Currency, booking_date: NaiveDate) -> StatementEntry {
    StatementEntry {
        value_date: Some(booking_date),
        ..StatementEntry::new(amount_minor, currency, booking_date)
    }
}

/// Chooses the `pick`-th of `eligible` not yet `taken` (modulo how many are left).
fn choose<'a>(eligible: &[&'a str], taken: &BTreeSet<String>, pick: u64) -> Option<&'a str> {
    let free: Vec<&str> = eligible
        .iter()
        .copied()
        .filter(|id| !taken.contains(*id))
        .collect();
    if free.is_empty() {
        return None;
    }
    Some(free[(pick % free.len() as u64) as usize])
}

/// The statements of the month `first..=last` for `payouts` and `transactions` (both as stored),
/// with `plants` applied in order. Business dates are `transactions`' own; the reports' instants
/// are UTC. Deterministic: the same inputs and plants give the same statements.
pub fn month_statements(
    payouts: &[Payout],
    transactions: &[Transaction],
    business_date_of: impl Fn(DateTime<Utc>) -> NaiveDate,
    first: NaiveDate,
    last: NaiveDate,
    plants: &[Plant],
) -> SimulatedStatements {
    let mut payouts: Vec<&Payout> = payouts
        .iter()
        .filter(|p| paid(p) && p.settlement_date >= first && p.settlement_date <= last)
        .collect();
    payouts
        .sort_by(|a, b| (a.settlement_date, &a.reference).cmp(&(b.settlement_date, &b.reference)));
    let mut lines: Vec<&Transaction> = transactions
        .iter()
        .filter(|t| {
            t.status == TransactionStatus::Completed
                && matches!(t.kind, TransactionKind::Payment | TransactionKind::Refund)
        })
        .collect();
    lines.sort_by(|a, b| (a.occurred_at, &a.external_ref).cmp(&(b.occurred_at, &b.external_ref)));

    // Targets, chosen plant by plant; one record is the target of at most one plant.
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut planted = Vec::new();
    let mut skipped = Vec::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut off_by_fee: BTreeSet<String> = BTreeSet::new();
    let mut repeated: BTreeSet<String> = BTreeSet::new();
    let mut late: BTreeSet<String> = BTreeSet::new();
    let mut batches: Vec<(NaiveDate, Currency, Vec<String>)> = Vec::new();
    let mut charges: Vec<(NaiveDate, Currency, String)> = Vec::new();
    let due_by = last - Duration::days(DUE_MARGIN_DAYS);
    for plant in plants {
        let expected = |kind, side, reference: &str| ExpectedException {
            kind,
            side,
            reference: reference.to_string(),
        };
        let outcome: Option<(String, Vec<ExpectedException>)> = match plant.discrepancy {
            Discrepancy::MissingPayout => {
                // Not of the first date: the report's period starts with its first line, booked
                // the day after, and a record dated before a statement's period is not its item.
                let eligible: Vec<&str> = payouts
                    .iter()
                    .filter(|p| p.settlement_date > first && p.settlement_date <= due_by)
                    .map(|p| p.reference.as_str())
                    .collect();
                choose(&eligible, &taken, plant.pick).map(|r| {
                    missing.insert(r.to_string());
                    (
                        r.to_string(),
                        vec![expected(StatementKind::Payouts, ItemSide::Ours, r)],
                    )
                })
            }
            Discrepancy::AmountOffByFee | Discrepancy::DuplicateLine => {
                let eligible: Vec<&str> = lines
                    .iter()
                    .filter(|t| {
                        plant.discrepancy == Discrepancy::DuplicateLine
                            || provider_fee_minor(t.amount_minor) > 0
                                && t.kind == TransactionKind::Payment
                    })
                    .map(|t| t.external_ref.as_str())
                    .collect();
                choose(&eligible, &taken, plant.pick).map(|r| {
                    let side = if plant.discrepancy == Discrepancy::AmountOffByFee {
                        off_by_fee.insert(r.to_string());
                        ItemSide::Ours
                    } else {
                        repeated.insert(r.to_string());
                        ItemSide::Theirs
                    };
                    (
                        r.to_string(),
                        vec![expected(StatementKind::Provider, side, r)],
                    )
                })
            }
            Discrepancy::LateEntry => {
                let eligible: Vec<&str> = payouts
                    .iter()
                    .filter(|p| p.settlement_date == last)
                    .map(|p| p.reference.as_str())
                    .collect();
                choose(&eligible, &taken, plant.pick).map(|r| {
                    late.insert(r.to_string());
                    (r.to_string(), vec![])
                })
            }
            Discrepancy::BatchedDebit => {
                // A date and currency with at least two payouts, clear of other batches, of the
                // late entries' date and of unknown charges.
                let mut groups: BTreeMap<(NaiveDate, Currency), Vec<&str>> = BTreeMap::new();
                for p in &payouts {
                    if p.settlement_date <= due_by && !taken.contains(&p.reference) {
                        groups
                            .entry((p.settlement_date, p.currency))
                            .or_default()
                            .push(p.reference.as_str());
                    }
                }
                let clear = |date: NaiveDate, currency: Currency| {
                    batches.iter().all(|(d, c, _)| {
                        *c != currency || (date - *d).num_days().abs() > 2 * APART_DAYS
                    }) && charges.iter().all(|(d, c, _)| {
                        *c != currency || (date - *d).num_days().abs() > APART_DAYS
                    })
                };
                let eligible: Vec<(NaiveDate, Currency)> = groups
                    .iter()
                    .filter(|((date, currency), members)| {
                        members.len() >= 2 && clear(*date, *currency)
                    })
                    .map(|(key, _)| *key)
                    .collect();
                (!eligible.is_empty()).then(|| {
                    let key = eligible[(plant.pick % eligible.len() as u64) as usize];
                    let members: Vec<String> = groups[&key]
                        .iter()
                        .take(BATCH_SIZE)
                        .map(|r| r.to_string())
                        .collect();
                    taken.extend(members.iter().cloned());
                    let target = format!("{} {} ({} payouts)", key.0, key.1, members.len());
                    batches.push((key.0, key.1, members));
                    (target, vec![])
                })
            }
            Discrepancy::UnknownCharge => {
                let currencies: Vec<Currency> = payouts
                    .iter()
                    .map(|p| p.currency)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let dates: Vec<NaiveDate> =
                    first.iter_days().take_while(|d| *d <= due_by).collect();
                let mut eligible = Vec::new();
                for currency in &currencies {
                    for date in &dates {
                        let clear =
                            batches.iter().all(|(d, c, _)| {
                                c != currency || (*date - *d).num_days().abs() > APART_DAYS
                            }) && charges.iter().all(|(d, c, _)| c != currency || d != date);
                        if clear {
                            eligible.push((*date, *currency));
                        }
                    }
                }
                (!eligible.is_empty()).then(|| {
                    let (date, currency) = eligible[(plant.pick % eligible.len() as u64) as usize];
                    let reference = format!("CHG-{date}-{currency}-{}", charges.len() + 1);
                    charges.push((date, currency, reference.clone()));
                    (
                        reference.clone(),
                        vec![expected(StatementKind::Bank, ItemSide::Theirs, &reference)],
                    )
                })
            }
        };
        match outcome {
            Some((target, exceptions)) => {
                taken.insert(target.clone());
                planted.push(Planted {
                    discrepancy: plant.discrepancy,
                    target,
                    exceptions,
                });
            }
            None => skipped.push(*plant),
        }
    }

    // The transaction report, one statement per currency.
    let mut provider: BTreeMap<Currency, Vec<StatementEntry>> = BTreeMap::new();
    for t in &lines {
        let signed = if t.kind == TransactionKind::Refund {
            -t.amount_minor
        } else {
            t.amount_minor
        };
        let fee = provider_fee_minor(signed);
        let mut e = entry(signed, t.currency, business_date_of(t.occurred_at));
        e.value_date = None;
        e.booked_at = Some(t.occurred_at);
        e.references = vec![t.external_ref.clone()];
        e.fee_minor = Some(fee);
        if off_by_fee.contains(&t.external_ref) {
            e.amount_minor -= fee;
        }
        let copies = if repeated.contains(&t.external_ref) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            provider.entry(t.currency).or_default().push(e.clone());
        }
    }

    // The payout report and the bank statement, one statement per currency each.
    let mut report: BTreeMap<Currency, Vec<StatementEntry>> = BTreeMap::new();
    let mut bank: BTreeMap<Currency, Vec<StatementEntry>> = BTreeMap::new();
    let batched: BTreeMap<&str, usize> = batches
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, members))| members.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut batch_written = BTreeSet::new();
    for p in &payouts {
        let booked = p.settlement_date + Duration::days(1);
        if !missing.contains(&p.reference) {
            let mut e = entry(p.amount_minor, p.currency, booked);
            e.value_date = None;
            e.booked_at = Some(paid_at(p));
            e.references = vec![p.reference.clone()];
            e.external_id = p.provider_payout_id.clone();
            e.status = Some("paid".into());
            report.entry(p.currency).or_default().push(e);
        }
        if late.contains(&p.reference) {
            continue;
        }
        let mut e = entry(-p.amount_minor, p.currency, booked);
        match batched.get(p.reference.as_str()) {
            Some(&i) => {
                if !batch_written.insert(i) {
                    continue;
                }
                let (date, currency, members) = &batches[i];
                let sum: i64 = payouts
                    .iter()
                    .filter(|q| members.contains(&q.reference))
                    .map(|q| q.amount_minor)
                    .sum();
                e.amount_minor = -sum;
                e.description = format!("BATCH {date} {currency} {} PAYMENTS", members.len());
            }
            None => {
                e.references = vec![p.reference.clone()];
                e.counterparty = Some(p.merchant_id.clone());
                e.description = format!("PAYOUT {}", p.merchant_id);
            }
        }
        bank.entry(p.currency).or_default().push(e);
    }
    for (i, (date, currency, reference)) in charges.iter().enumerate() {
        let mut e = entry(-(1_250 + i as i64), *currency, *date);
        e.references = vec![reference.clone()];
        e.description = "ACCOUNT CHARGE".into();
        bank.entry(*currency).or_default().push(e);
    }

    let period_end = last + Duration::days(1);
    let statements = |kind: StatementKind,
                      format: StatementFormat,
                      by_currency: BTreeMap<Currency, Vec<StatementEntry>>| {
        by_currency
            .into_iter()
            .map(|(currency, mut entries)| {
                entries.sort_by_key(|e| e.booking_date);
                let mut statement = Statement {
                    identity: StatementIdentity {
                        kind,
                        account: format!("SETTLE-DEMO-{currency}"),
                        period_start: first,
                        period_end,
                        sequence: first.format("%Y%m").to_string(),
                    },
                    format,
                    currency,
                    opening_balance: None,
                    closing_balance: None,
                    entries,
                };
                if kind == StatementKind::Bank {
                    let total = statement.entries_total_minor().unwrap_or(0);
                    statement.opening_balance = Some(StatedBalance {
                        amount_minor: OPENING_MINOR,
                        date: first,
                    });
                    statement.closing_balance = Some(StatedBalance {
                        amount_minor: OPENING_MINOR + total,
                        date: period_end,
                    });
                }
                statement
            })
            .collect::<Vec<_>>()
    };
    SimulatedStatements {
        provider: statements(StatementKind::Provider, StatementFormat::Csv, provider),
        payouts: statements(StatementKind::Payouts, StatementFormat::Csv, report),
        bank: statements(StatementKind::Bank, StatementFormat::Camt053, bank),
        planted,
        skipped,
    }
}

/// The demo's plants: one of each kind.
pub fn demo_plants() -> Vec<Plant> {
    Discrepancy::ALL
        .iter()
        .enumerate()
        .map(|(i, discrepancy)| Plant {
            discrepancy: *discrepancy,
            pick: 7_919 * (i as u64 + 1),
        })
        .collect()
}
