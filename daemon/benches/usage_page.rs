//! Usage pages straight from the index: a page of 100 ids at offset 0 and at
//! the last page of a revision with 50,000 instances, against the first
//! page of a revision with 100 (the floor), with and without
//! `includeStopped` (running, then stopped and re-pinned-away ids). The
//! `walk` case pages a plain `BTreeSet` of the same 50,000 ids by skipping
//! to the offset, as the index did before it kept ranks.
//!
//! Run: `cargo bench -p strata-daemon --bench usage_page`. The ratio of each
//! case to its `100 instances` floor is what `docs/performance.md` records:
//! flat means the page costs the same however many instances the revision
//! has and however deep the page is.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_daemon::usage::{Pin, UsageIndex};
use strata_shared::RevisionHash;
use time::OffsetDateTime;

/// An index with `n` instances on one revision: two thirds running, the
/// rest split between stopped and re-pinned away.
fn index_with(n: usize) -> (UsageIndex, Arc<str>, RevisionHash) {
    let index = UsageIndex::default();
    let strategy: Arc<str> = Arc::from("bench");
    let (hash, other) = (RevisionHash::of(b"hot"), RevisionHash::of(b"other"));
    let now = OffsetDateTime::now_utc();
    for i in 0..n {
        let id = format!("inst-{i:06}");
        index.created(Pin { strategy: "bench", hash, selector: "bench", id: &id }, now);
        match i % 6 {
            0..=3 => index.started(&strategy, hash, &id, now),
            4 => {}
            _ => index.repinned(hash, "bench", Pin { strategy: "bench", hash: other, selector: "bench", id: &id }, now),
        }
    }
    (index, strategy, hash)
}

fn pages(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage_page");
    for n in [100, 50_000] {
        let (index, strategy, hash) = index_with(n);
        let summary = index.summary(&strategy, hash);
        let (running, pinned, tracked) = (summary.count, summary.pinned, summary.tracked);
        group.bench_function(format!("{n} instances, first page"), |b| {
            b.iter(|| black_box(index.page(&strategy, hash, false, 0, 100)))
        });
        group.bench_function(format!("{n} instances, last page"), |b| {
            b.iter(|| black_box(index.page(&strategy, hash, false, running.saturating_sub(100), 100)))
        });
        group.bench_function(format!("{n} instances, includeStopped last page"), |b| {
            b.iter(|| black_box(index.page(&strategy, hash, true, tracked.saturating_sub(100), 100)))
        });
        group.bench_function(format!("{n} instances, pinned last page"), |b| {
            b.iter(|| black_box(index.pinned_page(hash, pinned.saturating_sub(100), 100)))
        });
    }
    let walked: std::collections::BTreeSet<String> = (0..50_000).map(|i| format!("inst-{i:06}")).collect();
    group.bench_function("50000 ids, last page by walking a BTreeSet", |b| {
        b.iter(|| black_box(walked.iter().skip(49_900).take(100).cloned().collect::<Vec<_>>()))
    });
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
