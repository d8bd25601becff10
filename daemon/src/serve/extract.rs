//! Request extractors that answer bad input with problems: the caller's token (401/403), the
//! `Idempotency-Key` (400), JSON bodies (400 malformed, 413 too large, 415 not JSON, 422 shape)
//! and settlement dates in paths.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use chrono::NaiveDate;
use serde_json::Value;
use settle_core::auth::{bearer, hash_token};
use settle_core::idempotency::IdempotencyKey;
use settle_core::model::{ApiToken, Role};

use super::problem::{types, Problem};
use super::state::AppState;

/// The token the audit layer already authenticated for this request, so the handler's `Caller`
/// does not look it up a second time.
#[derive(Debug, Clone)]
pub struct Authenticated(pub ApiToken);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: ApiToken,
}

impl Caller {
    /// How the audit trail and idempotency scopes name the caller: `token:NAME`.
    pub fn actor(&self) -> String {
        self.token.actor()
    }

    /// 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<(), Problem> {
        if self.token.role.includes(needed) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                types::FORBIDDEN,
                "Forbidden",
                format!(
                    "this needs the {needed} role; token {} has {}",
                    self.token.name, self.token.role
                ),
            ))
        }
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        types::UNAUTHORIZED,
        "Unauthorized",
        detail,
    )
}

/// Finds the active token an `Authorization` header presents.
pub async fn authenticate(
    state: &AppState,
    authorization: Option<&str>,
) -> Result<ApiToken, Problem> {
    let presented = authorization.and_then(bearer).ok_or_else(|| {
        unauthorized("send `Authorization: Bearer <token>` (create one with `settle token create`)")
    })?;
    let token = state
        .store
        .token_by_hash(&hash_token(presented))
        .await?
        .ok_or_else(|| unauthorized("the token is not valid"))?;
    if !token.is_active() {
        return Err(unauthorized("the token was revoked"));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(Authenticated(token)) = parts.extensions.get::<Authenticated>() {
            return Ok(Caller {
                token: token.clone(),
            });
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let token = authenticate(state, header).await?;
        Ok(Caller { token })
    }
}

/// The request's `Idempotency-Key`, required on every POST.
pub struct Key(pub IdempotencyKey);

impl FromRequestParts<AppState> for Key {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get("idempotency-key").map(|value| {
            value
                .to_str()
                .map_err(|_| "the Idempotency-Key is not visible ASCII")
        });
        let header = match header {
            Some(Ok(text)) => Some(text),
            Some(Err(detail)) => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    types::IDEMPOTENCY_KEY_INVALID,
                    "Bad Idempotency-Key",
                    detail,
                ))
            }
            None => None,
        };
        IdempotencyKey::parse(header, state.settings.idempotency.require_uuid_v4)
            .map(Key)
            .map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    types::IDEMPOTENCY_KEY_INVALID,
                    "Bad Idempotency-Key",
                    e.to_string(),
                )
            })
    }
}

/// A JSON body, with every way of getting it wrong answered as a problem.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<Value>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            types::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(error) => Problem::new(
            StatusCode::BAD_REQUEST,
            types::MALFORMED_JSON,
            "Malformed JSON",
            error.body_text(),
        ),
        JsonRejection::JsonDataError(error) => Problem::invalid(error.body_text()),
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                types::BODY_TOO_LARGE,
                "Body too large",
                "the request body is larger than the server accepts (server.body_limit_bytes)",
            )
        }
        other => Problem::bad_request(other.body_text()),
    }
}

/// A settlement date from a path segment, `YYYY-MM-DD`.
pub fn date(text: &str) -> Result<NaiveDate, Problem> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|date| date.format("%Y-%m-%d").to_string() == text)
        .ok_or_else(|| {
            Problem::bad_request(format!("{text:?} is not a date of the form YYYY-MM-DD"))
        })
}
