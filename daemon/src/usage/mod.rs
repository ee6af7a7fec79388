//! The revision usage index (SPEC §2.1): which instances run which
//! revision, since when, answered without scanning.
//!
//! Keyed by `{strategy, hash}`. Each [`entry::Entry`] holds the ids of the
//! instances pinned to the revision (running ones apart, and by selector for
//! drift), the ids that were re-pinned away from it, its tags, and
//! `firstSeen`/`lastSeen`. Side indexes answer `runningOnly` filters
//! (strategy → running count) and per-strategy instance lists.
//!
//! Every change goes through one mutex, inside the same critical section as
//! the lifecycle transition that causes it (the instance manager calls in
//! under the instance's own lock, the registry under its write lock), and
//! every change is published on the delta [`Bus`] under that mutex, so
//! `seq` order is change order and a snapshot taken under it is exact.
//!
//! The index learns every revision and its tags from the registry
//! ([`crate::registry::RegistryObserver`]), so it can say whether a revision
//! is retired on its own.

mod entry;
mod ids;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_shared::RevisionHash;
use strata_shared::api::InstanceState;
use strata_shared::stream::{Delta, DeltaKind, RevisionState, Snapshot};
use time::{Duration, OffsetDateTime};

use crate::registry::{Change, RegistryObserver, RegistryState};
use crate::stream::Bus;
use entry::Entry;

/// `{strategy, hash}`.
type Key = (Arc<str>, RevisionHash);

/// A selector followed on a revision, and how many instances follow it.
pub type Followed = (Arc<str>, usize);

/// A revision's usage summary (O(1) to produce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Running instances.
    pub count: usize,
    /// Instances pinned to it, running or not.
    pub pinned: usize,
    /// Instances listed with `includeStopped`: pinned ones plus those
    /// re-pinned away from it.
    pub tracked: usize,
    /// First time any instance ran it.
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    pub last_seen: Option<OffsetDateTime>,
    /// No running instance, no tag, and the grace period is over.
    pub retired: bool,
}

/// What is persisted of one revision's usage: its timestamps and the ids
/// re-pinned away from it (pinned ids come back with the instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// Strategy name.
    pub strategy: String,
    /// The revision.
    pub hash: RevisionHash,
    /// First time any instance ran it.
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    pub last_seen: Option<OffsetDateTime>,
    /// Instances that were pinned to it and have moved to another revision.
    pub stopped: Vec<String>,
    /// Whether the entry is gone (its revision was deleted).
    pub removed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Hash → strategy of every entry (hash-only lookups).
    owners: HashMap<RevisionHash, Arc<str>>,
    /// Strategy → number of running instances (only strategies with some).
    running_strategies: BTreeMap<Arc<str>, usize>,
    /// Strategy → hashes with pinned instances → how many.
    pinned_hashes: HashMap<Arc<str>, BTreeMap<RevisionHash, usize>>,
    /// Instance id → entries it was re-pinned away from (cleaned on delete).
    departed_from: HashMap<String, Vec<Key>>,
    /// Entries that will retire when their grace period ends.
    pending_retirement: BTreeSet<Key>,
    /// Entries changed since the last [`UsageIndex::take_dirty`].
    dirty: HashSet<Key>,
}

/// The usage index. Share it behind an `Arc`.
#[derive(Debug)]
pub struct UsageIndex {
    inner: Mutex<Inner>,
    bus: Arc<Bus>,
    metrics: Option<crate::metrics::Metrics>,
    /// How long a revision must have had zero usage before it is retired.
    retire_after: Duration,
}

impl Default for UsageIndex {
    fn default() -> Self {
        Self::new(Arc::new(Bus::default()), None, Duration::ZERO)
    }
}

/// The instance an index update is about.
#[derive(Debug, Clone, Copy)]
pub struct Pin<'a> {
    /// Strategy name.
    pub strategy: &'a str,
    /// The revision it is pinned to.
    pub hash: RevisionHash,
    /// Its selector as typed.
    pub selector: &'a str,
    /// Instance id.
    pub id: &'a str,
}

