//! A fake payout provider on a real loopback socket: its own ledger, idempotency by key, lookups,
//! optional bearer-token auth, and a script of injected failures consumed one per POST.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::{json, Value};
use settle_core::money::{format_minor, Currency};
use settle_core::provider::ProviderPayoutStatus;

use crate::http_peers::{serve, Peer};

/// What the provider does with one POST /payouts, in script order; `Normal` once the script is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Record the payout (or find it by key) and answer 201 (200 for a repeated key).
    Normal,
    /// Answer 500 without recording anything.
    Fail500,
    /// Answer 503 with `Retry-After: SECONDS` without recording anything.
    Fail503WithRetryAfter(u64),
    /// Answer 422 without recording anything: a permanent refusal.
    Reject422,
    /// Record the payout, then answer only after `delay_ms`: longer than the client's attempt
    /// timeout, this is the answer lost after the provider committed.
    CommitThenHang { delay_ms: u64 },
    /// Record the payout, then answer 500: the provider committed but says it failed.
    CommitThenFail500,
    /// Record a new payout with this status (a repeated key answers the stored one unchanged).
    Status(ProviderPayoutStatus),
    /// Record the payout but echo an amount one minor unit higher: a broken provider.
    WrongAmount,
    /// Record the payout and keep working on it for `hang_ms` before answering (201): past the
    /// client's attempt timeout, the client sees a timeout although the provider committed. While
    /// it works, every POST with the same Idempotency-Key gets 409 "in progress" (what the IETF
    /// Idempotency-Key draft prescribes) without consuming the script.
    CommitThenConflict409 { hang_ms: u64 },
    /// Answer 409 "a request with this key is in progress" without recording anything.
    Conflict409,
    /// Answer 423 Locked without recording anything.
    Locked423,
    /// Answer 425 Too Early without recording anything.
    TooEarly425,
    /// Wait `delay_ms` (within the client's attempt timeout) with nothing recorded, then record and
    /// answer as `Normal`: a slow provider, so a concurrent sender's lookup still finds nothing.
    SlowCommit { delay_ms: u64 },
}

/// One payout in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The provider's own id (`po_N`).
    pub id: String,
    pub reference: String,
    pub merchant_id: String,
    pub currency: Currency,
    pub amount_minor: i64,
    pub settlement_date: NaiveDate,
    pub status: ProviderPayoutStatus,
    pub failure_reason: Option<String>,
}

impl LedgerEntry {
    fn to_json(&self, amount_minor: i64) -> Value {
        let mut answer = json!({
            "id": self.id,
            "reference": self.reference,
            "merchant_id": self.merchant_id,
            "status": self.status.as_str(),
            "amount_minor": amount_minor,
            "amount": format_minor(amount_minor, self.currency),
            "currency": self.currency.code(),
            "settlement_date": self.settlement_date.to_string(),
        });
        if let Some(reason) = &self.failure_reason {
            answer["failure_reason"] = json!(reason);
        }
        answer
    }
}

#[derive(Default)]
struct ProviderState {
    ledger: Vec<LedgerEntry>,
    script: VecDeque<Behaviour>,
    post_count: u32,
    get_count: u32,
    /// The bearer token every request must carry, once required.
    token: Option<String>,
    next_id: u64,
    /// Keys the provider is still working on (`CommitThenConflict409`), until when.
    in_progress: HashMap<String, Instant>,
    /// POSTs being handled right now, per Idempotency-Key.
    in_flight: HashMap<String, u32>,
    /// The most POSTs ever handled at once for one key.
    max_in_flight: u32,
}

type Shared = Arc<Mutex<ProviderState>>;

fn lock(state: &Shared) -> MutexGuard<'_, ProviderState> {
    // A handler that panicked mid-update already failed its test; keep serving the others.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fake payout provider serving `POST /payouts` and `GET /payouts/{reference}`.
///
/// It runs on the tokio runtime that starts it: tests that run the `settle` binary as a child
/// process must use a multi-thread runtime so it keeps answering while the test waits.
pub struct ProviderServer {
    state: Shared,
    peer: Peer,
}

impl ProviderServer {
    /// Starts a provider with an empty ledger, no script and no token required.
    pub fn start() -> ProviderServer {
        let state: Shared = Arc::default();
        let router = Router::new()
            .route("/payouts", post(create_payout))
            .route("/payouts/{reference}", get(lookup_payout))
            .with_state(state.clone());
        ProviderServer {
            state,
            peer: serve(router),
        }
    }

