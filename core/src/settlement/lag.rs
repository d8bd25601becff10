//! The settlement lag's starting point, read from the store when the daemon starts: telemetry
//! only holds the gauge, and is fed from here and by each completed run.

use crate::store::{HistoryFilter, SettlementStore, StoreError};
use crate::telemetry::settled_through;

/// Starts the lag from the store: the close of the latest date with a completed revision.
pub async fn initialise_settlement_lag(store: &dyn SettlementStore) -> Result<(), StoreError> {
    let latest = store
        .settlement_history(&HistoryFilter {
            status: Some(crate::model::SettlementStatus::Completed),
            all_revisions: true,
            limit: 1,
            ..HistoryFilter::default()
        })
        .await?;
    if let Some(settlement) = latest.first() {
        settled_through(settlement.window.end);
    }
    Ok(())
}
