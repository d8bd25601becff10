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
    AccessStore, AuditFilter, AuditStore, ClaimRequest, DecisionFilter, DecisionWrite, EntryFilter,
    HistoryFilter, IdempotencyBegin, IdempotencyLock, IdempotencyStore, ImportOutcome,
    InsertOutcome, LinesPage, LinesQuery, MerchantHold, NotificationStore, PayoutClaim,
    PayoutClaimOutcome, PayoutFilter, PayoutPlan, PayoutStore, PayoutUpdate, ReconciliationStore,
    RecordOutcome, RerunApproval, SettlementStore, SharedStore, StatementImport, Store, StoreError,
    StoredEntry, StoredStatement, TransactionRecord, TransactionStore,
};
use crate::calendar::SettlementDate;
use crate::compute::{ComputedSettlement, PaymentKey, RefundedPayment};
use crate::model::idempotency::{BeginOutcome, StoredResponse};
use crate::model::{
    ApiToken, AuditEvent, CarryForward, Fence, Notification, PaymentFeeLedger, Payout,
    RerunRequest, RerunRequestStatus, Settlement, SettlementLine, Transaction,
};
use crate::telemetry;
use settle_domain::reconcile::{Decision, StatementKind};

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

/// Implements each store trait for [`TimedStore`] from one list of its methods: every `async fn`
/// forwards to the inner store, timed under its own name; every `stream fn` (written without the
/// stream's lifetime, which is `self`'s) forwards through a [`TimedStream`]. A required method
/// missing from the list does not compile, and no name can be misspelt in the metric.
macro_rules! timed_store {
    ($(
        $store:ident {
            $(async fn $method:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty;)*
            $(
                stream fn $stream:ident(&self $(, $sarg:ident: $sty:ty)* $(,)?)
                    -> BoxStream<$item:ty>;
            )*
        }
    )*) => {$(
        #[async_trait]
        impl $store for TimedStore {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> $out {
                    self.timed(stringify!($method), self.inner.$method($($arg),*))
                        .await
                }
            )*
            $(
                fn $stream<'a>(&'a self $(, $sarg: $sty)*) -> BoxStream<'a, $item> {
                    Box::pin(TimedStream {
                        inner: self.inner.$stream($($sarg),*),
                        operation: stringify!($stream),
                        store: self.kind,
                        waited: Duration::ZERO,
                        asked_at: None,
                        recorded: false,
                    })
                }
            )*
        }
    )*};
}

