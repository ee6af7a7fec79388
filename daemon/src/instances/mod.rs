//! Strategy instances: their lifecycle, their runtimes and their
//! persistence.
//!
//! Every instance is a [`Slot`] behind its own mutex, and every transition
//! (create, start, stop, restart, update, re-pin, refresh, fail, delete,
//! restore) goes through one guard (`lifecycle.rs`): it *claims* the slot
//! (marks it busy and moves its generation), does the slow work (building or
//! stopping a runtime) with no lock held, then commits only if the
//! generation is still its own, enqueuing its write for the group-commit
//! writer (`commit.rs`) and answering once that write is durable. Lock
//! order: the instance map, then a slot, then the subscriber table or the
//! usage index. No lock is held across a disk write or an `.await`: every
//! method here is synchronous and the API calls it on the blocking pool.

mod boot;
mod commit;
#[cfg(test)]
mod history;
mod lifecycle;
pub mod pool;
mod refresh;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use std::sync::atomic::AtomicBool;
use strata_shared::RevisionHash;
use strata_shared::api::{InstanceState, InstanceStrategy, InstanceView, Scope};
use time::OffsetDateTime;

use crate::js::JsLimits;
use crate::registry::{Registry, ResolveError};
use crate::runtime::host::HostShared;
use crate::store::{AuditEntry, Store, StoreError, StoredInstance, StoredState};
use crate::usage::{Followed, Pin, UsageIndex};
use crate::venue::{MarketEvent, PrivateSink, Provider};
use commit::Committer;
use lifecycle::{Op, Phase};
use pool::{Cell, Pool};

/// Why an instance operation failed; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Malformed input (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such instance (404).
    #[error("unknown instance \"{0}\"")]
    NotFound(String),
    /// Wrong state for the operation, or the id is taken (409).
    #[error("{0}")]
    Conflict(String),
    /// The strategy could not start (422): its module or `create()` threw.
    #[error("instance \"{id}\" failed to start: {error}")]
    StartFailed {
        /// Instance id.
        id: String,
        /// What went wrong.
        error: String,
    },
    /// The selector did not resolve (400/404).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The database failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A write could not be made durable (503); the change may show in
    /// memory until the instance's next transition.
    #[error("could not persist the change: {0}")]
    Persist(String),
    /// A write failed because the disk is full (507).
    #[error("could not persist the change: {0}")]
    StorageFull(String),
}

/// Runtime options of the instance manager.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// Sandbox limits of each instance's runtime.
    pub js_limits: JsLimits,
    /// Longest `helpers.sleep`.
    pub sleep_cap: std::time::Duration,
    /// Orders a second each instance may submit (`[runtime] max_orders_per_sec`).
    pub max_orders_per_sec: u32,
    /// Events queued per instance before the oldest market events are dropped.
    pub queue_capacity: usize,
    /// Worker threads running JavaScript.
    pub workers: usize,
    /// Daemon-wide JavaScript counters (handler errors, interrupts).
    pub js_metrics: Option<crate::metrics::JsMetrics>,
    /// How much of each instance's logging (and of its last error) is kept.
    pub log_limits: crate::runtime::logs::LogLimits,
}

/// One instance as the manager holds it.
#[derive(Debug)]
struct Slot {
    record: StoredInstance,
    state: InstanceState,
    last_error: Option<String>,
    started_at: Option<OffsetDateTime>,
    /// Counters and logs; they live as long as the instance, across restarts.
    shared: Arc<HostShared>,
    /// The running cell, while `running`.
    cell: Option<Arc<Cell>>,
    /// Moved by every claim: a transition commits only while it is its own.
    generation: u64,
    /// The transition holding the slot, if any (see `lifecycle.rs`).
    busy: Option<Op>,
    /// Created, restoring, live or deleted.
    phase: Phase,
    /// A failure the running cell reported while the slot was busy; applied
    /// when the claim is released, unless the claim replaced the cell.
    pending_failure: Option<String>,
}

impl Slot {
    fn new(
        record: StoredInstance,
        state: InstanceState,
        last_error: Option<String>,
        phase: Phase,
        shared: Arc<HostShared>,
    ) -> Self {
        Slot {
            record,
            state,
            last_error,
            started_at: None,
            shared,
            cell: None,
            generation: 0,
            busy: None,
            phase,
            pending_failure: None,
        }
    }

    /// Invisible to every reader: not yet created, or deleted.
    fn hidden(&self) -> bool {
        matches!(self.phase, Phase::Creating | Phase::Deleted)
    }

