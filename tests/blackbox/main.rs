//! Settle's black-box test harness: one binary, one module per area. The store contract suite runs
//! against every adapter; the CLI tests run the real `settle` binary on temporary directories.

mod api_access;
mod api_daemon;
mod api_peers;
mod api_reconcile;
mod api_schema;
mod api_settlements;
mod cli_import;
mod cli_migrate;
mod cli_outputs;
mod cli_payments;
mod cli_payouts;
mod cli_settle;
mod cli_stores;
mod cli_tokens;
mod client;
mod crash;
mod fee_returns;
mod ops_rules;
mod ops_scrape;
mod payments;
mod races;
mod reconcile;
mod reconcile_adjust;
mod reconcile_planted;
mod scheduler;
mod service;
mod simulation;
mod statements_xsd;
mod store_contract;
mod telemetry;
mod webhook_receiver;

// The harness (a real daemon, a payout provider and other peers on loopback, sandboxes), shared with
// the desktop console's tests through the settle-tests library.
pub use settle_tests::{daemon, http_peers, provider_server, support};
