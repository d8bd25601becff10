//! The demo's payout provider: a sandbox on a loopback port for as long as the demo runs, speaking
//! the provider protocol (`core/src/provider.rs`) and paying every payout at once. No money moves.
//!
//! It is a real HTTP peer, so the demo's payouts go through the same sender, retries and
//! idempotency as a real provider's; its ids are `sbx-` + the payout reference (reproducible).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

type Ledger = Arc<Mutex<HashMap<String, Value>>>;

/// The POST body, as the sender writes it.
#[derive(Deserialize)]
struct PayoutRequest {
    reference: String,
    currency: String,
    amount_minor: i64,
    amount: String,
}

/// A running sandbox; it stops when dropped.
pub struct SandboxProvider {
    base_url: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl SandboxProvider {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> Result<SandboxProvider> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a loopback port for the demo's sandbox provider")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let ledger: Ledger = Arc::default();
        let app = Router::new()
            .route("/payouts", post(create))
            .route("/payouts/{reference}", get(lookup))
            .with_state(ledger);
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(SandboxProvider {
            base_url,
            _shutdown: shutdown,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

async fn create(
    State(ledger): State<Ledger>,
    headers: HeaderMap,
    Json(request): Json<PayoutRequest>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key != request.reference {
        let body = json!({"error": "Idempotency-Key must be the payout reference"});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = ledger.get(&request.reference) {
        return (StatusCode::OK, Json(existing.clone())).into_response();
    }
    let payout = json!({
        "id": format!("sbx-{}", request.reference),
        "reference": request.reference,
        "status": "paid",
        "amount_minor": request.amount_minor,
        "amount": request.amount,
        "currency": request.currency,
    });
    ledger.insert(request.reference, payout.clone());
    (StatusCode::CREATED, Json(payout)).into_response()
}

async fn lookup(State(ledger): State<Ledger>, Path(reference): Path<String>) -> Response {
    let ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
    match ledger.get(&reference) {
        Some(payout) => (StatusCode::OK, Json(payout.clone())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