impl UsageIndex {
    /// An empty index publishing on `bus`, keeping the per-revision
    /// Prometheus series in step when given `metrics`, retiring revisions
    /// after `retire_after` of zero usage.
    pub fn new(bus: Arc<Bus>, metrics: Option<crate::metrics::Metrics>, retire_after: Duration) -> Self {
        Self { inner: Mutex::default(), bus, metrics, retire_after }
    }

    /// The delta bus the index publishes on.
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// Counts `action` (e.g. `refresh`) for one revision without changing usage.
    pub fn count_action(&self, strategy: &str, hash: RevisionHash, action: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.revision_actions.with_label_values(&[strategy, &hash.to_string(), action]).inc();
        }
    }

    /// Sets the gauge and counts `action` (if any) for one revision. Called
    /// under the lock, so concurrent transitions set the gauge in order.
    fn observe(&self, key: &Key, count: usize, action: Option<&str>) {
        if let Some(metrics) = &self.metrics {
            let hash = key.1.to_string();
            metrics.revision_instances.with_label_values(&[&*key.0, &hash]).set(count as i64);
            if let Some(action) = action {
                metrics.revision_actions.with_label_values(&[&*key.0, &hash, action]).inc();
            }
        }
    }

    /// Publishes a delta about `key` carrying its state after the change.
    fn publish(&self, inner: &Inner, key: &Key, kind: DeltaKind, now: OffsetDateTime, fill: impl FnOnce(&mut Delta)) {
        let mut delta = Delta::new(0, now, kind, Some(key.0.to_string()), Some(key.1));
        if let Some(entry) = inner.entries.get(key) {
            delta.count = entry.running.len();
            delta.first_seen = entry.first_seen;
            delta.last_seen = entry.last_seen;
            delta.retired = entry.is_retired(now, self.retire_after);
        }
        fill(&mut delta);
        self.bus.publish(delta);
    }

    /// A refresh finished: counts its results by reason and publishes
    /// `refreshCompleted` with those counts.
    pub fn refresh_completed(&self, results: &[strata_shared::api::RefreshResult]) {
        let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
        for result in results {
            *by_reason.entry(result.reason.as_str().to_owned()).or_default() += 1;
        }
        if let Some(metrics) = &self.metrics {
            for (reason, count) in &by_reason {
                metrics.refresh_results.with_label_values(&[reason.as_str()]).inc_by(*count as u64);
            }
        }
        let _inner = self.inner.lock();
        let mut delta = Delta::new(0, OffsetDateTime::now_utc(), DeltaKind::RefreshCompleted, None, None);
        delta.results = Some(by_reason);
        self.bus.publish(delta);
    }

    fn entry_mut<'a>(inner: &'a mut Inner, key: &Key) -> &'a mut Entry {
        inner.owners.entry(key.1).or_insert_with(|| key.0.clone());
        inner.entries.entry(key.clone()).or_default()
    }

    /// Retires `key` (announcing it once) if it now qualifies, and keeps the
    /// set of revisions waiting for their grace period in step.
    fn reconsider(&self, inner: &mut Inner, key: &Key, now: OffsetDateTime) {
        let Some(entry) = inner.entries.get_mut(key) else {
            inner.pending_retirement.remove(key);
            return;
        };
        if entry.is_retired(now, self.retire_after) {
            inner.pending_retirement.remove(key);
            if !entry.retired_announced {
                entry.retired_announced = true;
                self.publish(inner, key, DeltaKind::RevisionRetired, now, |_| {});
            }
        } else if entry.is_idle() {
            inner.pending_retirement.insert(key.clone());
        } else {
            entry.retired_announced = false;
            inner.pending_retirement.remove(key);
        }
    }

    /// Announces revisions whose grace period has ended (called periodically).
    pub fn retire_due(&self, now: OffsetDateTime) {
        let mut inner = self.inner.lock();
        let pending: Vec<Key> = inner.pending_retirement.iter().cloned().collect();
        for key in pending {
            self.reconsider(&mut inner, &key, now);
        }
    }

    /// An instance was created (or restored at boot) pinned to `pin.hash`.
    pub fn created(&self, pin: Pin<'_>, now: OffsetDateTime) {
        self.pin(pin, None, now);
    }

    /// Adds `pin.id` to its revision; `previous` is where it came from (a re-pin).
    fn pin(&self, pin: Pin<'_>, previous: Option<RevisionHash>, now: OffsetDateTime) {
        let mut inner = self.inner.lock();
        self.pin_locked(&mut inner, pin, previous, now);
    }

    /// [`UsageIndex::pin`], under the caller's lock.
    fn pin_locked(&self, inner: &mut Inner, pin: Pin<'_>, previous: Option<RevisionHash>, now: OffsetDateTime) {
        let key: Key = (Arc::from(pin.strategy), pin.hash);
        inner.dirty.insert(key.clone());
        let entry = Self::entry_mut(inner, &key);
        let returned = entry.departed.remove(pin.id);
        entry.add_pinned(pin.selector, pin.id);
        if returned && let Some(from) = inner.departed_from.get_mut(pin.id) {
            from.retain(|k| *k != key);
        }
        *inner.pinned_hashes.entry(key.0.clone()).or_default().entry(key.1).or_default() += 1;
        self.reconsider(inner, &key, now);
        let kind = if previous.is_some() { DeltaKind::InstanceRepinned } else { DeltaKind::InstanceCreated };
        let previous_count = previous.map(|h| inner.entries.get(&(key.0.clone(), h)).map_or(0, |e| e.running.len()));
        self.publish(inner, &key, kind, now, |d| {
            d.instance_id = Some(pin.id.to_owned());
            d.state = Some(InstanceState::Stopped);
            d.previous_hash = previous;
            d.previous_count = previous_count;
        });
    }

    /// Instance `id` started running the revision it is pinned to.
    pub fn started(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        let key: Key = (strategy.clone(), hash);
        let mut inner = self.inner.lock();
        inner.dirty.insert(key.clone());
        let entry = Self::entry_mut(&mut inner, &key);
        let added = entry.set_running(id, true);
        entry.first_seen.get_or_insert(now);
        entry.last_seen = Some(now);
        let count = entry.running.len();
        if added {
            *inner.running_strategies.entry(strategy.clone()).or_default() += 1;
        }
        self.observe(&key, count, Some("start"));
        self.reconsider(&mut inner, &key, now);
        self.publish(&inner, &key, DeltaKind::InstanceStarted, now, |d| {
            d.instance_id = Some(id.to_owned());
            d.state = Some(InstanceState::Running);
        });
    }

    /// Instance `id` stopped running the revision it is pinned to.
    pub fn stopped(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        self.left(&(strategy.clone(), hash), id, now, InstanceState::Stopped);
    }

    /// Instance `id` failed while running the revision it is pinned to.
    pub fn failed(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        self.left(&(strategy.clone(), hash), id, now, InstanceState::Failed);
    }

    fn left(&self, key: &Key, id: &str, now: OffsetDateTime, state: InstanceState) {
        let mut inner = self.inner.lock();
        inner.dirty.insert(key.clone());
        let Some(entry) = inner.entries.get_mut(key) else { return };
        let removed = entry.set_running(id, false);
        entry.last_seen = Some(now);
        let count = entry.running.len();
        if removed {
            Self::decrement(&mut inner.running_strategies, &key.0);
            let (action, kind) = match state {
                InstanceState::Failed => ("fail", DeltaKind::InstanceFailed),
                _ => ("stop", DeltaKind::InstanceStopped),
            };
            self.observe(key, count, Some(action));
            self.reconsider(&mut inner, key, now);
            self.publish(&inner, key, kind, now, |d| {
                d.instance_id = Some(id.to_owned());
                d.state = Some(state);
            });
        }
    }

    /// A stopped instance moved from `from` to `to.hash` (and maybe to a new
    /// selector). `from` keeps it in its history (`includeStopped`).
    pub fn repinned(&self, from: RevisionHash, from_selector: &str, to: Pin<'_>, now: OffsetDateTime) {
        let old: Key = (Arc::from(to.strategy), from);
        // One lock for both halves: no reader sees the instance on no revision.
        let mut inner = self.inner.lock();
        inner.dirty.insert(old.clone());
        if let Some(entry) = inner.entries.get_mut(&old) {
            entry.remove_pinned(from_selector, to.id);
            entry.departed.insert(to.id.to_owned());
            inner.departed_from.entry(to.id.to_owned()).or_default().push(old.clone());
        }
        Self::unpin_hash(&mut inner.pinned_hashes, &old);
        self.reconsider(&mut inner, &old, now);
        // One delta for the move, about the new revision, naming the old one
        // and its running count (unchanged: the instance was stopped first).
        self.pin_locked(&mut inner, to, Some(from), now);
    }

    /// Instance `id` was deleted: it no longer counts anywhere.
    pub fn deleted(&self, pin: Pin<'_>, now: OffsetDateTime) {
        let key: Key = (Arc::from(pin.strategy), pin.hash);
        let mut inner = self.inner.lock();
        inner.dirty.insert(key.clone());
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.remove_pinned(pin.selector, pin.id);
            if entry.set_running(pin.id, false) {
                let count = entry.running.len();
                Self::decrement(&mut inner.running_strategies, &key.0);
                self.observe(&key, count, Some("stop"));
            }
        }
        Self::unpin_hash(&mut inner.pinned_hashes, &key);
        for other in inner.departed_from.remove(pin.id).unwrap_or_default() {
            if let Some(entry) = inner.entries.get_mut(&other) {
                entry.departed.remove(pin.id);
            }
            inner.dirty.insert(other);
        }
        self.reconsider(&mut inner, &key, now);
        self.publish(&inner, &key, DeltaKind::InstanceDeleted, now, |d| d.instance_id = Some(pin.id.to_owned()));
    }

    fn unpin_hash(pinned: &mut HashMap<Arc<str>, BTreeMap<RevisionHash, usize>>, key: &Key) {
        if let Some(hashes) = pinned.get_mut(&key.0) {
            if let Some(count) = hashes.get_mut(&key.1) {
                *count -= 1;
                if *count == 0 {
                    hashes.remove(&key.1);
                }
            }
            if hashes.is_empty() {
                pinned.remove(&key.0);
            }
        }
    }

    fn decrement(running: &mut BTreeMap<Arc<str>, usize>, strategy: &Arc<str>) {
        if let Some(count) = running.get_mut(strategy) {
            *count -= 1;
            if *count == 0 {
                running.remove(strategy);
            }
        }
    }

    /// Marks every running revision as seen at `now` (called periodically)
    /// and, if there was one, tells subscribers with one `revisionsSeen`.
    /// Visits only the revisions with pinned instances of the strategies
    /// that run some, not every revision.
    pub fn touch_running(&self, now: OffsetDateTime) {
        let mut inner = self.inner.lock();
        let Inner { entries, dirty, running_strategies, pinned_hashes, .. } = &mut *inner;
        if running_strategies.is_empty() {
            return;
        }
        for strategy in running_strategies.keys() {
            for hash in pinned_hashes.get(strategy).into_iter().flat_map(BTreeMap::keys) {
                let key = (strategy.clone(), *hash);
                if let Some(entry) = entries.get_mut(&key).filter(|e| !e.running.is_empty()) {
                    // `now` was read before the lock: a start since then is later.
                    entry.last_seen = entry.last_seen.max(Some(now));
                    dirty.insert(key);
                }
            }
        }
        // Under the lock, like every delta, so it takes its place in `seq` order.
        let mut delta = Delta::new(0, now, DeltaKind::RevisionsSeen, None, None);
        delta.last_seen = Some(now);
        self.bus.publish(delta);
    }

    /// Takes what changed since the last call, for the store.
    pub fn take_dirty(&self) -> Vec<Persisted> {
        let mut inner = self.inner.lock();
        let dirty = std::mem::take(&mut inner.dirty);
        dirty
            .into_iter()
            .map(|(strategy, hash)| match inner.entries.get(&(strategy.clone(), hash)) {
                Some(e) => Persisted {
                    strategy: strategy.to_string(),
                    hash,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    stopped: e.departed.iter().cloned().collect(),
                    removed: false,
                },
                None => Persisted {
                    strategy: strategy.to_string(),
                    hash,
                    first_seen: None,
                    last_seen: None,
                    stopped: Vec::new(),
                    removed: true,
                },
            })
            .collect()
    }

    /// Puts back what the store held (at boot, before instances are restored).
    pub fn restore(&self, persisted: Vec<Persisted>) {
        let mut inner = self.inner.lock();
        for p in persisted.into_iter().filter(|p| !p.removed) {
            let key: Key = (Arc::from(p.strategy.as_str()), p.hash);
            for id in &p.stopped {
                inner.departed_from.entry(id.clone()).or_default().push(key.clone());
            }
            let entry = Self::entry_mut(&mut inner, &key);
            entry.first_seen = p.first_seen;
            entry.last_seen = p.last_seen;
            entry.departed = p.stopped.into_iter().collect();
        }
    }

    /// The revision's summary; zero usage and `null` timestamps if never seen.
    pub fn summary(&self, strategy: &Arc<str>, hash: RevisionHash) -> Summary {
        let inner = self.inner.lock();
        self.summarise(inner.entries.get(&(strategy.clone(), hash)), OffsetDateTime::now_utc())
    }

    fn summarise(&self, entry: Option<&Entry>, now: OffsetDateTime) -> Summary {
        match entry {
            Some(e) => Summary {
                count: e.running.len(),
                pinned: e.pinned_count(),
                tracked: e.pinned_count() + e.departed.len(),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                retired: e.is_retired(now, self.retire_after),
            },
            None => Summary { count: 0, pinned: 0, tracked: 0, first_seen: None, last_seen: None, retired: false },
        }
    }

    /// A page of instance ids on the revision, running ones first (by id),
    /// then, with `include_stopped`, the others pinned to it and those
    /// re-pinned away from it (by id); and the total.
    pub fn page(
        &self,
        strategy: &Arc<str>,
        hash: RevisionHash,
        include_stopped: bool,
        offset: usize,
        limit: usize,
    ) -> (Vec<String>, usize) {
        let inner = self.inner.lock();
        let Some(e) = inner.entries.get(&(strategy.clone(), hash)) else { return (Vec::new(), 0) };
        if !include_stopped {
            return (e.running.page(offset, limit).cloned().collect(), e.running.len());
        }
        let total = e.running.len() + e.idle.len() + e.departed.len();
        let mut ids: Vec<String> = e.running.page(offset, limit).cloned().collect();
        let rest_offset = offset.saturating_sub(e.running.len());
        let rest = ids::union_page(&e.idle, &e.departed, rest_offset, limit - ids.len());
        ids.extend(rest.into_iter().cloned());
        (ids, total)
    }

    /// Ids of the instances pinned to `hash` (running or not), by id, after
    /// skipping `offset`, at most `limit`; and how many there are.
    pub fn pinned_page(&self, hash: RevisionHash, offset: usize, limit: usize) -> (Vec<String>, usize) {
        let inner = self.inner.lock();
        let Some(e) = inner.owners.get(&hash).and_then(|s| inner.entries.get(&(s.clone(), hash))) else {
            return (Vec::new(), 0);
        };
        let ids = ids::union_page(&e.running, &e.idle, offset, limit).into_iter().cloned().collect();
        (ids, e.pinned_count())
    }

    /// Ids of every instance pinned to `hash`, by id.
    pub fn pinned_to(&self, hash: RevisionHash) -> Vec<String> {
        self.pinned_page(hash, 0, usize::MAX).0
    }

    /// Ids of every instance of `strategy` (any revision, any state), by id.
    pub fn strategy_instances(&self, strategy: &str) -> Vec<String> {
        let inner = self.inner.lock();
        let Some(hashes) = inner.pinned_hashes.get(strategy) else { return Vec::new() };
        let owner: Arc<str> = Arc::from(strategy);
        let sets = hashes.keys().filter_map(|h| inner.entries.get(&(owner.clone(), *h)));
        let mut ids: Vec<String> = sets.flat_map(|e| e.running.iter().chain(e.idle.iter())).cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// The distinct selectors instances pinned to `hash` follow, each with
    /// how many follow it (for drift: one resolution per selector).
    pub fn selectors(&self, strategy: &Arc<str>, hash: RevisionHash) -> Vec<Followed> {
        let inner = self.inner.lock();
        inner
            .entries
            .get(&(strategy.clone(), hash))
            .map(|e| e.by_selector.iter().map(|(s, ids)| (s.clone(), ids.len())).collect())
            .unwrap_or_default()
    }

    /// Ids of the instances pinned to `hash` that follow `selector`, by id.
    pub fn followers(&self, strategy: &Arc<str>, hash: RevisionHash, selector: &str) -> Vec<String> {
        let inner = self.inner.lock();
        inner
            .entries
            .get(&(strategy.clone(), hash))
            .and_then(|e| e.by_selector.get(selector))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every (strategy, hash) with pinned instances and the distinct
    /// selectors they follow, with how many follow each (for drift across
    /// all instances).
    pub fn pinned_selectors(&self) -> Vec<(Arc<str>, RevisionHash, Vec<Followed>)> {
        let inner = self.inner.lock();
        inner
            .pinned_hashes
            .iter()
            .flat_map(|(strategy, hashes)| hashes.keys().map(move |h| (strategy.clone(), *h)))
            .filter_map(|key| {
                let e = inner.entries.get(&key)?;
                Some((key.0, key.1, e.by_selector.iter().map(|(s, ids)| (s.clone(), ids.len())).collect()))
            })
            .collect()
    }

    /// How many revisions are retired at `now`, per strategy with any.
    pub fn retired_by_strategy(&self, now: OffsetDateTime) -> BTreeMap<Arc<str>, usize> {
        let inner = self.inner.lock();
        let mut counts = BTreeMap::new();
        for ((strategy, _), entry) in &inner.entries {
            if entry.is_retired(now, self.retire_after) {
                *counts.entry(strategy.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// Whether any instance of `strategy` runs.
    pub fn strategy_running(&self, strategy: &str) -> bool {
        self.inner.lock().running_strategies.contains_key(strategy)
    }

    /// A page of the strategies with running instances (by name) and their number.
    pub fn running_strategies(&self, offset: usize, limit: usize) -> (Vec<Arc<str>>, usize) {
        let inner = self.inner.lock();
        let total = inner.running_strategies.len();
        (inner.running_strategies.keys().skip(offset).take(limit).cloned().collect(), total)
    }

    /// Revisions of `strategy` with running instances (all, or only `only`):
    /// hash, summary and up to `ids` running ids. Visits only the revisions
    /// with pinned instances, not every revision of the strategy.
    pub fn running_revisions(
        &self,
        strategy: &Arc<str>,
        only: Option<RevisionHash>,
        ids: usize,
    ) -> Vec<(RevisionHash, Summary, Vec<String>)> {
        let inner = self.inner.lock();
        let Some(hashes) = inner.pinned_hashes.get(strategy) else { return Vec::new() };
        let now = OffsetDateTime::now_utc();
        hashes
            .keys()
            .filter(|hash| only.is_none_or(|o| o == **hash))
            .filter_map(|hash| {
                let e = inner.entries.get(&(strategy.clone(), *hash))?;
                (!e.running.is_empty())
                    .then(|| (*hash, self.summarise(Some(e), now), e.running.iter().take(ids).cloned().collect()))
            })
            .collect()
    }

    /// Every running id of a revision (for exports).
    pub fn running_ids(&self, strategy: &Arc<str>, hash: RevisionHash) -> Vec<String> {
        let inner = self.inner.lock();
        inner.entries.get(&(strategy.clone(), hash)).map(|e| e.running.iter().cloned().collect()).unwrap_or_default()
    }

    /// Every loaded revision's usage, and the `seq` of the last delta it
    /// reflects, taken atomically.
    pub fn snapshot(&self, reset: bool) -> Snapshot {
        let inner = self.inner.lock();
        let now = OffsetDateTime::now_utc();
        let mut revisions: Vec<RevisionState> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.loaded)
            .map(|(key, e)| RevisionState {
                strategy: key.0.to_string(),
                hash: key.1,
                tags: e.tags.clone(),
                count: e.running.len(),
                instances: e.running.iter().cloned().collect(),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                retired: e.is_retired(now, self.retire_after),
            })
            .collect();
        revisions.sort_by(|a, b| (&a.strategy, a.hash).cmp(&(&b.strategy, b.hash)));
        Snapshot { seq: self.bus.seq(), reset, revisions }
    }
}

impl RegistryObserver for UsageIndex {
    fn changed(&self, state: &RegistryState, changes: &[Change]) {
        let now = OffsetDateTime::now_utc();
        let mut inner = self.inner.lock();
        // Additions first, so a client hears of a revision before its tags.
        let rank = |c: &&Change| match c {
            Change::RevisionAdded { .. } => 0,
            Change::Tag { .. } => 1,
            Change::RevisionRemoved { .. } => 2,
        };
        let mut ordered: Vec<&Change> = changes.iter().collect();
        ordered.sort_by_key(rank);
        for change in ordered {
            match change {
                Change::RevisionAdded { strategy, hash } => {
                    let key: Key = (strategy.clone(), *hash);
                    let tags = state.strategy(strategy).map(|s| s.tags_of(hash)).unwrap_or_default();
                    let entry = Self::entry_mut(&mut inner, &key);
                    entry.loaded = true;
                    entry.tags = tags.clone();
                    self.publish(&inner, &key, DeltaKind::RevisionAdded, now, |d| d.tags = Some(tags));
                }
                Change::Tag { strategy, tag, from, to } => {
                    if let Some(from) = from
                        && let Some(entry) = inner.entries.get_mut(&(strategy.clone(), *from))
                    {
                        entry.tags.retain(|t| t != tag);
                    }
                    if let Some(to) = to {
                        let entry = Self::entry_mut(&mut inner, &(strategy.clone(), *to));
                        if !entry.tags.contains(tag) {
                            entry.tags.push(tag.clone());
                        }
                        self.reconsider(&mut inner, &(strategy.clone(), *to), now);
                    }
                    let key: Key = (strategy.clone(), to.or(*from).expect("a tag change has an end"));
                    self.publish(&inner, &key, DeltaKind::TagMoved, now, |d| {
                        d.tag = Some(tag.clone());
                        d.previous_hash = *from;
                        if to.is_none() {
                            // Deleted: the tag points nowhere now.
                            d.hash = None;
                        }
                    });
                    if let Some(from) = from {
                        self.reconsider(&mut inner, &(strategy.clone(), *from), now);
                    }
                }
                Change::RevisionRemoved { strategy, hash } => {
                    let key: Key = (strategy.clone(), *hash);
                    inner.dirty.insert(key.clone());
                    self.publish(&inner, &key, DeltaKind::RevisionDeleted, now, |d| {
                        d.count = 0;
                        d.retired = false;
                    });
                    let keep = inner.entries.get(&key).is_some_and(|e| e.pinned_count() > 0);
                    if keep {
                        // Instances still pin it (a hand edit removed it):
                        // keep their usage, forget the revision.
                        if let Some(entry) = inner.entries.get_mut(&key) {
                            entry.loaded = false;
                            entry.tags.clear();
                        }
                    } else if let Some(entry) = inner.entries.remove(&key) {
                        inner.owners.remove(hash);
                        for id in entry.departed.iter() {
                            if let Some(from) = inner.departed_from.get_mut(id) {
                                from.retain(|k| *k != key);
                            }
                        }
                        if let Some(metrics) = &self.metrics {
                            metrics.forget_revision(strategy, &hash.to_string());
                        }
                    }
                    inner.pending_retirement.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
