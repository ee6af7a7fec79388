//! Carrying out a [`Plan`] in an order that survives a crash at any point.
//!
//! 1. **Copy.** Every revision whose hashed path is missing is written there
//!    with the daemon's durable write ([`file::write_revision`]: temp file,
//!    fsync, rename, fsync the directories), then read back and its SHA-256
//!    checked.
//! 2. **Register.** The merged `registry.json` is written atomically and
//!    durably ([`file::write_atomic`]).
//! 3. **Remove originals.** Each original is hashed again (a file changed
//!    since planning is kept and reported), its verified copy checked once
//!    more, then removed; tag directories left empty are removed too.
//! 4. **Prune.** Revisions planned for pruning (already dropped from
//!    `registry.json` in step 2) lose their files.
//!
//! A `kill -9` before step 2 leaves every original in place (plus complete
//! copies, which a re-run reuses after checking their hash); after step 2 the
//! registry only names verified copies, and a re-run removes the originals
//! left. No original is ever removed before its copy is durable, verified and
//! registered (SPEC §6).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use indicatif::ProgressBar;
use serde::Serialize;
use strata_shared::RevisionHash;

use super::BootstrapError;
use super::plan::Plan;
use crate::registry::file::{self, REGISTRY_FILE};

/// Test hook: when set to `copy:N`, `registry:1` or `remove:N`, the process
/// stops (sleeps forever, after printing `bootstrap: paused at …` to stderr)
/// right after the N-th copy, the registry write, or the N-th removal, so a
/// test can `kill -9` it at a known point. Never set it in production.
pub const PAUSE_ENV: &str = "STRATA_BOOTSTRAP_TEST_PAUSE";

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Files copied to their hashed path (and verified).
    pub copied: usize,
    /// Whether `registry.json` was written.
    pub registry_written: bool,
    /// Originals removed.
    pub removed: usize,
    /// Revisions pruned.
    pub pruned: usize,
    /// Originals not removed, with the reason (e.g. changed since planning).
    pub kept: Vec<String>,
}

