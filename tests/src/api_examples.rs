//! The examples of `docs/api.md`, taken from a real run so they cannot drift.
//!
//! [`capture`] drives real daemons (the `--demo` seed, so hashes are the
//! bundled strategies' and the same on every run) through a fixed script of
//! requests and keeps every exchange. [`render`] turns one example into the
//! Markdown that sits between `<!-- example: NAME -->` and
//! `<!-- /example -->` in the doc: each request as a `curl` command against
//! [`BASE_URL`], the status the daemon answered, and the body, JSON
//! pretty-printed, with what changes from run to run replaced by fixed
//! placeholders ([`redact`]). [`splice`] puts the rendered blocks into the
//! doc; the `api_docs` test fails with a diff when the doc is stale and
//! rewrites it with `STRATA_UPDATE_DOCS=1`. The raw answers stay in each
//! [`Exchange`] so the OpenAPI test can validate them against their route's
//! schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use strata_daemon::api::openapi::{ROUTES, RouteDoc};
use strata_daemon::config::ProviderConfig;
use strata_daemon::demo::DEMO_STRATEGIES;
use strata_shared::RevisionHash;
use tokio_tungstenite::tungstenite::Message;

use crate::{TestDaemon, instance_request};

/// The base URL every rendered command uses (the daemon's default listen
/// address), whatever port the run had.
const BASE_URL: &str = "http://127.0.0.1:8880";

/// What every RFC 3339 timestamp in a rendered body becomes.
const TIMESTAMP: &str = "2026-01-01T00:00:00Z";

/// The bearer token of the authentication examples.
const TOKEN: &str = "s3cret";

/// The `<!-- example: NAME -->` opening marker of a generated block.
const OPEN: &str = "<!-- example: ";

/// The closing marker of a generated block.
const CLOSE: &str = "<!-- /example -->";

/// One request and the daemon's answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/strategies/modules?strategy=noop`.
    pub path: String,
    /// The JSON body sent, if any.
    pub request: Option<Value>,
    /// The status answered.
    pub status: StatusCode,
    /// The answer's media type without parameters (`application/json`, `text/csv`…).
    pub media: String,
    /// The answer: JSON, or a string for any other media type.
    pub answer: Value,
    /// The command shown in the doc (without the base URL filled in).
    command: String,
    /// What of the answer the doc shows.
    view: View,
}

/// One named example: the exchanges rendered into one block of the doc.
#[derive(Debug, Clone)]
pub struct Example {
    /// The marker name in `docs/api.md`.
    pub name: &'static str,
    /// Its exchanges, in order.
    pub exchanges: Vec<Exchange>,
}

