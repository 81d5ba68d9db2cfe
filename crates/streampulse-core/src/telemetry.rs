//! Logging: tracing to stderr, text for people, JSON for containers (`LOG_FORMAT=json`),
//! filtered by `RUST_LOG` (default `info`).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The format [`init`] installed: what `--log-format` (or `LOG_FORMAT`) said.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The log format of this process (text until [`init`] ran).
pub fn log_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// The root span of a run: every log line of the run carries pipeline, date and run id. At the
/// error level, so that `RUST_LOG=warn` (which disables info spans) keeps it on the warnings.
pub fn run_span(pipeline: &str, logical_date: &str, run_id: &str) -> tracing::Span {
    tracing::error_span!("run", pipeline, logical_date, run_id)
}
