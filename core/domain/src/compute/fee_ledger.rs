//! What a refund returns of its payment's fee: computed from the fee the payment was actually
//! charged (never today's schedule) and capped by the payment's running returned amount.
//!
//! Refunds consume a payment's fee in settlement order: the first time a refund is settled its
//! return is recorded in the payment's ledger, and every later revision reuses that amount, so a
//! rerun of any date reproduces its own figures and a late, back-dated refund cannot return again
//! what an earlier-settled refund already returned.

use std::collections::HashMap;

use crate::calendar::SettlementDate;
use crate::compute::PaymentKey;
use crate::model::fees::FeeSchedule;
use crate::model::{
    FeeCharge, FeeLedgerWrite, FeeReturn, PaymentFeeLedger, Transaction, TransactionKind,
    TransactionStatus,
};
use crate::money::{Money, MoneyError};

/// The fee `schedule` charges `payment`, as the revision (`settlement_date`, `revision`) computed it.
pub fn charge_of(
    schedule: &FeeSchedule,
    payment: &Transaction,
    settlement_date: SettlementDate,
    revision: u32,
) -> Result<FeeCharge, MoneyError> {
    let rule = schedule.resolve(&payment.merchant_id, payment.method, payment.currency);
    Ok(FeeCharge {
        fee_minor: rule.payment_fee(payment.amount_minor)?,
        percent: rule.percent,
        fixed_minor: rule.fixed_minor,
        refund_returns_percent: rule.refund_returns_percent,
        settlement_date,
        revision,
    })
}

/// The fee a refund of `refund_minor` returns given `charge` and what earlier refunds returned: the
/// percentage part on the refunded amount (rounded half away from zero), if the charging rule
/// returns it, and never more than is left of the fee charged.
pub fn fee_return(
    charge: &FeeCharge,
    currency: crate::money::Currency,
    refund_minor: i64,
    returned_so_far_minor: i64,
) -> Result<i64, MoneyError> {
    let left_minor = charge
        .fee_minor
        .checked_sub(returned_so_far_minor)
        .ok_or(MoneyError::Overflow(currency))?;
    if !charge.refund_returns_percent || left_minor <= 0 || refund_minor <= 0 {
        return Ok(0);
    }
    let share = Money::new(refund_minor, currency).to_decimal() * charge.percent
        / rust_decimal::Decimal::ONE_HUNDRED;
    let share_minor = Money::from_decimal_rounded(share, currency)?.minor;
    Ok(share_minor.clamp(0, left_minor))
}

/// Whether `refund` can return any of `payment`'s fee at all.
pub fn returns_fee_of(payment: &Transaction, refund: &Transaction) -> bool {
    refund.kind == TransactionKind::Refund
        && refund.status == TransactionStatus::Completed
        && payment.kind == TransactionKind::Payment
        && payment.status == TransactionStatus::Completed
        && payment.merchant_id == refund.merchant_id
        && payment.currency == refund.currency
        && refund.refund_of.as_deref() == Some(payment.external_ref.as_str())
}

/// One ledger while a run settles refunds, with the version it was read at.
#[derive(Debug)]
struct Entry {
    ledger: PaymentFeeLedger,
    read_version: Option<u64>,
    changed: bool,
}

/// The ledgers of the payments a run's refunds return, read once, updated in memory as the run
/// settles refunds in order, and written with the run's result (compare-and-set on each version).
#[derive(Debug, Default)]
pub struct FeeLedgerBook {
    entries: HashMap<PaymentKey, Entry>,
}

impl FeeLedgerBook {
    /// A book over the stored ledgers of the payments it will see.
    pub fn new(stored: impl IntoIterator<Item = PaymentFeeLedger>) -> Self {
        let mut book = FeeLedgerBook::default();
        book.add_stored(stored);
        book
    }

    /// Adds stored ledgers read later (a run reads them chunk by chunk); one already here is kept.
    pub fn add_stored(&mut self, stored: impl IntoIterator<Item = PaymentFeeLedger>) {
        for ledger in stored {
            let key = (ledger.merchant_id.clone(), ledger.external_ref.clone());
            self.entries.entry(key).or_insert(Entry {
                read_version: Some(ledger.version),
                ledger,
                changed: false,
            });
        }
    }

