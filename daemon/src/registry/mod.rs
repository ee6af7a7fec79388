//! The content-addressed registry of strategy revisions.
//!
//! [`Registry`] owns three things and keeps them consistent:
//! - the raw `registry.json` document, changed only by one writer at a time
//!   (the `writer` mutex, held across the durable write and never across an
//!   `.await`: every mutating method is synchronous and runs on the blocking
//!   pool);
//! - the in-memory [`RegistryState`] built from it, behind a short-lived
//!   read/write lock;
//! - the resolver cache, evicted in the same write-locked section that
//!   changes the state, so a reader never sees a stale answer.
//!
//! Compiled metadata depends only on a revision's bytes, so it is cached by
//! hash (in memory and in SQLite): a reload compiles only hashes it has never
//! seen.

pub mod file;
mod load;
pub mod resolver;
pub mod state;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use strata_shared::metadata::{Diagnostic, ModuleMetadata};
use strata_shared::names::{self, LATEST_TAG};
use strata_shared::{RevisionHash, Selector};

use crate::js::{self, JsLimits};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, InstanceStore, Store, StoreError};
use file::{REGISTRY_FILE, RegistryDoc, RevisionDoc, StrategyDoc};
use resolver::ResolverCache;
pub use state::{Change, LoadError, RegistryState, ResolveError, Resolved, Revision, Strategy};

/// Why a registry operation failed; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Something named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The module failed validation (422).
    #[error("{message}")]
    Validation {
        /// Summary of the first problem.
        message: String,
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
    /// The revisions are referenced by instances (409, with who).
    #[error("{message}")]
    InUse {
        /// Summary.
        message: String,
        /// Per revision, the instances pinned to it.
        usage: Vec<strata_shared::api::RevisionUsage>,
    },
    /// The registry cannot be changed right now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A selector did not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Reading or writing the strategies directory failed (500).
    #[error("strategies directory I/O failed: {0}")]
    Io(String),
    /// A write found the disk (or the quota) full (507).
    #[error("{0}")]
    StorageFull(String),
    /// The database failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The write-health target of the registry's files.
const STRATEGIES_TARGET: &str = "strategies directory";

/// Options of the registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The strategies directory.
    pub root: PathBuf,
    /// Limits applied while evaluating modules for their metadata.
    pub js_limits: JsLimits,
    /// Entries in each resolver cache.
    pub resolver_cache_capacity: NonZeroUsize,
    /// Threads used to verify and compile revisions during a load.
    pub load_threads: usize,
}

/// Progress of a (re)load, reported by `/healthz` while it runs.
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Revisions to verify in this load.
    pub total: AtomicU64,
    /// Revisions verified so far.
    pub done: AtomicU64,
    /// Revisions compiled so far (the rest came from the metadata cache).
    pub compiled: AtomicU64,
}

/// What a finished load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Strategies loaded.
    pub strategies: usize,
    /// Revisions loaded.
    pub revisions: usize,
    /// Revisions that had to be compiled.
    pub compiled: u64,
    /// Entries that failed.
    pub errors: usize,
}

/// A module upload.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The module's JavaScript source.
    pub source: String,
    /// Tag to give it (overrides `metadata.tag`).
    pub tag: Option<String>,
    /// Further tags to point at it.
    pub aliases: Vec<String>,
    /// Whether `latest` moves to it (default true).
    pub promote_latest: bool,
    /// The strategy the upload must belong to (for `PUT .../{selector}`).
    pub expected_strategy: Option<String>,
}

/// Result of an upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The strategy.
    pub strategy: String,
    /// The revision's hash.
    pub hash: RevisionHash,
    /// The tag given by this upload.
    pub tag: String,
    /// False when identical bytes were already registered.
    pub created: bool,
}

