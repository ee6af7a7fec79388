//! The HTTP API (SPEC §3): routes, request decoding and the error envelope.
//! Handlers live beside their domain: `modules` for the registry,
//! `health` for `/healthz` and `/metrics`, `stream` for the `/ws` upgrade.

mod error;
mod health;
mod instances;
mod modules;
pub mod openapi;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use warp::filters::BoxedFilter;
use warp::filters::path::FullPath;
use warp::http::Method;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::daemon::Daemon;
pub use error::ApiError;
use error::PayloadTooLarge;
use strata_shared::Selector;

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(daemon: Daemon, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    if let Err(error) = disable_nagle(&listener) {
        tracing::warn!(%error, "cannot set TCP_NODELAY: small WebSocket writes may wait for ACKs");
    }
    warp::serve(routes(daemon)).incoming(listener).graceful(shutdown).run().await;
}

/// Sets `TCP_NODELAY` on the listening socket; connections accepted from it
/// inherit it (warp offers no hook on each accepted connection).
///
/// Why: the WebSocket stream writes small messages. With Nagle's algorithm
/// a small write can wait for the ACK of the previous one, which the peer
/// may delay by up to 40 ms on Linux. The batches measured in
/// docs/performance.md were large enough not to show a difference; a lone
/// delta to an idle console is the case this protects.
fn disable_nagle(listener: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

/// Every route, behind the bearer-token check, with the error envelope for
/// anything that matches none.
pub fn routes(daemon: Daemon) -> BoxedFilter<(Response,)> {
    let served = authorized(&daemon)
        .and(all_routes(&daemon))
        .map(Ok::<Response, Rejection>)
        .or_else(|rejection| async move { Ok::<_, Infallible>((Err(rejection),)) });
    // The path and method are taken before routing so that a 405 can say
    // which methods the path does allow.
    warp::path::full()
        .and(warp::method())
        .and(served)
        .map(|path: FullPath, method: Method, served: Result<Response, Rejection>| match served {
            Ok(response) => response,
            Err(rejection) => error::recover(&rejection, path.as_str(), &method),
        })
        .boxed()
}

fn all_routes(daemon: &Daemon) -> BoxedFilter<(Response,)> {
    let daemon = daemon.clone();
    health::routes(&daemon)
        .or(modules::routes(&daemon))
        .unify()
        .or(instances::routes(&daemon))
        .unify()
        .or(stream::routes(&daemon))
        .unify()
        .boxed()
}

/// SPEC §7: with a token configured, every mutating request (anything but
/// GET and HEAD) needs `Authorization: Bearer <token>`, compared in
/// constant time; otherwise 401. `GET /ws` checks the token itself (see
/// [`token_matches`]).
fn authorized(daemon: &Daemon) -> impl Filter<Extract = (), Error = Rejection> + Clone + use<> {
    let daemon = daemon.clone();
    warp::method()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |method: warp::http::Method, header: Option<String>| {
            let allowed = method == warp::http::Method::GET
                || method == warp::http::Method::HEAD
                || token_matches(&daemon, header.as_deref());
            async move { if allowed { Ok(()) } else { Err(warp::reject::custom(error::Unauthorized)) } }
        })
        .untuple_one()
}

/// Whether an `Authorization` header satisfies the configured token (always
/// true when none is configured). Constant-time in the token's bytes.
fn token_matches(daemon: &Daemon, header: Option<&str>) -> bool {
    let Some(token) = daemon.config().token.as_deref() else { return true };
    let given = header.and_then(bearer_credentials).unwrap_or("");
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into()
}

/// The credentials of a `Bearer` `Authorization` header. The scheme is
/// matched case-insensitively (RFC 7235 §2.1: `bearer x`, `BEARER x`), and
/// the spaces between scheme and token are skipped.
fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim_start())
}

/// The result type of every handler.
type ApiResult = Result<Response, ApiError>;

