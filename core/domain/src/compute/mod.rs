//! The pure settlement fold: a date's transactions and a fee schedule in, lines and day totals out.
//! No I/O and no clock; order-independent; every sum checked, so the totals equal the lines exactly.

pub mod fee_ledger;

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::model::fees::FeeSchedule;

use crate::model::{
    CurrencyTotals, FeeLedgerWrite, SettlementFigures, SettlementLine, Transaction,
    TransactionKind, TransactionStatus,
};
use crate::money::{Currency, MoneyError};

/// A payment that refunds refer to, with every refund or chargeback of it that the store knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundedPayment {
    pub payment: Transaction,
    pub refunds: Vec<Transaction>,
}

/// `(merchant_id, external_ref)` of a payment.
pub type PaymentKey = (String, String);

/// The outcome of the fold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComputedSettlement {
    /// One per (merchant_id, currency), sorted by both.
    pub lines: Vec<SettlementLine>,
    /// One per currency, sorted by code.
    pub totals: Vec<CurrencyTotals>,
    /// The fee ledgers of refunded payments this revision changed, written with its result.
    pub fee_ledgers: Vec<FeeLedgerWrite>,
}

/// Accumulates transactions one at a time, so a day never has to be in memory at once.
#[derive(Debug)]
pub struct SettlementComputation<'a> {
    schedule: &'a FeeSchedule,
    /// Figures by merchant, then currency: looked up by `&str`, so a known line costs no allocation.
    /// Hashed while folding; `finish` sorts.
    lines: HashMap<String, BTreeMap<Currency, SettlementFigures>>,
}

impl<'a> SettlementComputation<'a> {
    pub fn new(schedule: &'a FeeSchedule) -> Self {
        SettlementComputation {
            schedule,
            lines: HashMap::new(),
        }
    }

    /// Adds one transaction. `fee_returned_minor` is what a completed refund gives back of its
    /// payment's fee (see `fee_ledger`); `None` for everything else (a refund returning nothing).
    pub fn add(
        &mut self,
        tx: &Transaction,
        fee_returned_minor: Option<i64>,
    ) -> Result<(), MoneyError> {
        let currency = tx.currency;
        let fee_minor = self.fee_effect_minor(tx, fee_returned_minor)?;
        let mut delta = SettlementFigures {
            transaction_count: 1,
            late_count: u64::from(tx.late),
            ..SettlementFigures::default()
        };
        match tx.status {
            TransactionStatus::Completed => delta.completed_count = 1,
            TransactionStatus::Failed => delta.failed_count = 1,
            TransactionStatus::Cancelled => delta.cancelled_count = 1,
            TransactionStatus::Pending => delta.pending_count = 1,
        }
        if tx.status == TransactionStatus::Completed {
            match tx.kind {
                TransactionKind::Payment => {
                    delta.payment_count = 1;
                    delta.gross_minor = tx.amount_minor;
                }
                TransactionKind::Refund => {
                    delta.refund_count = 1;
                    delta.refunds_minor = tx.amount_minor;
                }
                TransactionKind::Chargeback => {
                    delta.chargeback_count = 1;
                    delta.chargebacks_minor = tx.amount_minor;
                }
                TransactionKind::Adjustment => {
                    delta.adjustment_count = 1;
                    delta.adjustments_minor = tx.amount_minor;
                }
            }
            delta.fees_minor = fee_minor;
        }
        if let Some(by_currency) = self.lines.get_mut(tx.merchant_id.as_str()) {
            return by_currency
                .entry(currency)
                .or_default()
                .accumulate(&delta, currency);
        }
        self.lines
            .entry(tx.merchant_id.clone())
            .or_default()
            .entry(currency)
            .or_default()
            .accumulate(&delta, currency)
    }

    /// The fee a completed transaction adds (payments) or gives back (refunds, negative).
    fn fee_effect_minor(
        &self,
        tx: &Transaction,
        fee_returned_minor: Option<i64>,
    ) -> Result<i64, MoneyError> {
        if tx.status != TransactionStatus::Completed {
            return Ok(0);
        }
        match tx.kind {
            TransactionKind::Payment => self
                .schedule
                .resolve(&tx.merchant_id, tx.method, tx.currency)
                .payment_fee(tx.amount_minor),
            TransactionKind::Refund => fee_returned_minor
                .unwrap_or(0)
                .checked_neg()
                .ok_or(MoneyError::Overflow(tx.currency)),
            TransactionKind::Chargeback | TransactionKind::Adjustment => Ok(0),
        }
    }

