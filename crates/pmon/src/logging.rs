//! Log output: human-readable lines on stderr, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// pmon's own `info`, and nothing from rumqttd: it logs every connection at `info` and a
/// client's ordinary disconnect as an `error`. pmon-broker reports the broker's real failures.
pub const DEFAULT_FILTER: &str = "info,rumqttd=off";

/// Installs the global subscriber once.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