    /// `http://127.0.0.1:PORT`: the client's `base_url`.
    pub fn base_url(&self) -> &str {
        self.peer.base_url()
    }

    /// From now on every request must carry `Authorization: Bearer TOKEN` (401 otherwise).
    pub fn require_token(&self, token: &str) {
        lock(&self.state).token = Some(token.to_string());
    }

    /// Appends behaviours to the script; each POST that passes authentication consumes one.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        lock(&self.state).script.extend(behaviours);
    }

    /// Changes a recorded payout's status (e.g. to `Paid` once the money has moved), as later
    /// lookups will report it. False if the provider has no such payout.
    pub fn set_status(&self, reference: &str, status: ProviderPayoutStatus) -> bool {
        let mut state = lock(&self.state);
        match state.ledger.iter_mut().find(|e| e.reference == reference) {
            Some(entry) => {
                entry.status = status;
                entry.failure_reason =
                    (status == ProviderPayoutStatus::Failed).then(|| "marked failed".to_string());
                true
            }
            None => false,
        }
    }

    /// Every payout recorded, in the order they were first created.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        lock(&self.state).ledger.clone()
    }

    /// Every POST received, including refused and failed ones.
    pub fn post_count(&self) -> u32 {
        lock(&self.state).post_count
    }

    /// Every GET received.
    pub fn get_count(&self) -> u32 {
        lock(&self.state).get_count
    }

    /// The most POSTs with one Idempotency-Key that were ever being handled at the same time (an
    /// attempt its client gave up on counts for as long as the server still works on it): 1 when
    /// no two senders ever had the same payout in flight at once.
    pub fn max_in_flight_per_key(&self) -> u32 {
        lock(&self.state).max_in_flight
    }

    /// The minor units the ledger pays out in `currency`: every recorded payout but failed ones.
    pub fn paid_total(&self, currency: Currency) -> i64 {
        lock(&self.state)
            .ledger
            .iter()
            .filter(|e| e.currency == currency && e.status != ProviderPayoutStatus::Failed)
            .map(|e| e.amount_minor)
            .sum()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// None when the request carries the required token (or none is required).
fn unauthorized(state: &ProviderState, headers: &HeaderMap) -> Option<Response> {
    let token = state.token.as_ref()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if presented == Some(format!("Bearer {token}").as_str()) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

/// Why a POST is refused: small, unlike a `Response`, to travel in a `Result`.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// A POST body checked the way a strict provider would: every field present and consistent.
struct Instruction {
    reference: String,
    merchant_id: String,
    currency: Currency,
    amount_minor: i64,
    settlement_date: NaiveDate,
}

fn parse_instruction(headers: &HeaderMap, body: &[u8]) -> Result<Instruction, Refusal> {
    let unprocessable = |message| Refusal(StatusCode::UNPROCESSABLE_ENTITY, message);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/json",
        ));
    }
    let Some(key) = headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()) else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is required",
        ));
    };
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "the body is not JSON"))?;
    let text = |field: &str| body[field].as_str().map(str::to_string);
    let (Some(reference), Some(merchant_id), Some(currency), Some(amount), Some(date)) = (
        text("reference"),
        text("merchant_id"),
        text("currency"),
        text("amount"),
        text("settlement_date"),
    ) else {
        return Err(unprocessable("a required field is missing"));
    };
    let Some(amount_minor) = body["amount_minor"].as_i64() else {
        return Err(unprocessable("amount_minor must be an integer"));
    };
    if key != reference {
        return Err(unprocessable("Idempotency-Key must equal the reference"));
    }
    let currency = Currency::from_code(&currency).map_err(|_| unprocessable("unknown currency"))?;
    if amount_minor <= 0 {
        return Err(unprocessable("amount_minor must be positive"));
    }
    if amount != format_minor(amount_minor, currency) {
        return Err(unprocessable("amount disagrees with amount_minor"));
    }
    let settlement_date = date
        .parse()
        .map_err(|_| unprocessable("settlement_date must be YYYY-MM-DD"))?;
    Ok(Instruction {
        reference,
        merchant_id,
        currency,
        amount_minor,
        settlement_date,
    })
}

