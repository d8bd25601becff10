//! A webhook receiver on a real loopback socket: it verifies every delivery's signature and age
//! with `settle_core::notify::verify`, dedupes by event id, and can be scripted to fail deliveries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use settle_core::notify::{
    verify, SettlementEvent, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use settle_core::secret::Secret;

use crate::http_peers::{serve, Peer};

/// How far a delivery's timestamp may be from the receiver's clock.
pub const TOLERANCE_S: i64 = 300;

/// The path deliveries are POSTed to.
const PATH: &str = "/webhooks/settle";

/// What the receiver does with one delivery, in script order; `Accept` once the script is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Verify the delivery and answer 204 if it is authentic (401 if not, 400 if malformed).
    Accept,
    /// Answer this status without looking at the delivery: the receiver is down or refusing.
    Fail(u16),
}

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<Delivery>,
    /// Distinct events, in the order first accepted.
    events: Vec<SettlementEvent>,
    attempts: u32,
    accepted: u32,
    rejected: u32,
}

struct Shared {
    secret: Secret,
    state: Mutex<ReceiverState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ReceiverState> {
        // A handler that panicked mid-update already failed its test; keep serving the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A webhook endpoint sharing `secret` with the notifier under test.
///
/// It runs on the tokio runtime that starts it: tests that run the `settle` binary as a child
/// process must use a multi-thread runtime so it keeps answering while the test waits.
pub struct WebhookReceiver {
    shared: Arc<Shared>,
    peer: Peer,
}

impl WebhookReceiver {
    pub fn start(secret: Secret) -> WebhookReceiver {
        let shared = Arc::new(Shared {
            secret,
            state: Mutex::default(),
        });
        let router = Router::new()
            .route(PATH, post(receive))
            .with_state(shared.clone());
        WebhookReceiver {
            shared,
            peer: serve(router),
        }
    }

    /// The full URL to configure as the webhook URL.
    pub fn url(&self) -> String {
        format!("{}{PATH}", self.peer.base_url())
    }

    /// Appends behaviours to the script; each delivery consumes one.
    pub fn script(&self, deliveries: impl IntoIterator<Item = Delivery>) {
        self.shared.lock().script.extend(deliveries);
    }

    /// Fails the next `count` deliveries with 500.
    pub fn fail_next(&self, count: usize) {
        self.script(std::iter::repeat_n(Delivery::Fail(500), count));
    }

    /// Distinct accepted events (a redelivered event id appears once), in arrival order.
    pub fn events(&self) -> Vec<SettlementEvent> {
        self.shared.lock().events.clone()
    }

    /// Every POST received, whatever became of it.
    pub fn attempts(&self) -> u32 {
        self.shared.lock().attempts
    }

    /// Deliveries verified and acknowledged, redeliveries included.
    pub fn accepted_count(&self) -> u32 {
        self.shared.lock().accepted
    }

    /// Deliveries refused as unauthentic, stale or malformed (not the scripted failures).
    pub fn rejected_count(&self) -> u32 {
        self.shared.lock().rejected
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = shared.lock();
    state.attempts += 1;
    if let Some(Delivery::Fail(status)) = state.script.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "injected failure").into_response();
    }
    let now_seconds = chrono::Utc::now().timestamp();
    if let Err(error) = verify(
        &shared.secret,
        header(&headers, TIMESTAMP_HEADER),
        header(&headers, SIGNATURE_HEADER),
        &body,
        now_seconds,
        TOLERANCE_S,
    ) {
        state.rejected += 1;
        return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
    }
    let event: SettlementEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(error) => {
            state.rejected += 1;
            return (StatusCode::BAD_REQUEST, format!("not an event: {error}")).into_response();
        }
    };
    if header(&headers, EVENT_ID_HEADER) != Some(event.event_id.as_str()) {
        state.rejected += 1;
        return (
            StatusCode::BAD_REQUEST,
            format!("{EVENT_ID_HEADER} disagrees with the body"),
        )
            .into_response();
    }
    state.accepted += 1;
    if !state.events.iter().any(|e| e.event_id == event.event_id) {
        state.events.push(event);
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_peers::fast_policy;
    use chrono::{Duration, Utc};
    use settle_core::notify::{EventTotals, Notifier, NotifyError, WebhookSettings};
    use settle_core::retry::RetryPolicy;

    const SECRET: &str = "whsec_test_4f2a";

    fn notifier(url: String, secret: &str) -> Notifier {
        Notifier::new(WebhookSettings {
            url,
            secret: Secret::new(secret),
            policy: fast_policy(RetryPolicy::external_api()),
        })
        .expect("a notifier")
    }

    fn event() -> SettlementEvent {
        SettlementEvent {
            event: "settlement.completed".to_string(),
            event_id: "2024-03-10.r1.settlement.completed".to_string(),
            settlement_date: "2024-03-10".parse().unwrap(),
            revision: 1,
            status: "completed".to_string(),
            error: None,
            totals: vec![EventTotals {
                currency: "KWD".to_string(),
                merchant_count: 1,
                transaction_count: 2,
                completed_count: 2,
                failed_count: 0,
                cancelled_count: 0,
                pending_count: 0,
                gross_minor: 31,
                gross: "0.031".to_string(),
                refunds_minor: 0,
                refunds: "0.000".to_string(),
                chargebacks_minor: 0,
                chargebacks: "0.000".to_string(),
                adjustments_minor: 0,
                adjustments: "0.000".to_string(),
                fees_minor: 1,
                fees: "0.001".to_string(),
                net_minor: 30,
                net: "0.030".to_string(),
            }],
        }
    }

    #[tokio::test]
    async fn webhook_delivery_is_verified_and_recorded() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        let report = notifier(receiver.url(), SECRET)
            .send(&event(), Utc::now())
            .await
            .expect("delivered");
        assert_eq!(report.attempts, 1);
        assert_eq!(receiver.events(), vec![event()]);
        assert_eq!((receiver.attempts(), receiver.rejected_count()), (1, 0));
    }

