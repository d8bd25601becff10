//! Sending payouts: every pending or unknown payout goes to the provider under its deterministic
//! reference. An unknown one (sent, answer lost) is looked up first, never blindly sent again.
//!
//! A payout is marked `unknown` durably before its request leaves, so a crash mid-send leaves a
//! payout that the next run looks up instead of paying twice: provider idempotency keys expire
//! (often after 24 hours), so a late retry must not rely on them alone.
//!
//! Only the provider's explicit refusal makes a payout `failed`; any other answer that is not a
//! success (409 in progress, 423, 425, 5xx, a timeout, a lost or untrustworthy answer) leaves it
//! `unknown`, resolved only by looking it up.
//!
//! One sender at a time: a sender claims a payout in the store (compare-and-set, with an expiry
//! later than its provider call can last) before it looks it up or sends it, renews the claim
//! just before the request leaves, and releases it with the outcome. A sender that finds another's
//! live claim waits for it to end (that sender finishing, or its claim expiring after a crash)
//! rather than have the payout in flight twice.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::json;
use tracing::Instrument as _;

use crate::model::{AuditAction, AuditEvent, AuditOutcome, Fence, Payout, PayoutStatus};
use crate::provider::{PayoutInstruction, PayoutProvider, ProviderError, ProviderPayout};
use crate::store::{
    PayoutClaim, PayoutClaimOutcome, PayoutFilter, PayoutUpdate, SharedStore, StoreError,
};
use crate::telemetry;
use crate::time::Clock;

/// A failed payout is looked up again by `check` once it has been failed this long: a provider
/// that later paid it after all is believed.
pub const FAILED_RECHECK_AFTER_HOURS: i64 = 24;

/// What a claim adds to the longest provider call, for the store writes around it and clock skew
/// between hosts sharing a store.
const CLAIM_MARGIN_MS: i64 = 2_000;

/// How often a sender waiting for another's claim looks again.
const CLAIM_POLL_MS: u64 = 200;

/// What one sending pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Accepted or confirmed by the provider in this pass (including found by lookup).
    pub settled: u32,
    /// Rejected by the provider: not paid; a rerun pays the difference anew.
    pub rejected: u32,
    /// Still pending or unknown, with why: the run that sent them is not finished.
    pub unsettled: Vec<(String, String)>,
}

/// One payout's status as a check changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub reference: String,
    pub from: PayoutStatus,
    pub to: PayoutStatus,
}

/// What `check` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Sent payouts the provider now reports paid (confirmed) or failed.
    pub changed: Vec<StatusChange>,
    /// Payouts failed for longer than [`FAILED_RECHECK_AFTER_HOURS`] that the provider reports
    /// paid or accepted after all (audited as `payout.recheck`).
    pub recovered: Vec<StatusChange>,
    /// Payouts that could not be looked up, with why.
    pub errors: Vec<(String, String)>,
}

/// The settlement run a sending pass belongs to: before each request leaves, the pass renews the
/// run's lease under its fence, so a run that lost its lease (frozen, then taken over) stops
/// before it calls the provider, and a long pass keeps its lease alive.
#[derive(Debug, Clone)]
pub struct RunLease {
    pub fence: Fence,
    pub lease_duration: Duration,
}

/// What became of one payout in a sending pass.
enum Outcome {
    /// It reached this status (or another sender or a hold moved it there).
    Settled(PayoutStatus),
    /// Still pending or unknown, with why.
    Unsettled(String),
}

/// The claim a sender tried to take.
enum Claim {
    /// Ours; `seen` is the status before the claim (an `unknown` one may have been sent).
    Held { seen: PayoutStatus },
    /// It no longer awaits sending.
    Moved(PayoutStatus),
    /// Another sender still has it, with why.
    Elsewhere(String),
}

/// Sends payouts through the provider and records what happened.
pub struct PayoutSender {
    store: SharedStore,
    provider: Arc<PayoutProvider>,
    clock: Arc<dyn Clock>,
    /// Who this sender is in its claims: unique per sender.
    sender_id: String,
}

