//! Load and start-up measurements against a release `stratad` over loopback.
//!
//! `strata-load registry`:
//! 1. Generates a registry of `--strategies` × `--revisions` revisions.
//! 2. Starts `stratad` on it twice and reports the time from spawn until
//!    `/healthz` answers `ok` (the second start is the "restart" figure).
//! 3. Runs a bounded mixed load (`--requests` in total, `--concurrency`
//!    workers) alternating `GET /healthz` and
//!    `GET /strategies/modules?strategy=X&limit=50`, and reports p50/p99 of
//!    each and their ratio.
//!
//! `strata-load instances`: starts `stratad` on an empty registry, uploads a
//! trivial strategy, times starting `--timed-starts` instances, then runs
//! `--count` instances on the simulated venue and reports the daemon's RSS
//! and the handler calls it sustains.
//!
//! `strata-load stream`: starts `stratad`, connects `--subscribers`
//! WebSocket subscribers to `/ws` plus `--stalled` that never read, then
//! drives a burst of `--rate` lifecycle events per second for `--seconds`
//! from `--concurrency` HTTP clients. The `repin` driver (default) moves
//! `--per-request` stopped instances of one strategy between two of its
//! revisions per request (one `instanceRepinned` delta each); the `http`
//! driver starts and stops instances one request at a time (each start
//! builds a QuickJS runtime and each transition is an fsynced SQLite
//! commit, so it cannot reach 1,000 events/s on a 2-core machine). It
//! reports the achieved event rate, the delivery latency of every delta to
//! every subscriber (receive time minus the delta's `ts`; same machine, same
//! clock) as p50/p99/max, the daemon's side of it (its
//! `strata_ws_delivery_lag_seconds` histogram over the burst), gaps and
//! resyncs, the CPU used, and the daemon's RSS before and after. `--pin`
//! runs the daemon on CPU 0 and this tool on the others. Needs two file descriptors per subscriber in this process and one
//! in the daemon: `ulimit -n 8192` first if the limit is lower.
//!
//! Only ever targets 127.0.0.1. Example:
//! `cargo build --release -p strata-daemon -p strata-tests && target/release/strata-load --stratad target/release/stratad registry`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use strata_daemon::fixtures;
use strata_tests::{instance_request, metric_value};

#[derive(Debug, Parser)]
struct Cli {
    /// Path to the `stratad` binary to measure (build it with --release).
    #[arg(long, global = true, default_value = "target/release/stratad")]
    stratad: PathBuf,
    #[command(subcommand)]
    command: Measure,
}

#[derive(Debug, clap::Subcommand)]
enum Measure {
    /// Restart time and registry endpoint latency on a large registry.
    Registry(Args),
    /// Instance start time, memory and throughput.
    Instances(InstanceArgs),
    /// Usage index: page latency against instance count, targeted refresh
    /// time, and `runningOnly` on a large registry.
    Usage(UsageArgs),
    /// WebSocket delta delivery latency under a burst of lifecycle events.
    Stream(StreamArgs),
}

#[derive(Debug, clap::Args)]
struct UsageArgs {
    /// Instances running on the one hash whose usage page is timed.
    #[arg(long, default_value_t = 50_000)]
    many: usize,
    /// The small case it is compared with.
    #[arg(long, default_value_t = 100)]
    few: usize,
    /// Instances on the hash that the timed targeted refresh moves.
    #[arg(long, default_value_t = 1_000)]
    refreshed: usize,
    /// Samples per latency figure.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Concurrent HTTP clients for bulk creates.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// WebSocket subscribers that read everything.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Subscribers that connect and never read.
    #[arg(long, default_value_t = 1)]
    stalled: usize,
    /// Lifecycle events per second to aim for.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds the burst lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// What makes the events (see the module docs).
    #[arg(long, value_enum, default_value_t = Driver::Repin)]
    driver: Driver,
    /// Concurrent HTTP clients driving the burst.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Instances the burst moves (created before subscribers connect).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// `repin` driver: instances moved by one re-pin request (one strategy each).
    #[arg(long, default_value_t = 20)]
    per_request: usize,
    /// Pin the daemon to CPU 0 and this tool to the other CPUs, so the
    /// subscribers' own work does not preempt the daemon (Linux only).
    #[arg(long)]
    pin: bool,
}

/// What drives the lifecycle events of `strata-load stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Driver {
    /// `POST /strategy/instances/{id}/start` and `/stop`, one event each.
    Http,
    /// `POST /strategies/modules/{name}@{hash}/repin` between two revisions
    /// of a strategy, `--per-request` `instanceRepinned` events each.
    Repin,
}

#[derive(Debug, clap::Args)]
struct InstanceArgs {
    /// Instances to run at once.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Instances whose start is timed (part of `count`).
    #[arg(long, default_value_t = 1_000)]
    timed_starts: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds over which handler throughput is measured.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, clap::Args)]
struct Args {
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
async fn start(stratad: &std::path::Path, dir: &std::path::Path, port: u16) -> anyhow::Result<(Daemon, Duration)> {
    start_configured(stratad, dir, port, None).await
}

/// [`start`] with a configuration file.
async fn start_configured(
    stratad: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(Daemon, Duration)> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut command = Command::new(stratad);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
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

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Measure::Registry(args) => registry(&cli.stratad, args).await,
        Measure::Instances(args) => instances(&cli.stratad, args).await,
        Measure::Usage(args) => usage(&cli.stratad, args).await,
        Measure::Stream(args) => stream::run(&cli.stratad, args).await,
    }
}

