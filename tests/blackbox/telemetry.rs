//! Telemetry of a real `settle serve`: `/metrics` after real traffic holds the series of
//! `ops/METRICS.md` with the right labels and values; an OTLP/HTTP receiver in the test gets the
//! spans and metrics with the right names, attributes and resource; without configuration nothing
//! is exported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message as _;
use serde_json::Value;

use crate::daemon::{payment_body, Daemon, Setup};
use crate::http_peers::{serve, Peer};
use crate::provider_server::ProviderServer;

/// A business date long closed: triggers settle it at once.
const DATE: &str = "2024-03-10";
/// Noon (Aden) of `DATE`.
const OCCURRED_AT: &str = "2024-03-10T12:00:00+03:00";
/// Merchants of the test traffic: neither may ever be a label value.
const MERCHANTS: [&str; 2] = ["m-telemetry-1", "m-telemetry-2"];
/// The payments made (merchant, amount) and their sum in minor units.
const PAYMENTS: [(&str, &str); 3] = [
    ("m-telemetry-1", "12.50"),
    ("m-telemetry-1", "20.00"),
    ("m-telemetry-2", "5.00"),
];
const PAYMENTS_MINOR: f64 = 3_750.0;
/// One refund of the first payment.
const REFUND: &str = "1.00";
const REFUND_MINOR: f64 = 100.0;
/// How long a test waits for an export or a run.
const PATIENCE: Duration = Duration::from_secs(30);
/// The buckets `ops/METRICS.md` promises, as Prometheus writes them (`+Inf` added by the format).
const HTTP_BUCKETS: &[&str] = &[
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2", "2.5", "5", "10", "+Inf",
];
const SETTLEMENT_BUCKETS: &[&str] = &[
    "1", "5", "15", "30", "60", "120", "300", "600", "1800", "3600", "+Inf",
];
const STORE_BUCKETS: &[&str] = &[
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "+Inf",
];

/// One sample line of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the exposition; checks that every sample has a `# TYPE` (and `# HELP`) before it.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: BTreeSet<String> = BTreeSet::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(
                rest.split_once(' ')
                    .expect("# HELP name text")
                    .0
                    .to_string(),
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a sample value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains(family),
            "{name} has no # TYPE line before it"
        );
        assert!(
            helped.contains(family),
            "{name} has no # HELP line before it"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// `a="x",b="y \" z"` → {a: x, b: y " z}.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(escaped) => value.push(escaped),
                    None => panic!("dangling escape in {text}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The value of the sample `name{labels}` (exactly these labels).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

#[track_caller]
fn expect_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| {
        let same_name: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        panic!("no {name}{labels:?}; series of that name: {same_name:#?}")
    })
}

/// Checks one histogram series set: buckets exactly `bounds`, cumulative, `+Inf` = `_count`.
#[track_caller]
fn check_histogram(
    samples: &[Sample],
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[&str],
) -> f64 {
    let count = expect_value(samples, &format!("{name}_count"), labels);
    expect_value(samples, &format!("{name}_sum"), labels);
    let mut previous = 0.0;
    for bound in bounds {
        let mut with_le = labels.to_vec();
        with_le.push(("le", bound));
        let bucket = expect_value(samples, &format!("{name}_bucket"), &with_le);
        assert!(
            bucket >= previous,
            "{name} buckets are cumulative: le={bound}"
        );
        previous = bucket;
    }
    assert_eq!(
        previous, count,
        "{name}{labels:?}: le=\"+Inf\" equals _count"
    );
    let bucket_count = samples
        .iter()
        .filter(|s| {
            s.name == format!("{name}_bucket")
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                && s.labels.len() == labels.len() + 1
        })
        .count();
    assert_eq!(
        bucket_count,
        bounds.len(),
        "{name}: exactly the promised buckets"
    );
    count
}

