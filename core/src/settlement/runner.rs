//! The settlement run: claim the date under a lease, fold its transactions page by page, write the
//! result with the lease's fence, and record the outcome. The nightly job and people use the same path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tracing::Instrument as _;

use crate::calendar::{BusinessCalendar, CalendarError, SettlementDate};
use crate::compute::fee_ledger::{self, FeeLedgerBook};
use crate::compute::{ComputedSettlement, PaymentKey, RefundedPayment, SettlementComputation};
use crate::failpoint;
use crate::model::fees::FeeSchedule;
use crate::model::{
    AuditAction, AuditEvent, AuditOutcome, Fence, Notification, NotificationStatus,
    PaymentFeeLedger, PayoutStatus, RunTrigger, Settlement, SettlementLine, SettlementStatus,
    Transaction, TransactionKind, TransactionStatus,
};
use crate::money::MoneyError;
use crate::notify::{Notifier, NotifyError, SettlementEvent};
use crate::payout::{PayoutSender, RunLease};
use crate::store::{ClaimMode, ClaimRequest, SharedStore, StoreError};
use crate::telemetry;
use crate::time::Clock;

/// Default lease: long enough for a large day, short enough that a crashed run is soon taken over.
pub const DEFAULT_LEASE_SECONDS: i64 = 300;
/// Transactions read per page: bounds memory whatever the size of the day.
pub const DEFAULT_PAGE_SIZE: u32 = 5_000;

/// `[settlement]`: how a run leases its date and pages through its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSettings {
    pub lease_seconds: i64,
    pub page_size: u32,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        SettlementSettings {
            lease_seconds: DEFAULT_LEASE_SECONDS,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Refund look-ups per store call.
const REFUND_LOOKUP_BATCH: usize = 500;
/// Refund look-up calls in flight at once (the SQLite store reads on two connections).
const REFUND_LOOKUPS_IN_FLIGHT: usize = 2;
/// Computations of one revision when fee ledgers keep moving under it (runs racing on refunds of the
/// same payments), before the revision fails for `retry`.
const FEE_LEDGER_COMPUTATIONS: u32 = 4;

/// What a person or the scheduler asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRequest {
    /// Settle the date (or resume a run whose lease expired).
    Run,
    /// Settle it again as a new revision, for a stated reason. Uses the fee schedule stored with the
    /// previous revision unless `apply_current_fees`.
    Rerun {
        reason: String,
        apply_current_fees: bool,
    },
    /// Resume a failed revision.
    Retry,
}

impl RunRequest {
    fn action(&self) -> AuditAction {
        match self {
            RunRequest::Run => AuditAction::SettlementRun,
            RunRequest::Rerun { .. } => AuditAction::SettlementRerun,
            RunRequest::Retry => AuditAction::SettlementRetry,
        }
    }
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    NotSettleable(#[from] CalendarError),
    /// Refused by the claim: already settled, already running, failed, nothing to do…
    #[error(transparent)]
    Refused(StoreError),
    #[error("a rerun needs a reason (say why the date is settled again)")]
    ReasonRequired,
    #[error("settlement {settlement_date} revision {revision} failed: {error}")]
    Failed {
        settlement_date: SettlementDate,
        revision: u32,
        error: String,
    },
    #[error(transparent)]
    Store(StoreError),
    /// A shutdown stopped the run before it computed; its lease was released for another to resume.
    #[error("settlement {settlement_date} revision {revision} was interrupted by a shutdown; another run resumes it")]
    Interrupted {
        settlement_date: SettlementDate,
        revision: u32,
    },
}

impl RunError {
    /// True for outcomes of a race or a repeated request, which are not faults.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            RunError::Refused(
                StoreError::AlreadySettled { .. } | StoreError::AlreadyRunning { .. }
            )
        )
    }
}

/// A run that completed.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub settlement: Settlement,
    pub line_count: usize,
    /// True when this run resumed a revision another run had claimed.
    pub resumed: bool,
}

