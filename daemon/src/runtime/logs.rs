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

/// Default longest message kept, in bytes (`[runtime] log_line_max_bytes`);
/// longer ones are cut at a character boundary and end with the
/// [`truncation_mark`].
pub const DEFAULT_LINE_MAX_BYTES: usize = 8 * 1024;

/// Default bytes of messages one instance's ring keeps (`[runtime] log_ring_bytes`).
pub const DEFAULT_RING_BYTES: usize = 256 * 1024;

/// What one kept line costs beyond its message's bytes: the line itself.
pub const LINE_OVERHEAD_BYTES: usize = std::mem::size_of::<LogLine>();

/// Longest [`truncation_mark`] (its byte count has at most 20 digits).
pub const MAX_MARK_BYTES: usize = "… [truncated, 18446744073709551615 bytes]".len();

/// The marker ending a message cut from `original_bytes` bytes.
pub fn truncation_mark(original_bytes: usize) -> String {
    format!("… [truncated, {original_bytes} bytes]")
}

/// How much of an instance's logging is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Longest message kept, in bytes (the mark comes on top).
    pub line_max_bytes: usize,
    /// Most bytes the ring holds: messages plus [`LINE_OVERHEAD_BYTES`] a line.
    pub ring_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { line_max_bytes: DEFAULT_LINE_MAX_BYTES, ring_bytes: DEFAULT_RING_BYTES }
    }
}

impl LogLimits {
    /// The most one line can cost in the ring.
    pub fn max_line_cost(&self) -> usize {
        self.line_max_bytes + MAX_MARK_BYTES + LINE_OVERHEAD_BYTES
    }

    /// Checks the ring can hold at least one line of the longest size.
    pub fn validate(&self) -> Result<(), String> {
        if self.line_max_bytes == 0 {
            return Err("[runtime] log_line_max_bytes must be at least 1".into());
        }
        if self.ring_bytes < self.max_line_cost() {
            return Err(format!(
                "[runtime] log_ring_bytes must be at least log_line_max_bytes + {} (one truncated line), \
                 so at least {}",
                MAX_MARK_BYTES + LINE_OVERHEAD_BYTES,
                self.max_line_cost()
            ));
        }
        Ok(())
    }
}

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
    /// The text, at most `[runtime] log_line_max_bytes` plus the truncation mark.
    pub message: String,
}

impl LogLine {
    /// What the line costs in the ring's byte budget.
    fn cost(&self) -> usize {
        self.message.len() + LINE_OVERHEAD_BYTES
    }
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

/// Bounded buffer of an instance's most recent log lines, bounded both in
/// lines and in bytes; the oldest lines are dropped when a new one does not
/// fit.
#[derive(Debug)]
pub struct LogRing {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    /// Sum of the kept lines' [`LogLine::cost`].
    bytes: usize,
    limits: LogLimits,
}

impl Ring {
    /// Drops the oldest lines until `extra` more bytes and one more line fit.
    fn make_room(&mut self, capacity: usize, extra: usize) {
        while !self.lines.is_empty() && (self.lines.len() >= capacity || self.bytes + extra > self.limits.ring_bytes) {
            if let Some(line) = self.lines.pop_front() {
                self.bytes -= line.cost();
            }
        }
    }
}

impl Default for LogRing {
    /// A ring of [`DEFAULT_LOG_CAPACITY`] lines and the default [`LogLimits`].
    fn default() -> Self {
        LogRing::new(DEFAULT_LOG_CAPACITY)
    }
}

impl LogRing {
    /// A ring keeping the last `capacity` lines (at least one), with the
    /// default [`LogLimits`].
    pub fn new(capacity: usize) -> Self {
        LogRing { capacity: capacity.max(1), inner: Mutex::new(Ring::default()) }
    }

    /// How many lines the ring keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The limits in force.
    pub fn limits(&self) -> LogLimits {
        self.inner.lock().limits
    }

    /// Applies new limits; lines already kept are not cut again, but the
    /// oldest are dropped until the ring fits its new byte budget.
    pub fn set_limits(&self, limits: LogLimits) {
        let mut ring = self.inner.lock();
        ring.limits = limits;
        ring.make_room(self.capacity.saturating_add(1), 0);
    }

    /// Appends a line stamped now, truncating a message longer than the
    /// line limit (the kept text is a fresh allocation: the caller's large
    /// buffer is freed, not kept behind a short string).
    pub fn push(&self, level: LogLevel, message: impl Into<String>) {
        let message = message.into();
        let line_max = self.inner.lock().limits.line_max_bytes;
        let line = LogLine { ts: OffsetDateTime::now_utc(), level, message: truncate_message(message, line_max) };
        let mut ring = self.inner.lock();
        ring.make_room(self.capacity, line.cost());
        ring.bytes += line.cost();
        ring.lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.inner.lock().lines.iter().cloned().collect()
    }

    /// Number of kept lines.
    pub fn len(&self) -> usize {
        self.inner.lock().lines.len()
    }

    /// Bytes the kept lines cost (messages plus [`LINE_OVERHEAD_BYTES`] each).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().lines.is_empty()
    }

    /// Drops every kept line.
    pub fn clear(&self) {
        let mut ring = self.inner.lock();
        ring.lines.clear();
        ring.bytes = 0;
    }
}

/// Cuts `message` to `max_bytes` (at a character boundary) and appends the
/// [`truncation_mark`]; shorter messages are returned unchanged. A cut
/// message is copied into a new, right-sized allocation, so a huge original
/// is freed rather than kept as spare capacity.
pub fn truncate_message(mut message: String, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        if message.capacity() > message.len().saturating_mul(2).max(64) {
            message.shrink_to_fit();
        }
        return message;
    }
    truncate_message_of(&message, max_bytes)
}

