//! `stratad bootstrap`: migrating a legacy strategies directory to the hashed
//! layout (SPEC §1.1, §6).
//!
//! The work is split in four steps, one module each:
//! - [`discover`] lists the strategy files under the root (flat `*.js`, the
//!   older `<name>/<tag>/<name>.js`, and files already at `<name>/<hex>/<name>.js`);
//! - [`plan`] reads and evaluates each file, hashes it, merges the result into
//!   the existing `registry.json` (never changing an existing tag) and decides
//!   what to copy, register and remove; it never touches the disk;
//! - [`usage`] reads a `GET /strategies/registry` export (file or loopback URL)
//!   and marks zero-usage revisions as pruning candidates;
//! - [`apply`] carries a plan out in a crash-safe order: copy and verify every
//!   file, write `registry.json` atomically, and only then remove originals
//!   and pruned revisions.
//!
//! Problems found while planning (unreadable files, JS that fails to evaluate,
//! the same `name:tag` on different bytes, …) are collected in
//! [`plan::Plan::problems`] instead of stopping the run, so the whole plan is
//! always shown; [`apply::apply`] refuses a plan that has any.

pub mod apply;
pub mod discover;
pub mod plan;
pub mod report;
pub mod usage;

use std::path::PathBuf;

use serde::Serialize;

pub use apply::{ApplyReport, apply};
pub use plan::{Plan, PlanOptions, build_plan, version_rank};
pub use usage::{UsageSource, load_export};

/// A failure that stops the whole run (as opposed to a [`Problem`] with one file).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The root directory cannot be listed.
    #[error("cannot read the root directory {}: {source}", path.display())]
    Root {
        /// The root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `registry.json` exists but cannot be read or parsed.
    #[error("cannot use the existing registry.json: {0}")]
    Registry(String),
    /// The usage export cannot be read, fetched or parsed.
    #[error("cannot read the usage export {source_name}: {message}")]
    Usage {
        /// The file or URL.
        source_name: String,
        /// Why.
        message: String,
    },
    /// A `--usage` URL that is not plain HTTP to a loopback address.
    #[error("refusing usage URL {0}: only http:// URLs on a loopback host (127.0.0.1, localhost, [::1]) are accepted")]
    NotLoopback(String),
    /// `--write` on a plan with problems.
    #[error("not writing anything: the plan has {0} problem(s); fix or move the files aside and run again")]
    PlanHasProblems(usize),
    /// Writing, verifying or removing a file failed while applying; what was
    /// done before is safe (see the [`apply`](mod@apply) module).
    #[error("{0}")]
    Apply(String),
}

/// What went wrong with one file or entry while planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    /// The file cannot be read.
    Unreadable,
    /// The JS failed to evaluate or its exports are invalid.
    Evaluation,
    /// Neither `metadata.tag`, `metadata.version` nor a tag directory names the revision.
    NoTag,
    /// The tag found is not a valid tag.
    BadTag,
    /// The same `name:tag` is claimed by files with different bytes.
    DuplicateTag,
    /// The tag already points to another revision in `registry.json` (kept as is).
    TagConflict,
    /// A file at a hashed path does not have that hash.
    HashMismatch,
    /// A file at a hashed path declares another strategy name.
    NameMismatch,
}

/// One problem found while planning; the file it concerns is left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The file concerned, relative to the root.
    pub path: String,
    /// The strategy, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}
