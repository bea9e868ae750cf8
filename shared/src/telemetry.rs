//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (else the caller's default), text
//! or JSON.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The filter for long-running services: aie's own events at info, the SDK's chatter
/// (a line per session and notification) only when it warns.
pub const SERVICE_FILTER: &str = "info,rmcp=warn";

/// Installs the global subscriber once; later calls are no-ops. `default_filter` applies
/// when `RUST_LOG` is unset; `json` selects one JSON object per line, for log shippers.
pub fn init(default_filter: &str, json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}
