//! Statistics routes: the summary of a date range (per-currency volumes, fees, net, success rate,
//! top merchants) and the daily chart as PNG or SVG, drawn by core's plotters renderer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::Deserialize;
use settle_core::chart::{render_daily_chart, ChartFormat};
use settle_core::model::Role;
use settle_core::stats::{self, StatsError};

use super::settlements::query_params;
use crate::serve::extract::{date, Caller};
use crate::serve::problem::Problem;
use crate::serve::schema;
use crate::serve::state::AppState;

/// The longest range a statistics request may cover.
const MAX_RANGE_DAYS: i64 = 366;

/// The most merchants the summary may list per currency.
const MAX_TOP: usize = 100;

/// `GET …/stats/summary` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// The first date, inclusive; at most 366 days before to.
    #[param(value_type = String, format = Date, required = true)]
    from: Option<String>,
    /// The last date, inclusive; not before from.
    #[param(value_type = String, format = Date, required = true)]
    to: Option<String>,
    /// How many merchants to list per currency (default 10).
    #[param(minimum = 1, maximum = 100)]
    top: Option<usize>,
}

/// `GET …/stats/chart.png` and `chart.svg` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChartQuery {
    /// The first date, inclusive; at most 366 days before to.
    #[param(value_type = String, format = Date, required = true)]
    from: Option<String>,
    /// The last date, inclusive; not before from.
    #[param(value_type = String, format = Date, required = true)]
    to: Option<String>,
    /// Pixels (default 1200).
    #[param(minimum = 320, maximum = 8192)]
    width: Option<u32>,
    /// Pixels (default 800).
    #[param(minimum = 100, maximum = 8192)]
    height: Option<u32>,
}

fn range(from: &Option<String>, to: &Option<String>) -> Result<(NaiveDate, NaiveDate), Problem> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(Problem::bad_request(
            "from and to are required (YYYY-MM-DD)",
        ));
    };
    let (from, to) = (date(from)?, date(to)?);
    if from > to {
        return Err(Problem::inverted_range(from, to));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(Problem::bad_request(format!(
            "a range covers at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/stats/summary",
    summary = "Counts, volumes, fees, net, success rate and top merchants over a range",
    params(SummaryQuery),
    responses(
        (status = 200, description = "The summary", body = settle_core::stats::Summary),
        schema::QueryProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let (from, to) = range(&query.from, &query.to)?;
    let top = query.top.unwrap_or(10);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(Problem::bad_request(format!(
            "top must be a whole number from 1 to {MAX_TOP}, not {top}"
        )));
    }
    let summary = stats::summary(state.store.as_ref(), from, to, top)
        .await
        .map_err(|error| match error {
            StatsError::Store(store) => Problem::store(&store),
            StatsError::Money(money) => Problem::invalid(money.to_string()),
        })?;
    Ok(Json(summary).into_response())
}

async fn chart(
    state: AppState,
    caller: Caller,
    query: Result<Query<ChartQuery>, QueryRejection>,
    format: ChartFormat,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let (from, to) = range(&query.from, &query.to)?;
    let points = stats::daily_points(state.store.as_ref(), from, to).await?;
    if points.is_empty() {
        return Err(Problem::not_found(format!(
            "no completed settlements between {from} and {to}"
        )));
    }
    let width = query.width.unwrap_or(1200);
    let height = query.height.unwrap_or(800);
    let bytes =
        tokio::task::spawn_blocking(move || render_daily_chart(&points, format, width, height))
            .await
            .map_err(|_| Problem::internal())?
            .map_err(|e| Problem::invalid(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/stats/chart.png",
    summary = "Daily gross, fees and net per currency (PNG)",
    params(ChartQuery),
    responses(
        (status = 200, description = "The chart", body = Vec<u8>, content_type = "image/png"),
        schema::ChartProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn chart_png(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ChartQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    chart(state, caller, query, ChartFormat::Png).await
}

#[utoipa::path(
    get,
    path = "/api/v2/finance/settlement/stats/chart.svg",
    summary = "Daily gross, fees and net per currency (SVG)",
    params(ChartQuery),
    responses(
        (status = 200, description = "The chart", body = String, content_type = "image/svg+xml"),
        schema::ChartProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn chart_svg(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ChartQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    chart(state, caller, query, ChartFormat::Svg).await
}