/// What of an answer is shown, and the shell filter that shows it.
#[derive(Debug, Clone)]
enum View {
    /// The whole body.
    Full,
    /// Some fields: `jq '{a, b: .x.b, c: [.l[].c]}'`.
    Pick(Vec<&'static str>),
    /// Some fields of every item of a list: `jq '[.list[] | {a, b}]'`.
    Each(&'static str, Vec<&'static str>),
    /// The lines starting with a prefix: `grep '^prefix'`.
    Grep(&'static str),
    /// The first lines: `head -n N`.
    Head(usize),
}

/// A request to make, with how the doc shows it.
struct Request {
    method: Method,
    path: String,
    body: Option<Value>,
    token: bool,
    view: View,
    shown_as: Option<String>,
}

fn request(method: Method, path: impl Into<String>, body: Option<Value>) -> Request {
    Request { method, path: path.into(), body, token: false, view: View::Full, shown_as: None }
}

fn get(path: impl Into<String>) -> Request {
    request(Method::GET, path, None)
}

fn post(path: impl Into<String>, body: Value) -> Request {
    request(Method::POST, path, Some(body))
}

fn post_empty(path: impl Into<String>) -> Request {
    request(Method::POST, path, None)
}

fn put(path: impl Into<String>, body: Value) -> Request {
    request(Method::PUT, path, Some(body))
}

fn delete(path: impl Into<String>) -> Request {
    request(Method::DELETE, path, None)
}

impl Request {
    fn pick(mut self, fields: &[&'static str]) -> Self {
        self.view = View::Pick(fields.to_vec());
        self
    }

    fn each(mut self, list: &'static str, fields: &[&'static str]) -> Self {
        self.view = View::Each(list, fields.to_vec());
        self
    }

    fn grep(mut self, prefix: &'static str) -> Self {
        self.view = View::Grep(prefix);
        self
    }

    fn head(mut self, lines: usize) -> Self {
        self.view = View::Head(lines);
        self
    }

    fn with_token(mut self) -> Self {
        self.token = true;
        self
    }

    /// Shows `command` (with `{base}` for the base URL) instead of the
    /// plain `curl` line, for a body too large or too long to spell out.
    fn shown_as(mut self, command: impl Into<String>) -> Self {
        self.shown_as = Some(command.into());
        self
    }

    fn command(&self) -> String {
        if let Some(command) = &self.shown_as {
            return command.clone();
        }
        let mut command = String::from("curl -s");
        if self.method != Method::GET {
            command.push_str(&format!(" -X {}", self.method));
        }
        if self.token {
            command.push_str(&format!(" -H 'Authorization: Bearer {TOKEN}'"));
        }
        let url = format!("{{base}}{}", self.path);
        if url.contains(['?', '&']) {
            command.push_str(&format!(" '{url}'"));
        } else {
            command.push_str(&format!(" {url}"));
        }
        if let Some(body) = &self.body {
            command.push_str(&format!(" -d {}", shell_quote(&body.to_string())));
        }
        command
    }
}

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The examples captured so far, and the one being recorded.
#[derive(Default)]
struct Session {
    examples: Vec<Example>,
}

impl Session {
    /// Starts recording the example `name`.
    fn example(&mut self, name: &'static str) {
        assert!(self.examples.iter().all(|e| e.name != name), "example {name} twice");
        self.examples.push(Example { name, exchanges: Vec::new() });
    }

    /// Sends `request` to `d`, records it in the current example and
    /// returns the status and answer.
    async fn run(&mut self, d: &TestDaemon, request: Request) -> (StatusCode, Value) {
        let exchange = send(d, &request).await;
        let answer = (exchange.status, exchange.answer.clone());
        self.examples.last_mut().expect("an example is being recorded").exchanges.push(exchange);
        answer
    }

    /// Sends a set-up request the doc does not show; it must succeed.
    async fn quiet(&mut self, d: &TestDaemon, request: Request) {
        let exchange = send(d, &request).await;
        assert!(exchange.status.is_success(), "{} {}: {}", request.method, request.path, exchange.answer);
    }

    /// [`Session::run`] for a request that must answer `expected`.
    async fn expect(&mut self, d: &TestDaemon, expected: u16, request: Request) -> Value {
        let what = format!("{} {}", request.method, request.path);
        let (status, answer) = self.run(d, request).await;
        assert_eq!(status.as_u16(), expected, "{what}: {answer}");
        answer
    }
}

async fn send(d: &TestDaemon, request: &Request) -> Exchange {
    let body = request.body.as_ref().map(Value::to_string);
    let build = || {
        let mut builder = d.client.request(request.method.clone(), format!("{}{}", d.url, request.path));
        if request.token {
            builder = builder.bearer_auth(TOKEN);
        }
        if let Some(body) = &body {
            builder = builder.body(body.clone());
        }
        builder
    };
    // The daemon answers 413 from the Content-Length and closes the
    // connection without reading the body, so the client may still be
    // sending when the connection goes and never see the answer. Only an
    // oversized body is retried: nothing else can be applied twice.
    let oversized = body.as_ref().is_some_and(|b| b.len() > strata_shared::api::MAX_BODY_BYTES);
    let mut response = build().send().await;
    for _ in 0..3 {
        match &response {
            Err(_) if oversized => response = build().send().await,
            _ => break,
        }
    }
    let response = response.expect("request sent");
    let status = response.status();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
        .unwrap_or_default();
    let text = response.text().await.expect("body read");
    d.assert_no_path_leak(&request.path, &text);
    let answer = if media == "application/json" {
        serde_json::from_str(&text).expect("JSON answer")
    } else {
        Value::String(text)
    };
    Exchange {
        method: request.method.clone(),
        path: request.path.clone(),
        request: request.body.clone(),
        status,
        media,
        answer,
        command: request.command(),
        view: request.view.clone(),
    }
}

/// Sim venue that generates no market event: counters, logs and usage
/// then depend only on the requests, not on how long the run took.
fn quiet_sim() -> ProviderConfig {
    ProviderConfig {
        trades_per_sec: Some(0.0),
        tickers_per_sec: Some(0.0),
        books_per_sec: Some(0.0),
        ..ProviderConfig::default_sim()
    }
}

/// The hash of a bundled demo strategy file.
fn demo_hash(file: &str) -> RevisionHash {
    let (_, source, _) = DEMO_STRATEGIES.iter().find(|(f, _, _)| *f == file).expect("bundled demo strategy");
    RevisionHash::of(source.as_bytes())
}

/// The first `n` hex digits of a hash.
fn short(hash: RevisionHash, n: usize) -> String {
    hash.to_hex()[..n].to_owned()
}

/// `hello.js`, as shown in the doc.
const HELLO: &str = r#"module.exports = {
  metadata: { name: "hello", displayName: "Hello", tag: "v1", events: ["Trade"] },
  create(env) { return { onTrade(ctx, evt, payload, price) { env.helpers.log(`trade at ${price}`); } }; },
};
"#;

const BOOM: &str = r#"module.exports = {
  metadata: { name: "boom", displayName: "Boom", tag: "v1", events: ["Trade"] },
  create(env) { throw new Error("no config service"); },
};
"#;

const CHATTY: &str = r#"module.exports = {
  metadata: { name: "chatty", displayName: "Chatty", tag: "v1", events: ["Trade"] },
  create(env) {
    env.helpers.log("chatty: dry run is", env.config.dry_run);
    console.warn("chatty: no trade seen yet");
    return {};
  },
};
"#;

const BROKEN: &str = r#"module.exports = {
  metadata: { name: "broken", displayName: "Broken", tag: "v1", events: ["Trade"] }, create(env) { return { onTrade( } }; },
};
"#;

const BAD_METADATA: &str = r#"module.exports = {
  metadata: { name: "Bad_Name", displayName: "", tag: "v1", config: [{ name: "x", type: "complex" }], events: ["Tradez"] },
  create(env) { return {}; },
};
"#;

/// A module of the strategy `twins`; variants 8041 and 35400 hash to the
/// same first 8 hex digits (found once by search, checked on every run).
fn twin(variant: u32) -> String {
    format!(
        "// twin {variant}\nmodule.exports = {{ metadata: {{ name: \"twins\", displayName: \"Twins\", tag: \"t{variant}\", events: [\"Trade\"] }}, create() {{ return {{}}; }} }};\n"
    )
}

/// The same module under another strategy name.
fn named(name: &str) -> String {
    format!(
        "module.exports = {{ metadata: {{ name: \"{name}\", displayName: \"Named like a hash\", tag: \"v1\", events: [\"Trade\"] }}, create() {{ return {{}}; }} }};\n"
    )
}

fn hello_variant(display_name: &str, tagged: bool) -> String {
    let source = HELLO.replace("\"Hello\"", &format!("\"{display_name}\""));
    if tagged { source } else { source.replace(" tag: \"v1\",", "") }
}

/// Runs the whole script and returns every example, in script order.
pub async fn capture() -> Vec<Example> {
    let mut s = Session::default();
    let d = TestDaemon::start_with(|config| {
        config.demo = true;
        config.providers = vec![quiet_sim()];
    })
    .await;
    registry_and_selectors(&mut s, &d).await;
    uploads(&mut s, &d).await;
    usage(&mut s, &d).await;
    instances(&mut s, &d).await;
    tags_and_deletes(&mut s, &d).await;
    refresh_and_batches(&mut s, &d).await;
    s.example("registry-export");
    s.expect(&d, 200, get("/strategies/registry").pick(&["noop=registry.noop", "usage", "errors"])).await;
    s.expect(&d, 200, get("/strategies/registry?format=csv")).await;
    s.expect(&d, 400, get("/strategies/registry?format=xml")).await;
    drop(d);
    auth_and_health(&mut s).await;
    s.examples
}

