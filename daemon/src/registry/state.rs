//! The in-memory registry: strategies, their revisions and tags, and the
//! indexes that make every lookup logarithmic or better.

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;
use strata_shared::metadata::ModuleMetadata;
use strata_shared::names::LATEST_TAG;
use strata_shared::{HashRef, RevisionHash, Selector};

/// One loaded revision of a strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The strategy that owns it.
    pub strategy: Arc<str>,
    /// SHA-256 of the module's bytes.
    pub hash: RevisionHash,
    /// Primary tag (the tag it was uploaded with).
    pub tag: String,
    /// Path relative to the strategies directory.
    pub path: String,
    /// Size of the module in bytes.
    pub size: u64,
    /// Metadata extracted when the revision was first compiled.
    pub metadata: Arc<ModuleMetadata>,
}

/// One strategy: its revisions in the order they were added, and its tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strategy {
    /// Tag → revision. Only tags whose revision loaded are here.
    pub tags: IndexMap<String, RevisionHash>,
    /// Revisions, oldest first.
    pub revisions: IndexMap<RevisionHash, Arc<Revision>>,
}

impl Strategy {
    /// The revision `latest` points to.
    pub fn latest(&self) -> Option<&Arc<Revision>> {
        self.tags.get(LATEST_TAG).and_then(|hash| self.revisions.get(hash))
    }

    /// Every tag that points at `hash`, in tag order.
    pub fn tags_of(&self, hash: &RevisionHash) -> Vec<String> {
        self.tags.iter().filter(|(_, h)| *h == hash).map(|(tag, _)| tag.clone()).collect()
    }
}

/// A selector resolved to one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The owning strategy.
    pub strategy: Arc<str>,
    /// The revision.
    pub hash: RevisionHash,
}

/// Which resolver cache an answer may live in (see `resolver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependence {
    /// Depends only on one strategy's tags or one revision's existence.
    Exact,
    /// Depends on the whole set of hashes (prefix matches): any added or
    /// removed revision may change it.
    HashSet,
}

/// Why a selector did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The selector text is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// No such strategy (404).
    #[error("unknown strategy \"{0}\"")]
    UnknownStrategy(String),
    /// The strategy exists but has no such tag (404).
    #[error("strategy \"{strategy}\" has no tag \"{tag}\"")]
    UnknownTag {
        /// Strategy name.
        strategy: String,
        /// The missing tag.
        tag: String,
    },
    /// No revision matches the hash or prefix (404).
    #[error("no revision {hash}{}", within.as_ref().map(|s| format!(" in strategy \"{s}\"")).unwrap_or_default())]
    UnknownRevision {
        /// The hash or prefix as given.
        hash: String,
        /// The strategy searched, if the selector named one.
        within: Option<String>,
    },
    /// A hash prefix matches several revisions (400).
    #[error("hash prefix {prefix} is ambiguous: {}", candidates.join(", "))]
    Ambiguous {
        /// The prefix as given.
        prefix: String,
        /// Up to ten matching `name@sha256:<hex>` selectors.
        candidates: Vec<String>,
    },
}

/// A revision that failed to load, as reported by `/strategies/registry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadError {
    /// The strategy entry concerned.
    pub strategy: String,
    /// The revision concerned, when the problem is with one revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// What went wrong (never an absolute path).
    pub message: String,
}

/// A change to the registry, used to invalidate exactly the cached
/// resolutions it affects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tag was set, moved or removed.
    Tag {
        /// Strategy name.
        strategy: Arc<str>,
        /// The tag.
        tag: String,
        /// Where it pointed before (`None`: it is new).
        from: Option<RevisionHash>,
        /// Where it points now (`None`: it was removed).
        to: Option<RevisionHash>,
    },
    /// A revision appeared.
    RevisionAdded {
        /// Strategy name.
        strategy: Arc<str>,
        /// The revision.
        hash: RevisionHash,
    },
    /// A revision disappeared.
    RevisionRemoved {
        /// Strategy name.
        strategy: Arc<str>,
        /// The revision.
        hash: RevisionHash,
    },
}

