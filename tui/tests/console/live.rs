//! The WebSocket task against a local WebSocket server: bearer header,
//! messages forwarded in order, backoff on close, resume with `?since=`.

use std::time::Duration;

use futures_util::SinkExt;
use strata_shared::stream::ServerMessage;
use strata_tui::app::ConnState;
use strata_tui::event::Event;
use strata_tui::fixtures;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Accepts one WebSocket connection; returns it with the request's path and `Authorization`.
// The handshake callback's `Result` type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn accept(
    listener: &TcpListener,
) -> (tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String, Option<String>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut seen = (String::new(), None);
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        seen.0 = req.uri().to_string();
        seen.1 = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
        Ok(resp)
    })
    .await
    .unwrap();
    (ws, seen.0, seen.1)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event in time").expect("open")
}

#[tokio::test]
async fn the_stream_forwards_messages_and_resumes_after_a_drop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = strata_tui::live::spawn(base, Some("sekrit".into()), tx);

    let (mut ws, path, auth) = accept(&listener).await;
    assert_eq!(path, "/ws");
    assert_eq!(auth.as_deref(), Some("Bearer sekrit"));
    let snapshot = fixtures::snapshot();
    let delta = fixtures::instance_delta(
        42,
        strata_shared::stream::DeltaKind::InstanceStarted,
        "noop",
        "noop-v1.0.0",
        "n",
        strata_shared::api::InstanceState::Running,
        1,
    );
    for m in [&snapshot, &delta] {
        ws.send(Message::text(serde_json::to_string(m).unwrap())).await.unwrap();
    }
    ws.close(None).await.unwrap();

    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connecting { attempt: 1 })));
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connected)));
    assert!(matches!(next(&mut rx).await, Event::Ws(m) if m == snapshot));
    assert!(matches!(next(&mut rx).await, Event::Ws(m) if m == delta));
    match next(&mut rx).await {
        Event::Connection(ConnState::Disconnected { attempt: 1, retry_in, .. }) => {
            assert_eq!(retry_in, Duration::from_millis(500))
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }

    let (mut ws, path, _) = accept(&listener).await;
    assert_eq!(path, "/ws?since=42", "the reconnect resumes after the last seq seen");
    ws.send(Message::text(r#"{"type":"resumed","since":42}"#)).await.unwrap();
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connecting { attempt: 2 })));
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connected)));
    assert!(matches!(next(&mut rx).await, Event::Ws(ServerMessage::Resumed { since: 42 })));
    task.abort();
}

#[tokio::test]
async fn a_silent_connection_is_given_up_and_resumed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = strata_tui::live::spawn_watching(base, None, tx, Duration::from_secs(1));

    // The server sends a snapshot, then nothing, and keeps the socket open.
    let (mut silent, _, _) = accept(&listener).await;
    let snapshot = fixtures::snapshot();
    silent.send(Message::text(serde_json::to_string(&snapshot).unwrap())).await.unwrap();
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connecting { attempt: 1 })));
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connected)));
    assert!(matches!(next(&mut rx).await, Event::Ws(m) if m == snapshot));
    match next(&mut rx).await {
        Event::Connection(ConnState::Disconnected { error, attempt: 1, .. }) => {
            assert!(error.starts_with("nothing heard from the daemon"), "{error}")
        }
        other => panic!("expected the silent connection to be given up, got {other:?}"),
    }
    let ServerMessage::Snapshot(sent) = &snapshot else { unreachable!() };
    let (mut again, path, _) = accept(&listener).await;
    assert_eq!(path, format!("/ws?since={}", sent.seq), "a new connection resumes where the silent one stopped");
    // It too delivers something, then falls silent: since each connection
    // delivered, the backoff starts afresh each time (attempt 1, 0.5 s).
    again.send(Message::text(serde_json::to_string(&snapshot).unwrap())).await.unwrap();
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connecting { attempt: 2 })));
    assert!(matches!(next(&mut rx).await, Event::Connection(ConnState::Connected)));
    assert!(matches!(next(&mut rx).await, Event::Ws(m) if m == snapshot));
    match next(&mut rx).await {
        Event::Connection(ConnState::Disconnected { attempt: 1, retry_in, .. }) => {
            assert_eq!(retry_in, Duration::from_millis(500))
        }
        other => panic!("expected a fresh backoff after a connection that delivered, got {other:?}"),
    }
    drop((silent, again));
    task.abort();
}
