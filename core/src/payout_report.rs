//! A payout provider's report of one payout's status (its signed callback), applied forward only by
//! compare-and-set and audited: the rule the daemon's callback route and the simulation both use.
//!
//! A report moves a payout only forward (`pending`/`unknown` → `sent`/`confirmed`/`failed`,
//! `sent` → `confirmed`/`failed`); a duplicate, late or out-of-order report changes nothing and is
//! audited as refused. `failed` is the provider's explicit word that it did not pay, so it is
//! believed like a refusal at send time; a provider that reports a `failed` payout paid after all
//! is believed too, as `settle payouts check` believes its lookup (the next rerun deducts it). A
//! report of `sent` for a `failed` payout is not: reports carry no order, and an "accepted" sent
//! before the failure may arrive after it.

use std::fmt;

use serde::Deserialize;
use serde_json::json;

use crate::model::{AuditAction, AuditEvent, AuditOutcome, Payout, PayoutStatus};
use crate::store::{PayoutUpdate, SharedStore, StoreError};
use crate::time::Clock;

/// The status a report gives, in Settle's words (`sent`, `confirmed`, `failed`) or in the
/// provider's own (`accepted`, `paid`, `failed`), which mean the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    #[serde(alias = "accepted")]
    Sent,
    #[serde(alias = "paid")]
    Confirmed,
    Failed,
}

impl ReportedStatus {
    pub fn payout_status(self) -> PayoutStatus {
        match self {
            ReportedStatus::Sent => PayoutStatus::Sent,
            ReportedStatus::Confirmed => PayoutStatus::Confirmed,
            ReportedStatus::Failed => PayoutStatus::Failed,
        }
    }
}

/// One report, as the provider sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutReport {
    pub reference: String,
    pub status: ReportedStatus,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub provider_payout_id: Option<String>,
}

/// What applying a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The payout as it is now.
    pub payout: Payout,
    /// False when the report changed nothing (a duplicate, or not a step forward).
    pub applied: bool,
}

/// Why a report could not be applied at all.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no payout has reference {0:?}")]
    UnknownReference(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a payout may move from `from` to `to` on the provider's word: forward only.
pub fn moves_forward(from: PayoutStatus, to: PayoutStatus) -> bool {
    use PayoutStatus::*;
    matches!(
        (from, to),
        (Pending | Unknown, Sent | Confirmed | Failed)
            | (Sent, Confirmed | Failed)
            | (Failed, Confirmed)
    )
}

impl fmt::Display for ReportedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.payout_status().as_str())
    }
}

/// Applies `report` for `actor` (the caller's actor): moves the payout forward by
/// compare-and-set on the status it was read with, or leaves it; audits either way.
pub async fn apply_report(
    store: &SharedStore,
    clock: &dyn Clock,
    report: &PayoutReport,
    actor: &str,
) -> Result<ReportOutcome, ReportError> {
    let unknown = || ReportError::UnknownReference(report.reference.clone());
    // References begin with their settlement date (`payout_reference`).
    let date = report
        .reference
        .get(..10)
        .and_then(|prefix| prefix.parse::<chrono::NaiveDate>().ok())
        .ok_or_else(unknown)?;
    let read = || async {
        Ok::<_, StoreError>(
            store
                .payouts(date)
                .await?
                .into_iter()
                .find(|p| p.reference == report.reference),
        )
    };
    let payout = read().await?.ok_or_else(unknown)?;
    let target = report.status.payout_status();
    let forward = moves_forward(payout.status, target);
    let updated = if forward {
        store
            .update_payout(&PayoutUpdate {
                reference: payout.reference.clone(),
                from: payout.status,
                to: target,
                provider_payout_id: report.provider_payout_id.clone(),
                attempts: 0,
                last_error: report.failure_reason.clone(),
                now: clock.now(),
            })
            .await?
    } else {
        None
    };
    if updated.is_some() {
        crate::telemetry::payout_outcome(target);
    }
    let event = AuditEvent::new(
        clock.now(),
        actor,
        AuditAction::PayoutCallback,
        format!("payout={}", payout.reference),
        if updated.is_some() {
            AuditOutcome::Succeeded
        } else {
            AuditOutcome::Refused
        },
        json!({ "from": payout.status, "to": target }),
    );
    store.record_audit(&event).await?;
    Ok(match updated {
        Some(payout) => ReportOutcome {
            payout,
            applied: true,
        },
        // A report that lost the compare-and-set shows what won; one that was no step forward
        // shows the payout as read.
        None if forward => ReportOutcome {
            payout: read().await?.unwrap_or(payout),
            applied: false,
        },
        None => ReportOutcome {
            payout,
            applied: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_move_payouts_forward_only() {
        use PayoutStatus::*;
        for from in [Pending, Unknown] {
            for to in [Sent, Confirmed, Failed] {
                assert!(moves_forward(from, to), "{from:?} -> {to:?}");
            }
        }
        assert!(moves_forward(Sent, Confirmed) && moves_forward(Sent, Failed));
        // Paid after all, as a recheck of a failed payout believes; a late "accepted" is not.
        assert!(moves_forward(Failed, Confirmed));
        for (from, to) in [
            (Failed, Sent),
            (Confirmed, Sent),
            (Confirmed, Failed),
            (Confirmed, Confirmed),
            (Failed, Failed),
            (Sent, Sent),
            (Held, Confirmed),
            (Held, Failed),
        ] {
            assert!(!moves_forward(from, to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_report_speaks_settles_words_or_the_providers() {
        let report: PayoutReport =
            serde_json::from_str(r#"{"reference": "2024-03-10.USD.r1.m-1", "status": "paid"}"#)
                .unwrap();
        assert_eq!(report.status, ReportedStatus::Confirmed);
        let unknown_field = serde_json::from_str::<PayoutReport>(
            r#"{"reference": "x", "status": "sent", "amount": 1}"#,
        );
        assert!(unknown_field.is_err());
    }
}