/// Runs settlements. One per process is enough; it holds no state between runs.
pub struct SettlementRunner {
    store: SharedStore,
    clock: Arc<dyn Clock>,
    calendar: BusinessCalendar,
    fee_schedule: FeeSchedule,
    owner: String,
    lease_duration: Duration,
    page_size: u32,
    payouts: Option<PayoutSender>,
    notifier: Option<Notifier>,
    /// Cancelled on shutdown: a run stops between pages and releases its lease.
    shutdown: tokio_util::sync::CancellationToken,
}

/// Why the fold stopped.
#[derive(Debug, thiserror::Error)]
enum ComputeError {
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Injected(#[from] failpoint::InjectedFailure),
    #[error("interrupted by a shutdown")]
    Interrupted,
}

impl SettlementRunner {
    /// `calendar` and `fee_schedule` are the current configuration, used for new revisions.
    /// `owner` names this process in leases (host, pid).
    pub fn new(
        store: SharedStore,
        clock: Arc<dyn Clock>,
        calendar: BusinessCalendar,
        fee_schedule: FeeSchedule,
        owner: impl Into<String>,
    ) -> Self {
        SettlementRunner {
            store,
            clock,
            calendar,
            fee_schedule,
            owner: owner.into(),
            lease_duration: Duration::seconds(DEFAULT_LEASE_SECONDS),
            page_size: DEFAULT_PAGE_SIZE,
            payouts: None,
            notifier: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Stops runs between pages when `shutdown` is cancelled (releasing their leases).
    pub fn with_shutdown(mut self, shutdown: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Pays merchants through a provider after each settlement.
    pub fn with_payouts(mut self, sender: PayoutSender) -> Self {
        self.payouts = Some(sender);
        self
    }

    /// Notifies a webhook receiver when a revision completes or fails.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_lease_duration(mut self, lease_duration: Duration) -> Self {
        self.lease_duration = lease_duration;
        self
    }

    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Claims, computes and completes one date. `actor` is who asked (for the audit trail).
    pub async fn execute(
        &self,
        settlement_date: SettlementDate,
        request: RunRequest,
        actor: &str,
        trigger: RunTrigger,
    ) -> Result<RunOutcome, RunError> {
        let claimed = self
            .claim(settlement_date, &request, actor, trigger)
            .await?;
        self.settle(claimed, &request, actor, trigger).await
    }

    /// The first half of a run: checks the date may be settled and claims it (fast). A refusal
    /// is audited here; a claimed revision must then be passed to `settle`.
    pub async fn claim(
        &self,
        settlement_date: SettlementDate,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
    ) -> Result<Settlement, RunError> {
        let claimed = self
            .try_claim(settlement_date, request, actor, trigger)
            .await;
        if let Err(error) = &claimed {
            let outcome = if matches!(error, RunError::Store(_)) {
                AuditOutcome::Failed
            } else {
                AuditOutcome::Refused
            };
            self.audit(
                settlement_date,
                request,
                actor,
                trigger,
                outcome,
                json!({ "error": error.to_string() }),
            )
            .await?;
        }
        claimed
    }

    /// The claim `request` would make on `settlement_date` now (the date checked settleable),
    /// without making it: for a caller that claims through another store operation (an approved
    /// rerun request claims its run together with its approval), then passes the revision to
    /// `settle`.
    pub async fn prepare_claim(
        &self,
        settlement_date: SettlementDate,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
    ) -> Result<ClaimRequest, RunError> {
        let now = self.clock.now();
        self.calendar.ensure_settleable(settlement_date, now)?;
        self.claim_request(settlement_date, request, actor, trigger, now)
            .await
    }

    async fn try_claim(
        &self,
        settlement_date: SettlementDate,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
    ) -> Result<Settlement, RunError> {
        let claim = self
            .prepare_claim(settlement_date, request, actor, trigger)
            .await?;
        let settlement = self
            .store
            .claim_settlement(claim)
            .await
            .map_err(RunError::Refused)?;
        tracing::info!(
            %settlement_date,
            revision = settlement.revision,
            lease_version = settlement.lease_version,
            resumed = settlement.attempts > 1,
            "claimed settlement"
        );
        Ok(settlement)
    }

    /// The second half of a run: computes, pays out and completes a claimed revision, then
    /// audits and notifies the outcome.
    pub async fn settle(
        &self,
        claimed: Settlement,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
    ) -> Result<RunOutcome, RunError> {
        let settlement_date = claimed.settlement_date;
        // A run is a trace of its own (it outlives the request that claimed it), linked to it.
        let span = tracing::info_span!(
            parent: None,
            telemetry::spans::SETTLEMENT_RUN,
            settlement_date = %settlement_date,
            revision = claimed.revision,
            trigger = trigger.as_str(),
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        span.follows_from(tracing::Span::current());
        let started = std::time::Instant::now();
        let result = self.settle_claimed(claimed).instrument(span.clone()).await;
        let run_outcome = match &result {
            Ok(_) => telemetry::RunOutcome::Completed,
            Err(RunError::Interrupted { .. }) => telemetry::RunOutcome::Interrupted,
            Err(_) => telemetry::RunOutcome::Failed,
        };
        telemetry::settlement_run(run_outcome, trigger, started.elapsed());
        span.record("outcome", run_outcome.as_str());
        if let Ok(done) = &result {
            telemetry::settlement_completed(&done.settlement);
        } else if run_outcome == telemetry::RunOutcome::Failed {
            span.record("otel.status_code", "ERROR");
        }
        let (outcome, detail) = match &result {
            Ok(done) => (
                AuditOutcome::Succeeded,
                json!({ "revision": done.settlement.revision, "lines": done.line_count, "resumed": done.resumed }),
            ),
            Err(RunError::Interrupted { revision, .. }) => (
                AuditOutcome::Interrupted,
                json!({ "revision": revision, "error": "stopped by a shutdown; the lease was released" }),
            ),
            Err(error) => (AuditOutcome::Failed, json!({ "error": error.to_string() })),
        };
        if let Err(error) = self
            .audit(settlement_date, request, actor, trigger, outcome, detail)
            .await
        {
            if result.is_ok() {
                return Err(error);
            }
        }
        match &result {
            Ok(done) => self.notify(settlement_date, done.settlement.revision).await,
            Err(RunError::Failed { revision, .. }) => self.notify(settlement_date, *revision).await,
            Err(_) => {}
        }
        result
    }

    /// Records how a run request ended.
    async fn audit(
        &self,
        settlement_date: SettlementDate,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
        outcome: AuditOutcome,
        mut detail: serde_json::Value,
    ) -> Result<(), RunError> {
        detail["trigger"] = json!(trigger.as_str());
        if let RunRequest::Rerun {
            reason,
            apply_current_fees,
        } = request
        {
            detail["reason"] = json!(reason);
            detail["apply_current_fees"] = json!(apply_current_fees);
        }
        let event = AuditEvent::new(
            self.clock.now(),
            actor,
            request.action(),
            format!("settlement_date={settlement_date}"),
            outcome,
            detail,
        );
        self.store.record_audit(&event).await.map_err(|error| {
            tracing::error!(%error, action = %request.action(), "could not write the audit event");
            RunError::Store(error)
        })
    }

    async fn settle_claimed(&self, settlement: Settlement) -> Result<RunOutcome, RunError> {
        let settlement_date = settlement.settlement_date;
        let resumed = settlement.attempts > 1;
        let fence = settlement.fence();
        // A resumed revision whose result was saved goes straight to its payouts.
        if settlement.computed_at.is_none() {
            let mut computations = 0;
            let saved = loop {
                computations += 1;
                match self.compute(&settlement).await {
                    Ok(computed) => match self
                        .store
                        .save_settlement_result(&fence, &computed, self.clock.now())
                        .await
                    {
                        // Another run settled a refund of the same payment meanwhile: compute
                        // again from the ledger it wrote.
                        Err(StoreError::FeeLedgerMoved { .. })
                            if computations < FEE_LEDGER_COMPUTATIONS =>
                        {
                            tracing::info!(%settlement_date, "a fee ledger moved; computing again");
                            continue;
                        }
                        other => break other.map_err(|e| e.to_string()),
                    },
                    Err(ComputeError::Interrupted) => return Err(self.release(&settlement).await),
                    Err(error) => break Err(error.to_string()),
                }
            };
            if let Err(error) = saved {
                return Err(self.record_failure(&settlement, error).await);
            }
        }
        let lines = self
            .store
            .settlement_lines(settlement_date, settlement.revision)
            .await
            .map_err(RunError::Store)?;
        if let Err(error) = self.pay_out(&settlement, &lines).await {
            return Err(self.record_failure(&settlement, error).await);
        }
        if let Err(error) = failpoint::hit("settlement.before_complete") {
            return Err(self.record_failure(&settlement, error.to_string()).await);
        }
        let completed = self
            .store
            .complete_settlement(&fence, self.clock.now())
            .await
            .map_err(RunError::Store)?;
        failpoint::hit("settlement.after_complete")
            .map_err(|e| RunError::Store(StoreError::Backend(e.to_string())))?;
        tracing::info!(%settlement_date, revision = completed.revision, lines = lines.len(), "settlement completed");
        Ok(RunOutcome {
            settlement: completed,
            line_count: lines.len(),
            resumed,
        })
    }

    /// Plans the revision's payouts (once) and sends every payout of the date still awaiting
    /// sending. Any payout left unsettled fails the run, to be resumed by `retry`.
    async fn pay_out(
        &self,
        settlement: &Settlement,
        lines: &[SettlementLine],
    ) -> Result<(), String> {
        let Some(sender) = &self.payouts else {
            return Ok(());
        };
        let plan = self
            .store
            .plan_payouts(&settlement.fence(), lines, self.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        for held in plan
            .created
            .iter()
            .filter(|payout| payout.status == PayoutStatus::Held)
        {
            telemetry::payout_outcome(held.status);
        }
        tracing::info!(
            settlement_date = %settlement.settlement_date,
            created = plan.created.len(),
            carried = plan.carried.len(),
            "payouts planned"
        );
        failpoint::hit("settlement.after_plan").map_err(|e| e.to_string())?;
        let lease = RunLease {
            fence: settlement.fence(),
            lease_duration: self.lease_duration,
        };
        let report = sender
            .send_awaiting(Some(settlement.settlement_date), None, Some(&lease))
            .await
            .map_err(|e| e.to_string())?;
        match report.unsettled.first() {
            None => Ok(()),
            Some((reference, error)) => Err(format!(
                "{} payout(s) not confirmed sent (first: {reference}: {error}); `retry` resumes them",
                report.unsettled.len()
            )),
        }
    }

    /// Tells the webhook receiver how the revision ended. Never fails the settlement: the outcome
    /// is recorded and shown by `settle show`.
    async fn notify(&self, settlement_date: SettlementDate, revision: u32) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let settlement = match self.store.settlement(settlement_date, Some(revision)).await {
            Ok(Some(settlement)) => settlement,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, "cannot read the settlement to notify");
                return;
            }
        };
        let event = SettlementEvent::from_settlement(&settlement);
        let now = self.clock.now();
        let (status, attempts, last_error) = match notifier.send(&event, now).await {
            Ok(report) => (NotificationStatus::Delivered, report.attempts, None),
            Err(error) => {
                tracing::warn!(%error, event = %event.event, "webhook notification failed");
                let attempts = match &error {
                    NotifyError::Rejected { attempts, .. }
                    | NotifyError::Unavailable { attempts, .. } => *attempts,
                    NotifyError::Config(_) => 0,
                };
                (
                    NotificationStatus::Failed,
                    attempts,
                    Some(error.to_string()),
                )
            }
        };
        let record = Notification {
            settlement_date,
            revision,
            event: event.event.clone(),
            status,
            attempts,
            last_error,
            created_at: now,
        };
        if let Err(error) = self.store.record_notification(&record).await {
            tracing::error!(%error, "cannot record the webhook notification");
        }
    }

    async fn claim_request(
        &self,
        settlement_date: SettlementDate,
        request: &RunRequest,
        actor: &str,
        trigger: RunTrigger,
        now: DateTime<Utc>,
    ) -> Result<ClaimRequest, RunError> {
        let (mode, calendar, fee_schedule) = match request {
            RunRequest::Run => (ClaimMode::Run, self.calendar, self.fee_schedule.clone()),
            RunRequest::Retry => (ClaimMode::Retry, self.calendar, self.fee_schedule.clone()),
            RunRequest::Rerun {
                reason,
                apply_current_fees,
            } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(RunError::ReasonRequired);
                }
                let previous = self
                    .store
                    .settlement(settlement_date, None)
                    .await
                    .map_err(RunError::Store)?
                    .ok_or(RunError::Refused(StoreError::NothingToDo {
                        settlement_date,
                        what: "revision yet; use `run` to settle it first",
                    }))?;
                let fee_schedule = if *apply_current_fees {
                    self.fee_schedule.clone()
                } else {
                    previous.fee_schedule.clone()
                };
                let mode = ClaimMode::Rerun {
                    after_revision: previous.revision,
                    reason: reason.to_string(),
                };
                (mode, previous.calendar, fee_schedule)
            }
        };
        Ok(ClaimRequest {
            settlement_date,
            mode,
            owner: self.owner.clone(),
            requested_by: actor.to_string(),
            trigger,
            now,
            lease_duration: self.lease_duration,
            window: calendar.window(settlement_date)?,
            calendar,
            fee_schedule,
        })
    }

