//! A store that times every operation of the store it wraps into `settle.store.operation.duration`
//! (labels `operation` = the trait method, `store` = sqlite or mongodb), changing nothing else.
//!
//! A decorator rather than timing inside the adapters: one place, both adapters measured the same
//! way, from the caller's side (queueing for a connection included). A streamed read counts the
//! time the caller waits for its items, not the caller's own work between them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, Stream};
use uuid::Uuid;

use super::{
    AccessStore, AuditFilter, AuditStore, ClaimRequest, HistoryFilter, IdempotencyBegin,
    IdempotencyLock, IdempotencyStore, InsertOutcome, MerchantHold, NotificationStore, PayoutClaim,
    PayoutClaimOutcome, PayoutFilter, PayoutPlan, PayoutStore, PayoutUpdate, RecordOutcome,
    RerunApproval, SettlementStore, SharedStore, Store, StoreError, TransactionRecord,
    TransactionStore,
};
use crate::calendar::SettlementDate;
use crate::compute::{ComputedSettlement, PaymentKey, RefundedPayment};
use crate::model::idempotency::{BeginOutcome, StoredResponse};
use crate::model::{
    ApiToken, AuditEvent, CarryForward, Fence, Notification, PaymentFeeLedger, Payout,
    RerunRequest, RerunRequestStatus, Settlement, SettlementLine, Transaction,
};
use crate::telemetry;

/// Wraps a store; cheap (one `Instant` and one histogram record per call).
pub struct TimedStore {
    inner: SharedStore,
    kind: &'static str,
}

impl TimedStore {
    pub fn new(inner: SharedStore) -> TimedStore {
        let kind = inner.kind();
        TimedStore { inner, kind }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        telemetry::store_operation(operation, self.kind, started.elapsed());
        result
    }
}

impl Store for TimedStore {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[async_trait]
impl TransactionStore for TimedStore {
    async fn insert_transactions(
        &self,
        batch: Vec<TransactionRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        self.timed("insert_transactions", self.inner.insert_transactions(batch))
            .await
    }

    async fn transactions_by_ref(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.timed("transactions_by_ref", self.inner.transactions_by_ref(keys))
            .await
    }

    async fn transaction(&self, id: Uuid) -> Result<Option<Transaction>, StoreError> {
        self.timed("transaction", self.inner.transaction(id)).await
    }

    async fn transactions_page(
        &self,
        settlement_date: SettlementDate,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.timed(
            "transactions_page",
            self.inner.transactions_page(settlement_date, after, limit),
        )
        .await
    }

    async fn freeze_transactions(&self, fence: &Fence) -> Result<Option<u64>, StoreError> {
        self.timed("freeze_transactions", self.inner.freeze_transactions(fence))
            .await
    }

    fn run_transactions<'a>(
        &'a self,
        fence: &Fence,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Transaction, StoreError>> {
        Box::pin(TimedStream {
            inner: self.inner.run_transactions(fence, batch_size),
            operation: "run_transactions",
            store: self.kind,
            waited: Duration::ZERO,
            asked_at: None,
            recorded: false,
        })
    }

