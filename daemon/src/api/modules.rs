//! Registry endpoints: `/strategies`, `/strategies/modules…`,
//! `/strategies/registry`.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use strata_shared::RevisionHash;
use strata_shared::api::{
    DEFAULT_LIMIT, DeleteResponse, LoadErrorInfo, MAX_LIMIT, ModuleSummary, ModulesPage, RegistryExport, RevisionInfo,
    RevisionSummary, RevisionUsage, RunningInfo, StrategyInfo, StrategyList, TagMoveRequest, TagResponse,
    UploadRequest, UploadResponse, UsageEntry, UsageInstance, UsageResponse, UsageSummary,
};
use strata_shared::names;
use strata_shared::selector::Selector;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{ApiError, ApiResult, body, json, json_reply, query, route, segment, with_daemon};
use crate::daemon::Daemon;
use crate::registry::{RegistryError, RegistryState, Revision, Strategy, Upload};
use crate::usage::UsageIndex;

pub(super) fn routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    let d = || with_daemon(daemon);
    let list_strategies = warp::path!("strategies").and(warp::get()).and(d()).map(list_strategies);
    let export = warp::path!("strategies" / "registry")
        .and(warp::get())
        .and(d())
        .and(query::<ExportQuery>())
        .then(export_registry);
    let list_modules =
        warp::path!("strategies" / "modules").and(warp::get()).and(d()).and(query::<ModulesQuery>()).map(list_modules);
    let create = warp::path!("strategies" / "modules")
        .and(warp::post())
        .and(d())
        .and(body(daemon))
        .then(|daemon: Daemon, body: bytes::Bytes| async move { upload(daemon, None, body).await });
    let upload_to = warp::path!("strategies" / "modules" / String).and(warp::put())
        .and(d())
        .and(body(daemon))
        .then(|selector: String, daemon: Daemon, body: bytes::Bytes| async move { upload(daemon, Some(selector), body).await });
    let get_module = warp::path!("strategies" / "modules" / String).and(warp::get()).and(d()).map(get_module);
    let source = warp::path!("strategies" / "modules" / String / "source").and(warp::get()).and(d()).then(get_source);
    let usage = warp::path!("strategies" / "modules" / String / "usage")
        .and(warp::get())
        .and(d())
        .and(query::<UsageQuery>())
        .then(get_usage);
    let delete = warp::path!("strategies" / "modules" / String).and(warp::delete()).and(d()).then(delete_module);
    let move_tag = warp::path!("strategies" / "modules" / String / "tags" / String)
        .and(warp::put())
        .and(d())
        .and(body(daemon))
        .then(move_tag);
    let delete_tag = warp::path!("strategies" / "modules" / String / "tags" / String)
        .and(warp::delete())
        .and(d())
        .and(query::<DeleteTagQuery>())
        .then(delete_tag);
    let get_strategy = warp::path!("strategies" / String).and(warp::get()).and(d()).map(get_strategy);

    route(daemon, "GET", "/strategies", list_strategies)
        .or(route(daemon, "GET", "/strategies/registry", export))
        .unify()
        .or(route(daemon, "GET", "/strategies/modules", list_modules))
        .unify()
        .or(route(daemon, "POST", "/strategies/modules", create))
        .unify()
        .or(route(daemon, "PUT", "/strategies/modules/{selector}", upload_to))
        .unify()
        .or(route(daemon, "GET", "/strategies/modules/{selector}", get_module))
        .unify()
        .or(route(daemon, "GET", "/strategies/modules/{selector}/source", source))
        .unify()
        .or(route(daemon, "GET", "/strategies/modules/{selector}/usage", usage))
        .unify()
        .or(route(daemon, "DELETE", "/strategies/modules/{selector}", delete))
        .unify()
        .or(route(daemon, "PUT", "/strategies/modules/{name}/tags/{tag}", move_tag))
        .unify()
        .or(route(daemon, "DELETE", "/strategies/modules/{name}/tags/{tag}", delete_tag))
        .unify()
        .or(route(daemon, "GET", "/strategies/{name}", get_strategy))
        .unify()
        .boxed()
}

