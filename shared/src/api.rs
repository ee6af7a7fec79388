//! HTTP API request and response bodies (camelCase JSON, SPEC §3).
//!
//! The daemon serialises these and the console and tests deserialise them,
//! so both sides agree on the wire format by construction.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::RevisionHash;
use crate::metadata::{Diagnostic, ModuleMetadata};

/// Default page size of paged endpoints.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size any paged endpoint returns.
pub const MAX_LIMIT: usize = 1000;
/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The `error` code of a 422 answer.
pub const VALIDATION_FAILED: &str = "strategy_validation_failed";

/// Every error answer: `{"status":"error","error":…}` plus, for some, details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Always `"error"`.
    pub status: String,
    /// What went wrong (for 422: `strategy_validation_failed`).
    pub error: String,
    /// Human-readable summary (422 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Validation problems (422 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// Matching selectors when a hash prefix is ambiguous (400 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Who uses what, when a delete is refused because of it (409 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<RevisionUsage>,
}

/// Instances referencing one revision (in a 409 answer to a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionUsage {
    /// The revision.
    pub hash: RevisionHash,
    /// How many instances (running or stopped) are pinned to it.
    pub count: usize,
    /// Their ids.
    pub instances: Vec<String>,
}

impl ErrorBody {
    /// A plain error answer.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            status: "error".into(),
            error: error.into(),
            message: None,
            diagnostics: vec![],
            candidates: vec![],
            usage: vec![],
        }
    }
}

/// `POST /strategies/modules` and `PUT /strategies/modules/{selector}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadRequest {
    /// The module's JavaScript source.
    pub source: String,
    /// Tag for the revision; overrides `metadata.tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// More tags to point at the revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Whether `latest` moves to the revision (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_latest: Option<bool>,
}

/// Answer to an upload (201 when new, 200 when the bytes were known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    /// Strategy name.
    pub name: String,
    /// The revision's hash.
    pub hash: RevisionHash,
    /// The tag this upload gave it.
    pub tag: String,
    /// False when identical bytes were already registered.
    pub created: bool,
}

/// Links from a summary to related resources.
pub type Links = BTreeMap<String, String>;

/// One revision inside a module summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionInfo {
    /// The revision's hash.
    pub hash: RevisionHash,
    /// Primary tag.
    pub tag: String,
    /// Every tag pointing at it now.
    pub tags: Vec<String>,
    /// Path relative to the strategies directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// No instance runs it, no tag points at it, and the grace period is over.
    pub retired: bool,
}

/// Usage of one revision (SPEC §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunningInfo {
    /// The revision.
    pub hash: RevisionHash,
    /// Ids of the instances running it.
    pub instances: Vec<String>,
    /// How many instances run it.
    pub count: usize,
    /// First time any instance ran it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_seen: Option<OffsetDateTime>,
}

/// One strategy as listed by `GET /strategies/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSummary {
    /// Strategy name.
    pub name: String,
    /// Tag → hash.
    pub tag_aliases: BTreeMap<String, RevisionHash>,
    /// Revisions, oldest first (only the matching one with a `hash` filter).
    pub revisions: Vec<RevisionInfo>,
    /// Metadata of the `latest` revision.
    pub metadata: Option<ModuleMetadata>,
    /// Revisions with running instances.
    pub running: Vec<RunningInfo>,
    /// `self`.
    pub links: Links,
}

/// A page of results with the total before paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModulesPage {
    /// This page.
    pub modules: Vec<ModuleSummary>,
    /// Matches before paging.
    pub total: usize,
    /// Index of the first item of the page.
    pub offset: usize,
    /// Page size used.
    pub limit: usize,
}

/// `GET /strategies/modules/{selector}`: one resolved revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSummary {
    /// The selector as given.
    pub selector: String,
    /// Strategy name.
    pub strategy: String,
    /// The revision.
    #[serde(flatten)]
    pub revision: RevisionInfo,
    /// Its metadata.
    pub metadata: ModuleMetadata,
    /// `self`, `source`, `usage`, `strategy`.
    pub links: Links,
}

/// One strategy as listed by `GET /strategies` and `GET /strategies/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyInfo {
    /// Strategy name.
    pub name: String,
    /// The `latest` revision.
    pub hash: RevisionHash,
    /// Its primary tag.
    pub tag: String,
    /// Tag → hash.
    pub tag_aliases: BTreeMap<String, RevisionHash>,
    /// Number of revisions.
    pub revisions: usize,
    /// Metadata of `latest`.
    pub metadata: ModuleMetadata,
}