/// Wraps a route so its duration is recorded under its template (never the
/// raw path, which would make label cardinality unbounded).
fn route<F>(daemon: &Daemon, method: &'static str, template: &'static str, filter: F) -> BoxedFilter<(Response,)>
where
    F: Filter<Extract = (ApiResult,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    debug_assert!(
        openapi::documented(method, template),
        "route {method} {template} is missing from api::openapi::ROUTES"
    );
    let histogram = daemon.metrics().http_request_duration.clone();
    warp::any()
        .map(Instant::now)
        .and(filter)
        .map(move |started: Instant, result: ApiResult| {
            let response = result.unwrap_or_else(ApiError::into_response);
            histogram
                .with_label_values(&[method, template, response.status().as_str()])
                .observe(started.elapsed().as_secs_f64());
            response
        })
        .boxed()
}

/// Extracts a clone of the daemon handle.
fn with_daemon(daemon: &Daemon) -> impl Filter<Extract = (Daemon,), Error = Infallible> + Clone + use<> {
    let daemon = daemon.clone();
    warp::any().map(move || daemon.clone())
}

/// The request body, refused with 413 past the configured cap whether or not
/// the client sent a `Content-Length`.
fn body(daemon: &Daemon) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone + use<> {
    let limit = daemon.config().max_body_bytes;
    warp::header::optional::<u64>("content-length")
        .and_then(move |length: Option<u64>| async move {
            match length {
                Some(length) if length > limit as u64 => Err(warp::reject::custom(PayloadTooLarge(limit))),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |stream| collect_limited(stream, limit))
}

async fn collect_limited<S, B>(stream: S, limit: usize) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut collected = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject::custom(PayloadTooLarge(limit)))?;
        if collected.len() + chunk.remaining() > limit {
            return Err(warp::reject::custom(PayloadTooLarge(limit)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// The query string decoded into `T`. A malformed one becomes a 400 inside the
/// handler, not a rejection: a rejection would let the request fall through
/// to a later route (`/strategies/modules?limit=x` to `/strategies/{name}`).
fn query<T: DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (Result<T, ApiError>,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify().map(|raw: String| {
        serde_urlencoded::from_str::<T>(&raw).map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    })
}

/// Parses the `hash` filter: a hash or prefix in any accepted form, never a
/// strategy name or tag.
pub(super) fn hash_filter(text: &str) -> Result<Selector, crate::registry::ResolveError> {
    let invalid = |m: String| crate::registry::ResolveError::Invalid(m);
    let selector = Selector::parse(text).map_err(|e| invalid(e.to_string()))?;
    match &selector {
        Selector::Hash(_) | Selector::Revision { .. } => Ok(selector),
        Selector::Name { .. } => match selector.name_as_hash() {
            Some(hash) => Ok(Selector::Hash(hash)),
            None => {
                Err(invalid(format!("hash filter \"{text}\" is not a hash or a hash prefix of at least 8 hex digits")))
            }
        },
        Selector::Tag { .. } => Err(invalid(format!("hash filter \"{text}\" is a tag selector, not a hash"))),
    }
}

/// Decodes a JSON body, answering 400 with serde's message on failure. Every
/// handler decodes its body here, so every body is strict: a key repeated in
/// any object is a 400 naming it ([`strata_shared::json`]).
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    strata_shared::json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Percent-decodes one path segment (warp hands them over raw).
fn segment(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("path segment is not valid UTF-8"))
}

/// A JSON answer with a status.
fn json_reply<T: serde::Serialize>(status: warp::http::StatusCode, value: &T) -> Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR   s3cret", " Bearer s3cret "] {
            assert_eq!(bearer_credentials(header), Some("s3cret"), "{header:?}");
        }
        for header in ["Basic s3cret", "Bearers3cret", "Bearer", "s3cret", "Token s3cret"] {
            assert_ne!(bearer_credentials(header), Some("s3cret"), "{header:?}");
        }
    }

    #[tokio::test]
    async fn accepted_connections_inherit_tcp_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        disable_nagle(&listener).expect("set on the listener");
        let address = listener.local_addr().expect("address");
        let (accepted, _client) = tokio::join!(listener.accept(), tokio::net::TcpStream::connect(address));
        let (stream, _) = accepted.expect("accepted");
        assert!(stream.nodelay().expect("read the option"), "accepted sockets must not use Nagle's algorithm");
    }
}
