//! Settle's two report CSVs written from statements: the payout provider's payout report and the
//! payment provider's transaction report, in the columns `crate::reports` reads.

use settle_domain::money::format_minor;
use settle_domain::reconcile::Statement;
use settle_domain::time::format_utc;

fn csv_text(rows: Vec<Vec<String>>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.write_record(&row).expect("writing to memory");
    }
    String::from_utf8(writer.into_inner().expect("writing to memory")).expect("UTF-8 cells")
}

/// `reference,amount,currency,status,paid_at,provider_payout_id`, one row per entry of each
/// statement (one file for every currency).
pub fn payout_report(statements: &[Statement]) -> String {
    let mut rows = vec![crate::reports::PAYOUT_REPORT_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()];
    for e in statements.iter().flat_map(|s| &s.entries) {
        rows.push(vec![
            e.references.first().cloned().unwrap_or_default(),
            format_minor(e.amount_minor, e.currency),
            e.currency.to_string(),
            e.status.clone().unwrap_or_else(|| "paid".into()),
            e.booked_at
                .map(format_utc)
                .unwrap_or_else(|| format!("{}T12:00:00Z", e.booking_date)),
            e.external_id.clone().unwrap_or_default(),
        ]);
    }
    csv_text(rows)
}

/// `reference,amount,currency,fee,status,booked_at`, one row per entry of each statement.
pub fn provider_report(statements: &[Statement]) -> String {
    let mut rows = vec![crate::reports::PROVIDER_REPORT_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()];
    for e in statements.iter().flat_map(|s| &s.entries) {
        let status = e.status.clone().unwrap_or_else(|| {
            if e.amount_minor < 0 {
                "refunded"
            } else {
                "captured"
            }
            .to_string()
        });
        rows.push(vec![
            e.references.first().cloned().unwrap_or_default(),
            format_minor(e.amount_minor, e.currency),
            e.currency.to_string(),
            format_minor(e.fee_minor.unwrap_or(0), e.currency),
            status,
            e.booked_at
                .map(format_utc)
                .unwrap_or_else(|| format!("{}T12:00:00Z", e.booking_date)),
        ]);
    }
    csv_text(rows)
}