    /// The state a daemon restart must find.
    fn stored_state(&self) -> StoredState {
        match self.state {
            InstanceState::Failed => StoredState::Failed,
            InstanceState::Running => StoredState::Running,
            _ if self.phase == Phase::Restoring => StoredState::Running,
            _ => StoredState::Stopped,
        }
    }
}

/// (provider, symbol) → the running cells subscribed to it.
type Subscribers = HashMap<(Arc<str>, Arc<str>), Vec<Arc<Cell>>>;

/// The instance manager. Cheap to share behind an `Arc`.
pub struct Instances {
    me: Weak<Instances>,
    registry: Arc<Registry>,
    store: Arc<Store>,
    usage: Arc<UsageIndex>,
    providers: Vec<Arc<dyn Provider>>,
    pool: Arc<Pool>,
    options: InstanceOptions,
    slots: RwLock<BTreeMap<String, Arc<Mutex<Slot>>>>,
    subscribers: RwLock<Subscribers>,
    /// The group-commit writer every instance write goes through.
    committer: Committer,
    /// In-flight runtime builds and their deadlines.
    watchdog: Arc<boot::Watchdog>,
    /// Set by [`Instances::shutdown`]: restores still queued are abandoned.
    closing: AtomicBool,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("instances", &self.slots.read().len()).finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Instances {
    /// Fresh per-instance shared state (counters, log ring within the limits).
    fn new_shared(&self) -> Arc<HostShared> {
        let shared = HostShared::with_metrics(self.options.js_metrics.clone());
        shared.logs.set_limits(self.options.log_limits);
        Arc::new(shared)
    }

    /// `error` cut to the log line limit, as a `lastError` is kept and stored.
    fn bounded_error(&self, error: String) -> String {
        crate::runtime::logs::truncate_message(error, self.options.log_limits.line_max_bytes)
    }

    /// A manager with no instances; `providers` are the configured venues.
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<Store>,
        usage: Arc<UsageIndex>,
        providers: Vec<Arc<dyn Provider>>,
        options: InstanceOptions,
    ) -> Arc<Self> {
        let pool = Pool::new(options.workers);
        let committer = Committer::start(store.clone(), usage.clone());
        let instances = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            registry,
            store,
            usage,
            providers,
            pool,
            options,
            slots: RwLock::new(BTreeMap::new()),
            subscribers: RwLock::new(HashMap::new()),
            committer,
            watchdog: Arc::default(),
            closing: AtomicBool::new(false),
        });
        boot::Watchdog::spawn(&instances);
        instances
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// The slot of `id`; the caller checks [`Slot::hidden`] under its lock.
    fn slot(&self, id: &str) -> Result<Arc<Mutex<Slot>>, InstanceError> {
        self.slots.read().get(id).cloned().ok_or_else(|| InstanceError::NotFound(id.to_owned()))
    }

    /// The usage index's view of an instance's pin.
    fn pin(record: &StoredInstance) -> Pin<'_> {
        Pin { strategy: &record.strategy, hash: record.hash, selector: &record.selector, id: &record.id }
    }

    fn audit(action: &'static str, record: &StoredInstance, detail: Option<String>) -> AuditEntry {
        AuditEntry {
            action,
            instance_id: record.id.clone(),
            strategy: record.strategy.clone(),
            hash: record.hash.to_string(),
            detail,
        }
    }

    /// Writes the usage entries changed since the last flush, through the
    /// group-commit writer (which also writes them with every lifecycle
    /// commit); called periodically for `lastSeen`.
    pub fn flush_usage(&self) {
        if let Err(error) = self.committer.enqueue(Vec::new()).wait() {
            tracing::error!(%error, "could not persist the usage index");
        }
    }

    fn validate_scope(&self, scope: &Scope) -> Result<(), InstanceError> {
        if scope.is_empty() {
            return Err(InstanceError::BadRequest("scope must name at least one provider".into()));
        }
        for (name, entry) in scope {
            let provider = self.provider(name).ok_or_else(|| {
                let known: Vec<_> = self.providers.iter().map(|p| p.name().to_owned()).collect();
                InstanceError::BadRequest(format!("unknown provider \"{name}\" (known: {})", known.join(", ")))
            })?;
            if entry.symbols.is_empty() {
                return Err(InstanceError::BadRequest(format!("scope.{name}.symbols must not be empty")));
            }
            for symbol in &entry.symbols {
                if !provider.symbols().iter().any(|s| **s == **symbol) {
                    return Err(InstanceError::BadRequest(format!("provider \"{name}\" does not trade \"{symbol}\"")));
                }
            }
        }
        Ok(())
    }

    fn subscribe(&self, record: &StoredInstance, cell: &Arc<Cell>) {
        let mut subscribers = self.subscribers.write();
        for (provider, entry) in &record.scope {
            for symbol in &entry.symbols {
                subscribers
                    .entry((Arc::from(provider.as_str()), Arc::from(symbol.as_str())))
                    .or_default()
                    .push(cell.clone());
            }
        }
    }

    fn unsubscribe(&self, record: &StoredInstance, cell: &Arc<Cell>) {
        let mut subscribers = self.subscribers.write();
        for (provider, entry) in &record.scope {
            for symbol in &entry.symbols {
                let key = (Arc::from(provider.as_str()), Arc::from(symbol.as_str()));
                if let Some(cells) = subscribers.get_mut(&key) {
                    cells.retain(|c| !Arc::ptr_eq(c, cell));
                }
            }
        }
    }

    /// Fans one public market event out to the instances subscribed to it.
    pub fn publish(&self, event: &Arc<MarketEvent>) {
        let key = (event.provider.clone(), event.symbol.clone());
        let subscribers = self.subscribers.read();
        let Some(cells) = subscribers.get(&key) else { return };
        for cell in cells {
            if cell.wants(event.kind) && cell.push(event.clone()) {
                self.pool.schedule(cell.clone());
            }
        }
    }

    /// The API view of one instance.
    pub fn view(&self, id: &str) -> Result<InstanceView, InstanceError> {
        let slot = self.slot(id)?;
        let s = slot.lock();
        if s.hidden() {
            return Err(InstanceError::NotFound(id.to_owned()));
        }
        Ok(self.render(&s))
    }

    fn render(&self, s: &Slot) -> InstanceView {
        let record = &s.record;
        let resolves_to = self.registry.resolve(&record.selector).ok().map(|r| r.hash);
        let tag = self.registry.read(|st| st.revision(&record.hash).map(|r| r.tag.clone()));
        let pinned = format!("{}@{}", record.strategy, record.hash);
        InstanceView {
            id: record.id.clone(),
            strategy: InstanceStrategy {
                identifier: record.strategy.clone(),
                selector: record.selector.clone(),
                hash: record.hash,
                tag,
                config: record.config.clone(),
            },
            scope: record.scope.clone(),
            state: s.state,
            last_error: s.last_error.clone(),
            drift: resolves_to.is_some_and(|h| h != record.hash),
            resolves_to,
            counters: s.shared.counters.snapshot(),
            created_at: record.created_at,
            started_at: s.started_at,
            links: BTreeMap::from([
                ("self".to_owned(), format!("/strategy/instances/{}", record.id)),
                ("logs".to_owned(), format!("/strategy/instances/{}/logs", record.id)),
                ("module".to_owned(), format!("/strategies/modules/{pinned}")),
                ("usage".to_owned(), format!("/strategies/modules/{pinned}/usage")),
            ]),
        }
    }

    /// A filtered page of instances, by id. Filters are answered from the
    /// usage index (by hash, by strategy, drifting selectors); only the
    /// unfiltered list and a bare `state` filter walk the instance map.
    pub fn list(&self, filter: &InstanceFilter, offset: usize, limit: usize) -> (Vec<InstanceView>, usize) {
        let unfiltered = filter.strategy.is_none() && filter.hash.is_none() && filter.drift.is_none();
        if unfiltered && filter.state.is_none() {
            let slots = self.slots.read();
            let page: Vec<_> = slots.values().skip(offset).take(limit).cloned().collect();
            let total = slots.len();
            drop(slots);
            let views = page
                .iter()
                .filter_map(|slot| {
                    let s = slot.lock();
                    (!s.hidden()).then(|| self.render(&s))
                })
                .collect();
            return (views, total);
        }
        let candidates: Vec<String> = if filter.drift == Some(true) {
            self.drifting()
        } else if let Some(hash) = filter.hash {
            self.usage.pinned_to(hash)
        } else if let Some(strategy) = &filter.strategy {
            self.usage.strategy_instances(strategy)
        } else {
            self.slots.read().keys().cloned().collect()
        };
        let mut total = 0;
        let mut page = Vec::new();
        for id in candidates {
            let Ok(slot) = self.slot(&id) else { continue };
            let s = slot.lock();
            if s.hidden() || !filter.matches(&s.record, s.state) {
                continue;
            }
            let view = if filter.drift.is_some() || (total >= offset && page.len() < limit) {
                Some(self.render(&s))
            } else {
                None
            };
            if let Some(drift) = filter.drift
                && view.as_ref().is_some_and(|v| v.drift != drift)
            {
                continue;
            }
            if total >= offset && page.len() < limit {
                page.extend(view);
            }
            total += 1;
        }
        (page, total)
    }

    /// The selectors followed on `hash` that now resolve to another hash,
    /// with how many instances follow each: one resolution per selector.
    fn moved(&self, hash: RevisionHash, selectors: Vec<Followed>) -> Vec<Followed> {
        selectors
            .into_iter()
            .filter(|(selector, _)| self.registry.resolve(selector).is_ok_and(|r| r.hash != hash))
            .collect()
    }

    /// How many instances pinned to `hash` drift. Must not be called under
    /// the registry lock.
    pub fn drifted_on(&self, strategy: &Arc<str>, hash: RevisionHash) -> usize {
        self.moved(hash, self.usage.selectors(strategy, hash)).into_iter().map(|(_, followers)| followers).sum()
    }

    /// How many instances drift, per strategy with any (see [`Instances::drifting`]).
    pub fn drift_by_strategy(&self) -> BTreeMap<Arc<str>, usize> {
        let mut counts = BTreeMap::new();
        for (strategy, hash, selectors) in self.usage.pinned_selectors() {
            let drifting: usize = self.moved(hash, selectors).into_iter().map(|(_, followers)| followers).sum();
            if drifting > 0 {
                *counts.entry(strategy).or_default() += drifting;
            }
        }
        counts
    }

    /// Ids of every instance whose selector now resolves to another hash
    /// than its pin, by id: one resolution per distinct (revision, selector).
    pub fn drifting(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for (strategy, hash, selectors) in self.usage.pinned_selectors() {
            for (selector, _) in self.moved(hash, selectors) {
                ids.extend(self.usage.followers(&strategy, hash, &selector));
            }
        }
        ids.sort_unstable();
        ids
    }

    /// Recent log lines of one instance.
    pub fn logs(&self, id: &str) -> Result<Vec<crate::runtime::logs::LogLine>, InstanceError> {
        let slot = self.slot(id)?;
        let shared = {
            let s = slot.lock();
            if s.hidden() {
                return Err(InstanceError::NotFound(id.to_owned()));
            }
            s.shared.clone()
        };
        Ok(shared.logs.lines())
    }

    /// Ids and pins of every instance referencing `hashes` (for delete
    /// guards), from the usage index: no scan.
    pub fn referencing(&self, hashes: &[strata_shared::RevisionHash]) -> Vec<(String, strata_shared::RevisionHash)> {
        hashes.iter().flat_map(|hash| self.usage.pinned_to(*hash).into_iter().map(|id| (id, *hash))).collect()
    }
}