    /// Whether the book holds the ledger of this payment (stored or created by this run).
    pub fn knows(&self, key: &PaymentKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Settles one refund of `payment`, which `charge` charged (`None`: its date is not settled
    /// yet, so nothing was charged and nothing is returned): the return it recorded before (while
    /// the charge keeps its terms), or a new one capped by what the payment's other settled refunds
    /// returned. Refunds of one run must be
    /// settled in a deterministic order (the runner uses occurred_at, then id).
    pub fn settle_refund(
        &mut self,
        payment: &Transaction,
        charge: Option<FeeCharge>,
        refund: &Transaction,
        settlement_date: SettlementDate,
        revision: u32,
    ) -> Result<i64, MoneyError> {
        if !returns_fee_of(payment, refund) {
            return Ok(0);
        }
        let key = (payment.merchant_id.clone(), payment.external_ref.clone());
        if let Some(entry) = self.entries.get(&key) {
            if let Some(earlier) = entry.ledger.return_of(refund.id) {
                // A rerun reproduces the return, unless the charge that return was computed
                // from was recomputed on other terms (a rerun of the payment's date with
                // today's fees). The terms compared are the return's own, not the ledger's
                // latest charge, which another refund's recomputation may have set.
                let behind = entry.ledger.charge_behind(earlier);
                let same_charge = charge
                    .as_ref()
                    .is_none_or(|charge| charge.same_terms(behind));
                if same_charge {
                    return Ok(earlier.returned_minor);
                }
            }
        }
        let Some(charge) = charge else {
            return Ok(0);
        };
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            ledger: PaymentFeeLedger {
                merchant_id: payment.merchant_id.clone(),
                external_ref: payment.external_ref.clone(),
                payment_id: payment.id,
                currency: payment.currency,
                charge: charge.clone(),
                returned_minor: 0,
                returns: Vec::new(),
                version: 0,
            },
            read_version: None,
            changed: false,
        });
        let ledger = &mut entry.ledger;
        // A return computed from an earlier charge gives way to one from this charge.
        if let Some(position) = ledger.returns.iter().position(|r| r.refund_id == refund.id) {
            let stale = ledger.returns.remove(position);
            ledger.returned_minor = ledger
                .returned_minor
                .checked_sub(stale.returned_minor)
                .ok_or(MoneyError::Overflow(payment.currency))?;
        }
        let returned_minor = fee_return(
            &charge,
            payment.currency,
            refund.amount_minor,
            ledger.returned_minor,
        )?;
        ledger.returned_minor = ledger
            .returned_minor
            .checked_add(returned_minor)
            .ok_or(MoneyError::Overflow(payment.currency))?;
        // The engine's invariant where it is made: one return is within the fee charged. (The
        // ledger's sum may pass a lowered charge for a moment, until the payment's other returns,
        // computed under the earlier charge, are computed again; the property test below checks
        // the sum once they are.)
        debug_assert!(
            (0..=charge.fee_minor.max(0)).contains(&returned_minor),
            "a fee return of {returned_minor} outside [0, fee charged {}]",
            charge.fee_minor
        );
        ledger.charge = charge.clone();
        ledger.returns.push(FeeReturn {
            refund_id: refund.id,
            returned_minor,
            settlement_date,
            revision,
            charge: Some(charge),
        });
        entry.changed = true;
        Ok(returned_minor)
    }

    /// The ledgers this run changed, each with the version it read, ordered by payment key.
    pub fn writes(self) -> Vec<FeeLedgerWrite> {
        let mut writes: Vec<FeeLedgerWrite> = self
            .entries
            .into_values()
            .filter(|entry| entry.changed)
            .map(|mut entry| {
                entry.ledger.version = entry.read_version.map_or(1, |v| v + 1);
                FeeLedgerWrite {
                    ledger: entry.ledger,
                    expected_version: entry.read_version,
                }
            })
            .collect();
        writes.sort_by(|a, b| {
            (&a.ledger.merchant_id, &a.ledger.external_ref)
                .cmp(&(&b.ledger.merchant_id, &b.ledger.external_ref))
        });
        writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fees::{AmountByCurrency, FeeRule};
    use crate::model::PaymentMethod;
    use crate::money::Currency;
    use chrono::{DateTime, Duration, NaiveDate, Utc};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn date(day: u32) -> SettlementDate {
        NaiveDate::from_ymd_opt(2024, 3, day).unwrap()
    }

    fn tx(n: u128, kind: TransactionKind, amount_minor: i64) -> Transaction {
        let at: DateTime<Utc> = "2024-03-10T10:00:00Z".parse().unwrap();
        Transaction {
            id: Uuid::from_u128(n),
            merchant_id: "m-1".into(),
            kind,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: usd(),
            method: PaymentMethod::Card,
            occurred_at: at + Duration::seconds(n as i64),
            external_ref: format!("ref-{n}"),
            refund_of: (kind == TransactionKind::Refund).then(|| "ref-1".to_string()),
            created_at: at,
            settlement_date: date(10),
            late: false,
        }
    }

    fn schedule(percent: &str, max_minor: Option<i64>) -> FeeSchedule {
        FeeSchedule {
            default: FeeRule {
                percent: Some(Decimal::from_str_exact(percent).unwrap()),
                max: AmountByCurrency(max_minor.map(|m| (usd(), m)).into_iter().collect()),
                refund_returns_percent: Some(true),
                ..FeeRule::default()
            },
            ..FeeSchedule::default()
        }
    }

    #[test]
    fn a_refund_returns_from_the_fee_charged_not_from_todays_schedule() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        // Charged at 1 % when its date was settled; the schedule is 5 % by the time it is refunded.
        let charge = charge_of(&schedule("1", None), &payment, date(10), 1).unwrap();
        assert_eq!(charge.fee_minor, 100);
        let mut book = FeeLedgerBook::default();
        let refund = tx(2, TransactionKind::Refund, 10_000);
        let returned = book
            .settle_refund(&payment, Some(charge), &refund, date(11), 1)
            .unwrap();
        assert_eq!(returned, 100);
    }

