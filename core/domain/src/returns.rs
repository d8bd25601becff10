//! The rules a refund or chargeback must meet against the payment it returns, in one place: the
//! stores apply them atomically for the payments API, the CSV import applies them in file order.

use crate::model::{NewTransaction, Transaction, TransactionKind, TransactionStatus};
use crate::money::{Currency, Money};

/// The facts of a payment that decide whether it can be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnTarget {
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub currency: Currency,
    pub amount_minor: i64,
}

impl From<&Transaction> for ReturnTarget {
    fn from(payment: &Transaction) -> Self {
        ReturnTarget {
            kind: payment.kind,
            status: payment.status,
            currency: payment.currency,
            amount_minor: payment.amount_minor,
        }
    }
}

impl From<&NewTransaction> for ReturnTarget {
    fn from(payment: &NewTransaction) -> Self {
        ReturnTarget {
            kind: payment.kind,
            status: payment.status,
            currency: payment.currency,
            amount_minor: payment.amount_minor,
        }
    }
}

/// Why a refund or chargeback is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnRefusal {
    /// The merchant has no payment with the `refund_of` reference.
    PaymentNotFound,
    /// Not a completed payment in the return's currency; the reason says which.
    NotRefundable(String),
    /// Refunds plus chargebacks would exceed the payment.
    ExceedsPayment {
        /// Already returned by completed or pending refunds and chargebacks.
        returned_minor: i64,
        remaining_minor: i64,
    },
}

impl ReturnRefusal {
    /// The column of a transactions row the refusal is about.
    pub fn column(&self) -> &'static str {
        match self {
            ReturnRefusal::PaymentNotFound | ReturnRefusal::NotRefundable(_) => "refund_of",
            ReturnRefusal::ExceedsPayment { .. } => "amount",
        }
    }

    /// What a person reads: names the payment and, when too much, what is left to return.
    pub fn describe(&self, return_: &NewTransaction) -> String {
        let payment_ref = return_.refund_of.as_deref().unwrap_or_default();
        match self {
            ReturnRefusal::PaymentNotFound => format!(
                "merchant {} has no payment {payment_ref:?} to return",
                return_.merchant_id
            ),
            ReturnRefusal::NotRefundable(reason) => reason.clone(),
            ReturnRefusal::ExceedsPayment {
                remaining_minor, ..
            } => remaining_message(payment_ref, *remaining_minor, return_.currency),
        }
    }
}

/// "payment P has 40.00 USD left to return": the API's detail and the import's reason.
pub fn remaining_message(payment_ref: &str, remaining_minor: i64, currency: Currency) -> String {
    format!(
        "payment {payment_ref} has {} {currency} left to return",
        Money::new(remaining_minor, currency)
    )
}

/// The payment a refund or chargeback returns (its `refund_of`); `None` for anything else.
pub fn returned_payment_ref(transaction: &NewTransaction) -> Option<&str> {
    match transaction.kind {
        TransactionKind::Refund | TransactionKind::Chargeback => transaction.refund_of.as_deref(),
        _ => None,
    }
}

/// Whether a stored return counts against its payment: completed and pending refunds and
/// chargebacks do (a pending one may still complete); failed and cancelled ones do not.
pub fn counts_as_returned(kind: TransactionKind, status: TransactionStatus) -> bool {
    matches!(kind, TransactionKind::Refund | TransactionKind::Chargeback)
        && matches!(
            status,
            TransactionStatus::Completed | TransactionStatus::Pending
        )
}

/// Why `payment_ref`'s payment cannot be returned in `currency`: only a completed payment in the
/// same currency can. `None` when it can.
pub fn why_not_returnable(
    payment_ref: &str,
    payment: &ReturnTarget,
    currency: Currency,
) -> Option<String> {
    if payment.kind != TransactionKind::Payment {
        Some(format!(
            "{payment_ref} is a {}, not a payment",
            payment.kind
        ))
    } else if payment.status != TransactionStatus::Completed {
        Some(format!(
            "payment {payment_ref} is {}, not completed",
            payment.status
        ))
    } else if payment.currency != currency {
        Some(format!(
            "payment {payment_ref} is in {}, not {currency}",
            payment.currency
        ))
    } else {
        None
    }
}