    /// Closes the fold: nets every line and sums the lines into per-currency totals.
    pub fn finish(self) -> Result<ComputedSettlement, MoneyError> {
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut by_merchant: Vec<_> = self.lines.into_iter().collect();
        by_merchant.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (merchant_id, by_currency) in by_merchant {
            for (currency, mut figures) in by_currency {
                figures.net_minor = figures
                    .expected_net_minor()
                    .ok_or(MoneyError::Overflow(currency))?;
                lines.push(SettlementLine {
                    merchant_id: merchant_id.clone(),
                    currency,
                    figures,
                });
            }
        }
        let totals = totals_of(&lines)?;
        // The engine's invariant (debug builds): each total's net is its figures' net, as each
        // line's is, so the day's net is the lines' nets summed and their figures netted alike.
        debug_assert!(
            totals
                .iter()
                .all(|t| t.figures.expected_net_minor() == Some(t.figures.net_minor)),
            "a day total's net is not its figures' net"
        );
        Ok(ComputedSettlement {
            lines,
            totals,
            fee_ledgers: Vec::new(),
        })
    }
}

/// The lines summed per currency, in currency order.
fn totals_of(lines: &[SettlementLine]) -> Result<Vec<CurrencyTotals>, MoneyError> {
    let mut totals: BTreeMap<Currency, CurrencyTotals> = BTreeMap::new();
    for line in lines {
        let total = totals
            .entry(line.currency)
            .or_insert_with(|| CurrencyTotals {
                currency: line.currency,
                merchant_count: 0,
                figures: SettlementFigures::default(),
            });
        total.merchant_count += 1;
        total.figures.accumulate(&line.figures, line.currency)?;
    }
    Ok(totals.into_values().collect())
}

