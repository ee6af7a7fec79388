//! The WebSocket usage stream (SPEC §3.1, §3.2) end to end: snapshot then
//! ordered deltas a mirror can follow, filters, resumes, a subscriber that
//! does not read, the token, and bad input.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::json;
use strata_shared::stream::{Delta, DeltaKind, ServerMessage, Snapshot, UsageMirror};
use strata_tests::{TestDaemon, module};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn connect(d: &TestDaemon, query: &str) -> Ws {
    let (ws, _) = timeout(WAIT, connect_async(d.ws_url(&format!("/ws{query}"))))
        .await
        .expect("connects in time")
        .expect("upgrade accepted");
    ws
}

/// The status a refused upgrade answered with.
async fn refused(request: tungstenite::handshake::client::Request) -> u16 {
    match timeout(WAIT, connect_async(request)).await.expect("answers in time") {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("upgrade unexpectedly accepted"),
    }
}

/// The next server message (pings and pongs skipped).
async fn next(ws: &mut Ws) -> ServerMessage {
    loop {
        let frame = timeout(WAIT, ws.next()).await.expect("a message in time").expect("open").expect("frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn snapshot(ws: &mut Ws) -> Snapshot {
    match next(ws).await {
        ServerMessage::Snapshot(snapshot) => snapshot,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

async fn delta(ws: &mut Ws) -> Delta {
    match next(ws).await {
        ServerMessage::Delta(delta) => delta,
        other => panic!("expected a delta, got {other:?}"),
    }
}

/// Reads deltas until one of `kind` arrives (inclusive).
async fn deltas_until(ws: &mut Ws, kind: DeltaKind) -> Vec<Delta> {
    let mut deltas = Vec::new();
    for _ in 0..10_000 {
        let delta = delta(ws).await;
        let done = delta.kind == kind;
        deltas.push(delta);
        if done {
            return deltas;
        }
    }
    panic!("no {kind:?} in 10 000 deltas");
}

fn seqs(deltas: &[Delta]) -> Vec<u64> {
    deltas.iter().map(|d| d.seq).collect()
}

async fn action(d: &TestDaemon, id: &str, action: &str) {
    let (status, body) = d.post(&format!("/strategy/instances/{id}/{action}"), json!({})).await;
    assert!(status.is_success(), "{action} {id}: {status} {body}");
}

/// A daemon whose periodic pass fires only at boot (when nothing runs yet,
/// so it sends no `revisionsSeen`), so the tests that count `seq`s see only
/// the changes they make. The same pass announces retirements after a grace
/// period and persists usage; these tests need neither.
async fn quiet_daemon() -> TestDaemon {
    TestDaemon::start_with(|config| config.usage.seen_every_secs = 3600).await
}

/// What a fresh subscriber sees now, as a mirror.
async fn fresh_mirror(d: &TestDaemon) -> UsageMirror {
    let mut ws = connect(d, "").await;
    let mut mirror = UsageMirror::default();
    mirror.apply(&ServerMessage::Snapshot(snapshot(&mut ws).await));
    mirror
}

#[tokio::test]
async fn snapshot_then_every_delta_in_order_and_the_mirror_keeps_up() {
    let d = quiet_daemon().await;
    let v1 = d.upload(&module("grid", 1), "v1").await;
    let mut ws = connect(&d, "").await;
    let first = snapshot(&mut ws).await;
    assert!(!first.reset);
    let revision = first.revisions.iter().find(|r| r.strategy == "grid").expect("grid in the snapshot");
    assert_eq!((revision.hash.to_string(), revision.count), (v1.clone(), 0));
    let mut mirror = UsageMirror::default();
    mirror.apply(&ServerMessage::Snapshot(first.clone()));

    d.create_instance("a", "grid", false).await;
    action(&d, "a", "start").await;
    action(&d, "a", "stop").await;
    let (status, _) = d.delete("/strategy/instances/a").await;
    assert!(status.is_success());
    let deltas = deltas_until(&mut ws, DeltaKind::InstanceDeleted).await;
    let kinds: Vec<DeltaKind> = deltas.iter().map(|d| d.kind).collect();
    use DeltaKind::*;
    assert_eq!(kinds, [InstanceCreated, InstanceStarted, InstanceStopped, InstanceDeleted]);
    let expected: Vec<u64> = (first.seq + 1..=first.seq + 4).collect();
    assert_eq!(seqs(&deltas), expected, "consecutive after the snapshot");
    assert!(
        deltas
            .iter()
            .all(|x| x.strategy.as_deref() == Some("grid") && x.hash.map(|h| h.to_string()) == Some(v1.clone()))
    );
    assert!(deltas.iter().all(|x| x.instance_id.as_deref() == Some("a")));
    assert_eq!(deltas.iter().map(|d| d.count).collect::<Vec<_>>(), [0, 1, 0, 0], "counts after each change");
    assert!(deltas[1].first_seen.is_some() && deltas[1].last_seen.is_some());

    // A second revision and a running instance, then the mirror against a fresh snapshot.
    d.upload(&module("grid", 2), "v2").await;
    d.create_instance("b", "grid", true).await;
    let more = deltas_until(&mut ws, InstanceStarted).await;
    assert_eq!(more.first().map(|d| d.seq), Some(first.seq + 5));
    assert!(more.windows(2).all(|w| w[1].seq == w[0].seq + 1), "{:?}", seqs(&more));
    assert!(more.iter().any(|d| d.kind == RevisionAdded));
    for delta in deltas.into_iter().chain(more) {
        mirror.apply(&ServerMessage::Delta(delta));
    }
    let fresh = fresh_mirror(&d).await;
    assert_eq!(mirror.revisions, fresh.revisions);
    assert_eq!(mirror.seq, fresh.seq);
    assert!(d.metric("strata_ws_deltas_sent_total").await >= 4.0 + 3.0);
}

#[tokio::test]
async fn a_subscription_keeps_its_strategy_and_every_refresh_and_bad_messages_get_an_error() {
    let d = quiet_daemon().await;
    let grid = d.upload(&module("grid", 1), "v1").await;
    d.upload(&module("other", 1), "v1").await;
    let mut ws = connect(&d, "").await;
    snapshot(&mut ws).await;

    ws.send(Message::text("{\"type\":\"subscribe\",\"strategies\":7}")).await.unwrap();
    assert!(matches!(next(&mut ws).await, ServerMessage::Error { .. }));
    ws.send(Message::text("hello")).await.unwrap();
    let ServerMessage::Error { error } = next(&mut ws).await else { panic!("error expected") };
    assert!(!error.is_empty());

    let bare_prefix = grid.trim_start_matches("sha256:")[..12].to_uppercase();
    ws.send(Message::text(json!({"type": "subscribe", "hashes": [bare_prefix]}).to_string())).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        ServerMessage::Subscribed { strategies: vec![], hashes: vec![grid[..19].to_owned()] },
        "a bare uppercase prefix becomes a canonical sha256: prefix"
    );

    d.create_instance("o", "other", true).await;
    d.create_instance("g", "grid", true).await;
    d.create_instance("o2", "other", false).await;
    let (status, _) = d.post("/strategies/refresh", json!({"strategies": ["other"]})).await;
    assert_eq!(status, StatusCode::OK);
    let deltas = deltas_until(&mut ws, DeltaKind::RefreshCompleted).await;
    let kept: Vec<(DeltaKind, Option<&str>)> = deltas.iter().map(|d| (d.kind, d.instance_id.as_deref())).collect();
    assert_eq!(
        kept,
        [
            (DeltaKind::InstanceCreated, Some("g")),
            (DeltaKind::InstanceStarted, Some("g")),
            (DeltaKind::RefreshCompleted, None)
        ],
        "only grid's deltas, plus refreshCompleted"
    );
    assert!(deltas.windows(2).all(|w| w[1].seq > w[0].seq));
    assert!(deltas[2].results.is_some(), "refreshCompleted carries results");

    ws.send(Message::text(json!({"type": "subscribe", "strategies": ["other"]}).to_string())).await.unwrap();
    assert!(matches!(next(&mut ws).await, ServerMessage::Subscribed { .. }));
    action(&d, "g", "stop").await;
    action(&d, "o", "stop").await;
    let stopped = delta(&mut ws).await;
    assert_eq!((stopped.kind, stopped.instance_id.as_deref()), (DeltaKind::InstanceStopped, Some("o")));
}

#[tokio::test]
async fn the_heartbeat_keeps_last_seen_current_for_a_mirror() {
    let d = TestDaemon::start_with(|config| config.usage.seen_every_secs = 1).await;
    d.upload(&module("grid", 1), "v1").await;
    d.upload(&module("grid", 2), "v2").await;
    d.create_instance("a", "grid:v1", true).await;
    let mut ws = connect(&d, "").await;
    let mut mirror = UsageMirror::default();
    mirror.apply(&ServerMessage::Snapshot(snapshot(&mut ws).await));
    let running = |mirror: &UsageMirror| {
        mirror.revisions.values().find(|r| r.count == 1).map(|r| (r.hash, r.last_seen)).expect("one running revision")
    };
    let (hash, before) = running(&mirror);
    let heartbeat = loop {
        let delta = delta(&mut ws).await;
        mirror.apply(&ServerMessage::Delta(delta.clone()));
        if delta.kind == DeltaKind::RevisionsSeen {
            break delta;
        }
    };
    assert_eq!((heartbeat.strategy, heartbeat.hash), (None, None));
    let seen = heartbeat.last_seen.expect("the heartbeat carries lastSeen");
    assert!(Some(seen) > before, "lastSeen moves forward");
    assert_eq!(running(&mirror), (hash, Some(seen)));
    let idle = mirror.revisions.values().find(|r| r.count == 0).expect("v2 does not run");
    assert_eq!(idle.last_seen, None, "a revision that never ran is not seen");
    // More heartbeats may come (one a second): read up to the fresh
    // snapshot's `seq`, then the mirror must be exactly that snapshot.
    let fresh = fresh_mirror(&d).await;
    while mirror.seq < fresh.seq {
        mirror.apply(&ServerMessage::Delta(delta(&mut ws).await));
    }
    assert_eq!(mirror, fresh, "deltas alone keep the mirror equal to a fresh snapshot");
}

#[tokio::test]
async fn resume_from_a_buffered_seq_replays_exactly_what_was_missed() {
    let d = quiet_daemon().await;
    d.upload(&module("grid", 1), "v1").await;
    let mut live = connect(&d, "").await;
    let start = snapshot(&mut live).await.seq;
    let mut leaver = connect(&d, "").await;
    assert_eq!(snapshot(&mut leaver).await.seq, start);

    d.create_instance("a", "grid", false).await;
    let seen = delta(&mut leaver).await;
    assert_eq!(seen.seq, start + 1);
    drop(leaver);

    action(&d, "a", "start").await;
    action(&d, "a", "stop").await;
    d.create_instance("b", "grid", false).await;
    let mut all = vec![delta(&mut live).await];
    all.extend(deltas_until(&mut live, DeltaKind::InstanceCreated).await);
    assert_eq!(seqs(&all), (start + 1..=start + 4).collect::<Vec<_>>());

    let mut back = connect(&d, &format!("?since={}", seen.seq)).await;
    assert_eq!(next(&mut back).await, ServerMessage::Resumed { since: seen.seq });
    for expected in &all[1..] {
        assert_eq!(&delta(&mut back).await, expected, "the missed deltas, as first sent");
    }
    action(&d, "b", "start").await;
    assert_eq!(delta(&mut back).await.seq, start + 5, "then live, with no gap");

    let mut current = connect(&d, &format!("?since={}", start + 5)).await;
    assert_eq!(next(&mut current).await, ServerMessage::Resumed { since: start + 5 });
    action(&d, "b", "stop").await;
    assert_eq!(delta(&mut current).await.seq, start + 6, "an up-to-date resume replays nothing");
    assert_eq!(d.metric("strata_ws_resyncs_total").await, 0.0);
}

#[tokio::test]
async fn resume_from_an_expired_or_future_seq_gets_a_reset_snapshot() {
    let d = TestDaemon::start_with(|c| {
        c.usage.stream_replay = 4;
        c.usage.seen_every_secs = 3600;
    })
    .await;
    d.upload(&module("grid", 1), "v1").await;
    let mut live = connect(&d, "").await;
    let start = snapshot(&mut live).await.seq;
    for i in 0..4 {
        d.create_instance(&format!("i{i}"), "grid", true).await;
    }
    let deltas = deltas_until(&mut live, DeltaKind::InstanceStarted).await;
    let mut last = deltas.last().unwrap().seq;
    while last < start + 8 {
        last = delta(&mut live).await.seq;
    }

    for since in [start, last + 1000] {
        let mut ws = connect(&d, &format!("?since={since}")).await;
        let reset = snapshot(&mut ws).await;
        assert!(reset.reset, "since={since} is not buffered");
        assert_eq!(reset.seq, last);
        let running = reset.revisions.iter().find(|r| r.strategy == "grid").unwrap();
        assert_eq!(running.count, 4);
    }
    assert_eq!(d.metric("strata_ws_resyncs_total").await, 2.0);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_neither_holds_back_nor_corrupts_the_others() {
    let d = TestDaemon::start_with(|c| {
        c.usage.stream_queue = 8;
        c.usage.seen_every_secs = 3600;
    })
    .await;
    d.upload(&module("grid", 1), "v1").await;
    // Connected, never read until the end: its server task blocks on a full
    // socket while the burst goes on.
    let mut stalled = connect(&d, "").await;
    let mut fast = connect(&d, "").await;
    let start = snapshot(&mut fast).await.seq;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < 300 {
            seqs.push(delta(&mut fast).await.seq);
        }
        (fast, seqs)
    });
    for i in 0..150 {
        d.create_instance(&format!("i{i:03}"), "grid", true).await;
    }
    let (_fast, got) = timeout(Duration::from_secs(60), reader).await.expect("in time").expect("reader");
    assert_eq!(got, (start + 1..=start + 300).collect::<Vec<_>>(), "the fast subscriber got every delta in order");
    assert_eq!(d.metric("strata_ws_subscribers").await, 2.0);

    // The stalled one now reads: whatever it gets (everything, or a resync
    // and a reset snapshot) leaves its mirror equal to the daemon's state.
    let mut mirror = UsageMirror::default();
    let first = snapshot(&mut stalled).await;
    assert_eq!((first.seq, first.reset), (start, false), "sent before the burst");
    mirror.apply(&ServerMessage::Snapshot(first));
    let mut resyncs = 0;
    for _ in 0..1_000 {
        if mirror.seq == start + 300 {
            break;
        }
        match next(&mut stalled).await {
            ServerMessage::Delta(delta) => {
                assert_eq!(delta.seq, mirror.seq + 1, "no gap without a resync");
                mirror.apply(&ServerMessage::Delta(delta));
            }
            ServerMessage::Resync { reason, missed } => {
                assert_eq!(reason, "lagged");
                assert!(missed > 0);
                resyncs += 1;
                let reset = snapshot(&mut stalled).await;
                assert!(reset.reset, "a reset snapshot follows a resync");
                mirror.apply(&ServerMessage::Snapshot(reset));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(mirror.seq, start + 300);
    println!("the stalled subscriber was resynced {resyncs} time(s)");
    assert_eq!(mirror.revisions, fresh_mirror(&d).await.revisions);
    assert_eq!(d.metric("strata_ws_resyncs_total").await, f64::from(resyncs));
}

#[tokio::test]
async fn the_token_guards_the_stream_and_a_bad_since_is_a_400() {
    let d = TestDaemon::start_with(|c| c.token = Some("s3cret".into())).await;
    let url = d.ws_url("/ws");
    assert_eq!(refused(url.as_str().into_client_request().unwrap()).await, 401);
    let mut wrong = url.as_str().into_client_request().unwrap();
    wrong.headers_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(refused(wrong).await, 401);

    let authorized = |query: &str| {
        let mut request = d.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
        request.headers_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        request
    };
    assert_eq!(refused(authorized("?since=abc")).await, 400);
    assert_eq!(refused(authorized("?since=-1")).await, 400);
    assert_eq!(refused(authorized("?bogus=1")).await, 400);
    let (mut ws, _) = timeout(WAIT, connect_async(authorized(""))).await.unwrap().expect("authorized upgrade");
    assert!(!snapshot(&mut ws).await.reset);

    let (status, _) = d.get("/ws").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a plain GET without the token");
    let plain = d.client.get(format!("{}/ws", d.url)).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::UPGRADE_REQUIRED, "a plain GET with the token is told to upgrade");
    assert_eq!(plain.headers()["sec-websocket-version"], "13", "and which WebSocket version to ask for");
    let old_version = d
        .client
        .get(format!("{}/ws", d.url))
        .bearer_auth("s3cret")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "8")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(old_version.status(), StatusCode::UPGRADE_REQUIRED, "only version 13 is spoken");
}

#[tokio::test]
async fn a_subscription_of_ten_thousand_prefixes_is_served_and_one_more_is_refused() {
    let d = quiet_daemon().await;
    let grid = d.upload(&module("grid", 1), "v1").await;
    let mut ws = connect(&d, "").await;
    snapshot(&mut ws).await;

    // 9,999 prefixes that match nothing, and grid's: the filter still keeps grid.
    let mut hashes: Vec<String> = (0..9_999u32).map(|i| format!("{:08x}{:04x}", 0xf00d_0000u32 + i, i)).collect();
    hashes.push(grid[7..19].to_owned());
    let started = std::time::Instant::now();
    ws.send(Message::text(json!({"type": "subscribe", "hashes": hashes}).to_string())).await.unwrap();
    let ServerMessage::Subscribed { hashes: kept, .. } = next(&mut ws).await else { panic!("subscribed expected") };
    assert_eq!(kept.len(), 10_000);
    let (status, _) = d.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    d.create_instance("g", "grid", true).await;
    let kept: Vec<(DeltaKind, Option<String>)> = deltas_until(&mut ws, DeltaKind::InstanceStarted)
        .await
        .into_iter()
        .map(|delta| (delta.kind, delta.instance_id))
        .collect();
    let g = Some("g".to_owned());
    assert_eq!(kept, [(DeltaKind::InstanceCreated, g.clone()), (DeltaKind::InstanceStarted, g)]);
    println!("10,000-prefix subscription acknowledged and matched in {:?}", started.elapsed());

    hashes.push("0123456789ab".into());
    ws.send(Message::text(json!({"type": "subscribe", "hashes": hashes}).to_string())).await.unwrap();
    let ServerMessage::Error { error } = next(&mut ws).await else { panic!("error expected") };
    assert_eq!(error, "a subscription holds at most 10000 strategies and hashes together; this one has 10001");
    // The previous filter stays: grid's deltas still come.
    action(&d, "g", "stop").await;
    let stopped = delta(&mut ws).await;
    assert_eq!((stopped.kind, stopped.instance_id.as_deref()), (DeltaKind::InstanceStopped, Some("g")));

    // The same bound on a refresh's targets over HTTP: a 400.
    let (status, body) = d.post("/strategies/refresh", json!({"hashes": hashes})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("at most 10000"), "{body}");
}
