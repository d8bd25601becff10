//! Administration routes: API tokens (admin only; a new token is shown once and never stored or
//! replayed), who the caller is, and the audit trail, filtered and paged (any role may read both).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use settle_core::auth::{issue, validate_token_name};
use settle_core::idempotency::{fingerprint, HandlerOutcome, StoredResponse};
use settle_core::model::{ApiToken, AuditAction, AuditEvent, AuditOutcome, Role};
use settle_core::store::{AuditFilter, StoreError};
use settle_core::time::{format_utc, parse_rfc3339};

use super::{answer, Page};
use crate::serve::extract::{Caller, JsonBody, Key};
use crate::serve::problem::{stored_response, types, Problem};
use crate::serve::schema;
use crate::serve::state::AppState;

/// A token as the API shows it: never its hash.
fn token_json(token: &ApiToken) -> serde_json::Value {
    json!({
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "created_at": token.created_at,
        "created_by": token.created_by,
        "revoked_at": token.revoked_at,
    })
}

#[utoipa::path(
    get,
    path = "/api/v2/tokens",
    summary = "API tokens (never their secrets)",
    responses(
        (status = 200, description = "The tokens", body = schema::TokenList),
        schema::ReadProblems,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let tokens = state.store.tokens().await?;
    Ok(Json(json!({ "items": tokens.iter().map(token_json).collect::<Vec<_>>() })).into_response())
}

/// A `POST /tokens` body: `{"name": "...", "role": "viewer|operator|admin"}`.
struct TokenBody {
    name: String,
    role: Role,
}

/// A 422 naming the member at fault, shaped as the payments service's (`field`, and a detail
/// that starts with it).
fn invalid_field(field: &str, message: impl std::fmt::Display) -> StoredResponse {
    Problem::invalid_member(field, message).to_stored()
}

/// Checks the body member by member, so that every refusal says which member is wrong.
fn token_body(body: &serde_json::Value) -> Result<TokenBody, StoredResponse> {
    let Some(members) = body.as_object() else {
        return Err(invalid_field(
            "body",
            "expected an object with name and role",
        ));
    };
    if let Some(unknown) = members
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "role"))
    {
        return Err(invalid_field(
            unknown,
            "unknown field; expected name and role",
        ));
    }
    let text = |field: &str| match members.get(field) {
        None => Err(invalid_field(field, "is required")),
        Some(serde_json::Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid_field(field, "must be a string")),
    };
    let name = text("name")?;
    let role = text("role")?;
    validate_token_name(&name).map_err(|e| invalid_field("name", e))?;
    let role = role.parse::<Role>().map_err(|e| invalid_field("role", e))?;
    Ok(TokenBody { name, role })
}

#[utoipa::path(
    post,
    path = "/api/v2/tokens",
    summary = "Create a token (its secret is shown once)",
    params(schema::IdempotencyKeyHeader),
    request_body = schema::TokenRequest,
    responses(
        (status = 201, description = "Created; the secret is shown this once and never replayed", body = schema::TokenCreated),
        schema::TokenProblems,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let parsed = match token_body(&body) {
        Ok(parsed) => parsed,
        Err(refusal) => return Ok(stored_response(&refusal)),
    };
    let role = parsed.role;
    let request_fingerprint = fingerprint("POST", "/api/v2/tokens", &body);
    let answered = state
        .idempotency
        .run(
            &caller.actor(),
            &key.0,
            &request_fingerprint,
            state.clock.now(),
            || async {
                let now = state.clock.now();
                let issued = issue(&parsed.name, role, &caller.actor(), now);
                match state.store.create_token(&issued.token).await {
                    // Never kept for replay: the secret is shown once. A retry finds the name taken.
                    Ok(()) => {
                        let event = AuditEvent::new(
                            now,
                            caller.actor(),
                            AuditAction::TokenCreate,
                            format!("token={}", issued.token.name),
                            AuditOutcome::Succeeded,
                            json!({ "role": role }),
                        );
                        if let Err(error) = state.store.record_audit(&event).await {
                            tracing::error!(%error, "could not audit a token creation");
                        }
                        let mut body = token_json(&issued.token);
                        body["token"] = json!(issued.secret.expose());
                        Ok(HandlerOutcome::NothingChanged(StoredResponse {
                            status: 201,
                            body,
                            headers: vec![],
                        }))
                    }
                    Err(StoreError::NameTaken(name)) => Ok(HandlerOutcome::Completed(
                        Problem::new(
                            StatusCode::CONFLICT,
                            types::CONFLICT,
                            "Name taken",
                            format!("a token named {name:?} exists"),
                        )
                        .to_stored(),
                    )),
                    Err(error) => Ok(HandlerOutcome::NothingChanged(
                        Problem::store(&error).to_stored(),
                    )),
                }
            },
        )
        .await?;
    Ok(answer(&answered))
}

