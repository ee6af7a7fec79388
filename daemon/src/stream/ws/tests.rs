//! The connection task against an in-memory connection (a tokio duplex pipe
//! with a tungstenite client at the other end) whose server-side writes can
//! be shut, so a stalled subscriber is deterministic.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::SinkExt;
use futures_util::task::AtomicWaker;
use strata_shared::RevisionHash;
use strata_shared::stream::{Delta, DeltaKind, ServerMessage};
use time::OffsetDateTime;
use tokio::io::{DuplexStream, ReadBuf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::*;
use crate::stream::Bus;

/// Whether the server's side accepts writes; wakes a blocked writer on open.
#[derive(Default)]
struct Gate {
    shut: AtomicBool,
    waker: AtomicWaker,
    /// Notified whenever a write found the gate shut.
    blocked: Notify,
    /// Completed flushes (one per write of a batch).
    flushes: AtomicUsize,
}

impl Gate {
    fn set_open(&self, open: bool) {
        self.shut.store(!open, Ordering::SeqCst);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.shut.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if !self.shut.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.blocked.notify_one();
        Poll::Pending
    }
}

/// The server's end of the pipe, behind the gate.
struct GatedIo {
    inner: DuplexStream,
    gate: Arc<Gate>,
}

impl AsyncRead for GatedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.gate.poll(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.gate.poll(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.gate.poll(cx));
        let flushed = std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx));
        self.gate.flushes.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The test's end of a connection served by [`serve`]: a tungstenite client.
struct Client {
    ws: WebSocketStream<DuplexStream>,
    gate: Arc<Gate>,
    task: JoinHandle<Ended>,
}

impl Client {
    /// The next frame from the server, whatever it is.
    async fn frame(&mut self) -> Message {
        timeout(Duration::from_secs(5), self.ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("connection open")
            .expect("a valid frame")
    }

    /// The next message that is not a ping.
    async fn next(&mut self) -> ServerMessage {
        loop {
            let message = self.frame().await;
            if message.is_ping() {
                continue;
            }
            let body = message.to_text().expect("text message");
            return serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    async fn say(&mut self, body: &str) {
        self.ws.send(Message::text(body)).await.expect("server reading");
    }

    /// Hangs up and waits for the server task to end.
    async fn hang_up(self) -> Ended {
        drop(self.ws);
        timeout(Duration::from_secs(5), self.task).await.expect("ends within 5 s").expect("task did not panic")
    }
}

struct Fixture {
    usage: Arc<UsageIndex>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    fn new(replay: usize, queue: usize) -> Self {
        let bus = Arc::new(Bus::new(replay, queue));
        Self { usage: Arc::new(UsageIndex::new(bus, None, time::Duration::ZERO)), metrics: Arc::new(Metrics::new()) }
    }

    async fn connect(&self, since: Option<u64>, settings: Settings) -> Client {
        let (server, client) = tokio::io::duplex(1 << 20);
        let gate = Arc::new(Gate::default());
        let io = GatedIo { inner: server, gate: gate.clone() };
        let (usage, metrics) = (self.usage.clone(), self.metrics.clone());
        let task = tokio::spawn(async move { serve(io, &usage, &metrics, since, &settings).await });
        let ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        Client { ws, gate, task }
    }

    /// Publishes an `instanceCreated` for `strategy`; returns its `seq`.
    fn publish(&self, strategy: &str) -> u64 {
        let hash = RevisionHash::of(strategy.as_bytes());
        let mut delta =
            Delta::new(0, OffsetDateTime::now_utc(), DeltaKind::InstanceCreated, Some(strategy.into()), Some(hash));
        delta.instance_id = Some(format!("{strategy}-instance"));
        self.usage.bus().publish(delta)
    }
}

fn seq_of(message: &ServerMessage) -> u64 {
    match message {
        ServerMessage::Delta(d) => d.seq,
        ServerMessage::Snapshot(s) => s.seq,
        other => panic!("expected a delta or snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_then_deltas_then_only_what_the_filter_keeps() {
    let f = Fixture::new(64, 64);
    f.publish("early");
    let mut client = f.connect(None, Settings::default()).await;
    let ServerMessage::Snapshot(snapshot) = client.next().await else { panic!("snapshot first") };
    assert_eq!((snapshot.seq, snapshot.reset), (1, false));
    assert_eq!(f.metrics.ws_subscribers.get(), 1);

    let first = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), first);
    let other = RevisionHash::of(b"other").to_hex();
    client
        .say(&format!(
            r#"{{"type":"subscribe","strategies":["grid","grid"],"hashes":["sha256:{}","{}"]}}"#,
            &other[..10].to_uppercase(),
            other
        ))
        .await;
    assert_eq!(
        client.next().await,
        ServerMessage::Subscribed {
            strategies: vec!["grid".into()],
            hashes: vec![format!("sha256:{}", &other[..10]), format!("sha256:{other}")],
        }
    );
    f.publish("noise");
    let kept = f.publish("other");
    f.publish("noise");
    let refreshed =
        f.usage.bus().publish(Delta::new(0, OffsetDateTime::now_utc(), DeltaKind::RefreshCompleted, None, None));
    let last = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), kept);
    assert_eq!(seq_of(&client.next().await), refreshed, "refreshCompleted always passes");
    assert_eq!(seq_of(&client.next().await), last);
    assert_eq!(f.metrics.ws_deltas_sent.get(), 4);

    client.say("not json").await;
    assert!(matches!(client.next().await, ServerMessage::Error { .. }));
    client.say(r#"{"type":"subscribe","hashes":["abc"]}"#).await;
    let ServerMessage::Error { error } = client.next().await else { panic!("a short prefix is refused") };
    assert!(error.contains("abc"), "{error}");
    let after = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), after, "still open, old filter kept");

