//! `/metrics`: a pull reader on the meter provider and a small encoder of the Prometheus text format
//! (0.0.4) applying the OpenTelemetry → Prometheus translation that `ops/METRICS.md` relies on.
//!
//! The translation: dots and other characters Prometheus does not allow become `_`; the unit
//! becomes a suffix (`s` → `_seconds`, `By` → `_bytes`; `{…}` annotations are dropped); monotonic
//! counters end in `_total`; an up-down counter is a gauge; histograms give `_bucket{le}`
//! (cumulative, ending at `+Inf`), `_sum` and `_count`. Label names are translated like metric
//! names, label values escaped (`\\`, `\"`, `\n`).

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A [`ManualReader`] that both the meter provider (which owns its readers) and `/metrics` hold.
#[derive(Debug, Clone)]
pub struct PullReader(Arc<ManualReader>);

impl PullReader {
    /// Cumulative, as Prometheus expects.
    pub fn new() -> PullReader {
        PullReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ))
    }

    /// Collects every instrument now and renders the text exposition.
    pub fn render(&self) -> Result<String, String> {
        let mut collected = ResourceMetrics::default();
        self.0
            .collect(&mut collected)
            .map_err(|error| format!("cannot collect metrics: {error}"))?;
        Ok(encode(&families(&collected)))
    }
}

impl Default for PullReader {
    fn default() -> Self {
        PullReader::new()
    }
}

impl MetricReader for PullReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// What Prometheus calls a metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic sum: `_total`.
    Counter,
    /// A gauge, or a sum that may go down (an up-down counter).
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value, kept in its own type so that integers print exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(Number),
    /// `bucket_counts` holds one count per bucket (not cumulative): `bounds.len() + 1` of them,
    /// the last for values above every bound.
    Histogram {
        bounds: Vec<f64>,
        bucket_counts: Vec<u64>,
        sum: Number,
        count: u64,
    },
}

/// One labelled series (or, for a histogram, one labelled set of series).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// OpenTelemetry attribute keys and values, as recorded.
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

/// One instrument as collected, still under its OpenTelemetry name and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub unit: String,
    pub description: String,
    pub kind: Kind,
    pub points: Vec<Point>,
}

/// The instruments of a collection, as families to encode.
pub fn families(collected: &ResourceMetrics) -> Vec<Family> {
    let mut found = Vec::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            let (kind, points) = match metric.data() {
                AggregatedMetrics::F64(data) => points(data, Number::F64),
                AggregatedMetrics::U64(data) => points(data, Number::U64),
                AggregatedMetrics::I64(data) => points(data, Number::I64),
            };
            if points.is_empty() {
                continue;
            }
            found.push(Family {
                name: metric.name().to_string(),
                unit: metric.unit().to_string(),
                description: metric.description().to_string(),
                kind,
                points,
            });
        }
    }
    found
}

fn points<T: Copy>(data: &MetricData<T>, number: fn(T) -> Number) -> (Kind, Vec<Point>) {
    match data {
        MetricData::Gauge(gauge) => (
            Kind::Gauge,
            gauge
                .data_points()
                .map(|p| Point {
                    labels: labels(p.attributes()),
                    value: Value::Number(number(p.value())),
                })
                .collect(),
        ),
        MetricData::Sum(sum) => (
            if sum.is_monotonic() {
                Kind::Counter
            } else {
                Kind::Gauge
            },
            sum.data_points()
                .map(|p| Point {
                    labels: labels(p.attributes()),
                    value: Value::Number(number(p.value())),
                })
                .collect(),
        ),
        MetricData::Histogram(histogram) => (
            Kind::Histogram,
            histogram
                .data_points()
                .map(|p| Point {
                    labels: labels(p.attributes()),
                    value: Value::Histogram {
                        bounds: p.bounds().collect(),
                        bucket_counts: p.bucket_counts().collect(),
                        sum: number(p.sum()),
                        count: p.count(),
                    },
                })
                .collect(),
        ),
        // Settle defines no exponential histogram; Prometheus' text format has none either.
        MetricData::ExponentialHistogram(_) => (Kind::Histogram, Vec::new()),
    }
}

fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    attributes
        .map(|kv| (kv.key.as_str().to_string(), kv.value.as_str().into_owned()))
        .collect()
}

