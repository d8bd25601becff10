//! Telemetry: every metric and span name in one place, the functions that record them where things
//! happen, `/metrics` in Prometheus text, and tracing + OpenTelemetry set-up (OTLP off unless configured).
//!
//! Metrics are always recorded in-process (cheap atomics) and rendered on demand by
//! [`render_prometheus`]; `ops/METRICS.md` is the contract of their names, units, labels and
//! buckets. Spans are tracing spans; when export is on, [`tracing_layer`] hands them to
//! OpenTelemetry. Label values come from small fixed sets only: never a merchant id, a date, a key
//! or a token.

pub mod instruments;
mod process;
pub mod prometheus;
pub mod settings;
pub mod setup;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use settle_domain::model::{
    PayoutStatus, RunTrigger, Settlement, Transaction, TransactionKind, TransactionStatus,
};
use settle_domain::money::Currency;

pub use setup::{shutdown, start, ExportPlan, Started, TelemetryError};

pub use instruments::ReconciliationRow;
use instruments::{labels, Instruments};

/// Span names (the HTTP request span is named `{method} {route}` through `otel.name`).
pub mod spans {
    pub const HTTP_REQUEST: &str = "http.request";
    pub const SETTLEMENT_RUN: &str = "settlement.run";
    pub const PAYOUT_SEND: &str = "payout.send";
}

fn instruments() -> &'static Instruments {
    &setup::metrics().instruments
}

/// Every instrument now, in the Prometheus text format.
pub fn render_prometheus() -> Result<String, String> {
    setup::metrics().pull.render()
}

/// The layer that exports Settle's spans (targets `settle…`, level INFO and above) when span
/// export is on; `None` otherwise. Other crates' spans (HTTP clients, the exporters themselves)
/// are never exported.
pub fn tracing_layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let tracer = setup::tracer()?;
    let only_settle = Targets::new()
        .with_target("settle", LevelFilter::INFO)
        .with_target("settle_core", LevelFilter::INFO);
    Some(Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(only_settle),
    ))
}

/// The HTTP methods of the specification; any other is `_OTHER` (a label value is never free text).
pub fn http_method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A request in flight: counted in `http.server.active_requests` until dropped.
pub struct ActiveRequest {
    method: &'static str,
    started: Instant,
}

impl ActiveRequest {
    /// `method` from [`http_method_label`].
    pub fn start(method: &'static str) -> ActiveRequest {
        instruments()
            .http_active_requests
            .add(1, &[KeyValue::new(labels::HTTP_REQUEST_METHOD, method)]);
        ActiveRequest {
            method,
            started: Instant::now(),
        }
    }

    /// Records the request's duration. `route` is the route template or [`UNMATCHED_ROUTE`].
    pub fn finish(self, route: &str, status_code: u16) {
        instruments().http_request_duration.record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new(labels::HTTP_REQUEST_METHOD, self.method),
                KeyValue::new(labels::HTTP_ROUTE, route.to_string()),
                KeyValue::new(labels::HTTP_RESPONSE_STATUS_CODE, i64::from(status_code)),
            ],
        );
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        instruments().http_active_requests.add(
            -1,
            &[KeyValue::new(labels::HTTP_REQUEST_METHOD, self.method)],
        );
    }
}

/// The label values of the counters whose values are not the model's own (retry policies and
/// attempt outcomes, idempotency outcomes), and the currencies to expect: handed in by the
/// process that starts, which knows them (telemetry imports nothing above the model).
#[derive(Debug, Clone, Default)]
pub struct SeriesAtZero<'a> {
    pub currencies: &'a [Currency],
    pub retry_policies: &'a [&'static str],
    pub attempt_outcomes: &'a [&'static str],
    pub idempotency_outcomes: &'a [&'static str],
}

