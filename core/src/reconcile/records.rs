//! Settle's own records as the matcher sees them, per statement kind: payouts for the bank
//! statement (debits) and the payout report, payments and refunds for the provider's report.

use chrono::{Duration, NaiveDate};

use crate::calendar::BusinessCalendar;
use crate::model::{PayoutStatus, Transaction, TransactionKind, TransactionStatus};
use crate::reconcile::{OurRecord, StatementKind};
use crate::store::{SharedStore, StoreError};

/// Most days one reconciliation reads records for (a guard against a statement of decades).
pub const MAX_RECORD_DAYS: i64 = 400;
const PAGE_SIZE: u32 = 5_000;

/// Payouts that have been, or may have been, sent: the ones a statement can show.
fn on_statements(status: PayoutStatus) -> bool {
    matches!(
        status,
        PayoutStatus::Sent | PayoutStatus::Confirmed | PayoutStatus::Unknown
    )
}

/// Every transaction of a settlement date, read page by page.
pub async fn date_transactions(
    store: &SharedStore,
    date: NaiveDate,
) -> Result<Vec<Transaction>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.transactions_page(date, after, PAGE_SIZE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let full = page.len() as u32 == PAGE_SIZE;
        out.extend(page);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// The records of ours of `kind` dated `from..=to`.
pub async fn records(
    store: &SharedStore,
    calendar: &BusinessCalendar,
    kind: StatementKind,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<OurRecord>, StoreError> {
    let mut out = Vec::new();
    let mut date = from;
    while date <= to {
        match kind {
            StatementKind::Bank | StatementKind::Payouts => {
                for payout in store.payouts(date).await? {
                    if !on_statements(payout.status) {
                        continue;
                    }
                    // The bank shows a payout as a debit of the marketplace's account.
                    let sign = if kind == StatementKind::Bank { -1 } else { 1 };
                    let mut references = vec![payout.reference.clone()];
                    references.extend(payout.provider_payout_id.clone());
                    out.push(OurRecord {
                        id: payout.reference,
                        amount_minor: sign * payout.amount_minor,
                        currency: payout.currency,
                        date: payout.settlement_date,
                        references,
                    });
                }
            }
            StatementKind::Provider => {
                for t in date_transactions(store, date).await? {
                    let sign = match t.kind {
                        TransactionKind::Payment => 1,
                        TransactionKind::Refund => -1,
                        _ => continue,
                    };
                    if t.status != TransactionStatus::Completed {
                        continue;
                    }
                    let business_date = calendar.date_of(t.occurred_at).unwrap_or(date);
                    out.push(OurRecord {
                        id: t.id.to_string(),
                        amount_minor: sign * t.amount_minor,
                        currency: t.currency,
                        date: business_date,
                        references: vec![t.external_ref],
                    });
                }
            }
        }
        date += Duration::days(1);
    }
    Ok(out)
}
