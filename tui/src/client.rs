//! The REST side: what the app asks for ([`Request`]), what comes back
//! ([`Reply`]) and the [`Client`] that performs requests with `reqwest`.
//!
//! The app never awaits a request: it returns [`Request`]s from `update`,
//! the loop spawns [`Client::perform`] for each, and the [`Reply`] comes back
//! as an event. A slow daemon therefore never freezes the screen.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use strata_shared::RevisionHash;
use strata_shared::api::{
    BatchResponse, ErrorBody, InstanceView, InstancesPage, MAX_LIMIT, ModulesPage, RefreshRequest, RefreshResponse,
    RegistryExport,
};
use strata_shared::stream::{RevisionState, Snapshot};
use time::OffsetDateTime;

use crate::format::short_hash;

/// What an instance action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `POST /strategy/instances/{id}/start`.
    Start,
    /// `POST /strategy/instances/{id}/stop`.
    Stop,
    /// `POST /strategy/instances/{id}/restart`.
    Restart,
}

impl Verb {
    /// The path segment (and the word shown).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

/// What an action touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Targeted refresh of every instance of a strategy (`{strategies:[name]}`).
    RefreshStrategy(String),
    /// Targeted refresh of the instances pinned to a hash (`{hashes:[hash]}`).
    RefreshHash {
        /// Strategy of the revision (for display and the preview).
        strategy: String,
        /// The revision.
        hash: RevisionHash,
    },
    /// Restart every instance pinned to a hash.
    RestartAll {
        /// Strategy of the revision.
        strategy: String,
        /// The revision.
        hash: RevisionHash,
    },
    /// Start, stop or restart one instance.
    Instance {
        /// Instance id.
        id: String,
        /// What to do.
        verb: Verb,
    },
}

impl Target {
    /// One line describing the action: `refresh hash 3fa9c1d2e4b5 of momentum`.
    pub fn describe(&self) -> String {
        match self {
            Target::RefreshStrategy(name) => format!("refresh strategy {name}"),
            Target::RefreshHash { strategy, hash } => format!("refresh hash {} of {strategy}", short_hash(hash)),
            Target::RestartAll { strategy, hash } => format!("restart all on {strategy}@{}", short_hash(hash)),
            Target::Instance { id, verb } => format!("{} instance {id}", verb.as_str()),
        }
    }
}

/// A REST request the app wants performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every revision's usage and tags (used until the WebSocket delivers a snapshot).
    Bootstrap,
    /// Drifting instances, of one strategy or of all.
    Drift {
        /// `None` = every strategy.
        strategy: Option<String>,
    },
    /// The instances pinned to a revision.
    Instances {
        /// The revision.
        hash: RevisionHash,
    },
    /// One instance and its recent log lines.
    Instance {
        /// Instance id.
        id: String,
    },
    /// The instances an action would touch (for its confirmation).
    Preview(Target),
    /// Run an action.
    Run(Target),
}

/// One log line of `GET /strategy/instances/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogLine {
    /// When it was logged.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// `log`, `info`, `warn` or `error`.
    pub level: String,
    /// The text.
    pub message: String,
}

/// A drifting instance: its selector resolves to another hash than its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEntry {
    /// Strategy name.
    pub strategy: String,
    /// The pinned hash.
    pub hash: RevisionHash,
    /// Instance id.
    pub id: String,
}

/// What an action answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST /strategies/refresh`.
    Refresh(RefreshResponse),
    /// `POST /strategies/modules/{selector}/restart`.
    Batch(BatchResponse),
    /// An instance action: the instance afterwards.
    Instance(Box<InstanceView>),
}

/// A page of instances plus the total before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceList {
    /// The instances fetched (at most [`MAX_INSTANCES`]).
    pub instances: Vec<InstanceView>,
    /// How many matched.
    pub total: usize,
}

/// The most instances fetched for one list.
pub const MAX_INSTANCES: usize = 100_000;

/// The answer to a [`Request`], delivered as an event. Errors are text to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answer to [`Request::Bootstrap`].
    Bootstrap(Result<Snapshot, String>),
    /// Answer to [`Request::Drift`].
    Drift {
        /// As asked.
        strategy: Option<String>,
        /// The drifting instances.
        result: Result<Vec<DriftEntry>, String>,
    },
    /// Answer to [`Request::Instances`].
    Instances {
        /// As asked.
        hash: RevisionHash,
        /// The instances.
        result: Result<InstanceList, String>,
    },
    /// Answer to [`Request::Instance`].
    Instance {
        /// As asked.
        id: String,
        /// The instance and its log lines.
        result: Result<(Box<InstanceView>, Vec<LogLine>), String>,
    },
    /// Answer to [`Request::Preview`].
    Preview {
        /// As asked.
        target: Target,
        /// The instances the action would touch.
        result: Result<InstanceList, String>,
    },
    /// Answer to [`Request::Run`].
    Done {
        /// As asked.
        target: Target,
        /// What the daemon answered.
        result: Result<Outcome, String>,
    },
}

/// Characters escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A REST client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct LogsBody {
    lines: Vec<LogLine>,
}

