//! Logging setup, the metrics recorder and the names of every exported
//! metric.
//!
//! Metric names follow `churn_<name>_<unit>[_total]` with low-cardinality
//! labels and are defined only here, so dashboards have one place to look.

pub mod metric_names;
pub mod recorder;

use tracing_subscriber::EnvFilter;

/// Installs the `tracing` subscriber: human-readable logs on stderr,
/// filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless: ignore the error.
    // Colour only on a terminal: container logs and log shippers get plain
    // text instead of escape codes (NO_COLOR turns it off everywhere).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
