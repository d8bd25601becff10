//! The routes of `settle serve`, grouped by concern, and the helpers they share: turning an
//! idempotent answer into a response, and paging.

pub mod admin;
pub mod callbacks;
pub mod health;
pub mod payments;
pub mod reconciliation;
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

/// `?page=1&per_page=50`, as the caller wrote them: parsed by [`Page::bounds`], so that a bad
/// value is a problem naming its parameter rather than a deserializer's message.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    page: Option<String>,
    per_page: Option<String>,
}

/// A validated page: its number (from 1), its size, and the offset of its first item, computed
/// with checked arithmetic in 64 bits (a page far past the end is empty, never the first page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub number: u32,
    pub per_page: u32,
    pub offset: u64,
}

impl Bounds {
    /// One more than a page holds: what to ask a store for to learn whether more follow.
    pub fn probe_limit(&self) -> u32 {
        self.per_page.saturating_add(1)
    }
}

/// A whole number in `1..=max`, `default` when absent, or a 400 naming `name`.
fn whole_number(name: &str, text: Option<&str>, default: u32, max: u32) -> Result<u32, Problem> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|number| (1..=max).contains(number))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{name} must be a whole number from 1 to {max}, not {text:?}"
            ))
        })
}

impl Page {
    pub fn new(page: Option<String>, per_page: Option<String>) -> Page {
        Page { page, per_page }
    }

    /// (page in 1..=4294967295, per_page in 1..=500, the offset), or a 400 naming the parameter.
    pub fn bounds(&self) -> Result<Bounds, Problem> {
        let number = whole_number("page", self.page.as_deref(), 1, u32::MAX)?;
        let per_page = whole_number(
            "per_page",
            self.per_page.as_deref(),
            DEFAULT_PER_PAGE,
            MAX_PER_PAGE,
        )?;
        // At most (2^32 − 2) × 500: it cannot overflow, but it is checked all the same.
        let offset = u64::from(number - 1)
            .checked_mul(u64::from(per_page))
            .ok_or_else(|| Problem::bad_request("page × per_page is beyond any offset"))?;
        Ok(Bounds {
            number,
            per_page,
            offset,
        })
    }
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
    if let Some(seconds) = answer.retry_after_seconds {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            headers.insert(axum::http::header::RETRY_AFTER, value);
        }
    }
    response
}
