//! Setting telemetry up and down: the resource, the meter provider (always, with the `/metrics`
//! reader) and, when an endpoint is configured, OTLP export of metrics and spans; then shutdown.
//!
//! Where the endpoint comes from, first found wins: `[telemetry] otlp_endpoint` (or
//! `SETTLE_TELEMETRY__OTLP_ENDPOINT`), then per signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as they are), then `OTEL_EXPORTER_OTLP_ENDPOINT`.
//! A base endpoint gets `/v1/traces` and `/v1/metrics` appended for HTTP; gRPC uses it as it is.
//! No endpoint, `OTEL_SDK_DISABLED=true`, or `OTEL_{TRACES,METRICS}_EXPORTER=none`: no export.
//! Headers, timeout and compression are read by opentelemetry-otlp itself from the standard
//! variables (`OTEL_EXPORTER_OTLP_HEADERS`…); headers are never logged.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;

use super::instruments::Instruments;
use super::prometheus::PullReader;
use super::settings::{OtlpProtocol, TelemetrySettings};

/// The service as the resource names it (unless `OTEL_SERVICE_NAME` says otherwise).
pub const SERVICE_NAME: &str = "settle";
/// The version of the crate, which is the version of the workspace and of the `settle` binary.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The scope every instrument and span of Settle belongs to.
const SCOPE: &str = "settle";
/// Without `export_interval_ms` or `OTEL_METRIC_EXPORT_INTERVAL`.
const DEFAULT_EXPORT_INTERVAL_MS: u64 = 60_000;
/// The longest a finished span waits in its batch (shorter when the export interval is).
const MAX_SPAN_DELAY_MS: u64 = 5_000;

/// Why telemetry could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{variable}: {message}")]
    Environment { variable: String, message: String },
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {message}")]
    Exporter {
        signal: &'static str,
        endpoint: String,
        message: String,
    },
}

/// Where and how to push, resolved from the settings and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    pub protocol: OtlpProtocol,
    /// `None`: spans are not exported.
    pub traces_endpoint: Option<String>,
    /// `None`: metrics are not pushed (`/metrics` still serves them).
    pub metrics_endpoint: Option<String>,
    pub export_interval_ms: u64,
}

impl ExportPlan {
    /// For the log: protocol, endpoints (without credentials) and interval; never a header.
    pub fn summary(&self) -> String {
        let endpoint = |endpoint: &Option<String>| {
            endpoint
                .as_deref()
                .map(without_userinfo)
                .unwrap_or_else(|| "off".into())
        };
        format!(
            "OTLP {} export: traces {}, metrics {} every {} ms",
            self.protocol.as_str(),
            endpoint(&self.traces_endpoint),
            endpoint(&self.metrics_endpoint),
            self.export_interval_ms
        )
    }
}

/// Resolves the export from `settings` and environment variables; `None` means no export.
pub fn export_plan(
    settings: &TelemetrySettings,
    env: &HashMap<String, String>,
) -> Result<Option<ExportPlan>, TelemetryError> {
    let var = |name: &str| {
        env.get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let protocol = match (settings.otlp_protocol, var("OTEL_EXPORTER_OTLP_PROTOCOL")) {
        (Some(protocol), _) => protocol,
        (None, Some(text)) => text
            .parse()
            .map_err(|message| TelemetryError::Environment {
                variable: "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                message,
            })?,
        (None, None) => OtlpProtocol::HttpProtobuf,
    };
    let endpoint = |signal: &str, path: &str| -> Result<Option<String>, TelemetryError> {
        let exporter_variable = format!("OTEL_{}_EXPORTER", signal.to_ascii_uppercase());
        if var(&exporter_variable).is_some_and(|value| value.eq_ignore_ascii_case("none")) {
            return Ok(None);
        }
        let with_path = |base: &str| match protocol {
            OtlpProtocol::HttpProtobuf => format!("{}{path}", base.trim_end_matches('/')),
            OtlpProtocol::Grpc => base.to_string(),
        };
        if let Some(base) = &settings.otlp_endpoint {
            return Ok(Some(with_path(base)));
        }
        let signal_variable = format!(
            "OTEL_EXPORTER_OTLP_{}_ENDPOINT",
            signal.to_ascii_uppercase()
        );
        let (variable, endpoint) = if let Some(exact) = var(&signal_variable) {
            (signal_variable, exact.to_string())
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), with_path(base))
        } else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TelemetryError::Environment {
                variable,
                message: "expected an http:// or https:// URL".into(),
            });
        }
        Ok(Some(endpoint))
    };
    let traces_endpoint = endpoint("traces", "/v1/traces")?;
    let metrics_endpoint = endpoint("metrics", "/v1/metrics")?;
    if traces_endpoint.is_none() && metrics_endpoint.is_none() {
        return Ok(None);
    }
    let export_interval_ms = match (
        settings.export_interval_ms,
        var("OTEL_METRIC_EXPORT_INTERVAL"),
    ) {
        (Some(ms), _) => ms,
        (None, Some(text)) => text
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| TelemetryError::Environment {
                variable: "OTEL_METRIC_EXPORT_INTERVAL".into(),
                message: format!("{text:?} is not a positive number of milliseconds"),
            })?,
        (None, None) => DEFAULT_EXPORT_INTERVAL_MS,
    };
    Ok(Some(ExportPlan {
        protocol,
        traces_endpoint,
        metrics_endpoint,
        export_interval_ms,
    }))
}

