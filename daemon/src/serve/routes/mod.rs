//! The routes of `settle serve`, grouped by concern, and the helpers they share: turning an
//! idempotent answer into a response, and paging.

pub mod admin;
pub mod callbacks;
pub mod health;
pub mod payments;
pub mod settlements;
pub mod stats;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use settle_core::idempotency::{Answer, Outcome};

use super::problem::{stored_response, Problem};

/// Items per page unless asked otherwise, and the most a page may hold.
const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 500;

/// `?page=1&per_page=50`.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    page: Option<u32>,
    per_page: Option<u32>,
}

impl Page {
    /// (page ≥ 1, per_page in 1..=500), or a 400.
    pub fn bounds(&self) -> Result<(u32, u32), Problem> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page == 0 {
            return Err(Problem::bad_request("page starts at 1"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(Problem::bad_request(format!(
                "per_page must be 1 to {MAX_PER_PAGE}"
            )));
        }
        Ok((page, per_page))
    }
}

/// One page of `items`: (items, page, per_page, total).
pub fn paged<T>(items: Vec<T>, page: &Page) -> Result<(Vec<T>, u32, u32, usize), Problem> {
    let (number, per_page) = page.bounds()?;
    let total = items.len();
    let start = ((number - 1) as usize).saturating_mul(per_page as usize);
    let items = items
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .collect();
    Ok((items, number, per_page, total))
}

/// The response of an idempotent request: the stored answer, marked when it is a replay, with
/// Retry-After on a conflict.
pub fn answer(answer: &Answer) -> Response {
    let mut response = stored_response(&answer.response);
    let headers = response.headers_mut();
    if answer.outcome == Outcome::Replay {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    if let Some(seconds) = answer.retry_after_s {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            headers.insert(axum::http::header::RETRY_AFTER, value);
        }
    }
    response
}
