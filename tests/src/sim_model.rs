//! The reference model of the deterministic simulation (`blackbox/simulation`): what Settle should
//! record, settle and charge after a sequence of operations, in plain `i64` arithmetic of its own.
//!
//! It follows the rules the README and the core's documentation state — fees per transaction
//! rounded half away from zero and clamped, refunds returning fee from what their payment was
//! charged in settlement order, late arrivals moved to the next unsealed date, payouts owed as the
//! nets of the latest completed revisions — without calling the code that implements them.
//! Settlement statuses (completed or failed, which depend on the payout provider's faults) are
//! observed from the store and fed back with [`Model::observe_status`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use settle_core::model::{PaymentMethod, TransactionKind, TransactionStatus};
use settle_core::money::Currency;

/// One fee rule; every setting optional, as in the configuration (a more specific rule overrides
/// only what it names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRule {
    /// Hundredths of a percent: 250 is 2.5 %.
    pub percent_bp: Option<i64>,
    pub fixed_minor: BTreeMap<Currency, i64>,
    pub min_minor: BTreeMap<Currency, i64>,
    pub max_minor: BTreeMap<Currency, i64>,
    pub refund_returns_percent: Option<bool>,
}

/// A fee schedule: merchant rules over method rules over the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSchedule {
    pub default: ModelRule,
    pub methods: BTreeMap<PaymentMethod, ModelRule>,
    pub merchants: BTreeMap<String, ModelRule>,
}

/// The fee charged on one payment and the terms that charged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub fee_minor: i64,
    pub percent_bp: i64,
    pub fixed_minor: i64,
    pub refund_returns_percent: bool,
}

/// `numerator / denominator` rounded half away from zero (`denominator` > 0).
pub fn round_half_away(numerator: i128, denominator: i128) -> i64 {
    let half = denominator / 2;
    let rounded = if numerator >= 0 {
        (numerator + half) / denominator
    } else {
        -((-numerator + half) / denominator)
    };
    i64::try_from(rounded).expect("a simulated amount fits in i64")
}

/// The percentage part of a fee on `amount_minor`, rounded to the minor unit.
pub fn percent_share(amount_minor: i64, percent_bp: i64) -> i64 {
    round_half_away(i128::from(amount_minor) * i128::from(percent_bp), 10_000)
}

impl ModelSchedule {
    /// The fee this schedule charges a completed payment.
    pub fn charge(
        &self,
        merchant_id: &str,
        method: PaymentMethod,
        currency: Currency,
        amount_minor: i64,
    ) -> Charge {
        let chain: Vec<&ModelRule> = [self.merchants.get(merchant_id), self.methods.get(&method)]
            .into_iter()
            .flatten()
            .chain(std::iter::once(&self.default))
            .collect();
        let percent_bp = chain.iter().find_map(|r| r.percent_bp).unwrap_or(0);
        let fixed_minor = chain
            .iter()
            .find_map(|r| r.fixed_minor.get(&currency).copied())
            .unwrap_or(0);
        let min = chain
            .iter()
            .find_map(|r| r.min_minor.get(&currency).copied());
        let max = chain
            .iter()
            .find_map(|r| r.max_minor.get(&currency).copied());
        let refund_returns_percent = chain
            .iter()
            .find_map(|r| r.refund_returns_percent)
            .unwrap_or(false);
        let mut fee_minor = percent_share(amount_minor, percent_bp) + fixed_minor;
        if let Some(min) = min {
            fee_minor = fee_minor.max(min);
        }
        if let Some(max) = max {
            fee_minor = fee_minor.min(max);
        }
        Charge {
            fee_minor,
            percent_bp,
            fixed_minor,
            refund_returns_percent,
        }
    }
}

/// A transaction as it arrives, with the date its `occurred_at` falls on in the calendar in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTx {
    pub merchant_id: String,
    pub external_ref: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub occurred_at: DateTime<Utc>,
    pub refund_of: Option<String>,
    pub natural_date: NaiveDate,
}

