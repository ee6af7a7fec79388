//! Planning a migration: evaluate, hash, group and merge into `registry.json`.
//!
//! Rules (documented for operators in `docs/operations.md`):
//! - **Name** is `metadata.name` (the daemon refuses a revision whose module
//!   is named differently from its strategy).
//! - **Primary tag** is `metadata.tag`, else `metadata.version`, else the
//!   `<tag>` directory of the `<name>/<tag>/<name>.js` layout. When the tag
//!   directory differs from the primary tag it is kept as an extra tag, so
//!   `name:<dir tag>` still resolves after the migration.
//! - **Identical bytes** found in several places are one revision (one copy);
//!   every original is removed once the copy is registered.
//! - **The same `name:tag` on different bytes** is a problem for every file
//!   involved; none of them is migrated.
//! - **Existing `registry.json`**: entries and tags are never changed or
//!   removed (except by `--prune`). A new file whose tag already points to
//!   another revision is a problem. New revisions are appended.
//! - **`latest`** is set only for a strategy that has none yet, to the
//!   revision with the highest [`version_rank`]: semver tags (an optional
//!   leading `v` stripped, so `v1.10.0 > v1.9.0` and `1.0.0 > 1.0.0-rc.1`)
//!   rank above every non-semver tag, and non-semver tags rank among
//!   themselves by plain string order. An existing `latest` is kept, with a
//!   note when a higher version exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use indicatif::ProgressBar;
use serde::Serialize;
use strata_shared::RevisionHash;
use strata_shared::api::RegistryExport;
use strata_shared::names::{self, LATEST_TAG};

use super::discover::{self, Found, Layout};
use super::usage::{self, UsageReport};
use super::{BootstrapError, Problem, ProblemKind};
use crate::js::{self, JsLimits};
use crate::registry::file::{self, REGISTRY_FILE, RegistryDoc, RevisionDoc, StrategyDoc};

/// Inputs of [`build_plan`] beyond the root.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Limits applied while evaluating each module.
    pub js_limits: JsLimits,
    /// A `GET /strategies/registry` export, with where it came from.
    pub usage: Option<(String, RegistryExport)>,
    /// Plan the removal of retired, untagged revisions (needs `usage`).
    pub prune: bool,
}

/// Whether a planned revision is new to `registry.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RevisionStatus {
    /// Not in `registry.json` yet: it will be added.
    New,
    /// Already registered; only files are left to copy or remove.
    Registered,
}

/// What happens to one revision.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionPlan {
    /// Its hash.
    pub hash: RevisionHash,
    /// Its primary tag.
    pub tag: String,
    /// New or already registered.
    pub status: RevisionStatus,
    /// Where it ends up, relative to the root: `<name>/<hex>/<name>.js`.
    pub target: String,
    /// The original copied to `target`, or `None` when `target` already
    /// holds these bytes.
    pub copy_from: Option<String>,
    /// Originals removed once the copy is verified and registered.
    pub remove: Vec<String>,
    /// The file's bytes, as hashed while planning.
    #[serde(skip)]
    pub bytes: Arc<Vec<u8>>,
}

/// A tag the plan adds to `registry.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagPlan {
    /// The tag.
    pub tag: String,
    /// The revision it points to.
    pub hash: RevisionHash,
}

/// A revision file: one `--prune` removes, or an orphan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFile {
    /// Its hash.
    pub hash: RevisionHash,
    /// Its file, relative to the root.
    pub path: String,
}

/// Everything planned for one strategy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyPlan {
    /// Strategy name.
    pub name: String,
    /// Revisions with something to do, in the order they are registered
    /// (ascending version).
    pub revisions: Vec<RevisionPlan>,
    /// Tags added (never moved: existing tags are kept).
    pub tags: Vec<TagPlan>,
    /// Revisions pruned (registry entry and file).
    pub prune: Vec<RevisionFile>,
    /// Files at a hashed path that `registry.json` does not list and that no
    /// legacy original backs (an interrupted prune, or an upload the daemon
    /// never acknowledged): left alone, unless `--prune` is given and the
    /// usage export calls them retired.
    pub orphans: Vec<RevisionFile>,
    /// Remarks that are not problems (e.g. an existing `latest` kept).
    pub notes: Vec<String>,
}