    /// Gives the lease up at once (it expires now), so another run can resume the revision.
    async fn release(&self, settlement: &Settlement) -> RunError {
        tracing::warn!(settlement_date = %settlement.settlement_date, revision = settlement.revision, "run interrupted by a shutdown; releasing the lease");
        match self
            .store
            .renew_lease(&settlement.fence(), self.clock.now())
            .await
        {
            Ok(()) => RunError::Interrupted {
                settlement_date: settlement.settlement_date,
                revision: settlement.revision,
            },
            Err(error) => RunError::Store(error),
        }
    }

    /// Marks the revision failed (if this run still holds it) and builds the error to report.
    async fn record_failure(&self, settlement: &Settlement, error: String) -> RunError {
        tracing::error!(settlement_date = %settlement.settlement_date, revision = settlement.revision, %error, "settlement failed");
        match self
            .store
            .fail_settlement(&settlement.fence(), &error, self.clock.now())
            .await
        {
            Ok(()) => RunError::Failed {
                settlement_date: settlement.settlement_date,
                revision: settlement.revision,
                error,
            },
            Err(store_error) => RunError::Store(store_error),
        }
    }

    /// Folds the date's transactions page by page, renewing the lease as it goes. Refunds are
    /// folded last, in (occurred_at, id) order, once the payments they return and their fee ledgers
    /// have been looked up: each returns fee from what its payment was actually charged.
    async fn compute(&self, settlement: &Settlement) -> Result<ComputedSettlement, ComputeError> {
        failpoint::hit("settlement.after_claim")?;
        let fence = settlement.fence();
        let mut lease_expires_at = settlement
            .lease
            .as_ref()
            .map(|lease| lease.expires_at)
            .unwrap_or_else(|| self.clock.now());
        let frozen = self.store.freeze_transactions(&fence).await?;
        tracing::debug!(settlement_date = %settlement.settlement_date, ?frozen, "transactions frozen for the run");
        let mut computation = SettlementComputation::new(&settlement.fee_schedule);
        // Refunds that may return a fee: settled after everything else, in a deterministic order.
        let mut refunds: Vec<Transaction> = Vec::new();
        let mut transactions = self.store.run_transactions(&fence, self.page_size);
        let mut read: u64 = 0;
        while let Some(tx) = transactions.try_next().await? {
            let returns_a_fee = tx.kind == TransactionKind::Refund
                && tx.status == TransactionStatus::Completed
                && tx.refund_of.is_some();
            if returns_a_fee {
                refunds.push(tx);
            } else {
                computation.add(&tx, None)?;
            }
            read += 1;
            if read % u64::from(self.page_size) == 0 {
                if self.shutdown.is_cancelled() {
                    return Err(ComputeError::Interrupted);
                }
                self.keep_lease(&fence, &mut lease_expires_at).await?;
                failpoint::hit("settlement.after_page")?;
            }
        }
        drop(transactions);
        refunds.sort_unstable_by_key(|r| (r.occurred_at, r.id));
        let refund_chunks: Vec<Vec<Transaction>> = refunds
            .chunks(REFUND_LOOKUP_BATCH)
            .map(<[Transaction]>::to_vec)
            .collect();
        drop(refunds);
        let mut book = FeeLedgerBook::default();
        let mut charging = ChargingRevisions::new(settlement);
        let mut lookups = futures::stream::iter(refund_chunks)
            .map(|chunk| self.refunded_payments_of(chunk))
            .buffered(REFUND_LOOKUPS_IN_FLIGHT);
        while let Some((chunk, refunded, ledgers)) = lookups.try_next().await? {
            self.keep_lease(&fence, &mut lease_expires_at).await?;
            book.add_stored(ledgers);
            for refund in &chunk {
                let key = (
                    refund.merchant_id.clone(),
                    refund.refund_of.clone().unwrap_or_default(),
                );
                let returned_minor = match refunded.get(&key) {
                    Some(found) if fee_ledger::returns_fee_of(&found.payment, refund) => {
                        let payment = &found.payment;
                        let charge = match charging.of(&self.store, payment.settlement_date).await?
                        {
                            Some((revision, schedule)) => Some(fee_ledger::charge_of(
                                schedule,
                                payment,
                                payment.settlement_date,
                                revision,
                            )?),
                            None => None,
                        };
                        book.settle_refund(
                            payment,
                            charge,
                            refund,
                            settlement.settlement_date,
                            settlement.revision,
                        )?
                    }
                    _ => 0,
                };
                computation.add(refund, Some(returned_minor))?;
            }
        }
        let mut computed = computation.finish()?;
        computed.fee_ledgers = book.writes();
        Ok(computed)
    }

