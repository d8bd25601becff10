//! Idempotent requests, per the IETF Idempotency-Key draft and Stripe's documented behaviour: key
//! rules, the request fingerprint, and begin → execute → complete (or release) around a handler.
//!
//! Outcomes are named the same in code, logs and metrics: `new` (execute), `replay` (the stored
//! response), `conflict` (the first request is still in flight: 409 with Retry-After) and
//! `mismatch` (the key was used for another request: 422).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{IdempotencyBegin, IdempotencyStore, StoreError};

pub use settle_domain::idempotency_key::{fingerprint, IdempotencyKey, KeyError, MAX_KEY_LENGTH};

/// How long a completed request's response is kept and replayed.
pub const DEFAULT_RETENTION_HOURS: i64 = 24;
/// How long a request in flight holds its key before another may take over.
pub const DEFAULT_LOCK_SECONDS: i64 = 60;
pub use crate::model::idempotency::{BeginOutcome, StoredResponse};

/// The outcome names used everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    New,
    Replay,
    Conflict,
    Mismatch,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::New,
        Outcome::Replay,
        Outcome::Conflict,
        Outcome::Mismatch,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::New => "new",
            Outcome::Replay => "replay",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
        }
    }
}

/// What a handler decided, which says whether its response is kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// The request executed (a 2xx, or a business 4xx decided against stored state): stored and
    /// replayed to every retry with this key.
    Completed(StoredResponse),
    /// Nothing was changed (validation failed before execution, or a 5xx whose effects were rolled
    /// back): the key is released so that a corrected retry can succeed.
    NothingChanged(StoredResponse),
}

/// The answer to an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub response: StoredResponse,
    /// For `conflict`: seconds until the key's lock ends (Retry-After).
    pub retry_after_seconds: Option<i64>,
}

/// Settings of the idempotency layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencySettings {
    pub retention: Duration,
    pub lock: Duration,
    pub require_uuid_v4: bool,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            retention: Duration::hours(DEFAULT_RETENTION_HOURS),
            lock: Duration::seconds(DEFAULT_LOCK_SECONDS),
            require_uuid_v4: false,
        }
    }
}

/// Problem type URIs (RFC 9457) of the idempotency layer, from the one list of the domain.
pub use crate::problem_types::{IDEMPOTENCY_CONFLICT, IDEMPOTENCY_KEY_REUSED};

/// Runs handlers at most once per (actor, key).
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    settings: IdempotencySettings,
}

impl Idempotency {
    pub fn new(store: Arc<dyn IdempotencyStore>, settings: IdempotencySettings) -> Self {
        Idempotency { store, settings }
    }

    pub fn settings(&self) -> &IdempotencySettings {
        &self.settings
    }

    /// Begins, runs `handler` if the key is new, and completes or releases it. A handler error
    /// (a fault, not a business answer) releases the key only if the handler says nothing changed;
    /// otherwise the key stays locked until its lock expires and a retry takes it over — safe,
    /// because what a handler writes carries the key under a unique index.
    pub async fn run<F, Fut>(
        &self,
        actor: &str,
        key: &IdempotencyKey,
        fingerprint: &str,
        now: DateTime<Utc>,
        handler: F,
    ) -> Result<Answer, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<HandlerOutcome, StoreError>>,
    {
        let begin = IdempotencyBegin {
            actor: actor.to_string(),
            key: key.as_str().to_string(),
            fingerprint: fingerprint.to_string(),
            now,
            locked_until: now + self.settings.lock,
            expires_at: now + self.settings.retention,
        };
        let lock = begin.lock();
        let outcome = self.store.idempotency_begin(begin).await?;
        tracing::debug!(actor, outcome = ?outcome_name(&outcome), "idempotency begin");
        crate::telemetry::idempotency_outcome(outcome_of(&outcome).as_str());
        match outcome {
            BeginOutcome::Replay(response) => Ok(Answer {
                outcome: Outcome::Replay,
                response,
                retry_after_seconds: None,
            }),
            BeginOutcome::Conflict { locked_until } => {
                let retry_after_seconds = (locked_until - now).num_seconds().max(1);
                Ok(Answer {
                    outcome: Outcome::Conflict,
                    response: problem(
                        409,
                        IDEMPOTENCY_CONFLICT,
                        "Request in progress",
                        "a request with this Idempotency-Key is still being processed; retry later",
                    ),
                    retry_after_seconds: Some(retry_after_seconds),
                })
            }
            BeginOutcome::Mismatch => Ok(Answer {
                outcome: Outcome::Mismatch,
                response: problem(
                    422,
                    IDEMPOTENCY_KEY_REUSED,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used for a different request (method, path or body)",
                ),
                retry_after_seconds: None,
            }),
            BeginOutcome::New => {
                crate::failpoint::hit("idempotency.after_begin")
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let handled = handler().await?;
                crate::failpoint::hit("idempotency.before_complete")
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let response = match handled {
                    HandlerOutcome::Completed(response) => {
                        if !self.store.idempotency_complete(&lock, &response).await? {
                            // Our lock passed and another request took the key over: what we
                            // wrote carries the key, so the taker finds it; its record stands.
                            tracing::warn!(
                                actor,
                                "idempotency lock passed before completing; the request that \
                                 took the key over keeps it"
                            );
                        }
                        response
                    }
                    HandlerOutcome::NothingChanged(response) => {
                        if !self.store.idempotency_release(&lock).await? {
                            tracing::warn!(
                                actor,
                                "idempotency lock passed before releasing; the request that \
                                 took the key over keeps it"
                            );
                        }
                        response
                    }
                };
                Ok(Answer {
                    outcome: Outcome::New,
                    response,
                    retry_after_seconds: None,
                })
            }
        }
    }
}

fn outcome_name(outcome: &BeginOutcome) -> &'static str {
    outcome_of(outcome).as_str()
}

fn outcome_of(outcome: &BeginOutcome) -> Outcome {
    match outcome {
        BeginOutcome::New => Outcome::New,
        BeginOutcome::Replay(_) => Outcome::Replay,
        BeginOutcome::Conflict { .. } => Outcome::Conflict,
        BeginOutcome::Mismatch => Outcome::Mismatch,
    }
}

/// An RFC 9457 problem body.
pub fn problem(status: u16, problem_type: &str, title: &str, detail: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: serde_json::json!({
            "type": problem_type,
            "title": title,
            "status": status,
            "detail": detail,
        }),
        headers: vec![("content-type".into(), "application/problem+json".into())],
    }
}