/// Records the instruction unless its key is known. Returns the entry and whether it was new, or
/// a 422 when a known key comes back with a different payout.
fn record(
    state: &mut ProviderState,
    instruction: Instruction,
    status: ProviderPayoutStatus,
) -> Result<(LedgerEntry, bool), Refusal> {
    if let Some(existing) = state
        .ledger
        .iter()
        .find(|e| e.reference == instruction.reference)
    {
        let same = existing.merchant_id == instruction.merchant_id
            && existing.currency == instruction.currency
            && existing.amount_minor == instruction.amount_minor
            && existing.settlement_date == instruction.settlement_date;
        if !same {
            return Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key reused with a different payout",
            ));
        }
        return Ok((existing.clone(), false));
    }
    state.next_id += 1;
    let entry = LedgerEntry {
        id: format!("po_{}", state.next_id),
        reference: instruction.reference,
        merchant_id: instruction.merchant_id,
        currency: instruction.currency,
        amount_minor: instruction.amount_minor,
        settlement_date: instruction.settlement_date,
        status,
        failure_reason: (status == ProviderPayoutStatus::Failed)
            .then(|| "injected failure".to_string()),
    };
    state.ledger.push(entry.clone());
    Ok((entry, true))
}

fn payout_answer(entry: &LedgerEntry, created: bool, amount_minor: i64) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(entry.to_json(amount_minor))).into_response()
}

/// Counts a POST in flight for its key until dropped (also when the client goes away and the
/// server abandons the request).
struct InFlight {
    state: Shared,
    key: String,
}

impl InFlight {
    /// Takes the state's lock briefly: call it before locking the state for anything else.
    fn start(state: &Shared, key: &str) -> InFlight {
        let mut guard = lock(state);
        let count = guard.in_flight.entry(key.to_string()).or_insert(0);
        *count += 1;
        let count = *count;
        guard.max_in_flight = guard.max_in_flight.max(count);
        InFlight {
            state: state.clone(),
            key: key.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(count) = state.in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
    }
}

async fn create_payout(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Dropped after every state guard below (declared first, dropped last).
    let _in_flight = InFlight::start(&shared, &key);
    // Decide everything under the lock, then release it before any deliberate delay.
    let behaviour = {
        let mut state = lock(&shared);
        state.post_count += 1;
        if let Some(refused) = unauthorized(&state, &headers) {
            return refused;
        }
        let now = Instant::now();
        state.in_progress.retain(|_, until| *until > now);
        if state.in_progress.contains_key(&key) {
            return (
                StatusCode::CONFLICT,
                Json(json!({ "error": "a request with this Idempotency-Key is in progress" })),
            )
                .into_response();
        }
        let behaviour = state.script.pop_front().unwrap_or(Behaviour::Normal);
        match behaviour {
            Behaviour::Fail500 => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure")
            }
            Behaviour::Fail503WithRetryAfter(seconds) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, seconds.to_string())],
                    Json(json!({ "error": "injected overload" })),
                )
                    .into_response();
            }
            Behaviour::Reject422 => {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "injected refusal")
            }
            Behaviour::Conflict409 => {
                return error(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is in progress",
                )
            }
            Behaviour::Locked423 => return error(StatusCode::LOCKED, "the payout is locked"),
            Behaviour::TooEarly425 => return error(StatusCode::TOO_EARLY, "too early"),
            _ => {}
        }
        behaviour
    };
    if let Behaviour::SlowCommit { delay_ms } = behaviour {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let (answer, hang_ms) = {
        let mut state = lock(&shared);
        let instruction = match parse_instruction(&headers, &body) {
            Ok(instruction) => instruction,
            Err(refused) => return refused.into_response(),
        };
        let status = match behaviour {
            Behaviour::Status(status) => status,
            _ => ProviderPayoutStatus::Accepted,
        };
        let (entry, created) = match record(&mut state, instruction, status) {
            Ok(recorded) => recorded,
            Err(refused) => return refused.into_response(),
        };
        match behaviour {
            Behaviour::CommitThenHang { delay_ms } => {
                (payout_answer(&entry, created, entry.amount_minor), delay_ms)
            }
            Behaviour::CommitThenConflict409 { hang_ms } => {
                state.in_progress.insert(
                    entry.reference.clone(),
                    Instant::now() + Duration::from_millis(hang_ms),
                );
                (payout_answer(&entry, created, entry.amount_minor), hang_ms)
            }
            Behaviour::CommitThenFail500 => (
                error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure"),
                0,
            ),
            Behaviour::WrongAmount => (payout_answer(&entry, created, entry.amount_minor + 1), 0),
            _ => (payout_answer(&entry, created, entry.amount_minor), 0),
        }
    };
    if hang_ms > 0 {
        tokio::time::sleep(Duration::from_millis(hang_ms)).await;
    }
    answer
}