async fn registry_and_selectors(s: &mut Session, d: &TestDaemon) {
    let prod = demo_hash("momentum-v1.1.0.js");
    let noop = demo_hash("noop.js");

    s.example("stream");
    s.expect(d, 426, get("/ws")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(d.ws_url("/ws")).await.expect("upgrade accepted");
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("snapshot in time")
        .expect("a message")
        .expect("a frame");
    let Message::Text(text) = first else { panic!("a text frame first, got {first:?}") };
    let recorded = s.examples.last_mut().expect("recording");
    recorded.exchanges.push(Exchange {
        method: Method::GET,
        path: "/ws".into(),
        request: None,
        status: StatusCode::SWITCHING_PROTOCOLS,
        media: "application/json".into(),
        answer: serde_json::from_str(&text).expect("JSON message"),
        command: "websocat ws://127.0.0.1:8880/ws | head -n 1".into(),
        view: View::Full,
    });
    drop(ws);

    s.example("health");
    s.expect(d, 200, get("/healthz")).await;
    s.example("metrics");
    s.expect(d, 200, get("/metrics").grep("strata_registry_")).await;
    s.example("openapi");
    let fields = ["openapi", "title=info.title", "TagMoveRequest=components.schemas.TagMoveRequest"];
    s.expect(d, 200, get("/openapi.json").pick(&fields)).await;

    s.example("strategies");
    s.expect(d, 200, get("/strategies").each("strategies", &["name", "hash", "tag", "revisions"])).await;
    s.example("strategy");
    s.expect(d, 200, get("/strategies/noop")).await;
    s.expect(d, 404, get("/strategies/nope")).await;
    s.expect(d, 400, get("/strategies/Momentum")).await;

    s.example("selectors");
    let p8 = short(prod, 8);
    let full = prod.to_hex();
    for selector in [
        "momentum".to_owned(),
        "momentum:latest".to_owned(),
        "momentum:prod".to_owned(),
        format!("momentum@{p8}"),
        format!("momentum@{prod}"),
        format!("sha256:{p8}"),
        p8.clone(),
        p8.to_uppercase(),
        full,
    ] {
        s.expect(d, 200, get(format!("/strategies/modules/{selector}")).pick(&["strategy", "hash", "tag"])).await;
    }
    s.example("selector-errors");
    for (status, selector) in [
        (404, "momentum:PROD".to_owned()),
        (404, format!("momentum@{}", short(noop, 8))),
        (404, "deadbeef".to_owned()),
        (404, "DEADBEEF".to_owned()),
        (400, format!("sha256:{}", short(prod, 4))),
        (400, format!("momentum:prod@{p8}")),
    ] {
        s.expect(d, status, get(format!("/strategies/modules/{selector}"))).await;
    }

    s.example("selector-name-first");
    s.expect(d, 200, get(format!("/strategies/modules/{p8}")).pick(&["strategy", "hash"])).await;
    s.expect(d, 201, post("/strategies/modules", json!({"source": named(&p8)}))).await;
    s.expect(d, 200, get(format!("/strategies/modules/{p8}")).pick(&["strategy", "hash"])).await;
    s.expect(d, 200, get(format!("/strategies/modules/sha256:{p8}")).pick(&["strategy", "hash"])).await;
    s.expect(d, 200, delete(format!("/strategies/modules/{p8}"))).await;

    s.example("ambiguous-prefix");
    let (a, b) = (twin(8041), twin(35400));
    let (ha, hb) = (RevisionHash::of(a.as_bytes()), RevisionHash::of(b.as_bytes()));
    assert_eq!(short(ha, 8), short(hb, 8), "the twins no longer share a prefix");
    s.expect(d, 201, post("/strategies/modules", json!({"source": a}))).await;
    s.expect(d, 201, post("/strategies/modules", json!({"source": b}))).await;
    s.expect(d, 400, get(format!("/strategies/modules/sha256:{}", short(ha, 8)))).await;
    let nine = if short(ha, 9) == short(hb, 9) { short(ha, 10) } else { short(ha, 9) };
    s.expect(d, 200, get(format!("/strategies/modules/twins@{nine}")).pick(&["strategy", "hash"])).await;
    s.expect(d, 200, delete("/strategies/modules/twins")).await;

    s.example("modules");
    s.expect(d, 200, get("/strategies/modules?strategy=noop")).await;
    let names = "names=modules[].name";
    s.expect(d, 200, get(format!("/strategies/modules?hash={p8}")).pick(&["total", names, "modules[].revisions[]"]))
        .await;
    s.expect(d, 200, get(format!("/strategies/modules?strategy=noop&hash={p8}"))).await;
    s.expect(d, 200, get("/strategies/modules?limit=2&offset=1").pick(&["total", "offset", "limit", names])).await;
    s.expect(d, 200, get("/strategies/modules?limit=5000").pick(&["total", "offset", "limit"])).await;
    s.expect(d, 400, get("/strategies/modules?hash=momentum:prod")).await;
    s.expect(d, 400, get(format!("/strategies/modules?hash={}", short(prod, 4)))).await;
    s.expect(d, 400, get("/strategies/modules?limit=ten")).await;

    s.example("module");
    s.expect(d, 200, get("/strategies/modules/noop")).await;
    s.expect(d, 404, get("/strategies/modules/nope")).await;
    s.example("source");
    s.expect(d, 200, get("/strategies/modules/noop/source").head(3)).await;

    s.example("instances-demo");
    let fields = ["id", "selector=strategy.selector", "tag=strategy.tag", "state"];
    s.expect(d, 200, get("/strategy/instances").each("instances", &fields)).await;
    s.example("instance");
    s.expect(d, 200, get("/strategy/instances/momentum-prod")).await;
    s.example("instances-filter");
    let ids = "ids=instances[].id";
    s.expect(d, 200, get("/strategy/instances?state=stopped")).await;
    s.expect(d, 200, get("/strategy/instances?strategy=momentum").pick(&["total", ids])).await;
    s.expect(d, 200, get(format!("/strategy/instances?hash={p8}")).pick(&["total", ids])).await;
    s.expect(d, 400, get("/strategy/instances?hash=momentum:prod")).await;
    s.expect(d, 200, get("/strategy/instances?limit=2&offset=1").pick(&["total", "offset", "limit", ids])).await;
    s.expect(d, 400, get("/strategy/instances?state=paused")).await;
    s.expect(d, 200, get("/strategy/instances?hash=sha256:deadbeef").pick(&["total"])).await;
    s.expect(d, 400, get("/strategy/instances?bogus=1")).await;
    s.expect(d, 400, get("/strategy/instances?strategy=Momentum!")).await;
}

async fn uploads(s: &mut Session, d: &TestDaemon) {
    s.example("upload-invalid-source");
    s.expect(d, 422, post("/strategies/modules", json!({"source": BROKEN}))).await;
    s.example("upload-invalid-metadata");
    s.expect(d, 422, post("/strategies/modules", json!({"source": BAD_METADATA}))).await;
    s.example("upload-too-large");
    let big = json!({"source": " ".repeat(1_100_000)});
    let shown = "head -c 1100000 /dev/zero | tr '\\0' ' ' | jq -Rs '{source: .}' \\\n    | curl -s -X POST {base}/strategies/modules --data-binary @-";
    s.expect(d, 413, post("/strategies/modules", big).shown_as(shown)).await;

    s.example("upload");
    s.expect(d, 201, post("/strategies/modules", json!({"source": HELLO}))).await;
    s.expect(d, 200, post("/strategies/modules", json!({"source": HELLO}))).await;
    let again = hello_variant("Hello again", true);
    let body = json!({"source": again, "tag": "v2", "aliases": ["canary"], "promoteLatest": false});
    s.expect(d, 201, post("/strategies/modules", body)).await;
    s.expect(d, 200, get("/strategies/hello").pick(&["tag", "tagAliases"])).await;
    s.example("upload-errors");
    s.expect(d, 400, post("/strategies/modules", json!({"source": hello_variant("Hello", false)}))).await;
    s.expect(d, 400, post("/strategies/modules", json!({"source": "x", "name": "hello"}))).await;
    s.expect(d, 400, post("/strategies/modules", json!({"source": HELLO, "tag": "a/b"}))).await;

    s.example("upload-put");
    let hello = RevisionHash::of(HELLO.as_bytes());
    s.expect(d, 201, put("/strategies/modules/hello", json!({"source": hello_variant("Hello v3", true), "tag": "v3"})))
        .await;
    s.expect(d, 201, put("/strategies/modules/hello:rc1", json!({"source": hello_variant("Hello v4", true)}))).await;
    s.expect(d, 422, put("/strategies/modules/noop", json!({"source": HELLO}))).await;
    s.expect(d, 400, put(format!("/strategies/modules/hello@{}", short(hello, 8)), json!({"source": HELLO}))).await;
}

async fn usage(s: &mut Session, d: &TestDaemon) {
    let old = demo_hash("momentum-v1.0.0.js");
    let state = ["id", "state"];
    s.example("usage");
    for id in ["alpha", "beta"] {
        s.expect(
            d,
            201,
            post("/strategy/instances", instance_request(id, "momentum:prod", "BTC-USDT", true)).pick(&state),
        )
        .await;
    }
    s.expect(
        d,
        201,
        post("/strategy/instances", instance_request("gamma", "momentum:prod", "BTC-USDT", false)).pick(&state),
    )
    .await;
    s.expect(d, 200, post_empty("/strategy/instances/alpha/stop").pick(&state)).await;
    s.expect(d, 200, get("/strategies/modules/momentum:prod/usage")).await;
    s.expect(d, 200, get("/strategies/modules/momentum:prod/usage?includeStopped=true")).await;
    s.expect(d, 200, get("/strategies/modules/momentum:prod/usage?includeStopped=true&limit=1&offset=2")).await;
    let page = ["total", "offset", "limit", "instances"];
    s.expect(d, 200, get("/strategies/modules/momentum:prod/usage?offset=10").pick(&page)).await;
    s.expect(d, 200, get("/strategies/modules/noop/usage?includeStopped=true")).await;

    s.example("modules-running");
    let running = "running=modules[].running[]";
    let names = "names=modules[].name";
    s.expect(d, 200, get("/strategies/modules?strategy=momentum").pick(&[running])).await;
    let p8 = short(demo_hash("momentum-v1.1.0.js"), 8);
    s.expect(d, 200, get(format!("/strategies/modules?hash={p8}")).pick(&[running])).await;
    s.expect(d, 200, get("/strategies/modules?runningOnly=true").pick(&["total", names])).await;
    let page = ["total", "offset", "limit", names];
    s.expect(d, 200, get("/strategies/modules?runningOnly=true&limit=1&offset=1").pick(&page)).await;
    s.expect(d, 200, get("/strategies/modules?runningOnly=true&strategy=noop")).await;
    s.expect(
        d,
        200,
        get(format!("/strategies/modules?runningOnly=true&hash={}", short(old, 8))).pick(&["total", names]),
    )
    .await;

    s.example("usage-retired");
    let o8 = short(old, 8);
    let body = instance_request("old-v1", "momentum:v1.0.0", "ETH-USDT", true);
    s.expect(d, 201, post("/strategy/instances", body).pick(&["id", "state", "hash=strategy.hash"])).await;
    s.expect(d, 200, delete("/strategies/modules/momentum/tags/v1.0.0?allowOrphan=true")).await;
    s.expect(d, 200, get(format!("/strategies/modules/momentum@{o8}/usage")).pick(&["usage"])).await;
    s.expect(d, 200, post_empty("/strategy/instances/old-v1/stop").pick(&state)).await;
    s.expect(d, 200, get(format!("/strategies/modules/momentum@{o8}/usage")).pick(&["usage"])).await;
    let revisions = ["revisions=modules[].revisions[]"];
    s.expect(d, 200, get("/strategies/modules?strategy=momentum").pick(&revisions)).await;

    s.example("usage-errors");
    let link = s.expect(d, 200, get("/strategy/instances/momentum-prod").pick(&["usage=links.usage"])).await;
    let link = link["links"]["usage"].as_str().expect("usage link").to_owned();
    s.expect(d, 200, get(link).pick(&["selector", "strategy", "hash"])).await;
    s.expect(d, 404, get("/strategies/modules/nope/usage")).await;
    s.expect(d, 404, get("/strategies/modules/momentum:PROD/usage")).await;
    s.expect(d, 400, get(format!("/strategies/modules/sha256:{}/usage", &p8[..4]))).await;
    s.expect(d, 400, get("/strategies/modules/momentum/usage?limit=ten")).await;
    s.expect(d, 400, get("/strategies/modules/momentum/usage?includeStopped=yes")).await;
    s.expect(d, 400, get("/strategies/modules/momentum/usage?bogus=1")).await;

    s.example("delete-in-use");
    s.expect(d, 409, delete("/strategies/modules/momentum:prod")).await;
    s.expect(d, 409, delete("/strategies/modules/momentum")).await;
    s.expect(d, 409, delete(format!("/strategies/modules/momentum@{o8}"))).await;
    s.expect(d, 200, delete("/strategy/instances/old-v1")).await;
    s.expect(d, 200, delete(format!("/strategies/modules/momentum@{o8}"))).await;
}

async fn instances(s: &mut Session, d: &TestDaemon) {
    let create = |body: Value| post("/strategy/instances", body);
    let btc = json!({"sim": {"symbols": ["BTC-USDT"]}});
    s.example("instance-create");
    let trend = json!({"id": "trend", "strategy": {"identifier": "momentum:prod", "config": {"lookback": 30}},
                       "scope": {"sim": {"symbols": ["ETH-USDT"]}}});
    s.expect(d, 201, create(trend)).await;
    let idle = json!({"id": "idle", "strategy": {"identifier": "noop", "config": {"logEvery": 25}}, "scope": btc,
                      "autoStart": true});
    s.expect(d, 201, create(idle).pick(&["state", "startedAt"])).await;
    for (status, body) in [
        (409, json!({"id": "trend", "strategy": {"identifier": "noop"}, "scope": btc})),
        (
            400,
            json!({"id": "beta2", "strategy": {"identifier": "noop"}, "scope": {"binance": {"symbols": ["BTC-USDT"]}}}),
        ),
        (400, json!({"id": "beta2", "strategy": {"identifier": "noop"}, "scope": {"sim": {"symbols": ["DOGE-USDT"]}}})),
        (400, json!({"id": "beta2", "strategy": {"identifier": "noop"}, "scope": {"sim": {"symbols": []}}})),
        (
            400,
            json!({"id": "beta2", "strategy": {"identifier": "noop", "config": {"logEvery": "often", "colour": "red"}},
                   "scope": btc}),
        ),
        (404, json!({"id": "beta2", "strategy": {"identifier": "noop:v9"}, "scope": btc})),
        (400, json!({"id": "beta/1", "strategy": {"identifier": "noop"}, "scope": btc})),
        (400, json!({"id": "beta2", "strategy": {"identifier": "noop"}})),
    ] {
        s.expect(d, status, create(body)).await;
    }

    s.example("instance-start-fails");
    s.expect(d, 201, post("/strategies/modules", json!({"source": BOOM}))).await;
    s.expect(d, 422, create(instance_request("boom-1", "boom", "BTC-USDT", true))).await;
    s.expect(d, 200, get("/strategy/instances/boom-1").pick(&["state", "lastError"])).await;
    s.example("usage-failed");
    s.expect(d, 200, get("/strategies/modules/boom/usage?includeStopped=true")).await;

    s.example("instance-unknown");
    s.expect(d, 404, get("/strategy/instances/nope")).await;

    s.example("instance-actions");
    let shown = ["state", "startedAt", "lastError"];
    s.expect(d, 200, post_empty("/strategy/instances/trend/start").pick(&shown)).await;
    s.expect(d, 409, post_empty("/strategy/instances/trend/start")).await;
    s.expect(d, 200, post_empty("/strategy/instances/trend/stop").pick(&shown)).await;
    s.expect(d, 409, post_empty("/strategy/instances/trend/stop")).await;
    s.expect(d, 200, post_empty("/strategy/instances/trend/restart").pick(&shown)).await;
    s.expect(d, 200, post_empty("/strategy/instances/trend/restart").pick(&shown)).await;
    s.expect(d, 404, post_empty("/strategy/instances/trend/pause")).await;
    s.expect(d, 404, post_empty("/strategy/instances/nope/start")).await;
    s.expect(d, 422, post_empty("/strategy/instances/boom-1/restart")).await;

    s.example("instance-update");
    let shown = ["state", "startedAt", "config=strategy.config"];
    let body = json!({"config": {"lookback": 40, "cooldown": "10s"}});
    s.expect(d, 200, put("/strategy/instances/trend", body).pick(&shown)).await;
    s.expect(d, 200, put("/strategy/instances/noop-idle", json!({"config": {"logEvery": 100}})).pick(&shown)).await;
    let spec = json!({"id": "trend", "strategy": {"identifier": "momentum:prod", "config": {"lookback": 50}},
                      "scope": {"sim": {"symbols": ["ETH-USDT"]}}});
    s.expect(d, 200, put("/strategy/instances/trend", spec).pick(&shown)).await;
    for body in [
        json!({"config": {"lookback": "x"}}),
        json!({}),
        json!({"strategy": {"identifier": "momentum:latest"}, "config": {}}),
        json!({"scope": btc, "config": {}}),
        json!({"id": "trend2", "config": {}}),
    ] {
        s.expect(d, 400, put("/strategy/instances/trend", body)).await;
    }

    s.example("instance-logs");
    s.expect(d, 201, post("/strategies/modules", json!({"source": CHATTY}))).await;
    s.expect(d, 201, create(instance_request("chatty-1", "chatty", "BTC-USDT", true)).pick(&["id", "state"])).await;
    s.expect(d, 200, get("/strategy/instances/chatty-1/logs")).await;
    s.expect(d, 404, get("/strategy/instances/nope/logs")).await;

    s.example("instance-delete");
    s.expect(d, 200, delete("/strategy/instances/trend")).await;
    s.expect(d, 404, delete("/strategy/instances/trend")).await;

    s.example("providers");
    s.expect(d, 200, get("/providers")).await;

    s.example("drift");
    s.expect(
        d,
        200,
        put("/strategies/modules/momentum/tags/latest", json!({"hash": "momentum:v1.1.0", "refresh": false})),
    )
    .await;
    let fields = ["id", "selector=strategy.selector", "hash=strategy.hash", "drift", "resolvesTo"];
    s.expect(d, 200, get("/strategy/instances?drift=true").each("instances", &fields)).await;
    s.expect(d, 200, delete("/strategies/modules/mean-reversion/tags/prod")).await;
    let fields = ["state", "selector=strategy.selector", "drift", "resolvesTo"];
    s.expect(d, 200, get("/strategy/instances/mean-reversion-eth").pick(&fields)).await;
}

async fn tags_and_deletes(s: &mut Session, d: &TestDaemon) {
    let hello = RevisionHash::of(HELLO.as_bytes());
    let again = RevisionHash::of(hello_variant("Hello again", true).as_bytes());
    s.example("tags");
    let tag = "/strategies/modules/hello/tags/prod";
    s.expect(d, 200, put(tag, json!({"hash": short(hello, 8)}))).await;
    s.expect(d, 200, put(tag, json!({"hash": "hello:v2"}))).await;
    s.expect(d, 400, put(tag, json!({"hash": "momentum:prod"}))).await;
    s.expect(d, 404, put(tag, json!({"hash": "sha256:deadbeef"}))).await;
    s.expect(d, 404, put("/strategies/modules/nope/tags/prod", json!({"hash": short(hello, 8)}))).await;
    s.expect(d, 400, put("/strategies/modules/hello/tags/a..b", json!({"hash": short(hello, 8)}))).await;

    s.example("tag-delete");
    s.expect(d, 400, delete("/strategies/modules/hello/tags/latest")).await;
    s.expect(d, 200, delete("/strategies/modules/hello/tags/canary")).await;
    s.expect(d, 200, delete("/strategies/modules/hello/tags/v2")).await;
    s.expect(d, 409, delete(tag)).await;
    s.expect(d, 404, delete("/strategies/modules/hello/tags/Prod")).await;
    s.expect(d, 400, delete("/strategies/modules/hello/tags/prod?allowOrphan=yes")).await;

    s.example("delete");
    s.expect(d, 200, delete(format!("/strategies/modules/hello@{}", short(again, 8)))).await;
    s.expect(d, 200, delete("/strategies/modules/hello:latest")).await;
    s.expect(d, 200, get("/strategies/modules/hello").pick(&["hash", "tag", "tags"])).await;
    s.expect(d, 200, delete("/strategies/modules/hello")).await;
    s.expect(d, 404, delete("/strategies/modules/hello")).await;
}

async fn refresh_and_batches(s: &mut Session, d: &TestDaemon) {
    let (prod, latest) = (demo_hash("momentum-v1.1.0.js"), demo_hash("momentum-v1.2.0.js"));
    s.example("refresh");
    s.expect(
        d,
        200,
        put("/strategies/modules/momentum/tags/prod", json!({"hash": latest.to_string(), "refresh": false})),
    )
    .await;
    let followers = json!({"strategies": ["momentum:prod"]});
    s.expect(d, 200, post("/strategies/refresh", followers.clone())).await;
    s.expect(d, 200, post("/strategies/refresh", followers)).await;
    s.expect(d, 200, post("/strategies/refresh", json!({"hashes": ["sha256:00000000"], "strategies": ["nope"]}))).await;

    s.example("restart-batch");
    s.expect(d, 200, post_empty("/strategies/modules/momentum:prod/restart")).await;
    s.expect(d, 404, post_empty("/strategies/modules/momentum:nope/restart")).await;
    s.example("repin");
    let body = json!({"to": format!("momentum@{}", short(prod, 8))});
    s.expect(d, 200, post(format!("/strategies/modules/momentum@{}/repin", short(latest, 8)), body)).await;
    s.expect(d, 400, post("/strategies/modules/momentum:prod/repin", json!({"to": "noop"}))).await;
}

/// A token-protected daemon: the 401, then the file-level failures and the
/// degraded health they cause after a restart.
async fn auth_and_health(s: &mut Session) {
    let d = TestDaemon::start_with(|config| {
        config.token = Some(TOKEN.to_owned());
        config.providers = vec![quiet_sim()];
    })
    .await;
    s.example("auth");
    s.expect(&d, 401, post("/strategies/modules", json!({"source": HELLO}))).await;
    s.expect(&d, 201, post("/strategies/modules", json!({"source": HELLO})).with_token()).await;
    s.expect(&d, 200, get("/strategies").each("strategies", &["name", "tag"])).await;

    let again = hello_variant("Hello again", true);
    let (hello, other) = (RevisionHash::of(HELLO.as_bytes()), RevisionHash::of(again.as_bytes()));
    s.quiet(&d, post("/strategies/modules", json!({"source": again, "tag": "v2"})).with_token()).await;
    let file = |hash: RevisionHash| d.strategies_dir().join("hello").join(hash.to_hex()).join("hello.js");
    let (edited_file, removed_file) = (file(hello), file(other));
    let mut edited = std::fs::read_to_string(&edited_file).expect("revision file");
    edited.push_str("// edited on disk\n");
    std::fs::write(&edited_file, edited).expect("edit revision file");
    s.example("source-edited");
    s.expect(&d, 500, get("/strategies/modules/hello:v1/source")).await;

    let d = d.restart_with(|_| std::fs::remove_file(removed_file).expect("remove revision file")).await;
    s.example("health-degraded");
    s.expect(&d, 200, get("/healthz")).await;
    let registry = d.strategies_dir().join("registry.json");
    let d = d.restart_with(|_| std::fs::write(&registry, "{\n").expect("truncate registry.json")).await;
    s.example("health-registry-unreadable");
    s.expect(&d, 200, get("/healthz")).await;
}

/// The route an exchange went to: the documented template matching its
/// method and path, literal segments winning over parameters.
pub fn route_of(method: &Method, path: &str) -> Option<&'static RouteDoc> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .filter(|route| route.method == method.as_str())
        .filter_map(|route| {
            let template: Vec<&str> = route.template.split('/').collect();
            if template.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (t, s) in template.iter().zip(&segments) {
                if t.starts_with('{') {
                    continue;
                }
                if t != s {
                    return None;
                }
                literal += 1;
            }
            Some((literal, route))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, route)| route)
}

