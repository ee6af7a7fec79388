//! `stratad`: the Strata daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strata_daemon::Config;
use tracing_subscriber::EnvFilter;

/// Hosts versioned JavaScript trading strategies.
#[derive(Debug, Parser)]
#[command(name = "stratad", version, about)]
struct Cli {
    /// TOML configuration file (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8880].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Strategies directory [default: ./strategies].
    #[arg(long, value_name = "DIR")]
    strategies_dir: Option<PathBuf>,
    /// Data directory for the SQLite database [default: `data` beside the strategies directory].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed an empty registry with the bundled example strategies.
    #[arg(long)]
    demo: bool,
    /// Bearer token required on every mutating request (prefer the
    /// environment variable: command lines are visible to other users).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = cli.strategies_dir {
        config.strategies_dir = dir;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = Some(dir);
    }
    config.demo |= cli.demo;
    if let Some(token) = cli.token.filter(|t| !t.is_empty()) {
        config.token = Some(token);
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        if !listener.local_addr()?.ip().is_loopback() && config.token.is_none() {
            tracing::warn!(
                "!!! listening on a non-loopback address WITHOUT a token: anyone who can reach {} can change \
                 strategies and instances. Set STRATA_TOKEN or `token` in the config file !!!",
                config.listen
            );
        }
        let running = strata_daemon::boot(config, listener).await?;
        running.run_until(shutdown_signal()).await;
        anyhow::Ok(())
    });
    // Do not wait for blocking work that outlived the server (a first load
    // interrupted by a signal).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
