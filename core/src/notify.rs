//! Signed webhook notifications: a settlement revision's outcome POSTed as JSON to one receiver,
//! signed with HMAC-SHA256 over the timestamp and the exact body so the receiver can trust and date it.
//!
//! Wire protocol: `POST {url}` with `Content-Type: application/json`, the body a [`SettlementEvent`],
//! and three headers:
//! - `Settle-Event-Id`: the event id (`{date}.r{revision}.a{attempt}.{event}`); the receiver
//!   dedupes by it, since a delivery whose answer was lost is sent again. The run attempt is part of
//!   it: a revision that fails, is retried and fails again sends two distinct failure events.
//! - `Settle-Timestamp`: unix seconds when the attempt was signed.
//! - `Settle-Signature`: `v1=` + lowercase hex of HMAC-SHA256(key = the shared secret,
//!   message = `{timestamp}.` followed by the body bytes).
//!
//! A receiver calls [`verify`]: it recomputes the signature, compares in constant time, and refuses
//! timestamps further than its tolerance from its own clock (replays of old deliveries).
//! Any 2xx answer means delivered; 408, 429 and 5xx are retried; any other answer is a refusal.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::http::{http_client, validate_url};
use crate::model::{CurrencyTotals, Settlement, SettlementStatus};
use crate::money::format_minor;
use crate::retry::{
    classify_http_status, classify_reqwest_error, retry, Classification, Classify, Idempotence,
    RetryError, RetryPolicy,
};
use crate::secret::Secret;

pub const TIMESTAMP_HEADER: &str = "Settle-Timestamp";
pub const SIGNATURE_HEADER: &str = "Settle-Signature";
pub const EVENT_ID_HEADER: &str = "Settle-Event-Id";

/// The only signature scheme so far; the prefix leaves room for another without ambiguity.
const SIGNATURE_PREFIX: &str = "v1=";

pub const EVENT_COMPLETED: &str = "settlement.completed";
pub const EVENT_FAILED: &str = "settlement.failed";

type HmacSha256 = Hmac<Sha256>;

/// Where and how to deliver notifications.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: Secret,
    pub policy: RetryPolicy,
}

/// The JSON body of a notification: one settlement revision's outcome and totals.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SettlementEvent {
    /// `settlement.completed` or `settlement.failed`.
    pub event: String,
    /// `{date}.r{revision}.a{attempt}.{event}` ([`event_id`]): one id per outcome of one run
    /// attempt, stable across redeliveries of it, so the receiver can dedupe.
    pub event_id: String,
    pub settlement_date: NaiveDate,
    pub revision: u32,
    /// The settlement's status (`completed`, `failed`, ...).
    pub status: String,
    /// Why the revision failed, when it did.
    pub error: Option<String>,
    /// Per-currency totals; empty unless completed.
    pub totals: Vec<EventTotals>,
}

/// A currency's day totals, each amount both as exact minor units and as a major-unit decimal
/// string with the currency's decimals ("2.50", KWD "0.031"), never as a float.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EventTotals {
    pub currency: String,
    pub merchant_count: u64,
    pub transaction_count: u64,
    pub completed_count: u64,
    pub failed_count: u64,
    pub cancelled_count: u64,
    pub pending_count: u64,
    pub gross_minor: i64,
    pub gross: String,
    pub refunds_minor: i64,
    pub refunds: String,
    pub chargebacks_minor: i64,
    pub chargebacks: String,
    pub adjustments_minor: i64,
    pub adjustments: String,
    pub fees_minor: i64,
    pub fees: String,
    pub net_minor: i64,
    pub net: String,
}

