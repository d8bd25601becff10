//! The settlement commands, the one code path behind every way in (HTTP API, CLI): trigger the
//! latest closed date or a given one, retry, rerun (a four-eyes request when required), approve, reject.
//!
//! Each command claims at once and returns the claimed revision; `settle` then computes, pays out
//! and completes it (the API does that in the background, the CLI waits for it).

use std::sync::Arc;

use uuid::Uuid;

use crate::calendar::{BusinessCalendar, SettlementDate};
use crate::model::{RerunRequest, RunTrigger};
use crate::settlement::{
    ClaimedRun, RerunApprovalError, RerunApprovals, RerunAsk, RunError, RunOutcome, RunRequest,
    SettlementRunner,
};
use crate::store::SharedStore;
use crate::time::Clock;

/// How a rerun is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerunPath {
    /// While reruns need approval, the rerun becomes a request another operator approves (the
    /// API's way: the requester may be anyone with the operator role).
    RequestWhenRequired,
    /// Claimed at once; refused while reruns need approval unless `without_approval`, an admin's
    /// explicit and audited choice (the CLI's way: it runs on the store's host).
    Direct { without_approval: bool },
}

/// What a rerun command did.
#[derive(Debug, Clone)]
pub enum RerunOutcome {
    /// A pending request, for another operator to approve.
    Requested(RerunRequest),
    /// A claimed revision, to pass to `SettlementCommands::settle`.
    Claimed(Box<ClaimedRun>),
}

/// The settlement commands over one store, runner and calendar.
#[derive(Clone)]
pub struct SettlementCommands {
    runner: Arc<SettlementRunner>,
    approvals: Arc<RerunApprovals>,
    calendar: BusinessCalendar,
    clock: Arc<dyn Clock>,
}

impl SettlementCommands {
    /// `require_rerun_approval`: the `server.require_rerun_approval` setting (four eyes).
    pub fn new(
        store: SharedStore,
        runner: Arc<SettlementRunner>,
        calendar: BusinessCalendar,
        clock: Arc<dyn Clock>,
        require_rerun_approval: bool,
    ) -> Self {
        let approvals = RerunApprovals::new(
            store,
            Arc::clone(&runner),
            Arc::clone(&clock),
            require_rerun_approval,
        );
        SettlementCommands {
            runner,
            approvals: Arc::new(approvals),
            calendar,
            clock,
        }
    }

    /// Claims the latest business date whose cutoff and grace have passed.
    pub async fn trigger_latest(&self, actor: &str) -> Result<ClaimedRun, RunError> {
        let latest = self.calendar.latest_settleable(self.clock.now())?;
        self.trigger(latest, actor).await
    }

    /// Claims a first revision of `settlement_date` (refused when it is settled, running or open).
    pub async fn trigger(
        &self,
        settlement_date: SettlementDate,
        actor: &str,
    ) -> Result<ClaimedRun, RunError> {
        self.claim(settlement_date, RunRequest::Run, actor).await
    }

    /// Claims a failed revision of `settlement_date` again, to resume it.
    pub async fn retry(
        &self,
        settlement_date: SettlementDate,
        actor: &str,
    ) -> Result<ClaimedRun, RunError> {
        self.claim(settlement_date, RunRequest::Retry, actor).await
    }

    async fn claim(
        &self,
        settlement_date: SettlementDate,
        run: RunRequest,
        actor: &str,
    ) -> Result<ClaimedRun, RunError> {
        let settlement = self
            .runner
            .claim(settlement_date, &run, actor, RunTrigger::Manual)
            .await?;
        Ok(ClaimedRun {
            settlement,
            run,
            request: None,
        })
    }

    /// Settles `settlement_date` again as a new revision, under the four-eyes rule.
    pub async fn rerun(
        &self,
        settlement_date: SettlementDate,
        ask: RerunAsk,
        actor: &str,
        path: RerunPath,
    ) -> Result<RerunOutcome, RerunApprovalError> {
        match path {
            RerunPath::RequestWhenRequired if self.approvals.required() => self
                .approvals
                .request(settlement_date, ask, actor)
                .await
                .map(RerunOutcome::Requested),
            RerunPath::RequestWhenRequired => self
                .approvals
                .claim_direct(settlement_date, ask, actor, false)
                .await
                .map(|claimed| RerunOutcome::Claimed(Box::new(claimed))),
            RerunPath::Direct { without_approval } => self
                .approvals
                .claim_direct(settlement_date, ask, actor, without_approval)
                .await
                .map(|claimed| RerunOutcome::Claimed(Box::new(claimed))),
        }
    }

    /// Approves another operator's pending request and claims its run in the same step.
    pub async fn approve(&self, id: Uuid, actor: &str) -> Result<ClaimedRun, RerunApprovalError> {
        self.approvals.approve(id, actor).await
    }

    /// Rejects a pending request (another operator's, or the requester withdrawing it).
    pub async fn reject(&self, id: Uuid, actor: &str) -> Result<RerunRequest, RerunApprovalError> {
        self.approvals.reject(id, actor).await
    }

    /// The second half of every command: computes, pays out and completes a claimed revision.
    pub async fn settle(&self, claimed: ClaimedRun, actor: &str) -> Result<RunOutcome, RunError> {
        self.runner
            .settle(claimed.settlement, &claimed.run, actor, RunTrigger::Manual)
            .await
    }
}
