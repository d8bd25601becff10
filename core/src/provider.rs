//! The payout provider client over HTTP: creates a payout under its reference as idempotency key
//! (so a retry can never pay twice) and looks payouts up by reference when an answer was lost.
//!
//! Wire protocol:
//! - `POST {base_url}/payouts` with headers `Idempotency-Key: <reference>`,
//!   `Content-Type: application/json`, and `Authorization: Bearer <token>` when a token is
//!   configured; body `{"reference", "merchant_id", "currency", "amount_minor", "amount",
//!   "settlement_date"}` where `amount` is the major-unit decimal string with the currency's
//!   decimals ("12.50", KWD "0.031") and `settlement_date` is `YYYY-MM-DD`. The provider answers
//!   200 or 201 with `{"id", "reference", "status": "accepted"|"paid"|"failed", "amount_minor",
//!   "currency", "failure_reason"?}`. A repeated key returns the original payout (200).
//! - `GET {base_url}/payouts/{reference}` answers 200 with the same JSON, or 404 when the provider
//!   has never seen the reference.
//!
//! 408, 409 (in progress), 423, 425, 429, 5xx, connection failures and attempt timeouts are retried
//! with the same key, honouring `Retry-After`. Only another 4xx (400, 401, 403, 404, 422…) is a
//! refusal ([`ProviderError::Rejected`]: not paid); retries exhausted, a lost or untrustworthy answer
//! leave the outcome unknown. The token is never logged nor put in an error.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::http::{http_client, truncate_detail, validate_url};
use crate::model::{Payout, PayoutStatus};
use crate::money::{format_minor, Currency};
use crate::retry::{
    classify_payment_http_status, classify_reqwest_error, is_payment_refusal, retry,
    Classification, Classify, Idempotence, RetryError, RetryPolicy,
};
use crate::secret::Secret;

/// Where the provider is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when present.
    pub token: Option<Secret>,
    /// Normally [`RetryPolicy::payment`].
    pub policy: RetryPolicy,
}

/// One payout to ask the provider for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutInstruction {
    /// The payout reference, also the idempotency key.
    pub reference: String,
    pub merchant_id: String,
    pub currency: Currency,
    /// Positive minor units.
    pub amount_minor: i64,
    pub settlement_date: NaiveDate,
}

impl PayoutInstruction {
    /// The instruction for a stored payout.
    pub fn from_payout(payout: &Payout) -> PayoutInstruction {
        PayoutInstruction {
            reference: payout.reference.clone(),
            merchant_id: payout.merchant_id.clone(),
            currency: payout.currency,
            amount_minor: payout.amount_minor,
            settlement_date: payout.settlement_date,
        }
    }
}

/// A payout's state at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderPayoutStatus {
    /// Taken on; the money has not moved yet.
    Accepted,
    /// The money reached the merchant.
    Paid,
    /// The provider gave up on it (see `failure_reason`).
    Failed,
}

impl ProviderPayoutStatus {
    /// The wire form: `accepted`, `paid` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderPayoutStatus::Accepted => "accepted",
            ProviderPayoutStatus::Paid => "paid",
            ProviderPayoutStatus::Failed => "failed",
        }
    }

    /// Accepted → sent, paid → confirmed, failed → failed.
    pub fn to_payout_status(self) -> PayoutStatus {
        match self {
            ProviderPayoutStatus::Accepted => PayoutStatus::Sent,
            ProviderPayoutStatus::Paid => PayoutStatus::Confirmed,
            ProviderPayoutStatus::Failed => PayoutStatus::Failed,
        }
    }
}

impl fmt::Display for ProviderPayoutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payout as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayout {
    /// The provider's own id.
    pub provider_payout_id: String,
    pub reference: String,
    pub status: ProviderPayoutStatus,
    pub amount_minor: i64,
    pub currency: Currency,
    pub failure_reason: Option<String>,
}

/// Why a provider call did not give an answer to trust. Messages never include the token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// An explicit refusal (a 4xx other than 408, 409, 423, 425 and 429): the provider did not
    /// take the payout. The only error that means "not paid".
    #[error("the payout provider refused the request with HTTP {status}: {detail}")]
    Rejected { status: u16, detail: String },
    /// Retries exhausted (5xx, 409 in progress, 423, 425…), attempts timed out or the provider
    /// unreachable: a payout being created may or may not exist now; look it up before sending it
    /// again.
    #[error("the payout provider was unavailable after {attempts} attempt(s): {detail}")]
    Unavailable { attempts: u32, detail: String },
    /// An answer that cannot be trusted: unparseable, not echoing the reference, amount or
    /// currency asked for, or an HTTP status that is neither a success nor a refusal (a redirect).
    /// A payout being created may exist.
    #[error("the payout provider answered unexpectedly: {0}")]
    Protocol(String),
    /// Settings or an instruction that cannot work, found before anything was sent.
    #[error("payout provider configuration: {0}")]
    Config(String),
}

