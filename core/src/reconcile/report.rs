//! The reconciliation report: per business date, kind and currency, counts and amounts matched,
//! matched with a difference, unmatched on each side, duplicate, expected and written off; as CSV.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;

use crate::csv::write_safe_record;
use crate::money::{format_minor, Currency};
use crate::reconcile::{ItemSide, ItemStatus, KindItem, StatementKind};

/// A count and a sum of signed minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub amount_minor: i64,
}

impl Tally {
    fn add(&mut self, amount_minor: i64) {
        self.count += 1;
        self.amount_minor = self.amount_minor.saturating_add(amount_minor);
    }
}

/// One row: a date, a kind and a currency. Amounts are of the statement side where an item has
/// one (what the bank or provider says), else of ours; a difference is Σ theirs − Σ ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRow {
    pub matched: Tally,
    pub matched_with_difference: Tally,
    pub difference_minor: i64,
    pub unmatched_ours: Tally,
    pub unmatched_theirs: Tally,
    pub duplicate: Tally,
    pub expected: Tally,
    pub written_off: Tally,
    pub awaiting_approval: Tally,
}

pub type ReportKey = (NaiveDate, StatementKind, Currency);

/// Folds items dated `from..=to` into rows (a match counts once, on the statement side).
pub fn report_rows(
    items: &[KindItem],
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<ReportKey, ReportRow> {
    let mut rows: BTreeMap<ReportKey, ReportRow> = BTreeMap::new();
    for KindItem { kind, item } in items {
        if item.date < from || item.date > to {
            continue;
        }
        let row = rows.entry((item.date, *kind, item.currency)).or_default();
        let theirs = item.side == ItemSide::Theirs;
        match item.status {
            ItemStatus::Matched if theirs => row.matched.add(item.amount_minor),
            ItemStatus::MatchedWithDifference if theirs => {
                row.matched_with_difference.add(item.amount_minor);
            }
            ItemStatus::Unmatched if theirs => row.unmatched_theirs.add(item.amount_minor),
            ItemStatus::Unmatched => row.unmatched_ours.add(item.amount_minor),
            ItemStatus::Duplicate => row.duplicate.add(item.amount_minor),
            ItemStatus::Expected => row.expected.add(item.amount_minor),
            ItemStatus::WrittenOff => row.written_off.add(item.amount_minor),
            ItemStatus::AwaitingApproval => row.awaiting_approval.add(item.amount_minor),
            ItemStatus::Matched | ItemStatus::MatchedWithDifference => {}
        }
    }
    // A difference belongs to its match: count it once, from the decisions' statement side.
    let mut seen = std::collections::BTreeSet::new();
    for KindItem { kind, item } in items {
        if item.status == ItemStatus::MatchedWithDifference
            && item.side == ItemSide::Theirs
            && item.date >= from
            && item.date <= to
        {
            if let Some(decision) = &item.decision {
                if seen.insert(decision.clone()) {
                    if let Some(row) = rows.get_mut(&(item.date, *kind, item.currency)) {
                        row.difference_minor =
                            row.difference_minor.saturating_add(item.difference_minor);
                    }
                }
            }
        }
    }
    rows
}

pub const REPORT_COLUMNS: &[&str] = &[
    "business_date",
    "kind",
    "currency",
    "matched_count",
    "matched_amount",
    "with_difference_count",
    "with_difference_amount",
    "difference_amount",
    "unmatched_ours_count",
    "unmatched_ours_amount",
    "unmatched_theirs_count",
    "unmatched_theirs_amount",
    "duplicate_count",
    "duplicate_amount",
    "expected_count",
    "expected_amount",
    "written_off_count",
    "written_off_amount",
    "awaiting_approval_count",
    "awaiting_approval_amount",
];

/// Writes the rows as RFC 4180 CSV, every cell spreadsheet-safe, amounts as exact decimals.
pub fn write_report_csv<W: Write>(
    out: W,
    rows: &BTreeMap<ReportKey, ReportRow>,
) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    write_safe_record(&mut writer, REPORT_COLUMNS)?;
    for ((date, kind, currency), row) in rows {
        let amount = |minor: i64| format_minor(minor, *currency);
        let mut cells = vec![date.to_string(), kind.to_string(), currency.to_string()];
        for tally in [&row.matched, &row.matched_with_difference] {
            cells.push(tally.count.to_string());
            cells.push(amount(tally.amount_minor));
        }
        cells.push(amount(row.difference_minor));
        for tally in [
            &row.unmatched_ours,
            &row.unmatched_theirs,
            &row.duplicate,
            &row.expected,
            &row.written_off,
            &row.awaiting_approval,
        ] {
            cells.push(tally.count.to_string());
            cells.push(amount(tally.amount_minor));
        }
        write_safe_record(&mut writer, &cells)?;
    }
    writer.flush()?;
    Ok(())
}
