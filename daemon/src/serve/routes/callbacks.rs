//! The payout provider's status callback: signed (HMAC-SHA256 over timestamp and body, as Settle's
//! own webhooks) and sent with an operator token; moves a payout to `sent`, `confirmed` or `failed`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use settle_core::model::{AuditEvent, PayoutStatus, Role};
use settle_core::notify::{verify, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use settle_core::store::PayoutUpdate;

use crate::serve::extract::{Caller, Key};
use crate::serve::problem::{types, Problem};
use crate::serve::state::AppState;

/// How old (or far in the future) a signed callback may be.
const CALLBACK_TOLERANCE_S: i64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Callback {
    reference: String,
    status: CallbackStatus,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    provider_payout_id: Option<String>,
}

/// The status a callback reports, in Settle's words as documented (`sent`, `confirmed`, `failed`)
/// or in the provider's own (`accepted`, `paid`, `failed`), which mean the same.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CallbackStatus {
    #[serde(alias = "accepted")]
    Sent,
    #[serde(alias = "paid")]
    Confirmed,
    Failed,
}

impl CallbackStatus {
    fn to_payout_status(self) -> PayoutStatus {
        match self {
            CallbackStatus::Sent => PayoutStatus::Sent,
            CallbackStatus::Confirmed => PayoutStatus::Confirmed,
            CallbackStatus::Failed => PayoutStatus::Failed,
        }
    }
}

/// Whether a payout may move from `from` to `to` on the provider's word: forward only.
fn moves_forward(from: PayoutStatus, to: PayoutStatus) -> bool {
    use PayoutStatus::*;
    matches!(
        (from, to),
        (Pending | Unknown, Sent | Confirmed | Failed) | (Sent, Confirmed | Failed)
    )
}

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
            StatusCode::SERVICE_UNAVAILABLE,
            types::UNAVAILABLE,
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
    let callback: Callback =
        serde_json::from_slice(&body).map_err(|e| Problem::invalid(format!("body: {e}")))?;
    let date = callback
        .reference
        .get(..10)
        .and_then(|prefix| prefix.parse::<chrono::NaiveDate>().ok())
        .ok_or_else(|| {
            Problem::not_found(format!("no payout has reference {:?}", callback.reference))
        })?;
    let payout = state
        .store
        .payouts(date)
        .await?
        .into_iter()
        .find(|p| p.reference == callback.reference)
        .ok_or_else(|| {
            Problem::not_found(format!("no payout has reference {:?}", callback.reference))
        })?;
    let target = callback.status.to_payout_status();
    let updated = if moves_forward(payout.status, target) {
        state
            .store
            .update_payout(&PayoutUpdate {
                reference: payout.reference.clone(),
                from: payout.status,
                to: target,
                provider_payout_id: callback.provider_payout_id.clone(),
                attempts: 0,
                last_error: callback.failure_reason.clone(),
                now: state.clock.now(),
            })
            .await?
    } else {
        None
    };
    if updated.is_some() {
        settle_core::telemetry::payout_outcome(target);
    }
    let event = AuditEvent::new(
        state.clock.now(),
        caller.principal(),
        "payout.callback",
        format!("payout={}", payout.reference),
        if updated.is_some() {
            "succeeded"
        } else {
            "refused"
        },
        json!({ "from": payout.status, "to": target }),
    );
    state.store.record_audit(&event).await?;
    let current = updated.unwrap_or(payout);
    Ok(Json(json!({ "payout": current })).into_response())
}