/// Folds a whole slice; convenient for tests and small days.
/// `fee_returns` holds what each refund (by id) gives back of its payment's fee.
pub fn compute(
    schedule: &FeeSchedule,
    transactions: &[Transaction],
    fee_returns: &HashMap<Uuid, i64>,
) -> Result<ComputedSettlement, MoneyError> {
    let mut computation = SettlementComputation::new(schedule);
    for tx in transactions {
        computation.add(tx, fee_returns.get(&tx.id).copied())?;
    }
    computation.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fees::FeeRule;
    use crate::model::PaymentMethod;
    use chrono::{DateTime, Duration, NaiveDate, Utc};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    const CURRENCIES: &[&str] = &["USD", "YER", "KWD"];

    fn tx(
        n: u128,
        merchant: &str,
        kind: TransactionKind,
        status: TransactionStatus,
        amount_minor: i64,
        currency: &str,
    ) -> Transaction {
        let at: DateTime<Utc> = "2024-03-10T10:00:00Z".parse().unwrap();
        Transaction {
            id: Uuid::from_u128(n),
            merchant_id: merchant.into(),
            kind,
            status,
            amount_minor,
            currency: Currency::from_code(currency).unwrap(),
            method: PaymentMethod::Card,
            occurred_at: at + Duration::seconds(n as i64),
            external_ref: format!("ref-{n}"),
            refund_of: None,
            created_at: at,
            settlement_date: NaiveDate::from_ymd_opt(2024, 3, 10).unwrap(),
            late: false,
        }
    }

    fn refund_of(mut refund: Transaction, payment: &Transaction) -> Transaction {
        refund.refund_of = Some(payment.external_ref.clone());
        refund
    }

    fn returning_schedule() -> FeeSchedule {
        let mut schedule = FeeSchedule::default();
        schedule.default.refund_returns_percent = Some(true);
        schedule
    }

    #[test]
    fn one_line_per_merchant_and_currency_with_exact_net() {
        use TransactionKind::*;
        use TransactionStatus::*;
        let txs = vec![
            tx(1, "m-1", Payment, Completed, 10_000, "USD"),
            tx(2, "m-1", Payment, Completed, 1_010, "USD"),
            tx(3, "m-1", Payment, Failed, 5_000, "USD"),
            tx(4, "m-1", Chargeback, Completed, 300, "USD"),
            tx(5, "m-1", Adjustment, Completed, -200, "USD"),
            tx(6, "m-1", Payment, Completed, 50_000, "YER"),
            tx(7, "m-2", Payment, Cancelled, 999, "USD"),
            tx(8, "m-2", Payment, Pending, 999, "USD"),
        ];
        let result = compute(&FeeSchedule::default(), &txs, &HashMap::new()).unwrap();
        assert_eq!(result.lines.len(), 3);
        let usd = &result.lines[0].figures;
        assert_eq!((usd.gross_minor, usd.fees_minor), (11_010, 250 + 25));
        assert_eq!(usd.net_minor, 11_010 - 300 - 200 - 275);
        assert_eq!(
            (usd.completed_count, usd.failed_count, usd.payment_count),
            (4, 1, 2)
        );
        let m2 = &result.lines[2].figures;
        assert_eq!(
            (
                m2.net_minor,
                m2.cancelled_count,
                m2.pending_count,
                m2.transaction_count
            ),
            (0, 1, 1, 2)
        );
        let usd_total = result
            .totals
            .iter()
            .find(|t| t.currency.code() == "USD")
            .unwrap();
        assert_eq!(usd_total.merchant_count, 2);
        assert_eq!(usd_total.figures.net_minor, usd.net_minor);
    }

    #[test]
    fn a_day_without_transactions_has_no_lines_and_no_totals() {
        let result = compute(&FeeSchedule::default(), &[], &HashMap::new()).unwrap();
        assert_eq!(result, ComputedSettlement::default());
    }

    #[test]
    fn a_refund_gives_back_the_fee_return_it_is_given() {
        use TransactionKind::*;
        use TransactionStatus::*;
        let payment = tx(1, "m-1", Payment, Completed, 10_000, "USD");
        let refund = refund_of(tx(2, "m-1", Refund, Completed, 4_000, "USD"), &payment);
        let returns: HashMap<Uuid, i64> = [(refund.id, 100)].into();
        let result = compute(&FeeSchedule::default(), &[payment, refund], &returns).unwrap();
        let line = &result.lines[0].figures;
        // 2.5 % of 100.00 charged, 1.00 of it given back.
        assert_eq!(line.fees_minor, 250 - 100);
        assert_eq!(line.net_minor, 10_000 - 4_000 - 150);
    }

    #[test]
    fn overflowing_sums_are_errors() {
        use TransactionKind::*;
        use TransactionStatus::*;
        let schedule = FeeSchedule {
            default: FeeRule {
                percent: Some(Decimal::ZERO),
                ..FeeRule::default()
            },
            ..FeeSchedule::default()
        };
        let txs = vec![
            tx(1, "m-1", Payment, Completed, i64::MAX, "USD"),
            tx(2, "m-1", Payment, Completed, 1, "USD"),
        ];
        assert!(matches!(
            compute(&schedule, &txs, &HashMap::new()),
            Err(MoneyError::Overflow(_))
        ));
    }

    /// A day of random transactions with refunds that point at payments of the same day.
    fn any_day() -> impl Strategy<Value = (Vec<Transaction>, HashMap<Uuid, i64>)> {
        let one = (
            0_usize..6,
            0_usize..CURRENCIES.len(),
            proptest::sample::select(TransactionKind::ALL.to_vec()),
            proptest::sample::select(TransactionStatus::ALL.to_vec()),
            1_i64..5_000_000,
            any::<bool>(),
            any::<bool>(),
        );
        proptest::collection::vec(one, 0..80).prop_map(|rows| {
            let mut txs: Vec<Transaction> = Vec::new();
            for (n, (merchant, currency, kind, status, amount, negative, late)) in
                rows.into_iter().enumerate()
            {
                let amount = if kind == TransactionKind::Adjustment && negative {
                    -amount
                } else {
                    amount
                };
                let mut t = tx(
                    n as u128,
                    &format!("m-{merchant}"),
                    kind,
                    status,
                    amount,
                    CURRENCIES[currency],
                );
                t.late = late;
                if kind == TransactionKind::Refund || kind == TransactionKind::Chargeback {
                    if let Some(payment) = txs.iter().find(|p| {
                        p.kind == TransactionKind::Payment
                            && p.merchant_id == t.merchant_id
                            && p.currency == t.currency
                    }) {
                        t.refund_of = Some(payment.external_ref.clone());
                        t.amount_minor = t.amount_minor.min(payment.amount_minor);
                    }
                }
                txs.push(t);
            }
            // Each refund's return as the runner settles them: in (occurred_at, id) order.
            let schedule = returning_schedule();
            let mut book = crate::compute::fee_ledger::FeeLedgerBook::default();
            let mut refunds: Vec<&Transaction> = txs
                .iter()
                .filter(|t| t.kind == TransactionKind::Refund)
                .collect();
            refunds.sort_by_key(|r| (r.occurred_at, r.id));
            let mut returns: HashMap<Uuid, i64> = HashMap::new();
            for refund in refunds {
                let Some(payment) = txs
                    .iter()
                    .find(|p| Some(&p.external_ref) == refund.refund_of.as_ref())
                else {
                    continue;
                };
                let charge = crate::compute::fee_ledger::charge_of(
                    &schedule,
                    payment,
                    payment.settlement_date,
                    1,
                )
                .unwrap();
                let returned = book
                    .settle_refund(payment, Some(charge), refund, refund.settlement_date, 1)
                    .unwrap();
                returns.insert(refund.id, returned);
            }
            (txs, returns)
        })
    }

    proptest! {
        #[test]
        fn totals_equal_the_sum_of_the_lines((txs, refunded) in any_day()) {
            let result = compute(&returning_schedule(), &txs, &refunded).unwrap();
            for total in &result.totals {
                let mut sum = SettlementFigures::default();
                let mut merchants = 0;
                for line in result.lines.iter().filter(|l| l.currency == total.currency) {
                    sum.accumulate(&line.figures, total.currency).unwrap();
                    merchants += 1;
                }
                prop_assert_eq!(&sum, &total.figures);
                prop_assert_eq!(merchants, total.merchant_count);
            }
        }

        #[test]
        fn the_net_identity_holds((txs, refunded) in any_day()) {
            let result = compute(&returning_schedule(), &txs, &refunded).unwrap();
            for figures in result.lines.iter().map(|l| &l.figures).chain(result.totals.iter().map(|t| &t.figures)) {
                prop_assert_eq!(Some(figures.net_minor), figures.expected_net_minor());
            }
        }

        #[test]
        fn every_transaction_is_counted_exactly_once((txs, refunded) in any_day()) {
            let result = compute(&returning_schedule(), &txs, &refunded).unwrap();
            let counted: u64 = result.lines.iter().map(|l| l.figures.transaction_count).sum();
            prop_assert_eq!(counted, txs.len() as u64);
            for line in &result.lines {
                let f = &line.figures;
                prop_assert_eq!(f.completed_count + f.failed_count + f.cancelled_count + f.pending_count, f.transaction_count);
                prop_assert_eq!(f.payment_count + f.refund_count + f.chargeback_count + f.adjustment_count, f.completed_count);
                let mine = txs.iter().filter(|t| t.merchant_id == line.merchant_id && t.currency == line.currency);
                prop_assert_eq!(mine.clone().count() as u64, f.transaction_count);
                prop_assert_eq!(mine.filter(|t| t.late).count() as u64, f.late_count);
            }
            let completed_payments: i64 = txs
                .iter()
                .filter(|t| t.kind == TransactionKind::Payment && t.status == TransactionStatus::Completed)
                .map(|t| t.amount_minor)
                .sum();
            let gross: i64 = result.lines.iter().map(|l| l.figures.gross_minor).sum();
            prop_assert_eq!(gross, completed_payments);
        }

        #[test]
        fn the_result_does_not_depend_on_input_order(
            (txs, refunded) in any_day(),
            seed in any::<u64>(),
        ) {
            let mut shuffled = txs.clone();
            // A deterministic Fisher-Yates shuffle driven by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let schedule = returning_schedule();
            prop_assert_eq!(compute(&schedule, &txs, &refunded).unwrap(), compute(&schedule, &shuffled, &refunded).unwrap());
        }

        #[test]
        fn fees_are_never_negative_for_a_payment_only_day(
            amounts in proptest::collection::vec(1_i64..10_000_000, 1..50)
        ) {
            let txs: Vec<Transaction> = amounts
                .iter()
                .enumerate()
                .map(|(n, a)| tx(n as u128, "m-1", TransactionKind::Payment, TransactionStatus::Completed, *a, "USD"))
                .collect();
            let result = compute(&FeeSchedule::default(), &txs, &HashMap::new()).unwrap();
            let line = &result.lines[0].figures;
            prop_assert!(line.fees_minor >= 0);
            prop_assert!(line.fees_minor <= line.gross_minor);
        }
    }
}
