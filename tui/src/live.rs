//! The WebSocket side: one task that keeps a connection to `GET /ws` open,
//! forwards every [`ServerMessage`] and reports its [`ConnState`], and
//! reconnects with exponential backoff. On reconnect it resumes with
//! `?since=<last seq>` (the daemon answers `resumed` and the missed deltas,
//! or a fresh snapshot with `reset: true`). A connection that stays silent
//! (not even the daemon's pings) for [`SILENCE_LIMIT`] is taken for dead
//! and replaced: a peer that vanished without closing (a half-open TCP
//! connection) would otherwise look live forever.

use std::time::Duration;

use futures_util::StreamExt;
use strata_shared::stream::ServerMessage;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::app::ConnState;
use crate::event::Event;

/// First wait before reconnecting.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Silence after which the connection is given up: three of the daemon's
/// 15 s ping periods.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// The wait after `attempt` consecutive failures (1-based): 0.5 s doubling up to 10 s.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(10);
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

/// `http://host:port` → `ws://host:port/ws` (`https` → `wss`), with `?since=` when resuming.
pub fn ws_url(base: &str, since: Option<u64>) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| format!("ws://{base}"));
    match since {
        Some(seq) => format!("{rest}/ws?since={seq}"),
        None => format!("{rest}/ws"),
    }
}

/// Spawns the connection task; it ends when `events` is closed.
pub fn spawn(base: String, token: Option<String>, events: mpsc::UnboundedSender<Event>) -> tokio::task::JoinHandle<()> {
    spawn_watching(base, token, events, SILENCE_LIMIT)
}

/// [`spawn`] with another silence limit (tests, daemons that ping faster).
pub fn spawn_watching(
    base: String,
    token: Option<String>,
    events: mpsc::UnboundedSender<Event>,
    silence: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(base, token, events, silence))
}

async fn run(base: String, token: Option<String>, events: mpsc::UnboundedSender<Event>, silence: Duration) {
    let mut last_seq: Option<u64> = None;
    let mut attempt: u32 = 0;
    loop {
        if events.send(Event::Connection(ConnState::Connecting { attempt: attempt + 1 })).is_err() {
            return;
        }
        let mut got_messages = false;
        let ended = session(&base, token.as_deref(), &mut last_seq, &events, silence, &mut got_messages).await;
        // A connection that delivered something was healthy, however it
        // ended: the next one starts the backoff afresh.
        if got_messages {
            attempt = 0;
        }
        let error = ended.err().unwrap_or_else(|| "connection closed".to_owned());
        if events.is_closed() {
            return;
        }
        attempt += 1;
        let retry_in = backoff(attempt);
        tracing::info!(error, attempt, ?retry_in, "websocket down; reconnecting");
        if events.send(Event::Connection(ConnState::Disconnected { error, attempt, retry_in })).is_err() {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// One connection, until the daemon closes it (`Ok`), it fails or it falls
/// silent (`Err` with why). `got` turns true at the first message forwarded.
async fn session(
    base: &str,
    token: Option<&str>,
    last_seq: &mut Option<u64>,
    events: &mpsc::UnboundedSender<Event>,
    silence: Duration,
    got: &mut bool,
) -> Result<(), String> {
    let url = ws_url(base, *last_seq);
    let mut request = url.as_str().into_client_request().map_err(|e| format!("{url}: {e}"))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
    tracing::info!(url, "websocket connected");
    let _ = events.send(Event::Connection(ConnState::Connected));
    loop {
        let Ok(frame) = tokio::time::timeout(silence, socket.next()).await else {
            return Err(format!("nothing heard from the daemon for {silence:?}"));
        };
        let Some(frame) = frame else { break };
        let text = match frame.map_err(|e| e.to_string())? {
            Message::Text(text) => text,
            Message::Close(_) => break,
            // Pings are answered by tungstenite itself.
            _ => continue,
        };
        let message: ServerMessage = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable websocket message");
                continue;
            }
        };
        match &message {
            ServerMessage::Snapshot(s) => *last_seq = Some(s.seq),
            ServerMessage::Delta(d) => *last_seq = Some(last_seq.unwrap_or(0).max(d.seq)),
            _ => {}
        }
        *got = true;
        if events.send(Event::Ws(message)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(60), BACKOFF_MAX);
    }

    #[test]
    fn ws_urls_follow_the_base_and_resume() {
        assert_eq!(ws_url("http://127.0.0.1:8880/", None), "ws://127.0.0.1:8880/ws");
        assert_eq!(ws_url("https://h:1", Some(42)), "wss://h:1/ws?since=42");
    }
}
