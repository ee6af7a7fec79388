//! Targeted refresh (SPEC §2.2) end to end: reason codes, idempotence, and
//! untargeted instances left alone.

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{TestDaemon, module};

async fn refresh(d: &TestDaemon, body: Value) -> Vec<Value> {
    let (status, answer) = d.post("/strategies/refresh", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "ok");
    answer["results"].as_array().unwrap().clone()
}

fn reason_of<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results.iter().find(|r| r["instances"] == json!([id])).map(|r| &r["reason"]).unwrap_or(&Value::Null)
}

async fn view(d: &TestDaemon, id: &str) -> Value {
    d.get(&format!("/strategy/instances/{id}")).await.1
}

#[tokio::test]
async fn refresh_reasons_idempotence_and_untouched_neighbours() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("s", 1), "v1").await;
    d.put("/strategies/modules/s/tags/prod", json!({"hash": v1})).await;
    d.upload(&module("o", 1), "v1").await;
    d.create_instance("by-name", "s", true).await;
    d.create_instance("by-prod", "s:prod", true).await;
    d.create_instance("by-hash", &format!("s@{v1}"), true).await;
    d.create_instance("idle", "s", false).await;
    d.create_instance("other", "o", true).await;
    let other_before = view(&d, "other").await;
    let v2 = d.upload(&module("s", 2), "v2").await;

    let results = refresh(&d, json!({"strategies": ["s"]})).await;
    assert_eq!(results.len(), 4, "{results:?}");
    let by_name = results.iter().find(|r| r["instances"] == json!(["by-name"])).unwrap();
    assert_eq!((by_name["reason"].clone(), by_name["previousHash"].clone()), (json!("refreshed"), json!(v1)));
    assert_eq!(by_name["hash"], v2.as_str());
    assert_eq!(reason_of(&results, "by-prod"), "alreadyPinned");
    assert_eq!(reason_of(&results, "by-hash"), "alreadyPinned");
    assert_eq!(reason_of(&results, "idle"), "refreshed");
    let ids: Vec<&str> = results.iter().map(|r| r["instances"][0].as_str().unwrap()).collect();
    assert_eq!(ids, ["by-hash", "by-name", "by-prod", "idle"], "sorted");

    let name = view(&d, "by-name").await;
    assert_eq!((name["strategy"]["hash"].clone(), name["state"].clone()), (json!(v2), json!("running")));
    let idle = view(&d, "idle").await;
    assert_eq!((idle["strategy"]["hash"].clone(), idle["state"].clone()), (json!(v2), json!("stopped")));
    assert_eq!(view(&d, "by-hash").await["strategy"]["hash"], v1.as_str());
    let other_after = view(&d, "other").await;
    assert_eq!(other_after["startedAt"], other_before["startedAt"], "an untargeted instance is not restarted");

    let again = refresh(&d, json!({"strategies": ["s"]})).await;
    assert!(again.iter().all(|r| r["reason"] == "alreadyPinned"), "idempotent: {again:?}");

    // A deleted tag: the follower keeps running on its pin and is retired.
    d.delete("/strategies/modules/s/tags/prod?allowOrphan=true").await;
    let results = refresh(&d, json!({"strategies": ["s:prod"]})).await;
    assert_eq!(reason_of(&results, "by-prod"), "retired");
    let prod = view(&d, "by-prod").await;
    assert_eq!((prod["state"].clone(), prod["strategy"]["hash"].clone()), (json!("running"), json!(v1)));
}

