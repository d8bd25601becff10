//! A transaction: one payment, refund, chargeback or adjustment of one merchant, as recorded.
//! `NewTransaction` is what arrives (validated here); `Transaction` is what the store keeps.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::SettlementDate;
use crate::excerpt::excerpt;
use crate::money::{Currency, Money};

/// The longest merchant id and external reference accepted, in bytes.
pub const MAX_MERCHANT_ID_BYTES: usize = 64;
pub const MAX_EXTERNAL_REF_BYTES: usize = 128;

/// Declares a closed set of stable names with `FromStr`/`Display`/serde that agree: each variant
/// serializes as its text, the one place that spells it.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {} (expected one of: {})",
                        $what,
                        $crate::excerpt::excerpt(s),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use named_enum;

named_enum!(
    /// What a transaction does to the merchant's balance.
    TransactionKind, "kind" {
        Payment => "payment",
        Refund => "refund",
        Chargeback => "chargeback",
        Adjustment => "adjustment",
    }
);

named_enum!(
    /// Only `completed` moves money; the other statuses are counted.
    TransactionStatus, "status" {
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        Pending => "pending",
    }
);

named_enum!(
    /// How the customer paid; fee schedules may differ per method.
    PaymentMethod, "method" {
        Card => "card",
        Wallet => "wallet",
        Cash => "cash",
        BankTransfer => "bank_transfer",
        Other => "other",
    }
);

/// A transaction as it arrives, before the store assigns its settlement date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransaction {
    /// Optional caller-chosen id; the store generates one when absent.
    pub id: Option<Uuid>,
    pub merchant_id: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    /// Positive for payments, refunds and chargebacks (the kind gives the direction);
    /// an adjustment may be negative (a debit to the merchant).
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub occurred_at: DateTime<Utc>,
    pub external_ref: String,
    /// For refunds and chargebacks: the `external_ref` of the payment they return.
    pub refund_of: Option<String>,
}

/// A transaction as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: Uuid,
    pub merchant_id: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub occurred_at: DateTime<Utc>,
    pub external_ref: String,
    pub refund_of: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The business date whose settlement includes this transaction.
    pub settlement_date: SettlementDate,
    /// True when `occurred_at` lies in a window that was already settled when it arrived.
    pub late: bool,
}

/// A field that failed validation and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl NewTransaction {
    /// Checks every rule a transaction must satisfy before it may be stored, and truncates
    /// `occurred_at` to the millisecond (the precision both stores keep; windows close on whole
    /// minutes, so truncation never moves a transaction to another date).
    pub fn validated(mut self) -> Result<NewTransaction, FieldError> {
        validate_merchant_id(&self.merchant_id)?;
        validate_external_ref("external_ref", &self.external_ref)?;
        match self.kind {
            TransactionKind::Adjustment => {
                if self.amount_minor == 0 {
                    return Err(FieldError::new("amount", "an adjustment must not be zero"));
                }
            }
            kind => {
                if self.amount_minor <= 0 {
                    return Err(FieldError::new(
                        "amount",
                        format!(
                            "a {kind} amount must be greater than zero (the kind gives the direction); got {}",
                            Money::new(self.amount_minor, self.currency)
                        ),
                    ));
                }
            }
        }
        match (self.kind, &self.refund_of) {
            (TransactionKind::Refund | TransactionKind::Chargeback, Some(reference)) => {
                validate_external_ref("refund_of", reference)?;
            }
            (TransactionKind::Payment | TransactionKind::Adjustment, Some(_)) => {
                return Err(FieldError::new(
                    "refund_of",
                    format!(
                        "only refunds and chargebacks refer to a payment, not a {}",
                        self.kind
                    ),
                ));
            }
            _ => {}
        }
        self.occurred_at = self.occurred_at.trunc_subsecs(3);
        Ok(self)
    }

    /// True when a stored transaction records exactly this one (same reference, same content).
    /// The id is compared only when the caller chose one.
    pub fn is_recorded_by(&self, stored: &Transaction) -> bool {
        self.id.is_none_or(|id| id == stored.id)
            && self.merchant_id == stored.merchant_id
            && self.kind == stored.kind
            && self.status == stored.status
            && self.amount_minor == stored.amount_minor
            && self.currency == stored.currency
            && self.method == stored.method
            && self.occurred_at == stored.occurred_at
            && self.external_ref == stored.external_ref
            && self.refund_of == stored.refund_of
    }

    /// Names the first field in which a stored transaction differs from this one.
    pub fn first_difference(&self, stored: &Transaction) -> Option<String> {
        let show = |name: &str, ours: String, theirs: String| {
            (ours != theirs).then(|| format!("{name} {ours} (stored: {theirs})"))
        };
        let money = |minor| Money::new(minor, self.currency).to_string();
        let optional = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".into());
        self.id
            .and_then(|id| show("id", id.to_string(), stored.id.to_string()))
            .or_else(|| show("kind", self.kind.to_string(), stored.kind.to_string()))
            .or_else(|| show("status", self.status.to_string(), stored.status.to_string()))
            .or_else(|| {
                show(
                    "currency",
                    self.currency.to_string(),
                    stored.currency.to_string(),
                )
            })
            .or_else(|| {
                show(
                    "amount",
                    money(self.amount_minor),
                    money(stored.amount_minor),
                )
            })
            .or_else(|| show("method", self.method.to_string(), stored.method.to_string()))
            .or_else(|| {
                show(
                    "occurred_at",
                    crate::time::format_utc(self.occurred_at),
                    crate::time::format_utc(stored.occurred_at),
                )
            })
            .or_else(|| {
                show(
                    "refund_of",
                    optional(&self.refund_of),
                    optional(&stored.refund_of),
                )
            })
    }
}

