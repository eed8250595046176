//! The operator's command line: subcommands that talk to a running daemon's admin API (ingest,
//! jobs, items, dead letters, pause and resume). Progress is drawn with indicatif bars on a
//! terminal and printed as plain lines otherwise. This is the binary's edge, so errors are
//! `anyhow` with the server's reason.

pub mod admin;
pub mod demo;
pub mod ingest;
pub mod jobs;
pub mod local_redis;
pub mod schedules;

pub use admin::AdminClient;

use std::io::IsTerminal;

/// Whether to draw bars (a terminal) or print plain lines.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("EMBEDQ_PLAIN").is_none()
}
