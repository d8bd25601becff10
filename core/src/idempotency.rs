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
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{IdempotencyBegin, IdempotencyStore, StoreError};

/// Longest key accepted, in characters.
pub const MAX_KEY_LENGTH: usize = 255;
/// How long a completed request's response is kept and replayed.
pub const DEFAULT_RETENTION_HOURS: i64 = 24;
/// How long a request in flight holds its key before another may take over.
pub const DEFAULT_LOCK_SECONDS: i64 = 60;

/// Why an `Idempotency-Key` header was refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key header is required")]
    Missing,
    #[error("the Idempotency-Key is empty")]
    Empty,
    #[error(
        "the Idempotency-Key is {length} characters long; at most {MAX_KEY_LENGTH} are allowed"
    )]
    TooLong { length: usize },
    #[error(
        "the Idempotency-Key has a character that is not visible ASCII at position {position}"
    )]
    InvalidCharacter { position: usize },
    #[error("the Idempotency-Key is not a valid quoted string (RFC 8941): {0}")]
    BadQuotedString(&'static str),
    #[error("the Idempotency-Key must be a UUID version 4 (require_uuid_v4 is on)")]
    NotUuidV4,
}

/// A valid idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value: a bare token (`abc-123`) or an RFC 8941 quoted string (`"abc-123"`);
    /// both mean the same key. Keys are 1 to 255 visible ASCII characters.
    pub fn parse(header: Option<&str>, require_uuid_v4: bool) -> Result<IdempotencyKey, KeyError> {
        let raw = header
            .ok_or(KeyError::Missing)?
            .trim_matches(|c| c == ' ' || c == '\t');
        let key = if raw.starts_with('"') {
            unquote(raw)?
        } else {
            raw.to_string()
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        let length = key.chars().count();
        if length > MAX_KEY_LENGTH {
            return Err(KeyError::TooLong { length });
        }
        if let Some(position) = key.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(KeyError::InvalidCharacter {
                position: position + 1,
            });
        }
        if require_uuid_v4 {
            let uuid = uuid::Uuid::parse_str(&key).map_err(|_| KeyError::NotUuidV4)?;
            if uuid.get_version_num() != 4 {
                return Err(KeyError::NotUuidV4);
            }
        }
        Ok(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8941 sf-string: `"` … `"`, with `\"` and `\\` the only escapes.
fn unquote(raw: &str) -> Result<String, KeyError> {
    let inner = raw
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|_| raw.len() >= 2)
        .ok_or(KeyError::BadQuotedString("it lacks its closing quote"))?;
    let mut key = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => {
                    return Err(KeyError::BadQuotedString(
                        "only \\\" and \\\\ may be escaped",
                    ))
                }
            },
            '"' => return Err(KeyError::BadQuotedString("an inner quote must be escaped")),
            other => key.push(other),
        }
    }
    Ok(key)
}

