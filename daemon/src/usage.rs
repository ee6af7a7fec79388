//! The revision usage index (SPEC §2.1): which instances run which
//! revision, since when, answered without scanning.
//!
//! Keyed by `{strategy, hash}`. Each entry holds the ids of the instances
//! running it (an ordered set, so pages are stable), the ids that ran it and
//! are now stopped, and `firstSeen`/`lastSeen`. A second index, running
//! strategies → running count, answers `runningOnly` filters.
//!
//! The instance manager updates it inside the same per-instance critical
//! section as the lifecycle transition that causes the change, so no reader
//! ever sees an instance on two hashes or on none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_shared::RevisionHash;
use time::OffsetDateTime;

/// One revision's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    running: BTreeSet<String>,
    stopped: BTreeSet<String>,
    first_seen: Option<OffsetDateTime>,
    last_seen: Option<OffsetDateTime>,
}

/// A revision's usage summary (O(1) to produce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Running instances.
    pub count: usize,
    /// Instances that ran it and are now stopped.
    pub stopped: usize,
    /// First time any instance ran it.
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    pub last_seen: Option<OffsetDateTime>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(Arc<str>, RevisionHash), Entry>,
    /// Strategy → number of running instances (only strategies with some).
    running_strategies: BTreeMap<Arc<str>, usize>,
    /// Entries changed since the last [`UsageIndex::take_dirty`].
    dirty: std::collections::HashSet<(Arc<str>, RevisionHash)>,
}

/// What is persisted of one revision's usage: its timestamps and the ids
/// that ran it and are now stopped (running ids come back with the instances).
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
    /// Instances that ran it and are now stopped.
    pub stopped: Vec<String>,
    /// Whether the entry is gone (its revision was deleted).
    pub removed: bool,
}

/// Lifecycle actions counted per revision in `strategy_revision_instances_total`.
pub const ACTIONS: [&str; 4] = ["start", "stop", "fail", "refresh"];

/// The usage index. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct UsageIndex {
    inner: Mutex<Inner>,
    metrics: Option<crate::metrics::Metrics>,
}

