//! Liveness, readiness and metrics: the routes that need no token (metrics can be made to).
//! Readiness means the store answers and the scheduler's loop is alive.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use settle_core::store::HistoryFilter;

use crate::serve::extract::authenticate;
use crate::serve::problem::Problem;
use crate::serve::state::AppState;

/// How long readiness waits for the store.
const STORE_CHECK_MS: u64 = 2_000;

pub async fn healthz() -> Response {
    Json(json!({ "status": "alive" })).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let probe = HistoryFilter {
        limit: 1,
        ..HistoryFilter::default()
    };
    let store_ok = matches!(
        tokio::time::timeout(
            Duration::from_millis(STORE_CHECK_MS),
            state.store.settlement_history(&probe)
        )
        .await,
        Ok(Ok(_))
    );
    let scheduler = match &state.heartbeat {
        None => "disabled",
        Some(heartbeat) if heartbeat.is_alive() => "alive",
        Some(_) => "stopped",
    };
    let ready = store_ok && scheduler != "stopped";
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": { "kind": state.store.kind(), "reachable": store_ok },
        "scheduler": scheduler,
        "last_tick": state.heartbeat.as_ref().and_then(|h| h.last_tick()),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of what the daemon counts so far.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if state.settings.server.metrics_require_token {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        authenticate(&state, authorization).await?;
    }
    let mut text = String::from(
        "# HELP settle_up Whether the daemon is serving.\n# TYPE settle_up gauge\nsettle_up 1\n",
    );
    text.push_str("# HELP settle_retry_attempts_total Attempts of retried operations, by policy and outcome.\n");
    text.push_str("# TYPE settle_retry_attempts_total counter\n");
    for (policy, outcome, count) in settle_core::retry::attempt_counts() {
        text.push_str(&format!(
            "settle_retry_attempts_total{{policy=\"{}\",outcome=\"{}\"}} {count}\n",
            policy.as_str(),
            outcome.as_str()
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
