//! Every instrument Settle records, defined once with its OpenTelemetry name, unit and buckets (the
//! contract of `ops/METRICS.md`), created from the SDK meter provider and held behind a global.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableGauge, UpDownCounter,
};

use super::process;

/// The instruments' names (OpenTelemetry); `/metrics` shows them translated (see `prometheus.rs`).
pub mod names {
    pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
    pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http.server.active_requests";
    pub const PAYMENTS: &str = "settle.payments";
    pub const PAYMENTS_AMOUNT: &str = "settle.payments.amount";
    pub const SETTLEMENT_RUNS: &str = "settle.settlement.runs";
    pub const SETTLEMENT_DURATION: &str = "settle.settlement.duration";
    pub const SETTLEMENT_LAG: &str = "settle.settlement.lag";
    pub const SETTLED_GROSS: &str = "settle.settled.gross";
    pub const SETTLED_FEES: &str = "settle.settled.fees";
    pub const SETTLED_NET: &str = "settle.settled.net";
    pub const PAYOUTS: &str = "settle.payouts";
    pub const IDEMPOTENCY_REQUESTS: &str = "settle.idempotency.requests";
    pub const RETRY_ATTEMPTS: &str = "settle.retry.attempts";
    pub const STORE_OPERATION_DURATION: &str = "settle.store.operation.duration";
    pub const RECONCILIATION_ITEMS: &str = "settle.reconciliation.items";
    pub const RECONCILIATION_EXCEPTIONS: &str = "settle.reconciliation.exceptions";
    pub const RECONCILIATION_EXCEPTIONS_AMOUNT: &str = "settle.reconciliation.exceptions.amount";
    pub const RECONCILIATION_EXCEPTIONS_OLDEST_AGE: &str =
        "settle.reconciliation.exceptions.oldest_age";
    pub const PROCESS_CPU_TIME: &str = "process.cpu.time";
    pub const PROCESS_MEMORY_USAGE: &str = "process.memory.usage";
}

/// Label (attribute) keys. Values are always from small fixed sets: never a merchant id, a date,
/// a key or a token.
pub mod labels {
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const KIND: &str = "kind";
    pub const STATUS: &str = "status";
    pub const CURRENCY: &str = "currency";
    pub const OUTCOME: &str = "outcome";
    pub const TRIGGER: &str = "trigger";
    pub const REVISION_KIND: &str = "revision_kind";
    pub const POLICY: &str = "policy";
    pub const OPERATION: &str = "operation";
    pub const STORE: &str = "store";
}

/// Bucket bounds in seconds. The HTTP ones include every SLO threshold of the alert rules.
pub const HTTP_DURATION_BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
];
pub const SETTLEMENT_DURATION_BUCKETS_S: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
pub const STORE_DURATION_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Units as OpenTelemetry (UCUM) writes them; `{…}` are annotations that Prometheus names drop.
mod units {
    pub const SECONDS: &str = "s";
    pub const BYTES: &str = "By";
    pub const REQUESTS: &str = "{request}";
    pub const TRANSACTIONS: &str = "{transaction}";
    pub const MINOR_UNITS: &str = "{minor_unit}";
    pub const RUNS: &str = "{run}";
    pub const PAYOUTS: &str = "{payout}";
    pub const ATTEMPTS: &str = "{attempt}";
    pub const ITEMS: &str = "{item}";
}

