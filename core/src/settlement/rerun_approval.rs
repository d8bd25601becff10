//! Four-eyes reruns, the one rule the API and the CLI follow: with `require_rerun_approval` a rerun
//! is a request that another operator approves, and the approval claims the run in the same step.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::calendar::SettlementDate;
use crate::model::{
    AuditAction, AuditEvent, AuditOutcome, RerunRequest, RerunRequestStatus, RunTrigger, Settlement,
};
use crate::settlement::{RunError, RunRequest, SettlementRunner};
use crate::store::{ClaimMode, RerunApproval, SharedStore, StoreError};
use crate::time::Clock;

/// A rerun as someone asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunAsk {
    pub reason: String,
    pub apply_current_fees: bool,
}

/// A claimed revision and the run it was claimed for, to be passed to `SettlementCommands::settle`.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub settlement: Settlement,
    pub run: RunRequest,
    /// The approved request, when the rerun was approved by a second person.
    pub request: Option<RerunRequest>,
}

/// Why a rerun, a request or a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum RerunApprovalError {
    #[error(
        "reruns of settlement {settlement_date} need a second operator's approval \
         (server.require_rerun_approval): ask for it with POST \
         /api/v2/finance/settlement/rerun/{settlement_date}, and another operator approves it with \
         POST /api/v2/finance/settlement/rerun-requests/{{id}}/approve; an admin may rerun without \
         approval with --without-approval, which is audited with the reason"
    )]
    ApprovalRequired { settlement_date: SettlementDate },
    #[error("no rerun request {0}")]
    NotFound(Uuid),
    #[error(
        "a rerun must be approved by another operator than the one who asked ({requested_by})"
    )]
    OwnRequest { requested_by: String },
    #[error("rerun request {id} was already {status}")]
    AlreadyDecided {
        id: Uuid,
        status: RerunRequestStatus,
    },
    #[error(
        "rerun request {id} is being approved by another operator right now; look again shortly"
    )]
    BeingDecided { id: Uuid },
    #[error("{}", stale_text(*id, *settlement_date, *requested_against, *latest))]
    Stale {
        id: Uuid,
        settlement_date: SettlementDate,
        requested_against: Option<u32>,
        latest: u32,
    },
    /// The claim of an approved rerun was refused: nothing was approved, the request is pending.
    #[error("rerun request {id} was not approved and stays pending: {refusal}")]
    ClaimRefused { id: Uuid, refusal: StoreError },
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Store(StoreError),
}

fn stale_text(
    id: Uuid,
    settlement_date: SettlementDate,
    requested_against: Option<u32>,
    latest: u32,
) -> String {
    let made = match requested_against {
        Some(revision) => format!("was made against revision {revision} of settlement {settlement_date}"),
        None => format!(
            "was made before requests recorded the revision of settlement {settlement_date} they rerun"
        ),
    };
    format!(
        "rerun request {id} is stale: it {made}, which is at revision {latest} now; reject it (and ask \
         again if the date still needs a rerun)"
    )
}

/// Four-eyes reruns over one store and runner.
pub struct RerunApprovals {
    store: SharedStore,
    runner: Arc<SettlementRunner>,
    clock: Arc<dyn Clock>,
    required: bool,
}

impl RerunApprovals {
    /// `required`: the `server.require_rerun_approval` setting.
    pub fn new(
        store: SharedStore,
        runner: Arc<SettlementRunner>,
        clock: Arc<dyn Clock>,
        required: bool,
    ) -> Self {
        RerunApprovals {
            store,
            runner,
            clock,
            required,
        }
    }

