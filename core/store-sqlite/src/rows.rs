//! Conversions between SQLite rows and domain records: one place that knows the column names.
//! Anything unreadable becomes `StoreError::Corrupt` naming the column, never a panic.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::ValueRef;
use rusqlite::Row;
use uuid::Uuid;

use settle_core::model::{
    AuditEvent, CarryForward, CurrencyTotals, Notification, Payout, Settlement, SettlementFigures,
    SettlementLine, Transaction,
};
use settle_core::money::Currency;
use settle_core::store::record::{self, StoredFields};
use settle_core::store::StoreError;
use settle_core::time::format_utc;

/// The figure columns, in the order `figures_params` binds them.
pub const FIGURE_COLUMNS: &str =
    "transaction_count, completed_count, failed_count, cancelled_count, \
     pending_count, payment_count, refund_count, chargeback_count, adjustment_count, late_count, \
     gross_minor, refunds_minor, chargebacks_minor, adjustments_minor, fees_minor, net_minor";

/// The transaction columns, in the order `transaction` reads them by position.
pub const TRANSACTION_COLUMNS: &str =
    "id, merchant_id, kind, status, amount_minor, currency, method, \
     occurred_at, external_ref, refund_of, created_at, settlement_date, late";

pub const SETTLEMENT_COLUMNS: &str =
    "settlement_date, revision, status, \"trigger\", requested_by, \
     reason, calendar, fee_schedule, window_start, window_end, lease_owner, lease_expires_at, \
     lease_version, attempts, created_at, started_at, completed_at, error, computed_at";

/// A column of a row: its name, or `At` (its position and name). Names are looked up per row;
/// positions are not, which matters on hot paths such as a settlement run's millions of rows.
pub(super) trait Column: std::fmt::Display + Copy {
    fn get<T: rusqlite::types::FromSql>(self, row: &Row) -> rusqlite::Result<T>;
    fn get_ref<'r>(self, row: &'r Row) -> rusqlite::Result<ValueRef<'r>>;
}

impl Column for &str {
    fn get<T: rusqlite::types::FromSql>(self, row: &Row) -> rusqlite::Result<T> {
        row.get(self)
    }

    fn get_ref<'r>(self, row: &'r Row) -> rusqlite::Result<ValueRef<'r>> {
        row.get_ref(self)
    }
}

/// A column by position in the select list, named for error messages.
#[derive(Clone, Copy)]
pub(super) struct At(pub usize, pub &'static str);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.1)
    }
}

impl Column for At {
    fn get<T: rusqlite::types::FromSql>(self, row: &Row) -> rusqlite::Result<T> {
        row.get(self.0)
    }

    fn get_ref<'r>(self, row: &'r Row) -> rusqlite::Result<ValueRef<'r>> {
        row.get_ref(self.0)
    }
}

fn corrupt(column: impl std::fmt::Display, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {detail}"))
}

pub(super) fn text(row: &Row, column: impl Column) -> Result<String, StoreError> {
    column.get::<String>(row).map_err(|e| corrupt(column, e))
}

pub(super) fn optional_text(row: &Row, column: impl Column) -> Result<Option<String>, StoreError> {
    column
        .get::<Option<String>>(row)
        .map_err(|e| corrupt(column, e))
}

pub(super) fn integer(row: &Row, column: impl Column) -> Result<i64, StoreError> {
    column.get::<i64>(row).map_err(|e| corrupt(column, e))
}

/// Reads the column's text where it lies in the row (no copy), for values parsed right away.
fn with_text<C: Column, T>(
    row: &Row,
    column: C,
    read: impl FnOnce(&str) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let value = column.get_ref(row).map_err(|e| corrupt(column, e))?;
    read(value.as_str().map_err(|e| corrupt(column, e))?)
}

pub(super) fn parsed<T: FromStr>(row: &Row, column: impl Column) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    with_text(row, column, |text| {
        text.parse().map_err(|e: T::Err| corrupt(column, e))
    })
}

