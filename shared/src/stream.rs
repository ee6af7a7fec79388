//! The WebSocket usage stream protocol (`GET /ws`, SPEC §3.1).
//!
//! Every message is a JSON object with a `type`. The server sends a
//! [`Snapshot`] on connect (or `resumed` then the missed deltas when the
//! client asked for `?since=<seq>` and the daemon still buffers them), then
//! [`Delta`]s in `seq` order. Deltas carry the new state of what they touch
//! (counts, timestamps, retired flag), not increments, so applying one twice
//! is harmless and a client never needs another request to stay current.
//! [`UsageMirror`] is the client side of that: it applies messages to a
//! local copy of every revision's usage.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::RevisionHash;
use crate::api::InstanceState;

/// A message from the daemon.
// Messages live one at a time on their way to or from JSON; boxing the
// delta would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Every revision's usage as of `seq`.
    Snapshot(Snapshot),
    /// One change, in `seq` order.
    Delta(Delta),
    /// The `since` of a resume is still buffered: the missed deltas follow.
    Resumed {
        /// The `seq` the client asked to resume after.
        since: u64,
    },
    /// A `subscribe` took effect: from now on only matching deltas are sent.
    Subscribed {
        /// Strategy names kept (empty = all).
        strategies: Vec<String>,
        /// Hashes kept, as canonical `sha256:<hex>` or prefixes (empty = all).
        hashes: Vec<String>,
    },
    /// The client fell behind by more than its queue holds: deltas were
    /// lost. A snapshot with `reset: true` follows at once.
    Resync {
        /// Why (e.g. `lagged`).
        reason: String,
        /// Deltas the client missed.
        missed: u64,
    },
    /// A client message could not be understood; the connection stays open.
    Error {
        /// What was wrong.
        error: String,
    },
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    /// Keep only deltas about these strategies or hashes (both empty = all).
    /// Answered with `subscribed`.
    Subscribe {
        /// Strategy names.
        #[serde(default)]
        strategies: Vec<String>,
        /// Hashes in any accepted form (`sha256:<hex>`, bare hex, a prefix of ≥ 8).
        #[serde(default)]
        hashes: Vec<String>,
    },
}

/// `{"type":"snapshot"}`: every revision's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The `seq` of the last delta it includes; deltas after it follow.
    pub seq: u64,
    /// True when this replaces what the client had: a resume from a `seq` no
    /// longer buffered, or a resync after falling behind.
    #[serde(default)]
    pub reset: bool,
    /// Every loaded revision, zero-usage ones included, by strategy then hash.
    pub revisions: Vec<RevisionState>,
}

/// One revision's usage, as the snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionState {
    /// Strategy name.
    pub strategy: String,
    /// The revision.
    pub hash: RevisionHash,
    /// Tags pointing at it.
    pub tags: Vec<String>,
    /// Running instances.
    pub count: usize,
    /// Ids of the running instances, by id.
    pub instances: Vec<String>,
    /// First time any instance ran it (`null` if never).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it (`null` if never).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_seen: Option<OffsetDateTime>,
    /// No running instance, no tag, past the grace period.
    pub retired: bool,
}

/// What a delta reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeltaKind {
    /// An instance was created (pinned to `hash`, not running).
    InstanceCreated,
    /// An instance started running `hash`.
    InstanceStarted,
    /// An instance stopped running `hash`.
    InstanceStopped,
    /// An instance running `hash` failed.
    InstanceFailed,
    /// An instance moved from `previousHash` to `hash`.
    InstanceRepinned,
    /// An instance was deleted.
    InstanceDeleted,
    /// A revision was uploaded (`tags` given).
    RevisionAdded,
    /// A revision was deleted.
    RevisionDeleted,
    /// A revision became retired (no running instance, no tag, grace over).
    RevisionRetired,
    /// `tag` moved from `previousHash` (if any) to `hash`.
    TagMoved,
    /// A refresh finished (`results` gives counts by reason).
    RefreshCompleted,
    /// The daemon's periodic heartbeat: every revision with running
    /// instances was seen running at `lastSeen` (`strategy` and `hash` are
    /// `null`). One delta for all of them, so a client's `lastSeen` keeps up
    /// with the daemon's without a message per revision.
    RevisionsSeen,
}

