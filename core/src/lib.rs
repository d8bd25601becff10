//! Settle's core: what is true however Settle is run — money, the business calendar, fees, the
//! settlement fold and run, the store ports and adapters, CSV import/export, charts and configuration.

// The pure domain, re-exported at the paths the rest of Settle names it by.
pub use settle_domain::{
    auth, calendar, compute, excerpt, fees, limits, model, money, problem_types, returns, secret,
    time,
};

pub use settle_chart as chart;
pub mod config;
pub mod csv;
pub mod demo;
pub mod failpoint;
pub mod http;
pub mod idempotency;
pub mod ingest;
pub mod notify;
pub mod payments;
pub mod payout;
pub mod payout_report;
pub mod provider;
pub mod reconcile;
pub mod retry;
pub mod scheduler;
pub mod settlement;
pub mod stats;
pub mod store;
pub use settle_telemetry as telemetry;