/// The size the last [`truncation_mark`] in `text` gives, if any: part of
/// the text was cut once already (a huge thrown message or logged string,
/// by [`crate::js::bounded_text`]), so the original was at least that big.
fn marked_size(text: &str) -> Option<usize> {
    let (_, rest) = text.rsplit_once("… [truncated, ")?;
    rest.split_once(" bytes]")?.0.parse().ok()
}

/// The first `max_bytes` of `text` (cut at a character boundary) followed by
/// the [`truncation_mark`] of its full size, in a right-sized allocation.
/// Call it only for text longer than `max_bytes`.
pub fn truncate_message_of(text: &str, max_bytes: usize) -> String {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Text cut once already keeps the size of its original.
    let mark = truncation_mark(marked_size(text).map_or(text.len(), |size| size.max(text.len())));
    let mut cut = String::with_capacity(end + mark.len());
    cut.push_str(&text[..end]);
    cut.push_str(&mark);
    cut
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
        let long = "é".repeat(DEFAULT_LINE_MAX_BYTES);
        ring.push(LogLevel::Warn, long.clone());
        let message = &ring.lines()[0].message;
        let kept = message.strip_suffix(&truncation_mark(long.len())).expect("marked with the original size");
        assert_eq!(kept.len(), DEFAULT_LINE_MAX_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));

        let exact = "x".repeat(DEFAULT_LINE_MAX_BYTES);
        ring.push(LogLevel::Warn, exact.clone());
        assert_eq!(ring.lines()[1].message, exact);

        // Cutting inside a multi-byte character backs off to its start.
        let cut = truncate_message("aé".into(), 2);
        assert_eq!(cut, format!("a{}", truncation_mark(3)));
    }

    #[test]
    fn a_20_mib_line_is_kept_as_8_kib_and_its_buffer_is_freed() {
        let ring = LogRing::default();
        let huge = "x".repeat(20 << 20);
        ring.push(LogLevel::Log, huge);
        let line = &ring.lines()[0].message;
        assert_eq!(line.len(), DEFAULT_LINE_MAX_BYTES + truncation_mark(20 << 20).len());
        assert!(line.ends_with("… [truncated, 20971520 bytes]"), "{}", &line[line.len() - 40..]);
        assert!(ring.bytes() <= DEFAULT_LINE_MAX_BYTES + MAX_MARK_BYTES + LINE_OVERHEAD_BYTES);
        // The kept string is a right-sized copy, not the 20 MiB buffer cut short.
        let kept = truncate_message("y".repeat(20 << 20), DEFAULT_LINE_MAX_BYTES);
        assert!(kept.capacity() < 2 * DEFAULT_LINE_MAX_BYTES, "capacity {}", kept.capacity());
    }

    #[test]
    fn many_large_lines_keep_the_ring_under_its_byte_cap() {
        let ring = LogRing::new(10_000);
        let limits = LogLimits { line_max_bytes: 1000, ring_bytes: 20_000 };
        limits.validate().unwrap();
        ring.set_limits(limits);
        for i in 0..1_000 {
            ring.push(LogLevel::Info, format!("{i:04}{}", "z".repeat(5_000)));
            assert!(ring.bytes() <= limits.ring_bytes, "line {i}: {} bytes", ring.bytes());
        }
        let lines = ring.lines();
        let cost: usize = lines.iter().map(|l| l.message.len() + LINE_OVERHEAD_BYTES).sum();
        assert_eq!(ring.bytes(), cost, "the running total matches the lines kept");
        assert!(lines.len() >= limits.ring_bytes / limits.max_line_cost(), "kept {} lines", lines.len());
        assert!(lines.last().unwrap().message.starts_with("0999"), "the newest line is kept");

        // Small lines are bounded by the line capacity instead.
        let ring = LogRing::new(5);
        for i in 0..50 {
            ring.push(LogLevel::Info, format!("{i}"));
        }
        assert_eq!(ring.len(), 5);
        assert_eq!(ring.bytes(), ring.lines().iter().map(|l| l.message.len() + LINE_OVERHEAD_BYTES).sum::<usize>());

        // Lowering the budget drops the oldest lines at once.
        let ring = LogRing::new(100);
        for _ in 0..50 {
            ring.push(LogLevel::Info, "w".repeat(500));
        }
        ring.set_limits(LogLimits { line_max_bytes: 100, ring_bytes: 2_000 });
        assert!(ring.bytes() <= 2_000);
        ring.clear();
        assert_eq!(ring.bytes(), 0);
    }

    #[test]
    fn limits_must_hold_one_full_line() {
        assert!(LogLimits::default().validate().is_ok());
        assert!(LogLimits { line_max_bytes: 0, ring_bytes: 1 << 20 }.validate().is_err());
        let tight = LogLimits { line_max_bytes: 8192, ring_bytes: 8192 };
        assert!(tight.validate().unwrap_err().contains("log_ring_bytes"));
        assert!(LogLimits { ring_bytes: tight.max_line_cost(), ..tight }.validate().is_ok());
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

    #[test]
    fn text_cut_twice_keeps_the_size_of_its_original() {
        let once = truncate_message_of(&"x".repeat(3_000_000), 1_000_000);
        assert!(once.ends_with("… [truncated, 3000000 bytes]"), "{}", &once[once.len() - 40..]);
        let twice = truncate_message(once, 8192);
        assert_eq!(twice.len(), 8192 + truncation_mark(3_000_000).len());
        assert!(twice.ends_with("… [truncated, 3000000 bytes]"));
    }
}
