//! Liveness, readiness and metrics: the routes that need no token (metrics can be made to).
//! Readiness means the store answers and the scheduler's loop is alive.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use settle_core::store::HistoryFilter;
use settle_core::telemetry;

use crate::serve::extract::authenticate;
use crate::serve::problem::Problem;
use crate::serve::state::AppState;

/// How long readiness waits for the store.
const STORE_CHECK_MS: u64 = 2_000;

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness",
    responses((status = 200, description = "The daemon is alive", body = crate::serve::schema::Liveness), crate::serve::schema::PublicProblems),
)]
pub async fn healthz() -> Response {
    Json(json!({ "status": "alive" })).into_response()
}

#[utoipa::path(
    get,
    path = "/readyz",
    summary = "Readiness: the store answers and the scheduler is alive",
    responses(
        (status = 200, description = "Ready", body = crate::serve::schema::Readiness),
        (status = 503, description = "Not ready: the store does not answer or the scheduler stopped", body = crate::serve::schema::Readiness),
    ),
)]
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

/// Every instrument of `ops/METRICS.md` in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "The Prometheus text format", body = String, content_type = "text/plain"),
        crate::serve::schema::MetricsProblems,
    ),
)]
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
    let text = telemetry::render_prometheus().map_err(|error| {
        tracing::error!(%error, "cannot render the metrics");
        Problem::internal()
    })?;
    Ok((
        [(header::CONTENT_TYPE, telemetry::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
