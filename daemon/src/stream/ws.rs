//! One `GET /ws` subscriber (SPEC §3.1, §3.2): the connection task that turns
//! the delta [`Bus`](super::Bus) into WebSocket messages.
//!
//! The connection is the upgraded HTTP connection itself (the handshake is
//! in `api::stream`), not warp's `WebSocket`: a server frame is unmasked, so
//! a delta's whole frame is the same bytes for every subscriber. Each is
//! formatted once (by tungstenite, [`Published::frame`]) and a batch goes out
//! as one vectored write of those shared frames, with no per-subscriber,
//! per-message framing or copy. That per-message path through warp's `Sink`
//! was about a quarter of the daemon's CPU under a burst
//! (`docs/performance.md`). Client frames are still parsed by tungstenite.
//!
//! Per connection there is one writing task with no delta queue of its own
//! (and a reader task for the client's few frames, see [`read_frames`]):
//! live deltas wait in the bus's broadcast ring, which is the bound on how
//! far a subscriber may fall behind (`[usage] stream_queue`). A subscriber that
//! falls further behind is told `resync` and gets a fresh snapshot flagged
//! `reset`; one whose socket accepts nothing for [`Settings::send_timeout`]
//! is dropped. Publishers never wait for any of this.
//!
//! Every delta already waiting when the task wakes goes out in the same
//! write (up to [`Settings::batch`]), so under load a subscriber costs one
//! socket write per wake-up, not one per delta.
//!
//! Ordering: the task subscribes to the bus *before* taking a snapshot, and
//! the snapshot is taken under the usage index's lock (the lock every delta
//! is published under), so every delta after `snapshot.seq` is received and
//! every delta at or before it is dropped.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use strata_shared::HashRef;
use strata_shared::names::is_valid_strategy_name;
use strata_shared::stream::{ClientMessage, Filter, MAX_SUBSCRIPTION_ENTRIES, ServerMessage};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{Published, Receiver};
use crate::metrics::Metrics;
use crate::usage::UsageIndex;

/// Timing and batching of one connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the server pings.
    pub ping_every: Duration,
    /// The connection is closed when nothing (no pong, no message) has been
    /// heard from the client for this long.
    pub idle_timeout: Duration,
    /// Longest a write (one message or one batch) may take before the
    /// subscriber is dropped as stuck.
    pub send_timeout: Duration,
    /// Most deltas written per flush when several are waiting.
    pub batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            batch: 256,
        }
    }
}

/// Why a connection ended (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed the connection or it broke.
    ClientGone,
    /// A write did not complete within [`Settings::send_timeout`].
    SendTimeout,
    /// Nothing was heard from the client within [`Settings::idle_timeout`].
    Idle,
    /// The bus closed (the daemon is shutting down).
    BusClosed,
}

impl Ended {
    /// Every way a connection ends.
    pub const ALL: [Ended; 4] = [Ended::ClientGone, Ended::SendTimeout, Ended::Idle, Ended::BusClosed];

    /// The `reason` label of `strata_ws_disconnects_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::SendTimeout => "send_timeout",
            Self::Idle => "idle",
            Self::BusClosed => "shutdown",
        }
    }
}

/// Largest message a client may send (a `subscribe` with many hashes fits
/// many times over).
const MAX_CLIENT_MESSAGE: usize = 1 << 20;

/// `frame` as it goes on the wire. Server frames are not masked, so the
/// bytes are the same for every subscriber.
fn wire(frame: Frame) -> Bytes {
    let mut out = Vec::with_capacity(frame.len());
    frame.format(&mut out).expect("formatting into a Vec cannot fail");
    out.into()
}

/// `message` as a final text frame of JSON.
pub(super) fn text<T: Serialize>(message: &T) -> Bytes {
    // Serializing these types cannot fail: no maps with non-string keys, no
    // custom serializers that error.
    let json = serde_json::to_string(message).expect("stream messages serialize");
    wire(Frame::message(json, OpCode::Data(Data::Text), true))
}

