//! Cached selector resolution against a bare `HashMap<String, _>` lookup of
//! the same strings, on a generated registry of 1,000 strategies × 60
//! revisions (override with `STRATA_BENCH_STRATEGIES` / `_REVISIONS`).
//!
//! Run: `cargo bench -p strata-daemon --bench resolve`. The ratio of each
//! form's time to `hashmap_baseline` is what `docs/performance.md` records.

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_daemon::fixtures;
use strata_daemon::metrics::Metrics;
use strata_daemon::registry::{Registry, RegistryOptions, Resolved};
use strata_daemon::store::Store;

/// Builds one selector form from (name, `sha256:<hex>`, primary tag).
type Form = fn(&str, &str, &str) -> String;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn resolve(c: &mut Criterion) {
    let strategies = env_or("STRATA_BENCH_STRATEGIES", 1000);
    let revisions = env_or("STRATA_BENCH_REVISIONS", 60);
    let dir = tempfile::tempdir().expect("temp dir");
    let (root, data) = (dir.path().join("strategies"), dir.path().join("data"));
    let generated = fixtures::generate(&root, &data, strategies, revisions).expect("fixture registry");
    let registry = Registry::new(
        RegistryOptions {
            root,
            js_limits: Default::default(),
            resolver_cache_capacity: NonZeroUsize::new(100_000).expect("non-zero"),
            load_threads: 2,
        },
        Arc::new(Store::open(&data).expect("store")),
        Metrics::new(),
    );
    let report = registry.load().expect("registry loads");
    assert_eq!(report.revisions, strategies * revisions);

    // One revision per strategy, spread over the registry.
    let picks: Vec<_> = generated.revisions.iter().step_by(revisions).collect();
    let forms: [(&str, Form); 5] = [
        ("name", |name, _, _| name.to_owned()),
        ("name_tag", |name, _, tag| format!("{name}:{tag}")),
        ("name_at_hash", |name, hash, _| format!("{name}@{hash}")),
        ("bare_hash", |_, hash, _| hash.to_owned()),
        ("hash_prefix", |_, hash, _| hash[..19].to_owned()),
    ];

    let mut group = c.benchmark_group("resolve");
    let mut baseline: HashMap<String, Resolved> = HashMap::new();
    let mut all = Vec::new();
    for (form, make) in forms {
        let selectors: Vec<String> = picks.iter().map(|(name, hash, tag)| make(name, &hash.to_string(), tag)).collect();
        for selector in &selectors {
            let resolved = registry.resolve(selector).expect("resolves");
            baseline.insert(selector.clone(), resolved);
        }
        let mut i = 0;
        group.bench_function(form, |b| {
            b.iter(|| {
                i = (i + 1) % selectors.len();
                black_box(registry.resolve(black_box(&selectors[i])).ok())
            })
        });
        all.extend(selectors);
    }
    let mut i = 0;
    group.bench_function("hashmap_baseline", |b| {
        b.iter(|| {
            i = (i + 1) % all.len();
            black_box(baseline.get(black_box(all[i].as_str())).cloned())
        })
    });
    group.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
