//! Strategy instances: their lifecycle, their runtimes and their
//! persistence.
//!
//! Every instance is a [`Slot`] behind its own mutex; every lifecycle
//! transition happens under that mutex, so transitions are linearisable (two
//! concurrent starts of one instance start it once; the second sees
//! `starting` and gets a conflict). Slow work (building a runtime, stopping
//! one, SQLite) runs with the state set to `starting`/`stopping` and the
//! mutex released, never across an `.await`: every method here is
//! synchronous and the API calls it on the blocking pool.

pub mod pool;
mod refresh;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use strata_shared::RevisionHash;
use strata_shared::api::{
    CreateInstanceRequest, InstanceState, InstanceStrategy, InstanceView, Scope, UpdateInstanceRequest,
};
use strata_shared::names;
use time::OffsetDateTime;

use crate::js::JsLimits;
use crate::registry::{Registry, ResolveError};
use crate::runtime::config::validate_config;
use crate::runtime::host::{HostShared, HostSpec, JsInstance};
use crate::store::{AuditEntry, InstanceStore, Store, StoreError, StoredInstance, StoredState};
use crate::usage::{Followed, Pin, UsageIndex};
use crate::venue::{MarketEvent, PrivateSink, Provider};
use pool::{Cell, Pool, PoolSleepHook};

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
    /// Incremented on every start so stale reports are ignored.
    generation: u64,
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
    /// A manager with no instances; `providers` are the configured venues.
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<Store>,
        usage: Arc<UsageIndex>,
        providers: Vec<Arc<dyn Provider>>,
        options: InstanceOptions,
    ) -> Arc<Self> {
        let pool = Pool::new(options.workers);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            registry,
            store,
            usage,
            providers,
            pool,
            options,
            slots: RwLock::new(BTreeMap::new()),
            subscribers: RwLock::new(HashMap::new()),
        })
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

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

    /// Writes the usage entries changed since the last flush. Called after
    /// every lifecycle write, so an acknowledged transition's usage is on
    /// disk too, and periodically for `lastSeen`.
    pub fn flush_usage(&self) {
        let dirty = self.usage.take_dirty();
        if !dirty.is_empty()
            && let Err(error) = self.store.save_usage(&dirty)
        {
            tracing::error!(%error, "could not persist the usage index");
        }
    }

    /// Restores the usage index's timestamps and history, then every stored
    /// instance on exactly its pinned hash, starting those that were
    /// running. Returns how many instances were restored.
    pub fn restore(&self) -> Result<usize, InstanceError> {
        self.usage.restore(self.store.load_usage()?);
        let stored = self.store.load_instances()?;
        let count = stored.len();
        let mut to_start = Vec::new();
        {
            let mut slots = self.slots.write();
            for (record, state, last_error) in stored {
                if state == StoredState::Running {
                    to_start.push(record.id.clone());
                }
                let state = if state == StoredState::Failed { InstanceState::Failed } else { InstanceState::Stopped };
                self.usage.created(Self::pin(&record), now());
                let slot = Slot {
                    record,
                    state,
                    // Cut when first recorded (a mark fits on top); a longer one
                    // was stored by an older daemon.
                    last_error: last_error.map(|e| {
                        let max = self.options.log_limits.line_max_bytes + crate::runtime::logs::MAX_MARK_BYTES;
                        crate::runtime::logs::truncate_message(e, max)
                    }),
                    started_at: None,
                    shared: self.new_shared(),
                    cell: None,
                    generation: 0,
                };
                slots.insert(slot.record.id.clone(), Arc::new(Mutex::new(slot)));
            }
        }
        for id in to_start {
            let slot = self.slot(&id)?;
            let missing = {
                let s = slot.lock();
                self.registry.read(|st| st.revision(&s.record.hash).is_none()).then(|| s.record.hash)
            };
            if let Some(hash) = missing {
                // Most likely a broken registry entry: show the instance as
                // failed but keep it stored as running, so that it starts
                // again at the next boot once the registry is fixed.
                let error = format!("revision {hash} is not loaded (see /strategies/registry errors); not started");
                tracing::warn!(instance = %id, %error, "could not restart instance at boot");
                let mut s = slot.lock();
                s.state = InstanceState::Failed;
                s.last_error = Some(error);
                continue;
            }
            if let Err(error) = self.start(&id) {
                tracing::warn!(instance = %id, %error, "could not restart instance at boot");
            }
        }
        Ok(count)
    }

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

    /// Creates an instance pinned to what its selector resolves to now.
    pub fn create(&self, request: CreateInstanceRequest) -> Result<InstanceView, InstanceError> {
        names::validate_instance_id(&request.id).map_err(|e| InstanceError::BadRequest(e.to_string()))?;
        let resolved = self.registry.resolve(&request.strategy.identifier)?;
        let revision = self.registry.read(|s| s.revision(&resolved.hash).cloned()).ok_or_else(|| {
            ResolveError::UnknownRevision {
                hash: resolved.hash.to_string(),
                within: Some(resolved.strategy.to_string()),
            }
        })?;
        self.validate_scope(&request.scope)?;
        let config = validate_config(&revision.metadata, &Value::Object(request.strategy.config.clone()))
            .map_err(|errors| InstanceError::BadRequest(format!("invalid config: {}", errors.join("; "))))?;
        let record = StoredInstance {
            id: request.id.clone(),
            selector: request.strategy.identifier.clone(),
            strategy: resolved.strategy.to_string(),
            hash: resolved.hash,
            config,
            scope: request.scope.clone(),
            created_at: now(),
        };
        let slot = Arc::new(Mutex::new(Slot {
            record: record.clone(),
            state: InstanceState::Stopped,
            last_error: None,
            started_at: None,
            shared: self.new_shared(),
            cell: None,
            generation: 0,
        }));
        {
            // The id is claimed and persisted under the map's write lock, so
            // two concurrent creates of one id create it once.
            let mut slots = self.slots.write();
            if slots.contains_key(&request.id) {
                return Err(InstanceError::Conflict(format!("instance \"{}\" already exists", request.id)));
            }
            self.store.save_instance(&record, StoredState::Stopped, &Self::audit("create", &record, None))?;
            self.usage.created(Self::pin(&record), now());
            slots.insert(request.id.clone(), slot);
        }
        if request.auto_start {
            return self.start(&request.id);
        }
        self.view(&request.id)
    }

    /// Starts a stopped or failed instance.
    pub fn start(&self, id: &str) -> Result<InstanceView, InstanceError> {
        self.start_inner(id, true)
    }

    /// Starts an instance; `persist: false` when its stored state already
    /// says running (a batch re-pin wrote it). A failure is always persisted.
    fn start_inner(&self, id: &str, persist: bool) -> Result<InstanceView, InstanceError> {
        let slot = self.slot(id)?;
        let (record, generation, shared) = {
            let mut s = slot.lock();
            match s.state {
                InstanceState::Stopped | InstanceState::Failed => {}
                other => {
                    return Err(InstanceError::Conflict(format!("instance \"{id}\" is {}", other.as_str())));
                }
            }
            s.state = InstanceState::Starting;
            s.generation += 1;
            s.shared.reset_stop();
            (s.record.clone(), s.generation, s.shared.clone())
        };
        let built = self.build_runtime(&record, shared.clone());
        let mut s = slot.lock();
        if s.generation != generation || s.state != InstanceState::Starting {
            // Deleted or superseded while starting: throw this runtime away.
            return Err(InstanceError::Conflict(format!("instance \"{id}\" changed while starting")));
        }
        match built {
            Ok(js) => {
                let metadata_events = self
                    .registry
                    .read(|st| st.revision(&record.hash).map(|r| r.metadata.events.clone()))
                    .unwrap_or_default();
                let cell = Cell::new(
                    Arc::from(id),
                    generation,
                    js,
                    shared,
                    metadata_events,
                    self.options.queue_capacity,
                    self.fatal_handler(),
                );
                self.subscribe(&record, &cell);
                s.cell = Some(cell);
                s.state = InstanceState::Running;
                s.last_error = None;
                let started = now();
                s.started_at = Some(started);
                self.usage.started(&Arc::from(record.strategy.as_str()), record.hash, id, started);
                drop(s);
                if persist {
                    self.store.set_state(id, StoredState::Running, None, &Self::audit("start", &record, None))?;
                    self.flush_usage();
                }
                self.view(id)
            }
            Err(error) => {
                let error = self.bounded_error(error);
                s.state = InstanceState::Failed;
                s.last_error = Some(error.clone());
                drop(s);
                let audit = Self::audit("fail", &record, Some(error.clone()));
                self.store.set_state(id, StoredState::Failed, Some(&error), &audit)?;
                self.flush_usage();
                Err(InstanceError::StartFailed { id: id.to_owned(), error })
            }
        }
    }

    fn build_runtime(&self, record: &StoredInstance, shared: Arc<HostShared>) -> Result<JsInstance, String> {
        let revision = self
            .registry
            .read(|s| s.revision(&record.hash).cloned())
            .ok_or_else(|| format!("revision {} of {} is not loaded", record.hash, record.strategy))?;
        let source = self.registry.source(&revision).map_err(|e| e.to_string())?;
        let source = String::from_utf8(source).map_err(|_| "module is not UTF-8".to_owned())?;
        let scope = record
            .scope
            .iter()
            .filter_map(|(name, entry)| {
                let provider = self.provider(name)?.clone();
                Some((provider, entry.symbols.iter().map(|s| Arc::from(s.as_str())).collect()))
            })
            .collect();
        let spec = HostSpec {
            instance_id: Arc::from(record.id.as_str()),
            strategy: Arc::from(record.strategy.as_str()),
            hash: record.hash,
            metadata: revision.metadata.clone(),
            config: record.config.clone(),
            scope,
            limits: self.options.js_limits.clone(),
            sleep_cap: self.options.sleep_cap,
            max_orders_per_sec: self.options.max_orders_per_sec,
        };
        JsInstance::start(spec, &source, shared, Arc::new(PoolSleepHook::new(&self.pool))).map_err(|e| e.to_string())
    }

    fn fatal_handler(&self) -> pool::FatalHandler {
        let me = self.me.clone();
        Arc::new(move |cell: &Cell, error: String| {
            if let Some(me) = me.upgrade() {
                me.mark_failed(&cell.id, cell.generation, error);
            }
        })
    }

    /// Marks a running instance failed exactly as its runtime dying would
    /// (fault injection for tests and operators' drills); a conflict when it
    /// is not running.
    pub fn fail(&self, id: &str, error: &str) -> Result<(), InstanceError> {
        let (generation, cell) = {
            let slot = self.slot(id)?;
            let s = slot.lock();
            if s.state != InstanceState::Running {
                return Err(InstanceError::Conflict(format!("instance \"{id}\" is {}", s.state.as_str())));
            }
            (s.generation, s.cell.clone())
        };
        self.mark_failed(id, generation, error.to_owned());
        // A real failure has no runtime left; this one must be shut down.
        if let Some(cell) = cell {
            cell.shared.request_stop();
            drop(cell.take_runtime());
        }
        Ok(())
    }

    /// Marks a running instance failed after its runtime died.
    fn mark_failed(&self, id: &str, generation: u64, error: String) {
        let Ok(slot) = self.slot(id) else { return };
        let error = self.bounded_error(error);
        let record = {
            let mut s = slot.lock();
            if s.generation != generation || s.state != InstanceState::Running {
                return;
            }
            if let Some(cell) = s.cell.take() {
                self.unsubscribe(&s.record, &cell);
            }
            s.state = InstanceState::Failed;
            s.last_error = Some(error.clone());
            self.usage.failed(&Arc::from(s.record.strategy.as_str()), s.record.hash, id, now());
            s.record.clone()
        };
        tracing::warn!(instance = %id, strategy = %record.strategy, hash = %record.hash, %error, "instance failed");
        let audit = Self::audit("fail", &record, Some(error.clone()));
        if let Err(e) = self.store.set_state(id, StoredState::Failed, Some(&error), &audit) {
            tracing::error!(instance = %id, error = %e, "could not persist a failure");
        }
        self.flush_usage();
    }

    /// Stops a running instance.
    pub fn stop(&self, id: &str) -> Result<InstanceView, InstanceError> {
        self.stop_inner(id, true)?;
        self.view(id)
    }

    fn stop_inner(&self, id: &str, persist: bool) -> Result<StoredInstance, InstanceError> {
        let slot = self.slot(id)?;
        let (cell, record) = {
            let mut s = slot.lock();
            if s.state != InstanceState::Running {
                return Err(InstanceError::Conflict(format!("instance \"{id}\" is {}", s.state.as_str())));
            }
            s.state = InstanceState::Stopping;
            let cell = s.cell.take();
            if let Some(cell) = &cell {
                self.unsubscribe(&s.record, cell);
            }
            (cell, s.record.clone())
        };
        if let Some(cell) = cell {
            cell.shared.request_stop();
            drop(cell.take_runtime());
        }
        {
            let mut s = slot.lock();
            s.state = InstanceState::Stopped;
            s.started_at = None;
            self.usage.stopped(&Arc::from(record.strategy.as_str()), record.hash, id, now());
        }
        if persist {
            self.store.set_state(id, StoredState::Stopped, None, &Self::audit("stop", &record, None))?;
            self.flush_usage();
        }
        Ok(record)
    }

    /// Restarts an instance on the same hash (starts it if it was stopped).
    pub fn restart(&self, id: &str) -> Result<InstanceView, InstanceError> {
        match self.stop_inner(id, false) {
            Ok(_) | Err(InstanceError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.start(id)
    }

    /// Deletes an instance, stopping it first if it runs.
    pub fn delete(&self, id: &str) -> Result<(), InstanceError> {
        match self.stop_inner(id, false) {
            Ok(_) | Err(InstanceError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let slot = {
            let mut slots = self.slots.write();
            let slot = slots.get(id).cloned().ok_or_else(|| InstanceError::NotFound(id.to_owned()))?;
            {
                let s = slot.lock();
                if matches!(s.state, InstanceState::Running | InstanceState::Starting | InstanceState::Stopping) {
                    return Err(InstanceError::Conflict(format!("instance \"{id}\" is {}", s.state.as_str())));
                }
                self.store.delete_instance(id, &Self::audit("delete", &s.record, None))?;
                self.usage.deleted(Self::pin(&s.record), now());
            }
            slots.remove(id);
            slot
        };
        for provider in &self.providers {
            provider.forget_owner(id);
        }
        // A start racing with this delete sees the generation move and gives up.
        slot.lock().generation += 1;
        self.flush_usage();
        Ok(())
    }

    /// Replaces an instance's config (never its pin); a running instance
    /// restarts with it on the same hash.
    pub fn update(&self, id: &str, request: UpdateInstanceRequest) -> Result<InstanceView, InstanceError> {
        let slot = self.slot(id)?;
        let (record, was_running, was_failed) = {
            let s = slot.lock();
            (s.record.clone(), s.state == InstanceState::Running, s.state == InstanceState::Failed)
        };
        if request.id.as_deref().is_some_and(|given| given != id) {
            return Err(InstanceError::BadRequest("id cannot change".into()));
        }
        if request.scope.as_ref().is_some_and(|scope| *scope != record.scope) {
            return Err(InstanceError::BadRequest("scope cannot change; only config may differ".into()));
        }
        let mut config = request.config.clone();
        if let Some(strategy) = &request.strategy {
            let identifier = strategy.get("identifier").and_then(Value::as_str);
            let selector = strategy.get("selector").and_then(Value::as_str);
            if identifier.is_some_and(|i| i != record.selector && i != record.strategy)
                || selector.is_some_and(|s| s != record.selector)
                || strategy.get("hash").and_then(Value::as_str).is_some_and(|h| h != record.hash.to_string())
            {
                return Err(InstanceError::BadRequest(
                    "the strategy cannot change (a config update never re-pins); only config may differ".into(),
                ));
            }
            if config.is_none() {
                config = strategy.get("config").and_then(Value::as_object).cloned();
            }
        }
        let config = config.ok_or_else(|| InstanceError::BadRequest("config is required".into()))?;
        let metadata = self
            .registry
            .read(|s| s.revision(&record.hash).map(|r| r.metadata.clone()))
            .ok_or_else(|| InstanceError::Conflict(format!("revision {} is no longer loaded", record.hash)))?;
        let config = validate_config(&metadata, &Value::Object(config))
            .map_err(|errors| InstanceError::BadRequest(format!("invalid config: {}", errors.join("; "))))?;
        let updated = StoredInstance { config, ..record.clone() };
        {
            let mut s = slot.lock();
            s.record = updated.clone();
        }
        let state = match (was_running, was_failed) {
            (true, _) => StoredState::Running,
            (_, true) => StoredState::Failed,
            _ => StoredState::Stopped,
        };
        self.store.save_instance(&updated, state, &Self::audit("update", &updated, None))?;
        if was_running {
            return self.restart(id);
        }
        self.view(id)
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
            return (page.iter().map(|slot| self.render(&slot.lock())).collect(), total);
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
            if !filter.matches(&s.record, s.state) {
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
        let shared = slot.lock().shared.clone();
        Ok(shared.logs.lines())
    }

    /// Ids and pins of every instance referencing `hashes` (for delete
    /// guards), from the usage index: no scan.
    pub fn referencing(&self, hashes: &[strata_shared::RevisionHash]) -> Vec<(String, strata_shared::RevisionHash)> {
        hashes.iter().flat_map(|hash| self.usage.pinned_to(*hash).into_iter().map(|id| (id, *hash))).collect()
    }

    /// Stops every runtime (daemon shutdown) without changing stored states,
    /// so running instances start again at the next boot.
    pub fn shutdown(&self) {
        // Record that running revisions were seen until now; the stops below
        // are not persisted, so the next boot restarts these instances.
        self.usage.touch_running(now());
        self.flush_usage();
        let ids: Vec<String> = self.slots.read().keys().cloned().collect();
        for id in ids {
            let _ = self.stop_inner(&id, false);
        }
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
