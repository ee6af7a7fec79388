//! Ordered sets of instance ids that can be paged by position.
//!
//! Usage pages ask for "ids `offset..offset + limit` in id order". A plain
//! `BTreeSet` answers that by walking `offset` ids first; the
//! order-statistic B-tree of the `indexset` crate finds position `offset` in
//! O(log n), so a page costs O(log n + limit) however deep it is
//! (SPEC §2.1). Pages that span two sets (running then stopped, pinned =
//! running ∪ idle) use [`union_page`], which finds the split point by binary
//! search over ranks.

/// Node size of the underlying tree. The crate's default (1,024 slots,
/// allocated up front) would cost 24 KiB for every non-empty set, and most
/// revisions hold a handful of ids; 64 keeps small sets small while deep
/// pages still cost two binary searches.
const NODE_SIZE: usize = 64;

/// An ordered set of instance ids with positional access. Allocates nothing
/// while empty: the index has an entry per revision and most hold no ids.
#[derive(Debug, Clone, Default)]
pub(super) struct IdSet(Option<indexset::BTreeSet<String>>);

impl PartialEq for IdSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for IdSet {}

impl IdSet {
    /// Adds `id`; says whether it was new.
    pub fn insert(&mut self, id: String) -> bool {
        self.0.get_or_insert_with(|| indexset::BTreeSet::with_maximum_node_size(NODE_SIZE)).insert(id)
    }

    /// Removes `id`; says whether it was there. Frees the tree once empty.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(set) = &mut self.0 else { return false };
        let removed = set.remove(id);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(id))
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, indexset::BTreeSet::len)
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Every id, in order.
    pub fn iter(&self) -> impl Iterator<Item = &String> + '_ {
        self.0.iter().flat_map(|set| set.iter())
    }

    /// The ids from position `start` on, in order; O(log n) to the first.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &String> + '_ {
        self.0.iter().flat_map(move |set| set.range_idx(start.min(set.len())..))
    }

    /// The id at position `index`.
    fn get(&self, index: usize) -> Option<&String> {
        self.0.as_ref().and_then(|set| set.get_index(index))
    }

    /// How many ids sort before `id`.
    fn rank(&self, id: &str) -> usize {
        self.0.as_ref().map_or(0, |set| set.rank(id))
    }

    /// Ids `offset..offset + limit`, in order.
    pub fn page(&self, offset: usize, limit: usize) -> impl Iterator<Item = &String> + '_ {
        self.iter_from(offset).take(limit)
    }
}

impl FromIterator<String> for IdSet {
    fn from_iter<I: IntoIterator<Item = String>>(ids: I) -> Self {
        let mut set = IdSet::default();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

/// Ids `offset..offset + limit` of `a ∪ b` in order, for two disjoint sets,
/// in O(log² n + limit).
///
/// Position `i` of `a` sits at position `i + b.rank(a[i])` of the union, a
/// strictly increasing function of `i`, so a binary search finds how many
/// ids of `a` come before union position `offset`; the rest of the first
/// `offset` come from `b`, and the page is the merge from there.
pub(super) fn union_page<'a>(a: &'a IdSet, b: &'a IdSet, offset: usize, limit: usize) -> Vec<&'a String> {
    let (mut low, mut high) = (0, a.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let id = a.get(middle).expect("in range");
        if middle + b.rank(id) < offset {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    // Past the end, `low` is `a.len()` and `iter_from` clamps `b`: empty.
    itertools::merge(a.iter_from(low), b.iter_from(offset.saturating_sub(low))).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(numbers: impl IntoIterator<Item = u16>) -> IdSet {
        numbers.into_iter().map(|n| format!("i{n:05}")).collect()
    }

    #[test]
    fn empty_sets_allocate_nothing_and_pages_past_the_end_are_empty() {
        let mut set = IdSet::default();
        assert!(set.is_empty() && set.0.is_none());
        assert!(set.insert("a".into()) && !set.insert("a".into()));
        assert!(set.contains("a") && !set.contains("b"));
        assert!(set.remove("a") && !set.remove("a"));
        assert!(set.0.is_none(), "freed once empty");
        let full = ids(0..10);
        assert_eq!(full.page(10, 5).count(), 0);
        assert_eq!(full.page(usize::MAX, 5).count(), 0);
        assert!(union_page(&full, &IdSet::default(), 11, 3).is_empty());
    }

    #[test]
    fn a_deep_page_of_a_large_set_is_the_same_as_walking_to_it() {
        let set = ids(0..50_000);
        let walked: Vec<_> = set.iter().skip(49_900).take(100).collect();
        assert_eq!(set.page(49_900, 100).collect::<Vec<_>>(), walked);
        assert_eq!(walked[0], "i49900");
    }

    proptest! {
        /// Any page of the union equals the same page of a merged walk.
        #[test]
        fn union_pages_match_a_merged_walk(
            numbers in proptest::collection::btree_set(0u16..2_000, 0..400),
            split in proptest::collection::vec(any::<bool>(), 400),
            offset in 0usize..450,
            limit in 0usize..120,
        ) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (n, left) in numbers.iter().zip(split) {
                if left { a.push(*n) } else { b.push(*n) }
            }
            let (a, b) = (ids(a), ids(b));
            let walked: Vec<&String> = itertools::merge(a.iter(), b.iter()).skip(offset).take(limit).collect();
            prop_assert_eq!(union_page(&a, &b, offset, limit), walked);
        }
    }
}