async fn registry(stratad: &std::path::Path, args: Args) -> anyhow::Result<()> {
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
    let (first, first_start) = start(stratad, dir.path(), port).await?;
    drop(first);
    let (_daemon, restart) = start(stratad, dir.path(), port).await?;
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

const TRIVIAL: &str = r#"module.exports = {
  metadata: { name: "bench", displayName: "Bench", tag: "v1", events: ["Trade"] },
  create(env) { let last = 0; return { onTrade(ctx, evt, payload, price) { last = price; } }; },
};
"#;

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// CPU seconds (user + system) a process has used so far; `None` is this
/// process. Linux reports them in USER_HZ ticks, 100 a second.
fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat format")?.1.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("stat field")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The machine's CPU time so far, in USER_HZ ticks: (idle + iowait, steal,
/// everything). Steal is time the hypervisor gave this VM's CPUs to
/// someone else: a run with much of it measured a busy host, not Strata.
fn machine_ticks() -> anyhow::Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .context("no cpu line")?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(fields.len() == 8, "short cpu line");
    Ok((fields[3] + fields[4], fields[7], fields.iter().sum()))
}

/// Sends `ids.len()` POSTs (`path(id)` with `body(id)`) from `concurrency` clients.
async fn post_all(
    base: &str,
    ids: &[String],
    concurrency: usize,
    request: impl Fn(&str) -> (String, serde_json::Value) + Clone + Send + 'static,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = ids.chunks(ids.len().div_ceil(concurrency).max(1)).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (client, base, request) = (reqwest::Client::new(), base.to_owned(), request.clone());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                let (path, body) = request(&id);
                let response = client.post(format!("{base}{path}")).json(&body).send().await?;
                anyhow::ensure!(response.status().is_success(), "{path}: {}", response.text().await?);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

async fn delivered_total(client: &reqwest::Client, base: &str) -> anyhow::Result<(u64, u64)> {
    let (mut delivered, mut dropped, mut offset) = (0, 0, 0);
    loop {
        let page: serde_json::Value =
            client.get(format!("{base}/strategy/instances?limit=1000&offset={offset}")).send().await?.json().await?;
        let instances = page["instances"].as_array().context("instances")?;
        for instance in instances {
            delivered += instance["counters"]["eventsDelivered"].as_u64().unwrap_or(0);
            dropped += instance["counters"]["eventsDropped"].as_u64().unwrap_or(0);
        }
        offset += instances.len();
        if instances.is_empty() || offset >= page["total"].as_u64().unwrap_or(0) as usize {
            return Ok((delivered, dropped));
        }
    }
}

async fn instances(stratad: &std::path::Path, args: InstanceArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (daemon, _) = start(stratad, dir.path(), port).await?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let idle_rss = rss_kib(daemon.0.id())?;
    upload(&client, &base, TRIVIAL, "v1").await?;

    let create = |auto_start: bool| {
        move |id: &str| ("/strategy/instances".to_owned(), instance_request(id, "bench", "BTC-USDT", auto_start))
    };
    let timed: Vec<String> = (0..args.timed_starts).map(|i| format!("timed-{i}")).collect();
    let created = post_all(&base, &timed, args.concurrency, create(false)).await?;
    let starts = post_all(&base, &timed, args.concurrency, |id: &str| {
        (format!("/strategy/instances/{id}/start"), serde_json::json!({}))
    })
    .await?;
    println!("created {} instances in {:.3} s", timed.len(), created.as_secs_f64());
    println!("started {} instances in {:.3} s ({} clients)", timed.len(), starts.as_secs_f64(), args.concurrency);

    let rest: Vec<String> = (args.timed_starts..args.count).map(|i| format!("bulk-{i}")).collect();
    let bulk = post_all(&base, &rest, args.concurrency, create(true)).await?;
    println!("created and started {} more in {:.3} s", rest.len(), bulk.as_secs_f64());

    let (before, dropped_before) = delivered_total(&client, &base).await?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (after, dropped_after) = delivered_total(&client, &base).await?;
    let elapsed = t.elapsed().as_secs_f64();
    let rss = rss_kib(daemon.0.id())?;
    println!("running instances: {}", args.count);
    println!(
        "RSS idle: {:.1} MiB; with {} running: {:.1} MiB ({:.0} KiB per instance)",
        idle_rss as f64 / 1024.0,
        args.count,
        rss as f64 / 1024.0,
        (rss - idle_rss) as f64 / args.count as f64
    );
    println!(
        "handler calls: {:.0}/s over {:.1} s; market events dropped: {:.0}/s",
        (after - before) as f64 / elapsed,
        elapsed,
        (dropped_after - dropped_before) as f64 / elapsed
    );
    Ok(())
}

/// Times `samples` sequential GETs of `path` and returns them sorted.
async fn sample(client: &reqwest::Client, base: &str, path: &str, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let response = client.get(format!("{base}{path}")).send().await?;
        anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
        response.bytes().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

/// A strategy named `name` (revision `variant`) for the usage measurements.
fn named_module(name: &str, variant: u32) -> String {
    format!(
        "// {variant}\nmodule.exports = {{ metadata: {{ name: '{name}', displayName: '{name}', events: ['Trade'] }}, \
         create() {{ return {{ onTrade() {{}} }}; }} }};"
    )
}

async fn upload(client: &reqwest::Client, base: &str, source: &str, tag: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/strategies/modules"))
        .json(&serde_json::json!({"source": source, "tag": tag}))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "upload failed: {}", response.text().await?);
    let body: serde_json::Value = response.json().await?;
    Ok(body["hash"].as_str().context("hash")?.to_owned())
}

/// Creates and starts `ids` on `identifier`.
async fn run_on(base: &str, ids: &[String], identifier: &str, concurrency: usize) -> anyhow::Result<Duration> {
    let identifier = identifier.to_owned();
    post_all(base, ids, concurrency, move |id: &str| {
        ("/strategy/instances".to_owned(), instance_request(id, &identifier, "BTC-USDT", true))
    })
    .await
}

async fn usage(stratad: &std::path::Path, args: UsageArgs) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let dir = tempfile::tempdir()?;
    // A registry of 60,000 revisions, and a market so slow that handler
    // calls do not compete with the requests being timed.
    fixtures::generate(&dir.path().join("strategies"), &dir.path().join("data"), 1000, 60)?;
    let config = dir.path().join("stratad.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"sim\"\ntrades_per_sec = 0.01\ntickers_per_sec = 0.01\nbooks_per_sec = 0.01\n",
    )?;
    let port = free_port()?;
    let (daemon, _) = start_configured(stratad, dir.path(), port, Some(&config)).await?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // 1. Usage page latency: `few` then `many` running instances on one hash.
    let hot = upload(&client, &base, &named_module("hot", 1), "v1").await?;
    let page = format!("/strategies/modules/hot@{hot}/usage?limit=100");
    let few: Vec<String> = (0..args.few).map(|i| format!("hot-{i:06}")).collect();
    run_on(&base, &few, "hot", args.concurrency).await?;
    let floor_few = sample(&client, &base, "/healthz", args.samples).await?;
    let with_few = sample(&client, &base, &page, args.samples).await?;
    let more: Vec<String> = (args.few..args.many).map(|i| format!("hot-{i:06}")).collect();
    let took = run_on(&base, &more, "hot", args.concurrency).await?;
    println!("started {} more instances on one hash in {:.1} s", more.len(), took.as_secs_f64());
    let floor_many = sample(&client, &base, "/healthz", args.samples).await?;
    let with_many = sample(&client, &base, &page, args.samples).await?;
    let last_page = format!("/strategies/modules/hot@{hot}/usage?limit=100&offset={}", args.many - 100);
    let deep = sample(&client, &base, &last_page, args.samples / 4).await?;
    println!(
        "usage page (limit 100): {} instances p50 {:.3} ms (healthz {:.3} ms); {} instances p50 {:.3} ms (healthz {:.3} ms)",
        args.few,
        ms(percentile(&with_few, 0.5)),
        ms(percentile(&floor_few, 0.5)),
        args.many,
        ms(percentile(&with_many, 0.5)),
        ms(percentile(&floor_many, 0.5)),
    );
    println!(
        "ratio p50 {} vs {}: {:.2}x (target <= 1.5x); last page (offset {}) p50 {:.3} ms",
        args.many,
        args.few,
        ms(percentile(&with_many, 0.5)) / ms(percentile(&with_few, 0.5)),
        args.many - 100,
        ms(percentile(&deep, 0.5)),
    );
    println!("daemon RSS: {:.0} MiB", rss_kib(daemon.0.id())? as f64 / 1024.0);

    // 2. `runningOnly` on 60,000 revisions (hot and 10 generated strategies run).
    let runners: Vec<String> = (0..10).map(|i| format!("runner-{i}")).collect();
    for (i, id) in runners.iter().enumerate() {
        run_on(&base, std::slice::from_ref(id), &fixtures::strategy_name(i * 97), 1).await?;
    }
    let health = sample(&client, &base, "/healthz", args.samples).await?;
    let running_only = sample(&client, &base, "/strategies/modules?runningOnly=true&limit=50", args.samples).await?;
    println!(
        "runningOnly&limit=50 (60,000 revisions, 11 running strategies): p50 {:.3} ms p99 {:.3} ms; healthz p50 {:.3} ms p99 {:.3} ms; ratio p50 {:.2}x p99 {:.2}x (target <= 3x)",
        ms(percentile(&running_only, 0.5)),
        ms(percentile(&running_only, 0.99)),
        ms(percentile(&health, 0.5)),
        ms(percentile(&health, 0.99)),
        ms(percentile(&running_only, 0.5)) / ms(percentile(&health, 0.5)),
        ms(percentile(&running_only, 0.99)) / ms(percentile(&health, 0.99)),
    );

    // 3. Targeted refresh of a hash with `refreshed` running instances while
    // the `many` instances on `hot` must stay untouched.
    let old = upload(&client, &base, &named_module("moving", 1), "v1").await?;
    let movers: Vec<String> = (0..args.refreshed).map(|i| format!("mover-{i:05}")).collect();
    run_on(&base, &movers, "moving", args.concurrency).await?;
    let probe = "/strategy/instances/hot-000000";
    let before: serde_json::Value = client.get(format!("{base}{probe}")).send().await?.json().await?;
    upload(&client, &base, &named_module("moving", 2), "v2").await?;
    let t = Instant::now();
    let response =
        client.post(format!("{base}/strategies/refresh")).json(&serde_json::json!({"hashes": [old]})).send().await?;
    let took = t.elapsed();
    anyhow::ensure!(response.status().is_success(), "refresh failed");
    let body: serde_json::Value = response.json().await?;
    let results = body["results"].as_array().context("results")?;
    let refreshed = results.iter().filter(|r| r["reason"] == "refreshed").count();
    let after: serde_json::Value = client.get(format!("{base}{probe}")).send().await?.json().await?;
    anyhow::ensure!(before["startedAt"] == after["startedAt"], "an untargeted instance was restarted");
    println!(
        "targeted refresh of {} running instances on one hash: {:.3} s, {} refreshed (target <= 2 s); untargeted instances untouched",
        args.refreshed,
        took.as_secs_f64(),
        refreshed
    );
    anyhow::ensure!(refreshed == args.refreshed, "expected every instance refreshed");
    Ok(())
}