/// The text exposition of `families`, sorted by name and then by labels.
pub fn encode(families: &[Family]) -> String {
    let mut ordered: Vec<(String, &Family)> = families
        .iter()
        .map(|family| (metric_name(&family.name, &family.unit, family.kind), family))
        .collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::new();
    for (name, family) in ordered {
        if !family.description.is_empty() {
            let _ = writeln!(text, "# HELP {name} {}", escape_help(&family.description));
        }
        let _ = writeln!(text, "# TYPE {name} {}", family.kind.as_str());
        let mut points: Vec<(Vec<(String, String)>, &Value)> = family
            .points
            .iter()
            .map(|point| {
                let mut labels: Vec<(String, String)> = point
                    .labels
                    .iter()
                    .map(|(key, value)| (label_name(key), value.clone()))
                    .collect();
                labels.sort();
                (labels, &point.value)
            })
            .collect();
        points.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, value) in points {
            match value {
                Value::Number(number) => {
                    let _ = writeln!(
                        text,
                        "{name}{} {}",
                        label_set(&labels, None),
                        format_number(*number)
                    );
                }
                Value::Histogram {
                    bounds,
                    bucket_counts,
                    sum,
                    count,
                } => {
                    let mut cumulative: u64 = 0;
                    for (bound, bucket) in bounds.iter().zip(bucket_counts) {
                        cumulative = cumulative.saturating_add(*bucket);
                        let le = format_float(*bound);
                        let _ = writeln!(
                            text,
                            "{name}_bucket{} {cumulative}",
                            label_set(&labels, Some(&le))
                        );
                    }
                    let _ = writeln!(
                        text,
                        "{name}_bucket{} {count}",
                        label_set(&labels, Some("+Inf"))
                    );
                    let _ = writeln!(
                        text,
                        "{name}_sum{} {}",
                        label_set(&labels, None),
                        format_number(*sum)
                    );
                    let _ = writeln!(text, "{name}_count{} {count}", label_set(&labels, None));
                }
            }
        }
    }
    text
}

/// The Prometheus name of an instrument: sanitized name, unit suffix, `_total` for counters.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut translated = sanitize(name);
    if let Some(suffix) = unit_suffix(unit) {
        if !translated.ends_with(&format!("_{suffix}")) {
            translated.push('_');
            translated.push_str(&suffix);
        }
    }
    if kind == Kind::Counter && !translated.ends_with("_total") {
        translated.push_str("_total");
    }
    translated
}

/// The suffix of a UCUM unit: `None` for no unit or an annotation only (`{request}`).
fn unit_suffix(unit: &str) -> Option<String> {
    // `{…}` annotations carry no unit: `{request}` is none, `By{packet}` is bytes.
    let mut bare = String::with_capacity(unit.len());
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let bare = bare.trim();
    let word = |unit: &str| -> Option<&'static str> {
        Some(match unit {
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "min" => "minutes",
            "h" => "hours",
            "d" => "days",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "%" => "percent",
            "1" => "ratio",
            _ => return None,
        })
    };
    if bare.is_empty() {
        return None;
    }
    if let Some((per, time)) = bare.split_once('/') {
        let per = word(per)
            .map(str::to_string)
            .unwrap_or_else(|| sanitize(per));
        let time = match time {
            "s" => "second".to_string(),
            "m" => "minute".to_string(),
            "h" => "hour".to_string(),
            other => sanitize(other),
        };
        return Some(format!("{per}_per_{time}"));
    }
    Some(
        word(bare)
            .map(str::to_string)
            .unwrap_or_else(|| sanitize(bare)),
    )
}

/// Characters other than `[a-zA-Z0-9_:]` become `_`, runs of `_` collapse into one, and a leading
/// digit gets a `_` in front.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label name: like a metric name but without `:`; a leading digit gets `key_` in front.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// `{a="x",b="y"}` (with `le` last for buckets), or nothing without labels.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label_value(value)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", pairs.join(","))
}

fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_number(number: Number) -> String {
    match number {
        Number::U64(n) => n.to_string(),
        Number::I64(n) => n.to_string(),
        Number::F64(x) => format_float(x),
    }
}