/// Merchant ids: 1 to 64 ASCII letters, digits, `.`, `_`, `:` or `-`, starting with a letter or
/// digit (so that no exported cell can be read as a spreadsheet formula).
pub fn validate_merchant_id(value: &str) -> Result<(), FieldError> {
    let field = "merchant_id";
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_MERCHANT_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "{} is longer than {MAX_MERCHANT_ID_BYTES} characters",
                excerpt(value)
            ),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if !value.chars().all(allowed) || !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(FieldError::new(
            field,
            format!("{} must start with a letter or digit and hold only letters, digits, '.', '_', ':' or '-'", excerpt(value)),
        ));
    }
    Ok(())
}

/// External references: 1 to 128 bytes of visible text, no control characters, no surrounding spaces.
pub fn validate_external_ref(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_EXTERNAL_REF_BYTES {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_EXTERNAL_REF_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) || value.trim() != value {
        return Err(FieldError::new(
            field,
            format!(
                "{} must not contain control characters or surrounding spaces",
                excerpt(value)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> NewTransaction {
        NewTransaction {
            id: None,
            merchant_id: "m-001".into(),
            kind: TransactionKind::Payment,
            status: TransactionStatus::Completed,
            amount_minor: 1250,
            currency: Currency::from_code("USD").unwrap(),
            method: PaymentMethod::Card,
            occurred_at: "2024-03-10T12:00:00.123456Z".parse().unwrap(),
            external_ref: "pay-1".into(),
            refund_of: None,
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kind in TransactionKind::ALL {
            assert_eq!(kind.as_str().parse::<TransactionKind>().unwrap(), *kind);
        }
        let error = "Payment".parse::<TransactionKind>().unwrap_err();
        assert!(
            error.contains("\"Payment\"") && error.contains("chargeback"),
            "{error}"
        );
        assert_eq!(
            serde_json::to_string(&PaymentMethod::BankTransfer).unwrap(),
            "\"bank_transfer\""
        );
    }

    #[test]
    fn validation_enforces_sign_by_kind() {
        assert!(payment().validated().is_ok());
        let zero = NewTransaction {
            amount_minor: 0,
            ..payment()
        };
        assert_eq!(zero.validated().unwrap_err().field, "amount");
        let negative_refund = NewTransaction {
            kind: TransactionKind::Refund,
            amount_minor: -5,
            ..payment()
        };
        assert_eq!(negative_refund.validated().unwrap_err().field, "amount");
        let debit = NewTransaction {
            kind: TransactionKind::Adjustment,
            amount_minor: -500,
            ..payment()
        };
        assert!(debit.validated().is_ok());
    }

    #[test]
    fn only_refunds_and_chargebacks_refer_to_a_payment() {
        let odd = NewTransaction {
            refund_of: Some("pay-0".into()),
            ..payment()
        };
        assert_eq!(odd.validated().unwrap_err().field, "refund_of");
        let refund = NewTransaction {
            kind: TransactionKind::Refund,
            refund_of: Some("pay-0".into()),
            ..payment()
        };
        assert!(refund.validated().is_ok());
    }

    #[test]
    fn identifiers_are_checked() {
        for bad in ["", "-lead", "=SUM(A1)", "has space", &"x".repeat(65)] {
            let tx = NewTransaction {
                merchant_id: bad.to_string(),
                ..payment()
            };
            assert_eq!(tx.validated().unwrap_err().field, "merchant_id", "{bad:?}");
        }
        for bad in ["", " pad", "tab\there"] {
            let tx = NewTransaction {
                external_ref: bad.to_string(),
                ..payment()
            };
            assert_eq!(tx.validated().unwrap_err().field, "external_ref", "{bad:?}");
        }
    }

    #[test]
    fn occurred_at_is_kept_to_the_millisecond() {
        let tx = payment().validated().unwrap();
        assert_eq!(
            tx.occurred_at,
            "2024-03-10T12:00:00.123Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