/// The instruments. Recording is cheap (an atomic add under a lookup of the label set).
pub struct Instruments {
    pub http_request_duration: Histogram<f64>,
    pub http_active_requests: UpDownCounter<i64>,
    pub payments: Counter<u64>,
    pub payments_amount: Counter<u64>,
    pub settlement_runs: Counter<u64>,
    pub settlement_duration: Histogram<f64>,
    pub settled_gross: Counter<u64>,
    pub settled_fees: Counter<u64>,
    pub settled_net: Counter<u64>,
    pub payouts: Counter<u64>,
    pub idempotency_requests: Counter<u64>,
    pub retry_attempts: Counter<u64>,
    pub store_operation_duration: Histogram<f64>,
    // Observed at each collection; kept so that their callbacks live as long as the instruments.
    _settlement_lag: ObservableGauge<f64>,
    _process_cpu_time: ObservableCounter<f64>,
    _process_memory_usage: ObservableGauge<u64>,
    _reconciliation_items: ObservableGauge<u64>,
    _reconciliation_exceptions: ObservableGauge<u64>,
    _reconciliation_exceptions_amount: ObservableGauge<u64>,
    _reconciliation_exceptions_oldest_age: ObservableGauge<f64>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        Instruments {
            http_request_duration: meter
                .f64_histogram(names::HTTP_SERVER_REQUEST_DURATION)
                .with_unit(units::SECONDS)
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(HTTP_DURATION_BUCKETS_S.to_vec())
                .build(),
            http_active_requests: meter
                .i64_up_down_counter(names::HTTP_SERVER_ACTIVE_REQUESTS)
                .with_unit(units::REQUESTS)
                .with_description("Number of HTTP server requests in flight.")
                .build(),
            payments: meter
                .u64_counter(names::PAYMENTS)
                .with_unit(units::TRANSACTIONS)
                .with_description(
                    "Transactions recorded (payments, refunds, chargebacks, adjustments); replays are not counted.",
                )
                .build(),
            payments_amount: meter
                .u64_counter(names::PAYMENTS_AMOUNT)
                .with_unit(units::MINOR_UNITS)
                .with_description(
                    "Amounts of the transactions recorded, in minor units of their currency (magnitude: a debit adjustment adds its absolute value).",
                )
                .build(),
            settlement_runs: meter
                .u64_counter(names::SETTLEMENT_RUNS)
                .with_unit(units::RUNS)
                .with_description("Settlement runs that ended, by outcome and trigger.")
                .build(),
            settlement_duration: meter
                .f64_histogram(names::SETTLEMENT_DURATION)
                .with_unit(units::SECONDS)
                .with_description("Duration of settlement runs, from claim to outcome.")
                .with_boundaries(SETTLEMENT_DURATION_BUCKETS_S.to_vec())
                .build(),
            settled_gross: meter
                .u64_counter(names::SETTLED_GROSS)
                .with_unit(units::MINOR_UNITS)
                .with_description("Gross of each completed settlement revision, in minor units.")
                .build(),
            settled_fees: meter
                .u64_counter(names::SETTLED_FEES)
                .with_unit(units::MINOR_UNITS)
                .with_description("Fees of each completed settlement revision, in minor units.")
                .build(),
            settled_net: meter
                .u64_counter(names::SETTLED_NET)
                .with_unit(units::MINOR_UNITS)
                .with_description(
                    "Net of each completed settlement revision, in minor units (a negative day total is not added).",
                )
                .build(),
            payouts: meter
                .u64_counter(names::PAYOUTS)
                .with_unit(units::PAYOUTS)
                .with_description("Payouts by the outcome Settle recorded for them.")
                .build(),
            idempotency_requests: meter
                .u64_counter(names::IDEMPOTENCY_REQUESTS)
                .with_unit(units::REQUESTS)
                .with_description("Idempotent requests by outcome (new, replay, conflict, mismatch).")
                .build(),
            retry_attempts: meter
                .u64_counter(names::RETRY_ATTEMPTS)
                .with_unit(units::ATTEMPTS)
                .with_description("Attempts of retried operations, by policy and outcome.")
                .build(),
            store_operation_duration: meter
                .f64_histogram(names::STORE_OPERATION_DURATION)
                .with_unit(units::SECONDS)
                .with_description("Duration of store operations, by operation and store.")
                .with_boundaries(STORE_DURATION_BUCKETS_S.to_vec())
                .build(),
            _settlement_lag: meter
                .f64_observable_gauge(names::SETTLEMENT_LAG)
                .with_unit(units::SECONDS)
                .with_description(
                    "Seconds since the close of the latest completed settlement date (absent until known).",
                )
                .with_callback(|observer| {
                    if let Some(lag_seconds) = settlement_lag_seconds(now_ms()) {
                        observer.observe(lag_seconds, &[]);
                    }
                })
                .build(),
            _process_cpu_time: meter
                .f64_observable_counter(names::PROCESS_CPU_TIME)
                .with_unit(units::SECONDS)
                .with_description("CPU time (user and system) used by the process.")
                .with_callback(|observer| {
                    if let Some(seconds) = process::cpu_time_seconds() {
                        observer.observe(seconds, &[]);
                    }
                })
                .build(),
            _process_memory_usage: meter
                .u64_observable_gauge(names::PROCESS_MEMORY_USAGE)
                .with_unit(units::BYTES)
                .with_description("Resident memory of the process.")
                .with_callback(|observer| {
                    if let Some(bytes) = process::resident_memory_bytes() {
                        observer.observe(bytes, &[]);
                    }
                })
                .build(),
            _reconciliation_items: meter
                .u64_observable_gauge(names::RECONCILIATION_ITEMS)
                .with_unit(units::ITEMS)
                .with_description(
                    "Reconciliation items (records of ours and statement entries) by kind, currency and status, as of the latest refresh.",
                )
                .with_callback(|observer| {
                    for_each_reconciliation_row(|row| {
                        for (status, count) in &row.items_by_status {
                            observer.observe(*count, &row.labels_with_status(status));
                        }
                    })
                })
                .build(),
            _reconciliation_exceptions: meter
                .u64_observable_gauge(names::RECONCILIATION_EXCEPTIONS)
                .with_unit(units::ITEMS)
                .with_description("Open reconciliation exceptions by kind and currency.")
                .with_callback(|observer| {
                    for_each_reconciliation_row(|row| {
                        observer.observe(row.open_exceptions, &row.labels())
                    })
                })
                .build(),
            _reconciliation_exceptions_amount: meter
                .u64_observable_gauge(names::RECONCILIATION_EXCEPTIONS_AMOUNT)
                .with_unit(units::MINOR_UNITS)
                .with_description(
                    "Sum of the open reconciliation exceptions' amounts (absolute), in minor units of their currency.",
                )
                .with_callback(|observer| {
                    for_each_reconciliation_row(|row| {
                        observer.observe(row.open_amount_minor, &row.labels())
                    })
                })
                .build(),
            _reconciliation_exceptions_oldest_age: meter
                .f64_observable_gauge(names::RECONCILIATION_EXCEPTIONS_OLDEST_AGE)
                .with_unit(units::SECONDS)
                .with_description(
                    "Age of the oldest open reconciliation exception (whole days since its business date, in seconds; 0 when none is open).",
                )
                .with_callback(|observer| {
                    for_each_reconciliation_row(|row| {
                        // Whole days to seconds: a duration, not money.
                        observer.observe(row.oldest_age_days as f64 * 86_400.0, &row.labels())
                    })
                })
                .build(),
        }
    }
}