impl DeltaKind {
    /// Every kind, in declaration order.
    pub const ALL: [DeltaKind; 12] = [
        DeltaKind::InstanceCreated,
        DeltaKind::InstanceStarted,
        DeltaKind::InstanceStopped,
        DeltaKind::InstanceFailed,
        DeltaKind::InstanceRepinned,
        DeltaKind::InstanceDeleted,
        DeltaKind::RevisionAdded,
        DeltaKind::RevisionDeleted,
        DeltaKind::RevisionRetired,
        DeltaKind::TagMoved,
        DeltaKind::RefreshCompleted,
        DeltaKind::RevisionsSeen,
    ];

    /// The camelCase name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaKind::InstanceCreated => "instanceCreated",
            DeltaKind::InstanceStarted => "instanceStarted",
            DeltaKind::InstanceStopped => "instanceStopped",
            DeltaKind::InstanceFailed => "instanceFailed",
            DeltaKind::InstanceRepinned => "instanceRepinned",
            DeltaKind::InstanceDeleted => "instanceDeleted",
            DeltaKind::RevisionAdded => "revisionAdded",
            DeltaKind::RevisionDeleted => "revisionDeleted",
            DeltaKind::RevisionRetired => "revisionRetired",
            DeltaKind::TagMoved => "tagMoved",
            DeltaKind::RefreshCompleted => "refreshCompleted",
            DeltaKind::RevisionsSeen => "revisionsSeen",
        }
    }
}

/// `{"type":"delta"}`: one change, carrying the new state of the revision
/// (and instance) it touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// Position in the stream; consecutive for one daemon run.
    pub seq: u64,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "crate::schema::Rfc3339")]
    pub ts: OffsetDateTime,
    /// What happened.
    pub kind: DeltaKind,
    /// The strategy (`null` only for `refreshCompleted` and `revisionsSeen`).
    pub strategy: Option<String>,
    /// The revision (`null` for `refreshCompleted` and `revisionsSeen`, and for a `tagMoved`
    /// that deleted the tag: it points nowhere now).
    pub hash: Option<RevisionHash>,
    /// The instance, for `instance*` kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The instance's state after the change, for `instance*` kinds other
    /// than `instanceDeleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    /// Running instances on `hash` after the change.
    pub count: usize,
    /// `hash`'s first-seen time after the change.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub first_seen: Option<OffsetDateTime>,
    /// `hash`'s last-seen time after the change.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::schema::Rfc3339>")]
    pub last_seen: Option<OffsetDateTime>,
    /// Whether `hash` is retired after the change.
    #[serde(default)]
    pub retired: bool,
    /// `revisionAdded`: the revision's tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// `tagMoved`: the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `instanceRepinned`, `tagMoved`: where it was before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<RevisionHash>,
    /// `instanceRepinned`: running instances left on `previousHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_count: Option<usize>,
    /// `refreshCompleted`: results by reason code (`refreshed`, `alreadyPinned`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<BTreeMap<String, usize>>,
}

impl Delta {
    /// A delta of `kind` about `strategy`/`hash` with every optional field empty.
    pub fn new(
        seq: u64,
        ts: OffsetDateTime,
        kind: DeltaKind,
        strategy: Option<String>,
        hash: Option<RevisionHash>,
    ) -> Self {
        Self {
            seq,
            ts,
            kind,
            strategy,
            hash,
            instance_id: None,
            state: None,
            count: 0,
            first_seen: None,
            last_seen: None,
            retired: false,
            tags: None,
            tag: None,
            previous_hash: None,
            previous_count: None,
            results: None,
        }
    }
}

/// The most entries (strategy names and hashes together) one `subscribe`
/// may hold (SPEC §8). More is refused with an error message.
pub const MAX_SUBSCRIPTION_ENTRIES: usize = crate::api::MAX_TARGETS;

/// A subscription filter: strategy names and hash prefixes (`sha256:<hex…>`).
///
/// Matching costs no more with 10,000 entries than with one: names are in a
/// hash set, and a hash is kept when one of its prefixes, of one of the few
/// lengths the subscription uses (at most 57), is in the prefix set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Strategy names, first occurrence order.
    strategies: Vec<String>,
    /// Canonical hash prefixes, `sha256:` included, first occurrence order.
    hashes: Vec<String>,
    strategy_set: HashSet<String>,
    hash_set: HashSet<String>,
    /// The distinct lengths of the prefixes in `hash_set`, ascending.
    prefix_lens: Vec<usize>,
}