impl Client {
    /// A client of the daemon at `base` (e.g. `http://127.0.0.1:8880`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    /// Performs a request; never panics, errors become text in the reply.
    pub async fn perform(&self, request: Request) -> Reply {
        match request {
            Request::Bootstrap => Reply::Bootstrap(self.bootstrap().await),
            Request::Drift { strategy } => {
                let result = self.instances(strategy.as_deref(), None, true).await.map(|list| {
                    list.instances
                        .into_iter()
                        .map(|v| DriftEntry { strategy: v.strategy.identifier, hash: v.strategy.hash, id: v.id })
                        .collect()
                });
                Reply::Drift { strategy, result }
            }
            Request::Instances { hash } => {
                Reply::Instances { hash, result: self.instances(None, Some(&hash), false).await }
            }
            Request::Instance { id } => {
                let result = self.instance(&id).await;
                Reply::Instance { id, result }
            }
            Request::Preview(target) => {
                let result = match &target {
                    Target::RefreshStrategy(name) => self.instances(Some(name), None, false).await,
                    Target::RefreshHash { hash, .. } | Target::RestartAll { hash, .. } => {
                        self.instances(None, Some(hash), false).await
                    }
                    Target::Instance { id, .. } => self
                        .get::<InstanceView>(&format!("/strategy/instances/{}", segment(id)))
                        .await
                        .map(|v| InstanceList { instances: vec![v], total: 1 }),
                };
                Reply::Preview { target, result }
            }
            Request::Run(target) => {
                let result = self.run(&target).await;
                Reply::Done { target, result }
            }
        }
    }

    async fn run(&self, target: &Target) -> Result<Outcome, String> {
        match target {
            Target::RefreshStrategy(name) => {
                let body = RefreshRequest { hashes: vec![], strategies: vec![name.clone()] };
                self.post("/strategies/refresh", &body).await.map(Outcome::Refresh)
            }
            Target::RefreshHash { hash, .. } => {
                let body = RefreshRequest { hashes: vec![hash.to_string()], strategies: vec![] };
                self.post("/strategies/refresh", &body).await.map(Outcome::Refresh)
            }
            Target::RestartAll { strategy, hash } => {
                let selector = format!("{strategy}@{hash}");
                let path = format!("/strategies/modules/{}/restart", segment(&selector));
                self.post(&path, &serde_json::json!({})).await.map(Outcome::Batch)
            }
            Target::Instance { id, verb } => {
                let path = format!("/strategy/instances/{}/{}", segment(id), verb.as_str());
                self.post(&path, &serde_json::json!({})).await.map(|v| Outcome::Instance(Box::new(v)))
            }
        }
    }

    async fn instance(&self, id: &str) -> Result<(Box<InstanceView>, Vec<LogLine>), String> {
        let path = format!("/strategy/instances/{}", segment(id));
        let logs_path = format!("{path}/logs");
        let (view, logs) = tokio::join!(self.get::<InstanceView>(&path), self.get::<LogsBody>(&logs_path));
        // Logs are a nice-to-have: an instance without them still shows.
        Ok((Box::new(view?), logs.map(|l| l.lines).unwrap_or_default()))
    }

    /// Every instance matching the filters, page by page (up to [`MAX_INSTANCES`]).
    async fn instances(
        &self,
        strategy: Option<&str>,
        hash: Option<&RevisionHash>,
        drift: bool,
    ) -> Result<InstanceList, String> {
        let mut out = Vec::new();
        loop {
            let mut query: Vec<(&str, String)> =
                vec![("limit", MAX_LIMIT.to_string()), ("offset", out.len().to_string())];
            if let Some(s) = strategy {
                query.push(("strategy", s.to_owned()));
            }
            if let Some(h) = hash {
                query.push(("hash", h.to_string()));
            }
            if drift {
                query.push(("drift", "true".to_owned()));
            }
            let query = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
            let page: InstancesPage = self.get(&format!("/strategy/instances?{query}")).await?;
            let total = page.total;
            let got = page.instances.len();
            out.extend(page.instances);
            if got == 0 || out.len() >= total || out.len() >= MAX_INSTANCES {
                return Ok(InstanceList { instances: out, total });
            }
        }
    }

    /// A snapshot built from REST: usage from `/strategies/registry`, tags
    /// from `/strategies/modules`. `seq` is 0: the WebSocket's own snapshot
    /// replaces it as soon as one arrives.
    async fn bootstrap(&self) -> Result<Snapshot, String> {
        let registry: RegistryExport = self.get("/strategies/registry").await?;
        let mut tags = std::collections::HashMap::new();
        let mut offset = 0;
        loop {
            let page: ModulesPage = self.get(&format!("/strategies/modules?limit={MAX_LIMIT}&offset={offset}")).await?;
            offset += page.modules.len();
            for module in page.modules {
                for revision in module.revisions {
                    tags.insert((module.name.clone(), revision.hash), revision.tags);
                }
            }
            if offset >= page.total || offset == 0 {
                break;
            }
        }
        let revisions = registry
            .usage
            .into_iter()
            .map(|u| RevisionState {
                tags: tags.remove(&(u.strategy.clone(), u.hash)).unwrap_or_default(),
                strategy: u.strategy,
                hash: u.hash,
                count: u.count,
                instances: u.instances,
                first_seen: u.first_seen,
                last_seen: u.last_seen,
                retired: u.retired,
            })
            .collect();
        Ok(Snapshot { seq: 0, reset: true, revisions })
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let request = self.with_auth(self.http.get(format!("{}{path}", self.base)));
        decode(path, request.send().await).await
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, String> {
        let request = self.with_auth(self.http.post(format!("{}{path}", self.base)).json(body));
        decode(path, request.send().await).await
    }
}

async fn decode<T: DeserializeOwned>(path: &str, sent: reqwest::Result<reqwest::Response>) -> Result<T, String> {
    let response = sent.map_err(|e| format!("{path}: {}", error_chain(&e)))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("{path}: {e}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        tracing::warn!(path, %status, message, "request failed");
        return Err(format!("{} {}", status.as_u16(), message));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{path}: unexpected answer: {e}"))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Percent-encodes one path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}