/// SHA-256 of the canonical request: method, concrete path and canonical JSON body (keys sorted,
/// no whitespace), so that key order and spacing never matter but another path or body does.
pub fn fingerprint(method: &str, path: &str, body: &Value) -> String {
    let mut canonical = String::new();
    canonical.push_str(&method.to_ascii_uppercase());
    canonical.push('\n');
    canonical.push_str(path);
    canonical.push('\n');
    write_canonical_json(body, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

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
    pub retry_after_s: Option<i64>,
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

/// Problem type URIs (RFC 9457) of the idempotency layer.
pub const PROBLEM_CONFLICT: &str = "urn:settle:problem:idempotency-conflict";
pub const PROBLEM_MISMATCH: &str = "urn:settle:problem:idempotency-key-reused";

/// Runs handlers at most once per (principal, key).
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
        principal: &str,
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
            principal: principal.to_string(),
            key: key.as_str().to_string(),
            fingerprint: fingerprint.to_string(),
            now,
            locked_until: now + self.settings.lock,
            expires_at: now + self.settings.retention,
        };
        let lock = begin.lock();
        let outcome = self.store.idempotency_begin(begin).await?;
        tracing::debug!(principal, outcome = ?outcome_name(&outcome), "idempotency begin");
        crate::telemetry::idempotency_outcome(outcome_of(&outcome).as_str());
        match outcome {
            BeginOutcome::Replay(response) => Ok(Answer {
                outcome: Outcome::Replay,
                response,
                retry_after_s: None,
            }),
            BeginOutcome::Conflict { locked_until } => {
                let retry_after_s = (locked_until - now).num_seconds().max(1);
                Ok(Answer {
                    outcome: Outcome::Conflict,
                    response: problem(
                        409,
                        PROBLEM_CONFLICT,
                        "Request in progress",
                        "a request with this Idempotency-Key is still being processed; retry later",
                    ),
                    retry_after_s: Some(retry_after_s),
                })
            }
            BeginOutcome::Mismatch => Ok(Answer {
                outcome: Outcome::Mismatch,
                response: problem(
                    422,
                    PROBLEM_MISMATCH,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used for a different request (method, path or body)",
                ),
                retry_after_s: None,
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
                                principal,
                                "idempotency lock passed before completing; the request that \
                                 took the key over keeps it"
                            );
                        }
                        response
                    }
                    HandlerOutcome::NothingChanged(response) => {
                        if !self.store.idempotency_release(&lock).await? {
                            tracing::warn!(
                                principal,
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
                    retry_after_s: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_and_quoted_keys_mean_the_same() {
        let bare = IdempotencyKey::parse(Some("abc-123"), false).unwrap();
        let quoted = IdempotencyKey::parse(Some("\"abc-123\""), false).unwrap();
        assert_eq!(bare, quoted);
        let escaped = IdempotencyKey::parse(Some(r#""a\"b\\c""#), false).unwrap();
        assert_eq!(escaped.as_str(), r#"a"b\c"#);
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert_eq!(IdempotencyKey::parse(None, false), Err(KeyError::Missing));
        assert_eq!(IdempotencyKey::parse(Some(""), false), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(Some("\"\""), false),
            Err(KeyError::Empty)
        );
        assert_eq!(
            IdempotencyKey::parse(Some(&"k".repeat(256)), false),
            Err(KeyError::TooLong { length: 256 })
        );
        assert!(IdempotencyKey::parse(Some(&"k".repeat(255)), false).is_ok());
        assert_eq!(
            IdempotencyKey::parse(Some("ab\u{7}c"), false),
            Err(KeyError::InvalidCharacter { position: 3 })
        );
        assert_eq!(
            IdempotencyKey::parse(Some("has space"), false),
            Err(KeyError::InvalidCharacter { position: 4 })
        );
        assert!(matches!(
            IdempotencyKey::parse(Some("\"open"), false),
            Err(KeyError::BadQuotedString(_))
        ));
        assert!(matches!(
            IdempotencyKey::parse(Some(r#""a\nb""#), false),
            Err(KeyError::BadQuotedString(_))
        ));
        assert!(matches!(
            IdempotencyKey::parse(Some("café"), false),
            Err(KeyError::InvalidCharacter { .. })
        ));
    }

    #[test]
    fn the_strict_switch_requires_a_uuid_v4() {
        let v4 = uuid::Uuid::new_v4().to_string();
        assert!(IdempotencyKey::parse(Some(&v4), true).is_ok());
        assert_eq!(
            IdempotencyKey::parse(Some("order-1"), true),
            Err(KeyError::NotUuidV4)
        );
        let v1_shaped = "6fa459ea-ee8a-1ca4-894e-db77e160355e";
        assert_eq!(
            IdempotencyKey::parse(Some(v1_shaped), true),
            Err(KeyError::NotUuidV4)
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_and_spacing_but_not_content_or_path() {
        let a: Value = serde_json::from_str(
            r#"{"amount":"12.50","merchant_id":"m-1","nested":{"b":1,"a":[1,2]}}"#,
        )
        .unwrap();
        let b: Value =
            serde_json::from_str("{ \"nested\": {\"a\": [1, 2], \"b\": 1},\n \"merchant_id\": \"m-1\", \"amount\": \"12.50\" }")
                .unwrap();
        assert_eq!(
            fingerprint("POST", "/api/v2/payments", &a),
            fingerprint("post", "/api/v2/payments", &b)
        );
        let other_amount =
            json!({"amount": "12.51", "merchant_id": "m-1", "nested": {"b": 1, "a": [1, 2]}});
        assert_ne!(
            fingerprint("POST", "/p", &a),
            fingerprint("POST", "/p", &other_amount)
        );
        assert_ne!(
            fingerprint("POST", "/api/v2/payments/A/refunds", &a),
            fingerprint("POST", "/api/v2/payments/B/refunds", &a)
        );
        let reordered_array =
            json!({"amount": "12.50", "merchant_id": "m-1", "nested": {"b": 1, "a": [2, 1]}});
        assert_ne!(
            fingerprint("POST", "/p", &a),
            fingerprint("POST", "/p", &reordered_array)
        );
    }
}
