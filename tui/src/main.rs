//! `strata`: the operator console.

use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use crossterm::event::EventStream;

fn main() -> anyhow::Result<()> {
    let cli = strata_tui::Cli::parse();
    let log_path = cli.log_path();
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening the log file {}", log_path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| "info".into()))
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    // Log panics to the file; ratatui's own hook (installed by `try_init`,
    // after this one) restores the terminal first, then calls this one.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(%info, "panic");
        default_hook(info);
    }));
    tracing::info!(url = cli.url, readonly = cli.readonly, "strata starting");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    // Fault injection for scripts/tui-smoke.sh, in debug builds only: a panic
    // with the terminal in raw mode on the alternate screen, to check that
    // both are undone and the panic is logged.
    #[cfg(debug_assertions)]
    if std::env::var_os("STRATA_SMOKE_PANIC").is_some() {
        let _ = terminal.draw(|frame| frame.render_widget("about to panic", frame.area()));
        panic!("STRATA_SMOKE_PANIC is set");
    }
    let result = runtime.block_on(strata_tui::run_app(&mut terminal, &cli, EventStream::new()));
    ratatui::restore();
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = &result {
        tracing::error!(error = %e, "strata stopped");
    }
    result.map(|_| ())
}