/// Result of a tag move or deletion.
#[derive(Debug, Clone)]
pub struct TagChanged {
    /// The strategy.
    pub strategy: String,
    /// The tag.
    pub tag: String,
    /// Where it points now (`None` once deleted).
    pub hash: Option<RevisionHash>,
    /// Where it pointed before (`None` if it is new).
    pub previous_hash: Option<RevisionHash>,
}

/// Result of a deletion.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The strategy concerned.
    pub strategy: String,
    /// The revisions removed.
    pub hashes: Vec<RevisionHash>,
    /// Whether the whole strategy is gone.
    pub strategy_deleted: bool,
}

/// The writer's view of `registry.json`.
#[derive(Debug)]
struct DocState {
    /// The document as last read or written; `None` while the file is unreadable.
    doc: Option<RegistryDoc>,
    /// SHA-256 of the bytes last read or written, to notice hand edits;
    /// `None` while the file does not exist.
    fingerprint: Option<RevisionHash>,
    /// Why the file could not be read, if it could not.
    unreadable: Option<String>,
}

/// Told of every change to the in-memory registry, in order, under the
/// registry's write lock (so it must not call back into the registry).
pub trait RegistryObserver: Send + Sync {
    /// `changes` were just applied; `state` is the registry after them.
    fn changed(&self, state: &RegistryState, changes: &[Change]);
}

/// The observer slot (set once at boot).
#[derive(Default)]
struct ObserverSlot(std::sync::OnceLock<Arc<dyn RegistryObserver>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "ObserverSlot(set)" } else { "ObserverSlot(empty)" })
    }
}

/// The registry handle. Cheap to share: wrap in an `Arc`.
#[derive(Debug)]
pub struct Registry {
    options: RegistryOptions,
    state: RwLock<RegistryState>,
    cache: ResolverCache,
    writer: Mutex<DocState>,
    metadata: Mutex<HashMap<RevisionHash, Arc<ModuleMetadata>>>,
    store: Arc<Store>,
    metrics: Metrics,
    progress: LoadProgress,
    loaded: AtomicBool,
    observer: ObserverSlot,
}

impl Registry {
    /// A registry over `options.root`, empty until [`Registry::load`] runs.
    pub fn new(options: RegistryOptions, store: Arc<Store>, metrics: Metrics) -> Self {
        let cache = ResolverCache::new(options.resolver_cache_capacity, metrics.resolver_cache.clone());
        Self {
            options,
            state: RwLock::new(RegistryState::default()),
            cache,
            writer: Mutex::new(DocState { doc: None, fingerprint: None, unreadable: None }),
            metadata: Mutex::new(HashMap::new()),
            store,
            metrics,
            progress: LoadProgress::default(),
            loaded: AtomicBool::new(false),
            observer: ObserverSlot::default(),
        }
    }

    /// Reports every future change to `observer` (the usage index). Set
    /// before the first load; later calls are ignored.
    pub fn observe(&self, observer: Arc<dyn RegistryObserver>) {
        let _ = self.observer.0.set(observer);
    }

    /// The strategies directory.
    pub fn root(&self) -> &Path {
        &self.options.root
    }

    /// Whether the first load has finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Progress of the running (or last) load.
    pub fn progress(&self) -> &LoadProgress {
        &self.progress
    }

    /// Runs `f` on a consistent view of the registry. Keep `f` short: it
    /// holds the read lock.
    pub fn read<R>(&self, f: impl FnOnce(&RegistryState) -> R) -> R {
        f(&self.state.read())
    }

    /// `registry.json` as last read or written (`null` while it is unreadable).
    pub fn document(&self) -> serde_json::Value {
        match &self.writer.lock().doc {
            Some(doc) => serde_json::to_value(doc).expect("document serialises"),
            None => serde_json::Value::Null,
        }
    }

    /// Why `registry.json` itself could not be read, if it could not.
    pub fn document_error(&self) -> Option<String> {
        self.writer.lock().unreadable.clone()
    }

