//! `settle serve`: the headless daemon. It serves the HTTP API (axum, optionally over TLS), runs the
//! nightly scheduler, the idempotency reaper and the reconciliation gauges, and on SIGTERM stops
//! accepting requests, lets the running settlement finish or release its lease, and exits within a
//! bounded time.

pub mod extract;
mod middleware;
pub mod openapi;
pub mod problem;
mod routes;
pub mod schema;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use settle_core::idempotency::Idempotency;
use settle_core::scheduler::Scheduler;
use settle_core::secret;
use settle_core::telemetry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;

use crate::context::Context;
use problem::{types, Problem};
use routes::{admin, callbacks, health, payments, reconciliation, settlements, stats};
use state::AppState;

/// The least time given to flushing telemetry at shutdown, even when the runs used up the bound.
const MIN_TELEMETRY_FLUSH: Duration = Duration::from_millis(500);
/// How often expired idempotency keys are deleted (expiry is also checked on every use).
const REAP_EVERY: Duration = Duration::from_secs(600);
/// How often the reconciliation gauges are computed again (ages move with the date); a
/// reconciliation request also refreshes them at once.
const RECONCILIATION_GAUGES_EVERY: Duration = Duration::from_secs(60);
/// Where the provider's callback secret comes from.
pub const CALLBACK_SECRET_VARIABLE: &str = "SETTLE_PROVIDER_CALLBACK_SECRET";
pub const CALLBACK_SECRET_CREDENTIAL: &str = "provider-callback-secret";

async fn not_found() -> Problem {
    Problem::not_found("no such route (see /api/v2/openapi.json)")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        types::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this route does not take that method (see /api/v2/openapi.json)",
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::internal().into_response()
}

/// Every route of the daemon, with its layers.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/finance/settlement/trigger", post(settlements::trigger))
        .route(
            "/finance/settlement/trigger/{date}",
            post(settlements::trigger_date),
        )
        .route("/finance/settlement/retry/{date}", post(settlements::retry))
        .route("/finance/settlement/rerun/{date}", post(settlements::rerun))
        .route(
            "/finance/settlement/rerun-requests",
            get(settlements::rerun_requests),
        )
        .route(
            "/finance/settlement/rerun-requests/{id}/approve",
            post(settlements::approve),
        )
        .route(
            "/finance/settlement/rerun-requests/{id}/reject",
            post(settlements::reject),
        )
        .route("/finance/settlement/history", get(settlements::history))
        .route("/finance/settlement/stats/summary", get(stats::summary))
        .route("/finance/settlement/stats/chart.png", get(stats::chart_png))
        .route("/finance/settlement/stats/chart.svg", get(stats::chart_svg))
        .route("/finance/settlement/{date}", get(settlements::detail))
        .route("/finance/settlement/{date}/lines", get(settlements::lines))
        .route(
            "/finance/settlement/{date}/revisions",
            get(settlements::revisions),
        )
        .route(
            "/finance/settlement/{date}/payouts",
            get(settlements::payouts),
        )
        .route(
            "/finance/settlement/{date}/export.csv",
            get(settlements::export),
        )
        .route("/finance/payouts/callback", post(callbacks::payout_status))
        .route("/finance/audit", get(admin::audit))
        .route("/payments", post(payments::create_payment))
        .route("/payments/{id}", get(payments::get_payment))
        .route("/payments/{id}/refunds", post(payments::create_refund))
        .route(
            "/payments/{id}/chargebacks",
            post(payments::create_chargeback),
        )
        .route("/adjustments", post(payments::create_adjustment))
        .route("/tokens", get(admin::list_tokens).post(admin::create_token))
        .route("/tokens/{name}", delete(admin::revoke_token))
        .route("/whoami", get(admin::whoami))
        .route(
            "/finance/reconciliation/statements",
            get(reconciliation::statements)
                .post(reconciliation::import)
                .layer(DefaultBodyLimit::max(
                    reconciliation::MAX_STATEMENT_BODY_BYTES,
                )),
        )
        .route("/finance/reconciliation/run", post(reconciliation::run))
        .route("/finance/reconciliation/items", get(reconciliation::items))
        .route(
            "/finance/reconciliation/exceptions",
            get(reconciliation::exceptions),
        )
        .route(
            "/finance/reconciliation/decisions",
            get(reconciliation::decisions),
        )
        .route(
            "/finance/reconciliation/report.csv",
            get(reconciliation::report),
        )
        .route(
            "/finance/reconciliation/matches",
            post(reconciliation::create_match),
        )
        .route(
            "/finance/reconciliation/expectations",
            post(reconciliation::create_expectation),
        )
        .route(
            "/finance/reconciliation/write-offs",
            post(reconciliation::create_write_off),
        )
        .route(
            "/finance/reconciliation/decisions/{id}/unmatch",
            post(reconciliation::unmatch),
        )
        .route(
            "/finance/reconciliation/decisions/{id}/confirm",
            post(reconciliation::confirm),
        )
        .route(
            "/finance/reconciliation/decisions/{id}/adjustment",
            post(reconciliation::adjust),
        )
        .route(
            "/finance/reconciliation/write-offs/{id}/approve",
            post(reconciliation::approve_write_off),
        )
        .route(
            "/finance/reconciliation/write-offs/{id}/reject",
            post(reconciliation::reject_write_off),
        );
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v2", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The audit wraps the timeout, so a request cut short is audited too (as failed, 503).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::with_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::audit_mutations,
        ))
        .layer(DefaultBodyLimit::max(
            state.settings.server.body_limit_bytes,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(middleware::with_request_id))
        // Outermost: every request is timed and traced, whatever answers it.
        .layer(axum::middleware::from_fn(middleware::with_telemetry))
        .with_state(state)
}

