//! Instance endpoints: `/strategy/instances…`, `/strategies/refresh` and `/providers`.

use schemars::JsonSchema;
use serde::Deserialize;
use strata_shared::api::{
    BatchResponse, BulkCreateRequest, BulkCreateResponse, BulkCreateResult, CreateInstanceRequest, InstanceDeleted,
    InstanceState, InstancesPage, MAX_BULK_CREATE, MAX_TARGETS, ProviderInfo, ProviderList, RefreshRequest,
    RefreshResponse, RepinRequest, UpdateInstanceRequest,
};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, ApiResult, body, json, json_reply, query, route, segment, with_daemon};
use crate::daemon::Daemon;
use crate::instances::{InstanceError, InstanceFilter};
use crate::registry::ResolveError;

pub(super) fn routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    let d = || with_daemon(daemon);
    let list = warp::path!("strategy" / "instances").and(warp::get()).and(d()).and(query::<ListQuery>()).then(list);
    let create = warp::path!("strategy" / "instances").and(warp::post()).and(d()).and(body(daemon)).then(create);
    let get = warp::path!("strategy" / "instances" / String).and(warp::get()).and(d()).then(get);
    let update =
        warp::path!("strategy" / "instances" / String).and(warp::put()).and(d()).and(body(daemon)).then(update);
    let delete = warp::path!("strategy" / "instances" / String).and(warp::delete()).and(d()).then(delete);
    let action = warp::path!("strategy" / "instances" / String / String).and(warp::post()).and(d()).then(action);
    let logs = warp::path!("strategy" / "instances" / String / "logs").and(warp::get()).and(d()).then(logs);
    let providers = warp::path!("providers").and(warp::get()).and(d()).map(providers);
    let refresh = warp::path!("strategies" / "refresh").and(warp::post()).and(d()).and(body(daemon)).then(refresh);
    let restart_all =
        warp::path!("strategies" / "modules" / String / "restart").and(warp::post()).and(d()).then(restart_all);
    let repin_all = warp::path!("strategies" / "modules" / String / "repin")
        .and(warp::post())
        .and(d())
        .and(body(daemon))
        .then(repin_all);

    route(daemon, "GET", "/strategy/instances", list)
        .or(route(daemon, "POST", "/strategy/instances", create))
        .unify()
        .or(route(daemon, "GET", "/strategy/instances/{id}", get))
        .unify()
        .or(route(daemon, "PUT", "/strategy/instances/{id}", update))
        .unify()
        .or(route(daemon, "DELETE", "/strategy/instances/{id}", delete))
        .unify()
        .or(route(daemon, "GET", "/strategy/instances/{id}/logs", logs))
        .unify()
        .or(route(daemon, "POST", "/strategy/instances/{id}/{action}", action))
        .unify()
        .or(route(daemon, "GET", "/providers", providers))
        .unify()
        .or(route(daemon, "POST", "/strategies/refresh", refresh))
        .unify()
        .or(route(daemon, "POST", "/strategies/modules/{selector}/restart", restart_all))
        .unify()
        .or(route(daemon, "POST", "/strategies/modules/{selector}/repin", repin_all))
        .unify()
        .boxed()
}