impl PayoutSender {
    pub fn new(store: SharedStore, provider: Arc<PayoutProvider>, clock: Arc<dyn Clock>) -> Self {
        PayoutSender {
            store,
            provider,
            clock,
            sender_id: format!(
                "pid{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// Names this sender in its claims (it must be unique among senders sharing a store).
    pub fn with_sender_id(mut self, sender_id: impl Into<String>) -> Self {
        self.sender_id = sender_id.into();
        self
    }

    /// How long a claim lasts: longer than one provider call can have a request in flight.
    fn claim_duration(&self) -> Duration {
        self.provider.call_deadline() + Duration::milliseconds(CLAIM_MARGIN_MS)
    }

    /// Sends every payout awaiting sending, optionally of one date or one merchant; under a
    /// settlement run's `lease` when one is sending (`LeaseLost` once another run took over).
    pub async fn send_awaiting(
        &self,
        settlement_date: Option<NaiveDate>,
        merchant_id: Option<String>,
        lease: Option<&RunLease>,
    ) -> Result<SendReport, StoreError> {
        let mut report = SendReport::default();
        for payout in self
            .store
            .payouts_awaiting(settlement_date, merchant_id)
            .await?
        {
            match self.settle_one(&payout, lease).await? {
                Outcome::Settled(PayoutStatus::Failed) => report.rejected += 1,
                Outcome::Settled(PayoutStatus::Sent | PayoutStatus::Confirmed) => {
                    report.settled += 1
                }
                // Held meanwhile: it waits for its release.
                Outcome::Settled(_) => {}
                Outcome::Unsettled(why) => report.unsettled.push((payout.reference.clone(), why)),
            }
        }
        Ok(report)
    }

    /// Asks the provider about every `sent` payout of a date and records what it says (`confirmed`
    /// once paid, `failed` if it gave up). Returns how many changed.
    pub async fn refresh_sent(&self, settlement_date: NaiveDate) -> Result<u32, StoreError> {
        let mut report = CheckReport::default();
        self.refresh_sent_into(Some(settlement_date), &mut report)
            .await?;
        Ok(u32::try_from(report.changed.len()).unwrap_or(u32::MAX))
    }

    /// `settle payouts check`: looks up the `sent` payouts of a date (or of every date) and
    /// records what the provider says, then looks up the ones `failed` for longer than
    /// [`FAILED_RECHECK_AFTER_HOURS`] (by when they were last changed) and believes a provider
    /// that reports one paid (→ `confirmed`) or accepted (→ `sent`) after all, audited under
    /// `actor`. A failed payout the provider still reports failed, or does not know, stays failed.
    pub async fn check(
        &self,
        settlement_date: Option<NaiveDate>,
        actor: &str,
    ) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        self.refresh_sent_into(settlement_date, &mut report).await?;
        self.recheck_failed_into(settlement_date, actor, &mut report)
            .await?;
        Ok(report)
    }

    async fn refresh_sent_into(
        &self,
        settlement_date: Option<NaiveDate>,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let sent = self
            .store
            .payouts_with_status(&PayoutFilter {
                status: PayoutStatus::Sent,
                settlement_date,
                updated_before: None,
            })
            .await?;
        for payout in sent {
            let Some(found) = self.look_up(&payout, report).await else {
                continue;
            };
            let status = found.status.to_payout_status();
            if status != PayoutStatus::Sent
                && self
                    .update(
                        &payout,
                        PayoutStatus::Sent,
                        status,
                        Some(found.provider_payout_id),
                        found.failure_reason,
                    )
                    .await?
                    .is_some()
            {
                telemetry::payout_outcome(status);
                report.changed.push(StatusChange {
                    reference: payout.reference.clone(),
                    from: PayoutStatus::Sent,
                    to: status,
                });
            }
        }
        Ok(())
    }

    async fn recheck_failed_into(
        &self,
        settlement_date: Option<NaiveDate>,
        actor: &str,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let failed = self
            .store
            .payouts_with_status(&PayoutFilter {
                status: PayoutStatus::Failed,
                settlement_date,
                updated_before: Some(now - Duration::hours(FAILED_RECHECK_AFTER_HOURS)),
            })
            .await?;
        for payout in failed {
            let Some(found) = self.look_up(&payout, report).await else {
                continue;
            };
            let status = found.status.to_payout_status();
            if status == PayoutStatus::Failed {
                continue;
            }
            let provider_payout_id = found.provider_payout_id.clone();
            if self
                .update(
                    &payout,
                    PayoutStatus::Failed,
                    status,
                    Some(provider_payout_id.clone()),
                    None,
                )
                .await?
                .is_none()
            {
                continue;
            }
            telemetry::payout_outcome(status);
            tracing::warn!(
                reference = %payout.reference,
                status = %status,
                "a payout recorded failed is {} per the provider", found.status
            );
            let event = AuditEvent::new(
                self.clock.now(),
                actor,
                AuditAction::PayoutRecheck,
                format!("payout={}", payout.reference),
                AuditOutcome::Succeeded,
                json!({
                    "from": PayoutStatus::Failed,
                    "to": status,
                    "provider_status": found.status,
                    "provider_payout_id": provider_payout_id,
                    "amount_minor": payout.amount_minor,
                    "currency": payout.currency.code(),
                    "failed_since": payout.updated_at,
                    "previous_error": payout.last_error,
                }),
            );
            self.store.record_audit(&event).await?;
            report.recovered.push(StatusChange {
                reference: payout.reference.clone(),
                from: PayoutStatus::Failed,
                to: status,
            });
        }
        Ok(())
    }

    /// The provider's payout for a check; `None` (noted in the report when it is an error) when
    /// there is nothing to record.
    async fn look_up(&self, payout: &Payout, report: &mut CheckReport) -> Option<ProviderPayout> {
        match self.provider.lookup(&payout.reference).await {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                if payout.status == PayoutStatus::Sent {
                    tracing::warn!(reference = %payout.reference, "the provider does not know a sent payout");
                }
                None
            }
            Err(error) => {
                tracing::warn!(reference = %payout.reference, %error, "payout lookup failed");
                report
                    .errors
                    .push((payout.reference.clone(), error.to_string()));
                None
            }
        }
    }

    /// Brings one payout to a settled status if it can. Each status Settle records through the
    /// provider is counted in `settle.payouts`.
    async fn settle_one(
        &self,
        payout: &Payout,
        lease: Option<&RunLease>,
    ) -> Result<Outcome, StoreError> {
        let span = tracing::info_span!(
            telemetry::spans::PAYOUT_SEND,
            settlement_date = %payout.settlement_date,
            revision = payout.revision,
            currency = payout.currency.code(),
            outcome = tracing::field::Empty,
        );
        let settled = self
            .bring_to_settled(payout, lease)
            .instrument(span.clone())
            .await;
        if let Ok(outcome) = &settled {
            let status = match outcome {
                Outcome::Settled(status) => *status,
                Outcome::Unsettled(_) => PayoutStatus::Unknown,
            };
            span.record("outcome", status.as_str());
        }
        settled
    }

    async fn bring_to_settled(
        &self,
        payout: &Payout,
        lease: Option<&RunLease>,
    ) -> Result<Outcome, StoreError> {
        let seen = match self.claim(payout, lease).await? {
            Claim::Held { seen } => seen,
            Claim::Moved(status) => return Ok(Outcome::Settled(status)),
            Claim::Elsewhere(why) => return Ok(Outcome::Unsettled(why)),
        };
        if seen == PayoutStatus::Unknown {
            // It may have been sent: look it up. Only a provider that has never seen it (404)
            // lets it be sent, under this sender's claim.
            match self.provider.lookup(&payout.reference).await {
                Ok(Some(found)) => {
                    let status = found.status.to_payout_status();
                    let finished = self
                        .finish(
                            payout,
                            status,
                            Some(found.provider_payout_id),
                            0,
                            found.failure_reason,
                        )
                        .await?;
                    return self.recorded(payout, finished, status).await;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(reference = %payout.reference, %error, "payout lookup failed");
                    let why = error.to_string();
                    let finished = self
                        .finish(payout, PayoutStatus::Unknown, None, 0, Some(why.clone()))
                        .await?;
                    telemetry::payout_outcome(PayoutStatus::Unknown);
                    return Ok(match finished {
                        Some(_) => Outcome::Unsettled(why),
                        None => self.moved_on(payout).await?,
                    });
                }
            }
        }
        crate::failpoint::hit("payout.before_send")
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        if let Some(lease) = lease {
            // Still this run's? A run taken over stops here: the payout stays `unknown` and
            // claimed until the claim expires; whoever sends it next looks it up first.
            self.store
                .renew_lease(&lease.fence, self.clock.now() + lease.lease_duration)
                .await?;
        }
        // The claim must outlast the call that follows: renewed now, or not sent at all.
        if let Some(why) = self.renew_claim(payout).await? {
            return Ok(Outcome::Unsettled(why));
        }
        let instruction = PayoutInstruction::from_payout(payout);
        let sent = self.provider.create(&instruction).await;
        crate::failpoint::hit("payout.after_send")
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        match sent {
            Ok(accepted) => {
                let status = accepted.status.to_payout_status();
                let finished = self
                    .finish(
                        payout,
                        status,
                        Some(accepted.provider_payout_id),
                        1,
                        accepted.failure_reason,
                    )
                    .await?;
                tracing::info!(reference = %payout.reference, status = %status, "payout sent");
                self.recorded(payout, finished, status).await
            }
            Err(ProviderError::Rejected { status, detail }) => {
                let error = format!("rejected by the provider ({status}): {detail}");
                let finished = self
                    .finish(payout, PayoutStatus::Failed, None, 1, Some(error))
                    .await?;
                self.recorded(payout, finished, PayoutStatus::Failed).await
            }
            Err(error) => {
                tracing::warn!(reference = %payout.reference, %error, "payout outcome unknown");
                let why = error.to_string();
                let finished = self
                    .finish(payout, PayoutStatus::Unknown, None, 1, Some(why.clone()))
                    .await?;
                telemetry::payout_outcome(PayoutStatus::Unknown);
                Ok(match finished {
                    Some(_) => Outcome::Unsettled(why),
                    None => self.moved_on(payout).await?,
                })
            }
        }
    }

    /// Claims `payout` for this sender. Another sender's live claim is waited out (it finishes,
    /// or its claim expires after a crash) for at most one claim's duration, keeping the run's
    /// lease alive meanwhile.
    async fn claim(&self, payout: &Payout, lease: Option<&RunLease>) -> Result<Claim, StoreError> {
        let patience = (self.claim_duration() + Duration::seconds(1))
            .to_std()
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let mut lease_renewed = started;
        let mut seen = payout.status;
        let mut moves = 0;
        loop {
            let now = self.clock.now();
            let outcome = self
                .store
                .claim_payout_send(&PayoutClaim {
                    reference: payout.reference.clone(),
                    from: seen,
                    claimed_by: self.sender_id.clone(),
                    now,
                    expires_at: now + self.claim_duration(),
                })
                .await?;
            match outcome {
                PayoutClaimOutcome::Claimed(_) => return Ok(Claim::Held { seen }),
                PayoutClaimOutcome::Moved => {
                    match self.current(payout).await? {
                        Some(current) if current.status.awaits_sending() && moves < 3 => {
                            moves += 1;
                            seen = current.status;
                        }
                        Some(current) if !current.status.awaits_sending() => {
                            return Ok(Claim::Moved(current.status))
                        }
                        _ => return Ok(Claim::Elsewhere(
                            "other senders keep changing it; `settle retry` of its date resends it"
                                .into(),
                        )),
                    }
                }
                PayoutClaimOutcome::InFlight {
                    claimed_by,
                    expires_at,
                } => {
                    let waited = started.elapsed();
                    if waited >= patience {
                        return Ok(Claim::Elsewhere(in_flight_elsewhere(
                            &claimed_by,
                            expires_at,
                        )));
                    }
                    tracing::info!(
                        reference = %payout.reference,
                        claimed_by = %claimed_by,
                        %expires_at,
                        "payout in flight in another sender: waiting"
                    );
                    let step =
                        std::time::Duration::from_millis(CLAIM_POLL_MS).min(patience - waited);
                    tokio::time::sleep(step).await;
                    if let Some(lease) = lease {
                        let every = (lease.lease_duration / 3)
                            .to_std()
                            .unwrap_or_default()
                            .max(std::time::Duration::from_millis(100));
                        if lease_renewed.elapsed() >= every {
                            self.store
                                .renew_lease(&lease.fence, self.clock.now() + lease.lease_duration)
                                .await?;
                            lease_renewed = std::time::Instant::now();
                        }
                    }
                }
            }
        }
    }

    /// Extends this sender's claim for a whole provider call; `Some(why)` if it was lost (it
    /// expired and another sender took it, or the payout moved on).
    async fn renew_claim(&self, payout: &Payout) -> Result<Option<String>, StoreError> {
        let now = self.clock.now();
        let outcome = self
            .store
            .claim_payout_send(&PayoutClaim {
                reference: payout.reference.clone(),
                from: PayoutStatus::Unknown,
                claimed_by: self.sender_id.clone(),
                now,
                expires_at: now + self.claim_duration(),
            })
            .await?;
        Ok(match outcome {
            PayoutClaimOutcome::Claimed(_) => None,
            PayoutClaimOutcome::InFlight {
                claimed_by,
                expires_at,
            } => Some(in_flight_elsewhere(&claimed_by, expires_at)),
            PayoutClaimOutcome::Moved => Some("moved on by another sender before sending".into()),
        })
    }

    /// The outcome once `finish` recorded `status` (counted), or found the payout moved on.
    async fn recorded(
        &self,
        payout: &Payout,
        finished: Option<Payout>,
        status: PayoutStatus,
    ) -> Result<Outcome, StoreError> {
        match finished {
            Some(_) => {
                telemetry::payout_outcome(status);
                Ok(Outcome::Settled(status))
            }
            None => self.moved_on(payout).await,
        }
    }

    /// A claimed payout that another sender (its claim expired) or the provider's callback moved on.
    async fn moved_on(&self, payout: &Payout) -> Result<Outcome, StoreError> {
        Ok(match self.current(payout).await? {
            Some(current) if !current.status.awaits_sending() => Outcome::Settled(current.status),
            _ => Outcome::Unsettled("taken over by another sender".into()),
        })
    }

    async fn current(&self, payout: &Payout) -> Result<Option<Payout>, StoreError> {
        Ok(self
            .store
            .payouts(payout.settlement_date)
            .await?
            .into_iter()
            .find(|p| p.reference == payout.reference))
    }

    /// Records a claimed send's outcome (from `unknown`) and releases the claim.
    async fn finish(
        &self,
        payout: &Payout,
        to: PayoutStatus,
        provider_payout_id: Option<String>,
        attempts: u32,
        last_error: Option<String>,
    ) -> Result<Option<Payout>, StoreError> {
        self.store
            .finish_payout_send(
                &PayoutUpdate {
                    reference: payout.reference.clone(),
                    from: PayoutStatus::Unknown,
                    to,
                    provider_payout_id,
                    attempts,
                    last_error,
                    now: self.clock.now(),
                },
                &self.sender_id,
            )
            .await
    }

    async fn update(
        &self,
        payout: &Payout,
        from: PayoutStatus,
        to: PayoutStatus,
        provider_payout_id: Option<String>,
        last_error: Option<String>,
    ) -> Result<Option<Payout>, StoreError> {
        self.store
            .update_payout(&PayoutUpdate {
                reference: payout.reference.clone(),
                from,
                to,
                provider_payout_id,
                attempts: 0,
                last_error,
                now: self.clock.now(),
            })
            .await
    }
}

fn in_flight_elsewhere(claimed_by: &str, expires_at: DateTime<Utc>) -> String {
    format!(
        "in flight in another sender ({claimed_by}) until {expires_at}; `settle retry` of its date \
         resends it after that if it is still unknown"
    )
}
