//! Settle's black-box test harness: one binary, one module per area. The store contract suite runs
//! against every adapter; the CLI tests run the real `settle` binary on temporary directories.

mod api_access;
mod api_daemon;
mod api_peers;
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
mod daemon;
mod http_peers;
mod ops_rules;
mod ops_scrape;
mod payments;
mod provider_server;
mod service;
mod store_contract;
mod support;
mod telemetry;
mod webhook_receiver;
