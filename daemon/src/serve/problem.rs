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
pub use settle_core::problem_types as types;

/// A problem to answer with.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub problem_type: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Seconds, for 409/503 answers a client should retry later.
    pub retry_after_seconds: Option<i64>,
    /// The request's parameters or members at fault (`field` when one, `fields` when several).
    pub fields: Vec<String>,
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
            retry_after_seconds: None,
            fields: Vec::new(),
        }
    }

    /// A query parameter the request got wrong: 400 naming it, the same on every route. The
    /// detail starts with the parameter's name.
    pub fn bad_parameter(name: &str, message: impl std::fmt::Display) -> Self {
        Problem {
            fields: vec![name.to_string()],
            ..Problem::bad_request(format!("{name}: {message}"))
        }
    }

    /// A body member the request got wrong: 422 naming it, the detail starting with its name.
    pub fn invalid_member(name: &str, message: impl std::fmt::Display) -> Self {
        Problem {
            fields: vec![name.to_string()],
            ..Problem::invalid(format!("{name}: {message}"))
        }
    }

    /// A range whose `from` is after its `to`: 400 naming both, the same on every route.
    pub fn inverted_range(from: impl std::fmt::Display, to: impl std::fmt::Display) -> Self {
        Problem {
            fields: vec!["from".into(), "to".into()],
            ..Problem::bad_request(format!(
                "from: {from} is after to {to}; from must not be after to"
            ))
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
        if let Some(seconds) = self.retry_after_seconds {
            headers.push(("retry-after".into(), seconds.to_string()));
        }
        let mut body = json!({
            "type": self.problem_type,
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(first) = self.fields.first() {
            body["field"] = json!(first);
        }
        if self.fields.len() > 1 {
            body["fields"] = json!(self.fields);
        }
        StoredResponse {
            status: self.status.as_u16(),
            body,
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
        problem.retry_after_seconds = Some(
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
