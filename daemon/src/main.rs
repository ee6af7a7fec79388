//! `stratad`: the Strata daemon.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use strata_daemon::Config;
use strata_daemon::bootstrap::{self, PlanOptions, UsageSource, report};
use tracing_subscriber::EnvFilter;

/// Hosts versioned JavaScript trading strategies.
#[derive(Debug, Parser)]
#[command(name = "stratad", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run a tool instead of the daemon.
    #[command(subcommand)]
    command: Option<Command>,
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

/// Tools run by `stratad <command>`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate a legacy strategies directory (flat `*.js` or `<name>/<tag>/<name>.js`) to the
    /// hashed layout and registry.json. Dry run unless --write.
    Bootstrap(BootstrapArgs),
}

/// Flags of `stratad bootstrap`.
#[derive(Debug, Args)]
struct BootstrapArgs {
    /// The directory to migrate (it becomes the strategies directory).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Apply the plan: copy and verify, write registry.json, then remove the originals.
    /// Refused when the plan has any problem.
    #[arg(long)]
    write: bool,
    /// A `GET /strategies/registry` export: a file, or an http:// URL on a loopback host.
    /// Zero-usage revisions are listed as pruning candidates.
    #[arg(long, value_name = "FILE|URL")]
    usage: Option<String>,
    /// Print the plan (and what --write did) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also remove revisions the export calls retired and no tag points to (with --write).
    #[arg(long, requires = "usage")]
    prune: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Bootstrap(args)) = cli.command {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
            .init();
        return run_bootstrap(&args);
    }
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
    served.map(|()| ExitCode::SUCCESS)
}

/// `stratad bootstrap`: prints the plan, applies it with `--write`. Exit code
/// 1 when the plan has problems or an original had to be kept.
fn run_bootstrap(args: &BootstrapArgs) -> anyhow::Result<ExitCode> {
    let usage = match &args.usage {
        Some(arg) => {
            let source = UsageSource::parse(arg)?;
            Some((source.name(), bootstrap::load_export(&source)?))
        }
        None => None,
    };
    let options = PlanOptions { usage, prune: args.prune, ..PlanOptions::default() };
    let plan = bootstrap::build_plan(&args.root, &options, &progress_bar(args.json, "evaluating"))?;
    let root = args.root.display().to_string();
    if !args.json {
        print!("{}", report::render_text(&root, &plan, args.write));
    }
    let refused = args.write && !plan.problems.is_empty();
    let applied = if args.write && !refused && !plan.is_noop() {
        let applied = bootstrap::apply(&plan, &progress_bar(args.json, "applying"))?;
        if !args.json {
            print!("{}", report::render_applied(&applied));
        }
        Some(applied)
    } else {
        None
    };
    if args.json {
        let output = report::JsonOutput {
            root,
            mode: if args.write { "write" } else { "dryRun" },
            plan: &plan,
            summary: report::Summary::of(&plan),
            applied: applied.as_ref(),
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
    }
    if refused {
        eprintln!("Error: {}", bootstrap::BootstrapError::PlanHasProblems(plan.problems.len()));
    }
    let failed = !plan.problems.is_empty() || applied.is_some_and(|a| !a.kept.is_empty());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A progress bar on stderr, drawn only when stderr is a terminal and the
/// output is not JSON.
fn progress_bar(json: bool, message: &'static str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0).with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} files") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
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
