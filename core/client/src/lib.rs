//! A typed async client of `settle serve`'s HTTP API (feature `client`) for the desktop console:
//! one method per route the console needs, typed answers, one error type, never the token shown.

mod error;
mod types;

use std::fmt;
use std::time::Duration;

use chrono::NaiveDate;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

pub use self::error::{problem_types, ClientError};
pub use self::types::{
    HistoryQuery, LineSort, LinesPage, LinesQuery, Page, RerunOutcome, RerunPending, RunAccepted,
    SettlementDetail, SortOrder, TransactionRecord, Whoami,
};
pub use settle_domain::idempotency_key::IdempotencyKey;
pub use settle_domain::model::{
    AuditAction, AuditEvent, AuditOutcome, CurrencyTotals, Notification, NotificationStatus,
    Payout, PayoutStatus, RerunRequest, RerunRequestStatus, Role, RunTrigger, Settlement,
    SettlementFigures, SettlementLine, SettlementStatus,
};
pub use settle_domain::secret::Secret;
pub use settle_domain::stats::{CurrencySummary, MerchantVolume, Summary};

use self::types::{push, Decided, Items};

/// What the client calls itself.
const USER_AGENT: &str = concat!("settle-client/", env!("CARGO_PKG_VERSION"));
/// The API's path under the base URL.
const API: [&str; 2] = ["api", "v2"];
/// The settlement routes' path under the API.
const SETTLEMENT: [&str; 2] = ["finance", "settlement"];
/// How much of an unexpected answer's body an error quotes.
const SNIPPET_MAX_CHARS: usize = 200;
const JSON: &str = "application/json, application/problem+json";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A client of one daemon with one token. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Ends with `/`; the API is at `{base_url}api/v2/`.
    base_url: Url,
    token: Secret,
    timeout_ms: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("token", &self.token)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// An answer read whole.
struct Answer {
    /// `METHOD /path`, for messages.
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// An RFC 9457 body, as far as the client reads it.
#[derive(Deserialize)]
struct ProblemBody {
    #[serde(rename = "type")]
    problem_type: Option<String>,
    title: Option<String>,
    detail: Option<String>,
    instance: Option<String>,
}

impl Client {
    /// A client of the daemon at `base_url` (`http://` or `https://`, e.g.
    /// `http://127.0.0.1:8787`, or a proxy's path prefix such as `https://ops.example/settle`),
    /// sending `token` as `Authorization: Bearer`, each call bounded by `timeout_ms`. Nothing is
    /// sent yet: [`Client::verify`] proves the URL and token. System proxies are not used, and
    /// redirects are not followed (they would carry the token elsewhere).
    pub fn new(base_url: &str, token: Secret, timeout_ms: u64) -> Result<Client, ClientError> {
        match connection(base_url, &token, timeout_ms) {
            Ok((base_url, http)) => Ok(Client {
                http,
                base_url,
                token,
                timeout_ms,
            }),
            Err(error) => Err(error.redacted(&token)),
        }
    }

    /// The daemon's base URL, normalised to end with `/`.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// One cheap authenticated call (`GET …/history?per_page=1`) that proves the URL points at a
    /// Settle daemon and the token is accepted (any role). [`Client::whoami`] tells the token's
    /// role; a call above it answers `Forbidden`.
    pub async fn verify(&self) -> Result<(), ClientError> {
        let url = self.url(
            &[&SETTLEMENT[..], &["history"]],
            &[("per_page", "1".into())],
        );
        match self.get_json::<Page<Settlement>>(url).await {
            Ok(_) => Ok(()),
            Err(ClientError::NotFound { .. }) => Err(ClientError::InvalidResponse(format!(
                "{} does not serve the Settle API (404 for api/v2/finance/settlement/history)",
                self.base_url
            ))
            .redacted(&self.token)),
            Err(other) => Err(other),
        }
    }

    /// The token's name and role (`GET /whoami`, any role), so that the console can hide what
    /// the role cannot do. The answer never holds the token.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        let url = self.url(&[&["whoami"][..]], &[]);
        self.get_json(url).await
    }