    assert_eq!(client.hang_up().await, Ended::ClientGone);
    assert_eq!(f.metrics.ws_subscribers.get(), 0);
}

#[tokio::test]
async fn resumes_from_the_buffer_or_resets_when_it_cannot() {
    let f = Fixture::new(4, 64);
    for _ in 0..6 {
        f.publish("grid");
    }
    let mut client = f.connect(Some(3), Settings::default()).await;
    assert_eq!(client.next().await, ServerMessage::Resumed { since: 3 });
    for seq in 4..=6 {
        assert_eq!(seq_of(&client.next().await), seq);
    }
    let published = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), published, "then live");
    assert_eq!(f.metrics.ws_resyncs.get(), 0);

    for since in [1, 99] {
        let mut client = f.connect(Some(since), Settings::default()).await;
        let ServerMessage::Snapshot(snapshot) = client.next().await else { panic!("snapshot") };
        assert!(snapshot.reset, "since {since} is not buffered");
        assert_eq!(snapshot.seq, f.usage.bus().seq(), "as of now");
        let published = f.publish("grid");
        assert_eq!(seq_of(&client.next().await), published);
    }
    assert_eq!(f.metrics.ws_resyncs.get(), 2);
}

#[tokio::test]
async fn a_stalled_subscriber_is_resynced_and_then_follows_again() {
    let f = Fixture::new(64, 4);
    let mut slow = f.connect(None, Settings::default()).await;
    let mut fast = f.connect(None, Settings::default()).await;
    assert_eq!(seq_of(&slow.next().await), 0);
    assert_eq!(seq_of(&fast.next().await), 0);

    // The slow client's socket stops accepting writes mid-delta.
    slow.gate.set_open(false);
    f.publish("grid");
    timeout(Duration::from_secs(5), slow.gate.blocked.notified()).await.expect("the writer blocks");
    assert_eq!(seq_of(&fast.next().await), 1);
    for seq in 2..=21 {
        assert_eq!(f.publish("grid"), seq);
        assert_eq!(seq_of(&fast.next().await), seq, "the fast subscriber gets every delta in order");
    }

    slow.gate.set_open(true);
    assert_eq!(seq_of(&slow.next().await), 1, "the delta it was writing");
    let ServerMessage::Resync { reason, missed } = slow.next().await else { panic!("resync") };
    assert_eq!(reason, "lagged");
    assert!(missed >= 16, "missed {missed}");
    let ServerMessage::Snapshot(snapshot) = slow.next().await else { panic!("snapshot after resync") };
    assert!(snapshot.reset);
    assert_eq!(snapshot.seq, 21);
    let published = f.publish("grid");
    assert_eq!(seq_of(&slow.next().await), published, "no gap after the snapshot");
    assert_eq!(seq_of(&fast.next().await), 22);
    assert_eq!(f.metrics.ws_resyncs.get(), 1);
}