/// The frames of the deltas after `floor` that `filter` keeps, and when the
/// oldest of them was published. (A plain fn: the same iterator inside the
/// async connection task trips the higher-ranked lifetime check of its
/// `Send` future.)
fn kept_frames(deltas: &[Arc<Published>], floor: u64, filter: &Filter) -> (Vec<Bytes>, Option<OffsetDateTime>) {
    let mut kept = deltas.iter().filter(|delta| delta.seq > floor && filter.keeps(delta)).peekable();
    let oldest = kept.peek().map(|delta| delta.ts);
    (kept.map(|delta| delta.frame()).collect(), oldest)
}

/// Normalises a `subscribe` into a [`Filter`]: at most
/// [`MAX_SUBSCRIPTION_ENTRIES`] entries (checked first, before any other
/// work), strategy names validated, hashes (`sha256:<hex>`, bare hex,
/// prefixes of at least 8 hex digits) made canonical `sha256:<lowercase
/// hex>` prefixes. Duplicates are dropped. Linear in the entries.
pub fn normalise(strategies: Vec<String>, hashes: Vec<String>) -> Result<Filter, String> {
    let entries = strategies.len() + hashes.len();
    if entries > MAX_SUBSCRIPTION_ENTRIES {
        return Err(format!(
            "a subscription holds at most {MAX_SUBSCRIPTION_ENTRIES} strategies and hashes together; this one has {entries}"
        ));
    }
    if let Some(strategy) = strategies.iter().find(|s| !is_valid_strategy_name(s)) {
        return Err(format!("\"{strategy}\" is not a valid strategy name"));
    }
    let hashes = hashes
        .into_iter()
        .map(|hash| match HashRef::parse(&hash) {
            Ok(parsed) => Ok(parsed.to_string()),
            Err(_) => Err(format!("\"{hash}\" is not a hash or a hash prefix of at least 8 hex digits")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter::new(strategies, hashes))
}

/// Subscriptions with more entries than this are normalised on the blocking
/// pool: a few milliseconds of hashing would otherwise hold an async worker
/// that other connections and `/healthz` need.
const BLOCKING_NORMALISE_ABOVE: usize = 256;

/// [`normalise`], off the async worker threads when the subscription is
/// large.
async fn normalise_off_runtime(strategies: Vec<String>, hashes: Vec<String>) -> Result<Filter, String> {
    if strategies.len() + hashes.len() <= BLOCKING_NORMALISE_ABOVE {
        return normalise(strategies, hashes);
    }
    tokio::task::spawn_blocking(move || normalise(strategies, hashes))
        .await
        .unwrap_or_else(|e| Err(format!("the subscription could not be processed: {e}")))
}

struct GaugeGuard<'a>(&'a Metrics);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.ws_subscribers.dec();
    }
}

struct Connection<'a, W> {
    socket: W,
    usage: &'a UsageIndex,
    metrics: &'a Metrics,
    settings: &'a Settings,
    filter: Filter,
    /// Deltas at or below this `seq` are already in what the client has.
    floor: u64,
}

