//! The hostile-module corpus (`tests/hostile/*.js`, SPEC §8) against a real
//! daemon: every module is uploaded and, when accepted, run as an instance
//! beside a well-behaved neighbour, and its outcome is checked.
//!
//! Each corpus file says what must happen in its header:
//!
//! ```text
//! // hostile: what the module does
//! // expect: <outcome> <text>[|<text>…]
//! // config: {"dry_run": false}        (optional instance config)
//! ```
//!
//! Outcomes: `upload-refused` (the upload answers 422 within the CPU
//! budget plus 1 s), `start-failed` (creating it with `autoStart` answers
//! 422 within the budget plus 1 s and leaves it `failed`), `fails-running`
//! (it starts, then ends `failed`), `keeps-running` (it stays `running`, its
//! log lines recorded). `lastError` (or the upload's diagnostics) must contain one of
//! the `|`-separated texts. After every case the instance is deleted at
//! once, the process's CPU use must fall back (no thread left spinning), the
//! neighbour must have kept its event rate, and at the end the daemon's RSS
//! must be within its base plus a few instance memory caps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::TestDaemon;

/// CPU budget per call given to the daemon under test.
const CPU_BUDGET: Duration = Duration::from_millis(100);
/// Memory cap per instance given to the daemon under test.
const MEMORY_CAP_MIB: usize = 32;
/// Trades a second on the simulated venue (so handlers run at once).
const TRADES_PER_SEC: f64 = 50.0;
/// SPEC §8: no module holds a core past its budget plus this.
const GRACE: Duration = Duration::from_secs(1);
/// Slack for the first trade to arrive and for the test's polling.
const POLL_SLACK: Duration = Duration::from_millis(500);
/// An order storm needs a few seconds of refusals (runtime/orders.rs).
const ORDER_STORM_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    UploadRefused,
    StartFailed,
    FailsRunning,
    KeepsRunning,
}

#[derive(Debug)]
struct Case {
    name: String,
    source: String,
    outcome: Outcome,
    texts: Vec<String>,
    config: Value,
}

impl Case {
    fn load(path: &Path) -> Case {
        let source = std::fs::read_to_string(path).expect("corpus file");
        let name = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_owned();
        let header = |key: &str| {
            source.lines().find_map(|line| line.strip_prefix(&format!("// {key}: ")).map(str::trim).map(str::to_owned))
        };
        let expect = header("expect").unwrap_or_else(|| panic!("{name}: no `// expect:` line"));
        let (outcome, texts) = expect.split_once(' ').unwrap_or((&expect, ""));
        let outcome = match outcome {
            "upload-refused" => Outcome::UploadRefused,
            "start-failed" => Outcome::StartFailed,
            "fails-running" => Outcome::FailsRunning,
            "keeps-running" => Outcome::KeepsRunning,
            other => panic!("{name}: unknown outcome {other:?}"),
        };
        let texts = texts.split('|').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        let config = header("config").map_or(json!({}), |c| serde_json::from_str(&c).expect("config header is JSON"));
        assert!(source.contains("// hostile: "), "{name}: no `// hostile:` line");
        Case { name, source, outcome, texts, config }
    }

    fn assert_names_a_limit(&self, text: &str) {
        assert!(
            self.texts.iter().any(|t| text.contains(t.as_str())),
            "{}: expected one of {:?} in {text}",
            self.name,
            self.texts
        );
    }
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/hostile")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "js"))
        .collect();
    files.sort();
    files.iter().map(|path| Case::load(path)).collect()
}

/// CPU time this process (the daemon under test runs in it) has used.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): utime and
    // stime are fields 14 and 15 of the line, 12 and 13 after the `)`.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<u64> = rest.split(' ').skip(11).take(2).map(|f| f.parse().expect("tick count")).collect();
    // USER_HZ is 100 on every Linux ABI Rust supports.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// Resident set size of this process.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value");
    kib * 1024
}

/// CPU cores this process keeps busy over `window`.
async fn cores_busy(window: Duration) -> f64 {
    let before = process_cpu();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    (process_cpu() - before).as_secs_f64() / started.elapsed().as_secs_f64()
}