/// A complete migration plan. Building it changes nothing on disk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The strategies directory.
    #[serde(skip)]
    pub root: PathBuf,
    /// Strategy files found.
    pub files_found: usize,
    /// Strategies with something to do, by name.
    pub strategies: Vec<StrategyPlan>,
    /// Problems; any of them makes `--write` refuse the plan.
    pub problems: Vec<Problem>,
    /// The usage report, when an export was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageReport>,
    /// The merged `registry.json`, when it differs from the one on disk.
    #[serde(skip)]
    pub registry: Option<RegistryDoc>,
}

impl Plan {
    /// Whether applying the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.registry.is_none() && self.strategies.iter().all(|s| s.revisions.is_empty() && s.prune.is_empty())
    }

    /// Files the plan copies.
    pub fn copies(&self) -> usize {
        self.revisions().filter(|r| r.copy_from.is_some()).count()
    }

    /// Originals the plan removes.
    pub fn removals(&self) -> usize {
        self.revisions().map(|r| r.remove.len()).sum()
    }

    /// Revisions the plan adds to `registry.json`.
    pub fn new_revisions(&self) -> usize {
        self.revisions().filter(|r| r.status == RevisionStatus::New).count()
    }

    /// Revisions the plan prunes.
    pub fn prunes(&self) -> usize {
        self.strategies.iter().map(|s| s.prune.len()).sum()
    }

    /// Every planned revision.
    pub fn revisions(&self) -> impl Iterator<Item = &RevisionPlan> {
        self.strategies.iter().flat_map(|s| &s.revisions)
    }
}

/// How a tag ranks when choosing `latest`: any semver version (optional
/// leading `v`/`V`) ranks above any other tag; versions compare by semver
/// precedence, other tags by string order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum VersionRank {
    /// Not a semver version.
    Other(String),
    /// A semver version.
    Semver(semver::Version),
}

/// Ranks a tag for the choice of `latest` (see [`VersionRank`]).
pub fn version_rank(tag: &str) -> VersionRank {
    let bare = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    match semver::Version::parse(bare) {
        Ok(version) => VersionRank::Semver(version),
        Err(_) => VersionRank::Other(tag.to_owned()),
    }
}

/// A file that was read and evaluated.
struct Evaluated {
    found: Found,
    name: String,
    hash: RevisionHash,
    tag: String,
    alias: Option<String>,
    bytes: Arc<Vec<u8>>,
}

/// One revision as found on disk, before merging.
struct Candidate {
    tag: String,
    aliases: BTreeSet<String>,
    sources: Vec<String>,
    bytes: Arc<Vec<u8>>,
}