/// Exports every counter series whose label values are known at zero (Prometheus'
/// instrumentation practice), so that a fresh daemon's dashboards and burn-rate rules see series
/// from the start, not "no data". Per currency only for `known.currencies`. Histograms have no
/// zero observation in OpenTelemetry: they appear with their first.
pub fn export_at_zero(known: &SeriesAtZero) {
    let instruments = instruments();
    for currency in known.currencies {
        let currency = KeyValue::new(labels::CURRENCY, currency.code());
        for kind in TransactionKind::ALL {
            let kind = KeyValue::new(labels::KIND, kind.as_str());
            for status in TransactionStatus::ALL {
                instruments.payments.add(
                    0,
                    &[
                        kind.clone(),
                        KeyValue::new(labels::STATUS, status.as_str()),
                        currency.clone(),
                    ],
                );
            }
            instruments
                .payments_amount
                .add(0, &[kind, currency.clone()]);
        }
        for revision_kind in ["first", "rerun"] {
            let labels = [
                currency.clone(),
                KeyValue::new(labels::REVISION_KIND, revision_kind),
            ];
            for counter in [
                &instruments.settled_gross,
                &instruments.settled_fees,
                &instruments.settled_net,
            ] {
                counter.add(0, &labels);
            }
        }
    }
    for outcome in [
        RunOutcome::Completed,
        RunOutcome::Failed,
        RunOutcome::Interrupted,
    ] {
        for trigger in RunTrigger::ALL {
            instruments.settlement_runs.add(
                0,
                &[
                    KeyValue::new(labels::OUTCOME, outcome.as_str()),
                    KeyValue::new(labels::TRIGGER, trigger.as_str()),
                ],
            );
        }
    }
    for outcome in PayoutStatus::ALL {
        instruments
            .payouts
            .add(0, &[KeyValue::new(labels::OUTCOME, outcome.as_str())]);
    }
    for outcome in known.idempotency_outcomes {
        instruments
            .idempotency_requests
            .add(0, &[KeyValue::new(labels::OUTCOME, *outcome)]);
    }
    for policy in known.retry_policies {
        for outcome in known.attempt_outcomes {
            instruments.retry_attempts.add(
                0,
                &[
                    KeyValue::new(labels::POLICY, *policy),
                    KeyValue::new(labels::OUTCOME, *outcome),
                ],
            );
        }
    }
}

/// A transaction was written (not replayed, not found already there).
pub fn transaction_recorded(transaction: &Transaction) {
    let kind = KeyValue::new(labels::KIND, transaction.kind.as_str());
    let currency = KeyValue::new(labels::CURRENCY, transaction.currency.code());
    let instruments = instruments();
    instruments.payments.add(
        1,
        &[
            kind.clone(),
            KeyValue::new(labels::STATUS, transaction.status.as_str()),
            currency.clone(),
        ],
    );
    // A counter only grows: a debit adjustment (negative) counts by its magnitude.
    instruments
        .payments_amount
        .add(transaction.amount_minor.unsigned_abs(), &[kind, currency]);
}

/// How an idempotent request began (`new`, `replay`, `conflict`, `mismatch`).
pub fn idempotency_outcome(outcome: &'static str) {
    instruments()
        .idempotency_requests
        .add(1, &[KeyValue::new(labels::OUTCOME, outcome)]);
}

/// One attempt of a retried operation: the policy's name and how the attempt ended.
pub fn retry_attempt(policy: &'static str, outcome: &'static str) {
    instruments().retry_attempts.add(
        1,
        &[
            KeyValue::new(labels::POLICY, policy),
            KeyValue::new(labels::OUTCOME, outcome),
        ],
    );
}

/// How a settlement run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Failed,
    /// Stopped by a shutdown; its lease was released for another run to resume.
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }
}

/// A run (claimed revision) ended after `duration`.
pub fn settlement_run(outcome: RunOutcome, trigger: RunTrigger, duration: Duration) {
    let labels = [
        KeyValue::new(labels::OUTCOME, outcome.as_str()),
        KeyValue::new(labels::TRIGGER, trigger.as_str()),
    ];
    let instruments = instruments();
    instruments.settlement_runs.add(1, &labels);
    instruments
        .settlement_duration
        .record(duration.as_secs_f64(), &labels);
}

/// A revision completed: its totals per currency, and the lag moves up to its date's close.
pub fn settlement_completed(settlement: &Settlement) {
    let revision_kind = if settlement.revision <= 1 {
        "first"
    } else {
        "rerun"
    };
    let instruments = instruments();
    for totals in &settlement.totals {
        let labels = [
            KeyValue::new(labels::CURRENCY, totals.currency.code()),
            KeyValue::new(labels::REVISION_KIND, revision_kind),
        ];
        // Counters only grow: a negative day total (more refunded than paid) is not added; the
        // settlement itself is the record of it.
        let figures = &totals.figures;
        for (counter, amount) in [
            (&instruments.settled_gross, figures.gross_minor),
            (&instruments.settled_fees, figures.fees_minor),
            (&instruments.settled_net, figures.net_minor),
        ] {
            if let Ok(amount) = u64::try_from(amount) {
                counter.add(amount, &labels);
            }
        }
    }
    settled_through(settlement.window.end);
}

/// Every date up to one closing at `close` is settled (the lag is measured from the latest).
pub fn settled_through(close: DateTime<Utc>) {
    instruments::settled_through(close.timestamp_millis());
}