/// `GET /strategies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyList {
    /// Every strategy with a `latest` revision, by name.
    pub strategies: Vec<StrategyInfo>,
}

/// `PUT /strategies/modules/{name}/tags/{tag}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagMoveRequest {
    /// Target revision: a hash, a prefix, or any selector of the same strategy.
    pub hash: String,
    /// Refresh the tag's followers (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
}

/// Answer to a tag move or deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagResponse {
    /// Strategy name.
    pub strategy: String,
    /// The tag.
    pub tag: String,
    /// Where it points now (absent after deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<RevisionHash>,
    /// Where it pointed before (absent if new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<RevisionHash>,
    /// The refresh of the tag's followers, when the move asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Vec<RefreshResult>>,
}

/// Answer to `DELETE /strategies/modules/{selector}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    /// Strategy concerned.
    pub strategy: String,
    /// Revisions removed.
    pub deleted: Vec<RevisionHash>,
    /// Whether the strategy itself is gone.
    pub strategy_deleted: bool,
}

/// One revision's usage in `GET /strategies/registry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    /// Strategy name.
    pub strategy: String,
    /// The revision.
    pub hash: RevisionHash,
    /// Running instances.
    pub count: usize,
    /// Ids of the running instances (absent in an export = none listed).
    #[serde(default)]
    pub instances: Vec<String>,
    /// First time any instance ran it (absent = never).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it (absent = never).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_seen: Option<OffsetDateTime>,
    /// No instance runs it, no tag points at it, and the grace period is
    /// over (absent = not retired).
    #[serde(default)]
    pub retired: bool,
    /// Whether an instance pinned to it follows a selector that now
    /// resolves elsewhere.
    #[serde(default)]
    pub drift: bool,
}

/// A registry entry that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadErrorInfo {
    /// The strategy entry.
    pub strategy: String,
    /// The revision, when one revision is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// `GET /strategies/registry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryExport {
    /// `registry.json` as the daemon last read or wrote it (absent in an
    /// export read back = `null`: `stratad bootstrap --usage` needs only
    /// `usage`).
    #[serde(default)]
    pub registry: serde_json::Value,
    /// One entry per loaded revision, zero-usage ones included.
    pub usage: Vec<UsageEntry>,
    /// Entries that failed to load (absent = none).
    #[serde(default)]
    pub errors: Vec<LoadErrorInfo>,
}

/// Progress of a registry load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgressInfo {
    /// Revisions to verify.
    pub total: u64,
    /// Revisions verified.
    pub done: u64,
    /// Revisions compiled (the rest came from the metadata cache).
    pub compiled: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, `loading`, `degraded` or `error`.
    pub status: String,
    /// Registry load errors (when degraded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<LoadErrorInfo>,
    /// Load progress (while loading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<LoadProgressInfo>,
    /// Why the store is unusable (503 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Provider name → symbols, in the order given (the first provider is the
/// instance's home provider, see `wantsCrossProviderEvents`).
pub type Scope = indexmap::IndexMap<String, ScopeEntry>;

/// The symbols an instance trades on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeEntry {
    /// Symbols, e.g. `["BTC-USDT"]`.
    pub symbols: Vec<String>,
}

/// The `strategy` part of an instance create request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyRef {
    /// Any selector: `name`, `name:tag`, `name@sha256:<hex>`, a hash…
    pub identifier: String,
    /// Config, validated against the revision's schema.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `POST /strategy/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// Instance id: `[A-Za-z0-9._-]{1,128}`.
    pub id: String,
    /// What to run.
    pub strategy: StrategyRef,
    /// Provider name → symbols, home provider first.
    pub scope: Scope,
    /// Start right away (default false).
    #[serde(default)]
    pub auto_start: bool,
}

/// Most instances one bulk create may carry.
pub const MAX_BULK_CREATE: usize = 1000;

/// `POST /strategy/instances` with `{"instances": […]}`: up to
/// [`MAX_BULK_CREATE`] creates validated one by one and written in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCreateRequest {
    /// The instances to create, each with its own `autoStart`.
    pub instances: Vec<CreateInstanceRequest>,
}

/// The body of `POST /strategy/instances`: one instance, or many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CreateInstancesBody {
    /// `{"instances": […]}`.
    Bulk(BulkCreateRequest),
    /// One instance.
    One(CreateInstanceRequest),
}