/// Every loaded strategy plus the hash → owner index.
#[derive(Debug, Default)]
pub struct RegistryState {
    strategies: BTreeMap<Arc<str>, Strategy>,
    owners: BTreeMap<RevisionHash, Arc<str>>,
    errors: BTreeMap<String, Vec<LoadError>>,
}

impl RegistryState {
    /// All strategies, by name.
    pub fn strategies(&self) -> &BTreeMap<Arc<str>, Strategy> {
        &self.strategies
    }

    /// One strategy.
    pub fn strategy(&self, name: &str) -> Option<&Strategy> {
        self.strategies.get(name)
    }

    /// The strategy's interned name, shared by every index.
    pub fn strategy_name(&self, name: &str) -> Option<&Arc<str>> {
        self.strategies.get_key_value(name).map(|(k, _)| k)
    }

    /// One revision by hash, whichever strategy owns it.
    pub fn revision(&self, hash: &RevisionHash) -> Option<&Arc<Revision>> {
        let owner = self.owners.get(hash)?;
        self.strategies.get(owner)?.revisions.get(hash)
    }

    /// Number of loaded revisions.
    pub fn revision_count(&self) -> usize {
        self.owners.len()
    }

    /// Load errors, strategy by strategy.
    pub fn errors(&self) -> impl Iterator<Item = &LoadError> {
        self.errors.values().flatten()
    }

    /// Resolves a parsed selector against the current registry, saying which
    /// cache the answer may be kept in.
    pub fn resolve(&self, selector: &Selector) -> Result<(Resolved, Dependence), ResolveError> {
        match selector {
            Selector::Name { strategy } => match self.strategy_name(strategy) {
                Some(name) => self.resolve_tag(name, LATEST_TAG),
                None => match selector.name_as_hash() {
                    // A bare hex token that names no strategy is read as a hash. The
                    // answer flips if a strategy of that name appears, which only an
                    // added revision can cause: hence `HashSet`.
                    Some(hash) => match self.resolve_hash(&hash, None) {
                        Ok((resolved, _)) => Ok((resolved, Dependence::HashSet)),
                        Err(ResolveError::UnknownRevision { .. }) => {
                            Err(ResolveError::UnknownStrategy(strategy.clone()))
                        }
                        Err(other) => Err(other),
                    },
                    None => Err(ResolveError::UnknownStrategy(strategy.clone())),
                },
            },
            Selector::Tag { strategy, tag } => {
                let name =
                    self.strategy_name(strategy).ok_or_else(|| ResolveError::UnknownStrategy(strategy.clone()))?;
                self.resolve_tag(name, tag)
            }
            Selector::Revision { strategy, hash } => {
                if !self.strategies.contains_key(strategy.as_str()) {
                    return Err(ResolveError::UnknownStrategy(strategy.clone()));
                }
                self.resolve_hash(hash, Some(strategy))
            }
            Selector::Hash(hash) => self.resolve_hash(hash, None),
        }
    }

    fn resolve_tag(&self, name: &Arc<str>, tag: &str) -> Result<(Resolved, Dependence), ResolveError> {
        let hash = self.strategies[name]
            .tags
            .get(tag)
            .ok_or_else(|| ResolveError::UnknownTag { strategy: name.to_string(), tag: tag.to_owned() })?;
        Ok((Resolved { strategy: name.clone(), hash: *hash }, Dependence::Exact))
    }