impl<W: AsyncWrite + Unpin> Connection<'_, W> {
    /// Writes `frames` and flushes, within the send timeout.
    async fn write(&mut self, frames: &[Bytes]) -> Result<(), Ended> {
        write_all(&mut self.socket, self.settings.send_timeout, frames).await
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), Ended> {
        self.write(&[text(message)]).await
    }

    /// Subscribes, then snapshots (see the module docs for why that order),
    /// sends the snapshot and returns the receiver.
    async fn snapshot(&mut self, reset: bool) -> Result<Receiver, Ended> {
        let receiver = self.usage.bus().subscribe();
        let snapshot = self.usage.snapshot(reset);
        self.floor = snapshot.seq;
        self.send(&ServerMessage::Snapshot(snapshot)).await?;
        Ok(receiver)
    }

    /// Sends `{"type":"resync"}` and a fresh `reset` snapshot after the
    /// client fell `missed` deltas behind.
    async fn resync(&mut self, missed: u64) -> Result<Receiver, Ended> {
        self.metrics.ws_resyncs.inc();
        self.send(&ServerMessage::Resync { reason: "lagged".into(), missed }).await?;
        self.snapshot(true).await
    }

    /// Writes the deltas the filter keeps in one flush, within the send
    /// timeout. Returns when the oldest of them was published (`None` when
    /// the filter kept none).
    async fn deltas(&mut self, deltas: &[Arc<Published>]) -> Result<Option<OffsetDateTime>, Ended> {
        let (frames, oldest) = kept_frames(deltas, self.floor, &self.filter);
        if let Some(last) = deltas.last() {
            self.floor = self.floor.max(last.seq);
        }
        if frames.is_empty() {
            return Ok(None);
        }
        self.write(&frames).await?;
        self.metrics.ws_deltas_sent.inc_by(frames.len() as u64);
        Ok(oldest)
    }

    /// Answers one text message from the client.
    async fn client_text(&mut self, body: &str) -> Result<(), Ended> {
        let answer = match strata_shared::json::from_str::<ClientMessage>(body) {
            Ok(ClientMessage::Subscribe { strategies, hashes }) => {
                match normalise_off_runtime(strategies, hashes).await {
                    Ok(filter) => {
                        let answer = ServerMessage::Subscribed {
                            strategies: filter.strategies().to_vec(),
                            hashes: filter.hashes().to_vec(),
                        };
                        self.filter = filter;
                        answer
                    }
                    Err(error) => ServerMessage::Error { error },
                }
            }
            Err(e) => ServerMessage::Error { error: format!("unrecognised message: {e}") },
        };
        self.send(&answer).await
    }
}

/// Serves one subscriber on `io`, a connection whose WebSocket handshake is
/// done, until it leaves, stalls or the daemon stops.
///
/// Without `since` the client gets a snapshot; with it, `resumed` and the
/// missed deltas when the bus still buffers them, else a snapshot flagged
/// `reset` (counted in `strata_ws_resyncs_total`). Then live deltas, in
/// `seq` order, through the client's filter.
pub async fn serve<IO>(io: IO, usage: &UsageIndex, metrics: &Metrics, since: Option<u64>, settings: &Settings) -> Ended
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    metrics.ws_subscribers.inc();
    let _gauge = GaugeGuard(metrics);
    let (read, write) = tokio::io::split(io);
    let (incoming, reader) = read_frames(read).await;
    let _reader = AbortOnDrop(reader);
    let mut connection = Connection { socket: write, usage, metrics, settings, filter: Filter::default(), floor: 0 };
    let ended = match run(&mut connection, incoming, since).await {
        Ok(never) => match never {},
        Err(ended) => ended,
    };
    metrics.ws_disconnects.with_label_values(&[ended.reason()]).inc();
    if ended != Ended::SendTimeout {
        // Best effort, and bounded (`write` has the send timeout): the client
        // may be gone already.
        if connection.write(&[wire(Frame::close(None))]).await.is_ok() {
            let _ = timeout(settings.send_timeout, connection.socket.shutdown()).await;
        }
    }
    tracing::debug!(?ended, "WebSocket subscriber left");
    ended
}

/// Client frames (text, binary, ping, close), parsed by tungstenite in a task
/// of their own: the channel closes when the client goes.
///
/// Why a task: polling the socket for a read from the write loop would try
/// a read (and tungstenite zeroes its read buffer before each try) every
/// time the loop turns, i.e. for every batch written, although clients
/// almost never say anything. A task of its own is polled only when the
/// socket has something to read.
async fn read_frames<IO>(read: ReadHalf<IO>) -> (mpsc::Receiver<Message>, JoinHandle<()>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let mut frames = WebSocketStream::from_raw_socket(ReadOnly(read), Role::Server, Some(config)).await;
    let (sender, receiver) = mpsc::channel(16);
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = frames.next().await {
            if sender.send(frame).await.is_err() {
                break;
            }
        }
    });
    (receiver, reader)
}