    #[tokio::test]
    async fn webhook_failed_delivery_is_retried_then_accepted() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        receiver.fail_next(1);
        let report = notifier(receiver.url(), SECRET)
            .send(&event(), Utc::now())
            .await
            .expect("delivered on the second attempt");
        assert_eq!(report.attempts, 2);
        assert_eq!(receiver.attempts(), 2);
        assert_eq!(receiver.events(), vec![event()]);
    }

    #[tokio::test]
    async fn webhook_redelivery_is_deduped_by_event_id() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        // The second delivery's first attempt fails, as when an answer is lost and resent.
        receiver.script([Delivery::Accept, Delivery::Fail(500)]);
        let notifier = notifier(receiver.url(), SECRET);
        assert_eq!(
            notifier.send(&event(), Utc::now()).await.unwrap().attempts,
            1
        );
        assert_eq!(
            notifier.send(&event(), Utc::now()).await.unwrap().attempts,
            2
        );
        assert_eq!(receiver.attempts(), 3);
        assert_eq!(receiver.accepted_count(), 2);
        assert_eq!(receiver.events().len(), 1);
    }

    #[tokio::test]
    async fn webhook_wrong_secret_is_rejected_without_retrying() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        let error = notifier(receiver.url(), "whsec_wrong_9c1d")
            .send(&event(), Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                NotifyError::Rejected {
                    status: 401,
                    attempts: 1
                }
            ),
            "{error:?}"
        );
        assert!(!error.to_string().contains("whsec_wrong_9c1d"), "{error}");
        assert_eq!((receiver.attempts(), receiver.rejected_count()), (1, 1));
        assert!(receiver.events().is_empty());
    }

    #[tokio::test]
    async fn webhook_replayed_old_delivery_is_rejected_as_stale() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        // Signed ten minutes ago: authentic, but outside the 300 s tolerance.
        let error = notifier(receiver.url(), SECRET)
            .send(&event(), Utc::now() - Duration::minutes(10))
            .await
            .unwrap_err();
        assert!(
            matches!(error, NotifyError::Rejected { status: 401, .. }),
            "{error:?}"
        );
        assert_eq!(receiver.rejected_count(), 1);
    }

    #[tokio::test]
    async fn webhook_unavailable_after_every_attempt_fails() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        receiver.script([Delivery::Fail(503); 10]);
        let policy = fast_policy(RetryPolicy::external_api());
        let error = notifier(receiver.url(), SECRET)
            .send(&event(), Utc::now())
            .await
            .unwrap_err();
        match error {
            NotifyError::Unavailable { attempts, .. } => {
                assert_eq!(attempts, policy.max_retries + 1)
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(receiver.attempts(), policy.max_retries + 1);
        assert!(receiver.events().is_empty());
    }

    #[tokio::test]
    async fn webhook_refusing_status_is_not_retried() {
        let receiver = WebhookReceiver::start(Secret::new(SECRET));
        receiver.script([Delivery::Fail(410)]);
        let error = notifier(receiver.url(), SECRET)
            .send(&event(), Utc::now())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                NotifyError::Rejected {
                    status: 410,
                    attempts: 1
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn webhook_settings_are_validated() {
        for (url, secret) in [
            ("ftp://example.com/hook", SECRET),
            ("http://user:pw@example.com/hook", SECRET),
            ("https://example.com/hook", ""),
        ] {
            let error = Notifier::new(WebhookSettings {
                url: url.to_string(),
                secret: Secret::new(secret),
                policy: RetryPolicy::external_api(),
            })
            .unwrap_err();
            assert!(matches!(error, NotifyError::Config(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains(":pw@"), "{error}");
        }
    }
}
