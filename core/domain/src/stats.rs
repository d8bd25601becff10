//! Statistics types and their pure fold: totals per currency, success rate and top merchants
//! over settled days, from the days' totals and lines (the store reading is settle-core's).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::model::{Settlement, SettlementFigures, SettlementLine};
use crate::money::{format_minor, Currency, MoneyError};

/// The totals of one settlement date in one currency, all in minor units of that currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyPoint {
    pub settlement_date: NaiveDate,
    pub currency: Currency,
    pub gross_minor: i64,
    pub fees_minor: i64,
    pub net_minor: i64,
}

/// One currency over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CurrencySummary {
    #[schema(value_type = String, example = "USD")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MerchantVolume {
    pub merchant_id: String,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    pub gross_minor: i64,
    pub gross: String,
    pub net_minor: i64,
    pub transaction_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub settled_days: u64,
    pub currencies: Vec<CurrencySummary>,
    /// By gross volume, largest first, per currency (volumes of different currencies are never compared).
    pub top_merchants: Vec<MerchantVolume>,
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

/// Accumulates settled days (their totals and lines) into a [`Summary`]: per-currency figures and
/// each merchant's volume, with overflow an error rather than a wrapped number.
#[derive(Debug, Default)]
pub struct SummaryFold {
    days: u64,
    per_currency: BTreeMap<Currency, (u64, SettlementFigures)>,
    per_merchant: BTreeMap<(String, Currency), (i64, i64, u64)>,
}

impl SummaryFold {
    /// Counts one settled day and its totals per currency.
    pub fn add_day(&mut self, day: &Settlement) -> Result<(), MoneyError> {
        self.days += 1;
        for total in &day.totals {
            let entry = self.per_currency.entry(total.currency).or_default();
            entry.0 += 1;
            entry.1.accumulate(&total.figures, total.currency)?;
        }
        Ok(())
    }

    /// Adds one merchant line of a day already added.
    pub fn add_line(&mut self, line: &SettlementLine) -> Result<(), MoneyError> {
        let entry = self
            .per_merchant
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
        Ok(())
    }

    /// The summary of `[from, to]` with the `top` merchants by gross volume per currency.
    pub fn finish(self, from: NaiveDate, to: NaiveDate, top: usize) -> Summary {
        let currencies = self
            .per_currency
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
        let mut top_merchants: Vec<MerchantVolume> = self
            .per_merchant
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
        Summary {
            from,
            to,
            settled_days: self.days,
            currencies,
            top_merchants: kept,
        }
    }
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