mod stream {
    //! `strata-load stream`.

    use std::io::Cursor;
    use std::net::SocketAddr;
    use std::ops::ControlFlow;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use bytes::{Buf, BytesMut};
    use futures_util::StreamExt;
    use serde::Deserialize;
    use time::OffsetDateTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::connect_async;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::client::generate_key;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    use super::{
        Driver, StreamArgs, TRIVIAL, cpu_seconds, free_port, instance_request, machine_ticks, metric_value,
        named_module, percentile, post_all, rss_kib, start, upload,
    };

    /// The `seq` and `ts` of a delta, read from the front of the message.
    /// The server writes `type`, `seq` and `ts` first; reading just those
    /// keeps this process's CPU, which shares the machine with the daemon
    /// under test, for the thousand sockets rather than for JSON the
    /// measurement never looks at. Anything else goes through [`Probe`].
    fn delta_prefix(text: &[u8]) -> Option<(u64, &[u8])> {
        let rest = text.strip_prefix(br#"{"type":"delta","seq":"#)?;
        let comma = rest.iter().position(|&b| b == b',')?;
        let (seq, rest) = (&rest[..comma], &rest[comma + 1..]);
        let rest = rest.strip_prefix(br#""ts":""#)?;
        let quote = rest.iter().position(|&b| b == b'"')?;
        let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
        Some((seq, &rest[..quote]))
    }

    /// The fields of a server message the measurement needs.
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        seq: Option<u64>,
    }

    /// What one subscriber saw.
    #[derive(Default)]
    struct Seen {
        /// Delivery latencies in microseconds.
        latencies: Vec<u32>,
        deltas: u64,
        gaps: u64,
        resyncs: u64,
        last: u64,
    }

    /// Pins every thread of `daemon` to CPU 0 and every thread of `tool` to
    /// the other CPUs. Threads started later inherit their creator's set.
    fn pin(daemon: u32, tool: u32) -> anyhow::Result<()> {
        use nix::sched::{CpuSet, sched_setaffinity};
        use nix::unistd::Pid;
        let cpus = std::thread::available_parallelism()?.get();
        anyhow::ensure!(cpus >= 2, "--pin needs at least 2 CPUs, this process may use {cpus}");
        let set = |range: std::ops::Range<usize>| -> anyhow::Result<CpuSet> {
            let mut set = CpuSet::new();
            for cpu in range {
                set.set(cpu)?;
            }
            Ok(set)
        };
        for (pid, cpus) in [(daemon, set(0..1)?), (tool, set(1..cpus)?)] {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                let tid: i32 = task?.file_name().to_string_lossy().parse()?;
                sched_setaffinity(Pid::from_raw(tid), &cpus).with_context(|| format!("pinning thread {tid}"))?;
            }
        }
        Ok(())
    }