/// The resource: `service.name` (`settle`, or `OTEL_SERVICE_NAME`), `service.version`,
/// `deployment.environment` when configured, and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource(settings: &TelemetrySettings, env: &HashMap<String, String>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new("service.name", SERVICE_NAME),
            KeyValue::new("service.version", SERVICE_VERSION),
        ])
        // Reads OTEL_RESOURCE_ATTRIBUTES; what it names overrides the defaults above.
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = env
        .get("OTEL_SERVICE_NAME")
        .filter(|name| !name.trim().is_empty())
    {
        builder = builder.with_service_name(name.trim().to_string());
    }
    if let Some(environment) = &settings.environment {
        builder =
            builder.with_attribute(KeyValue::new("deployment.environment", environment.clone()));
    }
    builder.build()
}

/// The metrics side: always there once anything records or telemetry starts.
pub(super) struct Metrics {
    pub provider: SdkMeterProvider,
    pub pull: PullReader,
    pub instruments: Instruments,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
/// What `shutdown` must flush: set by `start` when export is on.
static EXPORTING: Mutex<Option<Exporting>> = Mutex::new(None);
/// The tracer spans are exported with, for the tracing layer.
static TRACER: OnceLock<Tracer> = OnceLock::new();

struct Exporting {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// The metrics, created with `/metrics` only if nothing started telemetry before (unit tests, or a
/// command that records before `start`).
pub(super) fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| build_metrics(Resource::builder_empty().build(), None))
}

fn build_metrics(
    resource: Resource,
    push: Option<PeriodicReader<opentelemetry_otlp::MetricExporter>>,
) -> Metrics {
    let pull = PullReader::new();
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(pull.clone());
    if let Some(push) = push {
        builder = builder.with_reader(push);
    }
    let provider = builder.build();
    let meter = provider.meter_with_scope(
        InstrumentationScope::builder(SCOPE)
            .with_version(SERVICE_VERSION)
            .build(),
    );
    Metrics {
        instruments: Instruments::new(&meter),
        provider,
        pull,
    }
}

/// What `start` set up, for the log lines a command prints once logging is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub plan: Option<ExportPlan>,
    /// Something recorded metrics before `start` (a bug): they stay on `/metrics` but are not
    /// pushed over OTLP.
    pub metrics_not_pushed: bool,
}