/// The POST body.
#[derive(Serialize)]
struct PayoutRequest<'a> {
    reference: &'a str,
    merchant_id: &'a str,
    currency: &'static str,
    amount_minor: i64,
    amount: String,
    settlement_date: NaiveDate,
}

/// The answer of both POST and GET; other fields the provider adds are ignored.
#[derive(Deserialize)]
struct PayoutAnswer {
    id: String,
    reference: String,
    status: ProviderPayoutStatus,
    amount_minor: i64,
    currency: String,
    #[serde(default)]
    failure_reason: Option<String>,
}

impl PayoutAnswer {
    fn parse(body: &[u8]) -> Result<ProviderPayout, String> {
        let answer: PayoutAnswer = serde_json::from_slice(body).map_err(|error| {
            format!(
                "the answer is not a payout ({error}): {}",
                truncate_detail(&String::from_utf8_lossy(body))
            )
        })?;
        if answer.id.trim().is_empty() {
            return Err(format!("payout {} has no provider id", answer.reference));
        }
        let currency = Currency::from_code(&answer.currency).map_err(|error| {
            format!(
                "payout {} has an unusable currency: {error}",
                answer.reference
            )
        })?;
        Ok(ProviderPayout {
            provider_payout_id: answer.id,
            reference: answer.reference,
            status: answer.status,
            amount_minor: answer.amount_minor,
            currency,
            failure_reason: answer.failure_reason,
        })
    }
}

/// One failed attempt.
#[derive(Debug)]
enum AttemptError {
    /// An HTTP answer other than success (and other than 404 for a lookup).
    Status {
        status: u16,
        retry_after: Option<String>,
        detail: String,
    },
    /// Stripped of its URL (`without_url`) when made.
    Transport(reqwest::Error),
    /// A success answer that cannot be trusted.
    Protocol(String),
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Status { status, detail, .. } => write!(f, "HTTP {status}: {detail}"),
            AttemptError::Transport(error) => error.fmt(f),
            AttemptError::Protocol(message) => f.write_str(message),
        }
    }
}

impl Classify for AttemptError {
    fn classify(&self) -> Classification {
        match self {
            AttemptError::Status {
                status,
                retry_after,
                ..
            } => classify_payment_http_status(*status, retry_after.as_deref()),
            AttemptError::Transport(error) => classify_reqwest_error(error),
            // The same request would get the same answer.
            AttemptError::Protocol(_) => Classification::Permanent,
        }
    }
}

impl From<RetryError<AttemptError>> for ProviderError {
    fn from(error: RetryError<AttemptError>) -> ProviderError {
        let attempts = error.attempts();
        match error {
            RetryError::Permanent {
                error: AttemptError::Status { status, detail, .. },
                ..
            } if is_payment_refusal(status) => ProviderError::Rejected { status, detail },
            RetryError::Permanent {
                error: AttemptError::Status { status, detail, .. },
                ..
            } => ProviderError::Protocol(format!(
                "HTTP {status} is neither a success nor a refusal: {detail}"
            )),
            RetryError::Permanent {
                error: AttemptError::Protocol(message),
                ..
            } => ProviderError::Protocol(message),
            RetryError::Permanent {
                error: AttemptError::Transport(error),
                ..
            } if error.is_builder() => {
                ProviderError::Config(format!("cannot build the request: {error}"))
            }
            RetryError::Permanent {
                error: AttemptError::Transport(error),
                ..
            } => ProviderError::Protocol(error.to_string()),
            other => ProviderError::Unavailable {
                attempts,
                detail: other.to_string(),
            },
        }
    }
}

/// The payout provider's HTTP client. Cheap to share by reference; one connection pool.
pub struct PayoutProvider {
    client: reqwest::Client,
    base_url: reqwest::Url,
    token: Option<Secret>,
    policy: RetryPolicy,
}

impl fmt::Debug for PayoutProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayoutProvider")
            .field("base_url", &self.base_url.as_str())
            .field("token", &self.token)
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