impl Filter {
    /// A filter keeping `strategies` and revisions whose `sha256:<hex>`
    /// starts with one of `hashes` (canonical prefixes); duplicates are
    /// dropped, the first occurrence kept. Linear in the entries.
    pub fn new(strategies: impl IntoIterator<Item = String>, hashes: impl IntoIterator<Item = String>) -> Filter {
        let mut filter = Filter::default();
        for strategy in strategies {
            if filter.strategy_set.insert(strategy.clone()) {
                filter.strategies.push(strategy);
            }
        }
        let mut lens = BTreeSet::new();
        for hash in hashes {
            if filter.hash_set.insert(hash.clone()) {
                lens.insert(hash.len());
                filter.hashes.push(hash);
            }
        }
        filter.prefix_lens = lens.into_iter().collect();
        filter
    }

    /// The strategy names kept, without duplicates.
    pub fn strategies(&self) -> &[String] {
        &self.strategies
    }

    /// The hash prefixes kept, without duplicates.
    pub fn hashes(&self) -> &[String] {
        &self.hashes
    }

    /// Whether the filter keeps everything.
    pub fn is_all(&self) -> bool {
        self.strategies.is_empty() && self.hashes.is_empty()
    }

    fn keeps_strategy(&self, strategy: &str) -> bool {
        self.strategy_set.contains(strategy)
    }

    fn keeps_hash(&self, hash: &RevisionHash) -> bool {
        if self.hash_set.is_empty() {
            return false;
        }
        let text = hash.to_string();
        self.prefix_lens.iter().any(|&len| text.get(..len).is_some_and(|prefix| self.hash_set.contains(prefix)))
    }

    /// Whether a revision belongs to the subscription.
    pub fn keeps_revision(&self, strategy: &str, hash: &RevisionHash) -> bool {
        self.is_all() || self.keeps_strategy(strategy) || self.keeps_hash(hash)
    }

    /// Whether a delta belongs to the subscription. `refreshCompleted` and
    /// `revisionsSeen` (about no one revision) always do.
    pub fn keeps(&self, delta: &Delta) -> bool {
        if self.is_all() || matches!(delta.kind, DeltaKind::RefreshCompleted | DeltaKind::RevisionsSeen) {
            return true;
        }
        delta.strategy.as_deref().is_some_and(|s| self.keeps_strategy(s))
            || delta.hash.as_ref().is_some_and(|h| self.keeps_hash(h))
            || delta.previous_hash.as_ref().is_some_and(|h| self.keeps_hash(h))
    }
}

/// A client's copy of every revision's usage, kept current by applying
/// server messages in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageMirror {
    /// The `seq` of the last message applied.
    pub seq: u64,
    /// Revisions by (strategy, hash).
    pub revisions: BTreeMap<(String, RevisionHash), RevisionState>,
}

impl UsageMirror {
    /// Applies one message. Returns the revisions it touched (for highlights).
    pub fn apply(&mut self, message: &ServerMessage) -> Vec<(String, RevisionHash)> {
        match message {
            ServerMessage::Snapshot(snapshot) => {
                self.seq = snapshot.seq;
                self.revisions = snapshot.revisions.iter().map(|r| ((r.strategy.clone(), r.hash), r.clone())).collect();
                self.revisions.keys().cloned().collect()
            }
            ServerMessage::Delta(delta) => self.apply_delta(delta),
            _ => Vec::new(),
        }
    }

