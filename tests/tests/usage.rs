//! End-to-end tests of the revision usage index (SPEC §2.1) as the API
//! shows it: the usage endpoint, the modules' `running` block and
//! `runningOnly`, and the registry export.

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{TestDaemon, module};

fn ids(page: &Value) -> Vec<&str> {
    page["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn usage_follows_every_lifecycle_transition() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("used", 1), "v1").await;
    let v2 = d.upload(&module("used", 2), "v2").await;
    d.upload(&module("idle", 1), "v1").await;
    let pinned = format!("used@{v1}");
    d.create_instance("b", &pinned, true).await;
    d.create_instance("a", &pinned, true).await;
    d.create_instance("never", &pinned, false).await;
    d.create_instance("other", "used", true).await;

    let (status, usage) = d.get(&format!("/strategies/modules/{pinned}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["strategy"], "used");
    assert_eq!(usage["hash"], v1.as_str());
    assert_eq!(usage["usage"]["count"], 2);
    assert_eq!(usage["usage"]["retired"], false);
    assert!(usage["usage"]["firstSeen"].is_string() && usage["usage"]["lastSeen"].is_string());
    assert_eq!(ids(&usage), ["a", "b"], "running ids, ordered");
    assert_eq!(usage["instances"][0]["links"]["self"], "/strategy/instances/a");
    assert_eq!(usage["total"], 2);

    d.post("/strategy/instances/b/stop", json!({})).await;
    let (_, usage) = d.get(&format!("/strategies/modules/{pinned}/usage")).await;
    assert_eq!((usage["usage"]["count"].clone(), ids(&usage)), (json!(1), vec!["a"]));
    let (_, usage) = d.get(&format!("/strategies/modules/{pinned}/usage?includeStopped=true")).await;
    assert_eq!(ids(&usage), ["a", "b", "never"], "running first, then the others pinned to it (started or not)");
    // SPEC §3: `count` running, `stopped` the others `includeStopped` lists;
    // `instances` is the page (a list), never a number in the summary.
    let summary = &usage["usage"];
    assert_eq!(
        (summary["count"].clone(), summary["stopped"].clone(), summary["pinned"].clone()),
        (json!(1), json!(2), json!(3))
    );
    assert_eq!(usage["total"], 3, "count + stopped");
    assert!(summary.get("instances").is_none(), "no number named instances: {summary}");
    let (_, usage) = d.get(&format!("/strategies/modules/{pinned}/usage?includeStopped=true&limit=1&offset=1")).await;
    assert_eq!((ids(&usage), usage["total"].clone(), usage["limit"].clone()), (vec!["b"], json!(3), json!(1)));

    // The modules listing: a running block per revision in use, runningOnly.
    let (_, page) = d.get("/strategies/modules?strategy=used").await;
    let running = page["modules"][0]["running"].as_array().unwrap();
    assert_eq!(running.len(), 2);
    let on_v1 = running.iter().find(|r| r["hash"] == v1.as_str()).unwrap();
    assert_eq!((on_v1["count"].clone(), on_v1["instances"].clone()), (json!(1), json!(["a"])));
    let (_, page) = d.get("/strategies/modules?runningOnly=true").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["modules"][0]["name"], "used", "idle has nothing running");

    // The export agrees.
    let (_, export) = d.get("/strategies/registry").await;
    let entry = export["usage"].as_array().unwrap().iter().find(|u| u["hash"] == v2.as_str()).unwrap().clone();
    assert_eq!((entry["count"].clone(), entry["instances"].clone()), (json!(1), json!(["other"])));

    // Deleting the instances empties the index.
    for id in ["a", "b", "never", "other"] {
        d.delete(&format!("/strategy/instances/{id}")).await;
    }
    let (_, usage) = d.get(&format!("/strategies/modules/{pinned}/usage?includeStopped=true")).await;
    assert_eq!((usage["usage"]["count"].clone(), usage["total"].clone()), (json!(0), json!(0)));
    assert!(usage["usage"]["firstSeen"].is_string(), "firstSeen remembers that it ran");
    let (_, page) = d.get("/strategies/modules?runningOnly=true").await;
    assert_eq!(page["total"], 0);
}

#[tokio::test]
async fn retired_means_unused_and_untagged() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("ret", 1), "v1").await;
    d.upload(&module("ret", 2), "v2").await;
    d.delete("/strategies/modules/ret/tags/v1?allowOrphan=true").await;
    let path = format!("/strategies/modules/ret@{v1}/usage");
    assert_eq!(d.get(&path).await.1["usage"]["retired"], true);
    d.create_instance("keeps-it", &format!("ret@{v1}"), true).await;
    assert_eq!(d.get(&path).await.1["usage"]["retired"], false, "a running instance keeps it alive");
    let (_, export) = d.get("/strategies/registry").await;
    let entry = export["usage"].as_array().unwrap().iter().find(|u| u["hash"] == v1.as_str()).unwrap().clone();
    assert_eq!(entry["retired"], false);

    let (status, _) = d.get("/strategies/modules/nobody/usage").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = d.get(&format!("/strategies/modules/ret@{v1}/usage?limit=x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn timestamps_and_stopped_history_survive_a_restart() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("kept", 1), "v1").await;
    let pinned = format!("kept@{v1}");
    d.create_instance("runs", &pinned, true).await;
    d.create_instance("ran", &pinned, true).await;
    d.post("/strategy/instances/ran/stop", json!({})).await;
    let (_, before) = d.get(&format!("/strategies/modules/{pinned}/usage?includeStopped=true")).await;
    assert_eq!(ids(&before), ["runs", "ran"]);

    let d = d.restart().await;
    // Running instances restore in the background: wait for `runs`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while d.get("/strategy/instances/runs").await.1["state"] != "running" {
        assert!(std::time::Instant::now() < deadline, "runs was not restored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, after) = d.get(&format!("/strategies/modules/{pinned}/usage?includeStopped=true")).await;
    assert_eq!(after["usage"]["firstSeen"], before["usage"]["firstSeen"], "firstSeen survives");
    assert!(after["usage"]["lastSeen"].as_str() >= before["usage"]["lastSeen"].as_str());
    assert_eq!(after["usage"]["count"], 1, "the running instance was restarted");
    assert_eq!(ids(&after), ["runs", "ran"], "the stopped history survives");
}

/// The value of a labelled series in `/metrics`, if exported.
async fn series(d: &TestDaemon, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, text) = d.get("/metrics").await;
    text.as_str()?
        .lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn per_revision_metrics_follow_usage_and_leave_with_the_revision() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("metered", 1), "v1").await;
    d.upload(&module("metered", 2), "v2").await;
    let pinned = format!("metered@{v1}");
    d.create_instance("m1", &pinned, true).await;
    d.create_instance("m2", &pinned, true).await;
    let hash_label = format!("hash=\"{v1}\"");
    let labels = ["strategy=\"metered\"", hash_label.as_str()];
    assert_eq!(series(&d, "strategy_revision_instances", &labels).await, Some(2.0));
    d.post("/strategy/instances/m1/stop", json!({})).await;
    assert_eq!(series(&d, "strategy_revision_instances", &labels).await, Some(1.0));
    let start = [labels[0], labels[1], "action=\"start\""];
    assert_eq!(series(&d, "strategy_revision_instances_total", &start).await, Some(2.0));
    let stop = [labels[0], labels[1], "action=\"stop\""];
    assert_eq!(series(&d, "strategy_revision_instances_total", &stop).await, Some(1.0));

    for id in ["m1", "m2"] {
        d.delete(&format!("/strategy/instances/{id}")).await;
    }
    let (status, _) = d.delete(&format!("/strategies/modules/{pinned}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(series(&d, "strategy_revision_instances", &labels).await, None, "series removed with the revision");
    assert_eq!(series(&d, "strategy_revision_instances_total", &start).await, None);
}

#[tokio::test]
async fn drift_grace_period_and_refresh_and_js_metrics() {
    let d = TestDaemon::start_with(|c| c.usage.retire_after_secs = 3600).await;
    let v1 = d.upload(&module("drifty", 1), "v1").await;
    d.create_instance("follower", "drifty", true).await;
    d.create_instance("pinned", &format!("drifty@{v1}"), true).await;
    let v2 = d.upload(&module("drifty", 2), "v2").await;

    // `latest` moved: the follower drifts, the @hash pin never does.
    let usage_path = format!("/strategies/modules/drifty@{v1}/usage?includeStopped=true");
    let (_, usage) = d.get(&usage_path).await;
    assert_eq!((usage["usage"]["drift"].clone(), usage["usage"]["drifted"].clone()), (json!(true), json!(1)));
    let follower = usage["instances"].as_array().unwrap().iter().find(|i| i["id"] == "follower").unwrap();
    assert_eq!((follower["drift"].clone(), follower["resolvesTo"].clone()), (json!(true), json!(v2)));
    let (_, drifting) = d.get("/strategy/instances?drift=true").await;
    assert_eq!(ids(&drifting), ["follower"]);
    assert_eq!(series(&d, "strata_instances_drifting", &["strategy=\"drifty\""]).await, Some(1.0));
    let (_, steady) = d.get("/strategy/instances?drift=false&strategy=drifty").await;
    assert_eq!(ids(&steady), ["pinned"]);
    let (_, export) = d.get("/strategies/registry").await;
    let entry = export["usage"].as_array().unwrap().iter().find(|u| u["hash"] == v1.as_str()).unwrap().clone();
    assert_eq!(entry["drift"], true);

    // A refresh moves the follower; the metrics count it by reason.
    let (status, body) = d.post("/strategies/refresh", json!({"strategies": ["drifty"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = series(&d, "strata_refresh_results_total", &["reason=\"refreshed\""]).await;
    let pinned = series(&d, "strata_refresh_results_total", &["reason=\"alreadyPinned\""]).await;
    assert_eq!((refreshed, pinned), (Some(1.0), Some(1.0)));
    let (_, drifting) = d.get("/strategy/instances?drift=true").await;
    assert_eq!(drifting["total"], 0);
    assert_eq!(series(&d, "strata_instances_drifting", &["strategy=\"drifty\""]).await, None);

    // v1 loses its last runner and its tag, but the grace period keeps it
    // from retiring; a revision that never ran has nothing to wait for.
    d.post("/strategy/instances/pinned/stop", json!({})).await;
    d.delete("/strategies/modules/drifty/tags/v1?allowOrphan=true").await;
    let (_, usage) = d.get(&usage_path).await;
    assert_eq!((usage["usage"]["count"].clone(), usage["usage"]["retired"].clone()), (json!(0), json!(false)));
    let v3 = d.upload(&module("drifty", 3), "v3").await;
    d.put("/strategies/modules/drifty/tags/latest", json!({"hash": v2, "refresh": false})).await;
    d.delete("/strategies/modules/drifty/tags/v3?allowOrphan=true").await;
    let (_, never) = d.get(&format!("/strategies/modules/drifty@{v3}/usage")).await;
    assert_eq!(never["usage"]["retired"], true, "{never}");
    let retired = series(&d, "strata_revisions_retired", &["strategy=\"drifty\""]).await;
    assert_eq!(retired, Some(1.0), "v3 only: v1 is inside its grace period");

    // A handler that throws is counted daemon-wide.
    let throws = module("thrower", 1).replace("seen += 1;", "throw new Error('boom');");
    d.upload(&throws, "v1").await;
    d.create_instance("thrower", "thrower", true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while d.metric("strata_js_handler_errors_total").await == 0.0 {
        assert!(std::time::Instant::now() < deadline, "no handler error counted within 20 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