impl EventTotals {
    fn from_totals(totals: &CurrencyTotals) -> EventTotals {
        let currency = totals.currency;
        let figures = &totals.figures;
        let major = |minor| format_minor(minor, currency);
        EventTotals {
            currency: currency.code().to_string(),
            merchant_count: totals.merchant_count,
            transaction_count: figures.transaction_count,
            completed_count: figures.completed_count,
            failed_count: figures.failed_count,
            cancelled_count: figures.cancelled_count,
            pending_count: figures.pending_count,
            gross_minor: figures.gross_minor,
            gross: major(figures.gross_minor),
            refunds_minor: figures.refunds_minor,
            refunds: major(figures.refunds_minor),
            chargebacks_minor: figures.chargebacks_minor,
            chargebacks: major(figures.chargebacks_minor),
            adjustments_minor: figures.adjustments_minor,
            adjustments: major(figures.adjustments_minor),
            fees_minor: figures.fees_minor,
            fees: major(figures.fees_minor),
            net_minor: figures.net_minor,
            net: major(figures.net_minor),
        }
    }
}

/// The id of the `event` that ended run attempt `attempt` of a settlement revision. The attempt
/// number (the settlement's `attempts` counter, bumped by every claim) tells apart the failures of a
/// revision retried more than once, while every redelivery of one event keeps its id.
pub fn event_id(settlement_date: NaiveDate, revision: u32, attempt: u32, event: &str) -> String {
    format!("{settlement_date}.r{revision}.a{attempt}.{event}")
}

impl SettlementEvent {
    /// The event for a settlement revision: `settlement.completed` when it completed, otherwise
    /// `settlement.failed` carrying the settlement's error.
    pub fn from_settlement(settlement: &Settlement) -> SettlementEvent {
        let completed = settlement.status == SettlementStatus::Completed;
        let event = if completed {
            EVENT_COMPLETED
        } else {
            EVENT_FAILED
        };
        SettlementEvent {
            event: event.to_string(),
            event_id: event_id(
                settlement.settlement_date,
                settlement.revision,
                settlement.attempts,
                event,
            ),
            settlement_date: settlement.settlement_date,
            revision: settlement.revision,
            status: settlement.status.as_str().to_string(),
            error: if completed {
                None
            } else {
                settlement.error.clone()
            },
            totals: settlement
                .totals
                .iter()
                .map(EventTotals::from_totals)
                .collect(),
        }
    }
}