/// One item's outcome in a bulk create, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreateResult {
    /// The id asked for.
    pub id: String,
    /// The status a single create would have answered: 201, or 400, 404,
    /// 409, 422 (created but its start failed: it exists, `failed`), 503.
    pub status: u16,
    /// The instance, when it exists (201 and 422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceView>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a bulk create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreateResponse {
    /// How many instances now exist that did not (201 and 422 items).
    pub created: usize,
    /// One result per requested instance, in order.
    pub results: Vec<BulkCreateResult>,
}

/// The answer to `POST /strategy/instances`: the instance, or the bulk results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CreatedInstances {
    /// For `{"instances": […]}`.
    Bulk(BulkCreateResponse),
    /// For one instance.
    One(Box<InstanceView>),
}

/// The `strategy` part of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStrategy {
    /// Strategy name.
    pub identifier: String,
    /// The selector as typed at creation (or by the last re-pin).
    pub selector: String,
    /// The pinned revision.
    pub hash: RevisionHash,
    /// The pinned revision's primary tag (`null` if the revision is gone).
    pub tag: Option<String>,
    /// Config with defaults filled in.
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// An instance's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountersView {
    /// Events handed to the strategy.
    pub events_delivered: u64,
    /// Market events dropped because the instance fell behind.
    pub events_dropped: u64,
    /// Handler calls that threw.
    pub handler_errors: u64,
    /// Orders submitted (dry-run ones included).
    pub orders_submitted: u64,
    /// Orders filled.
    pub orders_filled: u64,
    /// When the last event was delivered.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_event_at: Option<OffsetDateTime>,
}

/// Lifecycle states (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InstanceState {
    /// Not running.
    Stopped,
    /// Building its runtime.
    Starting,
    /// Handling events.
    Running,
    /// Shutting its runtime down.
    Stopping,
    /// Stopped by an error (see `lastError`).
    Failed,
}

impl InstanceState {
    /// The lowercase name used in JSON and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Stopped => "stopped",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Failed => "failed",
        }
    }
}

/// One instance (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Instance id.
    pub id: String,
    /// What it runs.
    pub strategy: InstanceStrategy,
    /// Provider name → symbols, home provider first.
    pub scope: Scope,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// Whether its selector now resolves to another hash.
    pub drift: bool,
    /// What its selector resolves to now (`null` when it no longer resolves).
    pub resolves_to: Option<RevisionHash>,
    /// Counters.
    pub counters: CountersView,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::schema::Rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last started.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub started_at: Option<OffsetDateTime>,
    /// `self`, `usage`, `module`, `logs`.
    pub links: Links,
}

/// `GET /strategy/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancesPage {
    /// This page.
    pub instances: Vec<InstanceView>,
    /// Matches before paging.
    pub total: usize,
    /// Index of the first item of the page.
    pub offset: usize,
    /// Page size used.
    pub limit: usize,
}

/// `PUT /strategy/instances/{id}`: the new config (a full spec is accepted
/// but only `config` may differ from the stored one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInstanceRequest {
    /// The new config.
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Must match the stored spec if given.
    #[serde(default)]
    pub id: Option<String>,
    /// Must match the stored spec (selector and config) if given.
    #[serde(default)]
    pub strategy: Option<serde_json::Value>,
    /// Must match the stored spec if given.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Accepted and ignored (a create-time option).
    #[serde(default)]
    pub auto_start: Option<bool>,
}

/// One provider in `GET /providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    /// Name (the key of an instance's scope).
    pub name: String,
    /// Kind, e.g. `sim` (simulated).
    pub kind: String,
    /// Symbols it trades.
    pub symbols: Vec<String>,
}

/// `GET /providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderList {
    /// Every configured venue, in config order.
    pub providers: Vec<ProviderInfo>,
}

/// Answer to `DELETE /strategy/instances/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceDeleted {
    /// The instance deleted.
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// The `usage` block of `GET /strategies/modules/{selector}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// Running instances.
    pub count: usize,
    /// Instances that ran it and are not running it now: stopped (or failed)
    /// ones still pinned to it and those re-pinned away from it (what
    /// `includeStopped` adds to the page). A field named `instances` is
    /// always a list in this API, never a number (SPEC §3).
    pub stopped: usize,
    /// First time any instance ran it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_seen: Option<OffsetDateTime>,
    /// No running instance, no tag pointing at it, and the grace period
    /// (`[usage] retire_after_secs`) is over.
    pub retired: bool,
    /// Instances pinned to it, running or not (what a delete would refuse for).
    #[serde(default)]
    pub pinned: usize,
    /// Pinned instances whose selector now resolves to another revision.
    #[serde(default)]
    pub drifted: usize,
    /// Whether any pinned instance drifts (`drifted > 0`).
    #[serde(default)]
    pub drift: bool,
}

