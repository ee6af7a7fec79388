//! Load and start-up measurements against a release `stratad` over loopback.
//!
//! 1. Generates a registry of `--strategies` × `--revisions` revisions.
//! 2. Starts `stratad` on it twice and reports the time from spawn until
//!    `/healthz` answers `ok` (the second start is the "restart" figure).
//! 3. Runs a bounded mixed load (`--requests` in total, `--concurrency`
//!    workers) alternating `GET /healthz` and
//!    `GET /strategies/modules?strategy=X&limit=50`, and reports p50/p99 of
//!    each and their ratio.
//!
//! Only ever targets 127.0.0.1. Example:
//! `cargo build --release -p strata-daemon -p strata-tests && target/release/strata-load --stratad target/release/stratad`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use strata_daemon::fixtures;

#[derive(Debug, Parser)]
struct Args {
    /// Path to the `stratad` binary to measure (build it with --release).
    #[arg(long)]
    stratad: PathBuf,
    /// Strategies in the generated registry.
    #[arg(long, default_value_t = 1000)]
    strategies: usize,
    /// Revisions per strategy.
    #[arg(long, default_value_t = 60)]
    revisions: usize,
    /// Total requests in the mixed load.
    #[arg(long, default_value_t = 40_000)]
    requests: usize,
    /// Concurrent workers (each with its own keep-alive connection pool).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts stratad and returns it with the time until `/healthz` said ok.
async fn start(args: &Args, dir: &std::path::Path, port: u16) -> anyhow::Result<(Daemon, Duration)> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let child = Command::new(&args.stratad)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--strategies-dir")
        .arg(dir.join("strategies"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start stratad")?;
    let daemon = Daemon(child);
    let deadline = started + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["status"] == "ok"
        {
            return Ok((daemon, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("stratad did not become healthy within 120 s")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let generating = Instant::now();
    let generated =
        fixtures::generate(&dir.path().join("strategies"), &dir.path().join("data"), args.strategies, args.revisions)?;
    println!(
        "generated {} strategies x {} revisions in {:.1} s",
        args.strategies,
        args.revisions,
        generating.elapsed().as_secs_f64()
    );

    let port = free_port()?;
    let (first, first_start) = start(&args, dir.path(), port).await?;
    drop(first);
    let (_daemon, restart) = start(&args, dir.path(), port).await?;
    println!("first start to healthy: {:.3} s", first_start.as_secs_f64());
    println!("restart to healthy:     {:.3} s", restart.as_secs_f64());

    let base = format!("http://127.0.0.1:{port}");
    let per_worker = args.requests / args.concurrency / 2;
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let client = reqwest::Client::new();
        let base = base.clone();
        let names = generated.strategies.clone();
        workers.push(tokio::spawn(async move {
            let (mut health, mut modules) = (Vec::with_capacity(per_worker), Vec::with_capacity(per_worker));
            for i in 0..per_worker {
                let t = Instant::now();
                let r = client.get(format!("{base}/healthz")).send().await?;
                anyhow::ensure!(r.status().is_success());
                r.bytes().await?;
                health.push(t.elapsed());
                let name = &names[(w * 7919 + i * 31) % names.len()];
                let t = Instant::now();
                let r = client.get(format!("{base}/strategies/modules?strategy={name}&limit=50")).send().await?;
                anyhow::ensure!(r.status().is_success());
                r.bytes().await?;
                modules.push(t.elapsed());
            }
            anyhow::Ok((health, modules))
        }));
    }
    let started = Instant::now();
    let (mut health, mut modules) = (Vec::new(), Vec::new());
    for worker in workers {
        let (h, m) = worker.await??;
        health.extend(h);
        modules.extend(m);
    }
    let elapsed = started.elapsed();
    health.sort();
    modules.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "mixed load: {} requests, {} workers, {:.0} req/s",
        health.len() + modules.len(),
        args.concurrency,
        (health.len() + modules.len()) as f64 / elapsed.as_secs_f64()
    );
    for (name, samples) in [("GET /healthz", &health), ("GET /strategies/modules?strategy=X&limit=50", &modules)] {
        println!("{name:<48} p50 {:.3} ms  p99 {:.3} ms", ms(percentile(samples, 0.5)), ms(percentile(samples, 0.99)));
    }
    println!(
        "ratio modules/healthz: p50 {:.2}x  p99 {:.2}x",
        ms(percentile(&modules, 0.5)) / ms(percentile(&health, 0.5)),
        ms(percentile(&modules, 0.99)) / ms(percentile(&health, 0.99))
    );
    Ok(())
}