/// Checks a refund or chargeback against its payment (`None`: the merchant has none under that
/// reference) and what the payment's completed or pending returns already returned. Whatever the
/// return's own status, its amount may not take the returns above the payment.
pub fn check_return(
    return_: &NewTransaction,
    payment: Option<&ReturnTarget>,
    returned_minor: i64,
) -> Result<(), ReturnRefusal> {
    let Some(payment_ref) = returned_payment_ref(return_) else {
        return Ok(());
    };
    let Some(payment) = payment else {
        return Err(ReturnRefusal::PaymentNotFound);
    };
    if let Some(reason) = why_not_returnable(payment_ref, payment, return_.currency) {
        return Err(ReturnRefusal::NotRefundable(reason));
    }
    let total = returned_minor.checked_add(return_.amount_minor);
    if total.is_none_or(|total| total > payment.amount_minor) {
        return Err(ReturnRefusal::ExceedsPayment {
            returned_minor,
            remaining_minor: payment.amount_minor.saturating_sub(returned_minor).max(0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PaymentMethod;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn new(kind: TransactionKind, amount_minor: i64, refund_of: Option<&str>) -> NewTransaction {
        NewTransaction {
            id: None,
            merchant_id: "m-1".into(),
            kind,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: usd(),
            method: PaymentMethod::Card,
            occurred_at: "2024-03-10T10:00:00Z".parse().unwrap(),
            external_ref: "r-1".into(),
            refund_of: refund_of.map(str::to_string),
        }
    }

    fn payment(amount_minor: i64) -> ReturnTarget {
        ReturnTarget::from(&new(TransactionKind::Payment, amount_minor, None))
    }

    #[test]
    fn each_refusal_names_what_is_wrong() {
        let refund = new(TransactionKind::Refund, 6_000, Some("p-1"));
        assert_eq!(
            check_return(&refund, None, 0),
            Err(ReturnRefusal::PaymentNotFound)
        );
        let mut failed = payment(10_000);
        failed.status = TransactionStatus::Failed;
        let refused = check_return(&refund, Some(&failed), 0).unwrap_err();
        assert_eq!(
            refused.describe(&refund),
            "payment p-1 is failed, not completed"
        );
        let mut euros = payment(10_000);
        euros.currency = Currency::from_code("EUR").unwrap();
        let refused = check_return(&refund, Some(&euros), 0).unwrap_err();
        assert_eq!(refused.column(), "refund_of");
        assert_eq!(refused.describe(&refund), "payment p-1 is in EUR, not USD");
        let refused = check_return(&refund, Some(&payment(10_000)), 5_000).unwrap_err();
        assert_eq!(refused.column(), "amount");
        assert_eq!(
            refused.describe(&refund),
            "payment p-1 has 50.00 USD left to return"
        );
        assert_eq!(check_return(&refund, Some(&payment(10_000)), 4_000), Ok(()));
        // Not a return: nothing to check.
        let payment_row = new(TransactionKind::Payment, 1, None);
        assert_eq!(check_return(&payment_row, None, 0), Ok(()));
    }

    #[test]
    fn only_completed_and_pending_returns_count() {
        use TransactionStatus::*;
        for (status, counts) in [
            (Completed, true),
            (Pending, true),
            (Failed, false),
            (Cancelled, false),
        ] {
            assert_eq!(counts_as_returned(TransactionKind::Refund, status), counts);
            assert_eq!(
                counts_as_returned(TransactionKind::Chargeback, status),
                counts
            );
            assert!(!counts_as_returned(TransactionKind::Payment, status));
        }
    }

    proptest! {
        /// Accepting returns one after another never takes their sum above the payment.
        #[test]
        fn accepted_returns_never_exceed_the_payment(
            payment_minor in 1_i64..1_000_000,
            returns in proptest::collection::vec(1_i64..600_000, 1..12),
        ) {
            let target = payment(payment_minor);
            let mut returned_minor = 0_i64;
            for amount_minor in returns {
                let refund = new(TransactionKind::Refund, amount_minor, Some("p-1"));
                match check_return(&refund, Some(&target), returned_minor) {
                    Ok(()) => returned_minor += amount_minor,
                    Err(ReturnRefusal::ExceedsPayment { remaining_minor, .. }) => {
                        prop_assert!(amount_minor > remaining_minor);
                        prop_assert_eq!(remaining_minor, payment_minor - returned_minor);
                    }
                    Err(other) => prop_assert!(false, "{other:?}"),
                }
                prop_assert!(returned_minor <= payment_minor);
            }
        }
    }
}
