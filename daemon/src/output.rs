//! Human-readable output: tables of settlements, totals, lines and late transactions, with amounts
//! in major units grouped by thousands (CSV exports keep the plain machine form).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use settle_core::calendar::BusinessCalendar;
use settle_core::model::{
    CarryForward, CurrencyTotals, Notification, Payout, Settlement, SettlementFigures,
    SettlementLine, Transaction,
};
use settle_core::money::{format_minor, Currency};
use settle_core::store::MerchantHold;

/// `1234567` USD cents → `12,345.67`.
pub fn amount(minor: i64, currency: Currency) -> String {
    let plain = format_minor(minor, currency);
    let (sign, unsigned) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    let mut grouped = String::with_capacity(integer.len() + integer.len() / 3);
    for (position, digit) in integer.chars().enumerate() {
        if position > 0 && (integer.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn right_align_from(table: &mut Table, first_numeric_column: usize) {
    let count = table.column_count();
    for index in first_numeric_column..count {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The header block of `settle show`.
pub fn settlement_header(settlement: &Settlement) -> String {
    let calendar: &BusinessCalendar = &settlement.calendar;
    let local = |instant: chrono::DateTime<chrono::Utc>| {
        instant
            .with_timezone(&calendar.timezone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    let mut text = format!(
        "Settlement {} revision {} — {}\n",
        settlement.settlement_date, settlement.revision, settlement.status
    );
    text.push_str(&format!(
        "  window     {} → {} ({} cutoff {}; UTC {} → {})\n",
        local(settlement.window.start),
        local(settlement.window.end),
        calendar.timezone.name(),
        calendar.cutoff,
        settle_core::time::format_utc(settlement.window.start),
        settle_core::time::format_utc(settlement.window.end),
    ));
    text.push_str(&format!(
        "  started    {} by {} ({}; attempt {})\n",
        settle_core::time::format_utc(settlement.started_at),
        settlement.requested_by,
        settlement.trigger,
        settlement.attempts
    ));
    if let Some(completed_at) = settlement.completed_at {
        text.push_str(&format!(
            "  completed  {}\n",
            settle_core::time::format_utc(completed_at)
        ));
    }
    if let Some(reason) = &settlement.reason {
        text.push_str(&format!("  reason     {reason}\n"));
    }
    if let Some(error) = &settlement.error {
        text.push_str(&format!("  error      {error}\n"));
    }
    let fees = &settlement.fee_schedule.default;
    text.push_str(&format!(
        "  fees       default {}%{}{}\n",
        fees.percent.unwrap_or_default(),
        if fees.fixed.is_empty() {
            ""
        } else {
            " + fixed"
        },
        if settlement.fee_schedule.merchants.is_empty()
            && settlement.fee_schedule.methods.is_empty()
        {
            String::new()
        } else {
            format!(
                " ({} method and {} merchant override(s))",
                settlement.fee_schedule.methods.len(),
                settlement.fee_schedule.merchants.len()
            )
        }
    ));
    text
}

/// Gross, refunds, chargebacks, adjustments, fees and net, formatted.
fn amount_cells(f: &SettlementFigures, c: Currency) -> Vec<String> {
    [
        f.gross_minor,
        f.refunds_minor,
        f.chargebacks_minor,
        f.adjustments_minor,
        f.fees_minor,
        f.net_minor,
    ]
    .into_iter()
    .map(|minor| amount(minor, c))
    .collect()
}

pub fn totals_table(totals: &[CurrencyTotals]) -> Table {
    let mut table = table(&[
        "currency",
        "merchants",
        "transactions",
        "completed",
        "failed",
        "cancelled",
        "pending",
        "late",
        "gross",
        "refunds",
        "chargebacks",
        "adjustments",
        "fees",
        "net",
    ]);
    for total in totals {
        let f = &total.figures;
        let c = total.currency;
        let mut row = vec![
            c.code().to_string(),
            total.merchant_count.to_string(),
            f.transaction_count.to_string(),
            f.completed_count.to_string(),
            f.failed_count.to_string(),
            f.cancelled_count.to_string(),
            f.pending_count.to_string(),
            f.late_count.to_string(),
        ];
        row.extend(amount_cells(f, c));
        table.add_row(row);
    }
    right_align_from(&mut table, 1);
    table
}

pub fn lines_table(lines: &[SettlementLine]) -> Table {
    let mut table = table(&[
        "merchant_id",
        "currency",
        "transactions",
        "completed",
        "late",
        "gross",
        "refunds",
        "chargebacks",
        "adjustments",
        "fees",
        "net",
    ]);
    for line in lines {
        let f = &line.figures;
        let c = line.currency;
        let mut row = vec![
            line.merchant_id.clone(),
            c.code().to_string(),
            f.transaction_count.to_string(),
            f.completed_count.to_string(),
            f.late_count.to_string(),
        ];
        row.extend(amount_cells(f, c));
        table.add_row(row);
    }
    right_align_from(&mut table, 2);
    table
}

pub fn history_table(settlements: &[Settlement]) -> Table {
    let mut table = table(&[
        "settlement_date",
        "revision",
        "status",
        "trigger",
        "transactions",
        "net per currency",
        "reason / error",
    ]);
    for s in settlements {
        let transactions: u64 = s.totals.iter().map(|t| t.figures.transaction_count).sum();
        let net = s
            .totals
            .iter()
            .map(|t| format!("{} {}", amount(t.figures.net_minor, t.currency), t.currency))
            .collect::<Vec<_>>()
            .join(", ");
        let note = s
            .error
            .clone()
            .or_else(|| s.reason.clone())
            .unwrap_or_default();
        table.add_row(vec![
            s.settlement_date.to_string(),
            s.revision.to_string(),
            s.status.to_string(),
            s.trigger.to_string(),
            transactions.to_string(),
            net,
            note,
        ]);
    }
    table
}

pub fn late_table(transactions: &[Transaction]) -> Table {
    let mut table = table(&[
        "external_ref",
        "merchant_id",
        "kind",
        "status",
        "amount",
        "currency",
        "occurred_at (UTC)",
        "arrived",
    ]);
    for t in transactions {
        table.add_row(vec![
            t.external_ref.clone(),
            t.merchant_id.clone(),
            t.kind.to_string(),
            t.status.to_string(),
            amount(t.amount_minor, t.currency),
            t.currency.code().to_string(),
            settle_core::time::format_utc(t.occurred_at),
            settle_core::time::format_utc(t.created_at),
        ]);
    }
    table
}

pub fn payouts_table(payouts: &[Payout]) -> Table {
    let mut table = table(&[
        "merchant_id",
        "currency",
        "amount",
        "status",
        "revision",
        "reference",
        "attempts",
        "last error",
    ]);
    for p in payouts {
        table.add_row(vec![
            p.merchant_id.clone(),
            p.currency.code().to_string(),
            amount(p.amount_minor, p.currency),
            p.status.to_string(),
            p.revision.to_string(),
            p.reference.clone(),
            p.attempts.to_string(),
            p.last_error.clone().unwrap_or_default(),
        ]);
    }
    if let Some(column) = table.column_mut(2) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    table
}

pub fn notifications_table(notifications: &[Notification]) -> Table {
    let mut table = table(&[
        "revision",
        "event",
        "status",
        "attempts",
        "at",
        "last error",
    ]);
    for n in notifications {
        table.add_row(vec![
            n.revision.to_string(),
            n.event.clone(),
            n.status.to_string(),
            n.attempts.to_string(),
            settle_core::time::format_utc(n.created_at),
            n.last_error.clone().unwrap_or_default(),
        ]);
    }
    table
}

pub fn holds_table(holds: &[MerchantHold]) -> Table {
    let mut table = table(&["merchant_id", "reason", "held by", "since"]);
    for h in holds {
        table.add_row(vec![
            h.merchant_id.clone(),
            h.reason.clone(),
            h.held_by.clone(),
            settle_core::time::format_utc(h.held_at),
        ]);
    }
    table
}

pub fn carry_forwards_table(owed: &[CarryForward]) -> Table {
    let mut table = table(&[
        "merchant_id",
        "currency",
        "owed",
        "from settlement",
        "applied to",
    ]);
    for c in owed {
        table.add_row(vec![
            c.merchant_id.clone(),
            c.currency.code().to_string(),
            amount(-c.amount_minor, c.currency),
            format!("{} r{}", c.origin_date, c.origin_revision),
            match (c.applied_date, c.applied_revision) {
                (Some(date), Some(revision)) => format!("{date} r{revision}"),
                _ => "(next settlement)".into(),
            },
        ]);
    }
    table
}

/// API tokens for `settle token list`: who may call the API. Never the token or its hash.
pub fn tokens_table(tokens: &[settle_core::model::ApiToken]) -> Table {
    let mut table = table(&["name", "role", "created", "created by", "revoked"]);
    for t in tokens {
        table.add_row(vec![
            t.name.clone(),
            t.role.to_string(),
            settle_core::time::format_utc(t.created_at),
            t.created_by.clone(),
            match t.revoked_at {
                Some(at) => settle_core::time::format_utc(at),
                None => "no".into(),
            },
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_grouped_by_thousands() {
        let usd = Currency::from_code("USD").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(amount(123_456_789, usd), "1,234,567.89");
        assert_eq!(amount(-100_000, usd), "-1,000.00");
        assert_eq!(amount(5, usd), "0.05");
        assert_eq!(amount(1_000, jpy), "1,000");
        assert_eq!(amount(999, jpy), "999");
    }
}
