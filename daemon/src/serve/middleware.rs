//! Cross-cutting request handling: telemetry (a span, a duration and an in-flight count per request),
//! a request id on every request and problem, a bound on how long a request may take, and an audit
//! event for every mutating request (who, what, when, request id, outcome).

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome};
use settle_core::telemetry::{self, ActiveRequest};
use tracing::Instrument as _;
use uuid::Uuid;

use super::extract::{authenticate, Authenticated};
use super::problem::{types, Problem};
use super::state::AppState;

/// The request id: the caller's `X-Request-Id` when it is a short visible string, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";
/// Problem bodies are small; anything larger is passed through untouched.
const PROBLEM_BODY_LIMIT: usize = 64 * 1024;

fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// One span per request, named `{method} {route}` (the route template: never an id or a date),
/// and the request's duration and in-flight count by method, route and status.
pub async fn with_telemetry(request: Request, next: Next) -> Response {
    let method = telemetry::http_method_label(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| telemetry::UNMATCHED_ROUTE.to_string());
    let span = tracing::info_span!(
        telemetry::spans::HTTP_REQUEST,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route.as_str(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let active = ActiveRequest::start(method);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    active.finish(&route, status);
    response
}

/// Tags the request and its response with a request id, and adds it to problem bodies.
pub async fn with_request_id(mut request: Request, next: Next) -> Response {
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    let is_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        if parts.status.is_client_error() || parts.status.is_server_error() {
            // An error axum answered by itself (e.g. a raw body over the limit): as a problem too.
            let detail = to_bytes(body, PROBLEM_BODY_LIMIT)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            let mut response = as_problem(parts.status, detail).into_response();
            if let Some(value) = parts.headers.get(REQUEST_ID) {
                response.headers_mut().insert(REQUEST_ID, value.clone());
            }
            return with_instance(response, &id).await;
        }
        return Response::from_parts(parts, body);
    }
    with_instance(Response::from_parts(parts, body), &id).await
}

/// The problem for an error response that was not written as one.
fn as_problem(status: StatusCode, detail: String) -> Problem {
    let detail = if detail.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        detail
    };
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            types::BODY_TOO_LARGE,
            "Body too large",
            "the request body is larger than the server accepts (server.body_limit_bytes)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            types::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            detail,
        ),
        status if status.is_server_error() => Problem::internal(),
        status => Problem::new(status, types::INVALID_REQUEST, "Bad request", detail),
    }
}

/// Adds `instance` (the request id) to a problem body.
async fn with_instance(response: Response, id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, PROBLEM_BODY_LIMIT).await else {
        return Problem::internal().into_response();
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut problem) => {
            problem["instance"] = json!(format!("urn:settle:request:{id}"));
            Body::from(problem.to_string())
        }
        Err(_) => Body::from(bytes),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// Answers 503 when a request takes longer than `server.request_timeout_ms`. Settlement runs are
/// started in the background and are not cut short by this.
pub async fn with_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.settings.server.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            types::REQUEST_TIMEOUT,
            "Request timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Writes one audit event per mutating request, whatever its outcome.
pub async fn audit_mutations(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    // Who is asking is decided before the request runs: a request that revokes its own token
    // is still its token's doing.
    let actor = match authenticate(&state, authorization).await {
        Ok(token) => {
            let actor = token.actor();
            request.extensions_mut().insert(Authenticated(token));
            actor
        }
        Err(_) => "anonymous".to_string(),
    };
    let response = next.run(request).await;
    let status = response.status();
    let event = AuditEvent::new(
        state.clock.now(),
        actor,
        AuditAction::HttpRequest,
        format!("{method} {path}"),
        AuditOutcome::of_http_status(status.as_u16()),
        json!({ "request_id": id, "status": status.as_u16() }),
    );
    if let Err(error) = state.store.record_audit(&event).await {
        tracing::error!(%error, "could not write the audit event of a request");
    }
    response
}