timed_store! {
    ReconciliationStore {
        async fn import_statements(
            &self,
            imports: Vec<StatementImport>,
        ) -> Result<Vec<ImportOutcome>, StoreError>;
        async fn statements(
            &self,
            kind: Option<StatementKind>,
        ) -> Result<Vec<StoredStatement>, StoreError>;
        async fn statement_entries(
            &self,
            filter: &EntryFilter,
        ) -> Result<Vec<StoredEntry>, StoreError>;
        async fn record_decisions(
            &self,
            decisions: Vec<Decision>,
        ) -> Result<Vec<DecisionWrite>, StoreError>;
        async fn restore_decisions(
            &self,
            decisions: Vec<Decision>,
        ) -> Result<Vec<DecisionWrite>, StoreError>;
        async fn decisions(&self, filter: &DecisionFilter) -> Result<Vec<Decision>, StoreError>;
        async fn decision(&self, id: &str) -> Result<Option<Decision>, StoreError>;
    }
    TransactionStore {
        async fn insert_transactions(
            &self,
            batch: Vec<TransactionRecord>,
        ) -> Result<InsertOutcome, StoreError>;
        async fn transactions_by_ref(
            &self,
            keys: Vec<PaymentKey>,
        ) -> Result<Vec<Transaction>, StoreError>;
        async fn transaction(&self, id: Uuid) -> Result<Option<Transaction>, StoreError>;
        async fn transactions_page(
            &self,
            settlement_date: SettlementDate,
            after: Option<Uuid>,
            limit: u32,
        ) -> Result<Vec<Transaction>, StoreError>;
        async fn freeze_transactions(&self, fence: &Fence) -> Result<Option<u64>, StoreError>;
        async fn late_transactions(
            &self,
            settlement_date: SettlementDate,
        ) -> Result<Vec<Transaction>, StoreError>;
        async fn refunded_payments(
            &self,
            keys: Vec<PaymentKey>,
        ) -> Result<Vec<RefundedPayment>, StoreError>;
        async fn record_transaction(
            &self,
            record: TransactionRecord,
        ) -> Result<RecordOutcome, StoreError>;
        stream fn run_transactions(
            &self,
            fence: &Fence,
            batch_size: u32,
        ) -> BoxStream<Result<Transaction, StoreError>>;
    }
    IdempotencyStore {
        async fn idempotency_begin(
            &self,
            begin: IdempotencyBegin,
        ) -> Result<BeginOutcome, StoreError>;
        async fn idempotency_complete(
            &self,
            lock: &IdempotencyLock,
            response: &StoredResponse,
        ) -> Result<bool, StoreError>;
        async fn idempotency_release(&self, lock: &IdempotencyLock) -> Result<bool, StoreError>;
        async fn idempotency_reap(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    }
    PayoutStore {
        async fn plan_payouts(
            &self,
            fence: &Fence,
            lines: &[SettlementLine],
            now: DateTime<Utc>,
        ) -> Result<PayoutPlan, StoreError>;
        async fn payouts(&self, settlement_date: SettlementDate) -> Result<Vec<Payout>, StoreError>;
        async fn payouts_awaiting(
            &self,
            settlement_date: Option<SettlementDate>,
            merchant_id: Option<String>,
        ) -> Result<Vec<Payout>, StoreError>;
        async fn update_payout(&self, update: &PayoutUpdate) -> Result<Option<Payout>, StoreError>;
        async fn claim_payout_send(
            &self,
            claim: &PayoutClaim,
        ) -> Result<PayoutClaimOutcome, StoreError>;
        async fn finish_payout_send(
            &self,
            update: &PayoutUpdate,
            claimed_by: &str,
        ) -> Result<Option<Payout>, StoreError>;
        async fn payouts_with_status(
            &self,
            filter: &PayoutFilter,
        ) -> Result<Vec<Payout>, StoreError>;
        async fn hold_merchant(&self, hold: &MerchantHold) -> Result<u64, StoreError>;
        async fn release_merchant(
            &self,
            merchant_id: &str,
            now: DateTime<Utc>,
        ) -> Result<Option<u64>, StoreError>;
        async fn merchant_holds(&self) -> Result<Vec<MerchantHold>, StoreError>;
        async fn carry_forwards(&self, open_only: bool) -> Result<Vec<CarryForward>, StoreError>;
    }
    NotificationStore {
        async fn record_notification(&self, notification: &Notification) -> Result<(), StoreError>;
        async fn notifications(
            &self,
            settlement_date: SettlementDate,
        ) -> Result<Vec<Notification>, StoreError>;
    }
    SettlementStore {
        async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError>;
        async fn renew_lease(
            &self,
            fence: &Fence,
            expires_at: DateTime<Utc>,
        ) -> Result<(), StoreError>;
        async fn save_settlement_result(
            &self,
            fence: &Fence,
            result: &ComputedSettlement,
            now: DateTime<Utc>,
        ) -> Result<(), StoreError>;
        async fn fee_ledgers(
            &self,
            keys: Vec<PaymentKey>,
        ) -> Result<Vec<PaymentFeeLedger>, StoreError>;
        async fn complete_settlement(
            &self,
            fence: &Fence,
            now: DateTime<Utc>,
        ) -> Result<Settlement, StoreError>;
        async fn fail_settlement(
            &self,
            fence: &Fence,
            error: &str,
            now: DateTime<Utc>,
        ) -> Result<(), StoreError>;
        async fn settlement(
            &self,
            settlement_date: SettlementDate,
            revision: Option<u32>,
        ) -> Result<Option<Settlement>, StoreError>;
        async fn settlement_revisions(
            &self,
            settlement_date: SettlementDate,
        ) -> Result<Vec<Settlement>, StoreError>;
        async fn settlement_history(
            &self,
            filter: &HistoryFilter,
        ) -> Result<Vec<Settlement>, StoreError>;
        async fn settlement_lines(
            &self,
            settlement_date: SettlementDate,
            revision: u32,
        ) -> Result<Vec<SettlementLine>, StoreError>;
        async fn settlement_lines_page(
            &self,
            settlement_date: SettlementDate,
            revision: u32,
            query: &LinesQuery,
        ) -> Result<LinesPage, StoreError>;
    }
    AccessStore {
        async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError>;
        async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError>;
        async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
        async fn revoke_token(
            &self,
            name: &str,
            now: DateTime<Utc>,
        ) -> Result<Option<ApiToken>, StoreError>;
        async fn create_rerun_request(&self, request: &RerunRequest) -> Result<(), StoreError>;
        async fn rerun_request(&self, id: Uuid) -> Result<Option<RerunRequest>, StoreError>;
        async fn rerun_requests(
            &self,
            status: Option<RerunRequestStatus>,
        ) -> Result<Vec<RerunRequest>, StoreError>;
        async fn approve_rerun_request(
            &self,
            id: Uuid,
            decided_by: &str,
            claim: ClaimRequest,
        ) -> Result<RerunApproval, StoreError>;
        async fn reject_rerun_request(
            &self,
            id: Uuid,
            decided_by: &str,
            now: DateTime<Utc>,
        ) -> Result<Option<RerunRequest>, StoreError>;
    }
    AuditStore {
        async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
        // Has a default (in terms of `audit_events_matching`), listed all the same: it is timed
        // under its own name and the inner store's own implementation is the one used.
        async fn audit_events(
            &self,
            limit: u32,
            offset: u64,
        ) -> Result<Vec<AuditEvent>, StoreError>;
        async fn audit_events_matching(
            &self,
            filter: &AuditFilter,
            limit: u32,
            offset: u64,
        ) -> Result<Vec<AuditEvent>, StoreError>;
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
