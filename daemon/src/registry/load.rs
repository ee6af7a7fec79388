//! Building the in-memory registry from `registry.json`: entry validation,
//! file verification and (only for unseen hashes) compilation, in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use strata_shared::RevisionHash;
use strata_shared::metadata::ModuleMetadata;
use strata_shared::names::{self, LATEST_TAG};

use super::file::{self, RegistryDoc, RevisionDoc, StrategyDoc};
use super::{LoadReport, Registry};
use crate::registry::state::{LoadError, Revision, Strategy};

/// A revision that must be read from disk (not already loaded).
struct Job {
    strategy: Arc<str>,
    hash: RevisionHash,
    doc: RevisionDoc,
}

/// Rebuilds every strategy of `doc`; strategies no longer in it are removed.
pub(super) fn rebuild_all(registry: &Registry, doc: &RegistryDoc) -> LoadReport {
    let started = Instant::now();
    let entries: Vec<(String, Option<StrategyDoc>, Vec<LoadError>)> =
        doc.iter().map(|(name, value)| parse_entry(name, value)).collect();
    let report = rebuild(registry, entries.iter().map(|(n, e, errs)| (n.as_str(), e.as_ref(), errs.clone())));
    let gone: Vec<String> = registry.read(|state| {
        state.strategies().keys().filter(|name| !doc.contains_key(&***name)).map(|name| name.to_string()).collect()
    });
    for name in gone {
        registry.install(&name, None, Vec::new());
    }
    tracing::info!(
        strategies = report.strategies,
        revisions = report.revisions,
        compiled = report.compiled,
        errors = report.errors,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registry loaded"
    );
    report
}

/// Rebuilds the entries of `names` as `doc` has them (absent = removed).
pub(super) fn rebuild_some(registry: &Registry, doc: &RegistryDoc, names: &[String]) -> LoadReport {
    let entries: Vec<(String, Option<StrategyDoc>, Vec<LoadError>)> = names
        .iter()
        .map(|name| match doc.get(name) {
            Some(value) => parse_entry(name, value),
            None => (name.clone(), None, Vec::new()),
        })
        .collect();
    rebuild(registry, entries.iter().map(|(n, e, errs)| (n.as_str(), e.as_ref(), errs.clone())))
}

/// Rebuilds one strategy after the writer changed its entry.
pub(super) fn rebuild_one(registry: &Registry, name: &str, entry: Option<&StrategyDoc>) {
    rebuild(registry, std::iter::once((name, entry, Vec::new())));
}

fn parse_entry(name: &str, value: &serde_json::Value) -> (String, Option<StrategyDoc>, Vec<LoadError>) {
    let error = |message: String| vec![LoadError { strategy: name.to_owned(), hash: None, message }];
    if let Err(e) = names::validate_strategy_name(name) {
        return (name.to_owned(), None, error(e.to_string()));
    }
    match StrategyDoc::from_value(value) {
        Ok(entry) => (name.to_owned(), Some(entry), Vec::new()),
        Err(e) => (name.to_owned(), None, error(format!("malformed entry: {e}"))),
    }
}