impl PayoutProvider {
    /// A client for `settings`; refuses a base URL that is not absolute http(s), carries
    /// credentials, a query or a fragment, and an empty token.
    pub fn new(settings: ProviderSettings) -> Result<PayoutProvider, ProviderError> {
        let base_url =
            validate_url("provider base_url", &settings.base_url).map_err(ProviderError::Config)?;
        if base_url.query().is_some()
            || base_url.fragment().is_some()
            || base_url.cannot_be_a_base()
        {
            return Err(ProviderError::Config(format!(
                "provider base_url {:?} must be a plain base such as https://provider.example/v1",
                settings.base_url
            )));
        }
        if settings.token.as_ref().is_some_and(Secret::is_empty) {
            return Err(ProviderError::Config(
                "the provider token is empty; leave it unset to send no Authorization header"
                    .to_string(),
            ));
        }
        let client = http_client(&settings.policy).map_err(ProviderError::Config)?;
        Ok(PayoutProvider {
            client,
            base_url,
            token: settings.token,
            policy: settings.policy,
        })
    }

    /// The longest one call (a create or a lookup, with all its retries) can have a request in
    /// flight: the retry policy's deadline.
    pub fn call_deadline(&self) -> chrono::Duration {
        let deadline_ms = u32::try_from(self.policy.deadline_ms).unwrap_or(u32::MAX);
        chrono::Duration::milliseconds(i64::from(deadline_ms))
    }

    /// `{base_url}/payouts[/{reference}]`, the reference percent-encoded as one path segment.
    fn endpoint(&self, reference: Option<&str>) -> reqwest::Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            // `new` refused cannot-be-a-base URLs, so this always runs.
            segments.pop_if_empty().push("payouts");
            if let Some(reference) = reference {
                segments.push(reference);
            }
        }
        url
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            // reqwest marks the header sensitive, so its own Debug output hides it too.
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// The Status error of a non-success answer, its body cut short and scrubbed of the token
    /// should the provider echo it.
    async fn failed_answer(&self, response: reqwest::Response) -> AttemptError {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        let mut detail = truncate_detail(&body);
        if let Some(token) = &self.token {
            detail = detail.replace(token.expose(), "[redacted]");
        }
        if detail.is_empty() {
            detail = "no details given".to_string();
        }
        AttemptError::Status {
            status,
            retry_after,
            detail,
        }
    }

    /// Creates the payout, or returns the one the provider already has under this reference.
    ///
    /// Retried per the settings' policy with the reference as idempotency key. Only `Rejected`
    /// means the provider did not take it; `Unavailable` and `Protocol` mean it may exist (look it
    /// up).
    pub async fn create(
        &self,
        instruction: &PayoutInstruction,
    ) -> Result<ProviderPayout, ProviderError> {
        let reference = instruction.reference.as_str();
        if reference.trim().is_empty() {
            return Err(ProviderError::Config(
                "a payout needs a reference: it is the idempotency key".to_string(),
            ));
        }
        if instruction.amount_minor <= 0 {
            return Err(ProviderError::Config(format!(
                "payout {reference} has a non-positive amount ({} minor units)",
                instruction.amount_minor
            )));
        }
        let body = PayoutRequest {
            reference,
            merchant_id: &instruction.merchant_id,
            currency: instruction.currency.code(),
            amount_minor: instruction.amount_minor,
            amount: format_minor(instruction.amount_minor, instruction.currency),
            settlement_date: instruction.settlement_date,
        };
        let body = serde_json::to_vec(&body).map_err(|error| {
            ProviderError::Config(format!("cannot encode payout {reference}: {error}"))
        })?;
        let url = self.endpoint(None);
        let outcome = retry(
            &self.policy,
            Idempotence::Keyed(instruction.reference.clone()),
            "payout create",
            |attempt| {
                let request = self
                    .authorised(self.client.post(url.clone()))
                    .header("Idempotency-Key", reference)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                async move {
                    tracing::debug!(reference, attempt, "sending payout");
                    let response = request
                        .send()
                        .await
                        .map_err(|error| AttemptError::Transport(error.without_url()))?;
                    let status = response.status().as_u16();
                    tracing::debug!(reference, attempt, status, "payout answer");
                    if !response.status().is_success() {
                        return Err(self.failed_answer(response).await);
                    }
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|error| AttemptError::Transport(error.without_url()))?;
                    let payout = PayoutAnswer::parse(&bytes).map_err(AttemptError::Protocol)?;
                    check_echo(instruction, &payout).map_err(AttemptError::Protocol)?;
                    Ok((payout, attempt))
                }
            },
        )
        .await;
        match outcome {
            Ok((payout, attempts)) => {
                tracing::info!(
                    reference,
                    attempts,
                    provider_payout_id = %payout.provider_payout_id,
                    status = %payout.status,
                    "payout created"
                );
                Ok(payout)
            }
            Err(error) => {
                let error = ProviderError::from(error);
                tracing::warn!(reference, error = %error, "payout not created");
                Err(error)
            }
        }
    }

    /// The provider's payout under `reference`, or `None` if it has never seen it.
    pub async fn lookup(&self, reference: &str) -> Result<Option<ProviderPayout>, ProviderError> {
        let url = self.endpoint(Some(reference));
        let outcome = retry(
            &self.policy,
            Idempotence::Idempotent,
            "payout lookup",
            |attempt| {
                let request = self.authorised(self.client.get(url.clone()));
                async move {
                    let response = request
                        .send()
                        .await
                        .map_err(|error| AttemptError::Transport(error.without_url()))?;
                    let status = response.status().as_u16();
                    tracing::debug!(reference, attempt, status, "payout lookup answer");
                    if status == 404 {
                        return Ok(None);
                    }
                    if !response.status().is_success() {
                        return Err(self.failed_answer(response).await);
                    }
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|error| AttemptError::Transport(error.without_url()))?;
                    let payout = PayoutAnswer::parse(&bytes).map_err(AttemptError::Protocol)?;
                    if payout.reference != reference {
                        return Err(AttemptError::Protocol(format!(
                            "asked for payout {reference}, got {}",
                            payout.reference
                        )));
                    }
                    Ok(Some(payout))
                }
            },
        )
        .await;
        match outcome {
            Ok(found) => {
                match &found {
                    Some(payout) => tracing::info!(
                        reference,
                        provider_payout_id = %payout.provider_payout_id,
                        status = %payout.status,
                        "payout looked up"
                    ),
                    None => tracing::info!(reference, "payout unknown to the provider"),
                }
                Ok(found)
            }
            Err(error) => {
                let error = ProviderError::from(error);
                tracing::warn!(reference, error = %error, "payout lookup failed");
                Err(error)
            }
        }
    }
}

