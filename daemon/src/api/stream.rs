//! `GET /ws`: the WebSocket usage stream (SPEC §3.1). The connection logic
//! is in [`crate::stream::ws`]; this is the upgrade: token, `?since=`, the
//! WebSocket handshake (RFC 6455 §4.2), then one task per connection on the
//! upgraded connection itself.
//!
//! The handshake is done here rather than by warp's `ws()` filter because
//! warp's `WebSocket` only writes whole messages, one at a time, and the
//! stream writes batches of frames formatted once for every subscriber
//! (see [`crate::stream::ws`]).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{ApiError, ApiResult, query, route, token_matches, with_daemon};
use crate::daemon::Daemon;
use crate::stream::ws::{Settings, serve};

/// `GET /ws` query string.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// Resume after this delta `seq` (served from a bounded buffer; a
    /// snapshot flagged `reset` when it is too old).
    since: Option<u64>,
}

/// A valid WebSocket upgrade request: its key and the connection's upgrade.
struct Handshake {
    key: String,
    on_upgrade: OnUpgrade,
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn lists(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The upgrade of a request that asks for a WebSocket (version 13), or
/// `None` for anything else (answered 426).
fn handshake() -> impl Filter<Extract = (Option<Handshake>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("connection")
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-version"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .map(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             on_upgrade: Option<OnUpgrade>| {
                let asks = lists(connection.as_deref(), "upgrade")
                    && lists(upgrade.as_deref(), "websocket")
                    && version.as_deref().map(str::trim) == Some("13");
                match (asks, key, on_upgrade) {
                    (true, Some(key), Some(on_upgrade)) => Some(Handshake { key: key.trim().to_owned(), on_upgrade }),
                    _ => None,
                }
            },
        )
}

pub(super) fn routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    // A plain GET (no upgrade headers) reaches the handler too, to get a
    // clear 426 rather than falling through to "no such route".
    let ws = warp::path!("ws")
        .and(warp::get())
        .and(with_daemon(daemon))
        .and(warp::header::optional::<String>("authorization"))
        .and(query::<StreamQuery>())
        .and(handshake())
        .map(upgrade_handler);
    // The histogram records the handshake; the connection's life is in
    // `strata_ws_subscribers`.
    route(daemon, "GET", "/ws", ws)
}

fn upgrade_handler(
    daemon: Daemon,
    authorization: Option<String>,
    query: Result<StreamQuery, ApiError>,
    handshake: Option<Handshake>,
) -> ApiResult {
    // SPEC §7: the token guards the stream even though the upgrade is a GET.
    if !token_matches(&daemon, authorization.as_deref()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required for this request"));
    }
    let since = query?.since;
    let Some(Handshake { key, on_upgrade }) = handshake else {
        let mut response = ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send an upgrade request (WebSocket version 13)",
        )
        .into_response();
        // RFC 6455 §4.4: name the version the server speaks.
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Ok(response);
    };
    // The connection is handed over once this 101 has been sent.
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                serve(TokioIo::new(upgraded), daemon.usage(), daemon.metrics(), since, &Settings::default()).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = warp::reply().into_response();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is a valid header value");
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}
