//! Sending payouts: every pending or unknown payout goes to the provider under its deterministic
//! reference. An unknown one (sent, answer lost) is looked up first, never blindly sent again.
//!
//! A payout is marked `unknown` durably before its request leaves, so a crash mid-send leaves a
//! payout that the next run looks up instead of paying twice: provider idempotency keys expire
//! (often after 24 hours), so a late retry must not rely on them alone.

use std::sync::Arc;

use chrono::Duration;

use crate::model::{Fence, Payout, PayoutStatus};
use crate::provider::{PayoutInstruction, PayoutProvider, ProviderError};
use crate::store::{PayoutUpdate, SharedStore, StoreError};
use crate::telemetry;
use crate::time::Clock;
use tracing::Instrument as _;

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

/// The settlement run a sending pass belongs to: before each request leaves, the pass renews the
/// run's lease under its fence, so a run that lost its lease (frozen, then taken over) stops
/// before it calls the provider, and a long pass keeps its lease alive.
#[derive(Debug, Clone)]
pub struct RunLease {
    pub fence: Fence,
    pub lease_duration: Duration,
}

/// Sends payouts through the provider and records what happened.
pub struct PayoutSender {
    store: SharedStore,
    provider: Arc<PayoutProvider>,
    clock: Arc<dyn Clock>,
}

impl PayoutSender {
    pub fn new(store: SharedStore, provider: Arc<PayoutProvider>, clock: Arc<dyn Clock>) -> Self {
        PayoutSender {
            store,
            provider,
            clock,
        }
    }

