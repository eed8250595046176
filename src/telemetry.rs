//! Tracing set-up: human-readable lines by default, JSON lines when asked, filtered by
//! `RUST_LOG` (default `info`; the demo's default shows only start-up lines and warnings).

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is not set, for the daemon.
pub const DEFAULT_FILTER: &str = "info";
/// The filter used when `RUST_LOG` is not set, for `embedq demo`: which backends it uses and
/// anything that goes wrong, so the demo's own output stays readable.
pub const DEMO_FILTER: &str = "warn,embedq::startup=info,embedq::providers::local=info";

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), which
/// the tests rely on.
pub fn init(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