/// A transaction as the model keeps it: where it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTx {
    pub new: NewTx,
    pub settlement_date: NaiveDate,
    pub late: bool,
}

/// What recording one transaction through the payments service must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Inserted {
        settlement_date: NaiveDate,
        late: bool,
    },
    /// The same reference with the same content: nothing new.
    Duplicate,
    /// The same reference with other content: refused.
    Conflict,
    PaymentNotFound,
    NotRefundable,
    ExceedsPayment {
        remaining_minor: i64,
    },
}

/// What importing one file must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A bad row: nothing of the file is stored.
    Refused,
    Stored {
        inserted: u64,
        duplicates: u64,
        late: u64,
    },
}

/// How a run asks to claim a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    Run,
    Rerun,
    Retry,
}

/// What a claim must do, given the date's revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new revision (1 for a first run, latest + 1 for a rerun) is computed.
    Compute(u32),
    /// The failed latest revision is resumed as it was computed.
    Resume(u32),
    AlreadySettled,
    RevisionFailed,
    NothingToDo,
}

/// Where a revision stands, as observed in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionStatus {
    Completed,
    Failed,
}

/// One line's counts and amounts (the engine's `SettlementFigures`, field for field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub transaction_count: u64,
    pub completed_count: u64,
    pub failed_count: u64,
    pub cancelled_count: u64,
    pub pending_count: u64,
    pub payment_count: u64,
    pub refund_count: u64,
    pub chargeback_count: u64,
    pub adjustment_count: u64,
    pub late_count: u64,
    pub gross_minor: i64,
    pub refunds_minor: i64,
    pub chargebacks_minor: i64,
    pub adjustments_minor: i64,
    pub fees_minor: i64,
    pub net_minor: i64,
}

/// Lines by (merchant_id, currency).
pub type Lines = BTreeMap<(String, Currency), Figures>;

/// One revision of one date.
#[derive(Debug, Clone)]
pub struct Revision {
    pub revision: u32,
    pub schedule: ModelSchedule,
    pub status: RevisionStatus,
    pub lines: Lines,
}

/// What one settled refund returned of its payment's fee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    pub refund_ref: String,
    pub returned_minor: i64,
    /// The revision that computed it.
    pub settlement_date: NaiveDate,
    pub revision: u32,
    /// The charge it was computed from.
    pub terms: Charge,
}

/// A refunded payment's fee ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// The charge the latest computed return was capped by.
    pub charge: Charge,
    /// In settlement order.
    pub returns: Vec<Return>,
}

impl Ledger {
    pub fn returned_minor(&self) -> i64 {
        self.returns.iter().map(|r| r.returned_minor).sum()
    }
}

/// (merchant_id, external_ref).
pub type Key = (String, String);

/// The model of one sequence.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Every stored transaction, in recording order.
    pub transactions: Vec<ModelTx>,
    /// Revisions by date, oldest first.
    pub dates: BTreeMap<NaiveDate, Vec<Revision>>,
    pub ledgers: BTreeMap<Key, Ledger>,
}

fn counts_as_returned(tx: &NewTx) -> bool {
    matches!(
        tx.kind,
        TransactionKind::Refund | TransactionKind::Chargeback
    ) && matches!(
        tx.status,
        TransactionStatus::Completed | TransactionStatus::Pending
    )
}