/// One instance in a usage page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageInstance {
    /// Instance id.
    pub id: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// The selector as typed.
    pub selector: String,
    /// The revision it is pinned to now (another one for an instance
    /// re-pinned away, listed with `includeStopped`).
    pub hash: RevisionHash,
    /// Whether its selector now resolves to another hash than its pin.
    #[serde(default)]
    pub drift: bool,
    /// What its selector resolves to now (`null` when it no longer resolves).
    #[serde(default)]
    pub resolves_to: Option<RevisionHash>,
    /// `self`.
    pub links: Links,
}

/// `GET /strategies/modules/{selector}/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    /// The selector as given.
    pub selector: String,
    /// The strategy it resolved to.
    pub strategy: String,
    /// The revision it resolved to.
    pub hash: RevisionHash,
    /// The revision's usage.
    pub usage: UsageSummary,
    /// A page of its instances, running ones first (by id).
    pub instances: Vec<UsageInstance>,
    /// Instances before paging.
    pub total: usize,
    /// Index of the first item of the page.
    pub offset: usize,
    /// Page size used.
    pub limit: usize,
}

/// The most strategy names and hashes one request may list together (a
/// refresh's targets; a WebSocket `subscribe` has the same bound). More is a
/// 400: matching work grows with the list.
pub const MAX_TARGETS: usize = 10_000;

/// `POST /strategies/refresh`: which instances to re-resolve (both empty =
/// every instance; at most [`MAX_TARGETS`] entries together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    /// Instances pinned to these hashes (any hash form, prefixes included).
    #[serde(default)]
    pub hashes: Vec<String>,
    /// Instances of these strategies (a name), or following these selectors
    /// exactly as typed (`momentum:prod`).
    #[serde(default)]
    pub strategies: Vec<String>,
}

/// Why a refresh did what it did to an instance (SPEC §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RefreshReason {
    /// The selector resolves to another hash: re-pinned (restarted if running).
    Refreshed,
    /// Unchanged, or an `@hash` pin.
    AlreadyPinned,
    /// The target hash has no instances, or the instance's selector no longer resolves.
    Retired,
    /// The target resolves to nothing.
    NotFound,
    /// The restart on the new hash failed (`error`).
    Failed,
}

impl RefreshReason {
    /// The camelCase name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::Refreshed => "refreshed",
            RefreshReason::AlreadyPinned => "alreadyPinned",
            RefreshReason::Retired => "retired",
            RefreshReason::NotFound => "notFound",
            RefreshReason::Failed => "failed",
        }
    }
}

/// One result of a refresh: an instance, or a target that matched none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResult {
    /// The instance's selector, or the target as given.
    pub selector: String,
    /// The strategy, when known.
    pub strategy: Option<String>,
    /// The hash the instance is pinned to now (or the target's hash).
    pub hash: Option<RevisionHash>,
    /// The hash it was pinned to before (only when re-pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<RevisionHash>,
    /// The instance concerned (empty for a target that matched none).
    pub instances: Vec<String>,
    /// What happened.
    pub reason: RefreshReason,
    /// Why the restart failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to `POST /strategies/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RefreshResponse {
    /// `ok`.
    pub status: String,
    /// One per affected instance, then one per target that matched none;
    /// sorted, so the same refresh gives the same answer.
    pub results: Vec<RefreshResult>,
}

/// `POST /strategies/modules/{selector}/repin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepinRequest {
    /// Where to move the instances: a selector of the same strategy, kept
    /// as each instance's new selector.
    pub to: String,
}

/// One instance's result of a batch restart or re-pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// The instance.
    pub instance_id: String,
    /// Its pin before.
    pub previous_hash: RevisionHash,
    /// Its pin now.
    pub hash: RevisionHash,
    /// `refreshed` (moved / restarted), `alreadyPinned` (nothing to do) or `failed`.
    pub reason: RefreshReason,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer to a batch restart or re-pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResponse {
    /// One per instance pinned to the hash, by id.
    pub results: Vec<BatchResult>,
}
