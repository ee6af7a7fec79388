//! Selector resolution through an LRU cache.
//!
//! Two caches, keyed by the canonical selector text:
//! - `exact` holds answers that depend on one strategy's tag or one revision
//!   (`momentum`, `momentum:prod`, `momentum@sha256:<hex>`, `sha256:<hex>`);
//!   a change evicts exactly the keys it touches.
//! - `prefixes` holds answers found through a hash prefix; any added or
//!   removed revision can make a prefix ambiguous or resolvable, so such a
//!   change clears it.
//!
//! Failures are never cached, so adding a tag or revision needs no eviction
//! for selectors that used to miss.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use strata_shared::names::LATEST_TAG;
use strata_shared::{HashRef, Selector};

use super::state::{Change, Dependence, RegistryState, ResolveError, Resolved};
use crate::metrics::CacheCounters;

/// The resolver cache.
#[derive(Debug)]
pub struct ResolverCache {
    exact: Mutex<LruCache<String, Resolved>>,
    prefixes: Mutex<LruCache<String, Resolved>>,
    counters: CacheCounters,
}

impl ResolverCache {
    /// A cache holding up to `capacity` exact and `capacity` prefix answers.
    pub fn new(capacity: NonZeroUsize, counters: CacheCounters) -> Self {
        Self { exact: Mutex::new(LruCache::new(capacity)), prefixes: Mutex::new(LruCache::new(capacity)), counters }
    }

    /// Looks `text` up without parsing; only canonical selectors are stored,
    /// so a hit is also proof the text is well-formed.
    pub fn lookup(&self, text: &str) -> Option<Resolved> {
        let hit = self.exact.lock().get(text).cloned().or_else(|| self.prefixes.lock().get(text).cloned());
        if hit.is_some() {
            self.counters.hits.inc();
        }
        hit
    }

    /// Resolves a selector on a miss and remembers the answer.
    ///
    /// Must be called with the registry read lock held (that is what `state`
    /// proves), so an eviction by a writer cannot interleave between computing
    /// and storing the answer.
    pub fn resolve_and_store(&self, state: &RegistryState, selector: &Selector) -> Result<Resolved, ResolveError> {
        let key = selector.canonical();
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }
        self.counters.misses.inc();
        let (resolved, dependence) = state.resolve(selector)?;
        let cache = match dependence {
            Dependence::Exact => &self.exact,
            Dependence::HashSet => &self.prefixes,
        };
        cache.lock().put(key, resolved.clone());
        Ok(resolved)
    }

    /// Evicts what `changes` affect. Called with the registry write lock held.
    pub fn invalidate(&self, changes: &[Change]) {
        let mut exact = self.exact.lock();
        let mut hash_set_changed = false;
        for change in changes {
            match change {
                Change::Tag { strategy, tag, .. } => {
                    exact.pop(&tag_key(strategy, tag));
                }
                Change::RevisionAdded { .. } => hash_set_changed = true,
                Change::RevisionRemoved { strategy, hash } => {
                    hash_set_changed = true;
                    exact.pop(&hash.to_string());
                    let full = HashRef::Full(*hash);
                    exact.pop(&Selector::Revision { strategy: strategy.to_string(), hash: full }.canonical());
                }
            }
        }
        drop(exact);
        if hash_set_changed {
            self.prefixes.lock().clear();
        }
    }

    /// Number of cached answers (both caches).
    pub fn len(&self) -> usize {
        self.exact.lock().len() + self.prefixes.lock().len()
    }

    /// Whether both caches are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn tag_key(strategy: &Arc<str>, tag: &str) -> String {
    if tag == LATEST_TAG { strategy.to_string() } else { format!("{strategy}:{tag}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::state::{Revision, Strategy};
    use strata_shared::RevisionHash;
    use strata_shared::metadata::ModuleMetadata;

    fn counters() -> CacheCounters {
        CacheCounters {
            hits: prometheus::IntCounter::new("h", "h").unwrap(),
            misses: prometheus::IntCounter::new("m", "m").unwrap(),
        }
    }

    fn strategy(name: &str, revs: &[RevisionHash], tags: &[(&str, RevisionHash)]) -> Strategy {
        let meta = Arc::new(ModuleMetadata {
            name: name.into(),
            display_name: name.into(),
            description: None,
            tag: None,
            version: None,
            config: vec![],
            events: vec![],
        });
        Strategy {
            tags: tags.iter().map(|(t, h)| (t.to_string(), *h)).collect(),
            revisions: revs
                .iter()
                .map(|h| {
                    let rev = Revision {
                        strategy: Arc::from(name),
                        hash: *h,
                        tag: "v".into(),
                        path: String::new(),
                        size: 0,
                        metadata: meta.clone(),
                    };
                    (*h, Arc::new(rev))
                })
                .collect(),
        }
    }

    fn get(cache: &ResolverCache, state: &RegistryState, text: &str) -> Result<Resolved, ResolveError> {
        match cache.lookup(text) {
            Some(hit) => Ok(hit),
            None => cache.resolve_and_store(state, &Selector::parse(text).unwrap()),
        }
    }

    #[test]
    fn a_moved_tag_never_serves_a_stale_hash_and_tags_are_case_sensitive() {
        let a = RevisionHash::of(b"a");
        let b = RevisionHash::of(b"b");
        let cache = ResolverCache::new(NonZeroUsize::new(16).unwrap(), counters());
        let mut state = RegistryState::default();
        let changes =
            state.replace_strategy("noop", Some(strategy("noop", &[a, b], &[("latest", a), ("prod", a)])), vec![]);
        cache.invalidate(&changes);

        assert_eq!(get(&cache, &state, "noop:prod").unwrap().hash, a);
        assert_eq!(get(&cache, &state, "noop:prod").unwrap().hash, a);
        assert_eq!(cache.counters.hits.get(), 1);
        assert!(get(&cache, &state, "noop:PROD").is_err(), "a cached noop:prod must not answer noop:PROD");

        let changes =
            state.replace_strategy("noop", Some(strategy("noop", &[a, b], &[("latest", a), ("prod", b)])), vec![]);
        cache.invalidate(&changes);
        assert_eq!(get(&cache, &state, "noop:prod").unwrap().hash, b);
    }

    #[test]
    fn untouched_entries_survive_and_prefixes_are_cleared_on_new_revisions() {
        let a = RevisionHash::of(b"a");
        let b = RevisionHash::of(b"b");
        let cache = ResolverCache::new(NonZeroUsize::new(16).unwrap(), counters());
        let mut state = RegistryState::default();
        cache.invalidate(&state.replace_strategy("one", Some(strategy("one", &[a], &[("latest", a)])), vec![]));
        let prefix = format!("sha256:{}", &a.to_hex()[..8]);
        get(&cache, &state, "one").unwrap();
        get(&cache, &state, &prefix).unwrap();
        assert_eq!(cache.len(), 2);

        cache.invalidate(&state.replace_strategy("two", Some(strategy("two", &[b], &[("latest", b)])), vec![]));
        assert!(cache.lookup("one").is_some(), "a change to another strategy keeps this entry");
        assert!(cache.lookup(&prefix).is_none(), "prefix answers are dropped when the hash set changes");

        cache.invalidate(&state.replace_strategy("one", None, vec![]));
        assert!(cache.lookup("one").is_none());
        assert!(get(&cache, &state, "one").is_err());
    }
}