/// Builds the migration plan for `root`. Reads files, evaluates them and
/// reads `registry.json`; writes nothing. `progress` ticks once per file
/// evaluated (pass [`ProgressBar::hidden`] for none).
pub fn build_plan(root: &Path, options: &PlanOptions, progress: &ProgressBar) -> Result<Plan, BootstrapError> {
    let (raw, existing) = read_registry(root)?;
    let discover::Discovery { found, unreadable } =
        discover::discover(root).map_err(|source| BootstrapError::Root { path: root.to_owned(), source })?;
    let mut problems: Vec<Problem> = unreadable
        .into_iter()
        .map(|(path, e)| Problem { kind: ProblemKind::Unreadable, path, strategy: None, message: e.to_string() })
        .collect();
    let files_found = found.len();

    // Read and evaluate everything not already registered at its hashed path.
    let mut evaluated = Vec::new();
    progress.set_length(found.len() as u64);
    for item in found {
        progress.inc(1);
        if let Layout::Hashed { name, hash } = &item.layout
            && existing.get(name).is_some_and(|s| s.hashes.contains_key(&hash.to_string()))
        {
            continue;
        }
        match evaluate(root, item, &options.js_limits) {
            Ok(e) => evaluated.push(e),
            Err(problem) => problems.push(problem),
        }
    }
    progress.finish_and_clear();

    // Group by strategy, then by hash.
    let mut by_strategy: BTreeMap<String, IndexMap<RevisionHash, Candidate>> = BTreeMap::new();
    for e in evaluated {
        let revisions = by_strategy.entry(e.name).or_default();
        let candidate = revisions.entry(e.hash).or_insert_with(|| Candidate {
            tag: e.tag.clone(),
            aliases: BTreeSet::new(),
            sources: Vec::new(),
            bytes: e.bytes.clone(),
        });
        if e.tag != candidate.tag {
            candidate.aliases.insert(e.tag);
        }
        candidate.aliases.extend(e.alias.filter(|a| *a != candidate.tag));
        candidate.sources.push(e.found.path);
    }

    let mut merged = existing.clone();
    let mut strategies = Vec::new();
    for (name, candidates) in by_strategy {
        let mut doc = merged.get(&name).cloned().unwrap_or_default();
        let strategy = plan_strategy(root, &name, &mut doc, candidates, &mut problems);
        // A strategy whose every file had a problem gets no empty entry.
        if !doc.hashes.is_empty() || merged.contains_key(&name) {
            merged.insert(name, doc);
        }
        strategies.push(strategy);
    }

    let usage = match &options.usage {
        Some((source, export)) => {
            let report = usage::report(source, export, &merged);
            if options.prune {
                for candidate in report.candidates.iter().filter(|c| c.prunable) {
                    let Some(doc) = merged.get_mut(&candidate.strategy) else { continue };
                    let key = candidate.hash.to_string();
                    doc.hashes.shift_remove(&key);
                    let prune = RevisionFile {
                        hash: candidate.hash,
                        path: file::revision_path(&candidate.strategy, &candidate.hash),
                    };
                    match strategies.iter_mut().find(|s| s.name == candidate.strategy) {
                        Some(s) => s.prune.push(prune),
                        None => strategies.push(StrategyPlan {
                            name: candidate.strategy.clone(),
                            revisions: Vec::new(),
                            tags: Vec::new(),
                            prune: vec![prune],
                            orphans: Vec::new(),
                            notes: Vec::new(),
                        }),
                    }
                }
                let retired: std::collections::HashSet<(&str, RevisionHash)> = export
                    .usage
                    .iter()
                    .filter(|u| u.retired && u.count == 0)
                    .map(|u| (u.strategy.as_str(), u.hash))
                    .collect();
                for strategy in &mut strategies {
                    let (prune, keep) =
                        strategy.orphans.drain(..).partition(|o| retired.contains(&(strategy.name.as_str(), o.hash)));
                    strategy.orphans = keep;
                    strategy.prune.extend::<Vec<_>>(prune);
                }
                strategies.sort_by(|a, b| a.name.cmp(&b.name));
            }
            Some(report)
        }
        None => None,
    };

    strategies.retain(|s| {
        !s.revisions.is_empty()
            || !s.tags.is_empty()
            || !s.prune.is_empty()
            || !s.orphans.is_empty()
            || !s.notes.is_empty()
    });
    // Only entries that changed are re-serialised; the others stay as they were.
    let mut merged_doc = raw.clone();
    for (name, doc) in merged {
        if existing.get(&name) != Some(&doc) {
            merged_doc.insert(name, doc.to_value());
        }
    }
    let registry = (merged_doc != raw).then_some(merged_doc);
    Ok(Plan { root: root.to_owned(), files_found, strategies, problems, usage, registry })
}

/// The raw `registry.json` and its parsed entries.
type Registry = (RegistryDoc, IndexMap<String, StrategyDoc>);

