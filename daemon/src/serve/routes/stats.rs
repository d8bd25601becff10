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
use crate::serve::state::AppState;

/// The longest range a statistics request may cover.
const MAX_RANGE_DAYS: i64 = 366;

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    top: Option<usize>,
    width: Option<u32>,
    height: Option<u32>,
}

fn range(query: &RangeQuery) -> Result<(NaiveDate, NaiveDate), Problem> {
    let (Some(from), Some(to)) = (&query.from, &query.to) else {
        return Err(Problem::bad_request(
            "from and to are required (YYYY-MM-DD)",
        ));
    };
    let (from, to) = (date(from)?, date(to)?);
    if from > to {
        return Err(Problem::bad_request(format!(
            "from {from} is after to {to}"
        )));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(Problem::bad_request(format!(
            "a range covers at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let (from, to) = range(&query)?;
    let top = query.top.unwrap_or(10).clamp(1, 100);
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
    query: Result<Query<RangeQuery>, QueryRejection>,
    format: ChartFormat,
) -> Result<Response, Problem> {
    caller.require(Role::Viewer)?;
    let query = query_params(query)?;
    let (from, to) = range(&query)?;
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

pub async fn chart_png(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    chart(state, caller, query, ChartFormat::Png).await
}

pub async fn chart_svg(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    chart(state, caller, query, ChartFormat::Svg).await
}
