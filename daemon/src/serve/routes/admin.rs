//! Administration routes: API tokens (admin only; a new token is shown once and never stored or
//! replayed) and the audit trail (any role may read it).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use settle_core::auth::{issue, validate_token_name};
use settle_core::idempotency::{fingerprint, HandlerOutcome, StoredResponse};
use settle_core::model::{ApiToken, AuditEvent, Role};
use settle_core::store::StoreError;

use super::{answer, Page};
use crate::serve::extract::{Caller, JsonBody, Key};
use crate::serve::problem::{types, Problem};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let parsed: TokenBody =
        serde_json::from_value(body.clone()).map_err(|e| Problem::invalid(format!("body: {e}")))?;
    validate_token_name(&parsed.name).map_err(Problem::invalid)?;
    let role: Role = parsed.role.parse().map_err(Problem::invalid)?;
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
    Query(page): Query<Page>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let (number, per_page) = page.bounds()?;
    let mut events = state
        .store
        .audit_events(per_page + 1, (number - 1) * per_page)
        .await?;
    let has_more = events.len() > per_page as usize;
    events.truncate(per_page as usize);
    Ok(
        Json(
            json!({ "items": events, "page": number, "per_page": per_page, "has_more": has_more }),
        )
        .into_response(),
    )
}
