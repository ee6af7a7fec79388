//! Rendering a plan (and what applying it did) as text or JSON.

use std::fmt::Write as _;

use serde::Serialize;
use strata_shared::RevisionHash;

use super::apply::ApplyReport;
use super::plan::{Plan, RevisionStatus, StrategyPlan};
use super::usage::UsageReport;
use super::{Problem, ProblemKind};

/// Counts of a plan, as in the last line of the text output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Revisions added to `registry.json`.
    pub new_revisions: usize,
    /// Files copied to their hashed path.
    pub copies: usize,
    /// Originals removed.
    pub removals: usize,
    /// Revisions pruned.
    pub prunes: usize,
    /// Problems found.
    pub problems: usize,
    /// Whether applying the plan changes nothing.
    pub nothing_to_do: bool,
}

impl Summary {
    /// Counts `plan`.
    pub fn of(plan: &Plan) -> Summary {
        Summary {
            new_revisions: plan.new_revisions(),
            copies: plan.copies(),
            removals: plan.removals(),
            prunes: plan.prunes(),
            problems: plan.problems.len(),
            nothing_to_do: plan.is_noop(),
        }
    }
}

/// The `--json` output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonOutput<'a> {
    /// The root as given on the command line.
    pub root: String,
    /// `dryRun` or `write`.
    pub mode: &'static str,
    /// The plan.
    #[serde(flatten)]
    pub plan: &'a Plan,
    /// Its counts.
    pub summary: Summary,
    /// What `--write` did (`null` on a dry run or when it refused).
    pub applied: Option<&'a ApplyReport>,
}

/// The short form of a hash used in text output (selectors accept it).
fn short(hash: &RevisionHash) -> String {
    format!("sha256:{}", &hash.to_hex()[..12])
}

fn kind_name(kind: ProblemKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Renders the plan for a terminal. `write` tells whether `--write` was given.
pub fn render_text(root: &str, plan: &Plan, write: bool) -> String {
    let mut out = String::new();
    let mode = if write { "" } else { " (dry run: nothing is changed; --write applies it)" };
    let _ = writeln!(out, "Bootstrap plan for {root}{mode}");
    let _ = writeln!(out, "{} strategy file(s) found.", plan.files_found);
    for strategy in &plan.strategies {
        render_strategy(&mut out, strategy);
    }
    if !plan.problems.is_empty() {
        let _ = writeln!(out, "\nProblems ({}): these files are left alone", plan.problems.len());
        for Problem { kind, path, message, .. } in &plan.problems {
            let _ = writeln!(out, "  {path}: {}: {message}", kind_name(*kind));
        }
    }
    if let Some(usage) = &plan.usage {
        render_usage(&mut out, usage);
    }
    let s = Summary::of(plan);
    if s.nothing_to_do {
        let _ = writeln!(out, "\nNothing to do.");
    } else {
        let _ = writeln!(
            out,
            "\nSummary: {} new revision(s), {} file(s) to copy, {} original(s) to remove, {} revision(s) to prune, \
             {} problem(s).",
            s.new_revisions, s.copies, s.removals, s.prunes, s.problems
        );
    }
    out
}

/// Renders what `--write` did, after the plan.
pub fn render_applied(a: &ApplyReport) -> String {
    let mut out = String::new();
    {
        let registry = if a.registry_written { "registry.json written" } else { "registry.json unchanged" };
        let _ = writeln!(
            out,
            "Applied: {} file(s) copied and verified, {registry}, {} original(s) removed, {} revision(s) pruned.",
            a.copied, a.removed, a.pruned
        );
        for kept in &a.kept {
            let _ = writeln!(out, "  kept {kept}");
        }
    }
    out
}

fn render_strategy(out: &mut String, strategy: &StrategyPlan) {
    let _ = writeln!(out, "\n{}", strategy.name);
    for rev in &strategy.revisions {
        let tags: Vec<&str> = strategy.tags.iter().filter(|t| t.hash == rev.hash).map(|t| t.tag.as_str()).collect();
        let tags = if tags.is_empty() { String::new() } else { format!(" tags [{}]", tags.join(", ")) };
        let (sign, status) = match rev.status {
            RevisionStatus::New => ('+', "new"),
            RevisionStatus::Registered => ('=', "registered"),
        };
        let _ = writeln!(out, "  {sign} {} {} ({status}){tags}", rev.tag, short(&rev.hash));
        match &rev.copy_from {
            Some(from) => {
                let _ = writeln!(out, "      copy   {from} -> {}", rev.target);
            }
            None => {
                let _ = writeln!(out, "      keep   {} (already there, hash verified)", rev.target);
            }
        }
        for original in &rev.remove {
            let _ = writeln!(out, "      remove {original}");
        }
    }
    for prune in &strategy.prune {
        let _ = writeln!(out, "  - {} prune {}", short(&prune.hash), prune.path);
    }
    for orphan in &strategy.orphans {
        let _ = writeln!(
            out,
            "  ? {} {} is not in registry.json and no legacy file has its bytes: left alone",
            short(&orphan.hash),
            orphan.path
        );
    }
    for note in &strategy.notes {
        let _ = writeln!(out, "  note: {note}");
    }
}

fn render_usage(out: &mut String, usage: &UsageReport) {
    let _ = writeln!(
        out,
        "\nUsage from {}: {} revision(s) listed, {} not in the export.",
        usage.source, usage.revisions_in_export, usage.not_in_export
    );
    if usage.candidates.is_empty() {
        let _ = writeln!(out, "  No revision has zero usage.");
        return;
    }
    let _ = writeln!(out, "Pruning candidates (zero running instances):");
    for c in &usage.candidates {
        let last = c
            .last_seen
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "never".to_owned());
        let state = match (c.retired, c.tags.is_empty()) {
            (true, true) => "retired, untagged: --prune removes it".to_owned(),
            (_, false) => format!("tagged [{}]: kept", c.tags.join(", ")),
            (false, true) => "not retired per the export: kept".to_owned(),
        };
        let _ = writeln!(out, "  {}@{} {} last seen {last}; {state}", c.strategy, short(&c.hash), c.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::usage::UsageCandidate;

    #[test]
    fn last_seen_is_printed_in_rfc_3339_like_every_other_time() {
        let candidate = |last_seen| UsageCandidate {
            strategy: "grid".into(),
            hash: RevisionHash::of(b"grid"),
            tag: "v1".into(),
            tags: vec![],
            first_seen: None,
            last_seen,
            retired: true,
            prunable: true,
        };
        let usage = UsageReport {
            source: "export.json".into(),
            revisions_in_export: 2,
            not_in_export: 0,
            candidates: vec![candidate(Some(time::macros::datetime!(2026-12-06 13:33:41.5 UTC))), candidate(None)],
        };
        let mut out = String::new();
        render_usage(&mut out, &usage);
        assert!(out.contains("last seen 2026-12-06T13:33:41.5Z;"), "{out}");
        assert!(out.contains("last seen never;"), "{out}");
    }
}
