//! The payout provider's status callback: signed (HMAC-SHA256 over timestamp and body, as Settle's
//! own webhooks) and sent with an operator token; the rule is settle-core's `payout_report`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use settle_core::model::Role;
use settle_core::notify::{verify, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use settle_core::payout_report::{apply_report, PayoutReport, ReportError};

use crate::serve::extract::{Caller, Key};
use crate::serve::problem::{types, Problem};
use crate::serve::schema;
use crate::serve::state::AppState;

/// How old (or far in the future) a signed callback may be.
const CALLBACK_TOLERANCE_S: i64 = 300;

#[utoipa::path(
    post,
    path = "/api/v2/finance/payouts/callback",
    summary = "The payout provider's signed status callback (404 while callbacks are off: no secret is configured)",
    params(
        schema::IdempotencyKeyHeader,
        ("Settle-Timestamp" = Option<String>, Header, description = "Unix seconds the signature covers"),
        ("Settle-Signature" = Option<String>, Header, description = "HMAC-SHA256 over the timestamp and the body"),
    ),
    request_body = settle_core::payout_report::PayoutReport,
    responses(
        (status = 200, description = "The payout as it is now", body = schema::CallbackApplied),
        schema::CallbackProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn payout_status(
    State(state): State<AppState>,
    caller: Caller,
    _key: Key,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let Some(secret) = &state.callback_secret else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            types::NOT_FOUND,
            "Callbacks off",
            "payout callbacks need SETTLE_PROVIDER_CALLBACK_SECRET (or the credential provider-callback-secret)",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify(
        secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        state.clock.now().timestamp(),
        CALLBACK_TOLERANCE_S,
    )
    .map_err(|e| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            types::BAD_SIGNATURE,
            "Bad signature",
            e.to_string(),
        )
    })?;
    let report: PayoutReport =
        serde_json::from_slice(&body).map_err(|e| Problem::invalid(format!("body: {e}")))?;
    let outcome = apply_report(&state.store, state.clock.as_ref(), &report, &caller.actor())
        .await
        .map_err(|error| match error {
            ReportError::UnknownReference(_) => Problem::not_found(error.to_string()),
            ReportError::Store(error) => Problem::from(error),
        })?;
    Ok(Json(json!({ "payout": outcome.payout })).into_response())
}
