//! `/healthz` and `/metrics`.

use std::sync::atomic::Ordering;

use strata_shared::api::{Health, LoadErrorInfo, LoadProgressInfo};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{ApiResult, json_reply, route, with_daemon};
use crate::daemon::Daemon;

pub(super) fn routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz").and(warp::get()).and(with_daemon(daemon)).then(healthz);
    let metrics = warp::path!("metrics").and(warp::get()).and(with_daemon(daemon)).map(metrics);
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| -> ApiResult { Ok(json_reply(StatusCode::OK, &super::openapi::document())) });
    route(daemon, "GET", "/healthz", healthz)
        .or(route(daemon, "GET", "/metrics", metrics))
        .unify()
        .or(route(daemon, "GET", "/openapi.json", openapi))
        .unify()
        .boxed()
}

async fn healthz(daemon: Daemon) -> ApiResult {
    let store = daemon.blocking(|d| d.store().ping()).await?;
    if let Err(e) = store {
        let health = Health { status: "error".into(), errors: vec![], progress: None, error: Some(e.to_string()) };
        return Ok(json_reply(StatusCode::SERVICE_UNAVAILABLE, &health));
    }
    let registry = daemon.registry();
    let progress = registry.progress();
    let progress = LoadProgressInfo {
        total: progress.total.load(Ordering::Relaxed),
        done: progress.done.load(Ordering::Relaxed),
        compiled: progress.compiled.load(Ordering::Relaxed),
    };
    if !daemon.is_ready() {
        let health = Health { status: "loading".into(), errors: vec![], progress: Some(progress), error: None };
        return Ok(json_reply(StatusCode::OK, &health));
    }
    let mut errors = super::modules::load_errors(&daemon);
    let damage = registry.document_error().into_iter().chain(daemon.store().write_health().failures());
    let damage: Vec<_> = damage.map(|message| LoadErrorInfo { strategy: String::new(), hash: None, message }).collect();
    errors.splice(0..0, damage);
    let status = if errors.is_empty() { "ok" } else { "degraded" };
    Ok(json_reply(StatusCode::OK, &Health { status: status.into(), errors, progress: None, error: None }))
}

fn metrics(daemon: Daemon) -> ApiResult {
    // Drift and retirement depend on the clock and on resolution, so they
    // are counted when scraped: one resolution per distinct (revision,
    // selector), one pass over the usage entries.
    let metrics = daemon.metrics();
    metrics.instances_drifting.reset();
    for (strategy, count) in daemon.instances().drift_by_strategy() {
        metrics.instances_drifting.with_label_values(&[&*strategy]).set(count as i64);
    }
    metrics.revisions_retired.reset();
    for (strategy, count) in daemon.usage().retired_by_strategy(time::OffsetDateTime::now_utc()) {
        metrics.revisions_retired.with_label_values(&[&*strategy]).set(count as i64);
    }
    let body = metrics.render();
    Ok(warp::reply::with_header(body, "content-type", "text/plain; version=0.0.4; charset=utf-8").into_response())
}