    /// Sends every payout awaiting sending, optionally of one date or one merchant; under a
    /// settlement run's `lease` when one is sending (`LeaseLost` once another run took over).
    pub async fn send_awaiting(
        &self,
        settlement_date: Option<chrono::NaiveDate>,
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
                Some(PayoutStatus::Failed) => report.rejected += 1,
                Some(_) => report.settled += 1,
                None => report.unsettled.push((
                    payout.reference.clone(),
                    self.last_error(&payout.reference, payout.settlement_date)
                        .await?,
                )),
            }
        }
        Ok(report)
    }

    /// Asks the provider about every `sent` payout of a date and records what it says (`confirmed`
    /// once paid, `failed` if it gave up). Returns how many changed.
    pub async fn refresh_sent(
        &self,
        settlement_date: chrono::NaiveDate,
    ) -> Result<u32, StoreError> {
        let mut changed = 0;
        for payout in self.store.payouts(settlement_date).await? {
            if payout.status != PayoutStatus::Sent {
                continue;
            }
            match self.provider.lookup(&payout.reference).await {
                Ok(Some(found)) => {
                    let status = found.status.to_payout_status();
                    if status != PayoutStatus::Sent
                        && self
                            .update(
                                &payout,
                                PayoutStatus::Sent,
                                status,
                                None,
                                0,
                                found.failure_reason,
                            )
                            .await?
                            .is_some()
                    {
                        telemetry::payout_outcome(status);
                        changed += 1;
                    }
                }
                Ok(None) => {
                    tracing::warn!(reference = %payout.reference, "the provider does not know a sent payout")
                }
                Err(error) => {
                    tracing::warn!(reference = %payout.reference, %error, "payout lookup failed")
                }
            }
        }
        Ok(changed)
    }

    async fn last_error(
        &self,
        reference: &str,
        date: chrono::NaiveDate,
    ) -> Result<String, StoreError> {
        Ok(self
            .store
            .payouts(date)
            .await?
            .into_iter()
            .find(|p| p.reference == reference)
            .and_then(|p| p.last_error)
            .unwrap_or_else(|| "not sent".into()))
    }

    /// Brings one payout to a settled status if it can; `None` when it is still unsettled. Each
    /// status Settle records through the provider is counted in `settle.payouts`.
    async fn settle_one(
        &self,
        payout: &Payout,
        lease: Option<&RunLease>,
    ) -> Result<Option<PayoutStatus>, StoreError> {
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
        if let Ok(status) = &settled {
            span.record("outcome", status.unwrap_or(PayoutStatus::Unknown).as_str());
        }
        settled
    }

    async fn bring_to_settled(
        &self,
        payout: &Payout,
        lease: Option<&RunLease>,
    ) -> Result<Option<PayoutStatus>, StoreError> {
        if payout.status == PayoutStatus::Unknown {
            match self.provider.lookup(&payout.reference).await {
                Ok(Some(found)) => {
                    let status = found.status.to_payout_status();
                    self.update(
                        payout,
                        PayoutStatus::Unknown,
                        status,
                        Some(found.provider_payout_id),
                        0,
                        found.failure_reason,
                    )
                    .await?;
                    telemetry::payout_outcome(status);
                    return Ok(Some(status));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(reference = %payout.reference, %error, "payout lookup failed");
                    self.update(
                        payout,
                        PayoutStatus::Unknown,
                        PayoutStatus::Unknown,
                        None,
                        0,
                        Some(error.to_string()),
                    )
                    .await?;
                    telemetry::payout_outcome(PayoutStatus::Unknown);
                    return Ok(None);
                }
            }
        } else if self
            .update(
                payout,
                PayoutStatus::Pending,
                PayoutStatus::Unknown,
                None,
                0,
                None,
            )
            .await?
            .is_none()
        {
            // Someone else moved it on (a hold, another sender): leave it to them.
            return Ok(Some(payout.status));
        }
        crate::failpoint::hit("payout.before_send")
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        if let Some(lease) = lease {
            // Still this run's? A run taken over stops here: the payout stays `unknown` and the
            // run that holds the lease looks it up before it sends anything.
            self.store
                .renew_lease(&lease.fence, self.clock.now() + lease.lease_duration)
                .await?;
        }
        let instruction = PayoutInstruction {
            reference: payout.reference.clone(),
            merchant_id: payout.merchant_id.clone(),
            currency: payout.currency,
            amount_minor: payout.amount_minor,
            settlement_date: payout.settlement_date,
        };
        let sent = self.provider.create(&instruction).await;
        crate::failpoint::hit("payout.after_send")
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        match sent {
            Ok(accepted) => {
                let status = accepted.status.to_payout_status();
                self.update(
                    payout,
                    PayoutStatus::Unknown,
                    status,
                    Some(accepted.provider_payout_id),
                    1,
                    accepted.failure_reason,
                )
                .await?;
                telemetry::payout_outcome(status);
                tracing::info!(reference = %payout.reference, status = %status, "payout sent");
                Ok(Some(status))
            }
            Err(ProviderError::Rejected { status, detail }) => {
                let error = format!("rejected by the provider ({status}): {detail}");
                self.update(
                    payout,
                    PayoutStatus::Unknown,
                    PayoutStatus::Failed,
                    None,
                    1,
                    Some(error),
                )
                .await?;
                telemetry::payout_outcome(PayoutStatus::Failed);
                Ok(Some(PayoutStatus::Failed))
            }
            Err(error) => {
                tracing::warn!(reference = %payout.reference, %error, "payout outcome unknown");
                self.update(
                    payout,
                    PayoutStatus::Unknown,
                    PayoutStatus::Unknown,
                    None,
                    1,
                    Some(error.to_string()),
                )
                .await?;
                telemetry::payout_outcome(PayoutStatus::Unknown);
                Ok(None)
            }
        }
    }

    async fn update(
        &self,
        payout: &Payout,
        from: PayoutStatus,
        to: PayoutStatus,
        provider_payout_id: Option<String>,
        attempts: u32,
        last_error: Option<String>,
    ) -> Result<Option<Payout>, StoreError> {
        self.store
            .update_payout(&PayoutUpdate {
                reference: payout.reference.clone(),
                from,
                to,
                provider_payout_id,
                attempts,
                last_error,
                now: self.clock.now(),
            })
            .await
    }
}