/// Resolves on SIGTERM, Ctrl-C or the Windows service manager's Stop.
async fn termination() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
        () = crate::service::stop_requested() => {},
    }
}

/// Every counter with known label values at zero from the start (see `export_at_zero`).
fn export_series_at_zero(settings: &settle_core::config::Settings) {
    use settle_core::idempotency::Outcome;
    use settle_core::retry::{AttemptOutcome, PolicyName};
    settle_core::telemetry::export_at_zero(&settle_core::telemetry::SeriesAtZero {
        currencies: &settings.named_currencies(),
        retry_policies: &PolicyName::ALL.map(PolicyName::as_str),
        attempt_outcomes: &AttemptOutcome::ALL.map(AttemptOutcome::as_str),
        idempotency_outcomes: &Outcome::ALL.map(|o| o.as_str()),
    });
}

/// Runs the daemon until SIGTERM (or Ctrl-C, or `shutdown` being cancelled).
pub async fn run(
    context: Context,
    listen: Option<String>,
    shutdown: CancellationToken,
) -> Result<()> {
    let settings = Arc::new(context.settings.clone());
    let listen = listen.unwrap_or_else(|| settings.server.listen.clone());
    let address: SocketAddr = listen.parse().map_err(|_| {
        crate::exit::Exit::bad_input(format!(
            "--listen {listen:?} is not an address such as 127.0.0.1:8787"
        ))
    })?;
    let store = context.open_store().await?;
    export_series_at_zero(&settings);
    if let Err(error) = settle_core::settlement::lag::initialise_settlement_lag(&*store).await {
        tracing::warn!(%error, "cannot read the latest settled date: the settlement lag starts unknown");
    }
    let runner = Arc::new(
        context
            .runner(store.clone())?
            .with_shutdown(shutdown.clone()),
    );
    let scheduler = settings.scheduler.enabled.then(|| {
        Arc::new(Scheduler::new(
            runner.clone(),
            store.clone(),
            context.clock.clone(),
            settings.calendar,
            settings.scheduler.clone(),
        ))
    });
    let state = AppState {
        store: store.clone(),
        commands: context.settlement_commands(store.clone(), runner),
        payments: context.payment_service(store.clone()),
        reconciliation: context.reconciliation_service(store.clone()),
        reconciliation_changed: Arc::new(tokio::sync::Notify::new()),
        idempotency: Idempotency::new(store.clone(), settings.idempotency),
        settings: settings.clone(),
        clock: context.clock.clone(),
        heartbeat: scheduler.as_ref().map(|s| s.heartbeat()),
        tasks: TaskTracker::new(),
        callback_secret: secret::from_environment(
            CALLBACK_SECRET_VARIABLE,
            CALLBACK_SECRET_CREDENTIAL,
        ),
    };
    let app = router(state.clone());

    let handle = axum_server::Handle::new();
    let shutdown_timeout = Duration::from_millis(settings.server.shutdown_timeout_ms);
    // When the stop began: the whole shutdown (draining requests, then waiting for the runs) is
    // bounded by one deadline counted from it, not by one `shutdown_timeout` per stage.
    let stop_began = Arc::new(OnceLock::<tokio::time::Instant>::new());
    tokio::spawn({
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        let stop_began = Arc::clone(&stop_began);
        async move {
            tokio::select! {
                () = termination() => {},
                () = shutdown.cancelled() => {},
            }
            let _ = stop_began.set(tokio::time::Instant::now());
            tracing::info!("stopping: no new requests; waiting for the running settlement");
            crate::service::notify::stopping();
            shutdown.cancel();
            handle.graceful_shutdown(Some(shutdown_timeout));
        }
    });
    let scheduler_task = scheduler.map(|scheduler| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { scheduler.run(shutdown).await })
    });
    let reaper = tokio::spawn(reap_idempotency_keys(state.clone(), shutdown.clone()));
    let gauges = tokio::spawn(refresh_reconciliation_gauges(
        state.clone(),
        shutdown.clone(),
    ));
    tokio::spawn({
        let handle = handle.clone();
        let scheme = if settings.server.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        async move {
            if let Some(bound) = handle.listening().await {
                // The first line tests and operators look for; the port is the real one (even for :0).
                println!("settle listening on {scheme}://{bound}");
                crate::service::notify::ready();
            }
        }
    });

    let served = match (&settings.server.tls_cert, &settings.server.tls_key) {
        (Some(cert), Some(key)) => {
            // A certificate that cannot be loaded is bad configuration (exit 2), named by file.
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|error| {
                    crate::exit::Exit::bad_input(format!(
                        "cannot load the TLS certificate {} and key {} (server.tls_cert, \
                         server.tls_key): {error}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            axum_server::bind_rustls(address, tls)
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
        _ => {
            axum_server::bind(address)
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    };
    served.with_context(|| format!("cannot serve on {address}"))?;

    // Requests are drained; settlement runs get what is left of the shutdown bound, then their
    // leases are released (they stop between pages) or simply expire.
    let deadline = stop_began
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + shutdown_timeout;
    shutdown.cancel();
    state.tasks.close();
    let runs_stopped = tokio::time::timeout_at(deadline, state.tasks.wait())
        .await
        .is_ok();
    let scheduler_stopped = match scheduler_task {
        Some(task) => tokio::time::timeout_at(deadline, task).await.is_ok(),
        None => true,
    };
    if !(runs_stopped && scheduler_stopped) {
        tracing::warn!(
            "settlement runs still going at the shutdown bound; their leases will expire"
        );
    }
    reaper.abort();
    gauges.abort();
    // Spans and metrics still in the exporters' buffers go out within what is left of the bound.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    telemetry::shutdown(left.max(MIN_TELEMETRY_FLUSH)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Deletes expired idempotency keys now and then (expiry is also checked on every use).
async fn reap_idempotency_keys(state: AppState, shutdown: CancellationToken) {
    loop {
        match state.store.idempotency_reap(state.clock.now()).await {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(%error, "reaping idempotency keys failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(REAP_EVERY) => {},
            () = shutdown.cancelled() => return,
        }
    }
}

/// Keeps the reconciliation gauges current: at start, every minute, and after each
/// reconciliation request.
async fn refresh_reconciliation_gauges(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(error) = settle_core::reconcile::metrics::refresh(&state.reconciliation).await {
            tracing::warn!(%error, "cannot refresh the reconciliation gauges");
        }
        tokio::select! {
            () = tokio::time::sleep(RECONCILIATION_GAUGES_EVERY) => {},
            () = state.reconciliation_changed.notified() => {},
            () = shutdown.cancelled() => return,
        }
    }
}
