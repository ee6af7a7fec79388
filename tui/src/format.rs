//! Small text formatters shared by the views: short hashes, relative times,
//! uptimes. All take "now" as an argument so screens are deterministic in tests.

use std::fmt::Write as _;

use strata_shared::RevisionHash;
use time::OffsetDateTime;

/// Hex digits shown for a hash in lists.
pub const SHORT_HASH_LEN: usize = 12;

/// `3fa9c1d2e4b5`: the first [`SHORT_HASH_LEN`] hex digits, without `sha256:`.
pub fn short_hash(hash: &RevisionHash) -> String {
    let mut out = String::with_capacity(SHORT_HASH_LEN);
    for byte in &hash.as_bytes()[..SHORT_HASH_LEN / 2] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A duration in whole seconds as the largest one or two units: `42s`, `3m05s`, `2h07m`, `4d03h`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `just now`, `12s ago`, `3m ago`, `5h ago`, `2d ago`, or `never` for `None`.
/// A time in the future (clock skew) reads `just now`.
pub fn relative(now: OffsetDateTime, then: Option<OffsetDateTime>) -> String {
    let Some(then) = then else { return "never".to_owned() };
    let s = (now - then).whole_seconds();
    match s {
        i64::MIN..5 => "just now".to_owned(),
        5..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// How long since `started`, when running; `-` otherwise.
pub fn uptime(now: OffsetDateTime, started: Option<OffsetDateTime>, running: bool) -> String {
    match started {
        Some(t) if running => duration((now - t).whole_seconds()),
        _ => "-".to_owned(),
    }
}

/// `s` cut to `width` characters, with `…` when cut.
pub fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ago = |s: i64| relative(now, Some(now - time::Duration::seconds(s)));
        assert_eq!(relative(now, None), "never");
        assert_eq!(ago(-30), "just now");
        assert_eq!(ago(3), "just now");
        assert_eq!(ago(42), "42s ago");
        assert_eq!(ago(180), "3m ago");
        assert_eq!(ago(5 * 3600 + 10), "5h ago");
        assert_eq!(ago(2 * 86_400), "2d ago");
    }

    #[test]
    fn durations_and_hashes_are_compact() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(7620), "2h07m");
        assert_eq!(duration(90_000), "1d01h");
        let hash = RevisionHash::of(b"x");
        assert_eq!(short_hash(&hash), hash.to_hex()[..SHORT_HASH_LEN]);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
