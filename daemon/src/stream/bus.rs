//! The delta bus: numbers every usage change, keeps the most recent ones for
//! resumes, and fans them out to WebSocket subscribers.
//!
//! Publishing never blocks and never waits for a subscriber: the fan-out is a
//! [`tokio::sync::broadcast`] ring shared by every subscriber, so a
//! subscriber that stops reading costs no memory of its own; when it falls
//! more than the ring's capacity behind it is told it lagged and resyncs.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use strata_shared::stream::Delta;
use tokio::sync::broadcast;

/// Deltas kept for `?since=` resumes by default.
pub const DEFAULT_REPLAY: usize = 8192;
/// Deltas a subscriber may fall behind by default before it must resync.
pub const DEFAULT_QUEUE: usize = 4096;

/// A subscriber's receiver of live deltas.
pub type Receiver = broadcast::Receiver<Arc<Published>>;

/// A delta as the bus carries it: the delta (it derefs to it) and its
/// `{"type":"delta",…}` WebSocket frame, formatted by the first subscriber
/// that writes it and shared by every other one.
#[derive(Debug)]
pub struct Published {
    delta: Delta,
    frame: OnceLock<Bytes>,
}

/// A delta serialized as `{"type":"delta",…}` without cloning it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Outgoing<'a> {
    Delta(&'a Delta),
}

impl Published {
    fn new(delta: Delta) -> Self {
        Self { delta, frame: OnceLock::new() }
    }

    /// The delta as a whole WebSocket text frame (header and payload).
    /// Formatted once: a clone shares the reference-counted bytes, so no
    /// subscriber serializes, frames, allocates or copies it again (the
    /// kernel copies it into each socket).
    pub fn frame(&self) -> Bytes {
        self.frame.get_or_init(|| super::ws::text(&Outgoing::Delta(&self.delta))).clone()
    }
}

impl Deref for Published {
    type Target = Delta;

    fn deref(&self) -> &Delta {
        &self.delta
    }
}

#[derive(Debug, Default)]
struct Replay {
    /// The `seq` of the last published delta (0 before the first).
    seq: u64,
    recent: VecDeque<Arc<Published>>,
}

/// The delta bus. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Bus {
    replay: Mutex<Replay>,
    replay_capacity: usize,
    sender: broadcast::Sender<Arc<Published>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY, DEFAULT_QUEUE)
    }
}

impl Bus {
    /// A bus keeping `replay` deltas for resumes, letting a subscriber fall
    /// `queue` deltas behind before it lags.
    pub fn new(replay: usize, queue: usize) -> Self {
        let (sender, _) = broadcast::channel(queue.max(1));
        Self { replay: Mutex::new(Replay::default()), replay_capacity: replay.max(1), sender }
    }

    /// Gives `delta` the next `seq` and sends it. Callers publish under the
    /// lock of the state the delta describes, so `seq` order is the order of
    /// the changes.
    pub fn publish(&self, mut delta: Delta) -> u64 {
        let mut replay = self.replay.lock();
        replay.seq += 1;
        delta.seq = replay.seq;
        let delta = Arc::new(Published::new(delta));
        if replay.recent.len() == self.replay_capacity {
            replay.recent.pop_front();
        }
        replay.recent.push_back(delta.clone());
        // Sent under the replay lock, so subscribers see `seq` order. An
        // error only means nobody is listening.
        let _ = self.sender.send(delta);
        replay.seq
    }

    /// The `seq` of the last published delta.
    pub fn seq(&self) -> u64 {
        self.replay.lock().seq
    }

    /// A receiver of every delta published from now on.
    pub fn subscribe(&self) -> Receiver {
        self.sender.subscribe()
    }

    /// Subscribers currently connected.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Subscribes and returns the buffered deltas after `since`, or `None`
    /// when some of them are no longer buffered (or `since` is in the
    /// future). Both are taken under one lock, so nothing falls between.
    pub fn resume(&self, since: u64) -> Option<(Vec<Arc<Published>>, Receiver)> {
        let replay = self.replay.lock();
        if since > replay.seq {
            return None;
        }
        let oldest = replay.recent.front().map_or(replay.seq + 1, |d| d.seq);
        if since + 1 < oldest {
            return None;
        }
        let missed = replay.recent.iter().filter(|d| d.seq > since).cloned().collect();
        Some((missed, self.sender.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::stream::DeltaKind;
    use time::OffsetDateTime;

    fn delta() -> Delta {
        Delta::new(0, OffsetDateTime::UNIX_EPOCH, DeltaKind::RefreshCompleted, None, None)
    }

    #[test]
    fn deltas_are_numbered_and_resumable_while_buffered() {
        let bus = Bus::new(3, 16);
        let mut live = bus.subscribe();
        for _ in 0..5 {
            bus.publish(delta());
        }
        assert_eq!(bus.seq(), 5);
        assert_eq!(live.try_recv().unwrap().seq, 1);

        let (missed, _) = bus.resume(2).expect("3, 4 and 5 are buffered");
        assert_eq!(missed.iter().map(|d| d.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(bus.resume(5).unwrap().0.is_empty(), "up to date");
        assert!(bus.resume(1).is_none(), "2 fell out of the buffer");
        assert!(bus.resume(6).is_none(), "from the future (another daemon run)");
    }

    #[test]
    fn a_subscriber_that_does_not_read_lags_instead_of_growing() {
        let bus = Bus::new(8, 4);
        let mut slow = bus.subscribe();
        for _ in 0..10 {
            bus.publish(delta());
        }
        assert!(matches!(slow.try_recv(), Err(broadcast::error::TryRecvError::Lagged(6))));
        assert_eq!(slow.try_recv().unwrap().seq, 7, "then it reads on from the oldest kept");
    }

    #[test]
    fn a_delta_is_framed_once_and_its_bytes_shared() {
        let bus = Bus::new(8, 8);
        let mut live = bus.subscribe();
        bus.publish(delta());
        let published = live.try_recv().unwrap();
        let (first, second) = (published.frame(), published.frame());
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes, not a copy");
        // A final, unmasked text frame, its length (16-bit past 125 bytes), then the JSON.
        assert_eq!(first[0], 0x81, "FIN + text");
        let (length, start) = match first[1] {
            126 => (usize::from(u16::from_be_bytes([first[2], first[3]])), 4),
            short => (usize::from(short), 2),
        };
        assert_eq!(length, first.len() - start, "unmasked; the length is the payload's");
        let decoded: strata_shared::stream::ServerMessage = serde_json::from_slice(&first[start..]).unwrap();
        assert_eq!(decoded, strata_shared::stream::ServerMessage::Delta((**published).clone()));
    }
}