#[utoipa::path(
    delete,
    path = "/api/v2/tokens/{name}",
    summary = "Revoke a token",
    params(schema::TokenNamePath),
    responses(
        (status = 200, description = "Revoked", body = schema::TokenView),
        schema::RevokeProblems,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let now = state.clock.now();
    let revoked = state
        .store
        .revoke_token(&name, now)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no token is named {name:?}")))?;
    let event = AuditEvent::new(
        now,
        caller.actor(),
        AuditAction::TokenRevoke,
        format!("token={name}"),
        AuditOutcome::Succeeded,
        json!({}),
    );
    state.store.record_audit(&event).await?;
    Ok(Json(token_json(&revoked)).into_response())
}

/// `GET /whoami`: the calling token's name and role, for any role. Never the token or its hash:
/// a console uses it to show who it is signed in as and to hide what the role cannot do.
#[utoipa::path(
    get,
    path = "/api/v2/whoami",
    summary = "The calling token's name and role (never the token or its hash)",
    responses(
        (status = 200, description = "The caller", body = schema::WhoAmI),
        schema::ReadProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn whoami(caller: Caller) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({
        "name": caller.token.name,
        "role": caller.token.role,
    }))
    .into_response())
}

/// `GET /finance/audit` parameters, as the caller wrote them: the filters are checked by
/// [`audit_filter`], the page by [`Page::bounds`], so that each refusal names its parameter.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Exactly this subject, e.g. `token=ci-bot`.
    subject: Option<String>,
    /// Exactly this action, e.g. `http.request`: one of the known names (else 422).
    #[param(value_type = Option<AuditAction>)]
    action: Option<String>,
    /// Exactly this actor, e.g. `token:ci-bot`.
    actor: Option<String>,
    /// From this instant (inclusive), RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Up to this instant (exclusive), RFC 3339; not before from (else 422).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// The page, from 1.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    page: Option<String>,
    /// Items per page (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    per_page: Option<String>,
}

/// An RFC 3339 instant from the parameter `name`, or a 422 naming it.
fn instant(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    let Some(text) = text else {
        return Ok(None);
    };
    parse_rfc3339(text).map(Some).map_err(|error| {
        // A `+` in a query string arrives as a space: say so, since it is the usual cause.
        let hint = if text.contains(' ') {
            " (send a + offset as %2B in a query string)"
        } else {
            ""
        };
        Problem::bad_parameter(name, format!("{error}{hint}"))
    })
}

/// The store filter of a query: subject, action and actor match exactly, and an action must be
/// an [`AuditAction`] name; `from` (inclusive) and `to` (exclusive) are RFC 3339 instants. `from`
/// after `to` is refused naming both; `from` equal to `to` is an empty range, answered with no
/// events.
fn audit_filter(query: &AuditQuery) -> Result<AuditFilter, Problem> {
    let action = match query.action.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<AuditAction>()
                .map_err(|error| Problem::bad_parameter("action", error))?,
        ),
    };
    let from = instant("from", query.from.as_deref())?;
    let to = instant("to", query.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(Problem::inverted_range(format_utc(from), format_utc(to)));
        }
    }
    Ok(AuditFilter {
        subject: query.subject.clone(),
        action: action.map(|action| action.as_str().to_string()),
        actor: query.actor.clone(),
        from,
        to,
    })
}

/// `GET /finance/audit`: the audit trail, newest first, filtered and paged in the store.
#[utoipa::path(
    get,
    path = "/api/v2/finance/audit",
    summary = "The audit trail, newest first (paged; subject, action and actor match exactly; from inclusive and to exclusive, RFC 3339 instants; an unknown action, a bad instant or from after to is a 400 naming the parameter)",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of events", body = schema::AuditPage),
        schema::AuditProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = super::settlements::query_params(query)?;
    let page = Page::new(query.page.clone(), query.per_page.clone()).bounds()?;
    let filter = audit_filter(&query)?;
    let mut events = state
        .store
        .audit_events_matching(&filter, page.probe_limit(), page.offset)
        .await?;
    let has_more = events.len() > page.per_page as usize;
    events.truncate(page.per_page as usize);
    Ok(Json(json!({
        "items": events,
        "page": page.number,
        "per_page": page.per_page,
        "has_more": has_more,
    }))
    .into_response())
}
