//! End-to-end tests of bulk create (`POST /strategy/instances` with
//! `{"instances": […]}`): per-item results, one transaction, and the
//! single-object body unchanged.

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{TestDaemon, instance_request, module};

fn item(id: &str, identifier: &str, auto_start: bool) -> Value {
    instance_request(id, identifier, "BTC-USDT", auto_start)
}

#[tokio::test]
async fn a_bulk_create_answers_per_item_and_survives_a_restart() {
    let d = TestDaemon::start().await;
    d.upload(&module("fleet", 1), "v1").await;
    let broken = module("brittle", 1).replace("let seen = 0;", "throw new Error('no start');");
    d.upload(&broken, "v1").await;
    d.create_instance("taken", "fleet", false).await;

    let mut items: Vec<Value> = (0..50).map(|i| item(&format!("run-{i:02}"), "fleet", true)).collect();
    items.push(item("idle", "fleet", false));
    items.push(item("taken", "fleet", false));
    items.push(item("idle", "fleet", false));
    items.push(item("ghost", "nobody", false));
    items.push(item("bad id!", "fleet", false));
    let mut wrong_config = item("wrong", "fleet", false);
    wrong_config["strategy"]["config"] = json!({"lookback": "many"});
    items.push(wrong_config);
    items.push(item("brittle-1", "brittle", true));
    let (status, body) = d.post("/strategy/instances", json!({"instances": items})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 57, "one result per item, in order");
    let status_of = |index: usize| (results[index]["id"].as_str().unwrap(), results[index]["status"].as_u64().unwrap());
    for (i, result) in results.iter().take(50).enumerate() {
        assert_eq!(status_of(i), (format!("run-{i:02}").as_str(), 201));
        assert_eq!(result["instance"]["state"], "running", "{result}");
    }
    assert_eq!(status_of(50), ("idle", 201));
    assert_eq!(results[50]["instance"]["state"], "stopped");
    assert_eq!(status_of(51), ("taken", 409));
    assert_eq!(status_of(52), ("idle", 409), "a duplicate within the request: {}", results[52]);
    assert_eq!(status_of(53), ("ghost", 404));
    assert_eq!(status_of(54), ("bad id!", 400));
    assert_eq!(status_of(55), ("wrong", 400));
    assert!(results[55]["error"].as_str().unwrap().contains("invalid config"), "{}", results[55]);
    // A start that fails leaves the instance there, failed, as a single create would (422).
    assert_eq!(status_of(56), ("brittle-1", 422));
    assert_eq!(results[56]["instance"]["state"], "failed");
    assert!(results[56]["error"].as_str().unwrap().contains("no start"));
    assert_eq!(body["created"], 52);

    let (_, page) = d.get("/strategy/instances?limit=1").await;
    assert_eq!(page["total"], 53, "taken + 50 running + idle + brittle-1");

    // Everything acknowledged was written: after a restart the running ones
    // come back running, the others as they were.
    let d = d.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, page) = d.get("/strategy/instances?state=running&limit=1").await;
        if page["total"] == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "running instances not restored: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, idle) = d.get("/strategy/instances/idle").await;
    assert_eq!(idle["state"], "stopped");
    let (_, brittle) = d.get("/strategy/instances/brittle-1").await;
    assert_eq!(brittle["state"], "failed");
}

#[tokio::test]
async fn bulk_limits_and_the_single_body() {
    let d = TestDaemon::start().await;
    d.upload(&module("fleet", 1), "v1").await;
    let items: Vec<Value> = (0..1001).map(|i| item(&format!("i{i}"), "fleet", false)).collect();
    let (status, body) = d.post("/strategy/instances", json!({"instances": items})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("at most 1000"), "{body}");
    let (_, page) = d.get("/strategy/instances").await;
    assert_eq!(page["total"], 0, "a refused request creates nothing");

    let (status, body) = d.post("/strategy/instances", json!({"instances": [{"id": "x"}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a malformed item refuses the request: {body}");

    let (status, body) = d.post("/strategy/instances", json!({"instances": []})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"created": 0, "results": []}));

    let view = d.create_instance("single", "fleet", true).await;
    assert_eq!(view["id"], "single", "the single-object body still answers the instance itself");
    assert_eq!(view["state"], "running");
}