    /// The payments a chunk of refunds returns (by payment key) and their stored fee ledgers.
    async fn refunded_payments_of(
        &self,
        chunk: Vec<Transaction>,
    ) -> Result<
        (
            Vec<Transaction>,
            HashMap<PaymentKey, RefundedPayment>,
            Vec<PaymentFeeLedger>,
        ),
        StoreError,
    > {
        let keys: Vec<PaymentKey> = chunk
            .iter()
            .filter_map(|r| {
                r.refund_of
                    .clone()
                    .map(|reference| (r.merchant_id.clone(), reference))
            })
            .collect::<BTreeSet<PaymentKey>>()
            .into_iter()
            .collect();
        let refunded = self
            .store
            .refunded_payments(keys.clone())
            .await?
            .into_iter()
            .map(|found| {
                (
                    (
                        found.payment.merchant_id.clone(),
                        found.payment.external_ref.clone(),
                    ),
                    found,
                )
            })
            .collect();
        let ledgers = self.store.fee_ledgers(keys).await?;
        Ok((chunk, refunded, ledgers))
    }

    /// Renews the lease once half of it has passed. Fails with `LeaseLost` if another run took over.
    async fn keep_lease(
        &self,
        fence: &Fence,
        lease_expires_at: &mut DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        if now + self.lease_duration / 2 >= *lease_expires_at {
            let renewed = now + self.lease_duration;
            self.store.renew_lease(fence, renewed).await?;
            *lease_expires_at = renewed;
        }
        Ok(())
    }
}

