//! The reconciliation routes: import statements, run the rules, read items, exceptions, decisions
//! and the report, and record people's decisions — each a thin call of the core's service.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use settle_core::idempotency::{fingerprint, HandlerOutcome, StoredResponse};
use settle_core::model::Role;
use settle_core::payments::transaction_json;
use settle_core::reconcile::report::{report_rows, write_report_csv};
use settle_core::reconcile::{
    AdjustOutcome, AdjustRequest, Decision, DecisionState, ExpectRequest, ImportFile, ItemSide,
    ItemStatus, KindItem, ReconcileError, StatementFormat, StatementKind, WriteOffCategory,
    WriteOffRequest,
};
use settle_core::store::ImportOutcome;

use super::settlements::query_params;
use super::{answer, Page};
use crate::serve::extract::{date, Caller, JsonBody, Key};
use crate::serve::problem::{types, Problem};
use crate::serve::schema;
use crate::serve::state::AppState;

/// The largest statement file the API takes (a month of a busy account is a few MiB).
pub const MAX_STATEMENT_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The longest range the report covers in one request.
const MAX_REPORT_DAYS: i64 = 366;

const BASE: &str = "/api/v2/finance/reconciliation";

impl From<&ReconcileError> for Problem {
    fn from(error: &ReconcileError) -> Self {
        let conflict = |detail: String| {
            Problem::new(StatusCode::CONFLICT, types::CONFLICT, "Conflict", detail)
        };
        match error {
            ReconcileError::Store(store) => Problem::store(store),
            ReconcileError::File(file) => match &file.field {
                Some(field) => Problem {
                    fields: vec![field.clone()],
                    ..Problem::invalid(error.to_string())
                },
                None => Problem::invalid(error.to_string()),
            },
            ReconcileError::UnknownProfile(..) => Problem::invalid_member("profile", error),
            ReconcileError::Unbalanced { .. }
            | ReconcileError::NoStatement
            | ReconcileError::Invalid(_) => Problem::invalid(error.to_string()),
            ReconcileError::UnknownItem { .. } | ReconcileError::UnknownDecision(_) => {
                Problem::not_found(error.to_string())
            }
            ReconcileError::ItemTaken { .. } | ReconcileError::NotOpen(_) => {
                conflict(error.to_string())
            }
            ReconcileError::OwnWriteOff { .. } => Problem::new(
                StatusCode::FORBIDDEN,
                types::APPROVAL_REFUSED,
                "Approval refused",
                error.to_string(),
            ),
        }
    }
}

/// A refusal as the idempotency layer keeps it: a server failure is not kept (a retry runs
/// again), anything else is the key's answer.
fn refused(error: &ReconcileError) -> HandlerOutcome {
    let problem = Problem::from(error);
    if problem.status.is_server_error() {
        HandlerOutcome::NothingChanged(problem.to_stored())
    } else {
        HandlerOutcome::Completed(problem.to_stored())
    }
}

fn completed(status: u16, body: Value) -> HandlerOutcome {
    HandlerOutcome::Completed(StoredResponse {
        status,
        body,
        headers: vec![],
    })
}

/// The id a person's decision takes: derived from the caller and the request's key, so that a
/// retry of the same request (even one the idempotency layer lost) records it once.
fn decision_id(caller: &Caller, key: &Key) -> String {
    let digest = fingerprint("DECISION", &caller.actor(), &json!(key.0.as_str()));
    format!("man-{}", &digest[..32.min(digest.len())])
}

/// Runs a mutating request under its idempotency key.
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
        .await;
    // Whatever it did, the gauges look again.
    state.reconciliation_changed.notify_one();
    Ok(answer(&answered?))
}

/// A JSON body in the shape `T`, or a 422 naming what is wrong with it.
fn body_as<T: DeserializeOwned>(body: &Value) -> Result<T, Problem> {
    serde_json::from_value(body.clone()).map_err(|error| Problem::invalid(error.to_string()))
}

fn parsed<T: std::str::FromStr>(name: &str, text: Option<&str>) -> Result<Option<T>, Problem>
where
    T::Err: std::fmt::Display,
{
    text.map(|text| {
        text.parse::<T>()
            .map_err(|error| Problem::bad_parameter(name, error))
    })
    .transpose()
}