/// Answers 503 while the first load runs: an empty registry would be a lie.
fn ensure_loaded(daemon: &Daemon) -> Result<(), ApiError> {
    if daemon.registry().is_loaded() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the registry is still loading; see /healthz"))
    }
}

pub(super) fn validate_name(name: &str) -> Result<(), ApiError> {
    names::validate_strategy_name(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Ids listed per revision in a module summary's `running` block; the full
/// list is paged by the usage endpoint.
const RUNNING_IDS_IN_SUMMARY: usize = 100;

/// SPEC §2.1: no running instance, no tag, grace period over (the usage
/// index knows the tags too).
fn is_retired(usage: &UsageIndex, revision: &Revision) -> bool {
    usage.summary(&revision.strategy, revision.hash).retired
}

fn revision_info(usage: &UsageIndex, strategy: &Strategy, revision: &Revision) -> RevisionInfo {
    let tags = strategy.tags_of(&revision.hash);
    RevisionInfo {
        hash: revision.hash,
        tag: revision.tag.clone(),
        retired: is_retired(usage, revision),
        tags,
        path: revision.path.clone(),
        size: revision.size,
    }
}

fn tag_aliases(strategy: &Strategy) -> BTreeMap<String, RevisionHash> {
    strategy.tags.iter().map(|(tag, hash)| (tag.clone(), *hash)).collect()
}

/// A module's summary. `only` keeps one revision; `running_only` keeps the
/// revisions with running instances (what `runningOnly` asks to see).
fn module_summary(
    usage: &UsageIndex,
    name: &Arc<str>,
    strategy: &Strategy,
    only: Option<RevisionHash>,
    running_only: bool,
) -> ModuleSummary {
    let mut in_use = usage.running_revisions(name, only, RUNNING_IDS_IN_SUMMARY);
    // Oldest revision first; a revision the registry no longer has is not listed.
    in_use.retain(|(hash, _, _)| strategy.revisions.contains_key(hash));
    in_use.sort_by_key(|(hash, _, _)| strategy.revisions.get_index_of(hash));
    let running: Vec<RunningInfo> = in_use
        .into_iter()
        .map(|(hash, summary, instances)| RunningInfo {
            hash,
            instances,
            count: summary.count,
            first_seen: summary.first_seen,
            last_seen: summary.last_seen,
        })
        .collect();
    let revisions = strategy
        .revisions
        .values()
        .filter(|rev| only.is_none_or(|hash| rev.hash == hash))
        .filter(|rev| !running_only || running.iter().any(|r| r.hash == rev.hash))
        .map(|rev| revision_info(usage, strategy, rev))
        .collect();
    let tag_aliases = if running_only {
        // The live view: the tags on the revisions shown.
        strategy
            .tags
            .iter()
            .filter(|(_, hash)| running.iter().any(|r| r.hash == **hash))
            .map(|(tag, hash)| (tag.clone(), *hash))
            .collect()
    } else {
        tag_aliases(strategy)
    };
    ModuleSummary {
        name: name.to_string(),
        tag_aliases,
        revisions,
        metadata: strategy.latest().map(|rev| (*rev.metadata).clone()),
        running,
        links: BTreeMap::from([("self".to_owned(), format!("/strategies/modules/{name}"))]),
    }
}

fn strategy_info(name: &str, strategy: &Strategy) -> Option<StrategyInfo> {
    let latest = strategy.latest()?;
    Some(StrategyInfo {
        name: name.to_owned(),
        hash: latest.hash,
        tag: latest.tag.clone(),
        tag_aliases: tag_aliases(strategy),
        revisions: strategy.revisions.len(),
        metadata: (*latest.metadata).clone(),
    })
}

fn list_strategies(daemon: Daemon) -> ApiResult {
    ensure_loaded(&daemon)?;
    let strategies = daemon
        .registry()
        .read(|state| state.strategies().iter().filter_map(|(name, strategy)| strategy_info(name, strategy)).collect());
    Ok(json_reply(StatusCode::OK, &StrategyList { strategies }))
}

fn get_strategy(name: String, daemon: Daemon) -> ApiResult {
    ensure_loaded(&daemon)?;
    let name = segment(&name)?;
    validate_name(&name)?;
    let info = daemon.registry().read(|state| state.strategy(&name).map(|s| strategy_info(&name, s)));
    let info = match info {
        Some(Some(info)) => info,
        Some(None) => {
            let message = format!("strategy \"{name}\" has no loaded revision tagged latest; see /strategies/registry");
            return Err(ApiError::new(StatusCode::NOT_FOUND, message));
        }
        None => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown strategy \"{name}\""))),
    };
    Ok(json_reply(StatusCode::OK, &info))
}