fn same_content(a: &NewTx, b: &NewTx) -> bool {
    (
        &a.merchant_id,
        &a.external_ref,
        a.kind,
        a.status,
        a.amount_minor,
        a.currency,
        a.method,
        a.occurred_at,
        &a.refund_of,
    ) == (
        &b.merchant_id,
        &b.external_ref,
        b.kind,
        b.status,
        b.amount_minor,
        b.currency,
        b.method,
        b.occurred_at,
        &b.refund_of,
    )
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    pub fn find(&self, merchant_id: &str, external_ref: &str) -> Option<&ModelTx> {
        self.transactions
            .iter()
            .find(|t| t.new.merchant_id == merchant_id && t.new.external_ref == external_ref)
    }

    /// Dates with a revision: nothing new lands on them.
    pub fn is_sealed(&self, date: NaiveDate) -> bool {
        self.dates
            .get(&date)
            .is_some_and(|revisions| !revisions.is_empty())
    }

    /// The first unsealed date at or after `natural`.
    pub fn landing_date(&self, natural: NaiveDate) -> NaiveDate {
        let mut date = natural;
        while self.is_sealed(date) {
            date = date.succ_opt().expect("a date after");
        }
        date
    }

    /// What completed or pending refunds and chargebacks returned of a payment so far.
    pub fn returned_of(&self, merchant_id: &str, payment_ref: &str) -> i64 {
        self.transactions
            .iter()
            .filter(|t| {
                t.new.merchant_id == merchant_id
                    && t.new.refund_of.as_deref() == Some(payment_ref)
                    && counts_as_returned(&t.new)
            })
            .map(|t| t.new.amount_minor)
            .sum()
    }

    /// Why a return cannot be recorded, given what is stored (and `extra_returned_minor` more).
    fn return_refusal(&self, tx: &NewTx, extra_returned_minor: i64) -> Option<Recorded> {
        let kind_returns = matches!(
            tx.kind,
            TransactionKind::Refund | TransactionKind::Chargeback
        );
        let (true, Some(payment_ref)) = (kind_returns, &tx.refund_of) else {
            return None;
        };
        let Some(payment) = self.find(&tx.merchant_id, payment_ref) else {
            return Some(Recorded::PaymentNotFound);
        };
        let payment = &payment.new;
        if payment.kind != TransactionKind::Payment
            || payment.status != TransactionStatus::Completed
            || payment.currency != tx.currency
        {
            return Some(Recorded::NotRefundable);
        }
        let returned = self.returned_of(&tx.merchant_id, payment_ref) + extra_returned_minor;
        (returned + tx.amount_minor > payment.amount_minor).then(|| Recorded::ExceedsPayment {
            remaining_minor: (payment.amount_minor - returned).max(0),
        })
    }

    fn insert(&mut self, tx: NewTx) -> (NaiveDate, bool) {
        let settlement_date = self.landing_date(tx.natural_date);
        let late = settlement_date != tx.natural_date;
        self.transactions.push(ModelTx {
            new: tx,
            settlement_date,
            late,
        });
        (settlement_date, late)
    }

    /// Records one transaction as the payments service does: the reference first (duplicate or
    /// conflict), then a return's payment and limit, then the date.
    pub fn record(&mut self, tx: NewTx) -> Recorded {
        if let Some(stored) = self.find(&tx.merchant_id, &tx.external_ref) {
            return if same_content(&stored.new, &tx) {
                Recorded::Duplicate
            } else {
                Recorded::Conflict
            };
        }
        if let Some(refusal) = self.return_refusal(&tx, 0) {
            return refusal;
        }
        let (settlement_date, late) = self.insert(tx);
        Recorded::Inserted {
            settlement_date,
            late,
        }
    }

    /// Imports a file of valid rows all or nothing (`spoiled`: one row is invalid). Returns are
    /// checked in file order against stored payments (the files of the simulation name no payment
    /// of their own).
    pub fn import(&mut self, rows: Vec<NewTx>, spoiled: bool) -> Imported {
        if spoiled {
            return Imported::Refused;
        }
        let mut fresh: Vec<NewTx> = Vec::new();
        let mut duplicates = 0;
        let mut in_file_returned: BTreeMap<Key, i64> = BTreeMap::new();
        for row in rows {
            if let Some(earlier) = fresh
                .iter()
                .find(|t| t.merchant_id == row.merchant_id && t.external_ref == row.external_ref)
            {
                if same_content(earlier, &row) {
                    duplicates += 1;
                    continue;
                }
                return Imported::Refused;
            }
            if let Some(stored) = self.find(&row.merchant_id, &row.external_ref) {
                if same_content(&stored.new, &row) {
                    duplicates += 1;
                    continue;
                }
                return Imported::Refused;
            }
            if let Some(payment_ref) = row.refund_of.clone() {
                let key = (row.merchant_id.clone(), payment_ref);
                let extra = in_file_returned.get(&key).copied().unwrap_or(0);
                if self.return_refusal(&row, extra).is_some() {
                    return Imported::Refused;
                }
                if counts_as_returned(&row) {
                    *in_file_returned.entry(key).or_default() += row.amount_minor;
                }
            }
            fresh.push(row);
        }
        let inserted = fresh.len() as u64;
        let mut late = 0;
        for row in fresh {
            late += u64::from(self.insert(row).1);
        }
        Imported::Stored {
            inserted,
            duplicates,
            late,
        }
    }

    fn latest(&self, date: NaiveDate) -> Option<&Revision> {
        self.dates.get(&date).and_then(|revisions| revisions.last())
    }

    /// What a claim of `date` must do.
    pub fn claim(&self, date: NaiveDate, mode: ClaimMode) -> Claim {
        let Some(latest) = self.latest(date) else {
            return match mode {
                ClaimMode::Run => Claim::Compute(1),
                ClaimMode::Rerun | ClaimMode::Retry => Claim::NothingToDo,
            };
        };
        match (mode, latest.status) {
            (ClaimMode::Rerun, _) => Claim::Compute(latest.revision + 1),
            (_, RevisionStatus::Completed) => Claim::AlreadySettled,
            (ClaimMode::Run, RevisionStatus::Failed) => Claim::RevisionFailed,
            (ClaimMode::Retry, RevisionStatus::Failed) => Claim::Resume(latest.revision),
        }
    }

    /// The schedule a rerun uses: the latest revision's, or the current one.
    pub fn rerun_schedule(
        &self,
        date: NaiveDate,
        current: &ModelSchedule,
        apply_current_fees: bool,
    ) -> ModelSchedule {
        match self.latest(date) {
            Some(latest) if !apply_current_fees => latest.schedule.clone(),
            _ => current.clone(),
        }
    }

    /// The charge of a payment settled on another date: by that date's latest completed revision,
    /// else its latest revision; `None` while it has none.
    fn charge_elsewhere(&self, payment: &ModelTx) -> Option<Charge> {
        let revisions = self.dates.get(&payment.settlement_date)?;
        let charging = revisions
            .iter()
            .rev()
            .find(|r| r.status == RevisionStatus::Completed)
            .or_else(|| revisions.last())?;
        Some(charging.schedule.charge(
            &payment.new.merchant_id,
            payment.new.method,
            payment.new.currency,
            payment.new.amount_minor,
        ))
    }

    /// What one refund returns, updating its payment's ledger as a settlement in order does.
    fn settle_refund(
        &mut self,
        payment: &ModelTx,
        charge: Option<Charge>,
        refund: &ModelTx,
        date: NaiveDate,
        revision: u32,
    ) -> i64 {
        let key = (
            payment.new.merchant_id.clone(),
            payment.new.external_ref.clone(),
        );
        let refund_ref = refund.new.external_ref.clone();
        if let Some(ledger) = self.ledgers.get(&key) {
            if let Some(earlier) = ledger.returns.iter().find(|r| r.refund_ref == refund_ref) {
                // Reused while the payment's charge keeps the terms this return was computed from
                // (the core's rule: "reruns reuse the amount while the payment's charge keeps its
                // terms").
                if charge.is_none_or(|c| c == earlier.terms) {
                    return earlier.returned_minor;
                }
            }
        }
        let Some(charge) = charge else {
            return 0;
        };
        let ledger = self.ledgers.entry(key).or_insert_with(|| Ledger {
            charge,
            returns: Vec::new(),
        });
        ledger.returns.retain(|r| r.refund_ref != refund_ref);
        let left_minor = charge.fee_minor - ledger.returned_minor();
        let returned_minor = if !charge.refund_returns_percent || left_minor <= 0 {
            0
        } else {
            percent_share(refund.new.amount_minor, charge.percent_bp).clamp(0, left_minor)
        };
        ledger.charge = charge;
        ledger.returns.push(Return {
            refund_ref,
            returned_minor,
            settlement_date: date,
            revision,
            terms: charge,
        });
        returned_minor
    }

    /// Computes revision `revision` of `date` with `schedule` (a first run or a rerun), updating
    /// the fee ledgers, and records it as failed until its status is observed.
    pub fn settle(&mut self, date: NaiveDate, revision: u32, schedule: &ModelSchedule) -> Lines {
        let on_date: Vec<ModelTx> = self
            .transactions
            .iter()
            .filter(|t| t.settlement_date == date)
            .cloned()
            .collect();
        let mut lines = Lines::new();
        let mut refunds: Vec<&ModelTx> = Vec::new();
        for tx in &on_date {
            let t = &tx.new;
            let line = lines
                .entry((t.merchant_id.clone(), t.currency))
                .or_default();
            line.transaction_count += 1;
            line.late_count += u64::from(tx.late);
            match t.status {
                TransactionStatus::Completed => line.completed_count += 1,
                TransactionStatus::Failed => line.failed_count += 1,
                TransactionStatus::Cancelled => line.cancelled_count += 1,
                TransactionStatus::Pending => line.pending_count += 1,
            }
            if t.status != TransactionStatus::Completed {
                continue;
            }
            match t.kind {
                TransactionKind::Payment => {
                    line.payment_count += 1;
                    line.gross_minor += t.amount_minor;
                    line.fees_minor += schedule
                        .charge(&t.merchant_id, t.method, t.currency, t.amount_minor)
                        .fee_minor;
                }
                TransactionKind::Refund => {
                    line.refund_count += 1;
                    line.refunds_minor += t.amount_minor;
                    if t.refund_of.is_some() {
                        refunds.push(tx);
                    }
                }
                TransactionKind::Chargeback => {
                    line.chargeback_count += 1;
                    line.chargebacks_minor += t.amount_minor;
                }
                TransactionKind::Adjustment => {
                    line.adjustment_count += 1;
                    line.adjustments_minor += t.amount_minor;
                }
            }
        }
        // Refunds return fee in settlement order: by occurred_at (unique in a simulation).
        refunds.sort_by_key(|r| r.new.occurred_at);
        for refund in refunds {
            let r = &refund.new;
            let payment = self
                .find(&r.merchant_id, r.refund_of.as_deref().unwrap_or_default())
                .cloned();
            let Some(payment) = payment else { continue };
            let p = &payment.new;
            let returns_fee = p.kind == TransactionKind::Payment
                && p.status == TransactionStatus::Completed
                && p.currency == r.currency;
            if !returns_fee {
                continue;
            }
            let charge = if payment.settlement_date == date {
                Some(schedule.charge(&p.merchant_id, p.method, p.currency, p.amount_minor))
            } else {
                self.charge_elsewhere(&payment)
            };
            let returned = self.settle_refund(&payment, charge, refund, date, revision);
            lines
                .get_mut(&(r.merchant_id.clone(), r.currency))
                .expect("the refund's line")
                .fees_minor -= returned;
        }
        for line in lines.values_mut() {
            line.net_minor = line.gross_minor - line.refunds_minor - line.chargebacks_minor
                + line.adjustments_minor
                - line.fees_minor;
        }
        self.dates.entry(date).or_default().push(Revision {
            revision,
            schedule: schedule.clone(),
            status: RevisionStatus::Failed,
            lines: lines.clone(),
        });
        lines
    }

    /// Records the status the store reports for a revision.
    pub fn observe_status(&mut self, date: NaiveDate, revision: u32, status: RevisionStatus) {
        if let Some(found) = self
            .dates
            .get_mut(&date)
            .and_then(|revisions| revisions.iter_mut().find(|r| r.revision == revision))
        {
            found.status = status;
        }
    }

    /// Dates holding transactions but no revision yet.
    pub fn unsettled_dates(&self) -> BTreeSet<NaiveDate> {
        self.transactions
            .iter()
            .map(|t| t.settlement_date)
            .filter(|date| !self.is_sealed(*date))
            .collect()
    }

    /// Per merchant and currency: the sum of the nets of every date's latest completed revision.
    pub fn owed(&self) -> BTreeMap<(String, Currency), i64> {
        let mut owed = BTreeMap::new();
        for revisions in self.dates.values() {
            let Some(latest) = revisions
                .iter()
                .rev()
                .find(|r| r.status == RevisionStatus::Completed)
            else {
                continue;
            };
            for (key, figures) in &latest.lines {
                *owed.entry(key.clone()).or_insert(0) += figures.net_minor;
            }
        }
        owed
    }

    /// The charge of a payment by its date's latest completed revision (`None` before one).
    pub fn settled_charge(&self, payment: &ModelTx) -> Option<Charge> {
        let revisions = self.dates.get(&payment.settlement_date)?;
        let charging = revisions
            .iter()
            .rev()
            .find(|r| r.status == RevisionStatus::Completed)?;
        Some(charging.schedule.charge(
            &payment.new.merchant_id,
            payment.new.method,
            payment.new.currency,
            payment.new.amount_minor,
        ))
    }

    /// Fee-return rules the model itself must keep: every return is at most its percentage share
    /// of the terms it was computed from, and a payment whose returns were all computed from its
    /// current charge never gets back more fee than that charge.
    pub fn fee_return_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        for ((merchant_id, payment_ref), ledger) in &self.ledgers {
            for r in &ledger.returns {
                let refund = self
                    .find(merchant_id, &r.refund_ref)
                    .expect("a returned refund");
                let share = percent_share(refund.new.amount_minor, r.terms.percent_bp);
                if r.returned_minor < 0 || r.returned_minor > share {
                    violations.push(format!(
                        "refund {merchant_id}/{} returned {} of a {share} share",
                        r.refund_ref, r.returned_minor
                    ));
                }
            }
            let payment = self
                .find(merchant_id, payment_ref)
                .expect("a refunded payment");
            if let Some(charge) = self.settled_charge(payment) {
                let current = ledger.returns.iter().all(|r| r.terms == charge);
                if current && ledger.returned_minor() > charge.fee_minor {
                    violations.push(format!(
                        "payment {merchant_id}/{payment_ref} got back {} of a {} fee",
                        ledger.returned_minor(),
                        charge.fee_minor
                    ));
                }
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(percent_share(100, 250), 3);
        assert_eq!(percent_share(50, 250), 1);
        assert_eq!(percent_share(1010, 250), 25);
        assert_eq!(round_half_away(-25, 10), -3);
    }

    #[test]
    fn rules_override_only_what_they_name() {
        let mut schedule = ModelSchedule::default();
        schedule.default.percent_bp = Some(250);
        schedule.default.fixed_minor.insert(usd(), 30);
        schedule.default.max_minor.insert(usd(), 100);
        schedule.merchants.insert(
            "m-1".into(),
            ModelRule {
                percent_bp: Some(100),
                ..ModelRule::default()
            },
        );
        let charge = schedule.charge("m-1", PaymentMethod::Card, usd(), 10_000);
        assert_eq!((charge.fee_minor, charge.fixed_minor), (100, 30));
        let charge = schedule.charge("m-2", PaymentMethod::Card, usd(), 1_000);
        assert_eq!(charge.fee_minor, 55);
    }
}