/// Which revision's fee schedule charged the payments of each date, looked up once per date: the
/// revision being computed for its own date, else the date's latest completed revision (else its
/// latest revision with a saved result); `None` while a date has not been settled.
struct ChargingRevisions {
    by_date: HashMap<SettlementDate, Option<(u32, FeeSchedule)>>,
}

impl ChargingRevisions {
    fn new(running: &Settlement) -> Self {
        let mut by_date = HashMap::new();
        by_date.insert(
            running.settlement_date,
            Some((running.revision, running.fee_schedule.clone())),
        );
        ChargingRevisions { by_date }
    }

    async fn of(
        &mut self,
        store: &SharedStore,
        settlement_date: SettlementDate,
    ) -> Result<Option<(u32, &FeeSchedule)>, StoreError> {
        let charging = match self.by_date.entry(settlement_date) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(unknown) => {
                let revisions = store.settlement_revisions(settlement_date).await?;
                let charging = revisions
                    .iter()
                    .rev()
                    .find(|r| r.status == SettlementStatus::Completed)
                    .or_else(|| revisions.iter().rev().find(|r| r.computed_at.is_some()))
                    .map(|r| (r.revision, r.fee_schedule.clone()));
                unknown.insert(charging)
            }
        };
        Ok(charging
            .as_ref()
            .map(|(revision, schedule)| (*revision, schedule)))
    }
}