impl From<InstanceError> for ApiError {
    fn from(err: InstanceError) -> Self {
        match err {
            InstanceError::BadRequest(m) => ApiError::bad_request(m),
            e @ InstanceError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            InstanceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            e @ InstanceError::StartFailed { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            InstanceError::Resolve(e) => e.into(),
            InstanceError::Store(e) => e.into(),
            e @ InstanceError::Persist(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            e @ InstanceError::StorageFull(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        }
    }
}

fn ensure_ready(daemon: &Daemon) -> Result<(), ApiError> {
    if daemon.is_ready() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is still starting; see /healthz"))
    }
}

/// `GET /strategy/instances` query string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only instances of this strategy (a strategy name; a malformed one is a 400).
    #[schemars(pattern(super::openapi::NAME_PATTERN))]
    strategy: Option<String>,
    /// Only instances pinned to this hash: `sha256:<hex>`, bare hex, or a
    /// prefix of at least 8 hex digits.
    #[schemars(pattern(super::openapi::HASH_PATTERN))]
    hash: Option<String>,
    /// Only instances in this state.
    state: Option<InstanceState>,
    /// Only instances with (`true`) or without (`false`) drift.
    drift: Option<bool>,
    /// Page size (default 100, capped at 1000).
    limit: Option<usize>,
    /// Items to skip.
    #[serde(default)]
    offset: usize,
}

async fn list(daemon: Daemon, query: Result<ListQuery, ApiError>) -> ApiResult {
    ensure_ready(&daemon)?;
    let query = query?;
    // A malformed name is a 400 (SPEC §3.2), not a filter that matches nothing.
    if let Some(name) = &query.strategy {
        super::modules::validate_name(name)?;
    }
    // Like `/strategies/modules?hash=`: a hash or prefix only; an unknown one
    // matches nothing.
    let hash = match &query.hash {
        Some(text) => {
            let selector = super::hash_filter(text).map_err(ApiError::from)?;
            match daemon.registry().resolve_selector(&selector) {
                Ok(resolved) => Some(Some(resolved.hash)),
                Err(e @ (ResolveError::Invalid(_) | ResolveError::Ambiguous { .. })) => return Err(e.into()),
                Err(_) => Some(None),
            }
        }
        None => None,
    };
    if hash == Some(None) {
        let limit = super::modules::page_limit(query.limit);
        let empty = InstancesPage { instances: Vec::new(), total: 0, offset: query.offset, limit };
        return Ok(json_reply(StatusCode::OK, &empty));
    }
    let hash = hash.flatten();
    let filter = InstanceFilter { strategy: query.strategy, hash, state: query.state, drift: query.drift };
    let limit = super::modules::page_limit(query.limit);
    let offset = query.offset;
    let (instances, total) = daemon.blocking(move |d| d.instances().list(&filter, offset, limit)).await?;
    Ok(json_reply(StatusCode::OK, &InstancesPage { instances, total, offset, limit }))
}

/// `POST /strategy/instances`: one instance (201 with it), or
/// `{"instances": […]}` (201 with one result per item, each with the status
/// a single create would have answered).
async fn create(daemon: Daemon, body: bytes::Bytes) -> ApiResult {
    ensure_ready(&daemon)?;
    let bulk = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        .is_ok_and(|object| object.contains_key("instances"));
    if !bulk {
        let request: CreateInstanceRequest = json(&body)?;
        let view = daemon.blocking(move |d| d.instances().create(request)).await??;
        return Ok(json_reply(StatusCode::CREATED, &view));
    }
    let request: BulkCreateRequest = json(&body)?;
    if request.instances.len() > MAX_BULK_CREATE {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BULK_CREATE} instances per request ({} given)",
            request.instances.len()
        )));
    }
    let ids: Vec<String> = request.instances.iter().map(|r| r.id.clone()).collect();
    let outcomes = daemon.blocking(move |d| d.instances().create_many(request.instances)).await?;
    let mut created = 0;
    let results = ids
        .into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            Ok(view) => {
                created += 1;
                BulkCreateResult { id, status: StatusCode::CREATED.as_u16(), instance: Some(view), error: None }
            }
            Err(error) => {
                // A failed start leaves the instance there, `failed`.
                let instance = matches!(error, InstanceError::StartFailed { .. })
                    .then(|| daemon.instances().view(&id).ok())
                    .flatten();
                created += usize::from(instance.is_some());
                let message = error.to_string();
                let status = ApiError::from(error).status().as_u16();
                BulkCreateResult { id, status, instance, error: Some(message) }
            }
        })
        .collect();
    Ok(json_reply(StatusCode::CREATED, &BulkCreateResponse { created, results }))
}

async fn get(id: String, daemon: Daemon) -> ApiResult {
    ensure_ready(&daemon)?;
    let id = segment(&id)?;
    let view = daemon.blocking(move |d| d.instances().view(&id)).await??;
    Ok(json_reply(StatusCode::OK, &view))
}

async fn update(id: String, daemon: Daemon, body: bytes::Bytes) -> ApiResult {
    ensure_ready(&daemon)?;
    let id = segment(&id)?;
    let request: UpdateInstanceRequest = json(&body)?;
    let view = daemon.blocking(move |d| d.instances().update(&id, request)).await??;
    Ok(json_reply(StatusCode::OK, &view))
}