fn rebuild<'a>(
    registry: &Registry,
    entries: impl Iterator<Item = (&'a str, Option<&'a StrategyDoc>, Vec<LoadError>)>,
) -> LoadReport {
    let entries: Vec<_> = entries.collect();
    let mut jobs = Vec::new();
    let mut reused: Vec<Vec<(RevisionHash, Arc<Revision>)>> = Vec::with_capacity(entries.len());
    let mut errors: Vec<Vec<LoadError>> = Vec::with_capacity(entries.len());
    for (name, entry, entry_errors) in &entries {
        let mut kept = Vec::new();
        let mut errs = entry_errors.clone();
        let name_arc: Arc<str> = registry.read(|s| s.strategy_name(name).cloned()).unwrap_or_else(|| Arc::from(*name));
        for (key, doc) in entry.map(|e| e.hashes.iter()).into_iter().flatten() {
            let error = |message: String| LoadError { strategy: name.to_string(), hash: Some(key.clone()), message };
            let hash: RevisionHash = match key.parse() {
                Ok(hash) => hash,
                Err(e) => {
                    errs.push(error(format!("bad hash key: {e}")));
                    continue;
                }
            };
            if doc.path != file::revision_path(name, &hash) {
                errs.push(error(format!("path must be {}", file::revision_path(name, &hash))));
                continue;
            }
            if let Err(e) = names::validate_tag(&doc.tag) {
                errs.push(error(format!("bad primary tag: {e}")));
                continue;
            }
            let current = registry.read(|s| s.strategy(name).and_then(|st| st.revisions.get(&hash)).cloned());
            match current {
                Some(rev) if rev.tag == doc.tag => kept.push((hash, rev)),
                Some(rev) => kept.push((hash, Arc::new(Revision { tag: doc.tag.clone(), ..(*rev).clone() }))),
                None => jobs.push((reused.len(), Job { strategy: name_arc.clone(), hash, doc: doc.clone() })),
            }
        }
        reused.push(kept);
        errors.push(errs);
    }

    let (loaded, compiled) = run_jobs(registry, jobs);
    let mut by_entry: Vec<Vec<(RevisionHash, Arc<Revision>)>> = reused;
    for (index, result) in loaded {
        match result {
            Ok(rev) => by_entry[index].push((rev.hash, rev)),
            Err(e) => errors[index].push(e),
        }
    }

    let mut report = LoadReport { strategies: 0, revisions: 0, compiled: compiled.len() as u64, errors: 0 };
    if !compiled.is_empty() {
        let saved = registry.store.save_metadata(compiled.iter().map(|(h, m)| (h, m.as_ref())));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "could not persist compiled metadata; it will be recompiled next start");
        }
        registry.metadata.lock().extend(compiled);
    }
    for (((name, entry, _), revisions), mut errs) in entries.iter().zip(by_entry).zip(errors) {
        let strategy = entry.map(|entry| assemble(name, entry, revisions, &mut errs));
        report.strategies += usize::from(strategy.as_ref().is_some_and(|s| !s.revisions.is_empty()));
        report.revisions += strategy.as_ref().map_or(0, |s| s.revisions.len());
        report.errors += errs.len();
        for err in &errs {
            tracing::warn!(strategy = %err.strategy, hash = ?err.hash, "registry entry failed to load: {}", err.message);
        }
        registry.install(name, strategy, errs);
    }
    report
}

/// Orders revisions as in the document and keeps only tags whose revision loaded.
fn assemble(
    name: &str,
    entry: &StrategyDoc,
    revisions: Vec<(RevisionHash, Arc<Revision>)>,
    errors: &mut Vec<LoadError>,
) -> Strategy {
    let mut loaded: std::collections::HashMap<_, _> = revisions.into_iter().collect();
    let mut strategy = Strategy::default();
    for key in entry.hashes.keys() {
        if let Some((hash, rev)) = key.parse().ok().and_then(|h: RevisionHash| loaded.remove_entry(&h)) {
            strategy.revisions.insert(hash, rev);
        }
    }
    for (tag, key) in &entry.tags {
        let error = |message: String| LoadError { strategy: name.to_owned(), hash: Some(key.clone()), message };
        if let Err(e) = names::validate_tag(tag) {
            errors.push(error(format!("bad tag: {e}")));
            continue;
        }
        match key.parse::<RevisionHash>() {
            Ok(hash) if strategy.revisions.contains_key(&hash) => {
                strategy.tags.insert(tag.clone(), hash);
            }
            // The revision itself already reported why it did not load.
            Ok(hash) if entry.hashes.contains_key(&hash.to_string()) => {}
            Ok(_) => errors.push(error(format!("tag \"{tag}\" points to a revision the strategy does not have"))),
            Err(e) => errors.push(error(format!("tag \"{tag}\" has a bad hash: {e}"))),
        }
    }
    if !strategy.revisions.is_empty() && !strategy.tags.contains_key(LATEST_TAG) {
        errors.push(LoadError {
            strategy: name.to_owned(),
            hash: None,
            message: "no loaded revision is tagged latest; `name` selectors will not resolve".into(),
        });
    }
    strategy
}

