//! `strata`: the operator console.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = strata_tui::Cli::parse();
    anyhow::bail!(
        "the interactive console is not built yet (it is tracked as its own issue); \
         meanwhile use the HTTP API at {}",
        cli.url
    )
}
