//! RFC 9457 problem responses: one stable `type` URI per kind of error, a title, the status, a
//! detail for people and the request id. Never a stack trace, never a secret.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use settle_core::calendar::CalendarError;
use settle_core::idempotency::StoredResponse;
use settle_core::settlement::RunError;
use settle_core::store::StoreError;

/// Problem type URIs of the HTTP layer (the payments service defines its own, same scheme).
pub mod types {
    pub const UNAUTHORIZED: &str = "urn:settle:problem:unauthorized";
    pub const FORBIDDEN: &str = "urn:settle:problem:forbidden";
    pub const NOT_FOUND: &str = "urn:settle:problem:not-found";
    pub const METHOD_NOT_ALLOWED: &str = "urn:settle:problem:method-not-allowed";
    pub const INVALID_REQUEST: &str = "urn:settle:problem:invalid-request";
    pub const MALFORMED_JSON: &str = "urn:settle:problem:malformed-json";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "urn:settle:problem:unsupported-media-type";
    pub const BODY_TOO_LARGE: &str = "urn:settle:problem:body-too-large";
    pub const IDEMPOTENCY_KEY: &str = "urn:settle:problem:idempotency-key-invalid";
    pub const DATE_STILL_OPEN: &str = "urn:settle:problem:date-still-open";
    pub const ALREADY_SETTLED: &str = "urn:settle:problem:already-settled";
    pub const ALREADY_RUNNING: &str = "urn:settle:problem:already-running";
    pub const REVISION_FAILED: &str = "urn:settle:problem:revision-failed";
    pub const NOTHING_TO_DO: &str = "urn:settle:problem:nothing-to-do";
    pub const REVISION_MOVED: &str = "urn:settle:problem:revision-moved";
    pub const APPROVAL: &str = "urn:settle:problem:approval-refused";
    pub const CONFLICT: &str = "urn:settle:problem:conflict";
    pub const BAD_SIGNATURE: &str = "urn:settle:problem:bad-signature";
    pub const TIMEOUT: &str = "urn:settle:problem:request-timeout";
    pub const UNAVAILABLE: &str = "urn:settle:problem:unavailable";
    pub const INTERNAL: &str = "urn:settle:problem:internal";
}

/// A problem to answer with.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub problem_type: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds, for 409/503 answers a client should retry later.
    pub retry_after_s: Option<i64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        problem_type: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            problem_type,
            title,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            types::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            types::INVALID_REQUEST,
            "Bad request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, types::NOT_FOUND, "Not found", detail)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            types::INTERNAL,
            "Internal error",
            "the request failed; it is logged with its request id",
        )
    }

    /// A store failure: logged in full, answered without its detail.
    pub fn store(error: &StoreError) -> Self {
        match error {
            StoreError::Backend(_) | StoreError::Corrupt(_) => {
                tracing::error!(%error, "store failure");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    types::UNAVAILABLE,
                    "Store unavailable",
                    "the store did not answer; retry later",
                )
            }
            other => run_refusal(other),
        }
    }

    /// The JSON body (and headers) as the idempotency layer stores responses.
    pub fn to_stored(&self) -> StoredResponse {
        let mut headers = vec![(
            "content-type".to_string(),
            "application/problem+json".to_string(),
        )];
        if let Some(seconds) = self.retry_after_s {
            headers.push(("retry-after".into(), seconds.to_string()));
        }
        StoredResponse {
            status: self.status.as_u16(),
            body: json!({
                "type": self.problem_type,
                "title": self.title,
                "status": self.status.as_u16(),
                "detail": self.detail,
            }),
            headers,
        }
    }
}

/// How a refused claim reads to an API client.
fn run_refusal(error: &StoreError) -> Problem {
    use StatusCode as S;
    let (status, problem_type, title) = match error {
        StoreError::AlreadySettled { .. } => {
            (S::CONFLICT, types::ALREADY_SETTLED, "Already settled")
        }
        StoreError::AlreadyRunning { .. } => {
            (S::CONFLICT, types::ALREADY_RUNNING, "Already running")
        }
        StoreError::RevisionFailed { .. } => {
            (S::CONFLICT, types::REVISION_FAILED, "Revision failed")
        }
        StoreError::NothingToDo { .. } => (S::CONFLICT, types::NOTHING_TO_DO, "Nothing to do"),
        StoreError::RevisionMoved { .. } => {
            (S::CONFLICT, types::REVISION_MOVED, "Revision moved on")
        }
        StoreError::NameTaken(_) => (S::CONFLICT, types::CONFLICT, "Name taken"),
        StoreError::FeeLedgerMoved { .. } => (S::CONFLICT, types::CONFLICT, "Fee ledger moved"),
        StoreError::LeaseLost(_) => (S::CONFLICT, types::ALREADY_RUNNING, "Lease lost"),
        StoreError::Backend(_) | StoreError::Corrupt(_) => return Problem::internal(),
    };
    let mut problem = Problem::new(status, problem_type, title, error.to_string());
    if let StoreError::AlreadyRunning {
        lease_expires_at, ..
    } = error
    {
        problem.retry_after_s = Some(
            (*lease_expires_at - chrono::Utc::now())
                .num_seconds()
                .max(1),
        );
    }
    problem
}

impl From<&RunError> for Problem {
    fn from(error: &RunError) -> Self {
        match error {
            RunError::NotSettleable(CalendarError::DateStillOpen { .. }) => Problem::new(
                StatusCode::CONFLICT,
                types::DATE_STILL_OPEN,
                "Date still open",
                error.to_string(),
            ),
            RunError::NotSettleable(other) => Problem::invalid(other.to_string()),
            RunError::Refused(store) => run_refusal(store),
            RunError::ReasonRequired => Problem::invalid(error.to_string()),
            RunError::Store(store) => Problem::store(store),
            RunError::Failed { .. } | RunError::Interrupted { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                types::INTERNAL,
                "Settlement failed",
                error.to_string(),
            ),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        Problem::store(&error)
    }
}

/// Turns a stored (or fresh) HTTP-shaped answer into a response.
pub fn stored_response(stored: &StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(stored.body.clone())).into_response();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        stored_response(&self.to_stored())
    }
}
