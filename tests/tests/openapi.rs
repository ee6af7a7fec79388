//! `GET /openapi.json` is checked against the live routes: every documented
//! route answers on a real daemon (never "no such route", never 405), and
//! the router itself refuses to register a route missing from the document
//! (a debug assertion in `api::route`, so every test daemon enforces it).
//! Its schemas are checked against real traffic: every `$ref` resolves, and
//! every answer generated for `docs/api.md` (and every request body that
//! succeeded) validates against its route's schema with `jsonschema`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use strata_daemon::api::openapi::{ROUTES, RouteDoc};
use strata_tests::api_examples::{Exchange, capture, route_of};
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

/// Every `$ref` string anywhere in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

/// A validator for `schema`, a schema of `document` whose `$ref`s point
/// into its `components`.
fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = document["components"].clone();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// The errors of `instance` against `schema`, one line each.
fn violations(document: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    validator(document, schema).iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// The documented schema of an answer with `status` and `media` on `route`:
/// the success response's, or the error envelope for any other status.
fn answer_schema<'a>(document: &'a Value, route: &RouteDoc, status: u16, media: &str) -> &'a Value {
    let op = &document["paths"][route.template][route.method.to_ascii_lowercase()];
    let response = if route.statuses().any(|s| s == status) {
        &op["responses"][status.to_string()]
    } else {
        &op["responses"]["default"]
    };
    let schema = &response["content"][media]["schema"];
    assert!(schema.is_object(), "{} {} documents no {media} answer for {status}", route.method, route.template);
    schema
}

#[tokio::test]
async fn every_ref_resolves_and_every_generated_example_matches_its_schema() {
    let examples = capture().await;
    let exchanges: Vec<&Exchange> = examples.iter().flat_map(|e| &e.exchanges).collect();
    let document = &exchanges.iter().find(|x| x.path == "/openapi.json").expect("the served document").answer;

    let mut targets = Vec::new();
    refs(document, &mut targets);
    assert!(targets.len() > 50, "{} refs", targets.len());
    for target in targets {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{target} is not local"));
        assert!(document.pointer(pointer).is_some_and(Value::is_object), "{target} does not resolve");
    }
    assert!(!document.to_string().contains("x-rust-type"));

    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for exchange in &exchanges {
        let route = route_of(&exchange.method, &exchange.path)
            .unwrap_or_else(|| panic!("{} {} matches no documented route", exchange.method, exchange.path));
        seen.insert((route.method, route.template));
        let status = exchange.status.as_u16();
        let schema = answer_schema(document, route, status, &exchange.media);
        for problem in violations(document, schema, &exchange.answer) {
            failures.push(format!("{} {} → {status}: {problem}", exchange.method, exchange.path));
        }
        if let (Some(body), true) = (&exchange.request, exchange.status.is_success()) {
            let op = &document["paths"][route.template][route.method.to_ascii_lowercase()];
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{} {} documents no request body", route.method, route.template);
            for problem in violations(document, schema, body) {
                failures.push(format!("{} {} request: {problem}", exchange.method, exchange.path));
            }
        }
    }
    assert!(failures.is_empty(), "answers that break their schema:\n{}", failures.join("\n"));
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|r| !seen.contains(&(r.method, r.template)))
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    assert!(missing.is_empty(), "routes with no example in docs/api.md: {missing:?}");
}

#[tokio::test]
async fn the_schema_check_rejects_wrong_bodies() {
    let d = TestDaemon::start().await;
    d.upload(&module("doc", 1), "v1").await;
    let view = d.create_instance("x", "doc", false).await;
    let (_, document) = d.get("/openapi.json").await;
    let route = |method: Method, path: &str| route_of(&method, path).expect("documented");
    let instance = answer_schema(&document, route(Method::GET, "/strategy/instances/x"), 200, "application/json");
    assert!(violations(&document, instance, &view).is_empty(), "the real answer is valid");

    let mut wrong_state = view.clone();
    wrong_state["state"] = json!("paused");
    let mut no_created_at = view.clone();
    no_created_at.as_object_mut().unwrap().remove("createdAt");
    let mut bad_time = view.clone();
    bad_time["createdAt"] = json!("yesterday");
    let mut short_hash = view.clone();
    short_hash["strategy"]["hash"] = json!("sha256:abc");
    for wrong in [wrong_state, no_created_at, bad_time, short_hash, json!({"status": "error", "error": "x"})] {
        assert!(!violations(&document, instance, &wrong).is_empty(), "accepted: {wrong}");
    }

    let error = answer_schema(&document, route(Method::GET, "/strategy/instances/x"), 404, "application/json");
    assert!(violations(&document, error, &json!({"status": "error", "error": "unknown instance"})).is_empty());
    assert!(!violations(&document, error, &json!({"status": "ok"})).is_empty(), "an envelope needs `error`");

    let op = &document["paths"]["/strategies/modules"]["post"];
    let upload = &op["requestBody"]["content"]["application/json"]["schema"];
    assert!(violations(&document, upload, &json!({"source": "x", "tag": "v1"})).is_empty());
    assert!(!violations(&document, upload, &json!({"source": "x", "name": "hello"})).is_empty(), "unknown field");
    assert!(!violations(&document, upload, &json!({"tag": "v1"})).is_empty(), "source is required");
}