/// Sets telemetry up: call once, early (inside the tokio runtime: the gRPC exporter needs it),
/// before anything is recorded. Without an endpoint this only prepares `/metrics`.
pub fn start(
    settings: &TelemetrySettings,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Started, TelemetryError> {
    let env: HashMap<String, String> = env.into_iter().collect();
    let plan = export_plan(settings, &env)?;
    let resource = resource(settings, &env);
    let Some(plan) = plan else {
        METRICS.get_or_init(|| build_metrics(resource, None));
        return Ok(Started {
            plan: None,
            metrics_not_pushed: false,
        });
    };
    // reqwest and tonic use rustls without choosing a crypto provider: the process's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let interval = Duration::from_millis(plan.export_interval_ms);

    let push = match &plan.metrics_endpoint {
        Some(endpoint) => Some(
            PeriodicReader::builder(metric_exporter(plan.protocol, endpoint)?)
                .with_interval(interval)
                .build(),
        ),
        None => None,
    };
    let pushing = push.is_some();
    let mut built = Some((resource.clone(), push));
    let metrics = METRICS.get_or_init(|| {
        let (resource, push) = built.take().expect("initialised once");
        build_metrics(resource, push)
    });
    // Still here: the metrics were built before, without the push reader.
    let metrics_not_pushed = pushing && built.is_some();
    let pushing = pushing && !metrics_not_pushed;

    let tracer_provider = match &plan.traces_endpoint {
        Some(endpoint) => {
            let delay_ms = plan.export_interval_ms.min(MAX_SPAN_DELAY_MS);
            let processor = BatchSpanProcessor::builder(span_exporter(plan.protocol, endpoint)?)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(Duration::from_millis(delay_ms))
                        .build(),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_span_processor(processor)
                .build();
            let _ = TRACER.set(
                provider.tracer_with_scope(
                    InstrumentationScope::builder(SCOPE)
                        .with_version(SERVICE_VERSION)
                        .build(),
                ),
            );
            Some(provider)
        }
        None => None,
    };
    *EXPORTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Exporting {
        tracer_provider,
        meter_provider: pushing.then(|| metrics.provider.clone()),
    });
    Ok(Started {
        plan: Some(plan),
        metrics_not_pushed,
    })
}

/// The tracer of exported spans; `None` when spans are not exported.
pub(super) fn tracer() -> Option<Tracer> {
    TRACER.get().cloned()
}

/// Flushes and stops the exporters, waiting at most `timeout`. Later calls do nothing; `/metrics`
/// keeps working (only the push is stopped).
pub async fn shutdown(timeout: Duration) {
    let exporting = EXPORTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let Some(exporting) = exporting else {
        return;
    };
    // The SDK's shutdown blocks (its exporters run on their own threads): not on a runtime
    // worker. Spans and metrics flush side by side, each within `timeout`.
    let traces = exporting.tracer_provider.map(|provider| {
        tokio::task::spawn_blocking(move || {
            if let Err(error) = provider.shutdown_with_timeout(timeout) {
                tracing::warn!(%error, "flushing spans at shutdown failed");
            }
        })
    });
    let metrics = exporting.meter_provider.map(|provider| {
        tokio::task::spawn_blocking(move || {
            // Stops the OTLP push after a last export. The `/metrics` reader stops too, which
            // is fine: this runs as the process ends.
            if let Err(error) = provider.shutdown_with_timeout(timeout) {
                tracing::warn!(%error, "flushing metrics at shutdown failed");
            }
        })
    });
    let both = async {
        if let Some(traces) = traces {
            let _ = traces.await;
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
    };
    // A little slack for the hand-over to the blocking threads.
    if tokio::time::timeout(timeout + Duration::from_millis(100), both)
        .await
        .is_err()
    {
        tracing::warn!("telemetry did not flush within the shutdown bound");
    }
}

fn exporter_error(
    signal: &'static str,
    endpoint: &str,
    error: impl std::fmt::Display,
) -> TelemetryError {
    TelemetryError::Exporter {
        signal,
        endpoint: without_userinfo(endpoint),
        message: error.to_string(),
    }
}

fn metric_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_temporality(Temporality::Cumulative)
            .build(),
        OtlpProtocol::Grpc => {
            let builder = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc)
                .with_endpoint(endpoint)
                .with_temporality(Temporality::Cumulative);
            match tls_for(endpoint) {
                Some(tls) => builder.with_tls_config(tls).build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|error| exporter_error("metrics", endpoint, error))
}

fn span_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let built = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build(),
        OtlpProtocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc)
                .with_endpoint(endpoint);
            match tls_for(endpoint) {
                Some(tls) => builder.with_tls_config(tls).build(),
                None => builder.build(),
            }
        }
    };
    built.map_err(|error| exporter_error("traces", endpoint, error))
}