#[tokio::test]
async fn a_socket_that_accepts_nothing_is_dropped_after_the_send_timeout() {
    let f = Fixture::new(64, 64);
    let settings = Settings { send_timeout: Duration::from_millis(50), ..Settings::default() };
    let (server, _client) = tokio::io::duplex(1 << 20);
    let gate = Arc::new(Gate::default());
    gate.set_open(false);
    let socket = GatedIo { inner: server, gate };
    let ended = timeout(Duration::from_secs(5), serve(socket, &f.usage, &f.metrics, None, &settings)).await;
    assert_eq!(ended.expect("ends"), Ended::SendTimeout);
    assert_eq!(f.metrics.ws_subscribers.get(), 0);
    assert_eq!(f.metrics.ws_disconnects.with_label_values(&["send_timeout"]).get(), 1);
    assert_eq!(f.metrics.ws_disconnects.with_label_values(&["client_gone"]).get(), 0);
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_dropped_while_a_talking_one_stays() {
    let f = Fixture::new(64, 64);
    let settings = Settings {
        ping_every: Duration::from_millis(20),
        idle_timeout: Duration::from_millis(60),
        ..Settings::default()
    };
    let mut silent = f.connect(None, settings.clone()).await;
    let mut talking = f.connect(None, settings).await;
    silent.next().await;
    talking.next().await;
    // It reads the ping and nothing more, so its client never sends the pong.
    assert!(silent.frame().await.is_ping());
    // The talking client answers every ping until the silent one is gone.
    let silent_task = silent.task;
    let mut silent_task = std::pin::pin!(silent_task);
    let ended = loop {
        tokio::select! {
            ended = &mut silent_task => break ended.unwrap(),
            message = talking.ws.next() => {
                // Reading lets its client answer the ping with a pong.
                assert!(message.expect("talking client stays connected").is_ok());
            }
        }
    };
    assert_eq!(ended, Ended::Idle);
    assert!(!talking.task.is_finished());
    let published = f.publish("grid");
    assert_eq!(seq_of(&talking.next().await), published);
    assert_eq!(talking.hang_up().await, Ended::ClientGone);
    let disconnects = |reason: &str| f.metrics.ws_disconnects.with_label_values(&[reason]).get();
    assert_eq!((disconnects("idle"), disconnects("client_gone"), disconnects("send_timeout")), (1, 1, 0));
}

#[test]
fn subscriptions_are_normalised() {
    let hex = RevisionHash::of(b"x").to_hex();
    let filter = normalise(vec!["grid".into()], vec![hex.to_uppercase(), format!("sha256:{}", &hex[..8])]).unwrap();
    assert_eq!(filter.strategies(), ["grid"]);
    assert_eq!(filter.hashes(), [format!("sha256:{hex}"), format!("sha256:{}", &hex[..8])]);
    assert!(normalise(vec![], vec![hex[..7].to_owned()]).is_err(), "prefixes need 8 digits");
    assert!(normalise(vec!["../etc".into()], vec![]).is_err());
    assert!(normalise(vec![], vec!["grid:prod".into()]).is_err());
}

#[test]
fn subscriptions_are_bounded_at_ten_thousand_entries_and_normalised_in_linear_time() {
    let prefixes: Vec<String> = (0..MAX_SUBSCRIPTION_ENTRIES as u32)
        .map(|i| RevisionHash::of(&i.to_le_bytes()).to_hex()[..12].to_owned())
        .collect();
    let started = std::time::Instant::now();
    let filter = normalise(vec![], prefixes.clone()).expect("10,000 entries are allowed");
    assert_eq!(filter.hashes().len(), MAX_SUBSCRIPTION_ENTRIES);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    let mut over = prefixes;
    over.push("grid".into());
    let error = normalise(vec![], over.clone()).unwrap_err();
    assert_eq!(error, "a subscription holds at most 10000 strategies and hashes together; this one has 10001");
    // Strategies and hashes count together.
    assert!(normalise(vec!["grid".into()], over[..MAX_SUBSCRIPTION_ENTRIES].to_vec()).is_err());
}

#[tokio::test]
async fn deltas_waiting_when_the_task_wakes_go_out_in_one_write() {
    let f = Fixture::new(64, 64);
    let mut client = f.connect(None, Settings::default()).await;
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    let flushes = client.gate.flushes.load(Ordering::SeqCst);
    // The test runs on one thread: all four are published before the
    // connection task runs again.
    let burst: Vec<u64> = (0..4).map(|_| f.publish("b")).collect();
    for seq in burst {
        assert_eq!(seq_of(&client.next().await), seq, "in order, none lost");
    }
    assert_eq!(client.gate.flushes.load(Ordering::SeqCst) - flushes, 1, "one write for the four");
    client.hang_up().await;
    let lag = &f.metrics.ws_delivery_lag;
    assert_eq!(lag.get_sample_count(), 1, "one delivery-lag sample per write of live deltas");
    assert!((0.0..5.0).contains(&lag.get_sample_sum()), "seconds since the oldest of the four was published");
}

#[tokio::test]
async fn a_client_ping_is_answered_with_its_payload_and_a_close_ends_the_connection() {
    let f = Fixture::new(64, 64);
    let mut client = f.connect(None, Settings::default()).await;
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    client.ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    let pong = client.frame().await;
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));

    client.ws.close(None).await.unwrap();
    let ended = timeout(Duration::from_secs(5), client.task).await.expect("ends").unwrap();
    assert_eq!(ended, Ended::ClientGone);
    assert_eq!(f.metrics.ws_subscribers.get(), 0);
}

#[test]
fn every_way_a_connection_ends_has_its_metric_label() {
    assert_eq!(Ended::ALL.map(Ended::reason), crate::metrics::WS_DISCONNECT_REASONS);
}
