//! Per-transaction amount limits: the largest amount one transaction may carry, per currency, so
//! that the sums of a settlement day stay far below i64 overflow. Every way in checks them here.

use crate::model::fees::AmountByCurrency;
use crate::model::{FieldError, NewTransaction};
use crate::money::{Currency, Money};

/// The default per-transaction maximum, in minor units of any currency: 10^12 (10,000,000,000.00
/// USD). A day's line overflows i64 only after about 9.2 million maximal transactions.
pub const DEFAULT_MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// The most a configuration may allow, in minor units: 10^15, so that even then a line needs
/// more than 9,000 maximal transactions in one day to overflow (and every sum is still checked).
pub const MAX_AMOUNT_MINOR_CEILING: i64 = 1_000_000_000_000_000;

/// The configuration keys the limits come from, named in every refusal.
pub const DEFAULT_KEY: &str = "payments.max_amount_minor";
pub const PER_CURRENCY_KEY: &str = "payments.max_amount";

/// `[payments] max_amount_minor` for every currency, `max_amount.CODE` (major units) per currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountLimits {
    /// Minor units, for currencies without their own maximum.
    pub default_max_minor: i64,
    /// Per-currency maxima, in minor units (written in major units in the file).
    pub per_currency: AmountByCurrency,
}

impl Default for AmountLimits {
    fn default() -> Self {
        AmountLimits {
            default_max_minor: DEFAULT_MAX_AMOUNT_MINOR,
            per_currency: AmountByCurrency::default(),
        }
    }
}

impl AmountLimits {
    /// The largest absolute amount one transaction in `currency` may carry, in minor units.
    pub fn max_minor(&self, currency: Currency) -> i64 {
        self.per_currency
            .get(currency)
            .unwrap_or(self.default_max_minor)
    }

    /// The configuration key that sets the maximum for `currency`.
    pub fn key(&self, currency: Currency) -> String {
        match self.per_currency.get(currency) {
            Some(_) => format!("{PER_CURRENCY_KEY}.{}", currency.code()),
            None => DEFAULT_KEY.to_string(),
        }
    }
}

/// Refuses a transaction whose amount is above the per-transaction maximum of its currency.
/// Adjustments are signed: their absolute value is limited. The error is on `amount` and names the
/// amount, the limit and the key that sets it.
pub fn check_amount_limit(
    transaction: &NewTransaction,
    limits: &AmountLimits,
) -> Result<(), FieldError> {
    let currency = transaction.currency;
    let max_minor = limits.max_minor(currency);
    // unsigned_abs: i64::MIN has no positive counterpart in i64.
    if transaction.amount_minor.unsigned_abs() <= max_minor.unsigned_abs() {
        return Ok(());
    }
    Err(FieldError::new(
        "amount",
        format!(
            "{} {code} is above the per-transaction maximum {} {code} ({})",
            Money::new(transaction.amount_minor, currency),
            Money::new(max_minor, currency),
            limits.key(currency),
            code = currency.code(),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PaymentMethod, TransactionKind, TransactionStatus};

    fn transaction(kind: TransactionKind, amount_minor: i64, code: &str) -> NewTransaction {
        NewTransaction {
            id: None,
            merchant_id: "m-1".into(),
            kind,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: Currency::from_code(code).unwrap(),
            method: PaymentMethod::Card,
            occurred_at: "2026-11-20T10:00:00Z".parse().unwrap(),
            external_ref: "r-1".into(),
            refund_of: None,
        }
    }

    #[test]
    fn the_maximum_itself_passes_and_one_minor_unit_more_is_refused_naming_the_key() {
        let limits = AmountLimits::default();
        let at = transaction(TransactionKind::Payment, DEFAULT_MAX_AMOUNT_MINOR, "USD");
        assert_eq!(check_amount_limit(&at, &limits), Ok(()));
        let above = transaction(
            TransactionKind::Payment,
            DEFAULT_MAX_AMOUNT_MINOR + 1,
            "USD",
        );
        let error = check_amount_limit(&above, &limits).unwrap_err();
        assert_eq!(error.field, "amount");
        assert_eq!(
            error.message,
            "10000000000.01 USD is above the per-transaction maximum 10000000000.00 USD \
             (payments.max_amount_minor)"
        );
    }

    #[test]
    fn adjustments_are_limited_by_their_absolute_value_even_at_i64_min() {
        let limits = AmountLimits::default();
        for amount in [-DEFAULT_MAX_AMOUNT_MINOR - 1, i64::MIN, i64::MAX] {
            let adjustment = transaction(TransactionKind::Adjustment, amount, "USD");
            assert!(
                check_amount_limit(&adjustment, &limits).is_err(),
                "{amount}"
            );
        }
        let debit = transaction(
            TransactionKind::Adjustment,
            -DEFAULT_MAX_AMOUNT_MINOR,
            "USD",
        );
        assert_eq!(check_amount_limit(&debit, &limits), Ok(()));
    }

    #[test]
    fn a_currency_of_its_own_uses_its_maximum_and_says_so() {
        let mut limits = AmountLimits::default();
        limits
            .per_currency
            .0
            .insert(Currency::from_code("JPY").unwrap(), 5_000_000);
        let yen = transaction(TransactionKind::Payment, 5_000_001, "JPY");
        let error = check_amount_limit(&yen, &limits).unwrap_err();
        assert_eq!(
            error.message,
            "5000001 JPY is above the per-transaction maximum 5000000 JPY (payments.max_amount.JPY)"
        );
        let dollars = transaction(TransactionKind::Payment, 5_000_001, "USD");
        assert_eq!(check_amount_limit(&dollars, &limits), Ok(()));
    }
}
