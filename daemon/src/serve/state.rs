//! What every request handler shares: the store, the settlement commands, the payments and
//! reconciliation services,
//! the settings, the clock, the scheduler's heartbeat and the tracker of background runs.

use std::sync::Arc;

use settle_core::config::Settings;
use settle_core::idempotency::Idempotency;
use settle_core::payments::PaymentService;
use settle_core::reconcile::ReconciliationService;
use settle_core::scheduler::Heartbeat;
use settle_core::secret::Secret;
use settle_core::settlement::SettlementCommands;
use settle_core::store::SharedStore;
use settle_core::time::Clock;
use tokio_util::task::TaskTracker;

/// Cheap to clone: everything is behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub commands: SettlementCommands,
    pub payments: PaymentService,
    pub reconciliation: ReconciliationService,
    /// Woken after a reconciliation request, so the gauges refresh at once (and every minute).
    pub reconciliation_changed: Arc<tokio::sync::Notify>,
    pub idempotency: Idempotency,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    /// `None` when the scheduler is off.
    pub heartbeat: Option<Arc<Heartbeat>>,
    /// Settlement runs started by requests; waited for (within a bound) at shutdown.
    pub tasks: TaskTracker,
    /// Verifies the provider's signed payout-status callbacks; `None`: callbacks are off.
    pub callback_secret: Option<Secret>,
}