/// gRPC over `https://` trusts the system's certificate authorities.
fn tls_for(endpoint: &str) -> Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig> {
    endpoint.starts_with("https://").then(|| {
        opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_native_roots()
    })
}

/// A URL without `user:password@`, for logs and errors.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let settings = TelemetrySettings::default();
        assert_eq!(export_plan(&settings, &env(&[])).unwrap(), None);
        let only_headers = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret")]);
        assert_eq!(export_plan(&settings, &only_headers).unwrap(), None);
    }

    #[test]
    fn the_standard_endpoint_variable_alone_turns_export_on() {
        let plan = export_plan(
            &TelemetrySettings::default(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]),
        )
        .unwrap()
        .expect("export on");
        assert_eq!(plan.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            plan.traces_endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            plan.metrics_endpoint.as_deref(),
            Some("http://collector:4318/v1/metrics")
        );
        assert_eq!(plan.export_interval_ms, DEFAULT_EXPORT_INTERVAL_MS);
    }

    #[test]
    fn the_file_wins_then_signal_variables_then_the_base_variable() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            export_interval_ms: Some(500),
            ..TelemetrySettings::default()
        };
        let variables = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "9000"),
        ]);
        let plan = export_plan(&settings, &variables).unwrap().unwrap();
        assert_eq!(
            plan.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(plan.export_interval_ms, 500);

        let plan = export_plan(&TelemetrySettings::default(), &variables)
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.traces_endpoint.as_deref(),
            Some("http://traces:4318/custom")
        );
        assert_eq!(
            plan.metrics_endpoint.as_deref(),
            Some("http://elsewhere:4318/v1/metrics")
        );
        assert_eq!(plan.export_interval_ms, 9000);
    }

    #[test]
    fn grpc_uses_the_endpoint_as_it_is_and_signals_can_be_turned_off() {
        let variables = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        let plan = export_plan(&TelemetrySettings::default(), &variables)
            .unwrap()
            .unwrap();
        assert_eq!(plan.protocol, OtlpProtocol::Grpc);
        assert_eq!(
            plan.traces_endpoint.as_deref(),
            Some("https://collector:4317")
        );
        assert_eq!(plan.metrics_endpoint, None);
        // The file's protocol wins over the variable.
        let settings = TelemetrySettings {
            otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
            ..TelemetrySettings::default()
        };
        let plan = export_plan(&settings, &variables).unwrap().unwrap();
        assert_eq!(
            plan.traces_endpoint.as_deref(),
            Some("https://collector:4317/v1/traces")
        );
    }

    #[test]
    fn disabled_sdk_or_bad_variables() {
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(
            export_plan(&TelemetrySettings::default(), &disabled).unwrap(),
            None
        );
        for (variables, named) in [
            (
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ]),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
                ]),
                "OTEL_METRIC_EXPORT_INTERVAL",
            ),
        ] {
            let error = export_plan(&TelemetrySettings::default(), &variables).unwrap_err();
            assert!(error.to_string().starts_with(named), "{error}");
        }
    }

    #[test]
    fn the_resource_names_the_service_its_version_and_environment() {
        let settings = TelemetrySettings {
            environment: Some("staging".into()),
            ..TelemetrySettings::default()
        };
        let described = resource(&settings, &env(&[]));
        let get = |key: &'static str| {
            described
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("settle"));
        assert_eq!(get("service.version").as_deref(), Some(SERVICE_VERSION));
        assert_eq!(get("deployment.environment").as_deref(), Some("staging"));
        let renamed = resource(&settings, &env(&[("OTEL_SERVICE_NAME", "settle-eu")]));
        assert_eq!(
            renamed
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
                .as_deref(),
            Some("settle-eu")
        );
    }

    #[test]
    fn userinfo_never_reaches_a_log() {
        assert_eq!(
            without_userinfo("https://u:p@c:4318/v1/traces"),
            "https://c:4318/v1/traces"
        );
        assert_eq!(without_userinfo("http://c:4318"), "http://c:4318");
    }
}