async fn delete(id: String, daemon: Daemon) -> ApiResult {
    ensure_ready(&daemon)?;
    let id = segment(&id)?;
    let deleted = InstanceDeleted { id: id.clone(), deleted: true };
    daemon.blocking(move |d| d.instances().delete(&id)).await??;
    Ok(json_reply(StatusCode::OK, &deleted))
}

async fn action(id: String, action: String, daemon: Daemon) -> ApiResult {
    ensure_ready(&daemon)?;
    let id = segment(&id)?;
    let view = match action.as_str() {
        "start" => daemon.blocking(move |d| d.instances().start(&id)).await??,
        "stop" => daemon.blocking(move |d| d.instances().stop(&id)).await??,
        "restart" => daemon.blocking(move |d| d.instances().restart(&id)).await??,
        other => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no such instance action \"{other}\""))),
    };
    Ok(json_reply(StatusCode::OK, &view))
}

async fn logs(id: String, daemon: Daemon) -> ApiResult {
    ensure_ready(&daemon)?;
    let id = segment(&id)?;
    let lines = daemon.blocking(move |d| d.instances().logs(&id)).await??;
    Ok(json_reply(StatusCode::OK, &crate::runtime::logs::LogLines { lines }))
}

/// `POST /strategies/refresh`: re-read the registry, then re-resolve the
/// targeted instances (all of them for an empty body).
async fn refresh(daemon: Daemon, body: bytes::Bytes) -> ApiResult {
    ensure_ready(&daemon)?;
    let request: RefreshRequest =
        if body.iter().all(u8::is_ascii_whitespace) { RefreshRequest::default() } else { json(&body)? };
    let targets = request.hashes.len() + request.strategies.len();
    if targets > MAX_TARGETS {
        return Err(ApiError::bad_request(format!(
            "a refresh lists at most {MAX_TARGETS} strategies and hashes together; this one has {targets}"
        )));
    }
    let results = daemon
        .blocking(move |d| -> Result<_, ApiError> {
            let reread = match d.instances().refresh_scope(&request) {
                Some(strategies) => d.registry().reload_strategies(&strategies),
                None => d.registry().load(),
            };
            match reread {
                Ok(_) => {}
                Err(e @ crate::registry::RegistryError::Unavailable(_)) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "registry reload before refresh reported a problem"),
            }
            Ok(d.instances().refresh(&request)?)
        })
        .await??;
    Ok(json_reply(StatusCode::OK, &RefreshResponse { status: "ok".into(), results }))
}

/// `POST /strategies/modules/{selector}/restart`: restart every running
/// instance pinned to the hash the selector resolves to.
async fn restart_all(selector: String, daemon: Daemon) -> ApiResult {
    ensure_ready(&daemon)?;
    let selector = segment(&selector)?;
    let hash = daemon.registry().resolve(&selector)?.hash;
    let results = daemon.blocking(move |d| d.instances().restart_all(hash)).await?;
    Ok(json_reply(StatusCode::OK, &BatchResponse { results }))
}

/// `POST /strategies/modules/{selector}/repin {to}`: move every instance
/// pinned to the selector's hash onto what `to` resolves to (same strategy).
async fn repin_all(selector: String, daemon: Daemon, body: bytes::Bytes) -> ApiResult {
    ensure_ready(&daemon)?;
    let selector = segment(&selector)?;
    let request: RepinRequest = json(&body)?;
    let from = daemon.registry().resolve(&selector)?;
    let to = daemon.registry().resolve(&request.to)?;
    if to.strategy != from.strategy {
        return Err(ApiError::bad_request(format!(
            "{} is a revision of \"{}\", not of \"{}\"",
            request.to, to.strategy, from.strategy
        )));
    }
    let results = daemon.blocking(move |d| d.instances().repin_all(from.hash, &request.to, to.hash)).await?;
    Ok(json_reply(StatusCode::OK, &BatchResponse { results }))
}

fn providers(daemon: Daemon) -> ApiResult {
    let providers = daemon
        .instances()
        .providers()
        .iter()
        .map(|p| ProviderInfo {
            name: p.name().to_owned(),
            kind: p.kind().to_owned(),
            symbols: p.symbols().iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &ProviderList { providers }))
}
