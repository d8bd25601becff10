//! The reconciliation gauges: items by status, open exceptions (count, amount, oldest age) per kind
//! and currency, computed from the service's items and published to telemetry by a refresh.

use std::collections::BTreeMap;

use settle_telemetry::ReconciliationRow;

use super::service::{KindItem, ReconcileError, ReconciliationService};
use super::StatementKind;
use crate::money::Currency;

/// One row per kind and currency that has items: `exceptions` are the service's queue (a
/// decision to review counts once), so the gauges say what the queue says.
pub fn rows(items: &[KindItem], exceptions: &[KindItem]) -> Vec<ReconciliationRow> {
    let mut by_pair: BTreeMap<(StatementKind, Currency), ReconciliationRow> = BTreeMap::new();
    let row = |kind: StatementKind, currency: Currency| ReconciliationRow {
        kind: kind.as_str(),
        currency: currency.code().to_string(),
        items_by_status: Vec::new(),
        open_exceptions: 0,
        open_amount_minor: 0,
        oldest_age_days: 0,
    };
    let mut statuses: BTreeMap<(StatementKind, Currency), BTreeMap<&'static str, u64>> =
        BTreeMap::new();
    for KindItem { kind, item } in items {
        by_pair
            .entry((*kind, item.currency))
            .or_insert_with(|| row(*kind, item.currency));
        *statuses
            .entry((*kind, item.currency))
            .or_default()
            .entry(item.status.as_str())
            .or_default() += 1;
    }
    for KindItem { kind, item } in exceptions {
        let entry = by_pair
            .entry((*kind, item.currency))
            .or_insert_with(|| row(*kind, item.currency));
        entry.open_exceptions += 1;
        entry.open_amount_minor = entry
            .open_amount_minor
            .saturating_add(item.amount_minor.unsigned_abs());
        entry.oldest_age_days = entry
            .oldest_age_days
            .max(u64::try_from(item.age_days).unwrap_or(0));
    }
    by_pair
        .into_iter()
        .map(|(pair, mut row)| {
            row.items_by_status = statuses
                .remove(&pair)
                .unwrap_or_default()
                .into_iter()
                .collect();
            row
        })
        .collect()
}

/// Reads every kind's items and the exception queue, and publishes the gauges.
pub async fn refresh(service: &ReconciliationService) -> Result<(), ReconcileError> {
    let mut items = Vec::new();
    for kind in StatementKind::ALL {
        items.extend(service.items(*kind).await?);
    }
    let exceptions = service.exceptions(None, None).await?;
    settle_telemetry::reconciliation_refreshed(rows(&items, &exceptions));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Item, ItemSide, ItemStatus};

    fn item(
        kind: StatementKind,
        code: &str,
        status: ItemStatus,
        amount: i64,
        age: i64,
    ) -> KindItem {
        KindItem {
            kind,
            item: Item {
                side: ItemSide::Theirs,
                id: format!("{code}-{amount}"),
                amount_minor: amount,
                currency: Currency::from_code(code).unwrap(),
                date: "2024-03-10".parse().unwrap(),
                status,
                decision: None,
                rule: None,
                difference_minor: 0,
                needs_review: false,
                expected_by: None,
                age_days: age,
                references: vec![],
            },
        }
    }

    #[test]
    fn rows_count_statuses_and_the_open_queue_per_kind_and_currency() {
        let items = vec![
            item(StatementKind::Bank, "USD", ItemStatus::Matched, 100, 9),
            item(StatementKind::Bank, "USD", ItemStatus::Unmatched, -250, 4),
            item(StatementKind::Bank, "USD", ItemStatus::Unmatched, 75, 6),
            item(StatementKind::Bank, "EUR", ItemStatus::Matched, 10, 1),
            item(StatementKind::Payouts, "USD", ItemStatus::Expected, 5, 1),
        ];
        let exceptions: Vec<KindItem> = items
            .iter()
            .filter(|i| i.item.is_exception())
            .cloned()
            .collect();
        let rows = rows(&items, &exceptions);
        assert_eq!(rows.len(), 3);
        let bank_usd = rows
            .iter()
            .find(|r| r.kind == "bank" && r.currency == "USD")
            .unwrap();
        assert_eq!(
            bank_usd.items_by_status,
            vec![("matched", 1), ("unmatched", 2)]
        );
        assert_eq!(bank_usd.open_exceptions, 2);
        assert_eq!(bank_usd.open_amount_minor, 325);
        assert_eq!(bank_usd.oldest_age_days, 6);
        // A pair with items but nothing open reports zeros, not nothing.
        let bank_eur = rows.iter().find(|r| r.currency == "EUR").unwrap();
        assert_eq!(
            (
                bank_eur.open_exceptions,
                bank_eur.open_amount_minor,
                bank_eur.oldest_age_days
            ),
            (0, 0, 0)
        );
    }
}
