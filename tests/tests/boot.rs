//! End-to-end tests of boot (SPEC §8 "Boot"): restoring the instances stored
//! `running` never holds the daemon, whatever their code does.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_daemon::store::{AuditEntry, InstanceStore, Store, StoredState};
use strata_tests::TestDaemon;

/// A module named `name` whose `create(env)` runs `prelude` first.
fn module(name: &str, prelude: &str) -> String {
    format!(
        r#"module.exports = {{
  metadata: {{ name: "{name}", displayName: "{name}", events: ["Trade"], config: [] }},
  create(env) {{
    {prelude}
    return {{ onTrade() {{}} }};
  }},
}};
"#
    )
}

/// A small CPU budget and sleep cap, so the start deadline is
/// 3 × 100 ms + 200 ms + 1 s = 1.5 s; one worker, so restores run one by one.
fn tight(config: &mut strata_daemon::Config) {
    config.js.cpu_budget_ms = 100;
    config.runtime.sleep_cap_ms = 200;
    config.runtime.workers = Some(1);
}

/// Marks `ids` as stored `running` in the database under `dir` (the daemon
/// being stopped), as if they had been running at the last shutdown.
fn store_running(dir: &Path, ids: &[&str]) {
    let store = Store::open(&dir.join("data")).expect("open the database");
    for id in ids {
        let audit = AuditEntry {
            action: "start",
            instance_id: (*id).to_owned(),
            strategy: String::new(),
            hash: String::new(),
            detail: None,
        };
        store.set_state(id, StoredState::Running, None, &audit).expect("mark running");
    }
}

async fn view(d: &TestDaemon, id: &str) -> Value {
    let (status, view) = d.get(&format!("/strategy/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{id}: {view}");
    view
}

/// Polls until `id` has left `starting`, or panics after `within`.
async fn settled(d: &TestDaemon, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = view(d, id).await;
        if view["state"] != "starting" {
            return view;
        }
        assert!(Instant::now() < deadline, "{id} still starting: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(d: &TestDaemon) -> String {
    let (status, body) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["status"].as_str().expect("status").to_owned()
}

#[tokio::test]
async fn poisoned_instances_never_hold_the_boot_and_end_failed() {
    let temp = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_in(temp.path(), tight).await;
    d.upload(&module("calm", ""), "v1").await;
    // Uploading evaluates the module but never calls `create`: these two
    // spin, or sleep in a loop, only when an instance starts.
    d.upload(&module("spinner", "for (;;) {}"), "v1").await;
    d.upload(&module("sleeper", "for (;;) { env.helpers.sleep(200); }"), "v1").await;
    for (id, strategy) in [
        ("a-spinner", "spinner"),
        ("b-sleeper", "sleeper"),
        ("c-calm", "calm"),
        ("d-doomed", "sleeper"),
        ("e-paused", "sleeper"),
        ("f-calm", "calm"),
    ] {
        let auto_start = strategy == "calm";
        let body = json!({"id": id, "strategy": {"identifier": strategy},
                          "scope": {"sim": {"symbols": ["BTC-USDT"]}}, "autoStart": auto_start});
        let (status, answer) = d.post("/strategy/instances", body).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {answer}");
    }
    // The poisoned ones could never have started: store them running, as a
    // registry edit or an engine change between two boots would leave them.
    let d = d
        .restart_configured(|dir| store_running(dir, &["a-spinner", "b-sleeper", "d-doomed", "e-paused"]), tight)
        .await;

    // The registry is loaded (start_in waited for it): /healthz must leave
    // `loading` within 10 s whatever the instances do — in fact at once.
    let loaded = Instant::now();
    while health(&d).await == "loading" {
        assert!(loaded.elapsed() < Duration::from_secs(10), "/healthz still loading after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&d).await, "ok");

    // `ok` came while restores are still pending, and instance routes answer
    // meanwhile: one worker restores in id order and b-sleeper holds it for
    // 1.5 s, so d and e are still waiting: they show `starting`, and can be
    // deleted or stopped.
    let (status, page) = d.get("/strategy/instances").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 6);
    assert_eq!(view(&d, "d-doomed").await["state"], "starting");
    let (status, answer) = d.delete("/strategy/instances/d-doomed").await;
    assert_eq!(status, StatusCode::OK, "a waiting restore can be deleted: {answer}");
    let (status, answer) = d.post("/strategy/instances/e-paused/stop", json!({})).await;
    assert_eq!(status, StatusCode::OK, "a waiting restore can be stopped: {answer}");
    assert_eq!(answer["state"], "stopped");

    // The spinner is stopped by the CPU budget, the sleeper by the start
    // deadline; both end `failed` naming the limit, and the restore goes on.
    let spinner = settled(&d, "a-spinner", Duration::from_secs(10)).await;
    assert_eq!(spinner["state"], "failed", "{spinner}");
    let error = spinner["lastError"].as_str().unwrap();
    assert!(error.contains("create(env) exceeded the CPU budget of 100 ms"), "{error}");
    let sleeper = settled(&d, "b-sleeper", Duration::from_secs(10)).await;
    assert_eq!(sleeper["state"], "failed", "{sleeper}");
    let error = sleeper["lastError"].as_str().unwrap();
    assert!(error.contains("start did not finish within 1500 ms"), "{error}");
    for id in ["c-calm", "f-calm"] {
        let calm = settled(&d, id, Duration::from_secs(10)).await;
        assert_eq!(calm["state"], "running", "a healthy neighbour is restored: {calm}");
    }
    assert_eq!(view(&d, "e-paused").await["state"], "stopped", "a stop is not undone by the restore");
    let (status, _) = d.get("/strategy/instances/d-doomed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A failed restore is persisted: the next boot does not retry it.
    let d = d.restart_configured(|_| {}, tight).await;
    for id in ["a-spinner", "b-sleeper"] {
        let again = view(&d, id).await;
        assert_eq!(again["state"], "failed", "not retried at the next boot: {again}");
    }
    assert_eq!(view(&d, "e-paused").await["state"], "stopped");
    assert_eq!(settled(&d, "c-calm", Duration::from_secs(10)).await["state"], "running");
}
