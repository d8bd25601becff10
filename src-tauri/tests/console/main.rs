//! The console's integration tests, one binary: its commands against a real `settle serve` with a
//! real keyring, and the built app driven end to end under Xvfb through tauri-driver.

// The black-box suite's harness: a real daemon on loopback, a payout provider, sandboxes.
use settle_tests::{daemon, provider_server};

mod commands;
mod config;
mod demo;
mod e2e;
// Shared with the credentials unit tests, which use every session kind.
#[allow(dead_code)]
mod keyring_session;
