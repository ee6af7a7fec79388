//! The optional bearer token (SPEC §7): reads stay open, every mutating
//! request needs the token.

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{TestDaemon, module};

#[tokio::test]
async fn mutating_requests_need_the_token_and_reads_do_not() {
    let d = TestDaemon::start_with(|config| config.token = Some("s3cret-token".into())).await;
    let upload = json!({"source": module("guarded", 1), "tag": "v1"});
    let url = format!("{}/strategies/modules", d.url);

    let response = d.client.post(&url).json(&upload).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    for wrong in ["Bearer s3cret-toke", "Bearer s3cret-token-longer", "s3cret-token", "Basic s3cret-token"] {
        let response = d.client.post(&url).header("authorization", wrong).json(&upload).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let response = d.client.post(&url).bearer_auth("s3cret-token").json(&upload).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // RFC 7235: the scheme is case-insensitive (same bytes again: 200).
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} s3cret-token");
        let response = d.client.post(&url).header("authorization", &header).json(&upload).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{header}");
    }
    let ws = d.client.get(format!("{}/ws", d.url)).header("authorization", "bearer s3cret-token").send().await.unwrap();
    assert_eq!(ws.status(), StatusCode::UPGRADE_REQUIRED, "the token is accepted on /ws too (then: not an upgrade)");

    for path in ["/healthz", "/strategies", "/strategies/modules/guarded", "/strategy/instances", "/metrics"] {
        let (status, _) = d.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path} is a read");
    }
    for (method, path) in [
        ("DELETE", "/strategies/modules/guarded"),
        ("PUT", "/strategies/modules/guarded/tags/prod"),
        ("POST", "/strategy/instances"),
        ("POST", "/strategy/instances/x/start"),
    ] {
        let (status, _) = d.call(method.parse().unwrap(), path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

#[tokio::test]
async fn without_a_token_everything_is_open_as_before() {
    let d = TestDaemon::start().await;
    let (status, _) = d.post("/strategies/modules", json!({"source": module("open", 1), "tag": "v1"})).await;
    assert_eq!(status, StatusCode::CREATED);
}