/// Go's shortest form, as Prometheus writes: `1`, `0.005`, `2.5`, `+Inf`, `-Inf`, `NaN`.
fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's Display is the shortest representation that round-trips, without a trailing `.0`.
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    fn family(name: &str, unit: &str, kind: Kind, points: Vec<Point>) -> Family {
        Family {
            name: name.into(),
            unit: unit.into(),
            description: String::new(),
            kind,
            points,
        }
    }

    fn point(labels: &[(&str, &str)], value: Value) -> Point {
        Point {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn names_get_underscores_unit_suffixes_and_total_on_counters() {
        let cases = [
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "http.server.active_requests",
                "{request}",
                Kind::Gauge,
                "http_server_active_requests",
            ),
            (
                "settle.payments",
                "{transaction}",
                Kind::Counter,
                "settle_payments_total",
            ),
            (
                "settle.payments.amount",
                "{minor_unit}",
                Kind::Counter,
                "settle_payments_amount_total",
            ),
            (
                "settle.settlement.lag",
                "s",
                Kind::Gauge,
                "settle_settlement_lag_seconds",
            ),
            (
                "process.cpu.time",
                "s",
                Kind::Counter,
                "process_cpu_time_seconds_total",
            ),
            (
                "process.memory.usage",
                "By",
                Kind::Gauge,
                "process_memory_usage_bytes",
            ),
            ("io.bytes", "By/s", Kind::Gauge, "io_bytes_bytes_per_second"),
            ("queue-depth", "", Kind::Gauge, "queue_depth"),
            ("already_seconds", "s", Kind::Gauge, "already_seconds"),
            ("jobs_total", "", Kind::Counter, "jobs_total"),
            (
                "9lives..x",
                "ms",
                Kind::Counter,
                "_9lives_x_milliseconds_total",
            ),
            ("ratio.of.things", "1", Kind::Gauge, "ratio_of_things_ratio"),
            (
                "packets",
                "By{packet}",
                Kind::Counter,
                "packets_bytes_total",
            ),
        ];
        for (name, unit, kind, expected) in cases {
            assert_eq!(metric_name(name, unit, kind), expected, "{name} [{unit}]");
        }
    }

    #[test]
    fn label_names_lose_their_dots_and_values_are_escaped() {
        assert_eq!(
            label_name("http.response.status_code"),
            "http_response_status_code"
        );
        assert_eq!(label_name("0day"), "key_0day");
        let text = encode(&[family(
            "x",
            "",
            Kind::Gauge,
            vec![point(
                &[("odd.value", "a \"quoted\" \\ back\nslash")],
                Value::Number(Number::I64(-3)),
            )],
        )]);
        assert_eq!(
            text,
            "# TYPE x gauge\nx{odd_value=\"a \\\"quoted\\\" \\\\ back\\nslash\"} -3\n"
        );
    }

    #[test]
    fn help_and_type_lines_come_first_and_help_is_escaped() {
        let mut counter = family(
            "settle.payments",
            "{transaction}",
            Kind::Counter,
            vec![
                point(
                    &[("kind", "refund"), ("currency", "USD")],
                    Value::Number(Number::U64(2)),
                ),
                point(
                    &[("currency", "EUR"), ("kind", "payment")],
                    Value::Number(Number::U64(7)),
                ),
            ],
        );
        counter.description = "Recorded\\counted\nonce.".into();
        assert_eq!(
            encode(&[counter]),
            "# HELP settle_payments_total Recorded\\\\counted\\nonce.\n\
             # TYPE settle_payments_total counter\n\
             settle_payments_total{currency=\"EUR\",kind=\"payment\"} 7\n\
             settle_payments_total{currency=\"USD\",kind=\"refund\"} 2\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let text = encode(&[family(
            "settle.store.operation.duration",
            "s",
            Kind::Histogram,
            vec![point(
                &[("operation", "claim_settlement"), ("store", "sqlite")],
                Value::Histogram {
                    bounds: vec![0.005, 0.5, 1.0, 2.5],
                    bucket_counts: vec![1, 2, 0, 3, 4],
                    sum: Number::F64(21.25),
                    count: 10,
                },
            )],
        )]);
        let labels = "operation=\"claim_settlement\",store=\"sqlite\"";
        let name = "settle_store_operation_duration_seconds";
        assert_eq!(
            text,
            format!(
                "# TYPE {name} histogram\n\
                 {name}_bucket{{{labels},le=\"0.005\"}} 1\n\
                 {name}_bucket{{{labels},le=\"0.5\"}} 3\n\
                 {name}_bucket{{{labels},le=\"1\"}} 3\n\
                 {name}_bucket{{{labels},le=\"2.5\"}} 6\n\
                 {name}_bucket{{{labels},le=\"+Inf\"}} 10\n\
                 {name}_sum{{{labels}}} 21.25\n\
                 {name}_count{{{labels}}} 10\n"
            )
        );
    }

    #[test]
    fn floats_print_as_prometheus_does() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.0025), "0.0025");
        assert_eq!(format_float(3600.0), "3600");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn a_real_meter_provider_is_collected_and_translated() {
        let reader = PullReader::new();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("test");
        let counter = meter
            .u64_counter("test.things")
            .with_unit("{thing}")
            .build();
        counter.add(2, &[KeyValue::new("kind", "a")]);
        counter.add(3, &[KeyValue::new("kind", "a")]);
        let active = meter.i64_up_down_counter("test.active").build();
        active.add(1, &[]);
        active.add(-1, &[]);
        let histogram = meter
            .f64_histogram("test.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        for value in [0.05, 0.5, 0.7, 5.0] {
            histogram.record(value, &[KeyValue::new("route", "/x/{id}")]);
        }
        let text = reader.render().unwrap();
        assert!(
            text.contains("# TYPE test_things_total counter\ntest_things_total{kind=\"a\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE test_active gauge\ntest_active 0\n"),
            "{text}"
        );
        for line in [
            "test_duration_seconds_bucket{route=\"/x/{id}\",le=\"0.1\"} 1",
            "test_duration_seconds_bucket{route=\"/x/{id}\",le=\"1\"} 3",
            "test_duration_seconds_bucket{route=\"/x/{id}\",le=\"+Inf\"} 4",
            "test_duration_seconds_sum{route=\"/x/{id}\"} 6.25",
            "test_duration_seconds_count{route=\"/x/{id}\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
