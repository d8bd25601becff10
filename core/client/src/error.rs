//! The daemon client's one error type, shaped for what the console does next (back to the connect
//! screen, show a message, retry later), and the stable problem types of the API. Never the token.

use serde::ser::{Serialize, SerializeMap, Serializer};

use settle_domain::secret::Secret;

/// The `type` URIs of the daemon's RFC 9457 problems (README, "The daemon"). Compare
/// [`ClientError::problem_type`] with these.
pub use settle_domain::problem_types;

/// Why a call of the daemon failed. It serializes (for a Tauri command) as an object with `kind`
/// (the variant in snake case), `message` (the `Display` text) and the variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// `Client::new` refused its input: `field` is `base_url`, `token` or `timeout_ms`.
    #[error("{field}: {detail}")]
    InvalidConfig { field: &'static str, detail: String },
    /// 401: no, an unknown or a revoked token. Go back to the connect screen.
    #[error("the daemon refused the token: {detail}")]
    Unauthorized { detail: String },
    /// 403: the token's role is too low for this.
    #[error("not allowed: {detail}")]
    Forbidden { detail: String },
    /// 404: no such settlement, revision, request or route.
    #[error("not found: {detail}")]
    NotFound { detail: String },
    /// Any other RFC 9457 answer, with its stable `type` (see [`problem_types`]).
    #[error("{title} ({status} {problem_type}): {detail}")]
    Problem {
        status: u16,
        problem_type: String,
        title: String,
        detail: String,
        /// `Retry-After` in seconds (409 already-running, 503), when the daemon sent one.
        retry_after_seconds: Option<u64>,
        /// `urn:settle:request:<id>`: the request id the daemon logged it under.
        instance: Option<String>,
    },
    /// No connection: refused, no route, DNS, TLS, or the connection broke.
    #[error("cannot reach the Settle daemon at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// No (complete) answer within the client's timeout.
    #[error("the Settle daemon did not answer within {after_ms} ms")]
    Timeout { after_ms: u64 },
    /// An answer that is not what the API sends (not JSON of the expected shape, a redirect, an
    /// error without a problem body): the URL is probably not a Settle daemon, or a proxy answered.
    #[error("unexpected answer from the Settle daemon: {0}")]
    InvalidResponse(String),
}

impl ClientError {
    /// The variant's name as `kind` serializes it.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidConfig { .. } => "invalid_config",
            ClientError::Unauthorized { .. } => "unauthorized",
            ClientError::Forbidden { .. } => "forbidden",
            ClientError::NotFound { .. } => "not_found",
            ClientError::Problem { .. } => "problem",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Timeout { .. } => "timeout",
            ClientError::InvalidResponse(_) => "invalid_response",
        }
    }

    /// The problem `type` for `Problem`; for `Unauthorized`, `Forbidden` and `NotFound` theirs.
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            ClientError::Problem { problem_type, .. } => Some(problem_type),
            ClientError::Unauthorized { .. } => Some(problem_types::UNAUTHORIZED),
            ClientError::Forbidden { .. } => Some(problem_types::FORBIDDEN),
            ClientError::NotFound { .. } => Some(problem_types::NOT_FOUND),
            _ => None,
        }
    }

    /// The same error with every occurrence of `token` replaced by `[redacted]`, whatever put it
    /// there (a URL typed with the token in it, a peer echoing it).
    pub(super) fn redacted(self, token: &Secret) -> ClientError {
        let scrub = |text: String| redact(&text, token);
        match self {
            ClientError::InvalidConfig { field, detail } => ClientError::InvalidConfig {
                field,
                detail: scrub(detail),
            },
            ClientError::Unauthorized { detail } => ClientError::Unauthorized {
                detail: scrub(detail),
            },
            ClientError::Forbidden { detail } => ClientError::Forbidden {
                detail: scrub(detail),
            },
            ClientError::NotFound { detail } => ClientError::NotFound {
                detail: scrub(detail),
            },
            ClientError::Problem {
                status,
                problem_type,
                title,
                detail,
                retry_after_seconds,
                instance,
            } => ClientError::Problem {
                status,
                problem_type: scrub(problem_type),
                title: scrub(title),
                detail: scrub(detail),
                retry_after_seconds,
                instance: instance.map(scrub),
            },
            ClientError::Unreachable { url, reason } => ClientError::Unreachable {
                url: scrub(url),
                reason: scrub(reason),
            },
            ClientError::Timeout { after_ms } => ClientError::Timeout { after_ms },
            ClientError::InvalidResponse(detail) => ClientError::InvalidResponse(scrub(detail)),
        }
    }
}

/// `text` with every occurrence of the secret replaced by `[redacted]`.
pub(super) fn redact(text: &str, secret: &Secret) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret.expose(), "[redacted]")
    }
}

impl Serialize for ClientError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        map.serialize_entry("message", &self.to_string())?;
        match self {
            ClientError::InvalidConfig { field, detail } => {
                map.serialize_entry("field", field)?;
                map.serialize_entry("detail", detail)?;
            }
            ClientError::Unauthorized { detail }
            | ClientError::Forbidden { detail }
            | ClientError::NotFound { detail }
            | ClientError::InvalidResponse(detail) => map.serialize_entry("detail", detail)?,
            ClientError::Problem {
                status,
                problem_type,
                title,
                detail,
                retry_after_seconds,
                instance,
            } => {
                map.serialize_entry("status", status)?;
                map.serialize_entry("problem_type", problem_type)?;
                map.serialize_entry("title", title)?;
                map.serialize_entry("detail", detail)?;
                map.serialize_entry("retry_after_seconds", retry_after_seconds)?;
                map.serialize_entry("instance", instance)?;
            }
            ClientError::Unreachable { url, reason } => {
                map.serialize_entry("url", url)?;
                map.serialize_entry("reason", reason)?;
            }
            ClientError::Timeout { after_ms } => map.serialize_entry("after_ms", after_ms)?,
        }
        map.end()
    }
}