pub(super) fn instant(row: &Row, column: impl Column) -> Result<DateTime<Utc>, StoreError> {
    with_text(row, column, |text| parse_instant(column, text))
}

pub(super) fn optional_instant(
    row: &Row,
    column: impl Column,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    optional_text(row, column)?
        .map(|value| parse_instant(column, &value))
        .transpose()
}

fn parse_instant(column: impl Column, value: &str) -> Result<DateTime<Utc>, StoreError> {
    settle_core::time::parse_stored_utc(value).map_err(|e| corrupt(column, e))
}

/// A stored `YYYY-MM-DD` date.
pub(super) fn date(row: &Row, column: impl Column) -> Result<NaiveDate, StoreError> {
    with_text(row, column, |value| {
        settle_core::time::parse_fixed_date(value)
            .ok_or_else(|| corrupt(column, format!("{value:?} is not a YYYY-MM-DD date")))
    })
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &Row,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(&text(row, column)?).map_err(|e| corrupt(column, e))
}

/// A row's columns by name, for the record conversions settle-core shares (`store::record`).
pub struct Fields<'a, 'r>(pub &'a Row<'r>);

impl StoredFields for Fields<'_, '_> {
    fn corrupt(&self, name: &str, detail: &dyn std::fmt::Display) -> StoreError {
        corrupt(name, detail)
    }

    fn text(&self, name: &str) -> Result<String, StoreError> {
        text(self.0, name)
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        optional_text(self.0, name)
    }

    fn integer(&self, name: &str) -> Result<i64, StoreError> {
        integer(self.0, name)
    }

    fn optional_integer(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.0
            .get::<_, Option<i64>>(name)
            .map_err(|e| corrupt(name, e))
    }

    fn instant(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        instant(self.0, name)
    }

    fn optional_instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        optional_instant(self.0, name)
    }

    fn structured<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        json(self.0, name)
    }

    fn parsed<T: FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        parsed(self.0, name)
    }
}

/// A date as stored: `YYYY-MM-DD`.
pub fn date_text(date: NaiveDate) -> String {
    settle_core::time::format_date(date)
}

pub fn instant_text(instant: DateTime<Utc>) -> String {
    format_utc(instant)
}

/// Decodes a row selected as `TRANSACTION_COLUMNS` (first in the select list), by position.
pub fn transaction(row: &Row) -> Result<Transaction, StoreError> {
    Ok(Transaction {
        id: parsed::<Uuid>(row, At(0, "id"))?,
        merchant_id: text(row, At(1, "merchant_id"))?,
        kind: parsed(row, At(2, "kind"))?,
        status: parsed(row, At(3, "status"))?,
        amount_minor: integer(row, At(4, "amount_minor"))?,
        currency: parsed::<Currency>(row, At(5, "currency"))?,
        method: parsed(row, At(6, "method"))?,
        occurred_at: instant(row, At(7, "occurred_at"))?,
        external_ref: text(row, At(8, "external_ref"))?,
        refund_of: optional_text(row, At(9, "refund_of"))?,
        created_at: instant(row, At(10, "created_at"))?,
        settlement_date: date(row, At(11, "settlement_date"))?,
        late: integer(row, At(12, "late"))? != 0,
    })
}

/// The figures as bind values, in `FIGURE_COLUMNS` order.
pub fn figures_params(f: &SettlementFigures) -> [i64; 16] {
    let c = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        c(f.transaction_count),
        c(f.completed_count),
        c(f.failed_count),
        c(f.cancelled_count),
        c(f.pending_count),
        c(f.payment_count),
        c(f.refund_count),
        c(f.chargeback_count),
        c(f.adjustment_count),
        c(f.late_count),
        f.gross_minor,
        f.refunds_minor,
        f.chargebacks_minor,
        f.adjustments_minor,
        f.fees_minor,
        f.net_minor,
    ]
}

