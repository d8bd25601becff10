//! What approving a four-eyes rerun request did, and the check every adapter makes that the claim
//! it is given is the request's own (its date, after the revision it was made against).

use crate::model::{RerunRequest, Settlement};

use super::{ClaimMode, ClaimRequest, StoreError};

/// The outcome of `AccessStore::approve_rerun_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerunApproval {
    /// Approved, and its run claimed in the same step: `settlement` is the claimed revision, to be
    /// settled by the caller.
    Approved {
        request: RerunRequest,
        settlement: Box<Settlement>,
    },
    /// The claim was refused (already running, the date moved on…): nothing was approved, the
    /// request stays pending with the refusal as its `last_refusal`.
    Refused {
        request: RerunRequest,
        refusal: StoreError,
    },
    /// Not pending: decided already, or another approval of it is in flight (the request is then
    /// still pending). `None`: there is no such request.
    NotPending(Option<RerunRequest>),
}

/// True for the refusals a claim answers with (the request stays pending and says why); false for
/// faults, which change nothing.
pub fn is_claim_refusal(error: &StoreError) -> bool {
    !matches!(
        error,
        StoreError::Backend(_) | StoreError::Corrupt(_) | StoreError::LeaseLost(_)
    )
}

/// The claim of an approval must rerun the request's date after the revision it was made against.
pub fn check_claim(request: &RerunRequest, claim: &ClaimRequest) -> Result<(), StoreError> {
    let after = match &claim.mode {
        ClaimMode::Rerun { after_revision, .. } => Some(*after_revision),
        ClaimMode::Run | ClaimMode::Retry => None,
    };
    if claim.settlement_date != request.settlement_date
        || after.is_none()
        || after != request.settlement_revision
    {
        return Err(StoreError::Backend(format!(
            "rerun request {} (settlement {} revision {:?}) cannot be approved with a claim on {} ({:?})",
            request.id,
            request.settlement_date,
            request.settlement_revision,
            claim.settlement_date,
            claim.mode
        )));
    }
    Ok(())
}