    #[test]
    fn a_late_back_dated_refund_cannot_return_what_an_earlier_settled_one_did() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        let charge = charge_of(&schedule("2.5", Some(100)), &payment, date(10), 1).unwrap();
        assert_eq!(charge.fee_minor, 100);
        let first = tx(5, TransactionKind::Refund, 6_000);
        let mut book = FeeLedgerBook::default();
        assert_eq!(
            book.settle_refund(&payment, Some(charge.clone()), &first, date(11), 1)
                .unwrap(),
            100
        );
        let stored: Vec<PaymentFeeLedger> = book.writes().into_iter().map(|w| w.ledger).collect();
        assert_eq!(stored[0].returned_minor, 100);
        // Recorded late and back-dated before the first: settled later, it finds nothing left.
        let late = tx(3, TransactionKind::Refund, 4_000);
        let mut later = FeeLedgerBook::new(stored.clone());
        assert_eq!(
            later
                .settle_refund(&payment, Some(charge.clone()), &late, date(12), 1)
                .unwrap(),
            0
        );
        // A rerun of the first refund's date reproduces its 1.00.
        let mut rerun = FeeLedgerBook::new(stored);
        assert_eq!(
            rerun
                .settle_refund(&payment, Some(charge), &first, date(11), 2)
                .unwrap(),
            100
        );
        assert!(rerun.writes().is_empty(), "a reused return changes nothing");
    }

    #[test]
    fn a_charge_recomputed_on_new_terms_recomputes_its_refunds_returns_within_the_cap() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        let old = charge_of(&schedule("2.5", None), &payment, date(10), 1).unwrap();
        let refund = tx(5, TransactionKind::Refund, 4_000);
        let other = tx(6, TransactionKind::Refund, 6_000);
        let mut book = FeeLedgerBook::default();
        assert_eq!(
            book.settle_refund(&payment, Some(old.clone()), &refund, date(10), 1)
                .unwrap(),
            100
        );
        assert_eq!(
            book.settle_refund(&payment, Some(old), &other, date(11), 1)
                .unwrap(),
            150
        );
        let stored: Vec<PaymentFeeLedger> = book.writes().into_iter().map(|w| w.ledger).collect();
        // The payment's date rerun at 1 %: its charge is now 1.00, of which the other date's
        // refund already returned 1.50, so this date's refund returns nothing more.
        let new = charge_of(&schedule("1", None), &payment, date(10), 2).unwrap();
        assert_eq!(new.fee_minor, 100);
        let mut rerun = FeeLedgerBook::new(stored);
        assert_eq!(
            rerun
                .settle_refund(&payment, Some(new), &refund, date(10), 2)
                .unwrap(),
            0
        );
        let written = rerun.writes();
        assert_eq!(written[0].ledger.returned_minor, 150);
        assert_eq!(written[0].ledger.returns.len(), 2);
    }

    #[test]
    fn a_return_is_reused_only_under_the_terms_it_was_computed_from() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        let old = charge_of(&schedule("2.5", None), &payment, date(10), 1).unwrap();
        let first = tx(5, TransactionKind::Refund, 4_000);
        let second = tx(6, TransactionKind::Refund, 6_000);
        let mut book = FeeLedgerBook::default();
        book.settle_refund(&payment, Some(old.clone()), &first, date(11), 1)
            .unwrap();
        book.settle_refund(&payment, Some(old), &second, date(12), 1)
            .unwrap();
        let stored: Vec<PaymentFeeLedger> = book.writes().into_iter().map(|w| w.ledger).collect();
        assert_eq!(stored[0].returned_minor, 250);
        // The payment's date was rerun at 1 % (fee 1.00); the first refund's date is rerun under
        // it: 1.50 of the second refund is still counted, so it returns nothing, and the ledger's
        // charge becomes the new one.
        let new = charge_of(&schedule("1", None), &payment, date(10), 2).unwrap();
        let mut rerun = FeeLedgerBook::new(stored);
        assert_eq!(
            rerun
                .settle_refund(&payment, Some(new.clone()), &first, date(11), 2)
                .unwrap(),
            0
        );
        let stored: Vec<PaymentFeeLedger> = rerun.writes().into_iter().map(|w| w.ledger).collect();
        assert!(stored[0].charge.same_terms(&new));
        // The second refund's 1.50 was computed at 2.5 %: it is recomputed at 1 %, not reused,
        // and the payment's returns stay within the 1.00 now charged.
        let mut rerun = FeeLedgerBook::new(stored);
        assert_eq!(
            rerun
                .settle_refund(&payment, Some(new.clone()), &second, date(12), 2)
                .unwrap(),
            60
        );
        let written = rerun.writes();
        assert_eq!(written[0].ledger.returned_minor, 60);
        assert!(written[0].ledger.returned_minor <= new.fee_minor);
    }

    #[test]
    fn writes_carry_the_version_they_read() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        let charge = charge_of(&schedule("2.5", None), &payment, date(10), 1).unwrap();
        let mut book = FeeLedgerBook::default();
        book.settle_refund(
            &payment,
            Some(charge.clone()),
            &tx(2, TransactionKind::Refund, 1_000),
            date(11),
            1,
        )
        .unwrap();
        let first = book.writes();
        assert_eq!(first[0].expected_version, None);
        assert_eq!(first[0].ledger.version, 1);
        let mut next = FeeLedgerBook::new(vec![first[0].ledger.clone()]);
        next.settle_refund(
            &payment,
            Some(charge),
            &tx(3, TransactionKind::Refund, 1_000),
            date(12),
            1,
        )
        .unwrap();
        let second = next.writes();
        assert_eq!(second[0].expected_version, Some(1));
        assert_eq!(second[0].ledger.version, 2);
        assert_eq!(second[0].ledger.returned_minor, 50);
    }

    #[test]
    fn nothing_is_returned_before_the_payment_was_charged_or_when_the_rule_says_no() {
        let payment = tx(1, TransactionKind::Payment, 10_000);
        let refund = tx(2, TransactionKind::Refund, 10_000);
        let mut book = FeeLedgerBook::default();
        assert_eq!(
            book.settle_refund(&payment, None, &refund, date(11), 1)
                .unwrap(),
            0
        );
        let mut keeps = schedule("2.5", None);
        keeps.default.refund_returns_percent = Some(false);
        let charge = charge_of(&keeps, &payment, date(10), 1).unwrap();
        assert_eq!(
            book.settle_refund(&payment, Some(charge), &refund, date(11), 1)
                .unwrap(),
            0
        );
    }

    proptest! {
        /// Whatever the refunds, their order and the schedule, a payment never gets back more fee
        /// than it was charged, and each return is at most its own percentage share.
        #[test]
        fn fee_returned_never_exceeds_fee_charged(
            amount_minor in 1_i64..10_000_000,
            percent_bp in 0_u32..10_000,
            max_minor in proptest::option::of(0_i64..50_000),
            refunds in proptest::collection::vec(1_i64..10_000_000, 1..8),
            runs in 1_usize..4,
        ) {
            let payment = tx(1, TransactionKind::Payment, amount_minor);
            let percent = Decimal::new(i64::from(percent_bp), 2).to_string();
            let charge = charge_of(&schedule(&percent, max_minor), &payment, date(10), 1).unwrap();
            let mut stored: Vec<PaymentFeeLedger> = Vec::new();
            let mut returned_total = 0_i64;
            // The refunds settled over `runs` runs, each run re-reading what the last one wrote.
            for (run, chunk) in refunds.chunks(refunds.len().div_ceil(runs)).enumerate() {
                let mut book = FeeLedgerBook::new(stored.clone());
                for (n, refund_minor) in chunk.iter().enumerate() {
                    let refund = tx(100 + (run * 10 + n) as u128, TransactionKind::Refund, *refund_minor);
                    let returned = book
                        .settle_refund(&payment, Some(charge.clone()), &refund, date(11), 1)
                        .unwrap();
                    let share = (i128::from(*refund_minor) * i128::from(percent_bp) + 5_000) / 10_000;
                    prop_assert!(returned >= 0 && i128::from(returned) <= share);
                    returned_total += returned;
                }
                for write in book.writes() {
                    stored.retain(|l| l.external_ref != write.ledger.external_ref);
                    stored.push(write.ledger);
                }
            }
            prop_assert!(returned_total <= charge.fee_minor);
            if let Some(ledger) = stored.first() {
                prop_assert_eq!(ledger.returned_minor, returned_total);
            }
        }
    }
}