/// Reads `registry.json`; a missing file is an empty registry, a malformed
/// one (or entry) stops the run: merging into it could lose data.
/// Returns the raw document and its parsed entries.
fn read_registry(root: &Path) -> Result<Registry, BootstrapError> {
    let bytes = match std::fs::read(root.join(REGISTRY_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(BootstrapError::Registry(e.to_string())),
    };
    // An empty file beside revision folders is damage here too: merging into
    // it would write a registry without them.
    let raw = file::check_doc(root, Some(&bytes)).map_err(BootstrapError::Registry)?;
    let parsed = raw
        .iter()
        .map(|(name, value)| {
            StrategyDoc::from_value(value)
                .map(|entry| (name.clone(), entry))
                .map_err(|e| BootstrapError::Registry(format!("entry \"{name}\" is malformed: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((raw, parsed))
}

/// Reads, hashes and evaluates one file.
fn evaluate(root: &Path, found: Found, limits: &JsLimits) -> Result<Evaluated, Problem> {
    let problem = |kind, strategy: Option<&str>, message: String| Problem {
        kind,
        path: found.path.clone(),
        strategy: strategy.map(str::to_owned),
        message,
    };
    let bytes = std::fs::read(root.join(&found.path))
        .map_err(|e| problem(ProblemKind::Unreadable, None, format!("cannot read: {e}")))?;
    let hash = RevisionHash::of(&bytes);
    if let Layout::Hashed { hash: claimed, .. } = &found.layout
        && *claimed != hash
    {
        return Err(problem(
            ProblemKind::HashMismatch,
            None,
            format!("file has hash {hash}, not the {claimed} its directory claims; left alone"),
        ));
    }
    let metadata = js::inspect_module(&bytes, limits).map_err(|diagnostics| {
        let message = diagnostics.iter().map(describe).collect::<Vec<_>>().join("; ");
        problem(ProblemKind::Evaluation, None, format!("module failed to evaluate: {message}"))
    })?;
    let name = metadata.name;
    let dir_tag = match &found.layout {
        Layout::Tagged { tag, .. } => Some(tag.clone()),
        Layout::Hashed { name: dir, .. } if *dir != name => {
            return Err(problem(
                ProblemKind::NameMismatch,
                Some(&name),
                format!("module is named \"{name}\" but sits at a hashed path of \"{dir}\"; left alone"),
            ));
        }
        _ => None,
    };
    let Some(tag) = metadata.tag.or(metadata.version).or_else(|| dir_tag.clone()) else {
        return Err(problem(
            ProblemKind::NoTag,
            Some(&name),
            "no metadata.tag or metadata.version: add one so the revision can be tagged".into(),
        ));
    };
    if let Err(e) = names::validate_tag(&tag) {
        return Err(problem(ProblemKind::BadTag, Some(&name), format!("cannot use \"{tag}\" as a tag: {e}")));
    }
    let alias = dir_tag.filter(|t| *t != tag && names::is_valid_tag(t));
    Ok(Evaluated { found, name, hash, tag, alias, bytes: Arc::new(bytes) })
}

fn describe(d: &strata_shared::metadata::Diagnostic) -> String {
    match (d.line, &d.hint) {
        (Some(line), _) => format!("{} (line {line})", d.message),
        (None, Some(hint)) => format!("{} ({hint})", d.message),
        _ => d.message.clone(),
    }
}

/// Plans one strategy and updates its entry `doc` in place.
fn plan_strategy(
    root: &Path,
    name: &str,
    doc: &mut StrategyDoc,
    candidates: IndexMap<RevisionHash, Candidate>,
    problems: &mut Vec<Problem>,
) -> StrategyPlan {
    let mut plan = StrategyPlan {
        name: name.to_owned(),
        revisions: Vec::new(),
        tags: Vec::new(),
        prune: Vec::new(),
        orphans: Vec::new(),
        notes: Vec::new(),
    };
    let problem = |kind, path: &str, message: String| Problem {
        kind,
        path: path.to_owned(),
        strategy: Some(name.to_owned()),
        message,
    };

    // Unregistered files found only at their hashed path are orphans.
    let (orphans, candidates): (IndexMap<_, _>, IndexMap<_, _>) = candidates.into_iter().partition(|(hash, c)| {
        let target = file::revision_path(name, hash);
        !doc.hashes.contains_key(&hash.to_string()) && c.sources.iter().all(|s| *s == target)
    });
    plan.orphans =
        orphans.keys().map(|hash| RevisionFile { hash: *hash, path: file::revision_path(name, hash) }).collect();

    // Which new revisions claim each tag.
    let mut claims: BTreeMap<&str, Vec<&RevisionHash>> = BTreeMap::new();
    for (hash, c) in &candidates {
        if !doc.hashes.contains_key(&hash.to_string()) {
            for tag in std::iter::once(&c.tag).chain(&c.aliases) {
                claims.entry(tag).or_default().push(hash);
            }
        }
    }
    let mut rejected: BTreeSet<RevisionHash> = BTreeSet::new();
    for (tag, hashes) in &claims {
        if hashes.len() > 1 {
            let all: Vec<&str> =
                hashes.iter().flat_map(|h| candidates[*h].sources.iter().map(String::as_str)).collect();
            for hash in hashes {
                for path in &candidates[*hash].sources {
                    problems.push(problem(
                        ProblemKind::DuplicateTag,
                        path,
                        format!("{name}:{tag} is claimed by files with different bytes: {}", all.join(", ")),
                    ));
                }
                rejected.insert(**hash);
            }
        } else if let Some(existing) = doc.tags.get(*tag)
            && *existing != hashes[0].to_string()
        {
            for path in &candidates[hashes[0]].sources {
                problems.push(problem(
                    ProblemKind::TagConflict,
                    path,
                    format!(
                        "{name}:{tag} already points to {existing} in registry.json (kept); this file is {}",
                        hashes[0]
                    ),
                ));
            }
            rejected.insert(*hashes[0]);
        }
    }

    // New revisions are registered in ascending version order, so the order
    // of `hashes` stays "oldest first" as the daemon expects.
    let mut accepted: Vec<(RevisionHash, Candidate)> =
        candidates.into_iter().filter(|(hash, _)| !rejected.contains(hash)).collect();
    accepted.sort_by_cached_key(|(_, c)| version_rank(&c.tag));

    for (hash, c) in accepted {
        let key = hash.to_string();
        let target = file::revision_path(name, &hash);
        let status = if doc.hashes.contains_key(&key) {
            RevisionStatus::Registered
        } else {
            doc.hashes.insert(key.clone(), RevisionDoc { tag: c.tag.clone(), path: target.clone() });
            for tag in std::iter::once(&c.tag).chain(&c.aliases) {
                if !doc.tags.contains_key(tag) {
                    doc.tags.insert(tag.clone(), key.clone());
                    plan.tags.push(TagPlan { tag: tag.clone(), hash });
                }
            }
            RevisionStatus::New
        };
        let target_ok = std::fs::read(root.join(&target)).is_ok_and(|bytes| RevisionHash::of(&bytes) == hash);
        let remove: Vec<String> = c.sources.iter().filter(|s| **s != target).cloned().collect();
        let copy_from = if target_ok { None } else { remove.first().cloned() };
        if status == RevisionStatus::Registered && copy_from.is_none() && remove.is_empty() {
            continue;
        }
        plan.revisions.push(RevisionPlan { hash, tag: c.tag, status, target, copy_from, remove, bytes: c.bytes });
    }

    // `latest`: set when missing, never moved.
    let best = doc
        .hashes
        .iter()
        .map(|(key, rev)| {
            let rank = std::iter::once(&rev.tag)
                .chain(doc.tags.iter().filter(|(_, h)| *h == key).map(|(t, _)| t))
                .filter(|t| *t != LATEST_TAG)
                .map(|t| version_rank(t))
                .max();
            (rank, key)
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, key)| key.clone());
    match (doc.tags.get(LATEST_TAG), best) {
        (None, Some(best)) => {
            doc.tags.insert(LATEST_TAG.to_owned(), best.clone());
            let hash = best.parse().expect("hash keys of planned revisions parse");
            plan.tags.push(TagPlan { tag: LATEST_TAG.to_owned(), hash });
        }
        (Some(current), Some(best)) if *current != best && !plan.revisions.is_empty() => {
            let tag = doc.hashes.get(&best).map(|r| r.tag.as_str()).unwrap_or("?");
            plan.notes.push(format!(
                "latest stays on {current} (existing tags are kept); the highest version is {tag} ({best})"
            ));
        }
        _ => {}
    }
    // Tags list latest first, then the rest as added.
    plan.tags.sort_by_key(|t| t.tag != LATEST_TAG);
    plan
}

impl fmt::Display for RevisionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevisionStatus::New => "new",
            RevisionStatus::Registered => "registered",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, tag: Option<&str>, extra: &str) -> String {
        let tag = tag.map(|t| format!("tag: '{t}', ")).unwrap_or_default();
        format!(
            "// {extra}\nmodule.exports = {{ metadata: {{ name: '{name}', {tag}displayName: 'X', events: ['Trade'] }}, \
             create() {{ return {{}}; }} }};\n"
        )
    }

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn plan(root: &Path) -> Plan {
        build_plan(root, &PlanOptions::default(), &ProgressBar::hidden()).unwrap()
    }

    fn tag_of(plan: &Plan, strategy: &str, tag: &str) -> String {
        plan.registry.as_ref().unwrap()[strategy]["tags"][tag].as_str().unwrap().to_owned()
    }

    #[test]
    fn semver_ranks_above_strings_and_compares_numerically() {
        assert!(version_rank("v1.10.0") > version_rank("v1.9.0"));
        assert!(version_rank("1.10.0") > version_rank("v1.9.9"));
        assert!(version_rank("v1.0.0") > version_rank("v1.0.0-rc.1"));
        assert!(version_rank("v0.0.1") > version_rank("zzz"));
        assert!(version_rank("prod") > version_rank("beta"));
        assert_eq!(version_rank("V2.0.0"), version_rank("2.0.0"));
        assert!(matches!(version_rank("v1.2"), VersionRank::Other(_)));
    }

    #[test]
    fn plans_both_legacy_layouts_with_latest_by_semver() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let v9 = module("momentum", Some("v1.9.0"), "a");
        let v10 = module("momentum", Some("v1.10.0"), "b");
        write(root, "momentum.js", &v9);
        write(root, "momentum/v1.10.0/momentum.js", &v10);
        write(root, "grid/prod/grid.js", &module("grid", None, "c"));
        let plan = plan(root);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(plan.files_found, 3);
        assert_eq!(plan.new_revisions(), 3);
        assert_eq!(plan.copies(), 3);
        assert_eq!(plan.removals(), 3);
        let h10 = RevisionHash::of(v10.as_bytes());
        assert_eq!(tag_of(&plan, "momentum", "latest"), h10.to_string());
        let momentum = &plan.strategies.iter().find(|s| s.name == "momentum").unwrap();
        // Registered oldest version first.
        assert_eq!(momentum.revisions.iter().map(|r| r.tag.as_str()).collect::<Vec<_>>(), ["v1.9.0", "v1.10.0"]);
        assert_eq!(momentum.revisions[1].target, format!("momentum/{}/momentum.js", h10.to_hex()));
        // The tag directory names a module without metadata.tag.
        let grid = plan.registry.as_ref().unwrap()["grid"].clone();
        assert_eq!(grid["hashes"].as_object().unwrap().values().next().unwrap()["tag"], "prod");
        assert_eq!(grid["tags"]["latest"], grid["tags"]["prod"]);
    }

    #[test]
    fn identical_bytes_are_one_revision_and_a_differing_tag_dir_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let src = module("noop", Some("v1.0.0"), "same");
        write(root, "noop.js", &src);
        write(root, "noop/stable/noop.js", &src);
        let plan = plan(root);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(plan.new_revisions(), 1);
        assert_eq!(plan.copies(), 1);
        assert_eq!(plan.removals(), 2);
        let hash = RevisionHash::of(src.as_bytes()).to_string();
        assert_eq!(tag_of(&plan, "noop", "stable"), hash);
        assert_eq!(tag_of(&plan, "noop", "v1.0.0"), hash);
    }

    #[test]
    fn duplicate_tags_bad_js_and_missing_tags_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.js", &module("dup", Some("v1"), "one"));
        write(root, "b.js", &module("dup", Some("v1"), "two"));
        write(root, "broken.js", "module.exports = {");
        write(root, "untagged.js", &module("untagged", None, ""));
        write(root, "fine.js", &module("fine", Some("v1"), ""));
        let plan = plan(root);
        let kinds: Vec<_> = plan.problems.iter().map(|p| (p.kind, p.path.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (ProblemKind::Evaluation, "broken.js"),
                (ProblemKind::NoTag, "untagged.js"),
                (ProblemKind::DuplicateTag, "a.js"),
                (ProblemKind::DuplicateTag, "b.js"),
            ]
        );
        assert!(plan.problems[2].message.contains("a.js, b.js"), "{}", plan.problems[2].message);
        // The rest is still planned.
        assert_eq!(plan.strategies.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["fine"]);
    }

    #[test]
    fn merging_keeps_existing_tags_and_reports_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = module("m", Some("v1.0.0"), "old");
        let old_hash = RevisionHash::of(old.as_bytes());
        file::write_revision(root, "m", &old_hash, old.as_bytes()).unwrap();
        let registry = serde_json::json!({"m": {
            "tags": {"latest": old_hash.to_string(), "v1.0.0": old_hash.to_string(), "prod": old_hash.to_string()},
            "hashes": {old_hash.to_string(): {"tag": "v1.0.0", "path": file::revision_path("m", &old_hash)}}}});
        std::fs::write(root.join(REGISTRY_FILE), registry.to_string()).unwrap();
        write(root, "m.js", &module("m", Some("v2.0.0"), "new"));
        write(root, "clash.js", &module("m", Some("prod"), "clash"));

        let plan = plan(root);
        assert_eq!(plan.problems.len(), 1);
        assert_eq!(plan.problems[0].kind, ProblemKind::TagConflict);
        assert_eq!(plan.problems[0].path, "clash.js");
        assert_eq!(tag_of(&plan, "m", "prod"), old_hash.to_string());
        assert_eq!(tag_of(&plan, "m", "latest"), old_hash.to_string());
        let m = &plan.strategies[0];
        assert_eq!(m.revisions.len(), 1);
        assert!(m.notes[0].contains("latest stays"), "{:?}", m.notes);
        assert_eq!(plan.registry.as_ref().unwrap()["m"]["hashes"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn a_migrated_tree_plans_nothing_and_a_half_migrated_one_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let src = module("n", Some("v1"), "");
        let hash = RevisionHash::of(src.as_bytes());
        write(root, "n.js", &src);
        // Interrupted after the copy, before the registry write.
        file::write_revision(root, "n", &hash, src.as_bytes()).unwrap();
        let plan1 = plan(root);
        let rev = plan1.revisions().next().unwrap();
        assert_eq!(
            (rev.status, rev.copy_from.as_deref(), rev.remove.as_slice()),
            (RevisionStatus::New, None, &["n.js".to_owned()][..])
        );
        // After the registry write, before the removal.
        file::write_atomic(&root.join(REGISTRY_FILE), &file::render_doc(plan1.registry.as_ref().unwrap())).unwrap();
        let plan2 = plan(root);
        assert!(plan2.registry.is_none());
        assert_eq!(plan2.revisions().next().unwrap().status, RevisionStatus::Registered);
        std::fs::remove_file(root.join("n.js")).unwrap();
        assert!(plan(root).is_noop());
    }

    #[test]
    fn an_unregistered_hashed_file_without_original_is_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let src = module("o", Some("v1"), "");
        let hash = RevisionHash::of(src.as_bytes());
        file::write_revision(root, "o", &hash, src.as_bytes()).unwrap();
        let plan = plan(root);
        assert!(plan.problems.is_empty());
        assert!(plan.is_noop());
        assert_eq!(plan.strategies[0].orphans, [RevisionFile { hash, path: file::revision_path("o", &hash) }]);
    }

    #[test]
    fn prune_removes_an_orphan_the_export_calls_retired_finishing_an_interrupted_prune() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (kept, orphan) = (module("o", Some("v1"), "kept"), module("o", Some("v2"), "orphan"));
        let (hk, ho) = (RevisionHash::of(kept.as_bytes()), RevisionHash::of(orphan.as_bytes()));
        file::write_revision(root, "o", &ho, orphan.as_bytes()).unwrap();
        write(root, "kept.js", &kept);
        let entry = |hash, retired| strata_shared::api::UsageEntry {
            strategy: "o".into(),
            hash,
            count: 0,
            instances: Vec::new(),
            first_seen: None,
            last_seen: None,
            retired,
            drift: false,
        };
        let export = RegistryExport {
            registry: serde_json::json!({}),
            usage: vec![entry(ho, true), entry(hk, false)],
            errors: Vec::new(),
        };
        let options = PlanOptions { usage: Some(("f".into(), export)), prune: true, ..PlanOptions::default() };
        let plan = build_plan(root, &options, &ProgressBar::hidden()).unwrap();
        let o = &plan.strategies[0];
        assert!(o.orphans.is_empty());
        assert_eq!(o.prune, [RevisionFile { hash: ho, path: file::revision_path("o", &ho) }]);
        assert_eq!(o.revisions.len(), 1, "the legacy file is still migrated");
        // The new revision is unused per the export but tagged by this plan: a candidate, not prunable.
        let candidates: Vec<_> = plan.usage.unwrap().candidates.iter().map(|c| (c.hash, c.prunable)).collect();
        assert_eq!(candidates, [(hk, false)]);
    }

    #[test]
    fn a_corrupt_hashed_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let hash = RevisionHash::of(b"something else");
        write(root, &file::revision_path("x", &hash), &module("x", Some("v1"), ""));
        let plan = plan(root);
        assert_eq!(plan.problems[0].kind, ProblemKind::HashMismatch);
        assert!(plan.is_noop());
    }
}
