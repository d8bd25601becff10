//! RFC 4180 export (UTF-8, CRLF line ends, optional BOM for Excel) of a settlement revision's lines,
//! with every amount both as integer minor units and as a major-unit decimal string.

use std::io::Write;

use super::cell::write_safe_record;
use crate::model::{Settlement, SettlementLine};
use crate::money::format_minor;

/// The header of the export, in order.
pub const EXPORT_COLUMNS: &[&str] = &[
    "settlement_date",
    "revision",
    "merchant_id",
    "currency",
    "transaction_count",
    "completed_count",
    "failed_count",
    "cancelled_count",
    "pending_count",
    "payment_count",
    "refund_count",
    "chargeback_count",
    "adjustment_count",
    "late_count",
    "gross_minor",
    "refunds_minor",
    "chargebacks_minor",
    "adjustments_minor",
    "fees_minor",
    "net_minor",
    "gross",
    "refunds",
    "chargebacks",
    "adjustments",
    "fees",
    "net",
];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes the lines of one revision, every cell through [`super::safe_cell`] (signed amounts
/// stay numbers).
pub fn write_settlement_csv<W: Write>(
    mut out: W,
    settlement: &Settlement,
    lines: &[SettlementLine],
    bom: bool,
) -> std::io::Result<()> {
    if bom {
        out.write_all(UTF8_BOM)?;
    }
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    write_safe_record(&mut writer, EXPORT_COLUMNS)?;
    for line in lines {
        let f = &line.figures;
        let currency = line.currency;
        let major = |minor: i64| format_minor(minor, currency);
        write_safe_record(
            &mut writer,
            [
                settlement.settlement_date.to_string(),
                settlement.revision.to_string(),
                line.merchant_id.clone(),
                currency.code().to_string(),
                f.transaction_count.to_string(),
                f.completed_count.to_string(),
                f.failed_count.to_string(),
                f.cancelled_count.to_string(),
                f.pending_count.to_string(),
                f.payment_count.to_string(),
                f.refund_count.to_string(),
                f.chargeback_count.to_string(),
                f.adjustment_count.to_string(),
                f.late_count.to_string(),
                f.gross_minor.to_string(),
                f.refunds_minor.to_string(),
                f.chargebacks_minor.to_string(),
                f.adjustments_minor.to_string(),
                f.fees_minor.to_string(),
                f.net_minor.to_string(),
                major(f.gross_minor),
                major(f.refunds_minor),
                major(f.chargebacks_minor),
                major(f.adjustments_minor),
                major(f.fees_minor),
                major(f.net_minor),
            ],
        )?;
    }
    writer.flush()?;
    Ok(())
}