    /// The cumulative buckets of `strata_ws_delivery_lag_seconds`: (upper
    /// bound in seconds, samples at or below it), `+Inf` last.
    fn lag_buckets(metrics: &str) -> Vec<(f64, u64)> {
        metrics
            .lines()
            .filter_map(|line| line.strip_prefix("strata_ws_delivery_lag_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    }

    /// Bucket counts of `after` minus those of `before` (same buckets).
    fn bucket_delta(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
        after
            .iter()
            .map(|&(bound, count)| {
                let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0, |(_, c)| *c);
                (bound, count - earlier)
            })
            .collect()
    }

    /// The upper bound, in ms, of the bucket holding quantile `q`.
    fn bucket_bound_ms(buckets: &[(f64, u64)], q: f64) -> String {
        let total = buckets.last().map_or(0, |(_, count)| *count);
        let rank = (q * total as f64).ceil() as u64;
        match buckets.iter().find(|(_, count)| *count >= rank.max(1)) {
            Some((bound, _)) if bound.is_finite() => format!("{}", bound * 1e3),
            Some(_) => "inf".into(),
            None => "?".into(),
        }
    }

    fn soft_nofile() -> anyhow::Result<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits")?;
        let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open-files limit")?;
        Ok(line.split_whitespace().nth(3).context("soft limit")?.parse().unwrap_or(u64::MAX))
    }

    /// Room each subscriber keeps free in its buffer before a read (a read
    /// fills what is free: more after a large message grew the buffer). 16
    /// KiB holds a whole batch of a burst (about 25 deltas) in one read:
    /// 8 KiB made twice the `recvfrom` calls (206,432 against 99,055 in 3 s,
    /// `perf stat -e syscalls:sys_enter_recvfrom`).
    const READ_BUFFER: usize = 16 * 1024;

    /// Opens `GET /ws` on `addr` as a WebSocket and returns the socket with
    /// the bytes already read past the `101` (the first frames may come with
    /// it). The request key comes from tungstenite, the response is parsed
    /// by httparse and its accept key checked against tungstenite's.
    async fn upgrade(addr: SocketAddr) -> anyhow::Result<(TcpStream, BytesMut)> {
        let mut socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let key = generate_key();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        let mut buffer = BytesMut::with_capacity(READ_BUFFER);
        loop {
            if socket.read_buf(&mut buffer).await? == 0 {
                bail!("the daemon closed the connection during the handshake");
            }
            // Enough for the daemon's answer. A test tool: the `Upgrade` and
            // `Connection` headers are not checked, the accept key is.
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&buffer)? {
                anyhow::ensure!(response.code == Some(101), "upgrade answered {:?}", response.code);
                let accept = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
                anyhow::ensure!(
                    accept.map(|h| h.value) == Some(derive_accept_key(key.as_bytes()).as_bytes()),
                    "wrong Sec-WebSocket-Accept"
                );
                buffer.advance(head);
                return Ok((socket, buffer));
            }
        }
    }