    fn apply_delta(&mut self, delta: &Delta) -> Vec<(String, RevisionHash)> {
        self.seq = self.seq.max(delta.seq);
        if delta.kind == DeltaKind::RevisionsSeen {
            // A heartbeat, not a change an operator needs pointed out: no
            // revision is reported as touched.
            if let Some(seen) = delta.last_seen {
                for entry in self.revisions.values_mut().filter(|entry| entry.count > 0) {
                    entry.last_seen = entry.last_seen.max(Some(seen));
                }
            }
            return Vec::new();
        }
        let Some(strategy) = &delta.strategy else { return Vec::new() };
        let Some(hash) = delta.hash else {
            // A deleted tag (`tagMoved` with no `hash`): it leaves `previousHash`.
            let mut touched = Vec::new();
            if let (Some(tag), Some(previous)) = (&delta.tag, delta.previous_hash)
                && let Some(old) = self.revisions.get_mut(&(strategy.clone(), previous))
            {
                old.tags.retain(|t| t != tag);
                touched.push((strategy.clone(), previous));
            }
            return touched;
        };
        let key = (strategy.clone(), hash);
        let mut touched = vec![key.clone()];
        if delta.kind == DeltaKind::RevisionDeleted {
            self.revisions.remove(&key);
            return touched;
        }
        let entry = self.revisions.entry(key).or_insert_with(|| RevisionState {
            strategy: strategy.clone(),
            hash,
            tags: Vec::new(),
            count: 0,
            instances: Vec::new(),
            first_seen: None,
            last_seen: None,
            retired: false,
        });
        entry.count = delta.count;
        entry.first_seen = delta.first_seen;
        entry.last_seen = delta.last_seen;
        entry.retired = delta.retired;
        if let Some(tags) = &delta.tags {
            entry.tags = tags.clone();
        }
        if let Some(id) = &delta.instance_id {
            let running = delta.state == Some(InstanceState::Running);
            match entry.instances.binary_search(id) {
                Ok(at) if !running => {
                    entry.instances.remove(at);
                }
                Err(at) if running => entry.instances.insert(at, id.clone()),
                _ => {}
            }
        }
        if let Some(tag) = &delta.tag
            && !entry.tags.contains(tag)
        {
            entry.tags.push(tag.clone());
        }
        if let Some(previous) = delta.previous_hash {
            let previous_key = (strategy.clone(), previous);
            if let Some(old) = self.revisions.get_mut(&previous_key) {
                if let Some(tag) = &delta.tag {
                    old.tags.retain(|t| t != tag);
                }
                if let Some(id) = &delta.instance_id {
                    old.instances.retain(|i| i != id);
                }
                if let Some(count) = delta.previous_count {
                    old.count = count;
                }
                touched.push(previous_key);
            }
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn messages_round_trip_with_their_type_tag() {
        let mut delta =
            Delta::new(7, ts(), DeltaKind::InstanceStarted, Some("grid".into()), Some(RevisionHash::of(b"x")));
        delta.instance_id = Some("alpha".into());
        delta.state = Some(InstanceState::Running);
        delta.count = 1;
        let json = serde_json::to_value(ServerMessage::Delta(delta.clone())).unwrap();
        assert_eq!(json["type"], "delta");
        assert_eq!(json["kind"], "instanceStarted");
        assert_eq!(json["instanceId"], "alpha");
        assert_eq!(json["firstSeen"], serde_json::Value::Null);
        assert!(json.get("previousHash").is_none(), "absent optional fields are left out");
        let back: ServerMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, ServerMessage::Delta(delta));

        let subscribe: ClientMessage = serde_json::from_str(r#"{"type":"subscribe","strategies":["grid"]}"#).unwrap();
        assert_eq!(subscribe, ClientMessage::Subscribe { strategies: vec!["grid".into()], hashes: vec![] });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"subscribe","bogus":1}"#).is_err());
        for kind in DeltaKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn filters_keep_matching_strategies_hashes_and_every_refresh() {
        let hash = RevisionHash::of(b"x");
        let prefix = hash.to_string()[..15].to_owned();
        let delta = Delta::new(1, ts(), DeltaKind::InstanceStopped, Some("grid".into()), Some(hash));
        assert!(Filter::default().keeps(&delta));
        assert!(Filter::new(["grid".to_owned()], []).keeps(&delta));
        assert!(Filter::new([], [prefix.clone()]).keeps(&delta));
        assert!(Filter::new([], [hash.to_string()]).keeps(&delta), "a full hash is a prefix of itself");
        assert!(
            !Filter::new([], ["sha256:00000000".to_owned()]).keeps(&delta) || prefix.starts_with("sha256:00000000")
        );
        let other = Filter::new(["noop".to_owned()], []);
        assert!(!other.keeps(&delta));
        assert!(other.keeps(&Delta::new(2, ts(), DeltaKind::RefreshCompleted, None, None)));
        assert!(other.keeps(&Delta::new(3, ts(), DeltaKind::RevisionsSeen, None, None)), "every subscription");
    }

    #[test]
    fn a_filter_of_ten_thousand_prefixes_is_built_and_matched_in_linear_time() {
        // Prefixes of 8 to 64 digits of 10,000 distinct hashes, and the
        // hashes themselves to match: each lookup costs at most 57 set
        // probes, whatever the number of prefixes (it was one `starts_with`
        // per prefix per delta, after an O(n²) dedupe).
        let hashes: Vec<RevisionHash> =
            (0..MAX_SUBSCRIPTION_ENTRIES as u32).map(|i| RevisionHash::of(&i.to_le_bytes())).collect();
        let prefixes: Vec<String> =
            hashes.iter().enumerate().map(|(i, h)| h.to_string()[..7 + 8 + i % 57].to_owned()).collect();
        let started = std::time::Instant::now();
        let filter = Filter::new([], prefixes.iter().cloned().chain(prefixes.iter().cloned()));
        assert_eq!(filter.hashes(), prefixes.as_slice(), "duplicates dropped, order kept");
        for (seq, hash) in hashes.iter().enumerate() {
            let delta = Delta::new(seq as u64, ts(), DeltaKind::InstanceStarted, Some("x".into()), Some(*hash));
            assert!(filter.keeps(&delta));
        }
        let unknown =
            Delta::new(0, ts(), DeltaKind::InstanceStarted, Some("x".into()), Some(RevisionHash::of(b"none")));
        assert!(
            !filter.keeps(&unknown) || prefixes.iter().any(|p| RevisionHash::of(b"none").to_string().starts_with(p))
        );
        // Generous for a debug build on a busy machine; the quadratic
        // version took seconds at 50,000.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn the_mirror_follows_starts_repins_and_tag_moves() {
        let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
        let state = |hash, tags: &[&str]| RevisionState {
            strategy: "grid".into(),
            hash,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            count: 0,
            instances: vec![],
            first_seen: None,
            last_seen: None,
            retired: false,
        };
        let mut mirror = UsageMirror::default();
        mirror.apply(&ServerMessage::Snapshot(Snapshot {
            seq: 3,
            reset: false,
            revisions: vec![state(a, &["latest"]), state(b, &[])],
        }));
        let mut started = Delta::new(4, ts(), DeltaKind::InstanceStarted, Some("grid".into()), Some(a));
        started.instance_id = Some("x".into());
        started.state = Some(InstanceState::Running);
        started.count = 1;
        started.first_seen = Some(ts());
        mirror.apply(&ServerMessage::Delta(started));
        assert_eq!(mirror.revisions[&("grid".into(), a)].instances, vec!["x".to_owned()]);

        let mut repinned = Delta::new(5, ts(), DeltaKind::InstanceRepinned, Some("grid".into()), Some(b));
        repinned.instance_id = Some("x".into());
        repinned.state = Some(InstanceState::Running);
        repinned.count = 1;
        repinned.previous_hash = Some(a);
        repinned.previous_count = Some(0);
        let touched = mirror.apply(&ServerMessage::Delta(repinned));
        assert_eq!(touched.len(), 2);
        assert_eq!(mirror.revisions[&("grid".into(), a)].count, 0);
        assert!(mirror.revisions[&("grid".into(), a)].instances.is_empty());
        assert_eq!(mirror.revisions[&("grid".into(), b)].instances, vec!["x".to_owned()]);

        let mut moved = Delta::new(6, ts(), DeltaKind::TagMoved, Some("grid".into()), Some(b));
        moved.tag = Some("latest".into());
        moved.previous_hash = Some(a);
        moved.count = 1;
        mirror.apply(&ServerMessage::Delta(moved));
        assert!(mirror.revisions[&("grid".into(), a)].tags.is_empty());
        assert_eq!(mirror.revisions[&("grid".into(), b)].tags, vec!["latest".to_owned()]);
        assert_eq!(mirror.seq, 6);

        mirror.apply(&ServerMessage::Delta(Delta::new(
            7,
            ts(),
            DeltaKind::RevisionDeleted,
            Some("grid".into()),
            Some(a),
        )));
        assert_eq!(mirror.revisions.len(), 1);
    }
}