/// `GET /strategies/modules` query string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ModulesQuery {
    /// Only this strategy (a strategy name; a malformed one is a 400).
    #[schemars(pattern(super::openapi::NAME_PATTERN))]
    strategy: Option<String>,
    /// Only the revision with this hash: `sha256:<hex>`, bare hex, or a
    /// prefix of at least 8 hex digits.
    #[schemars(pattern(super::openapi::HASH_PATTERN))]
    hash: Option<String>,
    /// Only revisions with running instances.
    #[serde(default)]
    running_only: bool,
    /// Page size (default 100, capped at 1000).
    limit: Option<usize>,
    /// Items to skip.
    #[serde(default)]
    offset: usize,
}

/// Clamps a requested page size into `1..=MAX_LIMIT`.
pub(super) fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

fn list_modules(daemon: Daemon, query: Result<ModulesQuery, ApiError>) -> ApiResult {
    ensure_loaded(&daemon)?;
    let query = query?;
    let registry = daemon.registry();
    let limit = page_limit(query.limit);
    if let Some(name) = &query.strategy {
        validate_name(name)?;
    }
    let by_hash = match &query.hash {
        Some(text) => match super::hash_filter(text).and_then(|selector| registry.resolve_selector(&selector)) {
            Ok(resolved) => Some(Some(resolved)),
            Err(crate::registry::ResolveError::Invalid(m)) => return Err(ApiError::bad_request(m)),
            Err(e @ crate::registry::ResolveError::Ambiguous { .. }) => return Err(e.into()),
            Err(_) => Some(None),
        },
        None => None,
    };
    let usage = daemon.usage();
    let page = registry.read(|state| {
        let single = |name: &str, only: Option<RevisionHash>| -> Vec<ModuleSummary> {
            let Some((name, strategy)) = state.strategies().get_key_value(name) else { return Vec::new() };
            let summary = module_summary(usage, name, strategy, only, query.running_only);
            if query.running_only && summary.running.is_empty() {
                return Vec::new();
            }
            vec![summary]
        };
        let modules = match (&by_hash, &query.strategy) {
            (Some(None), _) => Vec::new(),
            (Some(Some(resolved)), Some(name)) if **name != *resolved.strategy => Vec::new(),
            (Some(Some(resolved)), _) => single(&resolved.strategy, Some(resolved.hash)),
            (None, Some(name)) => single(name, None),
            (None, None) if query.running_only => return page_running(usage, state, query.offset, limit),
            (None, None) => return page_all(usage, state, query.offset, limit),
        };
        let total = modules.len();
        let modules = modules.into_iter().skip(query.offset).take(limit).collect();
        ModulesPage { modules, total, offset: query.offset, limit }
    });
    Ok(json_reply(StatusCode::OK, &page))
}

fn page_all(usage: &UsageIndex, state: &RegistryState, offset: usize, limit: usize) -> ModulesPage {
    let strategies = state.strategies();
    let modules = strategies
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(name, strategy)| module_summary(usage, name, strategy, None, false))
        .collect();
    ModulesPage { modules, total: strategies.len(), offset, limit }
}

