//! One revision's entry in the usage index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::ids::IdSet;

/// One revision's usage. Every instance pinned to the revision is in exactly
/// one of `running` and `idle`, and in `by_selector` under its selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// The registry has this revision (an entry may outlive its revision
    /// while instances still pin it, after a hand edit).
    pub loaded: bool,
    /// Tags pointing at it, as the registry reported them.
    pub tags: Vec<String>,
    /// Pinned and running.
    pub running: IdSet,
    /// Pinned and not running (never started, stopped or failed).
    pub idle: IdSet,
    /// Were pinned here and have been re-pinned to another revision.
    pub departed: IdSet,
    /// Selector as typed → pinned ids following it (drift is per selector).
    pub by_selector: BTreeMap<Arc<str>, BTreeSet<String>>,
    /// First time any instance ran it.
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance was seen running it.
    pub last_seen: Option<OffsetDateTime>,
    /// A `revisionRetired` delta went out and it has not been used since.
    pub retired_announced: bool,
}

impl Entry {
    /// Instances pinned to it, running or not.
    pub fn pinned_count(&self) -> usize {
        self.running.len() + self.idle.len()
    }

    /// Adds a pinned, not running instance.
    pub fn add_pinned(&mut self, selector: &str, id: &str) {
        if !self.running.contains(id) {
            self.idle.insert(id.to_owned());
        }
        match self.by_selector.get_mut(selector) {
            Some(ids) => {
                ids.insert(id.to_owned());
            }
            None => {
                self.by_selector.insert(Arc::from(selector), BTreeSet::from([id.to_owned()]));
            }
        }
    }

    /// Removes a pinned instance, running or not.
    pub fn remove_pinned(&mut self, selector: &str, id: &str) {
        self.running.remove(id);
        self.idle.remove(id);
        if let Some(ids) = self.by_selector.get_mut(selector) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_selector.remove(selector);
            }
        }
    }

    /// Moves a pinned instance between `idle` and `running`; says whether
    /// the running set changed.
    pub fn set_running(&mut self, id: &str, running: bool) -> bool {
        if running {
            self.idle.remove(id);
            self.running.insert(id.to_owned())
        } else {
            let was = self.running.remove(id);
            if was {
                self.idle.insert(id.to_owned());
            }
            was
        }
    }

    /// Loaded, nothing running on it and no tag on it: it retires once the
    /// grace period has passed.
    pub fn is_idle(&self) -> bool {
        self.loaded && self.running.is_empty() && self.tags.is_empty()
    }

    /// Idle, and no instance has run it for `grace` (or ever).
    pub fn is_retired(&self, now: OffsetDateTime, grace: Duration) -> bool {
        self.is_idle() && self.last_seen.is_none_or(|seen| now - seen >= grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retirement_needs_no_run_no_tag_and_the_grace_period() {
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let mut entry = Entry { loaded: true, tags: vec!["v1".into()], ..Entry::default() };
        assert!(!entry.is_retired(at(0), Duration::ZERO), "tagged");
        entry.tags.clear();
        assert!(entry.is_retired(at(0), Duration::minutes(5)), "never ran: nothing to wait for");
        entry.last_seen = Some(at(100));
        assert!(!entry.is_retired(at(200), Duration::minutes(5)));
        assert!(entry.is_retired(at(400), Duration::minutes(5)));
        entry.add_pinned("s", "x");
        entry.set_running("x", true);
        assert!(!entry.is_retired(at(10_000), Duration::ZERO), "running");
        entry.set_running("x", false);
        assert_eq!((entry.running.len(), entry.idle.len()), (0, 1));
        entry.remove_pinned("s", "x");
        assert!(entry.by_selector.is_empty() && entry.idle.is_empty());
    }
}
