//! `GET /ws`: the WebSocket usage stream (SPEC §3.1). The connection logic
//! is in [`crate::stream::ws`]; this is the upgrade: token, `?since=`, then
//! one task per connection.

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::ws::Ws;
use warp::{Filter, Reply};

use super::{ApiError, ApiResult, query, route, token_matches, with_daemon};
use crate::daemon::Daemon;
use crate::stream::ws::{Settings, serve};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    since: Option<u64>,
}

pub(super) fn routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    // A plain GET (no upgrade headers) reaches the handler too, to get a
    // clear 426 rather than falling through to "no such route".
    let upgrade = warp::ws().map(Some).or(warp::any().map(|| None)).unify();
    let ws = warp::path!("ws")
        .and(warp::get())
        .and(with_daemon(daemon))
        .and(warp::header::optional::<String>("authorization"))
        .and(query::<StreamQuery>())
        .and(upgrade)
        .map(upgrade_handler);
    // The histogram records the handshake; the connection's life is in
    // `strata_ws_subscribers`.
    route(daemon, "GET", "/ws", ws)
}

fn upgrade_handler(
    daemon: Daemon,
    authorization: Option<String>,
    query: Result<StreamQuery, ApiError>,
    ws: Option<Ws>,
) -> ApiResult {
    // SPEC §7: the token guards the stream even though the upgrade is a GET.
    if !token_matches(&daemon, authorization.as_deref()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required for this request"));
    }
    let since = query?.since;
    let Some(ws) = ws else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send an upgrade request",
        ));
    };
    Ok(ws
        .on_upgrade(move |socket| async move {
            serve(socket, daemon.usage(), daemon.metrics(), since, &Settings::default()).await;
        })
        .into_response())
}