pub fn line(row: &Row) -> Result<SettlementLine, StoreError> {
    record::line(&Fields(row))
}

pub fn totals(row: &Row) -> Result<CurrencyTotals, StoreError> {
    record::currency_totals(&Fields(row))
}

/// A settlement row without its totals (loaded separately).
pub fn settlement(row: &Row) -> Result<Settlement, StoreError> {
    record::settlement(&Fields(row))
}

pub fn audit_event(row: &Row) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: parsed(row, "id")?,
        occurred_at: instant(row, "occurred_at")?,
        actor: text(row, "actor")?,
        action: text(row, "action")?,
        subject: text(row, "subject")?,
        outcome: text(row, "outcome")?,
        detail: json(row, "detail")?,
    })
}

pub const PAYOUT_COLUMNS: &str =
    "reference, settlement_date, revision, merchant_id, currency, amount_minor, \
     status, provider_payout_id, attempts, last_error, created_at, updated_at";

pub fn payout(row: &Row) -> Result<Payout, StoreError> {
    record::payout(&Fields(row), "reference")
}

pub const CARRY_FORWARD_COLUMNS: &str =
    "merchant_id, currency, amount_minor, origin_date, origin_revision, applied_date, applied_revision";

pub fn carry_forward(row: &Row) -> Result<CarryForward, StoreError> {
    record::carry_forward(&Fields(row))
}

pub fn notification(row: &Row) -> Result<Notification, StoreError> {
    Ok(Notification {
        settlement_date: parsed(row, "settlement_date")?,
        revision: u32::try_from(integer(row, "revision")?).map_err(|e| corrupt("revision", e))?,
        event: text(row, "event")?,
        status: parsed(row, "status")?,
        attempts: u32::try_from(integer(row, "attempts")?).map_err(|e| corrupt("attempts", e))?,
        last_error: optional_text(row, "last_error")?,
        created_at: instant(row, "created_at")?,
    })
}

pub const API_TOKEN_COLUMNS: &str =
    "id, name, role, token_hash, created_at, created_by, revoked_at";

pub fn api_token(row: &Row) -> Result<settle_core::model::ApiToken, StoreError> {
    Ok(settle_core::model::ApiToken {
        id: parsed::<Uuid>(row, "id")?,
        name: text(row, "name")?,
        role: parsed(row, "role")?,
        token_hash: text(row, "token_hash")?,
        created_at: instant(row, "created_at")?,
        created_by: text(row, "created_by")?,
        revoked_at: optional_instant(row, "revoked_at")?,
    })
}

pub const RERUN_REQUEST_COLUMNS: &str =
    "id, settlement_date, reason, apply_current_fees, requested_by, requested_at, status, \
     decided_by, decided_at, settlement_revision, run_revision, last_refusal";

pub fn rerun_request(row: &Row) -> Result<settle_core::model::RerunRequest, StoreError> {
    let optional_revision = |row: &Row, column: &str| -> Result<Option<u32>, StoreError> {
        row.get::<_, Option<i64>>(column)
            .map_err(|e| corrupt(column, e))?
            .map(|n| u32::try_from(n).map_err(|e| corrupt(column, e)))
            .transpose()
    };
    Ok(settle_core::model::RerunRequest {
        id: parsed::<Uuid>(row, "id")?,
        settlement_date: parsed(row, "settlement_date")?,
        reason: text(row, "reason")?,
        apply_current_fees: integer(row, "apply_current_fees")? != 0,
        requested_by: text(row, "requested_by")?,
        requested_at: instant(row, "requested_at")?,
        status: parsed(row, "status")?,
        decided_by: optional_text(row, "decided_by")?,
        decided_at: optional_instant(row, "decided_at")?,
        settlement_revision: optional_revision(row, "settlement_revision")?,
        run_revision: optional_revision(row, "run_revision")?,
        last_refusal: optional_text(row, "last_refusal")?,
    })
}
