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
use crate::serve::schema;
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
        .execute(&caller.actor(), &key.0, operation, body)
        .await?;
    Ok(answer(&answered))
}

#[utoipa::path(
    post,
    path = "/api/v2/payments",
    summary = "Record a payment",
    params(schema::IdempotencyKeyHeader),
    request_body = schema::PaymentRequest,
    responses(
        (status = 201, description = "Recorded (or this key's earlier answer, replayed)", body = schema::TransactionView),
        (status = 200, description = "Already recorded under another key with the same content", body = schema::TransactionView),
        schema::PaymentProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(&state, &caller, &key, Operation::Payment, &body).await
}

#[utoipa::path(
    post,
    path = "/api/v2/payments/{id}/refunds",
    summary = "Refund (part of) a payment (409 returns-in-flight, with Retry-After, while another return of it is in doubt; not kept)",
    params(schema::PaymentIdPath, schema::IdempotencyKeyHeader),
    request_body = schema::ReturnRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::TransactionView),
        (status = 200, description = "Already recorded with the same content", body = schema::TransactionView),
        schema::ReturnProblems,
    ),
    security(("bearer" = ["operator"])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v2/payments/{id}/chargebacks",
    summary = "Record a chargeback of (part of) a payment (409 returns-in-flight, with Retry-After, while another return of it is in doubt; not kept)",
    params(schema::PaymentIdPath, schema::IdempotencyKeyHeader),
    request_body = schema::ReturnRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::TransactionView),
        (status = 200, description = "Already recorded with the same content", body = schema::TransactionView),
        schema::ReturnProblems,
    ),
    security(("bearer" = ["operator"])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v2/adjustments",
    summary = "Credit or debit a merchant (reason required)",
    params(schema::IdempotencyKeyHeader),
    request_body = schema::AdjustmentRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::TransactionView),
        (status = 200, description = "Already recorded with the same content", body = schema::TransactionView),
        schema::PaymentProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn create_adjustment(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    record(&state, &caller, &key, Operation::Adjustment, &body).await
}

#[utoipa::path(
    get,
    path = "/api/v2/payments/{id}",
    summary = "A recorded transaction",
    params(schema::PaymentIdPath),
    responses(
        (status = 200, description = "The transaction", body = schema::TransactionView),
        schema::LookupProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
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
