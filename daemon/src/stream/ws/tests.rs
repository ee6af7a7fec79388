//! The connection task against an in-memory socket whose write side can be
//! shut, so a stalled subscriber is deterministic.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use strata_shared::RevisionHash;
use strata_shared::stream::{Delta, DeltaKind, ServerMessage};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::*;
use crate::stream::Bus;

/// Whether the fake socket accepts writes; wakes a blocked writer on open.
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

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if !self.shut.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        self.waker.register(cx.waker());
        if !self.shut.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        self.blocked.notify_one();
        Poll::Pending
    }
}

struct FakeSocket {
    incoming: mpsc::UnboundedReceiver<Message>,
    outgoing: mpsc::UnboundedSender<Message>,
    gate: Arc<Gate>,
}

impl Stream for FakeSocket {
    type Item = Result<Message, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Message> for FakeSocket {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.gate.poll(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Infallible> {
        let _ = self.outgoing.send(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let ready = self.gate.poll(cx);
        if ready.is_ready() {
            self.gate.flushes.fetch_add(1, Ordering::SeqCst);
        }
        ready
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

/// The test's end of a connection served by [`serve`].
struct Client {
    to_server: mpsc::UnboundedSender<Message>,
    from_server: mpsc::UnboundedReceiver<Message>,
    gate: Arc<Gate>,
    task: JoinHandle<Ended>,
}

impl Client {
    /// The next message that is not a ping.
    async fn next(&mut self) -> ServerMessage {
        loop {
            let message = timeout(Duration::from_secs(5), self.from_server.recv())
                .await
                .expect("a message within 5 s")
                .expect("connection open");
            if message.is_ping() {
                continue;
            }
            let body = message.to_str().expect("text message");
            return serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    fn say(&self, body: &str) {
        self.to_server.send(Message::text(body)).expect("server reading");
    }

    /// Hangs up and waits for the server task to end.
    async fn hang_up(self) -> Ended {
        drop(self.to_server);
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

    fn connect(&self, since: Option<u64>, settings: Settings) -> Client {
        let (to_server, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_server) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate::default());
        let socket = FakeSocket { incoming, outgoing, gate: gate.clone() };
        let (usage, metrics) = (self.usage.clone(), self.metrics.clone());
        let task = tokio::spawn(async move { serve(socket, &usage, &metrics, since, &settings).await });
        Client { to_server, from_server, gate, task }
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
    let mut client = f.connect(None, Settings::default());
    let ServerMessage::Snapshot(snapshot) = client.next().await else { panic!("snapshot first") };
    assert_eq!((snapshot.seq, snapshot.reset), (1, false));
    assert_eq!(f.metrics.ws_subscribers.get(), 1);

    let first = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), first);
    let other = RevisionHash::of(b"other").to_hex();
    client.say(&format!(
        r#"{{"type":"subscribe","strategies":["grid","grid"],"hashes":["sha256:{}","{}"]}}"#,
        &other[..10].to_uppercase(),
        other
    ));
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

    client.say("not json");
    assert!(matches!(client.next().await, ServerMessage::Error { .. }));
    client.say(r#"{"type":"subscribe","hashes":["abc"]}"#);
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
    let mut client = f.connect(Some(3), Settings::default());
    assert_eq!(client.next().await, ServerMessage::Resumed { since: 3 });
    for seq in 4..=6 {
        assert_eq!(seq_of(&client.next().await), seq);
    }
    let published = f.publish("grid");
    assert_eq!(seq_of(&client.next().await), published, "then live");
    assert_eq!(f.metrics.ws_resyncs.get(), 0);

    for since in [1, 99] {
        let mut client = f.connect(Some(since), Settings::default());
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
    let mut slow = f.connect(None, Settings::default());
    let mut fast = f.connect(None, Settings::default());
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
    let (_to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, _from_server) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate::default());
    gate.set_open(false);
    let socket = FakeSocket { incoming, outgoing, gate };
    let ended = timeout(Duration::from_secs(5), serve(socket, &f.usage, &f.metrics, None, &settings)).await;
    assert_eq!(ended.expect("ends"), Ended::SendTimeout);
    assert_eq!(f.metrics.ws_subscribers.get(), 0);
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_dropped_while_a_talking_one_stays() {
    let f = Fixture::new(64, 64);
    let settings = Settings {
        ping_every: Duration::from_millis(20),
        idle_timeout: Duration::from_millis(60),
        ..Settings::default()
    };
    let mut silent = f.connect(None, settings.clone());
    let mut talking = f.connect(None, settings);
    silent.next().await;
    talking.next().await;
    let ping = timeout(Duration::from_secs(5), silent.from_server.recv()).await.unwrap().unwrap();
    assert!(ping.is_ping());
    // The talking client answers every ping until the silent one is gone.
    let silent_task = silent.task;
    let mut silent_task = std::pin::pin!(silent_task);
    let ended = loop {
        tokio::select! {
            ended = &mut silent_task => break ended.unwrap(),
            message = talking.from_server.recv() => {
                if message.expect("talking client stays connected").is_ping() {
                    talking.say_pong();
                }
            }
        }
    };
    assert_eq!(ended, Ended::Idle);
    assert!(!talking.task.is_finished());
    let published = f.publish("grid");
    assert_eq!(seq_of(&talking.next().await), published);
    assert_eq!(talking.hang_up().await, Ended::ClientGone);
}

impl Client {
    fn say_pong(&self) {
        self.to_server.send(Message::pong(Vec::new())).expect("server reading");
    }
}

#[test]
fn subscriptions_are_normalised() {
    let hex = RevisionHash::of(b"x").to_hex();
    let filter = normalise(vec!["grid".into()], vec![hex.to_uppercase(), format!("sha256:{}", &hex[..8])]).unwrap();
    assert_eq!(filter.strategies, ["grid"]);
    assert_eq!(filter.hashes, [format!("sha256:{hex}"), format!("sha256:{}", &hex[..8])]);
    assert!(normalise(vec![], vec![hex[..7].to_owned()]).is_err(), "prefixes need 8 digits");
    assert!(normalise(vec!["../etc".into()], vec![]).is_err());
    assert!(normalise(vec![], vec!["grid:prod".into()]).is_err());
}

#[tokio::test]
async fn deltas_waiting_when_the_task_wakes_go_out_in_one_write() {
    let f = Fixture::new(64, 64);
    let mut client = f.connect(None, Settings::default());
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