    async fn late_transactions(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Transaction>, StoreError> {
        self.timed(
            "late_transactions",
            self.inner.late_transactions(settlement_date),
        )
        .await
    }

    async fn refunded_payments(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<RefundedPayment>, StoreError> {
        self.timed("refunded_payments", self.inner.refunded_payments(keys))
            .await
    }

    async fn record_transaction(
        &self,
        record: TransactionRecord,
    ) -> Result<RecordOutcome, StoreError> {
        self.timed("record_transaction", self.inner.record_transaction(record))
            .await
    }
}

#[async_trait]
impl IdempotencyStore for TimedStore {
    async fn idempotency_begin(&self, begin: IdempotencyBegin) -> Result<BeginOutcome, StoreError> {
        self.timed("idempotency_begin", self.inner.idempotency_begin(begin))
            .await
    }

    async fn idempotency_complete(
        &self,
        lock: &IdempotencyLock,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        self.timed(
            "idempotency_complete",
            self.inner.idempotency_complete(lock, response),
        )
        .await
    }

    async fn idempotency_release(&self, lock: &IdempotencyLock) -> Result<bool, StoreError> {
        self.timed("idempotency_release", self.inner.idempotency_release(lock))
            .await
    }

    async fn idempotency_reap(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.timed("idempotency_reap", self.inner.idempotency_reap(now))
            .await
    }
}

#[async_trait]
impl PayoutStore for TimedStore {
    async fn plan_payouts(
        &self,
        fence: &Fence,
        lines: &[SettlementLine],
        now: DateTime<Utc>,
    ) -> Result<PayoutPlan, StoreError> {
        self.timed("plan_payouts", self.inner.plan_payouts(fence, lines, now))
            .await
    }

    async fn payouts(&self, settlement_date: SettlementDate) -> Result<Vec<Payout>, StoreError> {
        self.timed("payouts", self.inner.payouts(settlement_date))
            .await
    }

    async fn payouts_awaiting(
        &self,
        settlement_date: Option<SettlementDate>,
        merchant_id: Option<String>,
    ) -> Result<Vec<Payout>, StoreError> {
        self.timed(
            "payouts_awaiting",
            self.inner.payouts_awaiting(settlement_date, merchant_id),
        )
        .await
    }

    async fn update_payout(&self, update: &PayoutUpdate) -> Result<Option<Payout>, StoreError> {
        self.timed("update_payout", self.inner.update_payout(update))
            .await
    }

    async fn claim_payout_send(
        &self,
        claim: &PayoutClaim,
    ) -> Result<PayoutClaimOutcome, StoreError> {
        self.timed("claim_payout_send", self.inner.claim_payout_send(claim))
            .await
    }

    async fn finish_payout_send(
        &self,
        update: &PayoutUpdate,
        claimed_by: &str,
    ) -> Result<Option<Payout>, StoreError> {
        self.timed(
            "finish_payout_send",
            self.inner.finish_payout_send(update, claimed_by),
        )
        .await
    }

    async fn payouts_with_status(&self, filter: &PayoutFilter) -> Result<Vec<Payout>, StoreError> {
        self.timed(
            "payouts_with_status",
            self.inner.payouts_with_status(filter),
        )
        .await
    }

    async fn hold_merchant(&self, hold: &MerchantHold) -> Result<u64, StoreError> {
        self.timed("hold_merchant", self.inner.hold_merchant(hold))
            .await
    }

    async fn release_merchant(
        &self,
        merchant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        self.timed(
            "release_merchant",
            self.inner.release_merchant(merchant_id, now),
        )
        .await
    }

    async fn merchant_holds(&self) -> Result<Vec<MerchantHold>, StoreError> {
        self.timed("merchant_holds", self.inner.merchant_holds())
            .await
    }

    async fn carry_forwards(&self, open_only: bool) -> Result<Vec<CarryForward>, StoreError> {
        self.timed("carry_forwards", self.inner.carry_forwards(open_only))
            .await
    }
}

#[async_trait]
impl NotificationStore for TimedStore {
    async fn record_notification(&self, notification: &Notification) -> Result<(), StoreError> {
        self.timed(
            "record_notification",
            self.inner.record_notification(notification),
        )
        .await
    }

    async fn notifications(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Notification>, StoreError> {
        self.timed("notifications", self.inner.notifications(settlement_date))
            .await
    }
}

#[async_trait]
impl SettlementStore for TimedStore {
    async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError> {
        self.timed("claim_settlement", self.inner.claim_settlement(request))
            .await
    }

    async fn renew_lease(
        &self,
        fence: &Fence,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed("renew_lease", self.inner.renew_lease(fence, expires_at))
            .await
    }

    async fn save_settlement_result(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed(
            "save_settlement_result",
            self.inner.save_settlement_result(fence, result, now),
        )
        .await
    }

    async fn fee_ledgers(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<PaymentFeeLedger>, StoreError> {
        self.timed("fee_ledgers", self.inner.fee_ledgers(keys))
            .await
    }

    async fn complete_settlement(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError> {
        self.timed(
            "complete_settlement",
            self.inner.complete_settlement(fence, now),
        )
        .await
    }

    async fn fail_settlement(
        &self,
        fence: &Fence,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed(
            "fail_settlement",
            self.inner.fail_settlement(fence, error, now),
        )
        .await
    }

    async fn settlement(
        &self,
        settlement_date: SettlementDate,
        revision: Option<u32>,
    ) -> Result<Option<Settlement>, StoreError> {
        self.timed(
            "settlement",
            self.inner.settlement(settlement_date, revision),
        )
        .await
    }

    async fn settlement_revisions(
        &self,
        settlement_date: SettlementDate,
    ) -> Result<Vec<Settlement>, StoreError> {
        self.timed(
            "settlement_revisions",
            self.inner.settlement_revisions(settlement_date),
        )
        .await
    }

    async fn settlement_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Vec<Settlement>, StoreError> {
        self.timed("settlement_history", self.inner.settlement_history(filter))
            .await
    }

    async fn settlement_lines(
        &self,
        settlement_date: SettlementDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, StoreError> {
        self.timed(
            "settlement_lines",
            self.inner.settlement_lines(settlement_date, revision),
        )
        .await
    }
}

#[async_trait]
impl AccessStore for TimedStore {
    async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.timed("create_token", self.inner.create_token(token))
            .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        self.timed("token_by_hash", self.inner.token_by_hash(token_hash))
            .await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.timed("tokens", self.inner.tokens()).await
    }

    async fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiToken>, StoreError> {
        self.timed("revoke_token", self.inner.revoke_token(name, now))
            .await
    }

    async fn create_rerun_request(&self, request: &RerunRequest) -> Result<(), StoreError> {
        self.timed(
            "create_rerun_request",
            self.inner.create_rerun_request(request),
        )
        .await
    }

    async fn rerun_request(&self, id: Uuid) -> Result<Option<RerunRequest>, StoreError> {
        self.timed("rerun_request", self.inner.rerun_request(id))
            .await
    }

    async fn rerun_requests(
        &self,
        status: Option<RerunRequestStatus>,
    ) -> Result<Vec<RerunRequest>, StoreError> {
        self.timed("rerun_requests", self.inner.rerun_requests(status))
            .await
    }

    async fn approve_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        claim: ClaimRequest,
    ) -> Result<RerunApproval, StoreError> {
        self.timed(
            "approve_rerun_request",
            self.inner.approve_rerun_request(id, decided_by, claim),
        )
        .await
    }

    async fn reject_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RerunRequest>, StoreError> {
        self.timed(
            "reject_rerun_request",
            self.inner.reject_rerun_request(id, decided_by, now),
        )
        .await
    }
}

#[async_trait]
impl AuditStore for TimedStore {
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.timed("record_audit", self.inner.record_audit(event))
            .await
    }

    async fn audit_events(&self, limit: u32, offset: u64) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("audit_events", self.inner.audit_events(limit, offset))
            .await
    }

    async fn audit_events_matching(
        &self,
        filter: &AuditFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed(
            "audit_events_matching",
            self.inner.audit_events_matching(filter, limit, offset),
        )
        .await
    }
}

/// A store stream that adds up how long its caller waited for each item (from asking to getting
/// it) and records the total once, when it ends or is dropped.
struct TimedStream<'a> {
    inner: BoxStream<'a, Result<Transaction, StoreError>>,
    operation: &'static str,
    store: &'static str,
    waited: Duration,
    /// When the consumer started waiting for the item it asked for (its first pending poll).
    asked_at: Option<Instant>,
    recorded: bool,
}

impl TimedStream<'_> {
    fn record(&mut self) {
        if !self.recorded {
            self.recorded = true;
            telemetry::store_operation(self.operation, self.store, self.waited);
        }
    }
}

impl Stream for TimedStream<'_> {
    type Item = Result<Transaction, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The clock is read only around waits: an item already buffered (most of a page) costs
        // no time worth measuring, and a million clock reads would.
        let polled = self.inner.as_mut().poll_next(cx);
        match (&polled, self.asked_at) {
            (Poll::Pending, None) => self.asked_at = Some(Instant::now()),
            (Poll::Ready(_), Some(asked_at)) => {
                self.waited += asked_at.elapsed();
                self.asked_at = None;
            }
            _ => {}
        }
        if let Poll::Ready(None) = polled {
            self.record();
        }
        polled
    }
}

impl Drop for TimedStream<'_> {
    fn drop(&mut self) {
        self.record();
    }
}