impl UsageIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that keeps the per-revision Prometheus series in step.
    pub fn with_metrics(metrics: crate::metrics::Metrics) -> Self {
        Self { inner: Mutex::default(), metrics: Some(metrics) }
    }

    /// Counts `action` (e.g. `refresh`) for one revision without changing usage.
    pub fn count_action(&self, strategy: &str, hash: RevisionHash, action: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.revision_actions.with_label_values(&[strategy, &hash.to_string(), action]).inc();
        }
    }

    /// Updates the gauge and counts `action` for one revision.
    fn observe(&self, strategy: &str, hash: RevisionHash, count: usize, action: &str) {
        if let Some(metrics) = &self.metrics {
            let hash = hash.to_string();
            metrics.revision_instances.with_label_values(&[strategy, &hash]).set(count as i64);
            metrics.revision_actions.with_label_values(&[strategy, &hash, action]).inc();
        }
    }

    /// Instance `id` started running `hash` of `strategy` at `now`.
    pub fn started(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        let mut inner = self.inner.lock();
        inner.dirty.insert((strategy.clone(), hash));
        let entry = inner.entries.entry((strategy.clone(), hash)).or_default();
        entry.stopped.remove(id);
        let added = entry.running.insert(id.to_owned());
        entry.first_seen.get_or_insert(now);
        entry.last_seen = Some(now);
        let count = entry.running.len();
        if added {
            *inner.running_strategies.entry(strategy.clone()).or_default() += 1;
        }
        // Under the lock: concurrent transitions set the gauge in order.
        self.observe(strategy, hash, count, "start");
    }

    /// Instance `id` stopped running `hash` of `strategy` at `now`.
    pub fn stopped(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        self.left(strategy, hash, id, now, "stop");
    }

    /// Instance `id` failed while running `hash` of `strategy` at `now`.
    pub fn failed(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime) {
        self.left(strategy, hash, id, now, "fail");
    }

    fn left(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str, now: OffsetDateTime, action: &str) {
        let mut inner = self.inner.lock();
        inner.dirty.insert((strategy.clone(), hash));
        let Some(entry) = inner.entries.get_mut(&(strategy.clone(), hash)) else { return };
        let removed = entry.running.remove(id);
        entry.stopped.insert(id.to_owned());
        entry.last_seen = Some(now);
        let count = entry.running.len();
        if removed {
            Self::decrement(&mut inner.running_strategies, strategy);
            self.observe(strategy, hash, count, action);
        }
    }

    /// Instance `id` was deleted: it no longer counts anywhere.
    pub fn forget(&self, strategy: &Arc<str>, hash: RevisionHash, id: &str) {
        let mut inner = self.inner.lock();
        inner.dirty.insert((strategy.clone(), hash));
        let Some(entry) = inner.entries.get_mut(&(strategy.clone(), hash)) else { return };
        let removed = entry.running.remove(id);
        entry.stopped.remove(id);
        let count = entry.running.len();
        if removed {
            Self::decrement(&mut inner.running_strategies, strategy);
            self.observe(strategy, hash, count, "stop");
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

    /// A revision was deleted: its usage goes with it.
    pub fn remove_revision(&self, strategy: &Arc<str>, hash: RevisionHash) {
        let mut inner = self.inner.lock();
        inner.entries.remove(&(strategy.clone(), hash));
        inner.dirty.insert((strategy.clone(), hash));
        if let Some(metrics) = &self.metrics {
            metrics.forget_revision(strategy, &hash.to_string());
        }
    }

    /// Marks every running revision as seen at `now` (called periodically).
    pub fn touch_running(&self, now: OffsetDateTime) {
        let mut inner = self.inner.lock();
        let Inner { entries, dirty, .. } = &mut *inner;
        for (key, entry) in entries.iter_mut().filter(|(_, e)| !e.running.is_empty()) {
            entry.last_seen = Some(now);
            dirty.insert(key.clone());
        }
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
                    stopped: e.stopped.iter().cloned().collect(),
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

    /// Puts back what the store held (at boot, before instances start).
    pub fn restore(&self, persisted: Vec<Persisted>) {
        let mut inner = self.inner.lock();
        for p in persisted.into_iter().filter(|p| !p.removed) {
            let entry = inner.entries.entry((Arc::from(p.strategy.as_str()), p.hash)).or_default();
            entry.first_seen = p.first_seen;
            entry.last_seen = p.last_seen;
            entry.stopped = p.stopped.into_iter().collect();
        }
    }

    /// The revision's summary; zero usage and `null` timestamps if never seen.
    pub fn summary(&self, strategy: &Arc<str>, hash: RevisionHash) -> Summary {
        let inner = self.inner.lock();
        match inner.entries.get(&(strategy.clone(), hash)) {
            Some(e) => Summary {
                count: e.running.len(),
                stopped: e.stopped.len(),
                first_seen: e.first_seen,
                last_seen: e.last_seen,
            },
            None => Summary { count: 0, stopped: 0, first_seen: None, last_seen: None },
        }
    }

    /// A page of instance ids on the revision, running ones first (by id),
    /// then, with `include_stopped`, stopped ones (by id); and the total.
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
        let stopped = if include_stopped { e.stopped.len() } else { 0 };
        let total = e.running.len() + stopped;
        let mut ids = e.running.iter();
        let page = if include_stopped {
            ids.chain(e.stopped.iter()).skip(offset).take(limit).cloned().collect()
        } else {
            ids.by_ref().skip(offset).take(limit).cloned().collect()
        };
        (page, total)
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

    /// Revisions of `strategy` with running instances: hash, summary and up
    /// to `ids` running ids.
    pub fn running_revisions(
        &self,
        strategy: &Arc<str>,
        hashes: impl Iterator<Item = RevisionHash>,
        ids: usize,
    ) -> Vec<(RevisionHash, Summary, Vec<String>)> {
        let inner = self.inner.lock();
        hashes
            .filter_map(|hash| {
                let e = inner.entries.get(&(strategy.clone(), hash))?;
                (!e.running.is_empty()).then(|| {
                    let summary = Summary {
                        count: e.running.len(),
                        stopped: e.stopped.len(),
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                    };
                    (hash, summary, e.running.iter().take(ids).cloned().collect())
                })
            })
            .collect()
    }

    /// Every running id of a revision (for exports).
    pub fn running_ids(&self, strategy: &Arc<str>, hash: RevisionHash) -> Vec<String> {
        let inner = self.inner.lock();
        inner.entries.get(&(strategy.clone(), hash)).map(|e| e.running.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    #[test]
    fn transitions_move_ids_between_running_and_stopped() {
        let index = UsageIndex::new();
        let s: Arc<str> = Arc::from("momentum");
        let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
        assert_eq!(index.summary(&s, a), Summary { count: 0, stopped: 0, first_seen: None, last_seen: None });

        index.started(&s, a, "one", at(10));
        index.started(&s, a, "two", at(20));
        index.started(&s, a, "two", at(21));
        assert_eq!(
            index.summary(&s, a),
            Summary { count: 2, stopped: 0, first_seen: Some(at(10)), last_seen: Some(at(21)) }
        );
        assert!(index.strategy_running("momentum"));

        index.stopped(&s, a, "one", at(30));
        index.started(&s, b, "one", at(30));
        assert_eq!(index.summary(&s, a).count, 1);
        assert_eq!(index.summary(&s, a).stopped, 1);
        assert_eq!(index.page(&s, a, false, 0, 10), (vec!["two".to_owned()], 1));
        assert_eq!(index.page(&s, a, true, 0, 10), (vec!["two".to_owned(), "one".to_owned()], 2));
        assert_eq!(index.page(&s, a, true, 1, 10), (vec!["one".to_owned()], 2));

        index.touch_running(at(60));
        assert_eq!(index.summary(&s, a).last_seen, Some(at(60)));
        index.stopped(&s, a, "two", at(70));
        index.touch_running(at(80));
        assert_eq!(index.summary(&s, a).last_seen, Some(at(70)), "stopped revisions are not touched");

        index.forget(&s, b, "one");
        assert!(!index.strategy_running("momentum"));
        assert_eq!(index.running_strategies(0, 10), (vec![], 0));
        index.remove_revision(&s, a);
        assert_eq!(index.summary(&s, a).first_seen, None);
    }

    #[test]
    fn dirty_entries_round_trip_through_restore() {
        let index = UsageIndex::new();
        let s: Arc<str> = Arc::from("p");
        let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
        index.started(&s, a, "x", at(1));
        index.stopped(&s, a, "x", at(2));
        index.started(&s, b, "y", at(3));
        let mut dirty = index.take_dirty();
        dirty.sort_by_key(|p| p.hash);
        assert_eq!(dirty.len(), 2);
        assert!(index.take_dirty().is_empty(), "taken once");

        let restored = UsageIndex::new();
        restored.restore(dirty);
        let summary = restored.summary(&s, a);
        assert_eq!(
            (summary.count, summary.stopped, summary.first_seen, summary.last_seen),
            (0, 1, Some(at(1)), Some(at(2)))
        );
        assert_eq!(restored.summary(&s, b).count, 0, "running ids come back with their instances, not from here");

        index.remove_revision(&s, a);
        let removed = index.take_dirty();
        assert!(removed.len() == 1 && removed[0].removed);
    }

    #[test]
    fn running_revisions_lists_only_revisions_in_use() {
        let index = UsageIndex::new();
        let s: Arc<str> = Arc::from("grid");
        let hashes: Vec<_> = (0u8..5).map(|i| RevisionHash::of(&[i])).collect();
        for (i, id) in ["x", "y", "z"].iter().enumerate() {
            index.started(&s, hashes[i % 2], id, at(1));
        }
        let running = index.running_revisions(&s, hashes.iter().copied(), 1);
        assert_eq!(running.len(), 2);
        assert_eq!(running[0].1.count, 2);
        assert_eq!(running[0].2, vec!["x".to_owned()], "ids are capped");
        assert_eq!(index.running_ids(&s, hashes[0]), vec!["x".to_owned(), "z".to_owned()]);
    }
}