/// The read half of a connection for tungstenite, which also wants to write:
/// its automatic replies (a pong to a ping, a close to a close) are dropped
/// here, because every frame to the client goes out through the
/// connection's writer ([`run`] answers pings and closes itself).
struct ReadOnly<IO>(ReadHalf<IO>);

impl<IO: AsyncRead> AsyncRead for ReadOnly<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO> AsyncWrite for ReadOnly<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Aborts the reader task when the connection ends, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run<W: AsyncWrite + Unpin>(
    connection: &mut Connection<'_, W>,
    mut incoming: mpsc::Receiver<Message>,
    since: Option<u64>,
) -> Result<std::convert::Infallible, Ended> {
    let settings = connection.settings.clone();
    let resumed = since.and_then(|since| connection.usage.bus().resume(since).map(|r| (since, r)));
    let mut receiver = match (since, resumed) {
        (None, _) => connection.snapshot(false).await?,
        (Some(_), Some((since, (missed, receiver)))) => {
            connection.floor = since;
            connection.send(&ServerMessage::Resumed { since }).await?;
            connection.deltas(&missed).await?;
            receiver
        }
        (Some(_), None) => {
            connection.metrics.ws_resyncs.inc();
            connection.snapshot(true).await?
        }
    };

    let mut ping = tokio::time::interval_at(Instant::now() + settings.ping_every, settings.ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut batch = Vec::with_capacity(settings.batch);
    loop {
        tokio::select! {
            frame = incoming.recv() => {
                let Some(frame) = frame else { return Err(Ended::ClientGone) };
                heard = Instant::now();
                match frame {
                    Message::Close(_) => return Err(Ended::ClientGone),
                    Message::Text(body) => connection.client_text(&body).await?,
                    Message::Binary(_) => {
                        connection.send(&ServerMessage::Error { error: "binary messages are not understood".into() }).await?
                    }
                    Message::Ping(payload) => connection.write(&[wire(Frame::pong(payload))]).await?,
                    // Pongs only count as "heard".
                    Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            received = receiver.recv() => {
                let mut lagged = match received {
                    Ok(delta) => {
                        batch.push(delta);
                        None
                    }
                    Err(RecvError::Lagged(missed)) => Some(missed),
                    Err(RecvError::Closed) => return Err(Ended::BusClosed),
                };
                drain(&mut receiver, &mut batch, settings.batch, &mut lagged)?;
                let deltas = std::mem::take(&mut batch);
                if let Some(oldest) = connection.deltas(&deltas).await? {
                    let lag = (OffsetDateTime::now_utc() - oldest).as_seconds_f64().max(0.0);
                    connection.metrics.ws_delivery_lag.observe(lag);
                }
                batch = deltas;
                batch.clear();
                if let Some(missed) = lagged {
                    receiver = connection.resync(missed).await?;
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= settings.idle_timeout {
                    return Err(Ended::Idle);
                }
                connection.write(&[wire(Frame::ping(Bytes::new()))]).await?;
            }
        }
    }
}

/// Writes `frames` to `socket` in as few (vectored) writes as it takes and
/// flushes, within `limit`.
async fn write_all<W: AsyncWrite + Unpin>(socket: &mut W, limit: Duration, frames: &[Bytes]) -> Result<(), Ended> {
    let written = timeout(limit, async move {
        let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|frame| IoSlice::new(frame)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            // A writer without vectored writes takes the first slice.
            let n = socket.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        socket.flush().await
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::ClientGone),
        Err(_) => Err(Ended::SendTimeout),
    }
}

/// Moves the deltas already waiting into `batch`, up to `limit`, noting a lag.
fn drain(
    receiver: &mut Receiver,
    batch: &mut Vec<Arc<Published>>,
    limit: usize,
    lagged: &mut Option<u64>,
) -> Result<(), Ended> {
    while lagged.is_none() && batch.len() < limit {
        match receiver.try_recv() {
            Ok(delta) => batch.push(delta),
            Err(TryRecvError::Lagged(missed)) => *lagged = Some(missed),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Closed) => return Err(Ended::BusClosed),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
