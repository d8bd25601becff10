//! Statistics over a range of settled days, from each date's latest completed revision: totals per
//! currency, success rate, top merchants by volume, and the daily points the charts draw.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::model::{Settlement, SettlementFigures, SettlementStatus};
use crate::money::{format_minor, Currency, MoneyError};
use crate::store::{HistoryFilter, SettlementStore, StoreError};

/// The totals of one settlement date in one currency, all in minor units of that currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyPoint {
    pub settlement_date: NaiveDate,
    pub currency: Currency,
    pub gross_minor: i64,
    pub fees_minor: i64,
    pub net_minor: i64,
}

/// Why statistics could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One currency over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencySummary {
    pub currency: Currency,
    /// Settled days with activity in this currency.
    pub days: u64,
    #[serde(flatten)]
    pub figures: SettlementFigures,
    pub gross: String,
    pub fees: String,
    pub net: String,
    /// completed / (completed + failed + cancelled), 4 decimals; pending ones are not decided yet.
    pub success_rate: String,
}

/// A merchant's volume in one currency over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantVolume {
    pub merchant_id: String,
    pub currency: Currency,
    pub gross_minor: i64,
    pub gross: String,
    pub net_minor: i64,
    pub transaction_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub settled_days: u64,
    pub currencies: Vec<CurrencySummary>,
    /// By gross volume, largest first, per currency (volumes of different currencies are never compared).
    pub top_merchants: Vec<MerchantVolume>,
}

/// The latest completed revision of each date in `[from, to]`, oldest date first.
pub async fn settled_days(
    store: &dyn SettlementStore,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Settlement>, StoreError> {
    let filter = HistoryFilter {
        from: Some(from),
        to: Some(to),
        status: Some(SettlementStatus::Completed),
        all_revisions: true,
        limit: 0,
        offset: 0,
    };
    let mut settlements = store.settlement_history(&filter).await?;
    // Newest revision first within a date: keep the first seen per date.
    settlements.sort_by_key(|s| (s.settlement_date, std::cmp::Reverse(s.revision)));
    settlements.dedup_by_key(|s| s.settlement_date);
    Ok(settlements)
}

/// Daily gross, fees and net per currency, for the charts.
pub async fn daily_points(
    store: &dyn SettlementStore,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DailyPoint>, StoreError> {
    Ok(settled_days(store, from, to)
        .await?
        .iter()
        .flat_map(|s| {
            s.totals.iter().map(|t| DailyPoint {
                settlement_date: s.settlement_date,
                currency: t.currency,
                gross_minor: t.figures.gross_minor,
                fees_minor: t.figures.fees_minor,
                net_minor: t.figures.net_minor,
            })
        })
        .collect())
}

/// completed / (completed + failed + cancelled), rounded to 4 decimals half away from zero.
pub fn success_rate(figures: &SettlementFigures) -> String {
    let decided = figures.completed_count + figures.failed_count + figures.cancelled_count;
    if decided == 0 {
        return "0.0000".into();
    }
    let rate = Decimal::from(figures.completed_count) / Decimal::from(decided);
    format!(
        "{:.4}",
        rate.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero)
    )
}

/// Totals per currency and the `top` merchants by gross volume over `[from, to]`.
pub async fn summary(
    store: &dyn SettlementStore,
    from: NaiveDate,
    to: NaiveDate,
    top: usize,
) -> Result<Summary, StatsError> {
    let days = settled_days(store, from, to).await?;
    let mut per_currency: BTreeMap<Currency, (u64, SettlementFigures)> = BTreeMap::new();
    let mut per_merchant: BTreeMap<(String, Currency), (i64, i64, u64)> = BTreeMap::new();
    for day in &days {
        for total in &day.totals {
            let entry = per_currency.entry(total.currency).or_default();
            entry.0 += 1;
            entry.1.accumulate(&total.figures, total.currency)?;
        }
        for line in store
            .settlement_lines(day.settlement_date, day.revision)
            .await?
        {
            let entry = per_merchant
                .entry((line.merchant_id.clone(), line.currency))
                .or_default();
            entry.0 = entry
                .0
                .checked_add(line.figures.gross_minor)
                .ok_or(MoneyError::Overflow(line.currency))?;
            entry.1 = entry
                .1
                .checked_add(line.figures.net_minor)
                .ok_or(MoneyError::Overflow(line.currency))?;
            entry.2 += line.figures.transaction_count;
        }
    }
    let currencies = per_currency
        .into_iter()
        .map(|(currency, (days, figures))| CurrencySummary {
            currency,
            days,
            gross: format_minor(figures.gross_minor, currency),
            fees: format_minor(figures.fees_minor, currency),
            net: format_minor(figures.net_minor, currency),
            success_rate: success_rate(&figures),
            figures,
        })
        .collect();
    let mut top_merchants: Vec<MerchantVolume> = per_merchant
        .into_iter()
        .map(
            |((merchant_id, currency), (gross_minor, net_minor, transaction_count))| {
                MerchantVolume {
                    merchant_id,
                    currency,
                    gross_minor,
                    gross: format_minor(gross_minor, currency),
                    net_minor,
                    transaction_count,
                }
            },
        )
        .collect();
    top_merchants.sort_by(|a, b| {
        (a.currency, std::cmp::Reverse(a.gross_minor), &a.merchant_id).cmp(&(
            b.currency,
            std::cmp::Reverse(b.gross_minor),
            &b.merchant_id,
        ))
    });
    let mut kept: Vec<MerchantVolume> = Vec::new();
    let mut per_currency_count: BTreeMap<Currency, usize> = BTreeMap::new();
    for merchant in top_merchants {
        let count = per_currency_count.entry(merchant.currency).or_default();
        if *count < top {
            *count += 1;
            kept.push(merchant);
        }
    }
    Ok(Summary {
        from,
        to,
        settled_days: days.len() as u64,
        currencies,
        top_merchants: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_is_exact_to_four_decimals() {
        let figures = |completed, failed, cancelled, pending| SettlementFigures {
            completed_count: completed,
            failed_count: failed,
            cancelled_count: cancelled,
            pending_count: pending,
            ..SettlementFigures::default()
        };
        assert_eq!(success_rate(&figures(2, 1, 0, 5)), "0.6667");
        assert_eq!(success_rate(&figures(1, 0, 0, 0)), "1.0000");
        assert_eq!(success_rate(&figures(0, 0, 0, 3)), "0.0000");
        // 1/8 = 0.125 exactly; 7/16 = 0.4375 exactly; 1/3 rounds down.
        assert_eq!(success_rate(&figures(1, 7, 0, 0)), "0.1250");
        assert_eq!(success_rate(&figures(7, 9, 0, 0)), "0.4375");
        assert_eq!(success_rate(&figures(1, 2, 0, 0)), "0.3333");
    }
}