fn mac(secret: &Secret, timestamp_seconds: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Settle-Signature` value for `body` sent at `timestamp_seconds`: `v1=` + lowercase hex of
/// HMAC-SHA256(key = secret, message = `{timestamp_seconds}.` + body).
pub fn sign(secret: &Secret, timestamp_seconds: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp_seconds, body).finalize().into_bytes();
    format!("{SIGNATURE_PREFIX}{}", hex::encode(tag))
}

/// Why a delivery was not trusted. Messages never include the secret or the expected signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {TIMESTAMP_HEADER} header is not a unix timestamp in seconds")]
    BadTimestamp,
    #[error("the delivery was signed {age_seconds} s from now, outside the tolerance (a replay or a skewed clock)")]
    Stale { age_seconds: i64 },
    #[error(
        "the {SIGNATURE_HEADER} header does not match the body (wrong secret or altered body)"
    )]
    BadSignature,
}

/// Checks a delivery: the signature must be the HMAC of `{timestamp}.{body}` under `secret`
/// (compared in constant time), and the timestamp within `tolerance_seconds` of `now_seconds` either way, so
/// an old delivery replayed later is refused.
pub fn verify(
    secret: &Secret,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_seconds: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let timestamp_header = timestamp_header.ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
    let signature_header = signature_header.ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
    let timestamp_seconds: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let tag = signature_header
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
        .ok_or(VerifyError::BadSignature)?;
    // Authenticity first: a forged delivery is reported as forged, whatever its timestamp says.
    mac(secret, timestamp_seconds, body)
        .verify_slice(&tag)
        .map_err(|_| VerifyError::BadSignature)?;
    let age_seconds = now_seconds.saturating_sub(timestamp_seconds);
    if age_seconds.unsigned_abs() > tolerance_seconds.unsigned_abs() {
        return Err(VerifyError::Stale { age_seconds });
    }
    Ok(())
}

/// A delivered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub attempts: u32,
}

/// Why a notification was not delivered. Messages never include the secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the webhook receiver refused the notification with HTTP {status} after {attempts} attempt(s)")]
    Rejected { status: u16, attempts: u32 },
    #[error("the webhook receiver was unavailable after {attempts} attempt(s): {detail}")]
    Unavailable { attempts: u32, detail: String },
    #[error("webhook configuration: {0}")]
    Config(String),
}

/// One failed delivery attempt.
#[derive(Debug)]
enum AttemptError {
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Stripped of its URL (`without_url`) when made.
    Transport(reqwest::Error),
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Status { status, .. } => write!(f, "HTTP {status}"),
            AttemptError::Transport(error) => error.fmt(f),
        }
    }
}

impl Classify for AttemptError {
    fn classify(&self) -> Classification {
        match self {
            AttemptError::Status {
                status,
                retry_after,
            } => classify_http_status(*status, retry_after.as_deref()),
            AttemptError::Transport(error) => classify_reqwest_error(error),
        }
    }
}

/// Delivers signed notifications to one receiver.
pub struct Notifier {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Secret,
    policy: RetryPolicy,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &self.url.as_str())
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(settings: WebhookSettings) -> Result<Notifier, NotifyError> {
        let url = validate_url("webhook url", &settings.url).map_err(NotifyError::Config)?;
        if settings.secret.is_empty() {
            return Err(NotifyError::Config(
                "the webhook secret is empty; deliveries would be unsigned in effect".to_string(),
            ));
        }
        let client = http_client(&settings.policy).map_err(NotifyError::Config)?;
        Ok(Notifier {
            client,
            url,
            secret: settings.secret,
            policy: settings.policy,
        })
    }

    /// POSTs `event`, retrying per the policy with the event id as idempotency key. Each attempt
    /// is signed with its own timestamp (`now` plus the time spent so far), so a delivery retried
    /// late is not refused as a replay.
    pub async fn send(
        &self,
        event: &SettlementEvent,
        now: DateTime<Utc>,
    ) -> Result<DeliveryReport, NotifyError> {
        let body = serde_json::to_vec(event).map_err(|error| {
            NotifyError::Config(format!("cannot encode event {}: {error}", event.event_id))
        })?;
        let started = tokio::time::Instant::now();
        let outcome = retry(
            &self.policy,
            Idempotence::Keyed(event.event_id.clone()),
            "webhook delivery",
            |attempt| {
                let elapsed_seconds =
                    i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
                let timestamp_seconds = now.timestamp().saturating_add(elapsed_seconds);
                let request = self
                    .client
                    .post(self.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(EVENT_ID_HEADER, event.event_id.as_str())
                    .header(TIMESTAMP_HEADER, timestamp_seconds.to_string())
                    .header(
                        SIGNATURE_HEADER,
                        sign(&self.secret, timestamp_seconds, &body),
                    )
                    .body(body.clone());
                let event_id = event.event_id.as_str();
                async move {
                    // Without the URL: it is configuration, and the log line names the event.
                    let response = request
                        .send()
                        .await
                        .map_err(|error| AttemptError::Transport(error.without_url()))?;
                    let status = response.status().as_u16();
                    tracing::debug!(event_id, attempt, status, "webhook delivery answered");
                    if response.status().is_success() {
                        return Ok(attempt);
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    Err(AttemptError::Status {
                        status,
                        retry_after,
                    })
                }
            },
        )
        .await;
        match outcome {
            Ok(attempts) => {
                tracing::info!(event_id = %event.event_id, attempts, "webhook delivered");
                Ok(DeliveryReport { attempts })
            }
            Err(error) => {
                let failure = delivery_failure(error);
                tracing::warn!(event_id = %event.event_id, error = %failure, "webhook not delivered");
                Err(failure)
            }
        }
    }
}

/// A refusal (a permanent HTTP status) or, for everything else, unavailability.
fn delivery_failure(error: RetryError<AttemptError>) -> NotifyError {
    let attempts = error.attempts();
    match error {
        RetryError::Permanent {
            error: AttemptError::Status { status, .. },
            ..
        } => NotifyError::Rejected { status, attempts },
        other => NotifyError::Unavailable {
            attempts,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SettlementFigures;
    use crate::money::Currency;

    const BODY: &[u8] = b"{}";
    const TIMESTAMP_S: i64 = 1_700_000_000;

    fn key() -> Secret {
        Secret::new("k")
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k',b'1700000000.{}',hashlib.sha256).hexdigest())"
        assert_eq!(
            sign(&key(), TIMESTAMP_S, BODY),
            "v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let signature = sign(&key(), TIMESTAMP_S, BODY);
        let timestamp = TIMESTAMP_S.to_string();
        assert_eq!(
            verify(
                &key(),
                Some(&timestamp),
                Some(&signature),
                BODY,
                TIMESTAMP_S + 5,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_wrong_secrets_and_missing_headers_are_refused() {
        let signature = sign(&key(), TIMESTAMP_S, BODY);
        let timestamp = TIMESTAMP_S.to_string();
        let check = |secret: &Secret, ts: Option<&str>, sig: Option<&str>, body: &[u8]| {
            verify(secret, ts, sig, body, TIMESTAMP_S, 300)
        };
        assert_eq!(
            check(&key(), Some(&timestamp), Some(&signature), b"{ }"),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(
                &Secret::new("other"),
                Some(&timestamp),
                Some(&signature),
                BODY
            ),
            Err(VerifyError::BadSignature)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = (TIMESTAMP_S + 1).to_string();
        assert_eq!(
            check(&key(), Some(&moved), Some(&signature), BODY),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(&key(), None, Some(&signature), BODY),
            Err(VerifyError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(&key(), Some(&timestamp), None, BODY),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
        assert_eq!(
            check(&key(), Some("yesterday"), Some(&signature), BODY),
            Err(VerifyError::BadTimestamp)
        );
        for malformed in [
            "",
            "c6ef47",
            "v1=zz",
            "v2=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146",
        ] {
            assert_eq!(
                check(&key(), Some(&timestamp), Some(malformed), BODY),
                Err(VerifyError::BadSignature),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn old_and_future_timestamps_are_refused_as_replays() {
        let ten_minutes_ago = TIMESTAMP_S - 600;
        let signature = sign(&key(), ten_minutes_ago, BODY);
        assert_eq!(
            verify(
                &key(),
                Some(&ten_minutes_ago.to_string()),
                Some(&signature),
                BODY,
                TIMESTAMP_S,
                300
            ),
            Err(VerifyError::Stale { age_seconds: 600 })
        );
        let ten_minutes_ahead = TIMESTAMP_S + 600;
        let signature = sign(&key(), ten_minutes_ahead, BODY);
        assert_eq!(
            verify(
                &key(),
                Some(&ten_minutes_ahead.to_string()),
                Some(&signature),
                BODY,
                TIMESTAMP_S,
                300
            ),
            Err(VerifyError::Stale { age_seconds: -600 })
        );
    }

    #[test]
    fn verify_errors_never_show_the_secret_or_signature() {
        let secret = Secret::new("whsec_do_not_print");
        let signature = sign(&secret, TIMESTAMP_S, BODY);
        let error = verify(
            &secret,
            Some(&TIMESTAMP_S.to_string()),
            Some(&signature),
            b"x",
            TIMESTAMP_S,
            300,
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("whsec_do_not_print"), "{message}");
        assert!(!message.contains(&signature[3..]), "{message}");
    }

    /// Built through serde rather than a struct literal: fields added to `Settlement` later
    /// (optional ones default to `None`) do not break this test.
    fn settlement(status: SettlementStatus, error: Option<&str>) -> Settlement {
        let calendar = crate::calendar::BusinessCalendar::default();
        let date: NaiveDate = "2024-03-10".parse().unwrap();
        let window = calendar.window(date).unwrap();
        serde_json::from_value(serde_json::json!({
            "settlement_date": date,
            "revision": 2,
            "status": status,
            "trigger": crate::model::RunTrigger::Manual,
            "requested_by": "cli:test",
            "reason": "late refund",
            "calendar": calendar,
            "fee_schedule": crate::model::fees::FeeSchedule::default(),
            "window": window,
            "lease_version": 3,
            "attempts": 1,
            "created_at": window.end,
            "started_at": window.end,
            "error": error,
            "totals": [],
        }))
        .expect("a settlement")
    }

    fn totals(code: &str, figures: SettlementFigures) -> CurrencyTotals {
        CurrencyTotals {
            currency: Currency::from_code(code).unwrap(),
            merchant_count: 2,
            figures,
        }
    }

    #[test]
    fn event_totals_carry_exact_decimal_strings() {
        let usd = totals(
            "USD",
            SettlementFigures {
                transaction_count: 4,
                completed_count: 3,
                failed_count: 1,
                gross_minor: 1000,
                refunds_minor: 250,
                fees_minor: 500,
                net_minor: 250,
                ..SettlementFigures::default()
            },
        );
        let kwd = totals(
            "KWD",
            SettlementFigures {
                gross_minor: 31,
                adjustments_minor: -5,
                net_minor: 26,
                ..SettlementFigures::default()
            },
        );
        let usd = EventTotals::from_totals(&usd);
        assert_eq!(usd.currency, "USD");
        assert_eq!(usd.merchant_count, 2);
        assert_eq!(
            (usd.transaction_count, usd.completed_count, usd.failed_count),
            (4, 3, 1)
        );
        assert_eq!(usd.gross, "10.00");
        assert_eq!(usd.refunds, "2.50");
        assert_eq!(usd.chargebacks, "0.00");
        assert_eq!(usd.fees, "5.00");
        assert_eq!((usd.net_minor, usd.net.as_str()), (250, "2.50"));
        let kwd = EventTotals::from_totals(&kwd);
        assert_eq!(kwd.gross, "0.031");
        assert_eq!(kwd.adjustments, "-0.005");
        assert_eq!(kwd.net, "0.026");
    }

    #[test]
    fn events_follow_the_settlement_status() {
        let mut completed = settlement(SettlementStatus::Completed, None);
        completed.totals = vec![totals("USD", SettlementFigures::default())];
        let event = SettlementEvent::from_settlement(&completed);
        assert_eq!(event.event, "settlement.completed");
        assert_eq!(event.event_id, "2024-03-10.r2.a1.settlement.completed");
        assert_eq!((event.revision, event.status.as_str()), (2, "completed"));
        assert_eq!(event.error, None);
        assert_eq!(event.totals.len(), 1);

        let failed = settlement(SettlementStatus::Failed, Some("store unavailable"));
        let event = SettlementEvent::from_settlement(&failed);
        assert_eq!(event.event, "settlement.failed");
        assert_eq!(event.event_id, "2024-03-10.r2.a1.settlement.failed");
        assert_eq!(event.error.as_deref(), Some("store unavailable"));
        assert!(event.totals.is_empty());
        // The same outcome read again (a redelivery) keeps its id.
        assert_eq!(
            SettlementEvent::from_settlement(&failed).event_id,
            event.event_id
        );

        // The wire form round-trips, with amounts as strings and minor units as integers.
        let json = serde_json::to_value(SettlementEvent::from_settlement(&completed)).unwrap();
        assert_eq!(json["settlement_date"], "2024-03-10");
        assert_eq!(json["totals"][0]["net"], "0.00");
        assert_eq!(json["totals"][0]["net_minor"], 0);
        let back: SettlementEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, SettlementEvent::from_settlement(&completed));
    }

    #[test]
    fn a_revision_failing_again_after_a_retry_gets_a_new_event_id() {
        let first = settlement(SettlementStatus::Failed, Some("provider down"));
        let mut retried = first.clone();
        retried.attempts = 2;
        let first_id = SettlementEvent::from_settlement(&first).event_id;
        let second_id = SettlementEvent::from_settlement(&retried).event_id;
        assert_ne!(
            first_id, second_id,
            "a receiver deduping by id would drop the second failure"
        );
        assert_eq!(second_id, "2024-03-10.r2.a2.settlement.failed");
        let mut completed = retried.clone();
        completed.status = SettlementStatus::Completed;
        assert_eq!(
            SettlementEvent::from_settlement(&completed).event_id,
            "2024-03-10.r2.a2.settlement.completed"
        );
    }
}
