//! Harness for end-to-end tests: a real `stratad` (the library's `boot`, the
//! same code path as the binary) on `127.0.0.1:0` with temporary
//! directories, driven over HTTP.

pub mod api_examples;

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use strata_daemon::{Config, Running};

/// A daemon under test, with the directories it owns.
pub struct TestDaemon {
    running: Option<Running>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// HTTP client.
    pub client: reqwest::Client,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// Starts a daemon on fresh temporary directories.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a daemon on fresh temporary directories after `configure` has
    /// adjusted its configuration.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut daemon = Self::start_in(&dir, configure).await;
        daemon._temp = Some(temp);
        daemon
    }

    /// Starts a daemon whose strategies and data live under `dir`, after
    /// `configure` has adjusted the configuration.
    pub async fn start_in(dir: &Path, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            strategies_dir: dir.join("strategies"),
            data_dir: Some(dir.join("data")),
            load_threads: Some(2),
            ..Config::default()
        };
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind loopback");
        let mut running = strata_daemon::boot(config, listener).await.expect("daemon boots");
        running.wait_loaded().await;
        let url = format!("http://{}", running.addr);
        Self { running: Some(running), url, client: reqwest::Client::new(), dir: dir.to_path_buf(), _temp: None }
    }

    /// Stops the daemon and starts a new one on the same directories.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the daemon, lets `while_stopped` change its directory (edit
    /// files, remove the database…), then starts a new one on it.
    pub async fn restart_with(self, while_stopped: impl FnOnce(&Path)) -> Self {
        self.restart_configured(while_stopped, |_| {}).await
    }

    /// Like [`TestDaemon::restart_with`], with `configure` adjusting the new
    /// daemon's configuration as in [`TestDaemon::start_in`].
    pub async fn restart_configured(
        mut self,
        while_stopped: impl FnOnce(&Path),
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let temp = self._temp.take();
        self.running.take().expect("running").shutdown().await;
        while_stopped(&self.dir);
        let mut next = Self::start_in(&self.dir, configure).await;
        next._temp = temp;
        next
    }

    /// Stops the daemon (gracefully, as `restart` does) without starting
    /// another; returns the temporary directory it ran in, if it owns one,
    /// so the caller can look at (or damage) what it left.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.running.take().expect("running").shutdown().await;
        self._temp.take()
    }

    /// The WebSocket URL of `path_and_query`, e.g. `ws://127.0.0.1:41234/ws?since=3`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.url.trim_start_matches("http://"))
    }

    /// The directory holding `strategies/` and `data/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The strategies directory.
    pub fn strategies_dir(&self) -> PathBuf {
        self.dir.join("strategies")
    }

    /// Sends a request with an optional JSON body; returns status and body
    /// (JSON, or a string for non-JSON answers). Asserts no answer leaks the
    /// server's absolute paths.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        self.assert_no_path_leak(path, &text);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Asserts the answer `text` to `path` does not show the server's
    /// absolute paths.
    pub fn assert_no_path_leak(&self, path: &str, text: &str) {
        let dir = self.dir.to_str().expect("utf-8 temp path");
        assert!(!text.contains(dir), "{path} leaked an absolute server path: {text}");
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Uploads a module and asserts it was accepted; returns `sha256:<hex>`.
    pub async fn upload(&self, source: &str, tag: &str) -> String {
        let (status, body) = self.post("/strategies/modules", serde_json::json!({"source": source, "tag": tag})).await;
        assert!(status.is_success(), "upload failed: {status} {body}");
        body["hash"].as_str().expect("hash in upload answer").to_owned()
    }

    /// Creates an instance of `identifier` on `sim`/`BTC-USDT` and asserts
    /// it was accepted; returns the instance object.
    pub async fn create_instance(&self, id: &str, identifier: &str, auto_start: bool) -> Value {
        let body = instance_request(id, identifier, "BTC-USDT", auto_start);
        let (status, view) = self.post("/strategy/instances", body).await;
        assert_eq!(status, StatusCode::CREATED, "create {id}: {view}");
        view
    }

    /// The value of one Prometheus series (see [`metric_value`]).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        let text = body.as_str().expect("metrics are text");
        metric_value(text, name).unwrap_or_else(|| panic!("metric {name} not exported"))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Best effort: the runtime may already be shutting down.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(running.shutdown());
            }
        }
    }
}

/// The body of `POST /strategy/instances`: `id` on `identifier` (any
/// selector), trading `symbol` on the simulated venue `sim`.
pub fn instance_request(id: &str, identifier: &str, symbol: &str, auto_start: bool) -> Value {
    serde_json::json!({"id": id, "strategy": {"identifier": identifier},
                       "scope": {"sim": {"symbols": [symbol]}}, "autoStart": auto_start})
}

/// A valid strategy module named `name`; `variant` changes its bytes (and so
/// its hash) without changing its behaviour.
pub fn module(name: &str, variant: u32) -> String {
    format!(
        r#"// variant {variant}
const lookback = 1_000;
module.exports = {{
  metadata: {{
    name: "{name}",
    displayName: `Test strategy ${{"{name}"}}`,
    description: "generated by the end-to-end tests",
    config: [{{ name: "lookback", type: "int", default: 20, required: false }}],
    events: ["Trade"],
  }},
  create(env) {{
    let seen = 0;
    return {{ onTrade(ctx, evt, payload, price) {{ seen += 1; return env?.config?.lookback ?? lookback; }} }};
  }},
}};
"#
    )
}

/// The value of the series `name` (a metric name, with its labels as
/// exported, e.g. `strata_refresh_results_total{reason="refreshed"}`) in
/// Prometheus text `metrics`, or `None` when it is not there.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}