    /// True when a rerun needs a second person's approval.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Claims a rerun without a second person's approval. Refused with `ApprovalRequired` when
    /// reruns need approval, unless `without_approval`: an admin's explicit choice, audited with
    /// the reason before the claim and kept in the revision's reason.
    pub async fn claim_direct(
        &self,
        settlement_date: SettlementDate,
        ask: RerunAsk,
        actor: &str,
        without_approval: bool,
    ) -> Result<ClaimedRun, RerunApprovalError> {
        let mut reason = ask.reason;
        if self.required {
            if !without_approval {
                return Err(RerunApprovalError::ApprovalRequired { settlement_date });
            }
            if reason.trim().is_empty() {
                return Err(RerunApprovalError::Run(RunError::ReasonRequired));
            }
            let detail =
                json!({ "reason": reason.trim(), "apply_current_fees": ask.apply_current_fees });
            // No bypass without its audit event.
            self.audit(
                actor,
                AuditAction::SettlementRerunApprovalBypassed,
                settlement_date,
                AuditOutcome::Succeeded,
                detail,
            )
            .await
            .map_err(RerunApprovalError::Store)?;
            reason = format!("{} (without approval, by {actor})", reason.trim());
        }
        let run = RunRequest::Rerun {
            reason,
            apply_current_fees: ask.apply_current_fees,
        };
        let settlement = self
            .runner
            .claim(settlement_date, &run, actor, RunTrigger::Manual)
            .await
            .map_err(RerunApprovalError::Run)?;
        Ok(ClaimedRun {
            settlement,
            run,
            request: None,
        })
    }

    /// Records a pending request against the date's latest revision, for another operator to
    /// approve. A date with no revision has nothing to rerun (refused as a direct rerun would be).
    pub async fn request(
        &self,
        settlement_date: SettlementDate,
        ask: RerunAsk,
        actor: &str,
    ) -> Result<RerunRequest, RerunApprovalError> {
        let reason = ask.reason.trim();
        if reason.is_empty() {
            return Err(RerunApprovalError::Run(RunError::ReasonRequired));
        }
        let latest = self
            .store
            .settlement(settlement_date, None)
            .await
            .map_err(RerunApprovalError::Store)?
            .ok_or(RerunApprovalError::Run(RunError::Refused(
                StoreError::NothingToDo {
                    settlement_date,
                    what: "revision yet; use `run` to settle it first",
                },
            )))?;
        let now = self.clock.now();
        let request = RerunRequest {
            id: Uuid::new_v4(),
            settlement_date,
            reason: reason.to_string(),
            apply_current_fees: ask.apply_current_fees,
            requested_by: actor.to_string(),
            requested_at: now,
            status: RerunRequestStatus::Pending,
            decided_by: None,
            decided_at: None,
            settlement_revision: Some(latest.revision),
            run_revision: None,
            last_refusal: None,
        };
        self.store
            .create_rerun_request(&request)
            .await
            .map_err(RerunApprovalError::Store)?;
        let detail = json!({
            "request_id": request.id,
            "reason": request.reason,
            "apply_current_fees": request.apply_current_fees,
            "settlement_revision": latest.revision,
        });
        if let Err(error) = self
            .audit(
                actor,
                AuditAction::SettlementRerunRequested,
                settlement_date,
                AuditOutcome::Succeeded,
                detail,
            )
            .await
        {
            tracing::error!(%error, "could not audit a rerun request");
        }
        Ok(request)
    }

    /// Approves another operator's pending request and claims its run as one step. A request
    /// made against a revision the date has moved on from is refused as stale; a refused claim
    /// leaves the request pending (its `last_refusal` says why). Refusals are audited.
    pub async fn approve(
        &self,
        id: Uuid,
        approver: &str,
    ) -> Result<ClaimedRun, RerunApprovalError> {
        let found = self.pending(id).await?;
        if found.requested_by == approver {
            return Err(RerunApprovalError::OwnRequest {
                requested_by: found.requested_by,
            });
        }
        let approved = self.claim_approved(&found, approver).await;
        let (outcome, mut detail) = match &approved {
            Ok(claimed) => (
                AuditOutcome::Succeeded,
                json!({ "revision": claimed.settlement.revision }),
            ),
            Err(
                error @ (RerunApprovalError::Stale { .. }
                | RerunApprovalError::ClaimRefused { .. }
                | RerunApprovalError::Run(RunError::NotSettleable(_) | RunError::Refused(_))),
            ) => (AuditOutcome::Refused, json!({ "error": error.to_string() })),
            Err(_) => return approved,
        };
        detail["request_id"] = json!(id);
        detail["requested_by"] = json!(found.requested_by);
        if let Err(error) = self
            .audit(
                approver,
                AuditAction::SettlementRerunApproved,
                found.settlement_date,
                outcome,
                detail,
            )
            .await
        {
            tracing::error!(%error, "could not audit a rerun approval");
        }
        approved
    }