/// `runningOnly`: paged from the usage index's running-strategies set, never
/// by scanning the registry.
fn page_running(usage: &UsageIndex, state: &RegistryState, offset: usize, limit: usize) -> ModulesPage {
    let (names, total) = usage.running_strategies(offset, limit);
    let modules = names
        .iter()
        .filter_map(|name| state.strategy(name).map(|strategy| module_summary(usage, name, strategy, None, true)))
        .collect();
    ModulesPage { modules, total, offset, limit }
}

fn get_module(selector: String, daemon: Daemon) -> ApiResult {
    ensure_loaded(&daemon)?;
    let selector = segment(&selector)?;
    let registry = daemon.registry();
    let revision = registry.revision(&selector)?;
    let summary = registry.read(|state| {
        let strategy = state.strategy(&revision.strategy)?;
        let name = &revision.strategy;
        let pinned = format!("{name}@{}", revision.hash);
        Some(RevisionSummary {
            selector: selector.clone(),
            strategy: name.to_string(),
            revision: revision_info(daemon.usage(), strategy, &revision),
            metadata: (*revision.metadata).clone(),
            links: BTreeMap::from([
                ("self".to_owned(), format!("/strategies/modules/{pinned}")),
                ("source".to_owned(), format!("/strategies/modules/{pinned}/source")),
                ("strategy".to_owned(), format!("/strategies/{name}")),
            ]),
        })
    });
    let summary =
        summary.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{selector} was just deleted")))?;
    Ok(json_reply(StatusCode::OK, &summary))
}

async fn get_source(selector: String, daemon: Daemon) -> ApiResult {
    ensure_loaded(&daemon)?;
    let selector = segment(&selector)?;
    let revision = daemon.registry().revision(&selector)?;
    let bytes = daemon.blocking(move |d| d.registry().source(&revision)).await??;
    Ok(warp::reply::with_header(bytes, "content-type", "application/javascript; charset=utf-8").into_response())
}

/// `GET /strategies/modules/{selector}/usage` query string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// Page size (default 100, capped at 1000).
    limit: Option<usize>,
    /// Items to skip.
    #[serde(default)]
    offset: usize,
    /// List the instances that ran the revision and are stopped too.
    #[serde(default)]
    include_stopped: bool,
}

/// `GET /strategies/modules/{selector}/usage`: O(1) summary, O(limit) page.
async fn get_usage(selector: String, daemon: Daemon, query: Result<UsageQuery, ApiError>) -> ApiResult {
    ensure_loaded(&daemon)?;
    let query = query?;
    let selector = segment(&selector)?;
    let revision = daemon.registry().revision(&selector)?;
    let limit = page_limit(query.limit);
    let usage = daemon.usage();
    let summary = usage.summary(&revision.strategy, revision.hash);
    let drifted = daemon.instances().drifted_on(&revision.strategy, revision.hash);
    let (ids, total) = usage.page(&revision.strategy, revision.hash, query.include_stopped, query.offset, limit);
    let instances = daemon
        .blocking(move |d| {
            ids.iter()
                .filter_map(|id| d.instances().view(id).ok())
                .map(|view| UsageInstance {
                    links: BTreeMap::from([("self".to_owned(), format!("/strategy/instances/{}", view.id))]),
                    id: view.id,
                    state: view.state,
                    selector: view.strategy.selector,
                    hash: view.strategy.hash,
                    drift: view.drift,
                    resolves_to: view.resolves_to,
                })
                .collect()
        })
        .await?;
    let response = UsageResponse {
        selector,
        strategy: revision.strategy.to_string(),
        hash: revision.hash,
        usage: UsageSummary {
            count: summary.count,
            stopped: summary.tracked - summary.count,
            first_seen: summary.first_seen,
            last_seen: summary.last_seen,
            retired: summary.retired,
            pinned: summary.pinned,
            drifted,
            drift: drifted > 0,
        },
        instances,
        total,
        offset: query.offset,
        limit,
    };
    Ok(json_reply(StatusCode::OK, &response))
}