async fn events_delivered(d: &TestDaemon, id: &str) -> u64 {
    let (status, view) = d.get(&format!("/strategy/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["counters"]["eventsDelivered"].as_u64().expect("eventsDelivered")
}

async fn state_of(d: &TestDaemon, id: &str) -> Value {
    let (status, view) = d.get(&format!("/strategy/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

const NEIGHBOUR: &str = r#"'use strict';
module.exports = {
  metadata: { name: 'neighbour', displayName: 'Neighbour', events: ['Trade'], config: [] },
  create() { return { onTrade() {} }; },
};
"#;

/// Runs one case; returns what ended it (the upload's first diagnostic or
/// the instance's `lastError`).
async fn run_case(d: &TestDaemon, case: &Case) -> String {
    let started = Instant::now();
    let (status, body) = d.post("/strategies/modules", json!({"source": case.source, "tag": "v1"})).await;
    let answered = started.elapsed();
    if case.outcome == Outcome::UploadRefused {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {body}", case.name);
        assert!(answered <= CPU_BUDGET + GRACE, "{}: upload answered after {answered:?}", case.name);
        case.assert_names_a_limit(&body.to_string());
        return body["diagnostics"][0]["message"].as_str().unwrap_or_default().to_owned();
    }
    assert!(status.is_success(), "{}: upload refused: {status} {body}", case.name);

    let request = json!({
        "id": case.name,
        "strategy": {"identifier": format!("{}:v1", case.name), "config": case.config},
        "scope": {"sim": {"symbols": ["BTC-USDT"]}},
        "autoStart": true,
    });
    let started = Instant::now();
    let (status, view) = d.post("/strategy/instances", request).await;
    let answered = started.elapsed();
    let outcome = match case.outcome {
        Outcome::UploadRefused => unreachable!(),
        Outcome::StartFailed => {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}: {view}", case.name);
            assert!(answered <= CPU_BUDGET + GRACE, "{}: create answered after {answered:?}", case.name);
            let view = state_of(d, &case.name).await;
            assert_eq!(view["state"], "failed", "{}: {view}", case.name);
            case.assert_names_a_limit(view["lastError"].as_str().unwrap_or_default());
            view["lastError"].as_str().unwrap_or_default().to_owned()
        }
        Outcome::FailsRunning => {
            assert_eq!(status, StatusCode::CREATED, "{}: {view}", case.name);
            let within =
                if case.name.starts_with("orders-") { ORDER_STORM_WITHIN } else { CPU_BUDGET + GRACE + POLL_SLACK };
            let view = loop {
                let view = state_of(d, &case.name).await;
                if view["state"] == "failed" {
                    break view;
                }
                assert!(started.elapsed() <= within, "{}: not failed after {:?}: {view}", case.name, started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            case.assert_names_a_limit(view["lastError"].as_str().unwrap_or_default());
            view["lastError"].as_str().unwrap_or_default().to_owned()
        }
        Outcome::KeepsRunning => {
            assert_eq!(status, StatusCode::CREATED, "{}: {view}", case.name);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let view = state_of(d, &case.name).await;
            assert_eq!(view["state"], "running", "{}: {view}", case.name);
            assert!(view["counters"]["eventsDelivered"].as_u64() > Some(5), "{}: {view}", case.name);
            let (status, logs) = d.get(&format!("/strategy/instances/{}/logs", case.name)).await;
            assert_eq!(status, StatusCode::OK, "{logs}");
            // What the lines cost the daemon is checked by the RSS bound at
            // the end; here, that they were recorded at all.
            let lines = logs["lines"].as_array().expect("lines");
            assert!(lines.len() > 5, "{}: {} log lines", case.name, lines.len());
            format!(
                "running, {} events, {} handler errors",
                view["counters"]["eventsDelivered"], view["counters"]["handlerErrors"]
            )
        }
    };

    // Stop and delete work at once, whatever the module did.
    let started = Instant::now();
    let (status, body) = d.delete(&format!("/strategy/instances/{}", case.name)).await;
    assert!(status.is_success(), "{}: delete answered {status} {body}", case.name);
    assert!(started.elapsed() <= GRACE, "{}: delete took {:?}", case.name, started.elapsed());
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_module_escapes_its_limits() {
    let d = TestDaemon::start_with(|config| {
        config.js.cpu_budget_ms = CPU_BUDGET.as_millis() as u64;
        config.js.memory_limit_mib = MEMORY_CAP_MIB;
        config.providers[0].trades_per_sec = Some(TRADES_PER_SEC);
    })
    .await;
    d.upload(NEIGHBOUR, "v1").await;
    d.create_instance("neighbour", "neighbour:v1", true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let base_rss = rss_bytes();
    let calm_from = events_delivered(&d, "neighbour").await;
    let calm_started = Instant::now();
    let calm_cores = cores_busy(Duration::from_secs(2)).await;
    let calm_rate = (events_delivered(&d, "neighbour").await - calm_from) as f64 / calm_started.elapsed().as_secs_f64();
    assert!(calm_rate > TRADES_PER_SEC * 0.5, "the neighbour gets {calm_rate:.1} events/s before the corpus");

    let cases = corpus();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let mut report = Vec::new();
    for case in &cases {
        let from = events_delivered(&d, "neighbour").await;
        let started = Instant::now();
        let outcome = run_case(&d, case).await;
        let took = started.elapsed();
        let busy = cores_busy(Duration::from_secs(1)).await;
        let rate = (events_delivered(&d, "neighbour").await - from) as f64 / started.elapsed().as_secs_f64();
        report.push(format!(
            "{:<32} {:>5} ms  cores after {busy:.2}  neighbour {rate:4.1}/s  RSS {:>4} MiB  {outcome}",
            case.name,
            took.as_millis(),
            rss_bytes() >> 20
        ));
        // A thread left spinning would keep a whole core busy.
        assert!(busy < calm_cores + 0.5, "{}: {busy:.2} cores busy after the case (calm: {calm_cores:.2})", case.name);
        assert!(rate >= calm_rate * 0.7, "{}: the neighbour got {rate:.1} events/s (calm: {calm_rate:.1})", case.name);
        assert_eq!(state_of(&d, "neighbour").await["state"], "running", "{}: the neighbour stopped", case.name);
    }
    let rss = rss_bytes();
    let bound = base_rss + 4 * (MEMORY_CAP_MIB as u64) * 1024 * 1024;
    println!(
        "hostile corpus: {} cases, RSS {} MiB (base {} MiB, bound {} MiB), calm {calm_cores:.2} cores, neighbour {calm_rate:.1}/s",
        cases.len(),
        rss >> 20,
        base_rss >> 20,
        bound >> 20
    );
    for line in &report {
        println!("  {line}");
    }
    assert!(rss <= bound, "RSS {} MiB above the bound {} MiB", rss >> 20, bound >> 20);
}

/// Order reports are never dropped, so they are bounded another way: an
/// instance with more than `queue_capacity` of them pending (it submits
/// orders, within the rate cap, faster than it handles their reports) is
/// failed instead of growing its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_order_reports_are_bounded() {
    let d = TestDaemon::start_with(|config| {
        config.runtime.queue_capacity = 16;
        config.providers[0].trades_per_sec = Some(TRADES_PER_SEC);
    })
    .await;
    let source = r#"'use strict';
module.exports = {
  metadata: { name: 'slow-reader', displayName: 'slow-reader', events: ['Trade', 'ExecReport'], config: [] },
  create(env) {
    return {
      onTrade() {
        for (let i = 0; i < 20; i++) env.runtime.submitMarketOrder('sim', 'buy', 0.001);
        env.helpers.sleep(1000);
      },
    };
  },
};
"#;
    d.upload(source, "v1").await;
    let request = json!({
        "id": "slow-reader",
        "strategy": {"identifier": "slow-reader:v1", "config": {"dry_run": false}},
        "scope": {"sim": {"symbols": ["BTC-USDT"]}},
        "autoStart": true,
    });
    let (status, view) = d.post("/strategy/instances", request).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    let started = Instant::now();
    let view = loop {
        let view = state_of(&d, "slow-reader").await;
        if view["state"] == "failed" {
            break view;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not failed: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last_error = view["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("more than 16 order reports pending"), "{last_error}");
}