    async fn claim_approved(
        &self,
        found: &RerunRequest,
        approver: &str,
    ) -> Result<ClaimedRun, RerunApprovalError> {
        let run = RunRequest::Rerun {
            reason: format!(
                "{} (requested by {}, approved by {approver})",
                found.reason, found.requested_by
            ),
            apply_current_fees: found.apply_current_fees,
        };
        let claim = self
            .runner
            .prepare_claim(found.settlement_date, &run, approver, RunTrigger::Manual)
            .await
            .map_err(RerunApprovalError::Run)?;
        let stale = |latest: u32| RerunApprovalError::Stale {
            id: found.id,
            settlement_date: found.settlement_date,
            requested_against: found.settlement_revision,
            latest,
        };
        if let ClaimMode::Rerun { after_revision, .. } = &claim.mode {
            if Some(*after_revision) != found.settlement_revision {
                return Err(stale(*after_revision));
            }
        }
        match self
            .store
            .approve_rerun_request(found.id, approver, claim)
            .await
            .map_err(RerunApprovalError::Store)?
        {
            RerunApproval::Approved {
                request,
                settlement,
            } => Ok(ClaimedRun {
                settlement: *settlement,
                run,
                request: Some(request),
            }),
            // Moved on between the check above and the claim.
            RerunApproval::Refused {
                refusal: StoreError::RevisionMoved { found: latest, .. },
                ..
            } => Err(stale(latest)),
            RerunApproval::Refused { refusal, .. } => Err(RerunApprovalError::ClaimRefused {
                id: found.id,
                refusal,
            }),
            RerunApproval::NotPending(now) => Err(not_pending(found.id, now)),
        }
    }

    /// Rejects a pending request: another operator's decision, or its requester withdrawing it
    /// (a stale request is closed this way). Nothing runs.
    pub async fn reject(
        &self,
        id: Uuid,
        decider: &str,
    ) -> Result<RerunRequest, RerunApprovalError> {
        let found = self.pending(id).await?;
        let now = self.clock.now();
        let Some(rejected) = self
            .store
            .reject_rerun_request(id, decider, now)
            .await
            .map_err(RerunApprovalError::Store)?
        else {
            let now = self
                .store
                .rerun_request(id)
                .await
                .map_err(RerunApprovalError::Store)?;
            return Err(not_pending(id, now));
        };
        let detail = json!({ "request_id": id, "requested_by": found.requested_by });
        if let Err(error) = self
            .audit(
                decider,
                AuditAction::SettlementRerunRejected,
                found.settlement_date,
                AuditOutcome::Succeeded,
                detail,
            )
            .await
        {
            tracing::error!(%error, "could not audit a rerun rejection");
        }
        Ok(rejected)
    }

    /// The request, if it is still pending.
    async fn pending(&self, id: Uuid) -> Result<RerunRequest, RerunApprovalError> {
        match self
            .store
            .rerun_request(id)
            .await
            .map_err(RerunApprovalError::Store)?
        {
            Some(found) if found.status == RerunRequestStatus::Pending => Ok(found),
            other => Err(not_pending(id, other)),
        }
    }

    async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        settlement_date: SettlementDate,
        outcome: AuditOutcome,
        detail: Value,
    ) -> Result<(), StoreError> {
        let event = AuditEvent::new(
            self.clock.now(),
            actor,
            action,
            format!("settlement_date={settlement_date}"),
            outcome,
            detail,
        );
        self.store.record_audit(&event).await
    }
}

/// Why a request that is not (or no longer) pending cannot be decided.
fn not_pending(id: Uuid, now: Option<RerunRequest>) -> RerunApprovalError {
    match now {
        None => RerunApprovalError::NotFound(id),
        Some(request) if request.status == RerunRequestStatus::Pending => {
            RerunApprovalError::BeingDecided { id }
        }
        Some(request) => RerunApprovalError::AlreadyDecided {
            id,
            status: request.status,
        },
    }
}