fn date_parameter(name: &str, text: Option<&str>) -> Result<Option<NaiveDate>, Problem> {
    text.map(|text| date(text).map_err(|problem| Problem::bad_parameter(name, problem.detail)))
        .transpose()
}

fn decision_body(decision: &Decision) -> (u16, Value) {
    let status = if decision.state == DecisionState::AwaitingApproval {
        202
    } else {
        201
    };
    (status, json!({ "decision": decision }))
}

// --- statements --------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// What the file is: the bank's statement, the payout provider's report or the payment
    /// provider's transaction report.
    #[param(value_type = StatementKind, inline)]
    kind: Option<String>,
    /// Bank statements: the format, detected from the content when absent.
    #[param(value_type = Option<StatementFormat>, inline)]
    format: Option<String>,
    /// Bank statements in CSV: the column profile (`[reconciliation.profiles.NAME]`).
    #[param(value_type = Option<String>, min_length = 1)]
    profile: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/statements",
    summary = "Import a statement file (the body, as sent): all or nothing, and a statement already imported adds nothing",
    params(ImportQuery, schema::IdempotencyKeyHeader),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file: camt.053, MT940, OFX or CSV for the bank; the provider's CSV reports"),
    responses(
        (status = 201, description = "Imported (statements already imported are listed as such)", body = schema::StatementsImported),
        (status = 200, description = "Every statement of the file was imported before: nothing added", body = schema::StatementsImported),
        schema::StatementImportProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let query = query_params(query)?;
    let kind: StatementKind = parsed("kind", query.kind.as_deref())?
        .ok_or_else(|| Problem::bad_parameter("kind", "is required (bank, payouts or provider)"))?;
    let format: Option<StatementFormat> = parsed("format", query.format.as_deref())?;
    let profile = query.profile.filter(|p| !p.is_empty());
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                types::BODY_TOO_LARGE,
                "Body too large",
                format!("a statement file may have at most {MAX_STATEMENT_BODY_BYTES} bytes"),
            )
        } else {
            Problem::bad_request(rejection.body_text())
        }
    })?;
    let request = json!({
        "kind": kind,
        "format": format,
        "profile": profile,
        "file_sha256": settle_core::reconcile::file_sha256(&bytes),
    });
    let path = format!("{BASE}/statements");
    idempotent(&state, &caller, &key, &path, &request, || async {
        let file = ImportFile {
            kind,
            bytes: bytes.to_vec(),
            format,
            profile,
        };
        match state
            .reconciliation
            .import_file(file, &caller.actor())
            .await
        {
            Ok(report) => {
                let imported = report.entries_imported();
                let any_new = report
                    .statements
                    .iter()
                    .any(|(_, outcome)| *outcome == ImportOutcome::Imported);
                let statements: Vec<Value> = report
                    .statements
                    .iter()
                    .map(|(statement, outcome)| {
                        let outcome = match outcome {
                            ImportOutcome::Imported => "imported",
                            ImportOutcome::AlreadyImported { .. } => "already_imported",
                        };
                        json!({ "outcome": outcome, "statement": statement })
                    })
                    .collect();
                completed(
                    if any_new { 201 } else { 200 },
                    json!({ "statements": statements, "entries_imported": imported }),
                )
            }
            Err(error) => refused(&error),
        }
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KindQuery {
    /// Only this kind (every kind when absent).
    #[param(value_type = Option<StatementKind>, inline)]
    kind: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/reconciliation/statements",
    summary = "The statements imported, oldest first",
    params(KindQuery),
    responses(
        (status = 200, description = "The statements", body = schema::StatementList),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn statements(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<KindQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let kind: Option<StatementKind> = parsed("kind", query.kind.as_deref())?;
    let statements = state.store.statements(kind).await?;
    Ok(Json(json!({ "items": statements })).into_response())
}

// --- runs --------------------------------------------------------------------------------------

/// What to run: every kind (or one), every open item (or those of one business date).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    kind: Option<StatementKind>,
    #[schema(value_type = Option<String>, format = Date)]
    date: Option<NaiveDate>,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/run",
    summary = "Run the matching rules over what is open (deterministic; never undoes a person's decision)",
    params(schema::IdempotencyKeyHeader),
    request_body = RunRequest,
    responses(
        (status = 200, description = "What the run decided, per kind, and the exceptions left open", body = schema::ReconciliationRun),
        schema::ReconciliationActionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let request: RunRequest = body_as(&body)?;
    let path = format!("{BASE}/run");
    idempotent(&state, &caller, &key, &path, &body, || async {
        let service = &state.reconciliation;
        let report = match service
            .run(request.kind, request.date, &caller.actor())
            .await
        {
            Ok(report) => report,
            Err(error) => return refused(&error),
        };
        let open = match service.exceptions(request.kind, None).await {
            Ok(open) => open.len(),
            Err(error) => return refused(&error),
        };
        let kinds: Vec<Value> = report
            .kinds
            .iter()
            .map(|run| {
                json!({
                    "kind": run.kind,
                    "matches": run.matches,
                    "matches_to_review": run.matches_to_review,
                    "duplicates": run.duplicates,
                    "skipped": run.skipped,
                })
            })
            .collect();
        completed(200, json!({ "kinds": kinds, "open_exceptions": open }))
    })
    .await
}

// --- reads -------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// Only this kind (every kind when absent).
    #[param(value_type = Option<StatementKind>, inline)]
    kind: Option<String>,
    /// Only items of this business date.
    #[param(value_type = Option<String>, format = Date)]
    date: Option<String>,
    /// Only items in this state.
    #[param(value_type = Option<ItemStatus>, inline)]
    status: Option<String>,
    /// Page number, from 1.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    page: Option<String>,
    /// Items per page (1 to 500, 50 by default).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    per_page: Option<String>,
}

async fn items_of(
    state: &AppState,
    kind: Option<StatementKind>,
) -> Result<Vec<KindItem>, ReconcileError> {
    let mut items = Vec::new();
    for kind in kinds(kind) {
        items.extend(state.reconciliation.items(kind).await?);
    }
    Ok(items)
}

fn kinds(kind: Option<StatementKind>) -> Vec<StatementKind> {
    match kind {
        Some(kind) => vec![kind],
        None => StatementKind::ALL.to_vec(),
    }
}

fn item_json(item: &KindItem) -> Value {
    let mut value = json!(item.item);
    value["kind"] = json!(item.kind);
    value["exception"] = json!(item.item.is_exception());
    value
}

fn page_of(items: &[KindItem], page: super::Bounds) -> Value {
    let start = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let shown: Vec<Value> = items
        .iter()
        .skip(start)
        .take(page.per_page as usize)
        .map(item_json)
        .collect();
    json!({
        "items": shown,
        "page": page.number,
        "per_page": page.per_page,
        "total": items.len(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/reconciliation/items",
    summary = "Every item (records of ours and statement entries) with its state, by date, kind, side and id",
    params(ItemsQuery),
    responses(
        (status = 200, description = "One page of items", body = schema::ItemPage),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn items(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let kind: Option<StatementKind> = parsed("kind", query.kind.as_deref())?;
    let on = date_parameter("date", query.date.as_deref())?;
    let status: Option<ItemStatus> = parsed("status", query.status.as_deref())?;
    let page = Page::new(query.page, query.per_page).bounds()?;
    let mut items = items_of(&state, kind)
        .await
        .map_err(|e| Problem::from(&e))?;
    items.retain(|i| {
        on.is_none_or(|d| i.item.date == d) && status.is_none_or(|s| i.item.status == s)
    });
    items.sort_by(|a, b| {
        (a.item.date, a.kind, a.item.side, &a.item.id).cmp(&(
            b.item.date,
            b.kind,
            b.item.side,
            &b.item.id,
        ))
    });
    Ok(Json(page_of(&items, page)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExceptionsQuery {
    /// Only this kind (every kind when absent).
    #[param(value_type = Option<StatementKind>, inline)]
    kind: Option<String>,
    /// Only exceptions open at least this many days.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 36500)]
    older_than_days: Option<String>,
    /// Page number, from 1.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    page: Option<String>,
    /// Items per page (1 to 500, 50 by default).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    per_page: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/reconciliation/exceptions",
    summary = "The exception queue, oldest first: unmatched items and rule decisions a person must confirm",
    params(ExceptionsQuery),
    responses(
        (status = 200, description = "One page of exceptions", body = schema::ItemPage),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn exceptions(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ExceptionsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let kind: Option<StatementKind> = parsed("kind", query.kind.as_deref())?;
    let older_than = match query.older_than_days.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|days| (0..=36_500).contains(days))
                .ok_or_else(|| {
                    Problem::bad_parameter(
                        "older_than_days",
                        format!("must be a whole number of days from 0 to 36500, not {text:?}"),
                    )
                })?,
        ),
    };
    let page = Page::new(query.page, query.per_page).bounds()?;
    let open = state
        .reconciliation
        .exceptions(kind, older_than)
        .await
        .map_err(|e| Problem::from(&e))?;
    Ok(Json(page_of(&open, page)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// Only this kind (every kind when absent).
    #[param(value_type = Option<StatementKind>, inline)]
    kind: Option<String>,
    /// Only decisions in this state (e.g. `awaiting_approval`: write-offs waiting for an admin).
    #[param(value_type = Option<DecisionState>, inline)]
    state: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/reconciliation/decisions",
    summary = "Decisions (the rules' and people's), oldest first",
    params(DecisionsQuery),
    responses(
        (status = 200, description = "The decisions", body = schema::DecisionList),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn decisions(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let kind: Option<StatementKind> = parsed("kind", query.kind.as_deref())?;
    let states: Vec<DecisionState> = parsed("state", query.state.as_deref())?
        .into_iter()
        .collect();
    let found = state
        .reconciliation
        .decisions(kind, states)
        .await
        .map_err(|e| Problem::from(&e))?;
    Ok(Json(json!({ "items": found })).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The first business date, inclusive.
    #[param(value_type = String, format = Date)]
    from: Option<String>,
    /// The last business date, inclusive (at most 366 days after `from`).
    #[param(value_type = String, format = Date)]
    to: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/reconciliation/report.csv",
    summary = "The reconciliation report (per date, kind and currency: counts and amounts matched, with difference, unmatched each side, written off), Excel-safe CSV",
    params(ReportQuery),
    responses(
        (status = 200, description = "The report", content_type = "text/csv", body = String),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let from = date_parameter("from", query.from.as_deref())?
        .ok_or_else(|| Problem::bad_parameter("from", "is required (YYYY-MM-DD)"))?;
    let to = date_parameter("to", query.to.as_deref())?
        .ok_or_else(|| Problem::bad_parameter("to", "is required (YYYY-MM-DD)"))?;
    if from > to {
        return Err(Problem::inverted_range(from, to));
    }
    if (to - from).num_days() >= MAX_REPORT_DAYS {
        return Err(Problem {
            fields: vec!["from".into(), "to".into()],
            ..Problem::bad_request(format!(
                "from {from} to {to} is more than {MAX_REPORT_DAYS} days: ask for a shorter range"
            ))
        });
    }
    let items = items_of(&state, None)
        .await
        .map_err(|e| Problem::from(&e))?;
    let rows = report_rows(&items, from, to);
    let mut csv = Vec::new();
    write_report_csv(&mut csv, &rows).map_err(|error| {
        tracing::error!(%error, "cannot write the reconciliation report");
        Problem::internal()
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"reconciliation-{from}-{to}.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

// --- people's decisions ------------------------------------------------------------------------

/// A match of records of ours with statement entries (one or more of each).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    kind: StatementKind,
    /// Records of ours: payout references or transaction ids.
    ours: Vec<String>,
    /// Statement entry ids.
    theirs: Vec<String>,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/matches",
    summary = "Match records of ours with statement entries by hand (the difference is recorded with it)",
    params(schema::IdempotencyKeyHeader),
    request_body = MatchRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::DecisionRecorded),
        schema::ReconciliationActionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn create_match(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let request: MatchRequest = body_as(&body)?;
    let id = decision_id(&caller, &key);
    idempotent(
        &state,
        &caller,
        &key,
        &format!("{BASE}/matches"),
        &body,
        || async {
            let recorded = state
                .reconciliation
                .match_items(
                    request.kind,
                    request.ours,
                    request.theirs,
                    request.reason,
                    &caller.actor(),
                    Some(&id),
                )
                .await;
            decided(recorded)
        },
    )
    .await
}

fn decided(recorded: Result<Decision, ReconcileError>) -> HandlerOutcome {
    match recorded {
        Ok(decision) => {
            let (status, body) = decision_body(&decision);
            completed(status, body)
        }
        Err(error) => refused(&error),
    }
}

/// An item that is not due until a date.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectationRequest {
    kind: StatementKind,
    side: ItemSide,
    /// The item: a record of ours (payout reference, transaction id) or a statement entry id.
    id: String,
    #[schema(value_type = String, format = Date)]
    expected_by: NaiveDate,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/expectations",
    summary = "Mark an item as not due until a date (it is an exception again when the date passes)",
    params(schema::IdempotencyKeyHeader),
    request_body = ExpectationRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::DecisionRecorded),
        schema::ReconciliationActionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn create_expectation(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let request: ExpectationRequest = body_as(&body)?;
    let id = decision_id(&caller, &key);
    let path = format!("{BASE}/expectations");
    idempotent(&state, &caller, &key, &path, &body, || async {
        let request = ExpectRequest {
            kind: request.kind,
            side: request.side,
            id: request.id,
            expected_by: request.expected_by,
            reason: request.reason,
        };
        decided(
            state
                .reconciliation
                .expect(request, &caller.actor(), Some(&id))
                .await,
        )
    })
    .await
}

/// Items written off, with the reason and category.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOffBody {
    kind: StatementKind,
    #[serde(default)]
    ours: Vec<String>,
    #[serde(default)]
    theirs: Vec<String>,
    #[schema(min_length = 1)]
    reason: String,
    category: WriteOffCategory,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/write-offs",
    summary = "Write items off with a reason and category; above reconciliation.approval_above_minor it waits for another admin (202)",
    params(schema::IdempotencyKeyHeader),
    request_body = WriteOffBody,
    responses(
        (status = 201, description = "Written off", body = schema::DecisionRecorded),
        (status = 202, description = "Waiting for another admin's approval; its items are set aside meanwhile", body = schema::DecisionRecorded),
        schema::ReconciliationActionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn create_write_off(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let request: WriteOffBody = body_as(&body)?;
    let id = decision_id(&caller, &key);
    let path = format!("{BASE}/write-offs");
    idempotent(&state, &caller, &key, &path, &body, || async {
        let request = WriteOffRequest {
            kind: request.kind,
            ours: request.ours,
            theirs: request.theirs,
            reason: request.reason,
            category: request.category,
        };
        decided(
            state
                .reconciliation
                .write_off(request, &caller.actor(), Some(&id))
                .await,
        )
    })
    .await
}

/// Why a decision is reversed, confirmed or a write-off rejected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[schema(min_length = 1)]
    reason: String,
}

/// An approval needs no reason; a rejection may give one.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    reason: Option<String>,
}

fn reason_of(request: ReasonRequest) -> Result<String, Problem> {
    let reason = request.reason.trim().to_string();
    if reason.is_empty() {
        return Err(Problem::invalid_member("reason", "must not be empty"));
    }
    Ok(reason)
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/decisions/{id}/unmatch",
    summary = "Reverse a match, duplicate or write-off by a new decision (its items are open again)",
    params(schema::DecisionIdPath, schema::IdempotencyKeyHeader),
    request_body = ReasonRequest,
    responses(
        (status = 201, description = "Recorded", body = schema::DecisionRecorded),
        schema::ReconciliationDecisionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn unmatch(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let reason = reason_of(body_as(&body)?)?;
    let id = decision_id(&caller, &key);
    let path = format!("{BASE}/decisions/{target}/unmatch");
    idempotent(&state, &caller, &key, &path, &body, || async {
        decided(
            state
                .reconciliation
                .unmatch(&target, reason, &caller.actor(), Some(&id))
                .await,
        )
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/decisions/{id}/confirm",
    summary = "Confirm a rule's decision that needs review (a difference beyond tolerance, a duplicate)",
    params(schema::DecisionIdPath, schema::IdempotencyKeyHeader),
    request_body = ReasonRequest,
    responses(
        (status = 201, description = "Confirmed", body = schema::DecisionRecorded),
        schema::ReconciliationDecisionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let reason = reason_of(body_as(&body)?)?;
    let path = format!("{BASE}/decisions/{target}/confirm");
    idempotent(&state, &caller, &key, &path, &body, || async {
        decided(
            state
                .reconciliation
                .confirm(&target, reason, &caller.actor())
                .await,
        )
    })
    .await
}

/// An adjustment on the merchant from a decision: signed major units (negative is a debit).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentFromDecision {
    #[schema(example = "0.75")]
    amount: String,
    #[schema(min_length = 1)]
    reason: String,
    /// When the decision's records do not name exactly one merchant.
    merchant_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/decisions/{id}/adjustment",
    summary = "Turn a write-off or a confirmed difference into an adjustment on the merchant (once per decision, at most its amount); the next settlement pays or collects it",
    params(schema::DecisionIdPath, schema::IdempotencyKeyHeader),
    request_body = AdjustmentFromDecision,
    responses(
        (status = 201, description = "Recorded through the payment service", body = schema::TransactionView),
        (status = 200, description = "The decision already has this adjustment: nothing added", body = schema::TransactionView),
        schema::ReconciliationDecisionProblems,
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn adjust(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let request: AdjustmentFromDecision = body_as(&body)?;
    let path = format!("{BASE}/decisions/{target}/adjustment");
    idempotent(&state, &caller, &key, &path, &body, || async {
        let request = AdjustRequest {
            decision: target.clone(),
            amount: request.amount,
            reason: request.reason,
            merchant_id: request.merchant_id,
        };
        match state
            .reconciliation
            .adjust(&state.payments, request, &caller.actor())
            .await
        {
            Ok(outcome) => {
                let status = match outcome {
                    AdjustOutcome::Recorded(_) => 201,
                    AdjustOutcome::AlreadyRecorded(_) => 200,
                };
                completed(status, transaction_json(outcome.transaction()))
            }
            Err(error) => refused(&error),
        }
    })
    .await
}

async fn decide_write_off(
    state: AppState,
    caller: Caller,
    key: Key,
    target: String,
    body: Value,
    approve: bool,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let request: ApprovalRequest = if body.as_object().is_some_and(|o| o.is_empty()) {
        ApprovalRequest::default()
    } else {
        body_as(&body)?
    };
    let verb = if approve { "approve" } else { "reject" };
    let path = format!("{BASE}/write-offs/{target}/{verb}");
    idempotent(&state, &caller, &key, &path, &body, || async {
        decided(
            state
                .reconciliation
                .decide_write_off(&target, approve, request.reason, &caller.actor())
                .await,
        )
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/write-offs/{id}/approve",
    summary = "Approve another person's write-off that waits (403 approval-refused for one's own)",
    params(schema::DecisionIdPath, schema::IdempotencyKeyHeader),
    request_body = ApprovalRequest,
    responses(
        (status = 201, description = "Approved: the items are written off", body = schema::DecisionRecorded),
        schema::ReconciliationDecisionProblems,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn approve_write_off(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    decide_write_off(state, caller, key, target, body, true).await
}

#[utoipa::path(
    post,
    path = "/api/v2/finance/reconciliation/write-offs/{id}/reject",
    summary = "Reject a write-off that waits: its items are open again",
    params(schema::DecisionIdPath, schema::IdempotencyKeyHeader),
    request_body = ApprovalRequest,
    responses(
        (status = 201, description = "Rejected", body = schema::DecisionRecorded),
        schema::ReconciliationDecisionProblems,
    ),
    security(("bearer" = ["admin"])),
)]
pub async fn reject_write_off(
    State(state): State<AppState>,
    caller: Caller,
    key: Key,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    decide_write_off(state, caller, key, target, body, false).await
}
