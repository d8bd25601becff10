//! The records of idempotent requests as the store keeps them: the response replayed to a retry,
//! and what beginning a request found. The rules that use them are `crate::idempotency`'s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A response as stored and replayed: status, JSON body and the headers worth repeating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

/// What `begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    New,
    Replay(StoredResponse),
    Conflict { locked_until: DateTime<Utc> },
    Mismatch,
}