/// The answer must be about the payout asked for: same reference, amount and currency.
fn check_echo(instruction: &PayoutInstruction, payout: &ProviderPayout) -> Result<(), String> {
    let reference = &instruction.reference;
    if payout.reference != *reference {
        return Err(format!(
            "sent payout {reference}, the answer is about {}",
            payout.reference
        ));
    }
    if payout.currency != instruction.currency || payout.amount_minor != instruction.amount_minor {
        return Err(format!(
            "sent payout {reference} of {} {}, the provider recorded {} {}",
            format_minor(instruction.amount_minor, instruction.currency),
            instruction.currency,
            format_minor(payout.amount_minor, payout.currency),
            payout.currency
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_url: &str) -> ProviderSettings {
        ProviderSettings {
            base_url: base_url.to_string(),
            token: Some(Secret::new("tok_live_secret")),
            policy: RetryPolicy::payment(),
        }
    }

    fn instruction() -> PayoutInstruction {
        PayoutInstruction {
            reference: "2024-03-10.USD.r1.m/1 x".to_string(),
            merchant_id: "m/1 x".to_string(),
            currency: Currency::from_code("USD").unwrap(),
            amount_minor: 1250,
            settlement_date: "2024-03-10".parse().unwrap(),
        }
    }

    #[test]
    fn only_an_explicit_refusal_is_rejected() {
        use crate::retry::PolicyName;
        let status = |status: u16| AttemptError::Status {
            status,
            retry_after: None,
            detail: "x".into(),
        };
        let permanent = |error| RetryError::Permanent {
            policy: PolicyName::Payment,
            operation: "payout create".into(),
            attempts: 1,
            error,
        };
        let exhausted = |error| RetryError::Exhausted {
            policy: PolicyName::Payment,
            operation: "payout create".into(),
            attempts: 3,
            error,
        };
        for refusal in [400, 401, 403, 404, 422] {
            assert!(
                matches!(
                    ProviderError::from(permanent(status(refusal))),
                    ProviderError::Rejected { status, .. } if status == refusal
                ),
                "{refusal}"
            );
        }
        for unknown in [409, 423, 425, 429, 500, 503] {
            assert!(status(unknown).classify().is_retryable(), "{unknown}");
            assert!(
                matches!(
                    ProviderError::from(exhausted(status(unknown))),
                    ProviderError::Unavailable { attempts: 3, .. }
                ),
                "{unknown}"
            );
        }
        // A redirect is not a refusal: the outcome is unknown.
        assert!(matches!(
            ProviderError::from(permanent(status(302))),
            ProviderError::Protocol(_)
        ));
    }

    #[test]
    fn provider_statuses_map_to_payout_statuses() {
        assert_eq!(
            ProviderPayoutStatus::Accepted.to_payout_status(),
            PayoutStatus::Sent
        );
        assert_eq!(
            ProviderPayoutStatus::Paid.to_payout_status(),
            PayoutStatus::Confirmed
        );
        assert_eq!(
            ProviderPayoutStatus::Failed.to_payout_status(),
            PayoutStatus::Failed
        );
        assert_eq!(
            serde_json::to_string(&ProviderPayoutStatus::Accepted).unwrap(),
            "\"accepted\""
        );
    }

    #[test]
    fn provider_base_urls_are_validated_without_leaking_credentials() {
        for bad in [
            "ftp://provider.example",
            "not a url",
            "https://provider.example/v1?x=1",
            "https://user:hunter2@provider.example",
        ] {
            let error = PayoutProvider::new(settings(bad)).unwrap_err();
            assert!(
                matches!(error, ProviderError::Config(_)),
                "{bad}: {error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let empty_token = ProviderSettings {
            token: Some(Secret::new("")),
            ..settings("https://provider.example")
        };
        assert!(PayoutProvider::new(empty_token).is_err());
        let provider = PayoutProvider::new(settings("https://provider.example/v1/")).unwrap();
        assert!(!format!("{provider:?}").contains("tok_live_secret"));
    }

    #[test]
    fn provider_endpoints_encode_the_reference_as_one_segment() {
        let provider = PayoutProvider::new(settings("https://provider.example/v1/")).unwrap();
        assert_eq!(
            provider.endpoint(None).as_str(),
            "https://provider.example/v1/payouts"
        );
        assert_eq!(
            provider.endpoint(Some("2024-03-10.USD.r1.m/1 x")).as_str(),
            "https://provider.example/v1/payouts/2024-03-10.USD.r1.m%2F1%20x"
        );
        let bare = PayoutProvider::new(settings("http://127.0.0.1:9")).unwrap();
        assert_eq!(bare.endpoint(None).as_str(), "http://127.0.0.1:9/payouts");
    }

    #[test]
    fn provider_request_body_uses_exact_amount_strings() {
        let instruction = instruction();
        let body = PayoutRequest {
            reference: &instruction.reference,
            merchant_id: &instruction.merchant_id,
            currency: instruction.currency.code(),
            amount_minor: instruction.amount_minor,
            amount: format_minor(instruction.amount_minor, instruction.currency),
            settlement_date: instruction.settlement_date,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "reference": "2024-03-10.USD.r1.m/1 x",
                "merchant_id": "m/1 x",
                "currency": "USD",
                "amount_minor": 1250,
                "amount": "12.50",
                "settlement_date": "2024-03-10",
            })
        );
    }

    #[test]
    fn provider_answers_must_echo_what_was_sent() {
        let answer = br#"{"id":"po_1","reference":"2024-03-10.USD.r1.m/1 x","status":"paid",
            "amount_minor":1250,"currency":"USD","extra":true}"#;
        let payout = PayoutAnswer::parse(answer).unwrap();
        assert_eq!(payout.status, ProviderPayoutStatus::Paid);
        assert_eq!(payout.failure_reason, None);
        assert_eq!(check_echo(&instruction(), &payout), Ok(()));
        let more = ProviderPayout {
            amount_minor: 1251,
            ..payout.clone()
        };
        let mismatch = check_echo(&instruction(), &more).unwrap_err();
        assert!(
            mismatch.contains("12.50 USD") && mismatch.contains("12.51 USD"),
            "{mismatch}"
        );
        let other = ProviderPayout {
            reference: "other".to_string(),
            ..payout
        };
        assert!(check_echo(&instruction(), &other).is_err());
        for bad in [
            &br#"{"id":"po_1"}"#[..],
            br#"not json"#,
            br#"{"id":"","reference":"r","status":"paid","amount_minor":1,"currency":"USD"}"#,
            br#"{"id":"p","reference":"r","status":"lost","amount_minor":1,"currency":"USD"}"#,
            br#"{"id":"p","reference":"r","status":"paid","amount_minor":1,"currency":"XXX"}"#,
            br#"{"id":"p","reference":"r","status":"paid","amount_minor":1.5,"currency":"USD"}"#,
        ] {
            assert!(
                PayoutAnswer::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
