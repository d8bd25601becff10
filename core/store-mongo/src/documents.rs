//! BSON documents ⇄ domain records: money as Int64 minor units (Int32 read leniently), instants as
//! BSON DateTime (UTC, milliseconds), dates as `YYYY-MM-DD` strings, rates as strings — never Double.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{self, doc, Bson, Document};
use uuid::Uuid;

use settle_core::calendar::Window;
use settle_core::model::{
    CurrencyTotals, Lease, Settlement, SettlementFigures, SettlementLine, Transaction,
};
use settle_core::store::StoreError;

fn corrupt(field: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("field {field}: {detail}"))
}

pub fn date_text(date: NaiveDate) -> String {
    settle_core::time::format_date(date)
}

pub fn instant(value: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(value.timestamp_millis())
}

pub fn text<'d>(document: &'d Document, field: &str) -> Result<&'d str, StoreError> {
    document.get_str(field).map_err(|e| corrupt(field, e))
}

pub fn optional_text(document: &Document, field: &str) -> Result<Option<String>, StoreError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(corrupt(field, format!("expected a string, found {other}"))),
    }
}

/// An integer stored as Int64 (or, leniently, Int32). A Double is refused: money never is one.
pub fn integer(document: &Document, field: &str) -> Result<i64, StoreError> {
    match document.get(field) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(other) => Err(corrupt(
            field,
            format!("expected an integer, found {other}"),
        )),
        None => Err(corrupt(field, "missing")),
    }
}

pub fn optional_integer(document: &Document, field: &str) -> Result<Option<i64>, StoreError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => integer(document, field).map(Some),
    }
}

pub fn count(document: &Document, field: &str) -> Result<u64, StoreError> {
    u64::try_from(integer(document, field)?).map_err(|e| corrupt(field, e))
}

pub fn small(document: &Document, field: &str) -> Result<u32, StoreError> {
    u32::try_from(integer(document, field)?).map_err(|e| corrupt(field, e))
}

pub fn parsed<T: FromStr>(document: &Document, field: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text(document, field)?
        .parse()
        .map_err(|e: T::Err| corrupt(field, e))
}

pub fn utc(document: &Document, field: &str) -> Result<DateTime<Utc>, StoreError> {
    let value = document
        .get_datetime(field)
        .map_err(|e| corrupt(field, e))?;
    DateTime::from_timestamp_millis(value.timestamp_millis())
        .ok_or_else(|| corrupt(field, "out of range"))
}

pub fn optional_utc(document: &Document, field: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => utc(document, field).map(Some),
    }
}

pub fn boolean(document: &Document, field: &str) -> Result<bool, StoreError> {
    document.get_bool(field).map_err(|e| corrupt(field, e))
}

/// A serde value stored as a sub-document (calendar, fee schedule: strings and integers only).
pub fn nested<T: serde::de::DeserializeOwned>(
    document: &Document,
    field: &str,
) -> Result<T, StoreError> {
    let value = document
        .get(field)
        .ok_or_else(|| corrupt(field, "missing"))?;
    bson::from_bson(value.clone()).map_err(|e| corrupt(field, e))
}

pub fn to_nested<T: serde::Serialize>(value: &T) -> Result<Bson, StoreError> {
    bson::to_bson(value).map_err(|e| StoreError::Backend(format!("cannot encode a document: {e}")))
}

pub fn transaction(document: &Document) -> Result<Transaction, StoreError> {
    Ok(Transaction {
        id: parsed::<Uuid>(document, "_id")?,
        merchant_id: text(document, "merchant_id")?.to_string(),
        kind: parsed(document, "kind")?,
        status: parsed(document, "status")?,
        amount_minor: integer(document, "amount_minor")?,
        currency: parsed(document, "currency")?,
        method: parsed(document, "method")?,
        occurred_at: utc(document, "occurred_at")?,
        external_ref: text(document, "external_ref")?.to_string(),
        refund_of: optional_text(document, "refund_of")?,
        created_at: utc(document, "created_at")?,
        settlement_date: parsed(document, "settlement_date")?,
        late: boolean(document, "late")?,
    })
}

pub fn figures_document(f: &SettlementFigures) -> Document {
    let c = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    doc! {
        "transaction_count": c(f.transaction_count),
        "completed_count": c(f.completed_count),
        "failed_count": c(f.failed_count),
        "cancelled_count": c(f.cancelled_count),
        "pending_count": c(f.pending_count),
        "payment_count": c(f.payment_count),
        "refund_count": c(f.refund_count),
        "chargeback_count": c(f.chargeback_count),
        "adjustment_count": c(f.adjustment_count),
        "late_count": c(f.late_count),
        "gross_minor": f.gross_minor,
        "refunds_minor": f.refunds_minor,
        "chargebacks_minor": f.chargebacks_minor,
        "adjustments_minor": f.adjustments_minor,
        "fees_minor": f.fees_minor,
        "net_minor": f.net_minor,
    }
}

