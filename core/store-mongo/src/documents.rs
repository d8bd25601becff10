//! BSON documents ⇄ domain records: money as Int64 minor units (Int32 read leniently), instants as
//! BSON DateTime (UTC, milliseconds), dates as `YYYY-MM-DD` strings, rates as strings — never Double.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{self, doc, Bson, Document};
use uuid::Uuid;

use settle_core::model::{
    CurrencyTotals, Settlement, SettlementFigures, SettlementLine, Transaction,
};
use settle_core::store::record::{self, StoredFields};
use settle_core::store::StoreError;

fn corrupt(field: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("field {field}: {detail}"))
}

/// A document's fields by name, for the record conversions settle-core shares (`store::record`).
pub struct Fields<'a>(pub &'a Document);

impl StoredFields for Fields<'_> {
    fn corrupt(&self, name: &str, detail: &dyn std::fmt::Display) -> StoreError {
        corrupt(name, detail)
    }

    fn text(&self, name: &str) -> Result<String, StoreError> {
        text(self.0, name).map(str::to_string)
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        optional_text(self.0, name)
    }

    fn integer(&self, name: &str) -> Result<i64, StoreError> {
        integer(self.0, name)
    }

    fn optional_integer(&self, name: &str) -> Result<Option<i64>, StoreError> {
        optional_integer(self.0, name)
    }

    fn instant(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        utc(self.0, name)
    }

    fn optional_instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        optional_utc(self.0, name)
    }

    fn structured<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        nested(self.0, name)
    }

    fn parsed<T: FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        parsed(self.0, name)
    }
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

pub fn line(document: &Document) -> Result<SettlementLine, StoreError> {
    record::line(&Fields(document))
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
    let mut settlement = record::settlement(&Fields(document))?;
    if let Ok(items) = document.get_array("totals") {
        settlement.totals = items
            .iter()
            .map(|item| {
                let item = item
                    .as_document()
                    .ok_or_else(|| corrupt("totals", "not a document"))?;
                record::currency_totals(&Fields(item))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
    }
    Ok(settlement)
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
