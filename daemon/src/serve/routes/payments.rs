//! Payment routes: record a payment, refund, chargeback or adjustment (idempotent by key, through
//! the payments service) and read one transaction.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use settle_core::idempotency::{problem, StoredResponse};
use settle_core::model::Role;
use settle_core::payments::{problems, transaction_json, Operation};
use uuid::Uuid;

use super::answer;
use crate::serve::extract::{Caller, JsonBody, Key};
use crate::serve::problem::{stored_response, Problem};
use crate::serve::state::AppState;

fn payment_id(text: &str) -> Result<Uuid, Problem> {
    text.parse()
        .map_err(|_| Problem::bad_request(format!("{text:?} is not a payment id")))
}

/// Amounts are decimal strings, exact by construction; a JSON number (or anything else) in their
/// place is the usual mistake and is named as such, before anything is executed or stored.
fn amount_is_text(body: &serde_json::Value) -> Result<(), StoredResponse> {
    match body.get("amount") {
        None | Some(serde_json::Value::String(_)) => Ok(()),
        Some(other) => {
            let given = match other {
                serde_json::Value::Number(_) => "a JSON number",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Null => "null",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            let mut response = problem(
                422,
                problems::INVALID_REQUEST,
                "Invalid request",
                &format!(
                    "amount: send the amount as a decimal string such as \"12.50\", not {given}"
                ),
            );
            response.body["field"] = json!("amount");
            Err(response)
        }
    }
}

async fn record(
    state: &AppState,
    caller: &Caller,
    key: &Key,
    operation: Operation,
    body: &serde_json::Value,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    if let Err(refusal) = amount_is_text(body) {
        return Ok(stored_response(&refusal));
    }
    let answered = state
        .payments
        .execute(&caller.principal(), &key.0, operation, body)
        .await?;
    Ok(answer(&answered))
}

pub async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(&state, &caller, &key, Operation::Payment, &body).await
}

pub async fn create_refund(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(
        &state,
        &caller,
        &key,
        Operation::Refund(payment_id(&id)?),
        &body,
    )
    .await
}

pub async fn create_chargeback(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(
        &state,
        &caller,
        &key,
        Operation::Chargeback(payment_id(&id)?),
        &body,
    )
    .await
}

pub async fn create_adjustment(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(&state, &caller, &key, Operation::Adjustment, &body).await
}

pub async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let id = payment_id(&id)?;
    let found = state
        .store
        .transaction(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no transaction has id {id}")))?;
    Ok(Json(transaction_json(&found)).into_response())
}
