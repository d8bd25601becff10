//! The settlement routes: trigger, retry and rerun (idempotent, claimed at once, settled in the
//! background), four-eyes rerun requests (the rule is settle-core's `RerunApprovals`), and the read
//! routes (history, a revision, its lines,
//! revisions, payouts, CSV export).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};
use settle_core::idempotency::{fingerprint, HandlerOutcome, StoredResponse};
use settle_core::model::{RerunRequestStatus, Role, Settlement, SettlementStatus};
use settle_core::settlement::{
    ClaimedRun, RerunApprovalError, RerunAsk, RerunOutcome, RerunPath, RunError,
};
use settle_core::store::{HistoryFilter, LineSort};
use uuid::Uuid;

use super::{answer, Page};
use crate::serve::extract::{date, Caller, JsonBody, Key};
use crate::serve::problem::{types, Problem};
use crate::serve::schema;
use crate::serve::state::AppState;

/// A query string's parameters, or a 400 problem saying what is wrong with them (axum's own
/// rejection is plain text, not a problem).
pub(super) fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| Problem::bad_request(rejection.body_text()))
}

/// The API path of a settlement date.
fn location(date: NaiveDate) -> String {
    format!("/api/v2/finance/settlement/{date}")
}

/// A claim's answer: 202 with the running revision, settled in the background, or the refusal
/// (409 already running/settled, 409 date still open…) as a problem.
fn started(
    state: &AppState,
    claimed: Result<ClaimedRun, RunError>,
    actor: String,
) -> HandlerOutcome {
    match claimed {
        Ok(claimed) => start_claimed(state, claimed, actor),
        Err(error) => refused(Problem::from(&error)),
    }
}