    /// Resolves selector text to a revision, through the cache.
    pub fn resolve(&self, text: &str) -> Result<Resolved, ResolveError> {
        if let Some(hit) = self.cache.lookup(text) {
            return Ok(hit);
        }
        let selector = Selector::parse(text).map_err(|e| ResolveError::Invalid(e.to_string()))?;
        self.resolve_selector(&selector)
    }

    /// Resolves a parsed selector, through the cache.
    pub fn resolve_selector(&self, selector: &Selector) -> Result<Resolved, ResolveError> {
        let state = self.state.read();
        self.cache.resolve_and_store(&state, selector)
    }

    /// Resolves selector text and returns the revision itself.
    pub fn revision(&self, text: &str) -> Result<Arc<Revision>, ResolveError> {
        let resolved = self.resolve(text)?;
        self.read(|state| state.revision(&resolved.hash).cloned()).ok_or_else(|| ResolveError::UnknownRevision {
            hash: resolved.hash.to_string(),
            within: Some(resolved.strategy.to_string()),
        })
    }

    /// Reads the exact bytes of a loaded revision.
    pub fn source(&self, revision: &Revision) -> Result<Vec<u8>, RegistryError> {
        let bytes = std::fs::read(self.options.root.join(&revision.path))
            .map_err(|e| RegistryError::Io(format!("cannot read {}: {}", revision.path, e.kind())))?;
        if RevisionHash::of(&bytes) != revision.hash {
            return Err(RegistryError::Io(format!("{} no longer matches its hash", revision.path)));
        }
        Ok(bytes)
    }

    /// (Re)reads `registry.json` and brings the in-memory registry in line
    /// with it, compiling only hashes never seen before.
    pub fn load(&self) -> Result<LoadReport, RegistryError> {
        if !self.is_loaded() {
            let cached = self.store.load_metadata()?;
            self.metadata.lock().extend(cached);
        }
        let mut writer = self.writer.lock();
        let report = self.reload_locked(&mut writer);
        // Loaded even when the document is unreadable: the daemon serves what
        // it has (nothing, at first) and reports the error, rather than
        // answering "loading" forever.
        self.loaded.store(true, Ordering::Release);
        report
    }

    /// Re-reads `registry.json` but rebuilds only the entries of
    /// `strategies` (a targeted refresh needs nothing else). Unchanged files
    /// cost one read and one hash. Other entries that changed on disk are
    /// picked up by the next full load, or before the next write (the
    /// document fingerprint stays stale until then, which forces it).
    pub fn reload_strategies(&self, strategies: &[String]) -> Result<LoadReport, RegistryError> {
        let mut writer = self.writer.lock();
        let bytes = self.read_doc()?;
        if writer.unreadable.is_none() && writer.fingerprint == bytes.as_deref().map(RevisionHash::of) {
            return Ok(LoadReport::default());
        }
        let Ok(doc) = file::check_doc(&self.options.root, bytes.as_deref()) else {
            // Damaged file: the full path reports it and refuses writes.
            return self.reload_locked(&mut writer);
        };
        let report = load::rebuild_some(self, &doc, strategies);
        if let Some(current) = writer.doc.as_mut() {
            for name in strategies {
                match doc.get(name) {
                    Some(value) => {
                        current.insert(name.clone(), value.clone());
                    }
                    None => {
                        current.shift_remove(name);
                    }
                }
            }
        }
        self.refresh_gauges(&writer);
        Ok(report)
    }

    /// Reads the document and rebuilds every strategy. Caller holds the writer lock.
    fn reload_locked(&self, writer: &mut DocState) -> Result<LoadReport, RegistryError> {
        let bytes = self.read_doc()?;
        let fingerprint = bytes.as_deref().map(RevisionHash::of);
        let doc = match file::check_doc(&self.options.root, bytes.as_deref()) {
            Ok(doc) => doc,
            Err(message) => {
                // Damage (unparsable, or empty/missing beside revision folders):
                // keep serving what is loaded and refuse writes until the file
                // is repaired, so it is never overwritten with a partial registry.
                tracing::error!("{message}");
                *writer = DocState { doc: None, fingerprint, unreadable: Some(message) };
                self.refresh_gauges(writer);
                return Err(RegistryError::Unavailable(writer.unreadable.clone().unwrap_or_default()));
            }
        };
        let report = load::rebuild_all(self, &doc);
        *writer = DocState { doc: Some(doc), fingerprint, unreadable: None };
        self.refresh_gauges(writer);
        Ok(report)
    }