/// No settlement date completed yet (as far as this process knows).
const UNKNOWN: i64 = i64::MIN;

/// The close (Unix ms) of the latest completed settlement date this process knows of.
static SETTLED_THROUGH_MS: AtomicI64 = AtomicI64::new(UNKNOWN);

/// Notes that every date up to one closing at `close_ms` is settled; only ever moves forward.
pub fn settled_through(close_ms: i64) {
    SETTLED_THROUGH_MS.fetch_max(close_ms, Ordering::Relaxed);
}

/// The lag at `now_ms`, or `None` while no completed date is known.
fn settlement_lag_seconds(now_ms: i64) -> Option<f64> {
    let close_ms = SETTLED_THROUGH_MS.load(Ordering::Relaxed);
    if close_ms == UNKNOWN {
        return None;
    }
    // Milliseconds to seconds: a duration, not money, so a float is right here.
    Some(now_ms.saturating_sub(close_ms).max(0) as f64 / 1000.0)
}

/// The wall clock at the edge: telemetry reads it when a collection asks, nowhere else.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One kind and currency of reconciliation as of the latest refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationRow {
    pub kind: &'static str,
    pub currency: String,
    /// Items by status name (every status with at least one item).
    pub items_by_status: Vec<(&'static str, u64)>,
    pub open_exceptions: u64,
    /// Σ |amount| of the open exceptions, in minor units.
    pub open_amount_minor: u64,
    /// Days since the oldest open exception's business date; 0 when none is open.
    pub oldest_age_days: u64,
}

impl ReconciliationRow {
    fn labels(&self) -> [opentelemetry::KeyValue; 2] {
        [
            opentelemetry::KeyValue::new(labels::KIND, self.kind),
            opentelemetry::KeyValue::new(labels::CURRENCY, self.currency.clone()),
        ]
    }

    fn labels_with_status(&self, status: &'static str) -> [opentelemetry::KeyValue; 3] {
        let [kind, currency] = self.labels();
        [
            kind,
            currency,
            opentelemetry::KeyValue::new(labels::STATUS, status),
        ]
    }
}

/// The latest reconciliation snapshot the daemon published (empty until the first refresh).
static RECONCILIATION: Mutex<Vec<ReconciliationRow>> = Mutex::new(Vec::new());

/// Replaces the reconciliation snapshot the gauges report.
pub fn publish_reconciliation(rows: Vec<ReconciliationRow>) {
    let mut held = RECONCILIATION.lock().unwrap_or_else(|e| e.into_inner());
    *held = rows;
}

fn for_each_reconciliation_row(mut each: impl FnMut(&ReconciliationRow)) {
    let held = RECONCILIATION.lock().unwrap_or_else(|e| e.into_inner());
    for row in held.iter() {
        each(row);
    }
}
