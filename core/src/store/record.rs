//! The record → domain conversions both store adapters share: each adapter reads the named fields
//! of its own row or document (`StoredFields`), and the shape of each record is written here once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::calendar::Window;
use crate::model::{
    CarryForward, CurrencyTotals, Lease, Payout, Settlement, SettlementFigures, SettlementLine,
};

use super::StoreError;

/// A stored record's fields by name, as one adapter keeps them. A field that is missing or of the
/// wrong form is a `StoreError::Corrupt` naming it (`column …` or `field …`, per adapter).
pub trait StoredFields {
    /// The adapter's own wording of a corrupt field.
    fn corrupt(&self, name: &str, detail: &dyn fmt::Display) -> StoreError;
    fn text(&self, name: &str) -> Result<String, StoreError>;
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn integer(&self, name: &str) -> Result<i64, StoreError>;
    fn optional_integer(&self, name: &str) -> Result<Option<i64>, StoreError>;
    fn instant(&self, name: &str) -> Result<DateTime<Utc>, StoreError>;
    fn optional_instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// A structured value (JSON text in SQLite, a sub-document in MongoDB).
    fn structured<T: DeserializeOwned>(&self, name: &str) -> Result<T, StoreError>;

    /// A count: a non-negative integer.
    fn count(&self, name: &str) -> Result<u64, StoreError> {
        let n = self.integer(name)?;
        u64::try_from(n).map_err(|e| self.corrupt(name, &e))
    }

    /// A revision or an attempt number.
    fn small(&self, name: &str) -> Result<u32, StoreError> {
        let n = self.integer(name)?;
        u32::try_from(n).map_err(|e| self.corrupt(name, &e))
    }

    fn optional_small(&self, name: &str) -> Result<Option<u32>, StoreError> {
        self.optional_integer(name)?
            .map(|n| u32::try_from(n).map_err(|e| self.corrupt(name, &e)))
            .transpose()
    }

    /// Text parsed by the type's own rules (dates, currencies, statuses).
    fn parsed<T: FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: fmt::Display,
    {
        let text = self.text(name)?;
        text.parse().map_err(|e| self.corrupt(name, &e))
    }

    fn optional_parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: fmt::Display,
    {
        self.optional_text(name)?
            .map(|text| text.parse().map_err(|e| self.corrupt(name, &e)))
            .transpose()
    }
}

/// A line's or a total's figures, stored as sixteen named fields.
pub fn figures(f: &impl StoredFields) -> Result<SettlementFigures, StoreError> {
    Ok(SettlementFigures {
        transaction_count: f.count("transaction_count")?,
        completed_count: f.count("completed_count")?,
        failed_count: f.count("failed_count")?,
        cancelled_count: f.count("cancelled_count")?,
        pending_count: f.count("pending_count")?,
        payment_count: f.count("payment_count")?,
        refund_count: f.count("refund_count")?,
        chargeback_count: f.count("chargeback_count")?,
        adjustment_count: f.count("adjustment_count")?,
        late_count: f.count("late_count")?,
        gross_minor: f.integer("gross_minor")?,
        refunds_minor: f.integer("refunds_minor")?,
        chargebacks_minor: f.integer("chargebacks_minor")?,
        adjustments_minor: f.integer("adjustments_minor")?,
        fees_minor: f.integer("fees_minor")?,
        net_minor: f.integer("net_minor")?,
    })
}

pub fn line(f: &impl StoredFields) -> Result<SettlementLine, StoreError> {
    Ok(SettlementLine {
        merchant_id: f.text("merchant_id")?,
        currency: f.parsed("currency")?,
        figures: figures(f)?,
    })
}

pub fn currency_totals(f: &impl StoredFields) -> Result<CurrencyTotals, StoreError> {
    Ok(CurrencyTotals {
        currency: f.parsed("currency")?,
        merchant_count: f.count("merchant_count")?,
        figures: figures(f)?,
    })
}

