//! `GET /openapi.json` is checked against the live routes: every documented
//! route answers on a real daemon (never "no such route", never 405), and
//! the router itself refuses to register a route missing from the document
//! (a debug assertion in `api::route`, so every test daemon enforces it).

use reqwest::{Method, StatusCode};
use serde_json::json;
use strata_tests::{TestDaemon, module};

#[tokio::test]
async fn every_documented_route_is_served() {
    let d = TestDaemon::start().await;
    d.upload(&module("doc", 1), "v1").await;
    d.create_instance("x", "doc", false).await;

    let (status, document) = d.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let mut calls: Vec<(Method, String)> = Vec::new();
    for (template, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let path = template
                .replace("{name}", "doc")
                .replace("{selector}", "doc")
                .replace("{tag}", "v1")
                .replace("{id}", "x")
                .replace("{action}", "start");
            calls.push((method.to_uppercase().parse().unwrap(), path));
        }
    }
    assert!(calls.len() >= 27, "{} routes documented", calls.len());
    // Deletions last, so every other route still finds what it needs.
    calls.sort_by_key(|(method, _)| *method == Method::DELETE);
    for (method, path) in calls {
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let (status, answer) = d.call(method.clone(), &path, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {answer}");
        assert!(
            !(status == StatusCode::NOT_FOUND && answer["error"] == "no such route"),
            "{method} {path} is documented but not served: {answer}"
        );
    }
}
