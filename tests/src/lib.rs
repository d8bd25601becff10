//! The black-box test package of Settle: its tests live in `blackbox/` (one binary, many modules);
//! this library is their harness, shared with the desktop console's tests in `src-tauri/tests/`.

pub mod daemon;
pub mod http_peers;
pub mod mongo;
pub mod provider_server;
pub mod sim_model;
pub mod support;