async fn upload(daemon: Daemon, selector: Option<String>, body: bytes::Bytes) -> ApiResult {
    ensure_loaded(&daemon)?;
    let request: UploadRequest = json(&body)?;
    let (expected_strategy, path_tag) = match selector {
        None => (None, None),
        Some(raw) => match Selector::parse(&segment(&raw)?).map_err(|e| ApiError::bad_request(e.to_string()))? {
            Selector::Name { strategy } => (Some(strategy), None),
            Selector::Tag { strategy, tag } => (Some(strategy), Some(tag)),
            other => {
                return Err(ApiError::bad_request(format!(
                    "upload to a strategy name or name:tag, not to {other} (a revision is named by its bytes)"
                )));
            }
        },
    };
    if let (Some(body_tag), Some(path_tag)) = (&request.tag, &path_tag)
        && body_tag != path_tag
    {
        return Err(ApiError::bad_request(format!(
            "tag \"{body_tag}\" in the body contradicts \"{path_tag}\" in the path"
        )));
    }
    let upload = Upload {
        source: request.source,
        tag: request.tag.or(path_tag),
        aliases: request.aliases,
        promote_latest: request.promote_latest.unwrap_or(true),
        expected_strategy,
    };
    let uploaded = daemon.blocking(move |d| d.registry().upload(upload)).await??;
    // SPEC §3.2: a new revision answers 201; identical bytes create nothing
    // and answer 200, with `created` saying which.
    let status = if uploaded.created { StatusCode::CREATED } else { StatusCode::OK };
    let response =
        UploadResponse { name: uploaded.strategy, hash: uploaded.hash, tag: uploaded.tag, created: uploaded.created };
    Ok(json_reply(status, &response))
}

async fn delete_module(selector: String, daemon: Daemon) -> ApiResult {
    ensure_loaded(&daemon)?;
    let selector = segment(&selector)?;
    let deleted = daemon
        .blocking(move |d| d.registry().delete(&selector, |strategy, hashes| refuse_if_used(d, strategy, hashes)))
        .await??;
    // The usage index heard of the deletion from the registry; persist it.
    daemon.blocking(|d| d.instances().flush_usage()).await?;
    let response = DeleteResponse {
        strategy: deleted.strategy,
        deleted: deleted.hashes,
        strategy_deleted: deleted.strategy_deleted,
    };
    Ok(json_reply(StatusCode::OK, &response))
}

/// A revision any instance (running or stopped) is pinned to cannot be deleted.
fn refuse_if_used(daemon: &Daemon, strategy: &str, hashes: &[RevisionHash]) -> Result<(), RegistryError> {
    let referencing = daemon.instances().referencing(hashes);
    if referencing.is_empty() {
        return Ok(());
    }
    let usage: Vec<RevisionUsage> = hashes
        .iter()
        .filter_map(|hash| {
            let instances: Vec<String> =
                referencing.iter().filter(|(_, h)| h == hash).map(|(id, _)| id.clone()).collect();
            (!instances.is_empty()).then_some(RevisionUsage { hash: *hash, count: instances.len(), instances })
        })
        .collect();
    Err(RegistryError::InUse {
        message: format!("{} instance(s) of \"{strategy}\" are pinned to what would be deleted", referencing.len()),
        usage,
    })
}

async fn move_tag(name: String, tag: String, daemon: Daemon, body: bytes::Bytes) -> ApiResult {
    ensure_loaded(&daemon)?;
    let (name, tag) = (segment(&name)?, segment(&tag)?);
    let request: TagMoveRequest = json(&body)?;
    // SPEC §3.2: a tag move refreshes the tag's followers unless told not to.
    let follow = request.refresh.unwrap_or(true);
    let followers = if tag == strata_shared::names::LATEST_TAG { name.clone() } else { format!("{name}:{tag}") };
    let (changed, refreshed) = daemon
        .blocking(move |d| -> Result<_, ApiError> {
            let changed = d.registry().move_tag(&name, &tag, &request.hash)?;
            let refreshed = if follow { Some(d.instances().refresh_followers(&followers)?) } else { None };
            Ok((changed, refreshed))
        })
        .await??;
    Ok(json_reply(StatusCode::OK, &TagResponse { refresh: refreshed, ..tag_response(changed) }))
}