    /// Reads one subscriber's stream until it sees a delta past `until`
    /// (set once the burst is over, then followed by a sentinel delta), or
    /// the connection ends. Deltas past `until` are not counted.
    ///
    /// This process shares the machine with the daemon under test, so the
    /// reader is lean: frames are cut from one growing buffer with
    /// tungstenite's header parser, and a delta is read no further than its
    /// `seq` and `ts`. Through tokio-tungstenite's `WebSocketStream` (which
    /// zeroes its read buffer before every read, checks every message's UTF-8
    /// and allocates each one) the thousand readers kept this process's core
    /// 93–96% busy, and their queueing was part of the latency measured.
    async fn subscriber(addr: SocketAddr, until: Arc<AtomicU64>) -> anyhow::Result<Seen> {
        let (mut socket, mut buffer) = upgrade(addr).await?;
        let mut seen = Seen::default();
        loop {
            // Everything in one read arrived by the time it returned.
            let now = micros_of_day_now();
            loop {
                let mut cursor = Cursor::new(&buffer[..]);
                let Some((header, length)) = FrameHeader::parse(&mut cursor)? else { break };
                let start = cursor.position() as usize;
                let end = usize::try_from(length).ok().and_then(|n| start.checked_add(n)).context("frame length")?;
                if buffer.len() < end {
                    break;
                }
                let payload = &buffer[start..end];
                anyhow::ensure!(header.is_final && header.mask.is_none(), "a fragmented or masked server frame");
                match header.opcode {
                    OpCode::Data(Data::Text) => {
                        if seen.message(payload, now, &until)?.is_break() {
                            return Ok(seen);
                        }
                    }
                    OpCode::Control(Control::Ping) => {
                        let mut pong = Frame::pong(payload.to_vec());
                        pong.header_mut().mask = Some(mask());
                        let mut wire = Vec::new();
                        pong.format(&mut wire)?;
                        socket.write_all(&wire).await?;
                    }
                    OpCode::Control(Control::Close) => return Ok(seen),
                    other => bail!("unexpected {other} frame"),
                }
                buffer.advance(end);
            }
            buffer.reserve(READ_BUFFER);
            if socket.read_buf(&mut buffer).await? == 0 {
                return Ok(seen);
            }
        }
    }

    /// A client frame's mask (RFC 6455 §5.3), from the standard library's
    /// per-process random hash keys.
    fn mask() -> [u8; 4] {
        use std::hash::{BuildHasher, RandomState};
        (RandomState::new().hash_one(Instant::now()) as u32).to_ne_bytes()
    }