async fn lookup_payout(
    State(state): State<Shared>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = lock(&state);
    state.get_count += 1;
    if let Some(refused) = unauthorized(&state, &headers) {
        return refused;
    }
    match state.ledger.iter().find(|e| e.reference == reference) {
        Some(entry) => (StatusCode::OK, Json(entry.to_json(entry.amount_minor))).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown payout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_peers::fast_policy;
    use settle_core::model::PayoutStatus;
    use settle_core::provider::{
        PayoutInstruction, PayoutProvider, ProviderError, ProviderSettings,
    };
    use settle_core::retry::RetryPolicy;
    use settle_core::secret::Secret;
    use std::time::Instant;

    const TOKEN: &str = "tok_test_8d31c7";

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn kwd() -> Currency {
        Currency::from_code("KWD").unwrap()
    }

    fn client(server: &ProviderServer, token: Option<&str>) -> PayoutProvider {
        PayoutProvider::new(ProviderSettings {
            base_url: server.base_url().to_string(),
            token: token.map(Secret::new),
            policy: fast_policy(RetryPolicy::payment()),
        })
        .expect("a provider client")
    }

    fn instruction(merchant_id: &str, currency: Currency, amount_minor: i64) -> PayoutInstruction {
        PayoutInstruction {
            reference: format!("2024-03-10.{currency}.r1.{merchant_id}"),
            merchant_id: merchant_id.to_string(),
            currency,
            amount_minor,
            settlement_date: "2024-03-10".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn provider_create_records_once_and_a_repeat_returns_the_same_payout() {
        let server = ProviderServer::start();
        let provider = client(&server, None);
        let payout_instruction = instruction("m-1", usd(), 1250);
        let first = provider.create(&payout_instruction).await.unwrap();
        assert_eq!(first.reference, payout_instruction.reference);
        assert_eq!((first.amount_minor, first.currency), (1250, usd()));
        assert_eq!(first.status.to_payout_status(), PayoutStatus::Sent);
        let again = provider.create(&payout_instruction).await.unwrap();
        assert_eq!(again, first, "same provider id, same payout");
        let ledger = server.ledger();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].id, first.provider_payout_id);
        assert_eq!(ledger[0].merchant_id, "m-1");
        assert_eq!(server.post_count(), 2);
    }

    #[tokio::test]
    async fn provider_500_is_retried_with_the_same_key() {
        let server = ProviderServer::start();
        server.script([Behaviour::Fail500]);
        let payout = client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap();
        assert_eq!(server.post_count(), 2);
        assert_eq!(server.ledger().len(), 1);
        assert_eq!(server.ledger()[0].id, payout.provider_payout_id);
    }

    #[tokio::test]
    async fn provider_answer_lost_after_commit_is_recovered_by_the_key() {
        let server = ProviderServer::start();
        // 1 s is well past the 300 ms attempt timeout: the client gives up on that answer and
        // retries; the provider finds the key and returns what it recorded.
        server.script([Behaviour::CommitThenHang { delay_ms: 1_000 }]);
        let provider = client(&server, None);
        let hung = provider
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap();
        server.script([Behaviour::CommitThenFail500]);
        let failed = provider
            .create(&instruction("m-2", usd(), 700))
            .await
            .unwrap();
        let ledger = server.ledger();
        assert_eq!(ledger.len(), 2, "one entry per payout: {ledger:?}");
        assert_eq!(ledger[0].id, hung.provider_payout_id);
        assert_eq!(ledger[1].id, failed.provider_payout_id);
        assert_eq!(server.post_count(), 4);
        assert_eq!(server.paid_total(usd()), 1950);
    }

    #[tokio::test]
    async fn provider_retry_after_is_honoured() {
        let server = ProviderServer::start();
        // Retry-After is whole seconds on the wire, so 1 s is the smallest wish to test; the
        // policy's own backoff (≤ 50 ms) would retry much sooner.
        server.script([Behaviour::Fail503WithRetryAfter(1)]);
        let started = Instant::now();
        client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= std::time::Duration::from_secs(1), "{elapsed:?}");
        assert_eq!(server.post_count(), 2);
        assert_eq!(server.ledger().len(), 1);
    }

    #[tokio::test]
    async fn provider_422_is_rejected_after_one_post() {
        let server = ProviderServer::start();
        server.script([Behaviour::Reject422]);
        let error = client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap_err();
        match &error {
            ProviderError::Rejected { status, detail } => {
                assert_eq!(*status, 422);
                assert!(detail.contains("injected refusal"), "{detail}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(server.post_count(), 1);
        assert!(server.ledger().is_empty());
    }

    #[tokio::test]
    async fn provider_409_423_425_are_retried_with_the_same_key_never_a_refusal() {
        for behaviour in [
            Behaviour::Conflict409,
            Behaviour::Locked423,
            Behaviour::TooEarly425,
        ] {
            let server = ProviderServer::start();
            server.script([behaviour.clone()]);
            let payout = client(&server, None)
                .create(&instruction("m-1", usd(), 1250))
                .await
                .unwrap_or_else(|error| panic!("{behaviour:?}: {error:?}"));
            assert_eq!(server.post_count(), 2, "{behaviour:?}");
            assert_eq!(server.ledger().len(), 1, "{behaviour:?}");
            assert_eq!(server.ledger()[0].id, payout.provider_payout_id);
        }
    }

    #[tokio::test]
    async fn provider_in_progress_after_a_lost_answer_is_unavailable_not_rejected() {
        let server = ProviderServer::start();
        // Committed, then busy for 3 s: attempt 1 times out (300 ms), both retries get 409.
        server.script([Behaviour::CommitThenConflict409 { hang_ms: 3_000 }]);
        let error = client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap_err();
        match &error {
            ProviderError::Unavailable { attempts, detail } => {
                assert_eq!(*attempts, 3);
                assert!(detail.contains("409"), "{detail}");
            }
            other => panic!("expected Unavailable (outcome unknown), got {other:?}"),
        }
        assert_eq!(server.post_count(), 3);
        assert_eq!(server.ledger().len(), 1, "the provider did take it");
    }

    #[tokio::test]
    async fn provider_in_flight_posts_are_counted_per_key() {
        let server = ProviderServer::start();
        server.script([Behaviour::SlowCommit { delay_ms: 200 }]);
        let provider = client(&server, None);
        let same = instruction("m-1", usd(), 1250);
        let (first, second) = tokio::join!(provider.create(&same), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            provider.create(&same).await
        });
        assert_eq!(first.unwrap(), second.unwrap());
        assert_eq!(server.max_in_flight_per_key(), 2);
        assert_eq!(server.ledger().len(), 1);
    }

    #[tokio::test]
    async fn provider_refuses_a_reused_key_with_a_different_amount() {
        let server = ProviderServer::start();
        let provider = client(&server, None);
        provider
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap();
        let error = provider
            .create(&instruction("m-1", usd(), 1300))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Rejected { status: 422, .. }),
            "{error:?}"
        );
        assert_eq!(server.ledger().len(), 1);
        assert_eq!(server.paid_total(usd()), 1250);
    }

    #[tokio::test]
    async fn provider_lookup_follows_the_ledger() {
        let server = ProviderServer::start();
        let provider = client(&server, None);
        let payout_instruction = instruction("m-1", kwd(), 31);
        assert_eq!(
            provider
                .lookup(&payout_instruction.reference)
                .await
                .unwrap(),
            None
        );
        let created = provider.create(&payout_instruction).await.unwrap();
        let found = provider
            .lookup(&payout_instruction.reference)
            .await
            .unwrap()
            .expect("known");
        assert_eq!(found, created);
        assert!(server.set_status(&payout_instruction.reference, ProviderPayoutStatus::Paid));
        let paid = provider
            .lookup(&payout_instruction.reference)
            .await
            .unwrap()
            .expect("known");
        assert_eq!(paid.status, ProviderPayoutStatus::Paid);
        assert_eq!(paid.status.to_payout_status(), PayoutStatus::Confirmed);
        assert!(!server.set_status("never-sent", ProviderPayoutStatus::Paid));
        assert_eq!(server.get_count(), 3);
    }

    #[tokio::test]
    async fn provider_reports_scripted_statuses_and_odd_references() {
        let server = ProviderServer::start();
        let provider = client(&server, None);
        server.script([Behaviour::Status(ProviderPayoutStatus::Failed)]);
        // A merchant id with a slash and a space still travels as one path segment.
        let odd = instruction("m/1 x", usd(), 500);
        let failed = provider.create(&odd).await.unwrap();
        assert_eq!(failed.status.to_payout_status(), PayoutStatus::Failed);
        assert_eq!(failed.failure_reason.as_deref(), Some("injected failure"));
        let found = provider
            .lookup(&odd.reference)
            .await
            .unwrap()
            .expect("known");
        assert_eq!(found.reference, odd.reference);
        // Failed payouts move no money.
        assert_eq!(server.paid_total(usd()), 0);
    }

    #[tokio::test]
    async fn provider_unavailable_after_every_attempt_fails() {
        let server = ProviderServer::start();
        server.script(std::iter::repeat_n(Behaviour::Fail500, 10));
        let policy = fast_policy(RetryPolicy::payment());
        let error = client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap_err();
        match error {
            ProviderError::Unavailable { attempts, .. } => {
                assert_eq!(attempts, policy.max_retries + 1)
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(server.post_count(), policy.max_retries + 1);
        assert!(server.ledger().is_empty());
    }

    #[tokio::test]
    async fn provider_unreachable_is_unavailable() {
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let provider = PayoutProvider::new(ProviderSettings {
            base_url: format!("http://127.0.0.1:{closed_port}"),
            token: None,
            policy: fast_policy(RetryPolicy::payment()),
        })
        .unwrap();
        let error = provider
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Unavailable { attempts: 3, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn provider_answer_with_another_amount_is_a_protocol_error() {
        let server = ProviderServer::start();
        server.script([Behaviour::WrongAmount]);
        let error = client(&server, None)
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap_err();
        match &error {
            ProviderError::Protocol(message) => {
                assert!(message.contains("12.51"), "{message}")
            }
            other => panic!("expected Protocol, got {other:?}"),
        }
        // Not retried: the same request would get the same answer.
        assert_eq!(server.post_count(), 1);
    }

    #[tokio::test]
    async fn provider_token_is_required_and_never_shown() {
        let server = ProviderServer::start();
        server.require_token(TOKEN);
        let payout_instruction = instruction("m-1", usd(), 1250);
        for token in [None, Some("tok_wrong_55aa")] {
            let error = client(&server, token)
                .create(&payout_instruction)
                .await
                .unwrap_err();
            assert!(
                matches!(error, ProviderError::Rejected { status: 401, .. }),
                "{error:?}"
            );
            let shown = format!("{error} {error:?}");
            assert!(
                !shown.contains("tok_wrong_55aa") && !shown.contains(TOKEN),
                "{shown}"
            );
        }
        assert!(server.ledger().is_empty());
        let provider = client(&server, Some(TOKEN));
        provider.create(&payout_instruction).await.unwrap();
        assert!(provider
            .lookup(&payout_instruction.reference)
            .await
            .unwrap()
            .is_some());
        let error = client(&server, None)
            .lookup(&payout_instruction.reference)
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::Rejected { status: 401, .. }));
        assert_eq!(server.ledger().len(), 1);
    }

    #[tokio::test]
    async fn provider_paid_total_sums_per_currency() {
        let server = ProviderServer::start();
        let provider = client(&server, None);
        provider
            .create(&instruction("m-1", usd(), 1250))
            .await
            .unwrap();
        provider
            .create(&instruction("m-2", usd(), 250))
            .await
            .unwrap();
        provider
            .create(&instruction("m-1", kwd(), 31))
            .await
            .unwrap();
        assert_eq!(server.paid_total(usd()), 1500);
        assert_eq!(server.paid_total(kwd()), 31);
        server.set_status(
            &instruction("m-2", usd(), 250).reference,
            ProviderPayoutStatus::Failed,
        );
        assert_eq!(server.paid_total(usd()), 1250);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn provider_server_answers_while_the_test_thread_blocks() {
        // As tests that run the `settle` binary with `std::process::Command` do: this thread
        // blocks on a plain socket while the server answers from the runtime's other worker.
        use std::io::{Read, Write};
        let server = ProviderServer::start();
        let reference = instruction("m-1", usd(), 1250).reference;
        let address = server.base_url().trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /payouts/{reference} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert_eq!(server.get_count(), 1);
    }
}