/// Applies `plan` (see the module docs for the order). Refuses a plan with
/// problems. `progress` ticks once per copy and per removal.
pub fn apply(plan: &Plan, progress: &ProgressBar) -> Result<ApplyReport, BootstrapError> {
    if !plan.problems.is_empty() {
        return Err(BootstrapError::PlanHasProblems(plan.problems.len()));
    }
    let root = plan.root.as_path();
    let mut report = ApplyReport::default();
    progress.set_length((plan.copies() + plan.removals()) as u64);

    for strategy in &plan.strategies {
        for rev in strategy.revisions.iter().filter(|r| r.copy_from.is_some()) {
            file::write_revision(root, &strategy.name, &rev.hash, &rev.bytes)
                .map_err(|e| BootstrapError::Apply(format!("cannot write {}: {e}", rev.target)))?;
            verify(root, &rev.target, &rev.hash)?;
            report.copied += 1;
            progress.inc(1);
            checkpoint("copy", report.copied);
        }
    }

    if let Some(doc) = &plan.registry {
        file::write_atomic(&root.join(REGISTRY_FILE), &file::render_doc(doc))
            .map_err(|e| BootstrapError::Apply(format!("cannot write {REGISTRY_FILE}: {e}")))?;
        report.registry_written = true;
        checkpoint("registry", 1);
    }

    let mut touched_dirs = BTreeSet::new();
    for rev in plan.revisions() {
        for original in &rev.remove {
            progress.inc(1);
            let path = root.join(original);
            match fs::read(&path) {
                Ok(bytes) if RevisionHash::of(&bytes) == rev.hash => {}
                Ok(_) => {
                    report.kept.push(format!("{original}: changed since it was planned; not removed"));
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    report.kept.push(format!("{original}: cannot re-read it ({e}); not removed"));
                    continue;
                }
            }
            verify(root, &rev.target, &rev.hash)?;
            fs::remove_file(&path).map_err(|e| BootstrapError::Apply(format!("cannot remove {original}: {e}")))?;
            report.removed += 1;
            touched_dirs.extend(remove_empty_parents(root, original));
            checkpoint("remove", report.removed);
        }
    }
    for dir in touched_dirs {
        file::sync_dir(&root.join(&dir)).map_err(|e| BootstrapError::Apply(format!("cannot sync {dir}: {e}")))?;
    }

    for strategy in &plan.strategies {
        for prune in &strategy.prune {
            file::remove_revision(root, &strategy.name, &prune.hash)
                .map_err(|e| BootstrapError::Apply(format!("cannot remove {}: {e}", prune.path)))?;
            report.pruned += 1;
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

/// Reads `rel` back and checks its hash.
fn verify(root: &Path, rel: &str, hash: &RevisionHash) -> Result<(), BootstrapError> {
    let bytes = fs::read(root.join(rel)).map_err(|e| BootstrapError::Apply(format!("cannot read back {rel}: {e}")))?;
    let actual = RevisionHash::of(&bytes);
    if actual != *hash {
        return Err(BootstrapError::Apply(format!("{rel} reads back as {actual}, expected {hash}; nothing removed")));
    }
    Ok(())
}

/// After removing `original`, removes the directories above it that are now
/// empty (up to, not including, the root). Returns the directory (relative
/// to the root; `""` is the root) whose entries changed and must be synced.
fn remove_empty_parents(root: &Path, original: &str) -> Option<String> {
    let mut rel = Path::new(original).parent();
    while let Some(dir) = rel {
        // The first directory that stays is the one whose entries changed.
        if dir.as_os_str().is_empty() || fs::remove_dir(root.join(dir)).is_err() {
            return Some(dir.to_string_lossy().into_owned());
        }
        rel = dir.parent();
    }
    None
}

fn checkpoint(stage: &str, count: usize) {
    if std::env::var(PAUSE_ENV).is_ok_and(|at| at == format!("{stage}:{count}")) {
        eprintln!("bootstrap: paused at {stage}:{count}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::plan::{PlanOptions, build_plan};

    fn module(name: &str, tag: &str) -> String {
        format!(
            "module.exports = {{ metadata: {{ name: '{name}', tag: '{tag}', displayName: 'X', events: ['Trade'] }}, \
             create() {{ return {{}}; }} }};\n"
        )
    }

    fn plan(root: &Path) -> Plan {
        build_plan(root, &PlanOptions::default(), &ProgressBar::hidden()).unwrap()
    }

    #[test]
    fn applies_a_plan_then_finds_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (a, b) = (module("a", "v1"), module("b", "v2"));
        fs::write(root.join("a.js"), &a).unwrap();
        fs::create_dir_all(root.join("b/v2")).unwrap();
        fs::write(root.join("b/v2/b.js"), &b).unwrap();
        let report = apply(&plan(root), &ProgressBar::hidden()).unwrap();
        assert_eq!(report, ApplyReport { copied: 2, registry_written: true, removed: 2, pruned: 0, kept: vec![] });
        assert!(!root.join("a.js").exists());
        assert!(!root.join("b/v2").exists(), "the emptied tag directory goes");
        let hb = RevisionHash::of(b.as_bytes());
        assert_eq!(fs::read_to_string(root.join(file::revision_path("b", &hb))).unwrap(), b);
        assert!(plan(root).is_noop());
    }

    #[test]
    fn an_original_changed_after_planning_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.js"), module("a", "v1")).unwrap();
        let plan = plan(root);
        fs::write(root.join("a.js"), module("a", "v1-edited")).unwrap();
        let report = apply(&plan, &ProgressBar::hidden()).unwrap();
        assert_eq!((report.copied, report.removed), (1, 0));
        assert!(report.kept[0].starts_with("a.js: changed"), "{:?}", report.kept);
        assert!(root.join("a.js").exists());
    }

    #[test]
    fn a_plan_with_problems_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.js"), module("a", "v1")).unwrap();
        fs::write(root.join("bad.js"), "throw new Error('boom')").unwrap();
        let plan = plan(root);
        assert!(matches!(apply(&plan, &ProgressBar::hidden()), Err(BootstrapError::PlanHasProblems(1))));
        assert_eq!(fs::read_dir(root).unwrap().count(), 2, "nothing written");
    }
}
