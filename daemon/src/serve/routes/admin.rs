//! Administration routes: API tokens (admin only; a new token is shown once and never stored or
//! replayed) and the audit trail (any role may read it).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use settle_core::auth::{issue, validate_token_name};
use settle_core::idempotency::{fingerprint, problem, HandlerOutcome, StoredResponse};
use settle_core::model::{ApiToken, AuditEvent, Role};
use settle_core::store::StoreError;

use super::{answer, Page};
use crate::serve::extract::{Caller, JsonBody, Key};
use crate::serve::problem::{stored_response, types, Problem};
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
    let mut response = problem(
        422,
        types::INVALID_REQUEST,
        "Invalid request",
        &format!("{field}: {message}"),
    );
    response.body["field"] = json!(field);
    response
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
            &caller.principal(),
            &key.0,
            &request_fingerprint,
            state.clock.now(),
            || async {
                let now = state.clock.now();
                let issued = issue(&parsed.name, role, &caller.principal(), now);
                match state.store.create_token(&issued.token).await {
                    // Never kept for replay: the secret is shown once. A retry finds the name taken.
                    Ok(()) => {
                        let event = AuditEvent::new(
                            now,
                            caller.principal(),
                            "token.create",
                            format!("token={}", issued.token.name),
                            "succeeded",
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
        caller.principal(),
        "token.revoke",
        format!("token={name}"),
        "succeeded",
        json!({}),
    );
    state.store.record_audit(&event).await?;
    Ok(Json(token_json(&revoked)).into_response())
}

pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let page = super::settlements::query_params(page)?.bounds()?;
    let mut events = state
        .store
        .audit_events(page.probe_limit(), page.offset)
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
