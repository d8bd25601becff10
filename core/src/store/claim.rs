//! What a claim on a settlement date should do, given the date's latest revision: the one decision
//! both store adapters apply (each with its own way of making it atomic). Pure: no I/O.

use chrono::{DateTime, Utc};

use crate::model::{Settlement, SettlementStatus};

use super::{ClaimMode, ClaimRequest, StoreError};

/// The write a claim makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAction<'a> {
    /// Create the date's first revision.
    InsertFirst,
    /// Take over the latest revision: its lease expired (its process died), or it failed and a
    /// retry was asked for.
    TakeOver,
    /// Create revision `revision` after the latest one, for `reason` (a rerun).
    InsertNext { revision: u32, reason: &'a str },
}

fn lease_is_live(settlement: &Settlement, now: DateTime<Utc>) -> bool {
    settlement.status == SettlementStatus::Running
        && settlement
            .lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at > now)
}

/// The refusal of a claim because the revision is running under a live lease.
pub fn already_running(settlement: &Settlement) -> StoreError {
    let lease = settlement.lease.clone();
    StoreError::AlreadyRunning {
        settlement_date: settlement.settlement_date,
        revision: settlement.revision,
        owner: lease.as_ref().map(|l| l.owner.clone()).unwrap_or_default(),
        lease_expires_at: lease.map(|l| l.expires_at).unwrap_or(settlement.started_at),
    }
}

/// Decides a claim (see `ClaimMode`), or refuses it with the reason a person should see.
pub fn decide<'a>(
    request: &'a ClaimRequest,
    latest: Option<&Settlement>,
) -> Result<ClaimAction<'a>, StoreError> {
    let date = request.settlement_date;
    let Some(current) = latest else {
        return match request.mode {
            ClaimMode::Run => Ok(ClaimAction::InsertFirst),
            ClaimMode::Rerun { .. } | ClaimMode::Retry => Err(StoreError::NothingToDo {
                settlement_date: date,
                what: "revision yet; use `run` to settle it first",
            }),
        };
    };
    if lease_is_live(current, request.now) {
        return Err(already_running(current));
    }
    match (&request.mode, current.status) {
        (ClaimMode::Run | ClaimMode::Retry, SettlementStatus::Completed) => {
            Err(StoreError::AlreadySettled {
                settlement_date: date,
                revision: current.revision,
            })
        }
        (ClaimMode::Run, SettlementStatus::Failed) => Err(StoreError::RevisionFailed {
            settlement_date: date,
            revision: current.revision,
            error: current.error.clone().unwrap_or_default(),
        }),
        (ClaimMode::Run | ClaimMode::Retry, _) => Ok(ClaimAction::TakeOver),
        (ClaimMode::Rerun { after_revision, .. }, _) if current.revision != *after_revision => {
            Err(StoreError::RevisionMoved {
                settlement_date: date,
                expected: *after_revision,
                found: current.revision,
            })
        }
        (ClaimMode::Rerun { .. }, SettlementStatus::Running | SettlementStatus::Pending) => {
            Err(StoreError::RevisionFailed {
                settlement_date: date,
                revision: current.revision,
                error: "its run stopped before finishing (lease expired)".into(),
            })
        }
        (ClaimMode::Rerun { reason, .. }, _) => Ok(ClaimAction::InsertNext {
            revision: current.revision + 1,
            reason,
        }),
    }
}