    fn resolve_hash(&self, hash: &HashRef, within: Option<&str>) -> Result<(Resolved, Dependence), ResolveError> {
        let not_found = || ResolveError::UnknownRevision { hash: hash.to_string(), within: within.map(str::to_owned) };
        match hash {
            HashRef::Full(full) => {
                let owner =
                    self.owners.get(full).filter(|o| within.is_none_or(|w| &***o == w)).ok_or_else(not_found)?;
                Ok((Resolved { strategy: owner.clone(), hash: *full }, Dependence::Exact))
            }
            HashRef::Prefix(prefix) => {
                let mut matches =
                    self.prefix_matches(prefix).filter(|(_, owner)| within.is_none_or(|w| &***owner == w));
                let (first, owner) = matches.next().ok_or_else(not_found)?;
                let rest: Vec<_> = matches.take(9).collect();
                if rest.is_empty() {
                    return Ok((Resolved { strategy: owner.clone(), hash: *first }, Dependence::HashSet));
                }
                let candidates = std::iter::once((first, owner))
                    .chain(rest)
                    .map(|(hash, owner)| format!("{owner}@{hash}"))
                    .collect();
                Err(ResolveError::Ambiguous { prefix: prefix.clone(), candidates })
            }
        }
    }

    /// Revisions whose hex starts with `prefix` (lowercase hex), in hash order.
    fn prefix_matches<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a RevisionHash, &'a Arc<str>)> + 'a {
        let mut low = [0u8; 32];
        for (i, nibble) in prefix.bytes().enumerate().take(64) {
            let value = (nibble as char).to_digit(16).unwrap_or(0) as u8;
            low[i / 2] |= if i % 2 == 0 { value << 4 } else { value };
        }
        self.owners
            .range(RevisionHash::from_bytes(low)..)
            .take_while(move |(hash, _)| hash.to_hex().starts_with(prefix))
    }

    /// Replaces (or with `None` removes) one strategy, returning the changes
    /// that callers must apply to caches and indexes.
    pub fn replace_strategy(&mut self, name: &str, next: Option<Strategy>, errors: Vec<LoadError>) -> Vec<Change> {
        let key: Arc<str> = self.strategy_name(name).cloned().unwrap_or_else(|| Arc::from(name));
        let previous = self.strategies.remove(name).unwrap_or_default();
        let next_strategy = next.unwrap_or_default();
        let mut changes = Vec::new();
        for (tag, hash) in &previous.tags {
            let now = next_strategy.tags.get(tag);
            if now != Some(hash) {
                changes.push(Change::Tag {
                    strategy: key.clone(),
                    tag: tag.clone(),
                    from: Some(*hash),
                    to: now.copied(),
                });
            }
        }
        for (tag, hash) in &next_strategy.tags {
            if !previous.tags.contains_key(tag) {
                changes.push(Change::Tag { strategy: key.clone(), tag: tag.clone(), from: None, to: Some(*hash) });
            }
        }
        for hash in previous.revisions.keys() {
            if !next_strategy.revisions.contains_key(hash) {
                self.owners.remove(hash);
                changes.push(Change::RevisionRemoved { strategy: key.clone(), hash: *hash });
            }
        }
        for hash in next_strategy.revisions.keys() {
            if !previous.revisions.contains_key(hash) {
                self.owners.insert(*hash, key.clone());
                changes.push(Change::RevisionAdded { strategy: key.clone(), hash: *hash });
            }
        }
        if next_strategy.revisions.is_empty() && next_strategy.tags.is_empty() {
            // A strategy with no revisions does not exist.
        } else {
            self.strategies.insert(key, next_strategy);
        }
        if errors.is_empty() {
            self.errors.remove(name);
        } else {
            self.errors.insert(name.to_owned(), errors);
        }
        changes
    }