    /// Settlements, newest first: the latest revision of each date unless `all_revisions`.
    pub async fn history(&self, query: &HistoryQuery) -> Result<Page<Settlement>, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &["history"]], &query.pairs());
        self.get_json(url).await
    }

    /// One revision of `date` (the latest unless `revision`), with its late transactions and
    /// notifications.
    pub async fn settlement(
        &self,
        date: NaiveDate,
        revision: Option<u32>,
    ) -> Result<SettlementDetail, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "revision", revision);
        let url = self.url(&[&SETTLEMENT[..], &[&day(date)]], &query);
        self.get_json(url).await
    }

    /// A page of a revision's merchant lines, sorted and filtered as `query` says.
    pub async fn lines(
        &self,
        date: NaiveDate,
        query: &LinesQuery,
    ) -> Result<LinesPage, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &[&day(date), "lines"]], &query.pairs());
        self.get_json(url).await
    }

    /// Every revision of `date`, oldest first.
    pub async fn revisions(&self, date: NaiveDate) -> Result<Vec<Settlement>, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &[&day(date), "revisions"]], &[]);
        Ok(self.get_json::<Items<Settlement>>(url).await?.items)
    }

    /// The payouts of `date` (every revision's).
    pub async fn payouts(&self, date: NaiveDate) -> Result<Vec<Payout>, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &[&day(date), "payouts"]], &[]);
        Ok(self.get_json::<Items<Payout>>(url).await?.items)
    }

    /// A page of the audit trail, newest first (the daemon's defaults: page 1, 50 per page).
    pub async fn audit(
        &self,
        page: Option<u32>,
        per_page: Option<u32>,
    ) -> Result<Page<AuditEvent>, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "page", page);
        push(&mut query, "per_page", per_page);
        let url = self.url(&[&["finance", "audit"][..]], &query);
        self.get_json(url).await
    }

    /// Counts, volumes, fees, net and success rate per currency over `[from, to]` (at most 366
    /// days), and the `top` merchants by volume per currency (the daemon's default: 10).
    pub async fn summary(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        top: Option<u32>,
    ) -> Result<Summary, ClientError> {
        let mut query = range(from, to);
        push(&mut query, "top", top);
        let url = self.url(&[&SETTLEMENT[..], &["stats", "summary"]], &query);
        self.get_json(url).await
    }

    /// The daily gross, fees and net chart of `[from, to]` as PNG bytes (the daemon's default
    /// size: 1200 × 800). No completed settlement in the range: `NotFound`.
    pub async fn chart_png(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut query = range(from, to);
        push(&mut query, "width", width);
        push(&mut query, "height", height);
        let url = self.url(&[&SETTLEMENT[..], &["stats", "chart.png"]], &query);
        let answer = self.get(url, "image/png").await?;
        if !answer.body.starts_with(PNG_SIGNATURE) {
            return Err(self.invalid(&answer, "expected a PNG image"));
        }
        Ok(answer.body)
    }

    /// The RFC 4180 CSV export of a completed revision (the latest completed one unless
    /// `revision`), exactly as the daemon serves it; `bom` prefixes a byte order mark for Excel.
    pub async fn export_csv(
        &self,
        date: NaiveDate,
        revision: Option<u32>,
        bom: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "revision", revision);
        if bom {
            query.push(("bom", "true".to_string()));
        }
        let url = self.url(&[&SETTLEMENT[..], &[&day(date), "export.csv"]], &query);
        let answer = self.get(url, "text/csv").await?;
        if !answer
            .header(CONTENT_TYPE)
            .is_some_and(|value| value.starts_with("text/csv"))
        {
            return Err(self.invalid(&answer, "expected text/csv"));
        }
        Ok(answer.body)
    }

    /// Settles `date` (or, without one, the latest closed business date): the claimed revision,
    /// settled in the background. The same `key` again answers the same (`replayed`).
    pub async fn trigger(
        &self,
        date: Option<NaiveDate>,
        key: &IdempotencyKey,
    ) -> Result<RunAccepted, ClientError> {
        let url = match date {
            Some(date) => self.url(&[&SETTLEMENT[..], &["trigger", &day(date)]], &[]),
            None => self.url(&[&SETTLEMENT[..], &["trigger"]], &[]),
        };
        self.post_json(url, key, None).await
    }

    /// Settles `date` again as a new revision for `reason`, with the fee schedule of the previous
    /// revision unless `apply_current_fees`. With four-eyes reruns it only records the request.
    pub async fn rerun(
        &self,
        date: NaiveDate,
        reason: &str,
        apply_current_fees: bool,
        key: &IdempotencyKey,
    ) -> Result<RerunOutcome, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &["rerun", &day(date)]], &[]);
        let body = json!({ "reason": reason, "apply_current_fees": apply_current_fees });
        let answer = self.post(url, key, Some(&body)).await?;
        let replayed = answer.replayed();
        let members: serde_json::Map<String, Value> = self.decode(&answer)?;
        if members.contains_key("rerun_request") {
            let mut pending: RerunPending = self.decode(&answer)?;
            pending.replayed = replayed;
            Ok(RerunOutcome::AwaitingApproval(pending))
        } else {
            let mut accepted: RunAccepted = self.decode(&answer)?;
            accepted.replayed = replayed;
            Ok(RerunOutcome::Started(Box::new(accepted)))
        }
    }

    /// Resumes the failed latest revision of `date`.
    pub async fn retry(
        &self,
        date: NaiveDate,
        key: &IdempotencyKey,
    ) -> Result<RunAccepted, ClientError> {
        let url = self.url(&[&SETTLEMENT[..], &["retry", &day(date)]], &[]);
        self.post_json(url, key, None).await
    }

    /// Four-eyes rerun requests (all, or only those with `status`).
    pub async fn rerun_requests(
        &self,
        status: Option<RerunRequestStatus>,
    ) -> Result<Vec<RerunRequest>, ClientError> {
        let mut query = Vec::new();
        push(&mut query, "status", status.map(|s| s.as_str()));
        let url = self.url(&[&SETTLEMENT[..], &["rerun-requests"]], &query);
        Ok(self.get_json::<Items<RerunRequest>>(url).await?.items)
    }

    /// Approves another operator's rerun request, which starts the rerun.
    pub async fn approve(
        &self,
        id: Uuid,
        key: &IdempotencyKey,
    ) -> Result<RunAccepted, ClientError> {
        let url = self.decision_url(id, "approve");
        self.post_json(url, key, None).await
    }

    /// Rejects a rerun request: the request as decided.
    pub async fn reject(
        &self,
        id: Uuid,
        key: &IdempotencyKey,
    ) -> Result<RerunRequest, ClientError> {
        let url = self.decision_url(id, "reject");
        let answer = self.post(url, key, None).await?;
        Ok(self.decode::<Decided>(&answer)?.rerun_request)
    }

    fn decision_url(&self, id: Uuid, verb: &str) -> Url {
        let id = id.to_string();
        self.url(&[&SETTLEMENT[..], &["rerun-requests", &id, verb]], &[])
    }

    /// `{base_url}api/v2/{segments…}?{query}`, each segment percent-encoded.
    fn url(&self, segments: &[&[&str]], query: &[(&'static str, String)]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // `new` accepted only http(s) URLs, which always have a path.
            path.pop_if_empty().extend(API);
            for group in segments {
                path.extend(group.iter());
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(name, value)| (name, value)));
        }
        url
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, ClientError> {
        let answer = self.get(url, JSON).await?;
        self.decode(&answer)
    }

    async fn post_json(
        &self,
        url: Url,
        key: &IdempotencyKey,
        body: Option<&Value>,
    ) -> Result<RunAccepted, ClientError> {
        let answer = self.post(url, key, body).await?;
        let mut accepted: RunAccepted = self.decode(&answer)?;
        accepted.replayed = answer.replayed();
        Ok(accepted)
    }

    async fn get(&self, url: Url, accept: &str) -> Result<Answer, ClientError> {
        self.exchange(Method::GET, url, accept, None, None).await
    }

    async fn post(
        &self,
        url: Url,
        key: &IdempotencyKey,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        self.exchange(Method::POST, url, JSON, Some(key), body)
            .await
    }

    /// Sends one request and reads the whole answer: a 2xx answer, or the error it means.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        accept: &str,
        key: Option<&IdempotencyKey>,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {}", url.path());
        // reqwest marks the Authorization header sensitive: its own Debug output hides it too.
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header(ACCEPT, accept);
        if let Some(key) = key {
            request = request.header("idempotency-key", key.as_str());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(&error))?
            .to_vec();
        let answer = Answer {
            what,
            status,
            headers,
            body,
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(error_from_answer(&answer).redacted(&self.token))
        }
    }

    /// A JSON answer as `T`, or `InvalidResponse` naming where it does not fit.
    fn decode<T: DeserializeOwned>(&self, answer: &Answer) -> Result<T, ClientError> {
        let mut deserializer = serde_json::Deserializer::from_slice(&answer.body);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let at = error.path().to_string();
            let reason = error.into_inner();
            self.invalid(
                answer,
                &format!("the answer does not parse at {at}: {reason}"),
            )
        })
    }

    fn invalid(&self, answer: &Answer, what_is_wrong: &str) -> ClientError {
        ClientError::InvalidResponse(format!(
            "{}: {what_is_wrong}; got {} {}",
            answer.what,
            answer.status,
            snippet(&answer.body)
        ))
        .redacted(&self.token)
    }

    /// A failure to exchange: too slow, or no connection (refused, DNS, TLS, reset).
    fn transport_error(&self, error: &reqwest::Error) -> ClientError {
        let found = if error.is_timeout() {
            ClientError::Timeout {
                after_ms: self.timeout_ms,
            }
        } else if error.is_connect() || error.is_request() || error.is_body() {
            ClientError::Unreachable {
                url: self.base_url.to_string(),
                reason: chain(error),
            }
        } else {
            ClientError::InvalidResponse(chain(error))
        };
        found.redacted(&self.token)
    }
}

