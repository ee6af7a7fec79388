//! API consistency (SPEC §3.2): a bad name in a list filter is a 400, a
//! wrong method is a 405 with `Allow`, duplicate JSON keys and `int` config
//! values beyond JavaScript's safe integers are refused naming the key or
//! field.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use strata_tests::{TestDaemon, instance_request, module};

#[tokio::test]
async fn a_malformed_name_in_a_list_filter_is_a_400_not_an_empty_list() {
    let d = TestDaemon::start().await;
    d.upload(&module("alpha", 1), "v1").await;
    for path in [
        "/strategy/instances?strategy=Bad!",
        "/strategy/instances?strategy=..",
        "/strategies/modules?strategy=UPPER",
        "/strategies/modules?strategy=a%2Fb",
        "/strategy/instances?hash=alpha:v1",
    ] {
        let (status, body) = d.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["status"], "error", "{path}: the usual envelope");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
    }
    // A well-formed name that matches nothing is still an empty page.
    let (status, body) = d.get("/strategy/instances?strategy=nobody").await;
    assert_eq!((status, body["total"].clone()), (StatusCode::OK, json!(0)));
}

#[tokio::test]
async fn a_wrong_method_on_a_served_path_is_a_405_with_allow() {
    let d = TestDaemon::start().await;
    d.upload(&module("alpha", 1), "v1").await;
    let cases = [
        (Method::DELETE, "/strategies", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::PATCH, "/strategies/modules", "GET, POST"),
        (Method::POST, "/strategies/modules/alpha", "PUT, GET, DELETE"),
        (Method::POST, "/strategies/modules/alpha/usage", "GET"),
        (Method::GET, "/strategies/modules/alpha/tags/v1", "PUT, DELETE"),
        (Method::PUT, "/strategy/instances", "GET, POST"),
        (Method::PATCH, "/strategy/instances/x", "GET, PUT, DELETE"),
        (Method::GET, "/strategy/instances/x/start", "POST"),
        // `logs` is not an action: only the logs route's method is allowed.
        (Method::OPTIONS, "/strategy/instances/x/logs", "GET"),
        (Method::HEAD, "/strategies", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = d.client.request(method.clone(), format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let header = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
        if method != Method::HEAD {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], "error", "{method} {path}: {body}");
        }
    }
    // A path nothing serves stays a 404.
    let (status, body) = d.call(Method::DELETE, "/nowhere", None).await;
    assert_eq!((status, body["error"].clone()), (StatusCode::NOT_FOUND, json!("no such route")));
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_naming_the_key() {
    let d = TestDaemon::start().await;
    let source = serde_json::to_string(&module("alpha", 1)).unwrap();
    let post = |path: &str, body: String| d.client.post(format!("{}{path}", d.url)).body(body).send();
    let cases = [
        ("/strategies/modules", format!(r#"{{"source": {source}, "tag": "v1", "tag": "v2"}}"#), "\"tag\""),
        (
            "/strategy/instances",
            r#"{"id": "a", "strategy": {"identifier": "alpha", "config": {"dry_run": true, "dry_run": false}}, "scope": {"sim": {"symbols": ["BTC-USDT"]}}}"#.to_owned(),
            "\"strategy.config.dry_run\"",
        ),
        ("/strategies/refresh", r#"{"hashes": [], "hashes": []}"#.to_owned(), "\"hashes\""),
    ];
    for (path, body, key) in cases {
        let response = post(path, body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(&format!("duplicate key {key}")), "{path}: {body}");
    }
    let (status, _) = d.get("/strategies/modules?strategy=alpha").await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = d.get("/strategy/instances").await;
    assert_eq!(page["total"], 0, "nothing was created from an ambiguous body");
}

#[tokio::test]
async fn int_config_fields_refuse_fractions_and_unsafe_integers() {
    let d = TestDaemon::start().await;
    let source = r#"module.exports = {
  metadata: { name: "sized", displayName: "Sized", tag: "v1", events: ["Trade"],
              config: [{ name: "lots", type: "int", default: 1 }] },
  create() { return {}; },
};"#;
    let (status, body) = d.post("/strategies/modules", json!({"source": source})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let with = |id: &str, lots: Value| {
        let mut request = instance_request(id, "sized", "BTC-USDT", false);
        request["strategy"]["config"] = json!({"lots": lots});
        request
    };
    for (i, bad) in [json!(1.5), json!(9_007_199_254_740_992_i64), json!(i64::MAX), json!(u64::MAX), json!(1e20)]
        .into_iter()
        .enumerate()
    {
        let (status, body) = d.post("/strategy/instances", with(&format!("bad{i}"), bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("\"lots\" must be of type int"), "{bad}: {error}");
    }
    let (status, body) = d.post("/strategy/instances", with("ok", json!(9_007_199_254_740_991_i64))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["strategy"]["config"]["lots"], json!(9_007_199_254_740_991_i64));

    // A module whose default is out of range is refused at upload.
    let unsafe_default =
        source.replace("default: 1", "default: 2 ** 60").replace("Sized", "Big").replace("\"sized\"", "\"big\"");
    let (status, body) = d.post("/strategies/modules", json!({"source": unsafe_default})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["diagnostics"][0]["hint"], "metadata.config[0].default", "{body}");
}
