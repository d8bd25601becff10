//! Logs and spans: the stderr log (`SETTLE_LOG`, or `-v`, chooses the level) and, when OTLP export
//! is on, the OpenTelemetry layer that exports Settle's spans whatever the log level.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Installs the subscriber once. Telemetry must have started first for spans to be exported.
/// Output meant for people goes to stdout, logs to stderr.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("SETTLE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Each layer has its own filter: the log level does not decide which spans are exported.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(settle_core::telemetry::tracing_layer())
        .try_init();
}