/// A settlement revision without its totals (each adapter keeps those its own way). The lease is
/// present only when both its owner and its expiry are.
pub fn settlement(f: &impl StoredFields) -> Result<Settlement, StoreError> {
    let lease_version = f.integer("lease_version")?;
    let lease = match (
        f.optional_text("lease_owner")?,
        f.optional_instant("lease_expires_at")?,
    ) {
        (Some(owner), Some(expires_at)) => Some(Lease {
            owner,
            expires_at,
            version: lease_version,
        }),
        _ => None,
    };
    Ok(Settlement {
        settlement_date: f.parsed("settlement_date")?,
        revision: f.small("revision")?,
        status: f.parsed("status")?,
        trigger: f.parsed("trigger")?,
        requested_by: f.text("requested_by")?,
        reason: f.optional_text("reason")?,
        calendar: f.structured("calendar")?,
        fee_schedule: f.structured("fee_schedule")?,
        window: Window {
            start: f.instant("window_start")?,
            end: f.instant("window_end")?,
        },
        lease,
        lease_version,
        attempts: f.small("attempts")?,
        created_at: f.instant("created_at")?,
        started_at: f.instant("started_at")?,
        computed_at: f.optional_instant("computed_at")?,
        completed_at: f.optional_instant("completed_at")?,
        error: f.optional_text("error")?,
        totals: Vec::new(),
    })
}

/// A payout; `reference_field` is where the adapter keeps its reference (its key).
pub fn payout(f: &impl StoredFields, reference_field: &str) -> Result<Payout, StoreError> {
    Ok(Payout {
        reference: f.text(reference_field)?,
        settlement_date: f.parsed("settlement_date")?,
        revision: f.small("revision")?,
        merchant_id: f.text("merchant_id")?,
        currency: f.parsed("currency")?,
        amount_minor: f.integer("amount_minor")?,
        status: f.parsed("status")?,
        provider_payout_id: f.optional_text("provider_payout_id")?,
        attempts: f.small("attempts")?,
        last_error: f.optional_text("last_error")?,
        created_at: f.instant("created_at")?,
        updated_at: f.instant("updated_at")?,
    })
}

pub fn carry_forward(f: &impl StoredFields) -> Result<CarryForward, StoreError> {
    Ok(CarryForward {
        merchant_id: f.text("merchant_id")?,
        currency: f.parsed("currency")?,
        amount_minor: f.integer("amount_minor")?,
        origin_date: f.parsed("origin_date")?,
        origin_revision: f.small("origin_revision")?,
        applied_date: f.optional_parsed("applied_date")?,
        applied_revision: f.optional_small("applied_revision")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Fields held as text, the way a test can write them (the adapters' own readers are proven
    /// by the store contract suite on both stores).
    struct TextFields(BTreeMap<&'static str, &'static str>);

    impl StoredFields for TextFields {
        fn corrupt(&self, name: &str, detail: &dyn fmt::Display) -> StoreError {
            StoreError::Corrupt(format!("field {name}: {detail}"))
        }
        fn text(&self, name: &str) -> Result<String, StoreError> {
            self.optional_text(name)?
                .ok_or_else(|| self.corrupt(name, &"missing"))
        }
        fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
            Ok(self.0.get(name).map(|v| v.to_string()))
        }
        fn integer(&self, name: &str) -> Result<i64, StoreError> {
            self.parsed(name)
        }
        fn optional_integer(&self, name: &str) -> Result<Option<i64>, StoreError> {
            self.optional_parsed(name)
        }
        fn instant(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
            self.parsed(name)
        }
        fn optional_instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
            self.optional_parsed(name)
        }
        fn structured<T: DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
            serde_json::from_str(&self.text(name)?).map_err(|e| self.corrupt(name, &e))
        }
    }

    fn carry(fields: &[(&'static str, &'static str)]) -> Result<CarryForward, StoreError> {
        let mut all = BTreeMap::from([
            ("merchant_id", "m-1"),
            ("currency", "EUR"),
            ("amount_minor", "-400"),
            ("origin_date", "2024-03-10"),
            ("origin_revision", "2"),
        ]);
        all.extend(fields.iter().copied());
        carry_forward(&TextFields(all))
    }

    #[test]
    fn a_carry_forward_reads_its_optional_application_and_names_a_corrupt_field() {
        let open = carry(&[]).unwrap();
        assert_eq!((open.amount_minor, open.origin_revision), (-400, 2));
        assert_eq!((open.applied_date, open.applied_revision), (None, None));
        let applied = carry(&[("applied_date", "2024-03-11"), ("applied_revision", "1")]).unwrap();
        assert_eq!(applied.applied_date, Some("2024-03-11".parse().unwrap()));
        assert_eq!(applied.applied_revision, Some(1));
        let Err(StoreError::Corrupt(detail)) = carry(&[("origin_revision", "-1")]) else {
            panic!("a negative revision is corrupt");
        };
        assert!(detail.starts_with("field origin_revision: "), "{detail}");
        let Err(StoreError::Corrupt(detail)) = carry(&[("applied_date", "2024-02-30")]) else {
            panic!("an impossible date is corrupt");
        };
        assert!(detail.starts_with("field applied_date: "), "{detail}");
    }
}
