//! Creating instances through the lifecycle core (the manager, in process:
//! what `POST /strategy/instances` runs on the blocking pool), on a fresh
//! daemon and data directory per iteration, each iteration timing 1,000
//! creates:
//!
//! - `bulk_1000_create_start`: one bulk create of 1,000 instances with
//!   `autoStart` (one transaction, runtimes built in parallel);
//! - `single_creates/1_client` and `single_creates/8_clients`: 1,000 single
//!   creates, sequential from one thread or 125 each from eight (group
//!   commit lets the eight share fsyncs);
//! - `bare_sqlite_1000_inserts`: the floor, a bare loop of 1,000 inserts of
//!   a comparable row, each its own fsync'd transaction (WAL,
//!   `synchronous=FULL`, as the store).
//!
//! Run: `cargo bench -p strata-daemon --bench create`. `docs/performance.md`
//! records the ratios: 8 clients against 1, and 1 client against the bare
//! loop.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use strata_daemon::{Config, Running};
use strata_shared::api::CreateInstanceRequest;

const COUNT: usize = 1000;

/// A daemon on a fresh directory with one trivial strategy uploaded.
fn daemon(runtime: &tokio::runtime::Runtime) -> (Running, tempfile::TempDir) {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("loopback"),
        strategies_dir: temp.path().join("strategies"),
        data_dir: Some(temp.path().join("data")),
        load_threads: Some(1),
        ..Config::default()
    };
    let running = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        let mut running = strata_daemon::boot(config, listener).await.expect("boot");
        running.wait_loaded().await;
        running
    });
    let source = "module.exports = { metadata: { name: 'bench', displayName: 'Bench', events: ['Trade'] },\n  create() { return { onTrade() {} }; } };\n";
    running
        .daemon
        .registry()
        .upload(strata_daemon::registry::Upload {
            source: source.into(),
            tag: Some("v1".into()),
            aliases: Vec::new(),
            promote_latest: true,
            expected_strategy: None,
        })
        .expect("upload");
    (running, temp)
}

fn request(id: String, auto_start: bool) -> CreateInstanceRequest {
    serde_json::from_value(json!({"id": id, "strategy": {"identifier": "bench"},
                                  "scope": {"sim": {"symbols": ["BTC-USDT"]}}, "autoStart": auto_start}))
    .expect("request")
}

/// Times `work` on a fresh daemon per iteration.
fn timed(iters: u64, work: impl Fn(&strata_daemon::Daemon)) -> Duration {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (running, temp) = daemon(&runtime);
        let started = Instant::now();
        work(&running.daemon);
        total += started.elapsed();
        runtime.block_on(running.shutdown());
        drop(temp);
    }
    total
}

fn creates(c: &mut Criterion) {
    let mut group = c.benchmark_group("create");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(10));
    group.bench_function("bulk_1000_create_start", |b| {
        b.iter_custom(|iters| {
            timed(iters, |d| {
                let requests = (0..COUNT).map(|i| request(format!("b{i}"), true)).collect();
                let results = d.instances().create_many(requests);
                assert!(results.iter().all(Result::is_ok));
            })
        });
    });
    for clients in [1usize, 8] {
        group.bench_function(format!("single_creates/{clients}_client{}", if clients > 1 { "s" } else { "" }), |b| {
            b.iter_custom(|iters| {
                timed(iters, |d| {
                    std::thread::scope(|scope| {
                        for client in 0..clients {
                            scope.spawn(move || {
                                for i in 0..COUNT / clients {
                                    d.instances().create(request(format!("c{client}-{i}"), false)).expect("create");
                                }
                            });
                        }
                    });
                })
            });
        });
    }
    group.bench_function("bare_sqlite_1000_inserts", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let temp = tempfile::tempdir().expect("temp dir");
                let conn = rusqlite::Connection::open(temp.path().join("bare.db")).expect("open");
                conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
                conn.pragma_update(None, "synchronous", "FULL").expect("full");
                conn.execute_batch(
                    "CREATE TABLE t (id TEXT PRIMARY KEY NOT NULL, spec TEXT NOT NULL) WITHOUT ROWID;
                     CREATE TABLE a (seq INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT, id TEXT);",
                )
                .expect("schema");
                let spec = "x".repeat(400);
                let started = Instant::now();
                for i in 0..COUNT {
                    let tx = conn.unchecked_transaction().expect("begin");
                    tx.execute("INSERT INTO t (id, spec) VALUES (?1, ?2)", rusqlite::params![format!("i{i}"), spec])
                        .expect("insert");
                    tx.execute("INSERT INTO a (action, id) VALUES ('create', ?1)", [format!("i{i}")]).expect("audit");
                    tx.commit().expect("commit");
                }
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, creates);
criterion_main!(benches);
