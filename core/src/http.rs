//! What the outbound HTTP clients (the payment provider's and the webhook notifier's) share: peer
//! URL validation, client construction and the excerpt of an answer kept for messages.

use std::time::Duration;

use crate::retry::RetryPolicy;

/// How long establishing a connection may take, at most (less if the attempt timeout is shorter).
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How much of a refusing answer's body is kept for the log.
const DETAIL_MAX_CHARS: usize = 200;

/// Validates a peer URL: absolute http(s) with a host, and no credentials in it (those belong in a
/// secret). Error messages never echo a URL that might hold credentials.
pub fn validate_url(what: &str, url: &str) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|error| format!("{what} is not a valid URL: {error}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{what} must not carry credentials; configure them as a secret"
        ));
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{what} {url:?} must use http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {url:?} has no host"));
    }
    Ok(parsed)
}

/// An HTTP client for one peer: redirects refused (a payout or webhook endpoint has no reason to
/// move, and following one would resend a signed or authorised request elsewhere).
pub fn http_client(policy: &RetryPolicy) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(
            policy.attempt_timeout_ms.min(CONNECT_TIMEOUT_MS),
        ))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| format!("cannot build the HTTP client: {error}"))
}

/// The start of an answer body, for a log or error message.
pub fn truncate_detail(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(DETAIL_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
