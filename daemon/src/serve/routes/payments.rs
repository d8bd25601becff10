//! Payment routes: record a payment, refund, chargeback or adjustment (idempotent by key, through
//! the payments service) and read one transaction.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use settle_core::model::Role;
use settle_core::payments::{transaction_json, Operation};
use uuid::Uuid;

use super::answer;
use crate::serve::extract::{Caller, JsonBody, Key};
use crate::serve::problem::Problem;
use crate::serve::state::AppState;

fn payment_id(text: &str) -> Result<Uuid, Problem> {
    text.parse()
        .map_err(|_| Problem::bad_request(format!("{text:?} is not a payment id")))
}

async fn record(
    state: &AppState,
    caller: &Caller,
    key: &Key,
    operation: Operation,
    body: &serde_json::Value,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
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