/// A payout reached `outcome` through Settle (sent, looked up, held, or told by a callback).
pub fn payout_outcome(outcome: PayoutStatus) {
    instruments()
        .payouts
        .add(1, &[KeyValue::new(labels::OUTCOME, outcome.as_str())]);
}

/// One store operation took `duration`.
pub fn store_operation(operation: &'static str, store: &'static str, duration: Duration) {
    instruments().store_operation_duration.record(
        duration.as_secs_f64(),
        &[
            KeyValue::new(labels::OPERATION, operation),
            KeyValue::new(labels::STORE, store),
        ],
    );
}

/// The reconciliation gauges now report `rows` (one per kind and currency), until the next call.
pub fn reconciliation_refreshed(rows: Vec<ReconciliationRow>) {
    // The instruments exist before anything is published, so a collection sees the rows.
    let _ = instruments();
    instruments::publish_reconciliation(rows);
}

/// Reads one sample of the current exposition (for tests): `series` is the Prometheus name and
/// `labels` the exact label set, in any order. `None` when the series is not exported.
pub fn sample(series: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = render_prometheus().ok()?;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series_and_labels, value) = line.rsplit_once(' ')?;
            let (name, label_text) = match series_and_labels.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series_and_labels, ""),
            };
            if name != series {
                return None;
            }
            let mut found: Vec<(String, String)> = label_text
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_string(), value.trim_end_matches('"').to_string()))
                })
                .collect();
            let mut wanted: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            found.sort();
            wanted.sort();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_outcomes_are_counted_by_name() {
        let replays = || {
            sample(
                "settle_idempotency_requests_total",
                &[("outcome", "replay")],
            )
            .unwrap_or(0.0)
        };
        let before = replays();
        idempotency_outcome("replay");
        idempotency_outcome("replay");
        assert!(replays() >= before + 2.0);
    }

    #[test]
    fn reconciliation_gauges_report_the_latest_snapshot_only() {
        let row = |currency: &str, open: u64| ReconciliationRow {
            kind: "bank",
            currency: currency.into(),
            items_by_status: vec![("matched", 7), ("unmatched", open)],
            open_exceptions: open,
            open_amount_minor: open * 1_000,
            oldest_age_days: open,
        };
        reconciliation_refreshed(vec![row("XTS", 2), row("XXX", 0)]);
        let bank_xts = [("kind", "bank"), ("currency", "XTS")];
        assert_eq!(
            sample("settle_reconciliation_exceptions", &bank_xts),
            Some(2.0)
        );
        assert_eq!(
            sample("settle_reconciliation_exceptions_amount", &bank_xts),
            Some(2_000.0)
        );
        assert_eq!(
            sample(
                "settle_reconciliation_exceptions_oldest_age_seconds",
                &bank_xts
            ),
            Some(2.0 * 86_400.0)
        );
        assert_eq!(
            sample(
                "settle_reconciliation_items",
                &[("kind", "bank"), ("currency", "XTS"), ("status", "matched")]
            ),
            Some(7.0)
        );
        let bank_xxx = [("kind", "bank"), ("currency", "XXX")];
        assert_eq!(
            sample("settle_reconciliation_exceptions", &bank_xxx),
            Some(0.0)
        );
        // A refresh replaces the snapshot: a pair it no longer holds is gone.
        reconciliation_refreshed(vec![row("XTS", 0)]);
        assert_eq!(
            sample("settle_reconciliation_exceptions", &bank_xts),
            Some(0.0)
        );
        assert_eq!(sample("settle_reconciliation_exceptions", &bank_xxx), None);
    }

    #[test]
    fn the_lag_counts_from_the_latest_close_and_never_goes_negative() {
        // Other tests may settle dates too; the lag only ever moves forward, so a close in the
        // far future (a negative lag clamps to 0) wins over theirs.
        let far = Utc::now() + chrono::Duration::days(365 * 100);
        settled_through(far);
        assert_eq!(sample("settle_settlement_lag_seconds", &[]), Some(0.0));
        settled_through(far - chrono::Duration::days(1));
        assert_eq!(sample("settle_settlement_lag_seconds", &[]), Some(0.0));
    }

    #[test]
    fn unknown_methods_are_one_label_value() {
        assert_eq!(http_method_label("POST"), "POST");
        assert_eq!(http_method_label("BREW"), "_OTHER");
    }

    #[test]
    fn process_metrics_are_exposed() {
        let text = render_prometheus().unwrap();
        assert!(
            text.contains("# TYPE process_cpu_time_seconds_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_memory_usage_bytes gauge"),
            "{text}"
        );
    }
}