    /// Reads `registry.json`; `None` when it does not exist.
    fn read_doc(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        file::read_doc(&self.options.root)
            .map_err(|e| RegistryError::Io(format!("cannot read {REGISTRY_FILE}: {}", e.kind())))
    }

    fn refresh_gauges(&self, writer: &DocState) {
        let (revisions, errors) = self.read(|s| (s.revision_count(), s.errors().count()));
        let unreadable = usize::from(writer.unreadable.is_some());
        self.metrics.revisions_loaded.set(revisions as i64);
        self.metrics.registry_load_errors.set((errors + unreadable) as i64);
    }

    /// Takes the writer lock and makes sure the document in memory is the
    /// one on disk (an operator may have edited it by hand).
    fn lock_writer(&self) -> Result<parking_lot::MutexGuard<'_, DocState>, RegistryError> {
        if !self.is_loaded() {
            return Err(RegistryError::Unavailable("the registry is still loading".into()));
        }
        let mut writer = self.writer.lock();
        let on_disk = self.read_doc()?.map(|b| RevisionHash::of(&b));
        if on_disk != writer.fingerprint {
            tracing::info!("{REGISTRY_FILE} changed on disk; reloading before writing");
            self.reload_locked(&mut writer)?;
        }
        if let Some(reason) = &writer.unreadable {
            return Err(RegistryError::Unavailable(reason.clone()));
        }
        Ok(writer)
    }

    /// Writes the new document durably, then swaps in the rebuilt strategy.
    fn commit(
        &self,
        writer: &mut DocState,
        mut doc: RegistryDoc,
        strategy: &str,
        entry: Option<StrategyDoc>,
    ) -> Result<(), RegistryError> {
        match &entry {
            Some(entry) => {
                doc.insert(strategy.to_owned(), entry.to_value());
            }
            None => {
                doc.shift_remove(strategy);
            }
        }
        self.write_doc(writer, doc)?;
        load::rebuild_one(self, strategy, entry.as_ref());
        self.refresh_gauges(writer);
        Ok(())
    }

    /// Writes `doc` durably as `registry.json` and makes it the writer's view.
    fn write_doc(&self, writer: &mut DocState, doc: RegistryDoc) -> Result<(), RegistryError> {
        let bytes = file::render_doc(&doc);
        self.wrote(file::write_atomic(&self.options.root.join(REGISTRY_FILE), &bytes), || REGISTRY_FILE.to_owned())?;
        writer.doc = Some(doc);
        writer.fingerprint = Some(RevisionHash::of(&bytes));
        Ok(())
    }

    /// Reports a write to the strategies directory to the write health and
    /// maps its failure: a full disk is [`RegistryError::StorageFull`].
    fn wrote(&self, result: std::io::Result<()>, what: impl FnOnce() -> String) -> Result<(), RegistryError> {
        let health = self.store.write_health();
        let Err(e) = result else {
            health.succeeded(STRATEGIES_TARGET);
            return Ok(());
        };
        let message = format!("cannot write {}: {}", what(), e.kind());
        health.failed(STRATEGIES_TARGET, &message);
        Err(match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => RegistryError::StorageFull(message),
            _ => RegistryError::Io(message),
        })
    }

    /// Records a registry operation in the audit journal. The operation has
    /// already happened (registry.json is the source of truth), so a journal
    /// failure is logged, not returned.
    fn journal(&self, action: &'static str, strategy: &str, hash: &RevisionHash, detail: Option<String>) {
        let entry = AuditEntry {
            action,
            instance_id: String::new(),
            strategy: strategy.to_owned(),
            hash: hash.to_string(),
            detail,
        };
        if let Err(error) = self.store.append_audit(&entry) {
            tracing::error!(%error, action, "could not append to the audit journal");
        }
    }

    /// Swaps one strategy into the state and evicts what changed.
    fn install(&self, strategy: &str, next: Option<Strategy>, errors: Vec<LoadError>) -> Vec<Change> {
        let mut state = self.state.write();
        let changes = state.replace_strategy(strategy, next, errors);
        self.cache.invalidate(&changes);
        if let Some(observer) = self.observer.0.get()
            && !changes.is_empty()
        {
            observer.changed(&state, &changes);
        }
        changes
    }

    /// The current entry of `strategy` in the document (default when absent).
    fn entry(doc: &RegistryDoc, strategy: &str) -> Result<Option<StrategyDoc>, RegistryError> {
        doc.get(strategy)
            .map(|value| {
                StrategyDoc::from_value(value).map_err(|e| {
                    RegistryError::Conflict(format!(
                        "the {REGISTRY_FILE} entry of \"{strategy}\" is malformed ({e}); fix it by hand first"
                    ))
                })
            })
            .transpose()
    }

    /// Validates and compiles a module, or finds its metadata by hash; says
    /// whether it had to compile.
    pub fn inspect(&self, source: &[u8]) -> Result<(RevisionHash, Arc<ModuleMetadata>, bool), RegistryError> {
        let hash = RevisionHash::of(source);
        if let Some(metadata) = self.metadata.lock().get(&hash).cloned() {
            return Ok((hash, metadata, false));
        }
        self.metrics.module_compilations.inc();
        match js::inspect_module(source, &self.options.js_limits) {
            Ok(metadata) => Ok((hash, Arc::new(metadata), true)),
            Err(diagnostics) => Err(RegistryError::Validation {
                message: diagnostics.first().map(|d| d.message.clone()).unwrap_or_else(|| "invalid module".into()),
                diagnostics,
            }),
        }
    }

    /// Adds a revision (or re-tags identical bytes) and moves its tags.
    pub fn upload(&self, upload: Upload) -> Result<Uploaded, RegistryError> {
        let tag_error = |e: names::NameError| RegistryError::BadRequest(e.to_string());
        for tag in upload.tag.iter().chain(&upload.aliases) {
            names::validate_tag(tag).map_err(tag_error)?;
            if tag == LATEST_TAG {
                return Err(RegistryError::BadRequest(
                    "latest moves by itself (see promoteLatest); give the revision a version tag".into(),
                ));
            }
        }
        let (hash, metadata, compiled) = self.inspect(upload.source.as_bytes())?;
        let strategy = metadata.name.clone();
        if let Some(expected) = &upload.expected_strategy
            && expected != &strategy
        {
            return Err(RegistryError::Validation {
                message: format!("module is named \"{strategy}\" but was uploaded to \"{expected}\""),
                diagnostics: vec![Diagnostic {
                    stage: strata_shared::metadata::DiagnosticStage::Validation,
                    message: format!("metadata.name must be \"{expected}\""),
                    line: None,
                    column: None,
                    hint: Some("metadata.name".into()),
                }],
            });
        }
        let tag = upload.tag.clone().or_else(|| metadata.tag.clone()).ok_or_else(|| {
            RegistryError::BadRequest(
                "a tag is required: give \"tag\" in the request or metadata.tag in the module".into(),
            )
        })?;
        if tag == LATEST_TAG {
            return Err(RegistryError::BadRequest("metadata.tag must be a version tag, not latest".into()));
        }

        let mut writer = self.lock_writer()?;
        let doc = writer.doc.clone().unwrap_or_default();
        let mut entry = Self::entry(&doc, &strategy)?.unwrap_or_default();
        let key = hash.to_string();
        let created = !entry.hashes.contains_key(&key);
        let empty_doc = RevisionHash::of(&file::render_doc(&RegistryDoc::new()));
        if created && doc.is_empty() && writer.fingerprint != Some(empty_doc) {
            // The first revision: write the (empty) document before its folder,
            // so a crash in between leaves a registry and a stray folder, never
            // revision folders beside a missing or blank registry.json (damage).
            self.write_doc(&mut writer, doc.clone())?;
        }
        if created {
            let written = file::write_revision(&self.options.root, &strategy, &hash, upload.source.as_bytes());
            self.wrote(written, || format!("revision of {strategy}"))?;
            entry
                .hashes
                .insert(key.clone(), RevisionDoc { tag: tag.clone(), path: file::revision_path(&strategy, &hash) });
        }
        for alias in std::iter::once(&tag).chain(&upload.aliases) {
            entry.tags.insert(alias.clone(), key.clone());
        }
        if upload.promote_latest || !entry.tags.contains_key(LATEST_TAG) {
            entry.tags.insert(LATEST_TAG.to_owned(), key);
        }
        let committed = (|| {
            if compiled {
                self.store.save_metadata([(&hash, metadata.as_ref())])?;
                // Before the commit, whose rebuild then finds it instead of compiling again.
                self.metadata.lock().insert(hash, metadata);
            }
            self.commit(&mut writer, doc, &strategy, Some(entry))
        })();
        if let Err(error) = committed {
            if created {
                // Not registered: the new revision folder must not stay behind.
                if let Err(e) = file::remove_revision(&self.options.root, &strategy, &hash) {
                    tracing::warn!(%strategy, %hash, error = %e, "could not remove an unregistered revision's files");
                }
            }
            return Err(error);
        }
        self.journal("upload", &strategy, &hash, Some(format!("tag {tag}; created {created}")));
        Ok(Uploaded { strategy, hash, tag, created })
    }

    /// Points `tag` of `strategy` at the revision `target` resolves to.
    pub fn move_tag(&self, strategy: &str, tag: &str, target: &str) -> Result<TagChanged, RegistryError> {
        names::validate_strategy_name(strategy).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        names::validate_tag(tag).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let mut writer = self.lock_writer()?;
        let doc = writer.doc.clone().unwrap_or_default();
        let mut entry = Self::entry(&doc, strategy)?.ok_or_else(|| ResolveError::UnknownStrategy(strategy.into()))?;
        let resolved = self.resolve(target)?;
        if &*resolved.strategy != strategy {
            return Err(RegistryError::BadRequest(format!(
                "{target} is a revision of \"{}\", not of \"{strategy}\"",
                resolved.strategy
            )));
        }
        let previous = entry.tags.insert(tag.to_owned(), resolved.hash.to_string());
        let previous_hash = previous.and_then(|h| h.parse().ok());
        if previous_hash != Some(resolved.hash) {
            self.commit(&mut writer, doc, strategy, Some(entry))?;
            let detail =
                format!("{tag}: {} -> {}", previous_hash.map(|h| h.to_string()).unwrap_or_default(), resolved.hash);
            self.journal("tag-move", strategy, &resolved.hash, Some(detail));
        }
        Ok(TagChanged { strategy: strategy.into(), tag: tag.into(), hash: Some(resolved.hash), previous_hash })
    }

    /// Deletes a tag. `latest` cannot be deleted; removing a revision's last
    /// tag needs `allow_orphan`.
    pub fn delete_tag(&self, strategy: &str, tag: &str, allow_orphan: bool) -> Result<TagChanged, RegistryError> {
        names::validate_strategy_name(strategy).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        names::validate_tag(tag).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        if tag == LATEST_TAG {
            return Err(RegistryError::BadRequest("the latest tag cannot be deleted, only moved".into()));
        }
        let mut writer = self.lock_writer()?;
        let doc = writer.doc.clone().unwrap_or_default();
        let mut entry = Self::entry(&doc, strategy)?.ok_or_else(|| ResolveError::UnknownStrategy(strategy.into()))?;
        let Some(previous) = entry.tags.shift_remove(tag) else {
            return Err(ResolveError::UnknownTag { strategy: strategy.into(), tag: tag.into() }.into());
        };
        if !allow_orphan && !entry.tags.values().any(|h| *h == previous) {
            return Err(RegistryError::Conflict(format!(
                "\"{tag}\" is the last tag of {previous}; pass allowOrphan=true to leave that revision untagged"
            )));
        }
        self.commit(&mut writer, doc, strategy, Some(entry))?;
        if let Ok(hash) = previous.parse() {
            self.journal("tag-delete", strategy, &hash, Some(tag.to_owned()));
        }
        Ok(TagChanged { strategy: strategy.into(), tag: tag.into(), hash: None, previous_hash: previous.parse().ok() })
    }

    /// Deletes a whole strategy (`name`) or one revision (any other selector),
    /// after `guard` has approved the hashes about to go.
    pub fn delete(
        &self,
        text: &str,
        guard: impl FnOnce(&str, &[RevisionHash]) -> Result<(), RegistryError>,
    ) -> Result<Deleted, RegistryError> {
        let selector = Selector::parse(text).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let mut writer = self.lock_writer()?;
        let whole_strategy = match &selector {
            Selector::Name { strategy } => self.read(|s| s.strategy(strategy).is_some()).then(|| strategy.clone()),
            _ => None,
        };
        let doc = writer.doc.clone().unwrap_or_default();
        let (strategy, removed, next_entry) = match whole_strategy {
            Some(strategy) => {
                let entry = Self::entry(&doc, &strategy)?.unwrap_or_default();
                let removed: Vec<RevisionHash> = entry.hashes.keys().filter_map(|h| h.parse().ok()).collect();
                (strategy, removed, None)
            }
            None => {
                let resolved = self.resolve_selector(&selector)?;
                let strategy = resolved.strategy.to_string();
                let mut entry = Self::entry(&doc, &strategy)?.unwrap_or_default();
                let key = resolved.hash.to_string();
                entry.hashes.shift_remove(&key);
                let moved_latest = entry.tags.get(LATEST_TAG) == Some(&key);
                entry.tags.retain(|_, h| *h != key);
                if moved_latest && let Some(newest) = entry.hashes.keys().last() {
                    entry.tags.insert(LATEST_TAG.to_owned(), newest.clone());
                }
                let next = (!entry.hashes.is_empty()).then_some(entry);
                (strategy, vec![resolved.hash], next)
            }
        };
        guard(&strategy, &removed)?;
        let strategy_deleted = next_entry.is_none();
        self.commit(&mut writer, doc, &strategy, next_entry)?;
        drop(writer);
        // The registry no longer names these files; removing them is cleanup.
        for hash in &removed {
            if let Err(e) = file::remove_revision(&self.options.root, &strategy, hash) {
                tracing::warn!(%strategy, %hash, error = %e, "could not remove a deleted revision's files");
            }
        }
        self.metadata.lock().retain(|h, _| !removed.contains(h));
        self.store.forget_metadata(&removed)?;
        for hash in &removed {
            self.journal("revision-delete", &strategy, hash, None);
        }
        Ok(Deleted { strategy, hashes: removed, strategy_deleted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &Path) -> Registry {
        registry_with_threads(dir, 1)
    }

    fn registry_with_threads(dir: &Path, load_threads: usize) -> Registry {
        let store = Arc::new(Store::open(dir).unwrap());
        let options = RegistryOptions {
            root: dir.join("strategies"),
            js_limits: JsLimits::default(),
            resolver_cache_capacity: NonZeroUsize::new(16).unwrap(),
            load_threads,
        };
        std::fs::create_dir_all(&options.root).unwrap();
        let registry = Registry::new(options, store, Metrics::new());
        registry.load().unwrap();
        registry
    }

    fn module(variant: u32) -> String {
        format!(
            "// {variant}\nmodule.exports = {{ metadata: {{ name: 'j', displayName: 'J', events: ['Trade'] }}, create() {{ return {{}}; }} }};"
        )
    }

    #[test]
    fn registry_operations_are_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let upload = |variant, tag: &str| Upload {
            source: module(variant),
            tag: Some(tag.into()),
            promote_latest: true,
            ..Upload::default()
        };
        let first = registry.upload(upload(1, "v1")).unwrap();
        registry.upload(upload(2, "v2")).unwrap();
        registry.move_tag("j", "prod", &first.hash.to_string()).unwrap();
        registry.delete_tag("j", "prod", false).unwrap();
        registry.delete(&format!("j@{}", first.hash), |_, _| Ok(())).unwrap();
        let actions: Vec<String> =
            registry.store.recent_audit(10).unwrap().into_iter().rev().map(|record| record.action).collect();
        assert_eq!(actions, ["upload", "upload", "tag-move", "tag-delete", "revision-delete"]);
    }

    #[test]
    fn the_first_upload_writes_registry_json_before_the_revision_folder() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let root = dir.path().join("strategies");
        // A file where the strategy's folder should go makes the revision write fail.
        std::fs::write(root.join("j"), "in the way").unwrap();
        let upload = || Upload { source: module(1), tag: Some("v1".into()), ..Upload::default() };
        assert!(matches!(registry.upload(upload()), Err(RegistryError::Io(_))));
        assert_eq!(std::fs::read(root.join(REGISTRY_FILE)).unwrap(), b"{}\n", "the document came first");
        assert_eq!(std::fs::read(root.join("j")).unwrap(), b"in the way", "what it did not create is left alone");
        assert_eq!(registry.store.write_health().failures().len(), 1, "the failing write is reported");

        std::fs::remove_file(root.join("j")).unwrap();
        registry.upload(upload()).unwrap();
        assert!(registry.store.write_health().failures().is_empty(), "a successful write clears it");
        assert!(registry_with_threads(dir.path(), 1).document_error().is_none());
    }

    #[test]
    fn a_refusing_guard_leaves_everything_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let uploaded =
            registry.upload(Upload { source: module(1), tag: Some("v1".into()), ..Upload::default() }).unwrap();
        let refused = registry.delete("j", |_, _| Err(RegistryError::Conflict("in use".into())));
        assert!(matches!(refused, Err(RegistryError::Conflict(_))));
        assert_eq!(registry.resolve("j").unwrap().hash, uploaded.hash);
        assert!(dir.path().join("strategies").join(file::revision_path("j", &uploaded.hash)).exists());
    }

    #[test]
    fn load_errors_follow_the_document_whatever_thread_finishes_first() {
        let dir = tempfile::tempdir().unwrap();
        let hashes: Vec<String> = {
            let registry = registry(dir.path());
            (0..24)
                .map(|variant| {
                    let upload =
                        Upload { source: module(variant), tag: Some(format!("v{variant}")), ..Upload::default() };
                    registry.upload(upload).unwrap().hash.to_string()
                })
                .collect()
        };
        // Every revision fails to load: half are missing, half are damaged.
        for (n, hash) in hashes.iter().enumerate() {
            let path = dir.path().join("strategies").join(file::revision_path("j", &hash.parse().unwrap()));
            if n % 2 == 0 {
                std::fs::remove_file(path).unwrap();
            } else {
                std::fs::write(path, "// damaged").unwrap();
            }
        }
        for _ in 0..5 {
            // A fresh registry has nothing loaded to reuse, so all 24 go to the 4 workers.
            let registry = registry_with_threads(dir.path(), 4);
            let listed: Vec<String> = registry.read(|s| s.errors().filter_map(|e| e.hash.clone()).collect::<Vec<_>>());
            assert_eq!(listed[..hashes.len()], hashes[..], "errors in registry.json order");
        }
    }
}