/// The checked base URL and an HTTP client for it: a timeout on every call, no redirects, no
/// system proxy.
fn connection(
    base_url: &str,
    token: &Secret,
    timeout_ms: u64,
) -> Result<(Url, reqwest::Client), ClientError> {
    let url = check_base_url(base_url)?;
    check_token(token)?;
    if timeout_ms == 0 {
        return Err(ClientError::InvalidConfig {
            field: "timeout_ms",
            detail: "the timeout must be at least 1 ms".to_string(),
        });
    }
    let http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_millis(timeout_ms))
        .connect_timeout(Duration::from_millis(timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        // Only the TLS set-up can fail here.
        .map_err(|error| ClientError::InvalidConfig {
            field: "base_url",
            detail: format!("cannot set up an HTTP client: {}", chain(&error)),
        })?;
    Ok((url, http))
}

/// The base URL, checked and normalised to end with `/`. Errors name the value (without any
/// credentials in it).
fn check_base_url(base_url: &str) -> Result<Url, ClientError> {
    let text = base_url.trim();
    let refuse = |shown: &str, detail: String| ClientError::InvalidConfig {
        field: "base_url",
        detail: format!("{shown:?} {detail}"),
    };
    let mut url = Url::parse(text).map_err(|error| {
        refuse(
            text,
            format!("is not an absolute URL ({error}); expected e.g. http://127.0.0.1:8787"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(refuse(
            url.as_str(),
            "must not carry a user name or password (shown without them); the token is given \
             separately"
                .to_string(),
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(
            text,
            format!("must use http or https, not {}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse(text, "has no host".to_string()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse(
            text,
            "must not have a query or fragment; give the daemon's base address".to_string(),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A token is sent in a header: 1 or more visible ASCII characters.
fn check_token(token: &Secret) -> Result<(), ClientError> {
    let refuse = |detail: &str| ClientError::InvalidConfig {
        field: "token",
        detail: detail.to_string(),
    };
    if token.expose().trim().is_empty() {
        return Err(refuse("the token is empty"));
    }
    if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "the token holds spaces or characters other than visible ASCII (a token looks like \
             stl_…)",
        ));
    }
    Ok(())
}

/// A date as the API's paths write it.
fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn range(from: NaiveDate, to: NaiveDate) -> Vec<(&'static str, String)> {
    vec![("from", day(from)), ("to", day(to))]
}

/// An error and its sources, innermost last, without repeats.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The start of a body, on one line, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    match text.char_indices().nth(SNIPPET_MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// What a non-2xx answer means to the console.
fn error_from_answer(answer: &Answer) -> ClientError {
    let is_problem_type = answer.header(CONTENT_TYPE).is_some_and(|value| {
        value.starts_with("application/problem+json") || value.starts_with("application/json")
    });
    let problem = is_problem_type
        .then(|| serde_json::from_slice::<ProblemBody>(&answer.body).ok())
        .flatten()
        .filter(|p| p.problem_type.is_some() || p.title.is_some() || p.detail.is_some());
    let reason = reqwest::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("error");
    let detail = problem
        .as_ref()
        .and_then(|p| p.detail.clone())
        .unwrap_or_else(|| reason.to_string());
    let problem_type = problem.as_ref().and_then(|p| p.problem_type.as_deref());
    match answer.status {
        401 => ClientError::Unauthorized { detail },
        403 if problem_type.is_none_or(|t| t == problem_types::FORBIDDEN) => {
            ClientError::Forbidden { detail }
        }
        404 if problem_type.is_none_or(|t| t == problem_types::NOT_FOUND) => {
            ClientError::NotFound { detail }
        }
        300..=399 => ClientError::InvalidResponse(format!(
            "{}: redirected ({}) to {}; use that address as the daemon URL",
            answer.what,
            answer.status,
            answer.header(LOCATION).unwrap_or("nowhere")
        )),
        status => match problem {
            Some(problem) => ClientError::Problem {
                status,
                // RFC 9457: a problem without a type is `about:blank`.
                problem_type: problem
                    .problem_type
                    .unwrap_or_else(|| "about:blank".to_string()),
                title: problem.title.unwrap_or_else(|| reason.to_string()),
                detail,
                retry_after_seconds: answer
                    .header(RETRY_AFTER)
                    .and_then(|value| value.trim().parse().ok()),
                instance: problem.instance,
            },
            None => ClientError::InvalidResponse(format!(
                "{}: {status} {reason} without a problem body: {}",
                answer.what,
                snippet(&answer.body)
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TOKEN: &str = "stl_s3cr3t-t0ken-never-shown";

    fn test_client(base_url: &str) -> Client {
        Client::new(base_url, Secret::new(TOKEN), 2_000).expect("client")
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Answer {
            what: "GET /api/v2/x".into(),
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    fn problem(status: u16, kind: &str, detail: &str) -> Answer {
        let body = json!({
            "type": format!("urn:settle:problem:{kind}"),
            "title": "Title",
            "status": status,
            "detail": detail,
            "instance": "urn:settle:request:r-1",
        });
        answer(
            status,
            &[("content-type", "application/problem+json")],
            &body.to_string(),
        )
    }

    /// A one-connection-at-a-time HTTP server answering every request with `response`; the
    /// request heads it read come back through the channel.
    async fn fake_daemon(
        response: String,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (format!("http://{address}"), received)
    }

    fn http_response(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[track_caller]
    fn assert_hidden(error: &ClientError) {
        let serialized = serde_json::to_string(error).unwrap();
        for shown in [error.to_string(), format!("{error:?}"), serialized] {
            assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
        }
    }

    #[tokio::test]
    async fn the_token_never_appears_in_debug_output_or_error_strings() {
        let client = test_client("http://127.0.0.1:8787");
        let debug = format!("{client:?}");
        assert!(
            !debug.contains(TOKEN) && debug.contains("[redacted]"),
            "{debug}"
        );

        // A URL typed with the token in it, in a user name, or pasted into the URL field.
        for url in [
            format!("http://{TOKEN}@127.0.0.1:8787"),
            format!("http://u:{TOKEN}@127.0.0.1:8787"),
            TOKEN.to_string(),
            format!("ftp://127.0.0.1/{TOKEN}"),
        ] {
            let error = Client::new(&url, Secret::new(TOKEN), 1_000).unwrap_err();
            assert!(matches!(
                error,
                ClientError::InvalidConfig {
                    field: "base_url",
                    ..
                }
            ));
            assert_hidden(&error);
        }

        // A peer that echoes the token in every kind of answer: problem, bare error, redirect.
        let echoes = [
            http_response(
                "401 Unauthorized",
                "application/problem+json",
                &json!({"type": problem_types::UNAUTHORIZED, "title": "Unauthorized",
                        "detail": format!("bad token {TOKEN}")})
                .to_string(),
            ),
            http_response(
                "500 Internal Server Error",
                "application/problem+json",
                &json!({"type": format!("urn:{TOKEN}"), "title": TOKEN, "detail": TOKEN,
                        "instance": TOKEN})
                .to_string(),
            ),
            http_response("502 Bad Gateway", "text/html", &format!("<p>{TOKEN}</p>")),
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://elsewhere/?t={TOKEN}\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            ),
            http_response("200 OK", "application/json", &format!("{{\"{TOKEN}\": 1}}")),
        ];
        let kinds = [
            "unauthorized",
            "problem",
            "invalid_response",
            "invalid_response",
            "invalid_response",
        ];
        for (response, kind) in echoes.into_iter().zip(kinds) {
            let (url, mut heads) = fake_daemon(response).await;
            let error = test_client(&url).verify().await.unwrap_err();
            assert_eq!(error.kind(), kind, "{error}");
            assert!(error.to_string().contains("[redacted]"), "{error}");
            assert_hidden(&error);
            let head = heads.recv().await.unwrap();
            assert!(
                head.to_ascii_lowercase().contains(&format!(
                    "authorization: bearer {}",
                    TOKEN.to_ascii_lowercase()
                )),
                "the token is sent as a bearer token: {head}"
            );
        }
    }

    #[test]
    fn base_urls_are_checked_and_errors_name_the_value() {
        let refused = |url: &str| match Client::new(url, Secret::new(TOKEN), 1_000) {
            Err(ClientError::InvalidConfig {
                field: "base_url",
                detail,
            }) => detail,
            other => panic!("{url}: {other:?}"),
        };
        assert!(refused("ftp://ops.example")
            .contains("\"ftp://ops.example\" must use http or https, not ftp"));
        assert!(refused("127.0.0.1:8787").contains("\"127.0.0.1:8787\" is not an absolute URL"));
        assert!(refused(" ").contains("is not an absolute URL"));
        assert!(refused("http://ops.example/?a=1").contains("query or fragment"));
        let with_password = refused("https://admin:hunter2@ops.example/");
        assert!(
            with_password.contains("\"https://ops.example/\"")
                && !with_password.contains("hunter2"),
            "{with_password}"
        );

        assert_eq!(
            test_client("http://127.0.0.1:8787").base_url(),
            "http://127.0.0.1:8787/"
        );
        let behind_a_proxy = test_client(" https://ops.example/settle ");
        assert_eq!(
            behind_a_proxy
                .url(
                    &[&SETTLEMENT[..], &["2024-03-10", "lines"]],
                    &[("q", "m 1&x".into())]
                )
                .as_str(),
            "https://ops.example/settle/api/v2/finance/settlement/2024-03-10/lines?q=m+1%26x"
        );
        assert_eq!(
            behind_a_proxy
                .url(&[&["finance", "audit"][..]], &[])
                .as_str(),
            "https://ops.example/settle/api/v2/finance/audit"
        );

        for (token, timeout_ms, field) in [
            ("", 1_000, "token"),
            ("stl_a b", 1_000, "token"),
            (TOKEN, 0, "timeout_ms"),
        ] {
            match Client::new("http://127.0.0.1:8787", Secret::new(token), timeout_ms) {
                Err(ClientError::InvalidConfig { field: found, .. }) => assert_eq!(found, field),
                other => panic!("{token:?} {timeout_ms}: {other:?}"),
            }
        }
    }

    #[test]
    fn answers_become_errors_the_console_can_act_on() {
        assert_eq!(
            error_from_answer(&problem(401, "unauthorized", "the token was revoked")),
            ClientError::Unauthorized {
                detail: "the token was revoked".into()
            }
        );
        assert_eq!(
            error_from_answer(&problem(403, "forbidden", "this needs the operator role")),
            ClientError::Forbidden {
                detail: "this needs the operator role".into()
            }
        );
        // Four eyes is not a role problem: its own type is kept.
        let four_eyes = error_from_answer(&problem(403, "approval-refused", "another operator"));
        assert_eq!(
            four_eyes.problem_type(),
            Some(problem_types::APPROVAL_REFUSED)
        );
        assert_eq!(
            error_from_answer(&problem(
                404,
                "not-found",
                "settlement 2024-03-10 has not been run"
            )),
            ClientError::NotFound {
                detail: "settlement 2024-03-10 has not been run".into()
            }
        );
        assert_eq!(
            error_from_answer(&answer(404, &[("content-type", "text/plain")], "nope")),
            ClientError::NotFound {
                detail: "Not Found".into()
            }
        );
        let mut running = problem(409, "already-running", "held by settle-1");
        running.headers.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(
            error_from_answer(&running),
            ClientError::Problem {
                status: 409,
                problem_type: problem_types::ALREADY_RUNNING.into(),
                title: "Title".into(),
                detail: "held by settle-1".into(),
                retry_after_seconds: Some(12),
                instance: Some("urn:settle:request:r-1".into()),
            }
        );
        let untyped = error_from_answer(&answer(
            422,
            &[("content-type", "application/problem+json")],
            r#"{"detail":"reason: a rerun needs a reason"}"#,
        ));
        assert_eq!(untyped.problem_type(), Some("about:blank"));
        let gateway = error_from_answer(&answer(
            502,
            &[("content-type", "text/html")],
            "<h1>Bad\n gateway</h1>",
        ));
        assert_eq!(
            gateway,
            ClientError::InvalidResponse(
                "GET /api/v2/x: 502 Bad Gateway without a problem body: <h1>Bad gateway</h1>"
                    .into()
            )
        );
        let moved = error_from_answer(&answer(301, &[("location", "https://ops.example/")], ""));
        assert!(
            moved.to_string().contains("https://ops.example/"),
            "{moved}"
        );
    }

    #[test]
    fn errors_serialize_with_their_kind_and_fields() {
        let error = ClientError::Problem {
            status: 409,
            problem_type: problem_types::DATE_STILL_OPEN.into(),
            title: "Date still open".into(),
            detail: "2099-01-01 closes later".into(),
            retry_after_seconds: None,
            instance: None,
        };
        let value = serde_json::to_value(&error).unwrap();
        assert_eq!(value["kind"], "problem");
        assert_eq!(value["problem_type"], problem_types::DATE_STILL_OPEN);
        assert_eq!(value["status"], 409);
        assert_eq!(value["message"], error.to_string());
        let timeout = serde_json::to_value(ClientError::Timeout { after_ms: 200 }).unwrap();
        assert_eq!(
            timeout,
            json!({"kind": "timeout", "message": "the Settle daemon did not answer within 200 ms", "after_ms": 200})
        );
    }

    #[test]
    fn fresh_keys_are_distinct_uuid_v4() {
        let (a, b) = (IdempotencyKey::fresh(), IdempotencyKey::fresh());
        assert_ne!(a, b);
        assert_eq!(Uuid::parse_str(a.as_str()).unwrap().get_version_num(), 4);
    }

    #[test]
    fn queries_name_only_what_is_set() {
        assert!(HistoryQuery::default().pairs().is_empty());
        let history = HistoryQuery {
            status: Some(SettlementStatus::Completed),
            from: NaiveDate::from_ymd_opt(2024, 3, 1),
            all_revisions: true,
            per_page: Some(5),
            ..HistoryQuery::default()
        };
        assert_eq!(
            history.pairs(),
            vec![
                ("status", "completed".to_string()),
                ("from", "2024-03-01".to_string()),
                ("all_revisions", "true".to_string()),
                ("per_page", "5".to_string()),
            ]
        );
        let lines = LinesQuery {
            sort: Some(LineSort::NetMinor),
            order: Some(SortOrder::Desc),
            q: Some(String::new()),
            ..LinesQuery::default()
        };
        assert_eq!(
            lines.pairs(),
            vec![
                ("sort", "net_minor".to_string()),
                ("order", "desc".to_string())
            ]
        );
    }
}