/// Runs a mutating settlement request under its idempotency key.
async fn idempotent<F, Fut>(
    state: &AppState,
    caller: &Caller,
    key: &Key,
    path: &str,
    body: &Value,
    handler: F,
) -> Result<Response, Problem>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = HandlerOutcome>,
{
    let request_fingerprint = fingerprint("POST", path, body);
    let answered = state
        .idempotency
        .run(
            &caller.actor(),
            &key.0,
            &request_fingerprint,
            state.clock.now(),
            || async { Ok(handler().await) },
        )
        .await?;
    Ok(answer(&answered))
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/trigger",
    summary = "Settle the latest closed business date",
    params(schema::IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Claimed: it settles in the background (follow status_url)", body = schema::RunStarted),
        schema::RunProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let path = "/api/v2/finance/settlement/trigger";
    idempotent(&state, &caller, &key, path, &json!({}), || async {
        let actor = caller.actor();
        started(&state, state.commands.trigger_latest(&actor).await, actor)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/trigger/{date}",
    summary = "Settle a business date",
    params(schema::DatePath, schema::IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Claimed: it settles in the background (follow status_url)", body = schema::RunStarted),
        schema::RunProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn trigger_date(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(day): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let day = date(&day)?;
    let path = format!("/api/v2/finance/settlement/trigger/{day}");
    idempotent(&state, &caller, &key, &path, &json!({}), || async {
        let actor = caller.actor();
        started(&state, state.commands.trigger(day, &actor).await, actor)
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/retry/{date}",
    summary = "Resume a failed settlement",
    params(schema::DatePath, schema::IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Claimed: it settles in the background (follow status_url)", body = schema::RunStarted),
        schema::RunProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(day): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let day = date(&day)?;
    let path = format!("/api/v2/finance/settlement/retry/{day}");
    idempotent(&state, &caller, &key, &path, &json!({}), || async {
        let actor = caller.actor();
        started(&state, state.commands.retry(day, &actor).await, actor)
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RerunBody {
    /// Why the date is settled again (required).
    #[schema(pattern = r"\S", example = "fee schedule corrected")]
    reason: String,
    /// Compute with the fee schedule in force now instead of the revision's own.
    #[serde(default)]
    apply_current_fees: bool,
}

fn rerun_body(body: &Value) -> Result<RerunBody, Problem> {
    let parsed: RerunBody =
        serde_json::from_value(body.clone()).map_err(|e| Problem::invalid(format!("body: {e}")))?;
    if parsed.reason.trim().is_empty() {
        return Err(Problem::invalid("reason: a rerun needs a reason"));
    }
    Ok(parsed)
}

/// How a refused rerun, request or decision reads to an API client.
fn approval_problem(error: &RerunApprovalError) -> Problem {
    use RerunApprovalError as E;
    let detail = error.to_string();
    match error {
        E::ApprovalRequired { .. } | E::OwnRequest { .. } => Problem::new(
            StatusCode::FORBIDDEN,
            types::APPROVAL_REFUSED,
            "Four eyes",
            detail,
        ),
        E::NotFound(_) => Problem::not_found(detail),
        E::AlreadyDecided { .. } => Problem::new(
            StatusCode::CONFLICT,
            types::CONFLICT,
            "Already decided",
            detail,
        ),
        E::BeingDecided { .. } => {
            let mut problem = Problem::new(
                StatusCode::CONFLICT,
                types::CONFLICT,
                "Being decided",
                detail,
            );
            problem.retry_after_seconds = Some(1);
            problem
        }
        E::Stale { .. } => Problem::new(
            StatusCode::CONFLICT,
            types::REVISION_MOVED,
            "Stale rerun request",
            detail,
        ),
        E::ClaimRefused { refusal, .. } => Problem {
            detail,
            ..Problem::store(refusal)
        },
        E::Run(run) => Problem::from(run),
        E::Store(store) => Problem::store(store),
    }
}

/// A refusal as an idempotent outcome: a 5xx changed nothing, so its key is released for a retry.
fn refused(problem: Problem) -> HandlerOutcome {
    if problem.status.is_server_error() {
        HandlerOutcome::NothingChanged(problem.to_stored())
    } else {
        HandlerOutcome::Completed(problem.to_stored())
    }
}

/// Settles a claimed revision in the background: 202 with the running revision (and the approved
/// rerun request, if any).
fn start_claimed(state: &AppState, claimed: ClaimedRun, actor: String) -> HandlerOutcome {
    let date = claimed.settlement.settlement_date;
    let mut body = json!({ "settlement": claimed.settlement, "status_url": location(date) });
    if let Some(request) = &claimed.request {
        body["rerun_request"] = json!(request);
    }
    let commands = state.commands.clone();
    state.tasks.spawn(async move {
        if let Err(error) = commands.settle(claimed, &actor).await {
            tracing::error!(settlement_date = %date, %error, "settlement run failed");
        }
    });
    HandlerOutcome::Completed(StoredResponse {
        status: 202,
        body,
        headers: vec![("location".into(), location(date))],
    })
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/rerun/{date}",
    summary = "Settle a date again as a new revision (reason required; may need approval)",
    params(schema::DatePath, schema::IdempotencyKeyHeader),
    request_body = RerunBody,
    responses(
        (status = 202, description = "Claimed (settling in the background), or, with four eyes, requested for another operator to approve", body = schema::RerunAccepted),
        schema::RerunProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(day): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let day = date(&day)?;
    let parsed = rerun_body(&body)?;
    let path = format!("/api/v2/finance/settlement/rerun/{day}");
    let ask = RerunAsk {
        reason: parsed.reason,
        apply_current_fees: parsed.apply_current_fees,
    };
    idempotent(&state, &caller, &key, &path, &body, || async {
        let actor = caller.actor();
        let asked = state
            .commands
            .rerun(day, ask, &actor, RerunPath::RequestWhenRequired)
            .await;
        match asked {
            // Four-eyes: the rerun became a request another operator approves.
            Ok(RerunOutcome::Requested(stored)) => HandlerOutcome::Completed(StoredResponse {
                status: 202,
                body: json!({ "rerun_request": stored, "approve_url": format!("/api/v2/finance/settlement/rerun-requests/{}/approve", stored.id) }),
                headers: vec![],
            }),
            Ok(RerunOutcome::Claimed(claimed)) => start_claimed(&state, *claimed, actor),
            Err(error) => refused(approval_problem(&error)),
        }
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// Only requests in this state.
    #[param(value_type = Option<RerunRequestStatus>, inline)]
    status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/rerun-requests",
    summary = "Rerun requests awaiting or given a second operator's decision",
    params(RequestsQuery),
    responses(
        (status = 200, description = "The requests", body = schema::RerunRequestList),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn rerun_requests(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RerunRequestStatus>)
        .transpose()
        .map_err(Problem::bad_request)?;
    let requests = state.store.rerun_requests(status).await?;
    Ok(Json(json!({ "items": requests })).into_response())
}

fn request_id(id: &str) -> Result<Uuid, Problem> {
    id.parse()
        .map_err(|_| Problem::bad_request(format!("{id:?} is not a request id")))
}

/// Approves another operator's pending request and claims its run in the same step (202 with the
/// running revision); a stale request or a refused claim is a 409 and the request stays pending.
#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/rerun-requests/{id}/approve",
    summary = "Approve another operator's rerun request and claim its run in one step (409 when the claim is refused, the request then stays pending; 409 revision-moved when the request is stale)",
    params(schema::RequestIdPath, schema::IdempotencyKeyHeader),
    responses(
        (status = 202, description = "Claimed: it settles in the background (follow status_url)", body = schema::RunStarted),
        schema::DecisionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let id = request_id(&id)?;
    let path = format!("/api/v2/finance/settlement/rerun-requests/{id}/approve");
    idempotent(&state, &caller, &key, &path, &json!({}), || async {
        let actor = caller.actor();
        match state.commands.approve(id, &actor).await {
            Ok(claimed) => start_claimed(&state, claimed, actor),
            Err(error) => refused(approval_problem(&error)),
        }
    })
    .await
}

/// Rejects a pending request (another operator, or its requester withdrawing it); nothing runs.
#[utoipa::path(
    post,
    path = "/api/v2/finance/settlement/rerun-requests/{id}/reject",
    summary = "Reject a pending rerun request (another operator's, or withdraw one's own)",
    params(schema::RequestIdPath, schema::IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Rejected", body = schema::RerunDecided),
        schema::DecisionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let id = request_id(&id)?;
    let path = format!("/api/v2/finance/settlement/rerun-requests/{id}/reject");
    idempotent(&state, &caller, &key, &path, &json!({}), || async {
        match state.commands.reject(id, &caller.actor()).await {
            Ok(rejected) => HandlerOutcome::Completed(StoredResponse {
                status: 200,
                body: json!({ "rerun_request": rejected }),
                headers: vec![],
            }),
            Err(error) => refused(approval_problem(&error)),
        }
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only settlements in this state.
    #[param(value_type = Option<SettlementStatus>, inline)]
    status: Option<String>,
    /// The first date, inclusive.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// The last date, inclusive.
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// Every revision, not only each date's latest.
    #[serde(default)]
    all_revisions: bool,
    // Not `#[serde(flatten)] Page`: kept as text and checked by `Page::bounds`, which names the
    // parameter a bad value is in.
    /// The page, from 1.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    page: Option<String>,
    /// Items per page (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    per_page: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/history",
    summary = "Settlements, newest first (paged; status, from, to)",
    params(HistoryQuery),
    responses(
        (status = 200, description = "One page", body = schema::HistoryPage),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<SettlementStatus>)
        .transpose()
        .map_err(Problem::bad_request)?;
    let page = Page::new(query.page, query.per_page).bounds()?;
    let from = query.from.as_deref().map(date).transpose()?;
    let to = query.to.as_deref().map(date).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(Problem::inverted_range(from, to));
        }
    }
    let filter = HistoryFilter {
        from,
        to,
        status,
        all_revisions: query.all_revisions,
        limit: page.probe_limit(),
        offset: page.offset,
    };
    let mut items = state.store.settlement_history(&filter).await?;
    let has_more = items.len() > page.per_page as usize;
    items.truncate(page.per_page as usize);
    Ok(Json(json!({
        "items": items,
        "page": page.number,
        "per_page": page.per_page,
        "has_more": has_more,
    }))
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevisionQuery {
    /// A revision (from 1); the latest unless given.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    revision: Option<u32>,
}

async fn revision_of(
    state: &AppState,
    day: NaiveDate,
    revision: Option<u32>,
) -> Result<Settlement, Problem> {
    state.store.settlement(day, revision).await?.ok_or_else(|| {
        Problem::not_found(match revision {
            Some(revision) => format!("settlement {day} has no revision {revision}"),
            None => format!("settlement {day} has not been run"),
        })
    })
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/{date}",
    summary = "A settlement (latest revision, or ?revision=n) with late transactions and notifications",
    params(schema::DatePath, RevisionQuery),
    responses(
        (status = 200, description = "The revision", body = schema::SettlementDetail),
        schema::LookupProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(day): Path<String>,
    query: Result<Query<RevisionQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let settlement = revision_of(&state, date(&day)?, query.revision).await?;
    let late = state
        .store
        .late_transactions(settlement.settlement_date)
        .await?;
    let notifications = state
        .store
        .notifications(settlement.settlement_date)
        .await?;
    Ok(Json(json!({
        "settlement": settlement,
        "late_transactions": late.iter().map(settle_core::payments::transaction_json).collect::<Vec<_>>(),
        "notifications": notifications,
    }))
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinesQuery {
    /// A revision (from 1); the latest unless given.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    revision: Option<u32>,
    /// merchant_id (default), net_minor, gross_minor, fees_minor, transaction_count.
    #[param(value_type = Option<schema::LineSort>, inline)]
    sort: Option<String>,
    /// asc (default) or desc.
    #[param(value_type = Option<schema::SortOrder>, inline)]
    order: Option<String>,
    /// Only merchants whose id contains this.
    q: Option<String>,
    // Not flattened: see `HistoryQuery`.
    /// The page, from 1.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    page: Option<String>,
    /// Items per page (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    per_page: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/{date}/lines",
    summary = "Merchant lines (paged, sortable, searchable)",
    params(schema::DatePath, LinesQuery),
    responses(
        (status = 200, description = "One page of lines", body = schema::LinesPage),
        schema::LookupProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn lines(
    State(state): State<AppState>,
    caller: Caller,
    Path(day): Path<String>,
    query: Result<Query<LinesQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let settlement = revision_of(&state, date(&day)?, query.revision).await?;
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "order must be asc or desc, not {other:?}"
            )))
        }
    };
    let sort = match query.sort.as_deref() {
        None => LineSort::MerchantId,
        Some(name) => LineSort::from_name(name).ok_or_else(|| {
            Problem::bad_request(format!(
                "cannot sort by {name:?} (merchant_id, net_minor, gross_minor, fees_minor, transaction_count)"
            ))
        })?,
    };
    let page = Page::new(query.page, query.per_page).bounds()?;
    // Filtered, sorted and paged in the store: a revision's lines are never all read at once.
    let found = state
        .store
        .settlement_lines_page(
            settlement.settlement_date,
            settlement.revision,
            &settle_core::store::LinesQuery {
                sort,
                descending,
                merchant_contains: query.q.filter(|q| !q.is_empty()),
                limit: page.per_page,
                offset: page.offset,
            },
        )
        .await?;
    Ok(Json(json!({
        "settlement_date": settlement.settlement_date,
        "revision": settlement.revision,
        "items": found.items,
        "page": page.number,
        "per_page": page.per_page,
        "total": found.total,
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/{date}/revisions",
    summary = "Every revision of a date",
    params(schema::DatePath),
    responses(
        (status = 200, description = "The revisions, oldest first", body = schema::RevisionList),
        schema::LookupProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn revisions(
    State(state): State<AppState>,
    caller: Caller,
    Path(day): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let day = date(&day)?;
    let revisions = state.store.settlement_revisions(day).await?;
    if revisions.is_empty() {
        return Err(Problem::not_found(format!(
            "settlement {day} has not been run"
        )));
    }
    Ok(Json(json!({ "settlement_date": day, "items": revisions })).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/{date}/payouts",
    summary = "Payouts of a date",
    params(schema::DatePath),
    responses(
        (status = 200, description = "The payouts", body = schema::PayoutList),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn payouts(
    State(state): State<AppState>,
    caller: Caller,
    Path(day): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let day = date(&day)?;
    let payouts = state.store.payouts(day).await?;
    Ok(Json(json!({ "settlement_date": day, "items": payouts })).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// A revision (from 1); the latest completed one unless given.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    revision: Option<u32>,
    /// Start with a UTF-8 byte order mark (for spreadsheets).
    #[serde(default)]
    bom: bool,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/{date}/export.csv",
    summary = "Merchant lines as RFC 4180 CSV",
    params(schema::DatePath, ExportQuery),
    responses(
        (status = 200, description = "The lines as CSV", body = String, content_type = "text/csv"),
        schema::ExportProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(day): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let day = date(&day)?;
    let settlement = match query.revision {
        Some(revision) => revision_of(&state, day, Some(revision)).await?,
        None => state
            .store
            .settlement_revisions(day)
            .await?
            .into_iter()
            .rev()
            .find(|s| s.status == SettlementStatus::Completed)
            .ok_or_else(|| {
                Problem::not_found(format!("settlement {day} has no completed revision"))
            })?,
    };
    if settlement.status != SettlementStatus::Completed {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            types::CONFLICT,
            "Not completed",
            format!(
                "settlement {day} revision {} is {}",
                settlement.revision, settlement.status
            ),
        ));
    }
    let lines = state
        .store
        .settlement_lines(day, settlement.revision)
        .await?;
    let mut csv = Vec::new();
    settle_core::csv::write_settlement_csv(&mut csv, &settlement, &lines, query.bom)
        .map_err(|_| Problem::internal())?;
    let filename = format!("settlement-{day}-r{}.csv", settlement.revision);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        csv,
    )
        .into_response())
}