    /// Names of strategies that own `hash` other than `strategy` (a revision's
    /// bytes name their strategy, so this only happens in hand-edited files).
    pub fn owner_of(&self, hash: &RevisionHash) -> Option<&Arc<str>> {
        self.owners.get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::metadata::ModuleMetadata;

    fn metadata(name: &str) -> Arc<ModuleMetadata> {
        Arc::new(ModuleMetadata {
            name: name.into(),
            display_name: name.into(),
            description: None,
            tag: None,
            version: None,
            config: vec![],
            events: vec![],
        })
    }

    fn strategy(name: &str, hashes: &[RevisionHash], tags: &[(&str, usize)]) -> Strategy {
        let name_arc: Arc<str> = Arc::from(name);
        let revisions = hashes
            .iter()
            .map(|hash| {
                let rev = Revision {
                    strategy: name_arc.clone(),
                    hash: *hash,
                    tag: "v".into(),
                    path: crate::registry::file::revision_path(name, hash),
                    size: 1,
                    metadata: metadata(name),
                };
                (*hash, Arc::new(rev))
            })
            .collect();
        let tags = tags.iter().map(|(t, i)| (t.to_string(), hashes[*i])).collect();
        Strategy { tags, revisions }
    }

    fn hash_with_prefix(first: &[u8]) -> RevisionHash {
        let mut bytes = [0x11u8; 32];
        bytes[..first.len()].copy_from_slice(first);
        RevisionHash::from_bytes(bytes)
    }

    fn resolve(state: &RegistryState, s: &str) -> Result<Resolved, ResolveError> {
        state.resolve(&Selector::parse(s).unwrap()).map(|(r, _)| r)
    }

    #[test]
    fn resolves_every_selector_form() {
        let a = hash_with_prefix(&[0xaa, 0xbb, 0xcc, 0xdd, 0x01]);
        let b = hash_with_prefix(&[0xaa, 0xbb, 0xcc, 0xdd, 0x02]);
        let c = hash_with_prefix(&[0x12, 0x34, 0x56, 0x78]);
        let mut state = RegistryState::default();
        state.replace_strategy("momentum", Some(strategy("momentum", &[a, b], &[("latest", 1), ("prod", 0)])), vec![]);
        state.replace_strategy("noop", Some(strategy("noop", &[c], &[("latest", 0)])), vec![]);

        assert_eq!(resolve(&state, "momentum").unwrap().hash, b);
        assert_eq!(resolve(&state, "momentum:prod").unwrap().hash, a);
        assert_eq!(resolve(&state, &format!("momentum@{a}")).unwrap().hash, a);
        assert_eq!(resolve(&state, &format!("momentum@{}", a.to_hex())).unwrap().hash, a);
        assert_eq!(resolve(&state, &a.to_string()).unwrap().strategy.as_ref(), "momentum");
        assert_eq!(resolve(&state, "sha256:12345678").unwrap().hash, c);
        assert_eq!(resolve(&state, "12345678").unwrap().hash, c, "bare hex falls back to hash prefixes");
        assert!(
            matches!(resolve(&state, "sha256:aabbccdd"), Err(ResolveError::Ambiguous { candidates, .. }) if candidates.len() == 2)
        );
        assert_eq!(resolve(&state, "sha256:aabbccdd02").unwrap().hash, b);
        assert!(matches!(resolve(&state, "momentum:PROD"), Err(ResolveError::UnknownTag { .. })));
        assert!(matches!(resolve(&state, "nope"), Err(ResolveError::UnknownStrategy(_))));
        assert!(matches!(resolve(&state, "noop@sha256:aabbccdd01"), Err(ResolveError::UnknownRevision { .. })));
        assert!(matches!(resolve(&state, "sha256:ffffffff"), Err(ResolveError::UnknownRevision { .. })));
    }

    #[test]
    fn replacing_a_strategy_reports_exactly_what_changed() {
        let a = hash_with_prefix(&[1]);
        let b = hash_with_prefix(&[2]);
        let mut state = RegistryState::default();
        state.replace_strategy("s", Some(strategy("s", &[a], &[("latest", 0), ("prod", 0)])), vec![]);
        let changes = state.replace_strategy("s", Some(strategy("s", &[a, b], &[("latest", 1), ("prod", 0)])), vec![]);
        let name: Arc<str> = Arc::from("s");
        assert_eq!(
            changes,
            vec![
                Change::Tag { strategy: name.clone(), tag: "latest".into(), from: Some(a), to: Some(b) },
                Change::RevisionAdded { strategy: name.clone(), hash: b }
            ]
        );
        let changes = state.replace_strategy("s", None, vec![]);
        assert_eq!(changes.len(), 4);
        assert!(state.strategy("s").is_none());
        assert_eq!(state.revision_count(), 0);
    }
}