/// Records the payments, a replay, a refund, a 404, a 401 and a trigger that settles `DATE`.
/// Returns the settlement as the API shows it once completed.
async fn make_traffic(daemon: &Daemon, token: &str) -> Value {
    let mut first_payment = None;
    for (index, (merchant, amount)) in PAYMENTS.iter().enumerate() {
        let reply = daemon
            .post("/api/v2/payments")
            .bearer(token)
            .key(&format!("telemetry-key-{index}"))
            .json(&payment_body(
                merchant,
                amount,
                &format!("tele-ref-{index}"),
                OCCURRED_AT,
            ))
            .send()
            .await;
        let body = reply.expect(201);
        first_payment.get_or_insert(body["id"].as_str().expect("id").to_string());
    }
    // The same request again: a replay, not a second payment.
    let (merchant, amount) = PAYMENTS[0];
    let replay = daemon
        .post("/api/v2/payments")
        .bearer(token)
        .key("telemetry-key-0")
        .json(&payment_body(merchant, amount, "tele-ref-0", OCCURRED_AT))
        .send()
        .await;
    replay.expect(201);
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    let payment_id = first_payment.expect("a payment");
    daemon
        .post(&format!("/api/v2/payments/{payment_id}/refunds"))
        .bearer(token)
        .key("telemetry-refund")
        .json(&serde_json::json!({
            "amount": REFUND,
            "external_ref": "tele-refund-0",
            "occurred_at": OCCURRED_AT,
        }))
        .send()
        .await
        .expect(201);
    daemon
        .get("/api/v2/no-such-route")
        .bearer(token)
        .send()
        .await
        .expect_problem(404, "not-found");
    daemon
        .get("/api/v2/finance/settlement/history")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    daemon
        .post(&format!("/api/v2/finance/settlement/trigger/{DATE}"))
        .bearer(token)
        .key("telemetry-trigger")
        .send()
        .await
        .expect(202);
    daemon.wait_for_status(token, DATE, &["completed"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_traffic_follow_the_contract() {
    let provider = ProviderServer::start();
    let config = format!(
        "[scheduler]\nenabled = false\n[payouts]\nprovider_url = \"{}\"\n",
        provider.base_url()
    );
    let setup = Setup::sqlite(&config);
    let token = setup.token("telemetry-operator", "operator");
    let daemon = setup.start();
    let settled = make_traffic(&daemon, &token).await;
    // The payouts of the run (one per merchant) are sent before the run completes.
    assert_eq!(provider.ledger().len(), MERCHANTS.len(), "{settled}");

    let reply = daemon.get("/metrics").send().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let samples = parse_exposition(&text);

    // Payments: counted once each (the replay is not), by kind, status and currency.
    let usd_payment = [
        ("kind", "payment"),
        ("status", "completed"),
        ("currency", "USD"),
    ];
    assert_eq!(
        expect_value(&samples, "settle_payments_total", &usd_payment),
        3.0
    );
    let usd_refund = [
        ("kind", "refund"),
        ("status", "completed"),
        ("currency", "USD"),
    ];
    assert_eq!(
        expect_value(&samples, "settle_payments_total", &usd_refund),
        1.0
    );
    assert_eq!(
        expect_value(
            &samples,
            "settle_payments_amount_total",
            &[("kind", "payment"), ("currency", "USD")]
        ),
        PAYMENTS_MINOR
    );
    assert_eq!(
        expect_value(
            &samples,
            "settle_payments_amount_total",
            &[("kind", "refund"), ("currency", "USD")]
        ),
        REFUND_MINOR
    );

    // Idempotency: three payments, the refund and the trigger were new; one replay.
    assert_eq!(
        expect_value(
            &samples,
            "settle_idempotency_requests_total",
            &[("outcome", "new")]
        ),
        5.0
    );
    assert_eq!(
        expect_value(
            &samples,
            "settle_idempotency_requests_total",
            &[("outcome", "replay")]
        ),
        1.0
    );

    // HTTP: one histogram per method, route template and status; counts match the requests made.
    let http = "http_server_request_duration_seconds";
    let route = |method, route, status| {
        [
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
        ]
    };
    for (labels, requests) in [
        (route("POST", "/api/v2/payments", "201"), 4.0),
        (route("POST", "/api/v2/payments/{id}/refunds", "201"), 1.0),
        (route("GET", "unmatched", "404"), 1.0),
        (
            route("GET", "/api/v2/finance/settlement/history", "401"),
            1.0,
        ),
        (
            route("POST", "/api/v2/finance/settlement/trigger/{date}", "202"),
            1.0,
        ),
    ] {
        assert_eq!(
            check_histogram(&samples, http, &labels, HTTP_BUCKETS),
            requests,
            "{labels:?}"
        );
    }
    let polls = check_histogram(
        &samples,
        http,
        &route("GET", "/api/v2/finance/settlement/{date}", "200"),
        HTTP_BUCKETS,
    );
    assert!(polls >= 1.0);
    // This very request is the one GET in flight.
    assert_eq!(
        expect_value(
            &samples,
            "http_server_active_requests",
            &[("http_request_method", "GET")]
        ),
        1.0
    );
    assert_eq!(
        expect_value(
            &samples,
            "http_server_active_requests",
            &[("http_request_method", "POST")]
        ),
        0.0
    );

    // The settlement run, its duration, its totals and the lag.
    let run = [("outcome", "completed"), ("trigger", "manual")];
    assert_eq!(
        expect_value(&samples, "settle_settlement_runs_total", &run),
        1.0
    );
    assert_eq!(
        check_histogram(
            &samples,
            "settle_settlement_duration_seconds",
            &run,
            SETTLEMENT_BUCKETS
        ),
        1.0
    );
    let totals = &settled["settlement"]["totals"][0];
    assert_eq!(totals["currency"], "USD", "{settled}");
    let first_usd = [("currency", "USD"), ("revision_kind", "first")];
    for (series, field) in [
        ("settle_settled_gross_total", "gross_minor"),
        ("settle_settled_fees_total", "fees_minor"),
        ("settle_settled_net_total", "net_minor"),
    ] {
        assert_eq!(
            expect_value(&samples, series, &first_usd),
            totals[field].as_i64().expect(field) as f64,
            "{series} = the settlement's {field}"
        );
    }
    assert_eq!(totals["gross_minor"], 3_750, "{settled}");
    let lag = expect_value(&samples, "settle_settlement_lag_seconds", &[]);
    let window_end: chrono::DateTime<chrono::Utc> = settled["settlement"]["window"]["end"]
        .as_str()
        .expect("window end")
        .parse()
        .expect("an instant");
    let expected_lag = (chrono::Utc::now() - window_end).num_seconds() as f64;
    assert!(
        (lag - expected_lag).abs() < 120.0,
        "lag {lag} s is the time since {DATE} closed ({expected_lag} s)"
    );

    // Payouts: one per merchant, accepted by the provider.
    let paid: f64 = ["sent", "confirmed"]
        .iter()
        .filter_map(|outcome| value(&samples, "settle_payouts_total", &[("outcome", outcome)]))
        .sum();
    assert_eq!(paid, MERCHANTS.len() as f64, "{text}");

    // Store operations, by operation and store; every payment write is one record_transaction.
    let write = [("operation", "record_transaction"), ("store", "sqlite")];
    assert_eq!(
        check_histogram(
            &samples,
            "settle_store_operation_duration_seconds",
            &write,
            STORE_BUCKETS
        ),
        4.0
    );
    let claim = [("operation", "claim_settlement"), ("store", "sqlite")];
    assert!(
        check_histogram(
            &samples,
            "settle_store_operation_duration_seconds",
            &claim,
            STORE_BUCKETS
        ) >= 1.0
    );

    // The process.
    assert!(expect_value(&samples, "process_cpu_time_seconds_total", &[]) > 0.0);
    assert!(expect_value(&samples, "process_memory_usage_bytes", &[]) > 1_000_000.0);

    // Low cardinality: no merchant id, date, key, token or id is ever a label value.
    let forbidden: Vec<String> = MERCHANTS
        .iter()
        .map(|m| m.to_string())
        .chain([DATE.to_string(), token.clone(), "telemetry-key-0".into()])
        .collect();
    for sample in &samples {
        for (key, label) in &sample.labels {
            assert!(
                !forbidden.iter().any(|f| label.contains(f.as_str())),
                "{} has {key}={label:?}",
                sample.name
            );
            assert!(
                !label.contains("stl_"),
                "a token in {}: {label}",
                sample.name
            );
            let looks_like_a_date = label.len() >= 10
                && label.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        *b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            assert!(!looks_like_a_date, "a date in {}: {label}", sample.name);
            assert!(
                uuid::Uuid::parse_str(label).is_err(),
                "an id in {}: {key}={label}",
                sample.name
            );
        }
    }
    // Every series name belongs to the contract.
    let contract = [
        "http_server_request_duration_seconds_bucket",
        "http_server_request_duration_seconds_sum",
        "http_server_request_duration_seconds_count",
        "http_server_active_requests",
        "settle_payments_total",
        "settle_payments_amount_total",
        "settle_settlement_runs_total",
        "settle_settlement_duration_seconds_bucket",
        "settle_settlement_duration_seconds_sum",
        "settle_settlement_duration_seconds_count",
        "settle_settlement_lag_seconds",
        "settle_settled_gross_total",
        "settle_settled_fees_total",
        "settle_settled_net_total",
        "settle_payouts_total",
        "settle_idempotency_requests_total",
        "settle_retry_attempts_total",
        "settle_store_operation_duration_seconds_bucket",
        "settle_store_operation_duration_seconds_sum",
        "settle_store_operation_duration_seconds_count",
        "process_cpu_time_seconds_total",
        "process_memory_usage_bytes",
    ];
    for sample in &samples {
        assert!(
            contract.contains(&sample.name.as_str()),
            "{} is not in ops/METRICS.md",
            sample.name
        );
    }
}

/// What the OTLP receiver was sent, decoded, with the headers of each request.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    headers: Vec<HeaderMap>,
}

type Shared = Arc<Mutex<Received>>;

/// An OTLP/HTTP (protobuf) receiver on 127.0.0.1, as a collector's `otlp` receiver would be.
struct Receiver {
    peer: Peer,
    received: Shared,
}

impl Receiver {
    fn start() -> Receiver {
        let received: Shared = Arc::default();
        let router = Router::new()
            .route("/v1/traces", post(receive_traces))
            .route("/v1/metrics", post(receive_metrics))
            .with_state(received.clone());
        Receiver {
            peer: serve(router),
            received,
        }
    }

    fn base_url(&self) -> &str {
        self.peer.base_url()
    }

    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let received = self.received.lock().unwrap();
        received
            .traces
            .iter()
            .flat_map(|request| &request.resource_spans)
            .flat_map(|resource_spans| {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                resource_spans
                    .scope_spans
                    .iter()
                    .flat_map(|scope| scope.spans.clone())
                    .map(move |span| (resource.clone(), span))
            })
            .collect()
    }

    fn metrics(&self) -> Vec<(Vec<KeyValue>, Metric)> {
        let received = self.received.lock().unwrap();
        received
            .metrics
            .iter()
            .flat_map(|request| &request.resource_metrics)
            .flat_map(|resource_metrics| {
                let resource = resource_metrics
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                resource_metrics
                    .scope_metrics
                    .iter()
                    .flat_map(|scope| scope.metrics.clone())
                    .map(move |metric| (resource.clone(), metric))
            })
            .collect()
    }

    fn request_count(&self) -> usize {
        let received = self.received.lock().unwrap();
        received.traces.len() + received.metrics.len()
    }

    fn headers(&self) -> Vec<HeaderMap> {
        self.received.lock().unwrap().headers.clone()
    }

    /// Waits until `ready` holds of what arrived; panics with `what` after `PATIENCE`.
    async fn wait_for(&self, what: &str, ready: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready(self) {
            assert!(Instant::now() < deadline, "the receiver never got {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn protobuf_answer(body: Vec<u8>) -> axum::response::Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        body,
    )
        .into_response()
}

async fn receive_traces(
    State(received): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut received = received.lock().unwrap();
    received.traces.push(request);
    received.headers.push(headers);
    protobuf_answer(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn receive_metrics(
    State(received): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut received = received.lock().unwrap();
    received.metrics.push(request);
    received.headers.push(headers);
    protobuf_answer(ExportMetricsServiceResponse::default().encode_to_vec())
}

/// An attribute's value as text (strings as they are, numbers in decimal).
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::IntValue(n) => n.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(x) => x.to_string(),
        other => format!("{other:?}"),
    })
}

fn has_metric(receiver: &Receiver, name: &str) -> bool {
    receiver
        .metrics()
        .iter()
        .any(|(_, metric)| metric.name == name)
}

/// The latest value of a sum's data point with these attributes.
fn sum_value(receiver: &Receiver, name: &str, attributes: &[(&str, &str)]) -> Option<f64> {
    receiver
        .metrics()
        .iter()
        .filter(|(_, metric)| metric.name == name)
        .filter_map(|(_, metric)| match &metric.data {
            Some(metric::Data::Sum(sum)) => Some(sum.clone()),
            _ => None,
        })
        .flat_map(|sum| sum.data_points)
        .filter(|point| {
            attributes
                .iter()
                .all(|(k, v)| attribute(&point.attributes, k).as_deref() == Some(*v))
        })
        .filter_map(|point| match point.value? {
            number_data_point::Value::AsInt(n) => Some(n as f64),
            number_data_point::Value::AsDouble(x) => Some(x),
        })
        .next_back()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver_with_the_resource() {
    let receiver = Receiver::start();
    let config = format!(
        "[scheduler]\nenabled = false\n[telemetry]\notlp_endpoint = \"{}\"\nenvironment = \"blackbox\"\nexport_interval_ms = 200\n",
        receiver.base_url()
    );
    // Headers (an API key, say) come from the environment only, and are never printed.
    let setup = Setup::sqlite(&config).env(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "x-collector-key=sekret-otlp-key",
    );
    let token = setup.token("otlp-operator", "operator");
    let mut daemon = setup.start();
    make_traffic(&daemon, &token).await;

    receiver
        .wait_for("settle.settlement.runs", |r| {
            sum_value(
                r,
                "settle.settlement.runs",
                &[("outcome", "completed"), ("trigger", "manual")],
            ) == Some(1.0)
        })
        .await;
    assert_eq!(
        sum_value(
            &receiver,
            "settle.payments",
            &[
                ("kind", "payment"),
                ("status", "completed"),
                ("currency", "USD")
            ]
        ),
        Some(3.0)
    );
    assert!(has_metric(&receiver, "settle.settlement.duration"));
    let (resource, duration) = receiver
        .metrics()
        .into_iter()
        .find(|(_, metric)| metric.name == "http.server.request.duration")
        .expect("http.server.request.duration");
    assert_eq!(duration.unit, "s");
    let Some(metric::Data::Histogram(histogram)) = &duration.data else {
        panic!("http.server.request.duration is a histogram: {duration:?}");
    };
    let payments_point = histogram
        .data_points
        .iter()
        .find(|p| {
            attribute(&p.attributes, "http.route").as_deref() == Some("/api/v2/payments")
                && attribute(&p.attributes, "http.request.method").as_deref() == Some("POST")
                && attribute(&p.attributes, "http.response.status_code").as_deref() == Some("201")
        })
        .expect("a POST /api/v2/payments 201 point");
    assert_eq!(payments_point.count, 4);
    assert_eq!(
        payments_point.explicit_bounds,
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
    );
    assert_eq!(
        attribute(&resource, "service.name").as_deref(),
        Some("settle")
    );
    assert_eq!(
        attribute(&resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        attribute(&resource, "deployment.environment").as_deref(),
        Some("blackbox")
    );

    // Stopping flushes the spans still batched.
    let status = daemon.terminate(PATIENCE);
    assert!(status.success(), "{}", daemon.output());
    let spans = receiver.spans();
    let named = |name: &str| -> Vec<(Vec<KeyValue>, Span)> {
        spans
            .iter()
            .filter(|(_, span)| span.name == name)
            .cloned()
            .collect()
    };
    let payments = named("POST /api/v2/payments");
    assert_eq!(
        payments.len(),
        4,
        "one span per request: {:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    let (resource, span) = &payments[0];
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(&span.attributes, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(&span.attributes, "http.route").as_deref(),
        Some("/api/v2/payments")
    );
    assert_eq!(
        attribute(&span.attributes, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attribute(resource, "service.name").as_deref(),
        Some("settle")
    );
    let unmatched = named("GET unmatched");
    assert_eq!(unmatched.len(), 1);
    assert_eq!(
        attribute(&unmatched[0].1.attributes, "http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(
        named("POST /api/v2/finance/settlement/trigger/{date}").len(),
        1
    );

    let runs = named("settlement.run");
    assert_eq!(runs.len(), 1, "one settlement run span");
    let run = &runs[0].1;
    for (key, expected) in [
        ("settlement_date", DATE),
        ("revision", "1"),
        ("trigger", "manual"),
        ("outcome", "completed"),
    ] {
        assert_eq!(
            attribute(&run.attributes, key).as_deref(),
            Some(expected),
            "{key}: {run:?}"
        );
    }

    // The key went as a header on every export, and never into the daemon's output.
    let headers = receiver.headers();
    assert!(!headers.is_empty());
    for request_headers in &headers {
        assert_eq!(
            request_headers
                .get("x-collector-key")
                .and_then(|v| v.to_str().ok()),
            Some("sekret-otlp-key")
        );
    }
    assert!(
        !daemon.output().contains("sekret-otlp-key"),
        "{}",
        daemon.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_endpoint_variable_alone_turns_export_on_for_one_shot_commands_too() {
    let receiver = Receiver::start();
    let setup = Setup::sqlite("[scheduler]\nenabled = false\n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url())
        .env("OTEL_METRIC_EXPORT_INTERVAL", "60000");
    let token = setup.token("env-operator", "operator");
    let daemon = setup.start();
    daemon
        .post("/api/v2/payments")
        .bearer(&token)
        .key("env-key-1")
        .json(&payment_body(
            MERCHANTS[0],
            "3.00",
            "env-ref-1",
            OCCURRED_AT,
        ))
        .send()
        .await
        .expect(201);
    receiver
        .wait_for("the payment's request span", |r| {
            r.spans()
                .iter()
                .any(|(_, span)| span.name == "POST /api/v2/payments")
        })
        .await;
    drop(daemon);

    // A one-shot `settle run` flushes its run span and metrics before it exits, well before the
    // 60 s export interval.
    let before = receiver.spans().len();
    setup.settle(&["run", "--date", DATE]).assert_ok();
    let spans = receiver.spans();
    let run = spans[before..]
        .iter()
        .find(|(_, span)| span.name == "settlement.run")
        .expect("the run's span, flushed at exit");
    assert_eq!(
        attribute(&run.1.attributes, "trigger").as_deref(),
        Some("manual")
    );
    assert_eq!(attribute(&run.0, "service.name").as_deref(), Some("settle"));
    assert_eq!(
        sum_value(
            &receiver,
            "settle.settlement.runs",
            &[("outcome", "completed"), ("trigger", "manual")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telemetry_configured_nothing_is_exported_and_the_daemon_works() {
    let receiver = Receiver::start();
    // Headers alone configure nothing; a disabled SDK ignores even an endpoint.
    let quiet = Setup::sqlite("[scheduler]\nenabled = false\n")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=unused");
    let disabled = Setup::sqlite("[scheduler]\nenabled = false\n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url())
        .env("OTEL_SDK_DISABLED", "true");
    for setup in [quiet, disabled] {
        let token = setup.token("quiet-operator", "operator");
        let mut daemon = setup.start();
        daemon
            .post("/api/v2/payments")
            .bearer(&token)
            .key("quiet-key-1")
            .json(&payment_body(
                MERCHANTS[0],
                "3.00",
                "quiet-ref-1",
                OCCURRED_AT,
            ))
            .send()
            .await
            .expect(201);
        let metrics = daemon.get("/metrics").send().await;
        assert_eq!(metrics.status, 200);
        let samples = parse_exposition(&metrics.text());
        assert_eq!(
            value(
                &samples,
                "settle_payments_total",
                &[
                    ("kind", "payment"),
                    ("status", "completed"),
                    ("currency", "USD")
                ]
            ),
            Some(1.0)
        );
        assert!(daemon.terminate(PATIENCE).success(), "{}", daemon.output());
        assert!(!daemon.output().contains("OTLP"), "{}", daemon.output());
    }
    assert_eq!(receiver.request_count(), 0, "nothing was exported");
}

/// Counters with known label values are exported at zero by a fresh daemon (no request, no run):
/// `rate()`, `increase()` and the burn-rate rules see a series from the start, not "no data".
/// Per currency for the currencies the configuration names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_daemon_exports_its_counters_at_zero() {
    let setup =
        Setup::sqlite("[scheduler]\nenabled = false\n[fees.default]\nfixed = { SAR = \"0.50\" }\n");
    let mut daemon = setup.start();
    let metrics = daemon.get("/metrics").send().await;
    assert_eq!(metrics.status, 200);
    let samples = parse_exposition(&metrics.text());
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            value(&samples, name, labels),
            Some(0.0),
            "{name} {labels:?} at zero in:\n{}",
            metrics.text()
        );
    };
    for outcome in ["failed", "unknown", "sent", "confirmed", "held", "pending"] {
        zero("settle_payouts_total", &[("outcome", outcome)]);
    }
    for (outcome, trigger) in [("failed", "scheduler"), ("completed", "manual")] {
        zero(
            "settle_settlement_runs_total",
            &[("outcome", outcome), ("trigger", trigger)],
        );
    }
    zero(
        "settle_payments_total",
        &[
            ("kind", "refund"),
            ("status", "completed"),
            ("currency", "SAR"),
        ],
    );
    for series in [
        "settle_settled_gross_total",
        "settle_settled_fees_total",
        "settle_settled_net_total",
    ] {
        zero(series, &[("currency", "SAR"), ("revision_kind", "first")]);
    }
    zero(
        "settle_idempotency_requests_total",
        &[("outcome", "conflict")],
    );
    zero(
        "settle_retry_attempts_total",
        &[("policy", "database"), ("outcome", "retried")],
    );
    assert!(daemon.terminate(PATIENCE).success(), "{}", daemon.output());
}