    impl Seen {
        /// Counts one text message received at `now` (microseconds of the
        /// day); `Break` once a delta past `until` arrives.
        fn message(&mut self, text: &[u8], now: u64, until: &AtomicU64) -> anyhow::Result<ControlFlow<()>> {
            let Some((seq, ts)) = delta_prefix(text) else {
                let probe: Probe = serde_json::from_slice(text)?;
                match probe.kind {
                    "snapshot" => self.last = probe.seq.context("snapshot seq")?,
                    "resync" => self.resyncs += 1,
                    "delta" => {
                        bail!("a delta that does not start with type, seq and ts: {}", String::from_utf8_lossy(text))
                    }
                    _ => {}
                }
                return Ok(ControlFlow::Continue(()));
            };
            let target = until.load(Ordering::Acquire);
            if target > 0 && seq > target {
                return Ok(ControlFlow::Break(()));
            }
            if seq != self.last + 1 {
                self.gaps += seq.saturating_sub(self.last + 1);
            }
            self.last = seq;
            self.deltas += 1;
            let sent = match micros_of_day(ts) {
                Some(sent) => sent,
                None => {
                    let ts = std::str::from_utf8(ts)?;
                    let ts = OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)?;
                    (ts.to_offset(time::UtcOffset::UTC).time() - time::Time::MIDNIGHT).whole_microseconds() as u64
                }
            };
            self.latencies.push(latency_micros(sent, now));
            Ok(ControlFlow::Continue(()))
        }
    }

    const MICROS_PER_DAY: u64 = 86_400_000_000;

    /// Microseconds since midnight UTC of a `ts` the daemon wrote
    /// (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`), or `None` for any other form (the
    /// caller then parses it fully). A full RFC 3339 parse per delta was 6% of
    /// this process's CPU, and this process shares the machine with the daemon.
    fn micros_of_day(b: &[u8]) -> Option<u64> {
        let digits = |range: std::ops::Range<usize>| -> Option<u64> {
            b.get(range)?.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
        };
        if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return None;
        }
        let seconds = digits(11..13)? * 3600 + digits(14..16)? * 60 + digits(17..19)?;
        let (fraction, end) = match b.get(19) {
            Some(b'.') => {
                let len = b[20..].iter().take_while(|d| d.is_ascii_digit()).count();
                let micros = digits(20..20 + len.min(6))? * 10u64.pow(6 - len.min(6) as u32);
                (micros, 20 + len)
            }
            _ => (0, 19),
        };
        (b.get(end) == Some(&b'Z') && end + 1 == b.len()).then_some(seconds * 1_000_000 + fraction)
    }

    fn micros_of_day_now() -> u64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (since_epoch.as_micros() % u128::from(MICROS_PER_DAY)) as u64
    }

    /// `now - sent` across midnight; 0 if `sent` looks later than `now`.
    fn latency_micros(sent: u64, now: u64) -> u32 {
        let elapsed = (now + MICROS_PER_DAY - sent) % MICROS_PER_DAY;
        if elapsed > MICROS_PER_DAY / 2 { 0 } else { elapsed.min(u64::from(u32::MAX)) as u32 }
    }

    /// The bus's current `seq`, from a fresh snapshot.
    async fn current_seq(url: &str) -> anyhow::Result<u64> {
        let (mut ws, _) = connect_async(url).await?;
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                let probe: Probe = serde_json::from_str(&text)?;
                if probe.kind == "snapshot" {
                    return probe.seq.context("snapshot seq");
                }
            }
        }
        bail!("no snapshot")
    }

    pub(super) async fn run(stratad: &std::path::Path, args: StreamArgs) -> anyhow::Result<()> {
        let needed = 2 * (args.subscribers + args.stalled) as u64 + 256;
        let limit = soft_nofile()?;
        if limit < needed {
            bail!("open-files limit {limit} is below the {needed} needed: run `ulimit -n {needed}` first");
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let (daemon, _) = start(stratad, dir.path(), port).await?;
        let pid = daemon.0.id();
        if args.pin {
            pin(pid, std::process::id())?;
        }
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("ws://127.0.0.1:{port}/ws");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let client = reqwest::Client::new();
        let plan = Plan::create(&client, &base, &args).await?;
        let idle_rss = rss_kib(pid)?;

        // Subscribers, connected 50 at a time.
        let until = Arc::new(AtomicU64::new(0));
        let connecting = Instant::now();
        let mut readers = Vec::with_capacity(args.subscribers);
        for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(50) {
            let mut batch = Vec::new();
            for _ in chunk {
                batch.push(tokio::spawn(subscriber(addr, until.clone())));
            }
            readers.extend(batch);
            tokio::task::yield_now().await;
        }
        let mut stalled = Vec::new();
        for _ in 0..args.stalled {
            stalled.push(upgrade(addr).await?);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metrics = client.get(format!("{base}/metrics")).send().await?.text().await?;
            let connected = metric_value(&metrics, "strata_ws_subscribers").unwrap_or(0.0);
            if connected as usize >= args.subscribers + args.stalled {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {connected} subscribers connected after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "connected {} subscribers + {} stalled in {:.2} s",
            args.subscribers,
            args.stalled,
            connecting.elapsed().as_secs_f64()
        );
        let start_seq = current_seq(&url).await?;
        let before_rss = rss_kib(pid)?;
        let lag_before = lag_buckets(&client.get(format!("{base}/metrics")).send().await?.text().await?);

        let sent = Arc::new(AtomicU64::new(0));
        let cpu_before = (cpu_seconds(Some(pid))?, cpu_seconds(None)?);
        let machine_before = machine_ticks()?;
        let burst = Instant::now();
        plan.drive(&base, &args, burst, sent.clone()).await?;
        let burst_elapsed = burst.elapsed();
        let cpu_after = (cpu_seconds(Some(pid))?, cpu_seconds(None)?);
        let machine_after = machine_ticks()?;
        let metrics = client.get(format!("{base}/metrics")).send().await?.text().await?;
        let connected_after = metric_value(&metrics, "strata_ws_subscribers").unwrap_or(f64::NAN);
        let end_seq = current_seq(&url).await?;
        let events = end_seq - start_seq;
        until.store(end_seq, Ordering::Release);
        // A sentinel change past `end_seq` tells every reader it has all.
        let sentinel = instance_request("sentinel", plan.strategy(), "BTC-USDT", false);
        let response = client.post(format!("{base}/strategy/instances")).json(&sentinel).send().await?;
        anyhow::ensure!(response.status().is_success(), "sentinel: {}", response.text().await?);

        let mut all = Vec::new();
        let (mut incomplete, mut gaps, mut resyncs, mut failed) = (0, 0, 0, 0);
        let draining = Instant::now();
        for reader in readers {
            match tokio::time::timeout(Duration::from_secs(60), reader).await {
                Ok(Ok(Ok(seen))) => {
                    if seen.last < end_seq || seen.deltas < events {
                        incomplete += 1;
                    }
                    gaps += seen.gaps;
                    resyncs += seen.resyncs;
                    all.extend(seen.latencies);
                }
                Ok(Ok(Err(e))) => {
                    failed += 1;
                    eprintln!("subscriber failed: {e:#}");
                }
                _ => failed += 1,
            }
        }
        let after_rss = rss_kib(pid)?;
        let metrics_after = client.get(format!("{base}/metrics")).send().await?.text().await?;
        let resyncs_total = metric_value(&metrics_after, "strata_ws_resyncs_total").unwrap_or(f64::NAN);
        let dropped_stalled =
            metric_value(&metrics_after, r#"strata_ws_disconnects_total{reason="send_timeout"}"#).unwrap_or(0.0);
        let lag = bucket_delta(&lag_before, &lag_buckets(&metrics_after));
        drop(stalled);
        all.sort_unstable();
        anyhow::ensure!(!all.is_empty(), "no delta was received");
        let ms = |us: u32| f64::from(us) / 1e3;
        println!(
            "burst ({:?} driver): {} HTTP requests, {events} lifecycle events in {:.2} s = {:.0} events/s (target {}/s)",
            args.driver,
            sent.load(Ordering::Relaxed),
            burst_elapsed.as_secs_f64(),
            events as f64 / burst_elapsed.as_secs_f64(),
            args.rate
        );
        println!(
            "delivered {} deltas to {} subscribers ({:.0} deltas/s written); drained {:.2} s after the burst",
            all.len(),
            args.subscribers,
            all.len() as f64 / burst_elapsed.as_secs_f64(),
            draining.elapsed().as_secs_f64()
        );
        println!(
            "latency ts->receive: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(*all.last().expect("non-empty"))
        );
        println!(
            "daemon side (strata_ws_delivery_lag_seconds, one sample per write, oldest delta): {} writes, p50 <= {} ms, p99 <= {} ms",
            lag.last().map_or(0, |(_, count)| *count),
            bucket_bound_ms(&lag, 0.5),
            bucket_bound_ms(&lag, 0.99)
        );
        let per_second = |before: f64, after: f64| (after - before) / burst_elapsed.as_secs_f64();
        println!(
            "CPU during the burst (cores busy, of {}{}): daemon {:.2}, this tool (publishers + subscribers) {:.2}",
            std::thread::available_parallelism().map_or(0, usize::from),
            if args.pin { "; daemon pinned to CPU 0, this tool to the rest" } else { "" },
            per_second(cpu_before.0, cpu_after.0),
            per_second(cpu_before.1, cpu_after.1)
        );
        let total = (machine_after.2 - machine_before.2).max(1) as f64;
        println!(
            "machine during the burst: {:.0}% idle, {:.0}% stolen by the hypervisor (a run with much steal measured the host)",
            100.0 * (machine_after.0 - machine_before.0) as f64 / total,
            100.0 * (machine_after.1 - machine_before.1) as f64 / total
        );
        println!(
            "subscribers missing deltas: {incomplete}; gaps: {gaps}; resyncs seen by readers: {resyncs}; failed: {failed}"
        );
        println!(
            "daemon: strata_ws_subscribers right after the burst = {connected_after} (stalled included); \
             strata_ws_resyncs_total = {resyncs_total}; dropped by the send timeout = {dropped_stalled}"
        );
        println!(
            "daemon RSS: idle {:.1} MiB; with subscribers before the burst {:.1} MiB; after {:.1} MiB",
            idle_rss as f64 / 1024.0,
            before_rss as f64 / 1024.0,
            after_rss as f64 / 1024.0
        );
        drop(daemon);
        Ok(())
    }

    /// The instances a burst moves, and how.
    enum Plan {
        /// Instance ids, started and stopped one request at a time.
        Http(Vec<String>),
        /// Per strategy: its name and two revisions; its instances start on the first.
        Repin(Vec<(String, [String; 2])>),
    }

    impl Plan {
        /// A strategy of the plan (for the sentinel instance).
        fn strategy(&self) -> &str {
            match self {
                Self::Http(_) => "bench",
                Self::Repin(strategies) => strategies.first().map_or("bench", |(name, _)| name),
            }
        }

        /// Uploads the strategies and creates the (stopped) instances.
        async fn create(client: &reqwest::Client, base: &str, args: &StreamArgs) -> anyhow::Result<Self> {
            let ids: Vec<String> = (0..args.instances).map(|i| format!("burst-{i}")).collect();
            let (plan, pinned): (Self, Vec<(String, String)>) = match args.driver {
                Driver::Http => {
                    upload(client, base, TRIVIAL, "v1").await?;
                    (Self::Http(ids.clone()), ids.iter().map(|id| (id.clone(), "bench".to_owned())).collect())
                }
                Driver::Repin => {
                    let mut strategies = Vec::new();
                    let mut pinned = Vec::new();
                    for (n, group) in ids.chunks(args.per_request.max(1)).enumerate() {
                        let name = format!("burst{n}");
                        let first = upload(client, base, &named_module(&name, 1), "v1").await?;
                        let second = upload(client, base, &named_module(&name, 2), "v2").await?;
                        pinned.extend(group.iter().map(|id| (id.clone(), format!("{name}@{first}"))));
                        strategies.push((name, [first, second]));
                    }
                    (Self::Repin(strategies), pinned)
                }
            };
            let selectors: std::collections::HashMap<String, String> = pinned.into_iter().collect();
            post_all(base, &ids, args.concurrency, move |id: &str| {
                ("/strategy/instances".to_owned(), instance_request(id, &selectors[id], "BTC-USDT", false))
            })
            .await?;
            Ok(plan)
        }

        /// Runs the burst from `burst` for `--seconds`: `--concurrency`
        /// workers, each paced to its share of `--rate`, counting requests in `sent`.
        async fn drive(
            &self,
            base: &str,
            args: &StreamArgs,
            burst: Instant,
            sent: Arc<AtomicU64>,
        ) -> anyhow::Result<()> {
            let end = burst + Duration::from_secs(args.seconds);
            // Each unit is one request target: an instance (http) or a strategy (repin).
            let (units, events_per_request) = match self {
                Self::Http(ids) => (ids.len(), 1.0),
                Self::Repin(strategies) => (strategies.len(), args.per_request.max(1) as f64),
            };
            let workers = args.concurrency.clamp(1, units.max(1));
            let per_worker = args.rate as f64 / events_per_request / workers as f64;
            let mut tasks = Vec::new();
            for worker in 0..workers {
                let mine: Vec<usize> = (worker..units).step_by(workers).collect();
                // Per unit, the request there and the one back: (path, body).
                let requests: Vec<[(String, String); 2]> = mine
                    .iter()
                    .map(|&unit| match self {
                        Self::Http(ids) => [
                            (format!("/strategy/instances/{}/start", ids[unit]), "{}".to_owned()),
                            (format!("/strategy/instances/{}/stop", ids[unit]), "{}".to_owned()),
                        ],
                        Self::Repin(strategies) => {
                            let (name, [first, second]) = &strategies[unit];
                            let repin = |from: &String, to: &String| {
                                let body = serde_json::json!({ "to": format!("{name}@{to}") }).to_string();
                                (format!("/strategies/modules/{name}@{from}/repin"), body)
                            };
                            [repin(first, second), repin(second, first)]
                        }
                    })
                    .collect();
                let (client, base, sent) = (reqwest::Client::new(), base.to_owned(), sent.clone());
                let phase = worker as f64 / workers as f64;
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < end && !requests.is_empty() {
                        // Workers are staggered so requests arrive evenly, not
                        // `--concurrency` at a time.
                        let due = burst + Duration::from_secs_f64((n as f64 + phase) / per_worker);
                        tokio::time::sleep_until(due.into()).await;
                        // Round-robin over the units; each visit flips a unit's direction.
                        let (len, visit) = (requests.len(), n as usize);
                        let (path, body) = &requests[visit % len][(visit / len) % 2];
                        let response = client
                            .post(format!("{base}{path}"))
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await?;
                        anyhow::ensure!(response.status().is_success(), "{path}: {}", response.text().await?);
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lag_quantiles_come_from_the_burst_s_buckets_only() {
            let text = |counts: [u64; 3]| {
                format!(
                    "strata_ws_delivery_lag_seconds_bucket{{le=\"0.01\"}} {}\n\
                     strata_ws_delivery_lag_seconds_bucket{{le=\"0.05\"}} {}\n\
                     strata_ws_delivery_lag_seconds_bucket{{le=\"+Inf\"}} {}\n",
                    counts[0], counts[1], counts[2]
                )
            };
            let before = lag_buckets(&text([5, 5, 5]));
            let after = lag_buckets(&text([95, 104, 105]));
            let burst = bucket_delta(&before, &after);
            assert_eq!(burst, [(0.01, 90), (0.05, 99), (f64::INFINITY, 100)]);
            assert_eq!(bucket_bound_ms(&burst, 0.5), "10");
            assert_eq!(bucket_bound_ms(&burst, 0.99), "50");
            assert_eq!(bucket_bound_ms(&burst, 1.0), "inf");
        }

        #[test]
        fn the_time_of_day_fast_path_agrees_with_a_full_parse() {
            for ts in [
                "2026-12-06T12:26:16.123456789Z",
                "2026-12-06T00:00:00Z",
                "2026-12-06T23:59:59.5Z",
                "2026-12-06T08:07:06.000001Z",
            ] {
                let full = OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
                let expected = (full.time() - time::Time::MIDNIGHT).whole_microseconds() as u64;
                assert_eq!(micros_of_day(ts.as_bytes()), Some(expected), "{ts}");
            }
            assert_eq!(micros_of_day(b"2026-12-06T12:26:16+01:00"), None, "only UTC takes the fast path");
            assert_eq!(micros_of_day(b"2026-12-06T12:26:1x.5Z"), None);
            assert_eq!(latency_micros(MICROS_PER_DAY - 1_000, 2_000), 3_000, "across midnight");
            assert_eq!(latency_micros(5_000, 4_000), 0, "a clock step back is no latency");
        }

        /// The lean reader against a tungstenite server: handshake, a
        /// snapshot, deltas with a gap, a ping it must answer, and the stop
        /// past `until`.
        #[tokio::test]
        async fn the_reader_counts_deltas_and_gaps_and_answers_pings() {
            use futures_util::SinkExt;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (socket, _) = listener.accept().await.unwrap();
                let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
                let delta = |seq: u64| {
                    Message::text(format!(
                        r#"{{"type":"delta","seq":{seq},"ts":"{}","kind":"instanceStarted"}}"#,
                        OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
                    ))
                };
                ws.send(Message::text(r#"{"type":"snapshot","seq":10,"revisions":[]}"#)).await.unwrap();
                for seq in [11, 12, 14] {
                    ws.send(delta(seq)).await.unwrap();
                }
                ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
                let pong = loop {
                    match ws.next().await.unwrap().unwrap() {
                        Message::Pong(payload) => break payload,
                        _ => continue,
                    }
                };
                ws.send(delta(15)).await.unwrap();
                ws.send(delta(16)).await.unwrap();
                pong
            });
            let reader = tokio::spawn(subscriber(addr, Arc::new(AtomicU64::new(15))));
            let limit = Duration::from_secs(10);
            let pong = tokio::time::timeout(limit, server).await.expect("the server finishes").unwrap();
            assert_eq!(&pong[..], b"are you there", "the reader answers a ping with its payload");
            let seen = tokio::time::timeout(limit, reader).await.expect("the reader finishes").unwrap().unwrap();
            assert_eq!(
                (seen.deltas, seen.gaps, seen.last),
                (4, 1, 15),
                "11, 12, 14, 15 counted; 13 missing; 16 past the end"
            );
            assert_eq!(seen.latencies.len(), 4);
        }

        #[test]
        fn delta_prefix_reads_seq_and_ts_and_nothing_else() {
            let text = r#"{"type":"delta","seq":42,"ts":"2026-12-06T10:49:21Z","kind":"instanceStarted"}"#;
            assert_eq!(delta_prefix(text.as_bytes()), Some((42, &b"2026-12-06T10:49:21Z"[..])));
            assert_eq!(delta_prefix(br#"{"type":"snapshot","seq":1}"#), None);
            assert_eq!(delta_prefix(br#"{"type":"delta","seq":,"ts":"x"}"#), None, "no seq");
        }
    }
}