/// Replaces what changes from run to run: every string that is an RFC 3339
/// timestamp becomes [`TIMESTAMP`], and a stream message's `seq` becomes 0.
fn redact(value: &Value) -> Value {
    match value {
        Value::String(text) if is_timestamp(text) => Value::String(TIMESTAMP.to_owned()),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let value = if key == "seq" && value.is_u64() { json!(0) } else { redact(value) };
                    (key.clone(), value)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// [`redact`] for text (CSV): every comma-separated cell that is a timestamp.
fn redact_text(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split(',').map(|cell| if is_timestamp(cell) { TIMESTAMP } else { cell }).collect::<Vec<_>>().join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_timestamp(text: &str) -> bool {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Evaluates a field path (`a.b`, `list[].field`) the way `jq` does: a
/// segment ending in `[]` iterates an array.
fn select(value: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![value.clone()];
    for segment in path.split('.') {
        let (key, iterate) = match segment.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (segment, false),
        };
        current = current
            .into_iter()
            .flat_map(|v| {
                let v = if key.is_empty() { v } else { v.get(key).cloned().unwrap_or(Value::Null) };
                if iterate { v.as_array().cloned().unwrap_or_default() } else { vec![v] }
            })
            .collect();
    }
    current
}

/// A field spec `name`, `path` or `alias=path`: its key, its path, and its `jq` form.
fn field(spec: &str) -> (String, String, String) {
    let (alias, path) = match spec.split_once('=') {
        Some((alias, path)) => (alias.to_owned(), path.to_owned()),
        None => {
            let last = spec.rsplit('.').next().unwrap_or(spec);
            (last.trim_end_matches("[]").to_owned(), spec.to_owned())
        }
    };
    let jq = if alias == path {
        alias.clone()
    } else if path.contains("[]") {
        format!("{alias}: [.{path}]")
    } else {
        format!("{alias}: .{path}")
    };
    (alias, path, jq)
}

fn pick(value: &Value, fields: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for spec in fields {
        let (alias, path, _) = field(spec);
        let mut found = select(value, &path);
        let picked = if path.contains("[]") { Value::Array(found) } else { found.pop().unwrap_or(Value::Null) };
        out.insert(alias, picked);
    }
    Value::Object(out)
}

fn jq_object(fields: &[&str]) -> String {
    let fields: Vec<String> = fields.iter().map(|spec| field(spec).2).collect();
    format!("{{{}}}", fields.join(", "))
}

impl View {
    /// The shell filter appended to the command.
    fn filter(&self) -> String {
        match self {
            View::Full => String::new(),
            View::Pick(fields) => format!(" | jq '{}'", jq_object(fields)),
            View::Each(list, fields) => format!(" | jq '[.{list}[] | {}]'", jq_object(fields)),
            View::Grep(prefix) => format!(" | grep '^{prefix}'"),
            View::Head(lines) => format!(" | head -n {lines}"),
        }
    }

    /// What of `answer` the filter shows.
    fn apply(&self, answer: &Value) -> Value {
        let text = || answer.as_str().unwrap_or_default();
        let lines = |lines: Vec<&str>| Value::String(lines.into_iter().map(|l| format!("{l}\n")).collect());
        match self {
            View::Full => answer.clone(),
            View::Pick(fields) => pick(answer, fields),
            View::Each(list, fields) => {
                Value::Array(select(answer, &format!("{list}[]")).iter().map(|item| pick(item, fields)).collect())
            }
            View::Grep(prefix) => lines(text().lines().filter(|l| l.starts_with(prefix)).collect()),
            View::Head(n) => lines(text().lines().take(*n).collect()),
        }
    }
}

/// One exchange as shown in the doc: the command, the status, the body.
fn render_exchange(exchange: &Exchange) -> String {
    let command = exchange.command.replace("{base}", BASE_URL);
    let status = exchange.status;
    let reason = status.canonical_reason().unwrap_or("");
    let shown = exchange.view.apply(&exchange.answer);
    let body = match &shown {
        Value::String(text) => redact_text(text.trim_end_matches('\n')),
        json => serde_json::to_string_pretty(&redact(json)).expect("JSON renders"),
    };
    format!("$ {command}{}\n→ {} {reason}\n{body}\n", exchange.view.filter(), status.as_u16())
}

/// The Markdown between an example's markers.
fn render(example: &Example) -> String {
    let exchanges: Vec<String> = example.exchanges.iter().map(render_exchange).collect();
    format!("```console\n{}```\n", exchanges.join(""))
}

/// `doc` with the content of every example block replaced by its rendering.
/// A block is a line `<!-- example: NAME -->` up to the next line
/// `<!-- /example -->` (markers quoted inside a line are text). Fails when
/// the doc has a block no example fills, an example has no block, or a
/// marker is unclosed.
pub fn splice(doc: &str, examples: &[Example]) -> Result<String, String> {
    let rendered: BTreeMap<&str, String> = examples.iter().map(|e| (e.name, render(e))).collect();
    let mut used = BTreeSet::new();
    let mut out = String::with_capacity(doc.len());
    let mut lines = doc.split_inclusive('\n');
    while let Some(line) = lines.next() {
        out.push_str(line);
        let Some(name) = line.trim_end().strip_prefix(OPEN).and_then(|rest| rest.strip_suffix(" -->")) else {
            continue;
        };
        let block = rendered.get(name).ok_or_else(|| format!("docs/api.md has a block \"{name}\" no example fills"))?;
        if !used.insert(name) {
            return Err(format!("docs/api.md has the block \"{name}\" twice"));
        }
        let close = lines.by_ref().find(|line| line.trim_end() == CLOSE);
        let close = close.ok_or_else(|| format!("the block \"{name}\" is not closed"))?;
        out.push_str(block);
        out.push_str(close);
    }
    let missing: Vec<&str> = rendered.keys().filter(|name| !used.contains(*name)).copied().collect();
    if !missing.is_empty() {
        return Err(format!("examples with no block in docs/api.md: {}", missing.join(", ")));
    }
    Ok(out)
}

/// A line diff of `old` and `new`: each removed line as `N - text` and each
/// added one as `N + text` (N its line number on its side), empty when they
/// are equal.
pub fn diff(old: &str, new: &str) -> String {
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(old, new).iter_all_changes() {
        let (sign, line) = match change.tag() {
            similar::ChangeTag::Equal => continue,
            similar::ChangeTag::Delete => ('-', change.old_index()),
            similar::ChangeTag::Insert => ('+', change.new_index()),
        };
        let number = line.map_or(0, |index| index + 1);
        out.push_str(&format!("{number:>5} {sign} {}\n", change.value().trim_end_matches('\n')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(view: View, answer: Value) -> Exchange {
        Exchange {
            method: Method::GET,
            path: "/x".into(),
            request: None,
            status: StatusCode::OK,
            media: "application/json".into(),
            answer,
            command: "curl -s {base}/x".into(),
            view,
        }
    }

    #[test]
    fn picks_mirror_the_jq_filter_they_show() {
        let answer = json!({"total": 2, "modules": [{"name": "a", "revisions": [{"hash": "h1"}]}, {"name": "b", "revisions": []}],
                            "links": {"self": "/x"}});
        let view = View::Pick(vec!["total", "names=modules[].name", "modules[].revisions[]", "links.self"]);
        assert_eq!(
            view.filter(),
            " | jq '{total, names: [.modules[].name], revisions: [.modules[].revisions[]], self: .links.self}'"
        );
        assert_eq!(
            view.apply(&answer),
            json!({"total": 2, "names": ["a", "b"], "revisions": [{"hash": "h1"}], "self": "/x"})
        );
        let each = View::Each("modules", vec!["name"]);
        assert_eq!(each.filter(), " | jq '[.modules[] | {name}]'");
        assert_eq!(each.apply(&answer), json!([{"name": "a"}, {"name": "b"}]));
    }

    #[test]
    fn timestamps_and_seq_are_redacted_and_nothing_else() {
        let answer = json!({"seq": 41, "createdAt": "2031-05-06T07:08:09.123456789Z", "startedAt": null,
                            "tag": "v1", "n": 3, "list": ["2030-01-01T00:00:00+02:00"]});
        assert_eq!(
            redact(&answer),
            json!({"seq": 0, "createdAt": TIMESTAMP, "startedAt": null, "tag": "v1", "n": 3, "list": [TIMESTAMP]})
        );
        assert_eq!(redact_text("a,2031-05-06T07:08:09Z,,true\n"), format!("a,{TIMESTAMP},,true\n"));
    }

    #[test]
    fn a_stale_block_is_rewritten_and_unknown_or_missing_blocks_are_errors() {
        let example = Example { name: "one", exchanges: vec![exchange(View::Full, json!({"ok": true}))] };
        let examples = [example];
        let stale = "intro `<!-- example: one -->`\n<!-- example: one -->\nold text\n<!-- /example -->\nend\n";
        let fresh = splice(stale, &examples).unwrap();
        assert_eq!(
            fresh,
            "intro `<!-- example: one -->`\n<!-- example: one -->\n```console\n$ curl -s http://127.0.0.1:8880/x\n→ 200 OK\n{\n  \"ok\": true\n}\n```\n<!-- /example -->\nend\n"
        );
        assert_eq!(splice(&fresh, &examples).unwrap(), fresh, "splicing is idempotent");
        assert!(diff(stale, &fresh).lines().any(|line| line == "    3 - old text"));
        assert!(diff(&fresh, &fresh).is_empty());
        assert!(splice("<!-- example: two -->\n<!-- /example -->\n", &examples).unwrap_err().contains("two"));
        assert!(splice("no blocks\n", &examples).unwrap_err().contains("one"));
        assert!(splice("<!-- example: one -->\nnever closed\n", &examples).unwrap_err().contains("not closed"));
    }

    #[test]
    fn exchanges_map_to_their_route_template() {
        let route = |method: Method, path: &str| route_of(&method, path).map(|r| r.template);
        assert_eq!(route(Method::GET, "/strategies/modules?strategy=x"), Some("/strategies/modules"));
        assert_eq!(route(Method::GET, "/strategies/registry"), Some("/strategies/registry"));
        assert_eq!(route(Method::GET, "/strategies/noop"), Some("/strategies/{name}"));
        assert_eq!(route(Method::GET, "/strategy/instances/x/logs"), Some("/strategy/instances/{id}/logs"));
        assert_eq!(route(Method::POST, "/strategy/instances/x/stop"), Some("/strategy/instances/{id}/{action}"));
        assert_eq!(route(Method::PATCH, "/strategies"), None);
    }
}
