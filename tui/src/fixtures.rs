//! Sample data shaped like `stratad --demo`, with a fixed "now": used by the
//! screen tests, the render bench and anyone driving the console headless.

use strata_shared::RevisionHash;
use strata_shared::api::{CountersView, InstanceState, InstanceStrategy, InstanceView, ScopeEntry};
use strata_shared::stream::{Delta, DeltaKind, RevisionState, ServerMessage, Snapshot};
use time::{Duration, OffsetDateTime};

use crate::client::{DriftEntry, InstanceList, LogLine};

/// The fixed "now" of every fixture: 2026-11-25T12:00:00Z.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_608_000).expect("valid timestamp")
}

/// The hash of a named sample revision (`momentum-v1.1.0` …).
pub fn hash(name: &str) -> RevisionHash {
    RevisionHash::of(name.as_bytes())
}

/// One revision's usage.
pub fn revision(
    strategy: &str,
    rev: &str,
    tags: &[&str],
    instances: &[&str],
    first: Option<i64>,
    last: Option<i64>,
) -> RevisionState {
    let ago = |s: i64| now() - Duration::seconds(s);
    RevisionState {
        strategy: strategy.to_owned(),
        hash: hash(rev),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        count: instances.len(),
        instances: instances.iter().map(|i| (*i).to_owned()).collect(),
        first_seen: first.map(ago),
        last_seen: last.map(ago),
        retired: false,
    }
}

/// The demo's revisions: momentum (three), mean-reversion, grid, noop.
pub fn snapshot() -> ServerMessage {
    let mut old = revision("momentum", "momentum-v1.0.0", &["v1.0.0"], &[], Some(3 * 86_400), Some(86_400 + 600));
    old.retired = false;
    ServerMessage::Snapshot(Snapshot {
        seq: 41,
        reset: false,
        revisions: vec![
            revision("grid", "grid-v0.1.0", &["latest", "v0.1.0"], &["grid-btc"], Some(7200), Some(2)),
            revision(
                "mean-reversion",
                "mean-reversion-v0.3.0",
                &["latest", "prod", "v0.3.0"],
                &["mean-reversion-eth"],
                Some(7200),
                Some(2),
            ),
            old,
            revision("momentum", "momentum-v1.1.0", &["prod", "v1.1.0"], &["momentum-prod"], Some(3 * 3600), Some(10)),
            revision(
                "momentum",
                "momentum-v1.2.0",
                &["latest", "v1.2.0"],
                &["momentum-canary"],
                Some(20 * 60),
                Some(3),
            ),
            revision("noop", "noop-v1.0.0", &["latest", "v1.0.0"], &[], None, None),
        ],
    })
}

/// `count` revisions of one strategy `big`, every tenth one running.
pub fn big_snapshot(count: usize) -> ServerMessage {
    let revisions = (0..count)
        .map(|i| {
            let running: &[&str] = if i % 10 == 0 { &["x"] } else { &[] };
            let tag = format!("v{i}");
            revision("big", &format!("big-{i}"), &[tag.as_str()], running, Some(86_400 + i as i64), Some(i as i64))
        })
        .collect();
    ServerMessage::Snapshot(Snapshot { seq: 1, reset: false, revisions })
}

/// An instance of `strategy` pinned to `rev`.
pub fn instance(id: &str, strategy: &str, rev: &str, selector: &str, state: InstanceState) -> InstanceView {
    let running = state == InstanceState::Running;
    InstanceView {
        id: id.to_owned(),
        strategy: InstanceStrategy {
            identifier: strategy.to_owned(),
            selector: selector.to_owned(),
            hash: hash(rev),
            tag: rev.rsplit('-').next().map(str::to_owned),
            config: serde_json::json!({"fastPeriod": 5, "slowPeriod": 20, "size": 0.01})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        },
        scope: [("sim".to_owned(), ScopeEntry { symbols: vec!["BTC-USDT".to_owned()] })].into_iter().collect(),
        state,
        last_error: (state == InstanceState::Failed)
            .then(|| "TypeError: cannot read property 'price' of undefined".to_owned()),
        drift: false,
        resolves_to: Some(hash(rev)),
        counters: CountersView {
            events_delivered: if running { 10_234 } else { 420 },
            events_dropped: 0,
            handler_errors: if state == InstanceState::Failed { 3 } else { 0 },
            orders_submitted: if running { 12 } else { 1 },
            orders_filled: if running { 9 } else { 1 },
            last_event_at: Some(now() - Duration::seconds(if running { 1 } else { 4000 })),
        },
        created_at: now() - Duration::days(3),
        started_at: running.then(|| now() - Duration::seconds(3 * 3600 + 125)),
        links: Default::default(),
    }
}

/// The instances pinned to `momentum-v1.1.0`.
pub fn momentum_prod_instances() -> InstanceList {
    let mut drifting = instance("momentum-shadow", "momentum", "momentum-v1.1.0", "momentum", InstanceState::Stopped);
    drifting.drift = true;
    drifting.resolves_to = Some(hash("momentum-v1.2.0"));
    InstanceList {
        instances: vec![
            instance("momentum-prod", "momentum", "momentum-v1.1.0", "momentum:prod", InstanceState::Running),
            drifting,
            instance("momentum-eu", "momentum", "momentum-v1.1.0", "momentum:prod", InstanceState::Failed),
        ],
        total: 3,
    }
}

/// Drifting instances (one: `momentum-shadow`).
pub fn drift() -> Vec<DriftEntry> {
    vec![DriftEntry { strategy: "momentum".into(), hash: hash("momentum-v1.1.0"), id: "momentum-shadow".into() }]
}

/// A few log lines.
pub fn logs() -> Vec<LogLine> {
    let at = |s: i64| now() - Duration::seconds(s);
    vec![
        LogLine { ts: at(65), level: "info".into(), message: "momentum: fast 5 / slow 20 on BTC-USDT".into() },
        LogLine { ts: at(31), level: "log".into(), message: "cross up at 64120.5: buy 0.01".into() },
        LogLine { ts: at(2), level: "warn".into(), message: "order book thin; skipping".into() },
    ]
}

/// An instance delta (new state of `rev`: `count` running).
pub fn instance_delta(
    seq: u64,
    kind: DeltaKind,
    strategy: &str,
    rev: &str,
    id: &str,
    state: InstanceState,
    count: usize,
) -> ServerMessage {
    let mut d = Delta::new(seq, now(), kind, Some(strategy.to_owned()), Some(hash(rev)));
    d.instance_id = Some(id.to_owned());
    d.state = Some(state);
    d.count = count;
    d.first_seen = Some(now() - Duration::hours(3));
    d.last_seen = Some(now());
    ServerMessage::Delta(d)
}
