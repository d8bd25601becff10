//! Statistics over a range of settled days, read from each date's latest completed revision; the
//! types and the fold are the domain's (`settle_domain::stats`).

use chrono::NaiveDate;

use crate::model::{Settlement, SettlementStatus};
use crate::money::MoneyError;
use crate::store::{HistoryFilter, SettlementStore, StoreError};

pub use settle_domain::stats::{
    success_rate, CurrencySummary, DailyPoint, MerchantVolume, Summary, SummaryFold,
};

/// Why statistics could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Money(#[from] MoneyError),
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

/// Totals per currency and the `top` merchants by gross volume over `[from, to]`.
pub async fn summary(
    store: &dyn SettlementStore,
    from: NaiveDate,
    to: NaiveDate,
    top: usize,
) -> Result<Summary, StatsError> {
    let mut fold = SummaryFold::default();
    for day in settled_days(store, from, to).await? {
        fold.add_day(&day)?;
        for line in store
            .settlement_lines(day.settlement_date, day.revision)
            .await?
        {
            fold.add_line(&line)?;
        }
    }
    Ok(fold.finish(from, to, top))
}
