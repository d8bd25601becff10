//! Settle's core: what is true however Settle is run — money, the business calendar, fees, the
//! settlement fold and run, the store ports and adapters, CSV import/export, charts and configuration.

pub mod auth;
pub mod calendar;
pub mod chart;
#[cfg(feature = "client")]
pub mod client;
pub mod compute;
pub mod config;
pub mod csv;
pub mod demo;
pub mod excerpt;
pub mod failpoint;
pub mod http;
/// Fee schedules are part of the model (each revision stores the one it used); kept at its old path.
pub use model::fees;
pub mod idempotency;
pub mod ingest;
pub mod limits;
pub mod model;
pub mod money;
pub mod notify;
pub mod payments;
pub mod payout;
pub mod payout_report;
pub mod provider;
pub mod retry;
pub mod returns;
pub mod scheduler;
pub mod secret;
pub mod settlement;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod time;