type JobResults = (Vec<(usize, Result<Arc<Revision>, LoadError>)>, Vec<(RevisionHash, Arc<ModuleMetadata>)>);

/// Verifies (and if needed compiles) revisions on a few threads.
fn run_jobs(registry: &Registry, jobs: Vec<(usize, Job)>) -> JobResults {
    let progress = &registry.progress;
    progress.total.store(jobs.len() as u64, Ordering::Relaxed);
    progress.done.store(0, Ordering::Relaxed);
    progress.compiled.store(0, Ordering::Relaxed);
    if jobs.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let next = AtomicUsize::new(0);
    let threads = registry.options.load_threads.clamp(1, jobs.len());
    let started = Instant::now();
    let mut results = Vec::with_capacity(jobs.len());
    let mut compiled = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    let mut fresh = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((index, job)) = jobs.get(i) else { break };
                        let result = load_revision(registry, job).map(|(rev, new)| {
                            if new {
                                fresh.push((rev.hash, rev.metadata.clone()));
                                progress.compiled.fetch_add(1, Ordering::Relaxed);
                            }
                            rev
                        });
                        out.push((i, *index, result));
                        let done = progress.done.fetch_add(1, Ordering::Relaxed) + 1;
                        if done.is_multiple_of(5_000) {
                            tracing::info!(
                                done,
                                total = jobs.len(),
                                compiled = progress.compiled.load(Ordering::Relaxed),
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "loading registry"
                            );
                        }
                    }
                    (out, fresh)
                })
            })
            .collect();
        for worker in workers {
            let (out, fresh) = worker.join().expect("load worker panicked");
            results.extend(out);
            compiled.extend(fresh);
        }
    });
    // Workers finish in any order; answer in job (document) order so load
    // errors are listed the same way on every start.
    results.sort_unstable_by_key(|(job, _, _)| *job);
    (results.into_iter().map(|(_, index, result)| (index, result)).collect(), compiled)
}

/// Reads one revision, checks its hash and finds or compiles its metadata.
/// Returns whether it had to be compiled.
fn load_revision(registry: &Registry, job: &Job) -> Result<(Arc<Revision>, bool), LoadError> {
    let error =
        |message: String| LoadError { strategy: job.strategy.to_string(), hash: Some(job.hash.to_string()), message };
    let bytes = std::fs::read(registry.options.root.join(&job.doc.path))
        .map_err(|e| error(format!("cannot read {}: {}", job.doc.path, e.kind())))?;
    let actual = RevisionHash::of(&bytes);
    if actual != job.hash {
        return Err(error(format!("{} has hash {actual}, not the hash it is registered under", job.doc.path)));
    }
    let known = registry.metadata.lock().get(&job.hash).cloned();
    let (metadata, new) = match known {
        Some(metadata) => (metadata, false),
        None => {
            let (_, metadata, _) = registry.inspect(&bytes).map_err(|e| match e {
                super::RegistryError::Validation { diagnostics, .. } => error(
                    diagnostics
                        .iter()
                        .map(|d| match (d.line, &d.hint) {
                            (Some(line), _) => format!("{} (line {line})", d.message),
                            (None, Some(hint)) => format!("{} ({hint})", d.message),
                            _ => d.message.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                other => error(other.to_string()),
            })?;
            (metadata, true)
        }
    };
    if metadata.name != *job.strategy {
        return Err(error(format!("module is named \"{}\", not \"{}\"", metadata.name, job.strategy)));
    }
    let revision = Revision {
        strategy: job.strategy.clone(),
        hash: job.hash,
        tag: job.doc.tag.clone(),
        path: job.doc.path.clone(),
        size: bytes.len() as u64,
        metadata,
    };
    Ok((Arc::new(revision), new))
}
