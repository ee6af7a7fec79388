//! End-to-end tests of the registry API (SPEC §1, §3) against a real daemon.

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{TestDaemon, module};

fn hex(hash: &str) -> &str {
    hash.strip_prefix("sha256:").expect("sha256: prefix")
}

#[tokio::test]
async fn upload_list_resolve_source_tag_move_and_delete() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("alpha", 1), "v1.0.0").await;
    let v2 = d.upload(&module("alpha", 2), "v2.0.0").await;
    assert_ne!(v1, v2);

    // List and paging.
    d.upload(&module("beta", 1), "v1").await;
    let (status, page) = d.get("/strategies/modules?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 2);
    assert_eq!(page["modules"].as_array().unwrap().len(), 1);
    assert_eq!(page["modules"][0]["name"], "alpha");
    assert_eq!(page["modules"][0]["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(page["modules"][0]["metadata"]["config"][1]["name"], "dry_run", "dry_run is injected");
    let (_, page) = d.get("/strategies/modules?limit=1&offset=1").await;
    assert_eq!(page["modules"][0]["name"], "beta");
    let (_, page) = d.get("/strategies/modules?strategy=alpha").await;
    assert_eq!(page["total"], 1);
    let (_, page) = d.get(&format!("/strategies/modules?hash={}", &hex(&v1)[..10])).await;
    assert_eq!(page["modules"][0]["revisions"].as_array().unwrap().len(), 1);
    assert_eq!(page["modules"][0]["revisions"][0]["hash"], v1.as_str());
    let (_, page) = d.get("/strategies/modules?strategy=nobody").await;
    assert_eq!(page["total"], 0);

    // Every selector form.
    let forms = [
        ("alpha".to_owned(), &v2),
        ("alpha:latest".to_owned(), &v2),
        ("alpha:v1.0.0".to_owned(), &v1),
        (format!("alpha@{v1}"), &v1),
        (format!("alpha@{}", hex(&v1)), &v1),
        (format!("alpha@{}", &hex(&v1)[..8]), &v1),
        (v1.clone(), &v1),
        (hex(&v1).to_owned(), &v1),
        (format!("sha256:{}", &hex(&v2)[..12]), &v2),
        (hex(&v2)[..9].to_owned(), &v2),
        (hex(&v2).to_uppercase(), &v2),
    ];
    for (selector, expected) in &forms {
        for _ in 0..2 {
            let (status, body) = d.get(&format!("/strategies/modules/{selector}")).await;
            assert_eq!(status, StatusCode::OK, "{selector}: {body}");
            assert_eq!(body["hash"], expected.as_str(), "{selector}");
            assert_eq!(body["strategy"], "alpha");
        }
    }
    assert!(d.metric("strata_resolver_cache_hits_total").await >= forms.len() as f64);

    // Source bytes round-trip exactly.
    let (status, source) = d.get(&format!("/strategies/modules/alpha@{v1}/source")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(source.as_str().unwrap(), module("alpha", 1));

    // Tag move: latest back to v1, then a new tag.
    let (status, body) = d.put("/strategies/modules/alpha/tags/latest", json!({"hash": &hex(&v1)[..8]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previousHash"], v2.as_str());
    let (_, body) = d.get("/strategies/modules/alpha").await;
    assert_eq!(body["hash"], v1.as_str(), "a moved tag never serves a stale hash");
    let (status, _) = d.put("/strategies/modules/alpha/tags/prod", json!({"hash": v2})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = d.get("/strategies/modules/alpha:prod").await;
    assert_eq!(body["hash"], v2.as_str());
    let (status, _) = d.get("/strategies/modules/alpha:PROD").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "tags are case-sensitive");

    // Delete one revision: its tags go; latest moves to the newest remaining one.
    let (status, body) = d.delete(&format!("/strategies/modules/alpha@{v1}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], json!([v1]));
    assert_eq!(body["strategyDeleted"], false);
    let (_, body) = d.get("/strategies/modules/alpha").await;
    assert_eq!(body["hash"], v2.as_str());
    let (status, body) = d.get(&format!("/strategies/modules/{v1}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!d.strategies_dir().join("alpha").join(hex(&v1)).exists());

    // Delete the whole strategy.
    let (status, body) = d.delete("/strategies/modules/alpha").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["strategyDeleted"], true);
    let (status, _) = d.get("/strategies/alpha").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!d.strategies_dir().join("alpha").exists());
    let (_, list) = d.get("/strategies").await;
    assert_eq!(list["strategies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn identical_bytes_create_no_new_revision_and_upload_by_put_checks_the_name() {
    let d = TestDaemon::start().await;
    let first = d.upload(&module("gamma", 1), "v1").await;
    let (status, body) = d.post("/strategies/modules", json!({"source": module("gamma", 1), "tag": "again"})).await;
    assert_eq!(status, StatusCode::OK, "identical bytes create nothing: 200, not 201 ({body})");
    assert_eq!(body["created"], false);
    assert_eq!(body["hash"], first.as_str());
    let (_, body) = d.get("/strategies/modules?strategy=gamma").await;
    assert_eq!(body["modules"][0]["revisions"].as_array().unwrap().len(), 1);
    assert_eq!(body["modules"][0]["tagAliases"]["again"], first.as_str());

    let (status, body) = d.put("/strategies/modules/gamma:v2", json!({"source": module("gamma", 2)})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tag"], "v2", "the tag in the path is used when the body has none");
    let (status, body) = d.put("/strategies/modules/delta", json!({"source": module("gamma", 3), "tag": "v3"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["diagnostics"][0]["hint"], "metadata.name");

    // promoteLatest: false keeps latest where it was.
    let (status, _) = d
        .post("/strategies/modules", json!({"source": module("gamma", 4), "tag": "canary", "promoteLatest": false}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = d.get("/strategies/modules/gamma").await;
    assert_eq!(body["tag"], "v2");
}

#[tokio::test]
async fn validation_failures_answer_422_with_diagnostics() {
    let d = TestDaemon::start().await;
    let syntax = "module.exports = {\n  metadata: { name: 'x', displayName: 'X', events: ['Trade'] },\n  create(env) { return {; }\n};\n";
    let (status, body) = d.post("/strategies/modules", json!({"source": syntax, "tag": "v1"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "strategy_validation_failed");
    assert_eq!(body["diagnostics"][0]["stage"], "compile");
    assert_eq!(body["diagnostics"][0]["line"], 3);
    assert!(body["diagnostics"][0]["column"].is_number());

    let throwing = "const a = 1;\nthrow new Error('boom at load');\n";
    let (status, body) = d.post("/strategies/modules", json!({"source": throwing, "tag": "v1"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["diagnostics"][0]["stage"], "execute");
    assert!(body["diagnostics"][0]["message"].as_str().unwrap().contains("boom at load"));
    assert_eq!(body["diagnostics"][0]["line"], 2);

    let bad =
        "module.exports = { metadata: { name: 'Bad/Name', displayName: '', events: ['Trade', 'Nope'] }, create() {} };";
    let (status, body) = d.post("/strategies/modules", json!({"source": bad, "tag": "v1"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let hints: Vec<&str> = body["diagnostics"].as_array().unwrap().iter().filter_map(|d| d["hint"].as_str()).collect();
    for hint in ["metadata.name", "metadata.displayName", "metadata.events[1]"] {
        assert!(hints.contains(&hint), "missing {hint} in {hints:?}");
    }

    let forever = "while (true) {}";
    let (status, body) = d.post("/strategies/modules", json!({"source": forever, "tag": "v1"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["diagnostics"][0]["stage"], "execute");

    let (_, list) = d.get("/strategies/modules").await;
    assert_eq!(list["total"], 0, "nothing invalid was registered");
}

#[tokio::test]
async fn bad_input_gets_precise_status_codes() {
    let d = TestDaemon::start().await;
    d.upload(&module("alpha", 1), "v1").await;
    d.upload(&module("alpha", 2), "v2").await;
    let cases: &[(&str, &str, StatusCode)] = &[
        ("GET", "/strategies/modules/nobody", StatusCode::NOT_FOUND),
        ("GET", "/strategies/modules/alpha:nope", StatusCode::NOT_FOUND),
        ("GET", "/strategies/modules/alpha@sha256:00000000", StatusCode::NOT_FOUND),
        ("GET", "/strategies/modules/sha256:1234", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules/alpha:bad%2Ftag", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules/a..b", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules/..%2F..%2Fetc", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules/a@b@c", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/Alpha", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules?limit=abc", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules?bogus=1", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/registry?bogus=1", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/modules?hash=zz", StatusCode::BAD_REQUEST),
        ("GET", "/strategies/registry?format=xml", StatusCode::BAD_REQUEST),
        ("GET", "/no/such/route", StatusCode::NOT_FOUND),
        ("PATCH", "/strategies/modules", StatusCode::METHOD_NOT_ALLOWED),
        ("DELETE", "/strategies/modules/alpha/tags/latest", StatusCode::BAD_REQUEST),
        ("DELETE", "/strategies/modules/alpha/tags/nope", StatusCode::NOT_FOUND),
        ("DELETE", "/strategies/modules/alpha/tags/v1", StatusCode::CONFLICT),
    ];
    for (method, path, expected) in cases {
        let (status, body) = d.call(method.parse().unwrap(), path, None).await;
        assert_eq!(status, *expected, "{method} {path}: {body}");
        if path.contains("bogus") || path.contains("limit=abc") {
            assert!(body["error"].as_str().unwrap().starts_with("invalid query string"), "{path}: {body}");
        }
        assert_eq!(body["status"], "error", "{method} {path}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, _) = d.delete("/strategies/modules/alpha/tags/v1?allowOrphan=true").await;
    assert_eq!(status, StatusCode::OK, "allowOrphan lets the last tag go");
    let (_, body) = d.get("/strategies/modules?strategy=alpha").await;
    assert_eq!(body["modules"][0]["revisions"][0]["retired"], true, "an untagged, unused revision is retired");

    let raw = |body: &'static str| {
        d.client.post(format!("{}/strategies/modules", d.url)).header("content-type", "application/json").body(body)
    };
    let response = raw("{not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = raw(r#"{"tag":"v1"}"#).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "source is required");
    let (status, body) = d.post("/strategies/modules", json!({"source": module("zeta", 1)})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no tag anywhere: {body}");
    for tag in ["a..b", "latest"] {
        let (status, body) = d.post("/strategies/modules", json!({"source": module("zeta", 1), "tag": tag})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tag}: {body}");
    }
    let (status, _) = d.put("/strategies/modules/zeta:v1", json!({"source": module("zeta", 1), "tag": "v2"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a body tag that contradicts the path tag");
    let (status, _) = d.put("/strategies/modules/alpha/tags/v2", json!({"hash": "sha256:zz"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Oversized bodies: with a Content-Length, and streamed without one.
    let big = format!(r#"{{"source":"{}","tag":"v1"}}"#, "x".repeat(1024 * 1024 + 1));
    let response = d.client.post(format!("{}/strategies/modules", d.url)).body(big.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.into_bytes().chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util_stream(chunks);
    let response = d
        .client
        .post(format!("{}/strategies/modules", d.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_util_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn a_broken_entry_is_reported_and_never_stops_the_others() {
    let d = TestDaemon::start().await;
    let good = d.upload(&module("good", 1), "v1").await;
    let missing = d.upload(&module("missing", 1), "v1").await;
    let tampered = d.upload(&module("tampered", 1), "v1").await;
    // Break two entries on disk and add a third whose module throws.
    let d = d.restart_with(|dir| {
        let root = dir.join("strategies");
        std::fs::remove_file(root.join(format!("missing/{}/missing.js", hex(&missing)))).unwrap();
        std::fs::write(root.join(format!("tampered/{}/tampered.js", hex(&tampered))), "// changed").unwrap();
        let throwing = "throw new Error('broken on purpose');";
        let throwing_hash = strata_shared::RevisionHash::of(throwing.as_bytes());
        let dir = root.join(format!("throws/{}", throwing_hash.to_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("throws.js"), throwing).unwrap();
        let path = root.join("registry.json");
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["throws"] = json!({
            "tags": {"latest": throwing_hash.to_string()},
            "hashes": {throwing_hash.to_string(): {"tag": "v1", "path": format!("throws/{}/throws.js", throwing_hash.to_hex())}}
        });
        doc["escape"] = json!({"tags": {}, "hashes": {"sha256:00": {"tag": "v1", "path": "../../etc/passwd"}}});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    })
    .await;

    let (status, body) = d.get("/strategies/modules/good").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hash"], good.as_str());

    let (_, export) = d.get("/strategies/registry").await;
    let errors = export["errors"].as_array().unwrap();
    for strategy in ["missing", "tampered", "throws", "escape"] {
        assert!(errors.iter().any(|e| e["strategy"] == strategy), "no error for {strategy}: {errors:?}");
    }
    assert!(export["registry"]["missing"].is_object(), "a broken entry stays in registry.json");
    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded");
    assert_eq!(d.metric("strata_registry_load_errors").await, errors.len() as f64);
    let (status, _) = d.get("/strategies/modules/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Writes keep the broken entries in the file for the operator to fix.
    d.upload(&module("good", 2), "v2").await;
    let doc: Value = serde_json::from_slice(&std::fs::read(d.strategies_dir().join("registry.json")).unwrap()).unwrap();
    assert!(doc["throws"].is_object() && doc["missing"].is_object());
}

#[tokio::test]
async fn concurrent_uploads_and_tag_moves_lose_no_update() {
    let d = TestDaemon::start().await;
    let base = d.upload(&module("busy", 0), "v0").await;
    let mut tasks = Vec::new();
    for i in 1..=20u32 {
        let client = d.client.clone();
        let url = d.url.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let upload = client
                .post(format!("{url}/strategies/modules"))
                .json(&json!({"source": module("busy", i), "tag": format!("v{i}"), "promoteLatest": false}))
                .send();
            let tag_move =
                client.put(format!("{url}/strategies/modules/busy/tags/t{i}")).json(&json!({"hash": base})).send();
            let (upload, tag_move) = tokio::join!(upload, tag_move);
            (upload.unwrap().status(), tag_move.unwrap().status())
        }));
    }
    for task in tasks {
        let (upload, tag_move) = task.await.unwrap();
        assert_eq!(upload, StatusCode::CREATED);
        assert_eq!(tag_move, StatusCode::OK);
    }
    let check = |doc: &Value| {
        assert_eq!(doc["busy"]["hashes"].as_object().unwrap().len(), 21);
        let tags = doc["busy"]["tags"].as_object().unwrap();
        for i in 1..=20 {
            assert!(tags.contains_key(&format!("v{i}")) && tags.contains_key(&format!("t{i}")), "lost tags of {i}");
        }
    };
    let (_, export) = d.get("/strategies/registry").await;
    check(&export["registry"]);
    check(&serde_json::from_slice(&std::fs::read(d.strategies_dir().join("registry.json")).unwrap()).unwrap());
}

#[tokio::test]
async fn a_restart_serves_the_same_registry_without_recompiling() {
    let d = TestDaemon::start().await;
    for i in 0..5 {
        d.upload(&module("persisted", i), &format!("v{i}")).await;
    }
    d.put("/strategies/modules/persisted/tags/prod", json!({"hash": "persisted:v2"})).await;
    assert_eq!(d.metric("strata_module_compilations_total").await, 5.0);
    let (_, before) = d.get("/strategies/registry").await;

    let d = d.restart().await;
    assert_eq!(d.metric("strata_module_compilations_total").await, 0.0, "metadata comes from the cache by hash");
    assert_eq!(d.metric("strata_registry_revisions").await, 5.0);
    let (_, after) = d.get("/strategies/registry").await;
    assert_eq!(before, after);
    let (_, prod) = d.get("/strategies/modules/persisted:prod").await;
    assert_eq!(prod["tag"], "v2");

    // Losing the metadata cache only costs a recompile.
    let d = d.restart_with(|dir| std::fs::remove_dir_all(dir.join("data")).unwrap()).await;
    assert_eq!(d.metric("strata_module_compilations_total").await, 5.0);
    let (_, again) = d.get("/strategies/registry").await;
    assert_eq!(before["registry"], again["registry"]);
}

#[tokio::test]
async fn a_hand_edit_of_registry_json_is_picked_up_before_the_next_write() {
    let d = TestDaemon::start().await;
    let v1 = d.upload(&module("edited", 1), "v1").await;
    let v2 = d.upload(&module("edited", 2), "v2").await;
    let path = d.strategies_dir().join("registry.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["edited"]["tags"]["by-hand"] = json!(v1);
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    d.put("/strategies/modules/edited/tags/prod", json!({"hash": v2})).await;
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["edited"]["tags"]["by-hand"], v1.as_str(), "the hand edit survives");
    let (_, body) = d.get("/strategies/modules/edited:by-hand").await;
    assert_eq!(body["hash"], v1.as_str());
}

#[tokio::test]
async fn health_metrics_and_csv_export() {
    let d = TestDaemon::start().await;
    let (status, health) = d.get("/healthz").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    let hash = d.upload(&module("csv", 1), "v1").await;
    d.put("/strategies/modules/csv/tags/prod", json!({"hash": hash})).await;
    let response = d.client.get(format!("{}/strategies/registry?format=csv", d.url)).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "strategy,hash,tags,count,firstSeen,lastSeen,retired");
    assert_eq!(lines[1], format!("csv,{hash},v1;latest;prod,0,,,false"));

    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains(
        r#"strata_http_request_duration_seconds_count{method="GET",route="/strategies/registry",status="200"}"#
    ));
    assert!(!metrics.contains("route=\"/strategies/modules/csv"), "routes are labelled by template, never raw path");
}

#[tokio::test]
async fn an_unreadable_registry_json_is_reported_and_never_overwritten() {
    let d = TestDaemon::start().await;
    d.upload(&module("kept", 1), "v1").await;
    let broken = b"{ \"kept\": ";
    let d = d.restart_with(|dir| std::fs::write(dir.join("strategies/registry.json"), broken).unwrap()).await;

    let (status, health) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["errors"][0]["message"].as_str().unwrap().contains("registry.json"));
    assert_eq!(d.metric("strata_registry_load_errors").await, 1.0);
    let (status, _) = d.get("/strategies").await;
    assert_eq!(status, StatusCode::OK, "reads keep working");
    let (status, body) = d.post("/strategies/modules", json!({"source": module("other", 1), "tag": "v1"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(std::fs::read(d.strategies_dir().join("registry.json")).unwrap(), broken, "never overwritten");
}
