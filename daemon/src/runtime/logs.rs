//! Per-instance observability: the recent-log ring and the counters
//! (SPEC §2 "Per-instance counters").
//!
//! Both are written by the JS host on the instance's thread and read by the
//! API from any thread, so they use a short mutex (the ring) and relaxed
//! atomics (the counters).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
pub use strata_shared::api::CountersView;

use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

use crate::js::LogLevel;

/// Lines kept by [`LogRing::default`].
pub const DEFAULT_LOG_CAPACITY: usize = 200;

/// Longest message kept, in bytes; longer ones are cut at a character
/// boundary and end with [`TRUNCATION_MARK`].
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Appended to a message cut at [`MAX_MESSAGE_BYTES`].
pub const TRUNCATION_MARK: &str = "… [truncated]";

/// One line of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// When the line was logged (RFC 3339 in JSON).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "strata_shared::schema::Rfc3339")]
    pub ts: OffsetDateTime,
    /// Severity (`log`, `info`, `warn` or `error` in JSON).
    #[serde(serialize_with = "serialize_level")]
    #[schemars(schema_with = "level_schema")]
    pub level: LogLevel,
    /// The text, at most [`MAX_MESSAGE_BYTES`] plus the truncation mark.
    pub message: String,
}

fn serialize_level<S: Serializer>(level: &LogLevel, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(level.method())
}

fn level_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let levels: Vec<&str> = LogLevel::ALL.iter().map(|level| level.method()).collect();
    schemars::json_schema!({"type": "string", "enum": levels})
}

/// `GET /strategy/instances/{id}/logs`: the instance's recent lines, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LogLines {
    /// At most the ring's capacity of lines.
    pub lines: Vec<LogLine>,
}

/// Bounded buffer of an instance's most recent log lines; the oldest line is
/// dropped when a new one does not fit.
#[derive(Debug)]
pub struct LogRing {
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
}

impl Default for LogRing {
    /// A ring of [`DEFAULT_LOG_CAPACITY`] lines.
    fn default() -> Self {
        LogRing::new(DEFAULT_LOG_CAPACITY)
    }
}

impl LogRing {
    /// A ring keeping the last `capacity` lines (at least one).
    pub fn new(capacity: usize) -> Self {
        LogRing { capacity: capacity.max(1), lines: Mutex::new(VecDeque::new()) }
    }

    /// How many lines the ring keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a line stamped now, truncating a message longer than
    /// [`MAX_MESSAGE_BYTES`].
    pub fn push(&self, level: LogLevel, message: impl Into<String>) {
        let line = LogLine { ts: OffsetDateTime::now_utc(), level, message: truncate_message(message.into()) };
        let mut lines = self.lines.lock();
        if lines.len() >= self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().iter().cloned().collect()
    }

    /// Number of kept lines.
    pub fn len(&self) -> usize {
        self.lines.lock().len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.lock().is_empty()
    }

    /// Drops every kept line.
    pub fn clear(&self) {
        self.lines.lock().clear();
    }
}

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] (at a character boundary) and
/// marks the cut; shorter messages are returned unchanged.
fn truncate_message(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(TRUNCATION_MARK);
    message
}

/// An instance's counters. Fields are public so the instance manager can
/// count what it sees (e.g. [`Counters::events_dropped`] for its queue);
/// relaxed ordering is enough, they are statistics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events handed to the strategy (a missing handler still counts).
    pub events_delivered: AtomicU64,
    /// Market events dropped from the instance's full queue.
    pub events_dropped: AtomicU64,
    /// Handler calls that threw (or whose returned promise rejected).
    pub handler_errors: AtomicU64,
    /// Orders submitted, dry-run ones included.
    pub orders_submitted: AtomicU64,
    /// ExecReports in state `filled` received.
    pub orders_filled: AtomicU64,
    /// When the last event was delivered, in milliseconds since the Unix
    /// epoch; 0 = never.
    pub last_event_at: AtomicI64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy, as the API shows it (`counters` of an instance).
    pub fn snapshot(&self) -> CountersView {
        let last_event_at = match self.last_event_at.load(Ordering::Relaxed) {
            0 => None,
            millis => OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok(),
        };
        CountersView {
            events_delivered: self.events_delivered.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            handler_errors: self.handler_errors.load(Ordering::Relaxed),
            orders_submitted: self.orders_submitted.load(Ordering::Relaxed),
            orders_filled: self.orders_filled.load(Ordering::Relaxed),
            last_event_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ring_keeps_the_last_lines_in_order() {
        let ring = LogRing::new(3);
        assert!(ring.is_empty());
        for i in 0..5 {
            ring.push(LogLevel::Info, format!("line {i}"));
        }
        let lines = ring.lines();
        assert_eq!(lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["line 2", "line 3", "line 4"]);
        assert_eq!(ring.len(), 3);
        assert_eq!(LogRing::default().capacity(), DEFAULT_LOG_CAPACITY);
        ring.clear();
        assert!(ring.is_empty());
    }

    #[test]
    fn long_messages_are_truncated_at_a_char_boundary() {
        let ring = LogRing::new(2);
        ring.push(LogLevel::Warn, "é".repeat(MAX_MESSAGE_BYTES));
        let message = &ring.lines()[0].message;
        let kept = message.strip_suffix(TRUNCATION_MARK).expect("marked");
        assert_eq!(kept.len(), MAX_MESSAGE_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));

        let exact = "x".repeat(MAX_MESSAGE_BYTES);
        ring.push(LogLevel::Warn, exact.clone());
        assert_eq!(ring.lines()[1].message, exact);
    }

    #[test]
    fn log_line_serialises_camel_case_with_rfc3339() {
        let line = LogLine {
            ts: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            level: LogLevel::Error,
            message: "boom".into(),
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            json!({"ts": "2023-11-14T22:13:20Z", "level": "error", "message": "boom"})
        );
    }

    #[test]
    fn counters_snapshot() {
        let counters = Counters::default();
        assert_eq!(
            serde_json::to_value(counters.snapshot()).unwrap(),
            json!({"eventsDelivered": 0, "eventsDropped": 0, "handlerErrors": 0,
                   "ordersSubmitted": 0, "ordersFilled": 0, "lastEventAt": null})
        );
        Counters::bump(&counters.events_delivered);
        Counters::bump(&counters.events_delivered);
        Counters::bump(&counters.orders_filled);
        counters.last_event_at.store(1_700_000_000_123, Ordering::Relaxed);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.events_delivered, 2);
        assert_eq!(snapshot.orders_filled, 1);
        assert_eq!(serde_json::to_value(snapshot).unwrap()["lastEventAt"], json!("2023-11-14T22:13:20.123Z"));
    }
}
