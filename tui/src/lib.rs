//! `strata`: the operator console for `stratad`.
//!
//! The console itself (views, live updates, actions) is tracked as its own
//! issue; this crate holds its command-line interface so far.

use clap::Parser;

/// Command-line options of `strata` (SPEC §5).
#[derive(Debug, Clone, Parser)]
#[command(name = "strata", version, about = "Operator console for stratad")]
pub struct Cli {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:8880")]
    pub url: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "STRATA_TOKEN")]
    pub token: Option<String>,
    /// Hide every action: browse only.
    #[arg(long)]
    pub readonly: bool,
}