fn tag_response(changed: crate::registry::TagChanged) -> TagResponse {
    TagResponse {
        strategy: changed.strategy,
        tag: changed.tag,
        hash: changed.hash,
        previous_hash: changed.previous_hash,
        refresh: None,
    }
}

/// `DELETE /strategies/modules/{name}/tags/{tag}` query string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct DeleteTagQuery {
    /// Delete the tag even when no other tag points to its revision.
    #[serde(default)]
    allow_orphan: bool,
}

async fn delete_tag(name: String, tag: String, daemon: Daemon, query: Result<DeleteTagQuery, ApiError>) -> ApiResult {
    ensure_loaded(&daemon)?;
    let query = query?;
    let (name, tag) = (segment(&name)?, segment(&tag)?);
    let changed = daemon.blocking(move |d| d.registry().delete_tag(&name, &tag, query.allow_orphan)).await??;
    Ok(json_reply(StatusCode::OK, &tag_response(changed)))
}

/// `GET /strategies/registry` query string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    /// `json` (the default) or `csv`.
    #[schemars(extend("enum" = ["json", "csv"]))]
    format: Option<String>,
}

/// Load errors in API form.
pub(super) fn load_errors(daemon: &Daemon) -> Vec<LoadErrorInfo> {
    daemon.registry().read(|state| {
        state
            .errors()
            .map(|e| LoadErrorInfo { strategy: e.strategy.clone(), hash: e.hash.clone(), message: e.message.clone() })
            .collect()
    })
}

fn usage_entries(usage: &UsageIndex, state: &RegistryState) -> Vec<UsageEntry> {
    state
        .strategies()
        .iter()
        .flat_map(|(name, strategy)| {
            strategy.revisions.values().map(move |rev| {
                let summary = usage.summary(name, rev.hash);
                UsageEntry {
                    strategy: name.to_string(),
                    hash: rev.hash,
                    count: summary.count,
                    instances: usage.running_ids(name, rev.hash),
                    first_seen: summary.first_seen,
                    last_seen: summary.last_seen,
                    retired: is_retired(usage, rev),
                    drift: false,
                }
            })
        })
        .collect()
}

async fn export_registry(daemon: Daemon, query: Result<ExportQuery, ApiError>) -> ApiResult {
    ensure_loaded(&daemon)?;
    let query = query?;
    match query.format.as_deref() {
        None | Some("json") => {
            let registry = daemon.blocking(|d| d.registry().document()).await?;
            let mut usage = daemon.registry().read(|state| usage_entries(daemon.usage(), state));
            for entry in usage.iter_mut() {
                entry.drift = daemon.instances().drifted_on(&Arc::from(entry.strategy.as_str()), entry.hash) > 0;
            }
            let export = RegistryExport { registry, usage, errors: load_errors(&daemon) };
            Ok(json_reply(StatusCode::OK, &export))
        }
        Some("csv") => {
            let csv = daemon.registry().read(|state| {
                let mut out = String::from("strategy,hash,tags,count,firstSeen,lastSeen,retired\n");
                for entry in usage_entries(daemon.usage(), state) {
                    let tags =
                        state.strategy(&entry.strategy).map(|s| s.tags_of(&entry.hash).join(";")).unwrap_or_default();
                    let time = |t: Option<time::OffsetDateTime>| {
                        t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                            .unwrap_or_default()
                    };
                    out.push_str(&format!(
                        "{},{},{},{},{},{},{}\n",
                        entry.strategy,
                        entry.hash,
                        tags,
                        entry.count,
                        time(entry.first_seen),
                        time(entry.last_seen),
                        entry.retired
                    ));
                }
                out
            });
            Ok(warp::reply::with_header(csv, "content-type", "text/csv; charset=utf-8").into_response())
        }
        Some(other) => Err(ApiError::bad_request(format!("unknown format \"{other}\"; use json or csv"))),
    }
}
