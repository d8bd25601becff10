//! `[telemetry]`: the settings of OpenTelemetry export, with the module they configure; `config`
//! reads and validates them from the file and the environment.

/// `[telemetry]`: where OpenTelemetry data is pushed. Export is off unless an endpoint is set here
/// or in the standard `OTEL_EXPORTER_OTLP_*` variables; `/metrics` works either way. Headers (which
/// may carry API keys) come only from `OTEL_EXPORTER_OTLP_HEADERS`, never from this file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// The collector's base URL (`http://127.0.0.1:4318` for HTTP, `http://127.0.0.1:4317` for gRPC).
    pub otlp_endpoint: Option<String>,
    /// `None`: `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP/protobuf.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The resource attribute `deployment.environment` (e.g. `production`).
    pub environment: Option<String>,
    /// How often metrics are pushed; `None`: `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.
    pub export_interval_ms: Option<u64>,
}

/// How OTLP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST to `{endpoint}/v1/traces` and `/v1/metrics` (port 4318).
    HttpProtobuf,
    /// `grpc` (port 4317).
    Grpc,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<OtlpProtocol, String> {
        match text {
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            "grpc" => Ok(OtlpProtocol::Grpc),
            other => Err(format!(
                "unknown OTLP protocol {other:?} (expected \"http/protobuf\" or \"grpc\")"
            )),
        }
    }
}