pub fn figures(d: &Document) -> Result<SettlementFigures, StoreError> {
    Ok(SettlementFigures {
        transaction_count: count(d, "transaction_count")?,
        completed_count: count(d, "completed_count")?,
        failed_count: count(d, "failed_count")?,
        cancelled_count: count(d, "cancelled_count")?,
        pending_count: count(d, "pending_count")?,
        payment_count: count(d, "payment_count")?,
        refund_count: count(d, "refund_count")?,
        chargeback_count: count(d, "chargeback_count")?,
        adjustment_count: count(d, "adjustment_count")?,
        late_count: count(d, "late_count")?,
        gross_minor: integer(d, "gross_minor")?,
        refunds_minor: integer(d, "refunds_minor")?,
        chargebacks_minor: integer(d, "chargebacks_minor")?,
        adjustments_minor: integer(d, "adjustments_minor")?,
        fees_minor: integer(d, "fees_minor")?,
        net_minor: integer(d, "net_minor")?,
    })
}

pub fn line(document: &Document) -> Result<SettlementLine, StoreError> {
    Ok(SettlementLine {
        merchant_id: text(document, "merchant_id")?.to_string(),
        currency: parsed(document, "currency")?,
        figures: figures(document)?,
    })
}

pub fn totals_document(totals: &CurrencyTotals) -> Document {
    let mut document = figures_document(&totals.figures);
    document.insert("currency", totals.currency.code());
    document.insert(
        "merchant_count",
        i64::try_from(totals.merchant_count).unwrap_or(i64::MAX),
    );
    document
}

pub fn settlement(document: &Document) -> Result<Settlement, StoreError> {
    let lease_version = integer(document, "lease_version")?;
    let lease = match (
        optional_text(document, "lease_owner")?,
        optional_utc(document, "lease_expires_at")?,
    ) {
        (Some(owner), Some(expires_at)) => Some(Lease {
            owner,
            expires_at,
            version: lease_version,
        }),
        _ => None,
    };
    let totals = match document.get_array("totals") {
        Ok(items) => items
            .iter()
            .map(|item| {
                let item = item
                    .as_document()
                    .ok_or_else(|| corrupt("totals", "not a document"))?;
                Ok(CurrencyTotals {
                    currency: parsed(item, "currency")?,
                    merchant_count: count(item, "merchant_count")?,
                    figures: figures(item)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?,
        Err(_) => Vec::new(),
    };
    Ok(Settlement {
        settlement_date: parsed(document, "settlement_date")?,
        revision: small(document, "revision")?,
        status: parsed(document, "status")?,
        trigger: parsed(document, "trigger")?,
        requested_by: text(document, "requested_by")?.to_string(),
        reason: optional_text(document, "reason")?,
        calendar: nested(document, "calendar")?,
        fee_schedule: nested(document, "fee_schedule")?,
        window: Window {
            start: utc(document, "window_start")?,
            end: utc(document, "window_end")?,
        },
        lease,
        lease_version,
        attempts: small(document, "attempts")?,
        created_at: utc(document, "created_at")?,
        started_at: utc(document, "started_at")?,
        computed_at: optional_utc(document, "computed_at")?,
        completed_at: optional_utc(document, "completed_at")?,
        error: optional_text(document, "error")?,
        totals,
    })
}

/// A JSON value stored as its JSON text: round-trips exactly (any JSON, integers beyond i64, keys
/// MongoDB would refuse), where a sub-document would not.
pub fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// A JSON value stored by `json_text`; a sub-document or array (written by other tools) is read
/// too.
pub fn json_value(document: &Document, field: &str) -> Result<serde_json::Value, StoreError> {
    match document.get(field) {
        Some(Bson::String(text)) => serde_json::from_str(text).map_err(|e| corrupt(field, e)),
        Some(value @ (Bson::Document(_) | Bson::Array(_))) => {
            serde_json::to_value(value).map_err(|e| corrupt(field, e))
        }
        Some(other) => Err(corrupt(field, format!("expected JSON text, found {other}"))),
        None => Err(corrupt(field, "missing")),
    }
}

/// A transaction as stored, without its freeze state (which the writer sets): dates as text, money
/// as Int64, instants as DateTime, and the idempotency key that recorded it, if any.
pub fn transaction_document(
    t: &Transaction,
    natural_date: NaiveDate,
    idempotency: Option<(&str, &str)>,
) -> Document {
    let mut document = doc! {
        "_id": t.id.to_string(),
        "merchant_id": &t.merchant_id,
        "kind": t.kind.as_str(),
        "status": t.status.as_str(),
        "amount_minor": t.amount_minor,
        "currency": t.currency.code(),
        "method": t.method.as_str(),
        "occurred_at": instant(t.occurred_at),
        "external_ref": &t.external_ref,
        "refund_of": t.refund_of.clone().map(Bson::String).unwrap_or(Bson::Null),
        "created_at": instant(t.created_at),
        "natural_date": date_text(natural_date),
        "settlement_date": date_text(t.settlement_date),
        "late": t.late,
    };
    if let Some((principal, key)) = idempotency {
        document.insert("idempotency_principal", principal);
        document.insert("idempotency_key", key);
    }
    document
}