#[tokio::test]
async fn targets_that_match_nothing_get_a_result_too() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("t", 1), "v1").await;
    let v2 = d.upload(&module("t", 2), "v2").await;
    d.create_instance("on-v2", "t", true).await;

    let unknown = format!("sha256:{}", "0".repeat(64));
    let results = refresh(&d, json!({"hashes": [v1, unknown, &v2[..20]]})).await;
    assert_eq!(reason_of(&results, "on-v2"), "alreadyPinned");
    let target = |selector: &str| results.iter().find(|r| r["selector"] == selector).unwrap().clone();
    assert_eq!(target(&v1)["reason"], "retired", "a known hash with no instances");
    assert_eq!(target(&unknown)["reason"], "notFound");
    let results = refresh(&d, json!({"strategies": ["nobody"]})).await;
    assert_eq!(
        results,
        vec![json!({"selector": "nobody", "strategy": "nobody", "hash": null, "instances": [], "reason": "notFound"})]
    );

    // An empty body refreshes every instance.
    let (status, answer) = d.call(reqwest::Method::POST, "/strategies/refresh", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["results"].as_array().unwrap().len(), 1);

    let (status, _) = d.post("/strategies/refresh", json!({"hashes": ["sha256:12"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = d.post("/strategies/refresh", json!({"bogus": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_tag_move_refreshes_exactly_that_tags_followers() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("m", 1), "v1").await;
    d.put("/strategies/modules/m/tags/prod", json!({"hash": v1})).await;
    let v2 = d.upload(&module("m", 2), "v2").await;
    d.put("/strategies/modules/m/tags/latest", json!({"hash": v1})).await;
    d.create_instance("follows-prod", "m:prod", true).await;
    d.create_instance("follows-latest", "m", true).await;
    let latest_before = view(&d, "follows-latest").await;

    let (status, moved) = d.put("/strategies/modules/m/tags/prod", json!({"hash": v2, "refresh": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(moved.get("refresh").is_none());
    assert_eq!(view(&d, "follows-prod").await["strategy"]["hash"], v1.as_str(), "refresh: false re-pins nothing");
    d.put("/strategies/modules/m/tags/prod", json!({"hash": v1, "refresh": false})).await;

    let (status, moved) = d.put("/strategies/modules/m/tags/prod", json!({"hash": v2})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["refresh"].as_array().unwrap().len(), 1, "{moved}");
    assert_eq!(moved["refresh"][0]["instances"], json!(["follows-prod"]));
    assert_eq!(moved["refresh"][0]["reason"], "refreshed");
    assert_eq!(view(&d, "follows-prod").await["strategy"]["hash"], v2.as_str());
    let latest_after = view(&d, "follows-latest").await;
    assert_eq!(latest_after["strategy"]["hash"], v1.as_str());
    assert_eq!(latest_after["startedAt"], latest_before["startedAt"], "a follower of another tag is untouched");

    // A tag nobody follows: no result in the answer, and none counted.
    let (status, moved) = d.put("/strategies/modules/m/tags/canary", json!({"hash": v2})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["refresh"], json!([]));
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().expect("metrics are text");
    assert!(!metrics.contains(r#"strata_refresh_results_total{reason="retired"}"#), "{metrics}");
    let refreshed = strata_tests::metric_value(metrics, r#"strata_refresh_results_total{reason="refreshed"}"#);
    assert_eq!(refreshed, Some(1.0), "{metrics}");
}

#[tokio::test]
async fn batch_restart_and_repin_by_hash() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("b", 1), "v1").await;
    let v2 = d.upload(&module("b", 2), "v2").await;
    d.upload(&module("c", 1), "v1").await;
    let on_v1 = format!("b@{v1}");
    d.create_instance("r1", &on_v1, true).await;
    d.create_instance("r2", &on_v1, true).await;
    d.create_instance("s1", &on_v1, false).await;
    d.create_instance("elsewhere", "b", true).await;
    let before = view(&d, "r1").await;
    let elsewhere = view(&d, "elsewhere").await;

    let (status, answer) = d.post(&format!("/strategies/modules/{on_v1}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let reasons: Vec<(&str, &str)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["instanceId"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, [("r1", "refreshed"), ("r2", "refreshed"), ("s1", "alreadyPinned")]);
    assert_ne!(view(&d, "r1").await["startedAt"], before["startedAt"], "restarted");
    assert_eq!(view(&d, "s1").await["state"], "stopped", "a stopped instance stays stopped");
    assert_eq!(view(&d, "elsewhere").await["startedAt"], elsewhere["startedAt"], "other hashes untouched");

    // Roll everything on v1 forward to b:v2; the selector follows, so a refresh keeps it there.
    let (status, answer) = d.post(&format!("/strategies/modules/{on_v1}/repin"), json!({"to": "b:v2"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 3);
    assert!(
        answer["results"].as_array().unwrap().iter().all(|r| r["reason"] == "refreshed" && r["hash"] == v2.as_str())
    );
    let r1 = view(&d, "r1").await;
    assert_eq!((r1["strategy"]["hash"].clone(), r1["strategy"]["selector"].clone()), (json!(v2), json!("b:v2")));
    assert_eq!(r1["state"], "running");
    assert_eq!(view(&d, "s1").await["state"], "stopped");
    let again = refresh(&d, json!({"strategies": ["b"]})).await;
    assert!(again.iter().all(|r| r["reason"] == "alreadyPinned"), "a refresh does not undo the repin: {again:?}");

    let (status, _) = d.post(&format!("/strategies/modules/b@{v2}/repin"), json!({"to": "c"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "another strategy");
    let (status, _) = d.post("/strategies/modules/nobody/restart", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_restart_that_fails_is_reported_failed_on_its_new_pin() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("brittle", 1), "v1").await;
    d.create_instance("b1", "brittle", true).await;
    d.create_instance("b0", "brittle", false).await;
    // v2's create() throws: the re-pin succeeds, the restart cannot.
    let broken = module("brittle", 2).replace("let seen = 0;", "throw new Error('no start');");
    let v2 = d.upload(&broken, "v2").await;
    let results = refresh(&d, json!({"strategies": ["brittle"]})).await;
    let failed = reason_of(&results, "b1");
    assert_eq!(failed, "failed", "{results:?}");
    let b1 = results.iter().find(|r| r["instances"][0] == "b1").unwrap();
    assert_eq!((b1["hash"].clone(), b1["previousHash"].clone()), (json!(v2), json!(v1)), "{b1}");
    assert!(b1["error"].as_str().unwrap().contains("no start"), "{b1}");
    assert_eq!(reason_of(&results, "b0"), "refreshed", "a stopped instance is only re-pinned");
    let view = view(&d, "b1").await;
    assert_eq!((view["state"].clone(), view["strategy"]["hash"].clone()), (json!("failed"), json!(v2)));
    let (_, metrics) = d.get("/metrics").await;
    let failed =
        metrics.as_str().unwrap().lines().find(|l| l.starts_with("strata_refresh_results_total{reason=\"failed\"}"));
    assert_eq!(failed.and_then(|l| l.rsplit(' ').next()), Some("1"));
}

#[tokio::test]
async fn rolling_back_to_an_older_schema_drops_only_filled_in_defaults() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("schema", 1), "v1").await;
    d.create_instance("follows", "schema", true).await;
    let with_extra = module("schema", 2).replace(
        r#"config: [{ name: "lookback", type: "int", default: 20, required: false }]"#,
        r#"config: [{ name: "lookback", type: "int", default: 20, required: false }, { name: "extra", type: "int", default: 5, required: false }]"#,
    );
    let v2 = d.upload(&with_extra, "v2").await;
    let results = refresh(&d, json!({"strategies": ["schema"]})).await;
    assert_eq!(reason_of(&results, "follows"), "refreshed");
    assert_eq!(view(&d, "follows").await["strategy"]["config"]["extra"], 5, "v2's default filled in");
    d.post(
        "/strategy/instances",
        json!({"id": "chosen", "strategy": {"identifier": format!("schema@{v2}"), "config": {"extra": 7}},
        "scope": {"sim": {"symbols": ["BTC-USDT"]}}}),
    )
    .await;

    let (status, answer) =
        d.post(&format!("/strategies/modules/schema@{v2}/repin"), json!({"to": format!("schema@{v1}")})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let result =
        |id: &str| answer["results"].as_array().unwrap().iter().find(|r| r["instanceId"] == id).unwrap().clone();
    assert_eq!(result("follows")["reason"], "refreshed", "{answer}");
    let follows = view(&d, "follows").await;
    assert_eq!((follows["strategy"]["hash"].clone(), follows["state"].clone()), (json!(v1), json!("running")));
    assert!(follows["strategy"]["config"].get("extra").is_none(), "{follows}");
    assert_eq!(result("chosen")["reason"], "failed", "a value someone set is not dropped: {answer}");
    assert!(result("chosen")["error"].as_str().unwrap().contains("extra"), "{answer}");
    assert_eq!(view(&d, "chosen").await["strategy"]["hash"], v2.as_str(), "left where it was");
}