impl PrivateSink for Instances {
    fn deliver(&self, owner: &str, event: MarketEvent) {
        let Some(slot) = self.slots.read().get(owner).cloned() else { return };
        let cell = slot.lock().cell.clone();
        // Private events bypass the `events` filter: the host counts fills
        // even for strategies that do not subscribe to ExecReport.
        if let Some(cell) = cell
            && cell.push(Arc::new(event))
        {
            self.pool.schedule(cell);
        }
    }
}

/// The [`PrivateSink`] venues are built with, bound to the manager once it
/// exists (venues and manager need each other).
#[derive(Debug, Default)]
pub struct LateSink(std::sync::OnceLock<Weak<Instances>>);

impl LateSink {
    /// Routes deliveries to `instances` from now on.
    pub fn bind(&self, instances: &Arc<Instances>) {
        let _ = self.0.set(Arc::downgrade(instances));
    }
}

impl PrivateSink for LateSink {
    fn deliver(&self, owner: &str, event: MarketEvent) {
        if let Some(instances) = self.0.get().and_then(Weak::upgrade) {
            instances.deliver(owner, event);
        }
    }
}

/// Filters of `GET /strategy/instances`.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only this strategy.
    pub strategy: Option<String>,
    /// Only instances pinned to this hash.
    pub hash: Option<strata_shared::RevisionHash>,
    /// Only this state.
    pub state: Option<InstanceState>,
    /// Only instances with (true) or without (false) drift.
    pub drift: Option<bool>,
}

impl InstanceFilter {
    fn matches(&self, record: &StoredInstance, state: InstanceState) -> bool {
        self.strategy.as_ref().is_none_or(|s| *s == record.strategy)
            && self.hash.is_none_or(|h| h == record.hash)
            && self.state.is_none_or(|st| st == state)
    }
}

/// Starts one task per provider that fans its market data out to instances.
pub fn spawn_fanout(instances: &Arc<Instances>) -> Vec<tokio::task::JoinHandle<()>> {
    instances
        .providers
        .iter()
        .map(|provider| {
            let mut events = provider.subscribe();
            let instances = Arc::downgrade(instances);
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(event) => match instances.upgrade() {
                            Some(instances) => instances.publish(&event),
                            None => return,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "market data fan-out fell behind");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
        })
        .collect()
}