/// The schema of parameter `name` (path or query) of `method template`.
fn parameter_schema<'a>(document: &'a Value, method: &str, template: &str, name: &str) -> &'a Value {
    let parameters = document["paths"][template][method]["parameters"].as_array().expect("parameters");
    let parameter = parameters.iter().find(|p| p["name"] == name);
    &parameter.unwrap_or_else(|| panic!("{method} {template} does not document {name}"))["schema"]
}

#[tokio::test]
async fn query_parameters_and_path_patterns_are_documented_and_match_what_the_daemon_accepts() {
    let d = TestDaemon::start().await;
    let hash = d.upload(&module("doc", 1), "v1").await;
    let (_, document) = d.get("/openapi.json").await;

    // Every query parameter of every route, with its type.
    let queries: &[(&str, &str, &[&str])] = &[
        ("get", "/strategies/modules", &["strategy", "hash", "runningOnly", "limit", "offset"]),
        ("get", "/strategies/modules/{selector}/usage", &["limit", "offset", "includeStopped"]),
        ("delete", "/strategies/modules/{name}/tags/{tag}", &["allowOrphan"]),
        ("get", "/strategies/registry", &["format"]),
        ("get", "/strategy/instances", &["strategy", "hash", "state", "drift", "limit", "offset"]),
        ("get", "/ws", &["since"]),
    ];
    for (method, template, names) in queries {
        let parameters = document["paths"][template][method]["parameters"].as_array().unwrap();
        let documented: Vec<&str> =
            parameters.iter().filter(|p| p["in"] == "query").map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(documented, *names, "{method} {template}");
        for parameter in parameters.iter().filter(|p| p["in"] == "query") {
            assert_eq!(parameter["required"], false, "{method} {template} {}", parameter["name"]);
            let schema = &parameter["schema"];
            assert!(schema.get("type").is_some_and(|t| !t.is_array()) || schema.get("enum").is_some(), "{schema}");
        }
    }
    assert_eq!(parameter_schema(&document, "get", "/strategy/instances", "limit")["type"], "integer");
    assert_eq!(parameter_schema(&document, "get", "/strategies/modules", "runningOnly")["type"], "boolean");
    let states = parameter_schema(&document, "get", "/strategy/instances", "state");
    assert_eq!(states["enum"], json!(["stopped", "starting", "running", "stopping", "failed"]), "{states}");
    assert_eq!(parameter_schema(&document, "get", "/strategies/registry", "format")["enum"], json!(["json", "csv"]));
    // Routes without a query string document none.
    let none = document["paths"]["/strategies"]["get"]["parameters"].as_array().unwrap();
    assert!(none.is_empty(), "{none:?}");

    // Path parameters: the patterns accept what the daemon serves and refuse
    // what it answers 400 for.
    let hex = hash.trim_start_matches("sha256:");
    // (method, template, parameter, values it accepts, values it refuses)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "get",
            "/strategies/modules/{selector}",
            "selector",
            &["doc", "doc:v1", &format!("doc@{hash}"), &format!("doc@{}", &hex[..8]), &hash, &hex[..12]],
            &["", "Doc", "doc:", "sha256:", "doc@xyz", "doc@1234567", "doc:v1@abc", "a b", "doc/x"],
        ),
        ("get", "/strategies/{name}", "name", &["doc", "mean-reversion", "a.b_c"], &["", "Doc", "-x", "a/b", "a:b"]),
        ("put", "/strategies/modules/{name}/tags/{tag}", "tag", &["v1", "Prod", "1.2.0"], &["", "-x", "a:b", "a@b"]),
        ("get", "/strategy/instances/{id}", "id", &["x", "alpha-1", "A.b_c"], &["", "a/b", "a b", &"x".repeat(129)]),
    ];
    for (method, template, name, good, bad) in cases {
        let schema = parameter_schema(&document, method, template, name);
        assert!(schema["pattern"].is_string(), "{template} {name}: {schema}");
        for value in *good {
            assert!(violations(&document, schema, &json!(value)).is_empty(), "{name} {value:?} should match {schema}");
        }
        for value in *bad {
            assert!(!violations(&document, schema, &json!(value)).is_empty(), "{name} {value:?} should not match");
        }
    }
    let (status, _) = d.get(&format!("/strategies/modules/doc@{}", &hex[..8])).await;
    assert_eq!(status, StatusCode::OK);
}
