//! The lifecycle guard and every transition that goes through it.
//!
//! A transition **claims** an instance's slot: under the slot's mutex it
//! checks that no other transition holds it and that the state allows the
//! operation, marks the slot busy and moves its generation. It then does its
//! slow work (stopping a runtime, building one) with no lock held, and
//! **commits** by locking the slot again: only if the generation is still
//! the one it claimed (a watchdog may have failed the instance meanwhile)
//! does it apply its result, update the usage index in the same critical
//! section, and enqueue its write for the group-commit writer. The claim is
//! released once that write is durable, so an instance's writes reach the
//! disk in the order its transitions committed, and an operation that finds
//! the slot busy is refused (409) rather than interleaved. Any concurrent
//! history is thereby equivalent to some sequential order of the operations
//! that succeeded.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use serde_json::Value;
use strata_shared::RevisionHash;
use strata_shared::api::{CreateInstanceRequest, InstanceState, InstanceView, UpdateInstanceRequest};
use strata_shared::names;

use super::commit::Ticket;
use super::pool::{self, Cell, PoolSleepHook};
use super::{InstanceError, Instances, Slot, now};
use crate::registry::ResolveError;
use crate::runtime::config::validate_config;
use crate::runtime::host::{HostShared, HostSpec, JsInstance};
use crate::store::{InstanceWrite, StoredInstance};

/// The transition holding a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Create,
    Start,
    Stop,
    Restart,
    Update,
    Repin,
    Delete,
    Restore,
    Shutdown,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Update => "update",
            Op::Repin => "re-pin",
            Op::Delete => "delete",
            Op::Restore => "restore",
            Op::Shutdown => "shutdown",
        }
    }
}

/// Where a slot is in its life, beside its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Claimed by a create that has not committed: invisible.
    Creating,
    /// Stored running and waiting for its start at boot (shown `starting`).
    Restoring,
    /// Created and not deleted.
    Live,
    /// Removed from the map; a stale handle finds nothing.
    Deleted,
}

type SlotGuard = ArcMutexGuard<RawMutex, Slot>;

/// A claimed slot. Dropping it releases the claim (if it still holds it)
/// and applies a failure the cell reported meanwhile.
pub(super) struct Claim<'a> {
    instances: &'a Instances,
    slot: Arc<Mutex<Slot>>,
    id: String,
    generation: u64,
    op: Op,
    /// Set when the slot must stay busy forever (deleted).
    keep: bool,
}

/// What a claim saw when it took the slot.
pub(super) struct Snapshot {
    pub(super) record: StoredInstance,
    pub(super) state: InstanceState,
    pub(super) shared: Arc<HostShared>,
}

impl Claim<'_> {
    /// Locks the slot if this claim still holds it.
    pub(super) fn lock(&self) -> Result<SlotGuard, InstanceError> {
        let s = self.slot.lock_arc();
        if s.generation == self.generation && s.busy == Some(self.op) {
            Ok(s)
        } else {
            Err(InstanceError::Conflict(format!("instance \"{}\" changed during its {}", self.id, self.op.as_str())))
        }
    }

    /// Enqueues `writes` while the slot is still locked, unlocks it, waits
    /// until they are durable, then releases the claim.
    fn commit(self, s: SlotGuard, writes: Vec<InstanceWrite>) -> Result<(), InstanceError> {
        let ticket = self.instances.committer.enqueue(writes);
        drop(s);
        let durable = ticket.wait();
        drop(self);
        durable
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let mut s = self.slot.lock_arc();
        if s.generation != self.generation || s.busy != Some(self.op) {
            return;
        }
        s.busy = None;
        if s.phase == Phase::Creating {
            // A create that did not commit leaves nothing behind.
            s.phase = Phase::Deleted;
            drop(s);
            self.instances.slots.write().remove(&self.id);
            return;
        }
        if matches!(s.state, InstanceState::Starting | InstanceState::Stopping) && s.phase == Phase::Live {
            // Left half-way without a commit (a build interrupted by the
            // shutdown): say what is true now and record it.
            s.state = if s.cell.is_some() { InstanceState::Running } else { InstanceState::Stopped };
            tracing::warn!(instance = %self.id, op = self.op.as_str(), "transition abandoned");
            // At shutdown the stored state stays what it was (see `shutdown`).
            if !self.instances.closing.load(Ordering::Acquire) {
                let _ = self.instances.committer.enqueue(vec![save(&s, Vec::new())]);
            }
        }
        if let Some(error) = s.pending_failure.take()
            && s.cell.is_some()
        {
            let (ticket, cell) = self.instances.fail_locked(&mut s, error);
            drop(s);
            halt(cell);
            if let Err(error) = ticket.wait() {
                tracing::error!(instance = %self.id, %error, "could not persist a failure");
            }
        }
    }
}

/// Stops a runtime detached from its slot: wakes its sleep, interrupts its
/// JS and waits for a running handler to return. No lock may be held.
fn halt(cell: Option<Arc<Cell>>) {
    if let Some(cell) = cell {
        cell.shared.request_stop();
        drop(cell.take_runtime());
    }
}

/// How the instance stopped running, for the usage index.
#[derive(Clone, Copy)]
enum Left {
    Stopped,
    Failed,
}

impl Instances {
    /// Claims `id` for `op` if no transition holds it and `allowed` accepts
    /// its current slot (else 409 naming the state; 404 if it does not
    /// exist).
    pub(super) fn claim(
        &self,
        id: &str,
        op: Op,
        allowed: impl FnOnce(&Slot) -> bool,
    ) -> Result<(Claim<'_>, Snapshot), InstanceError> {
        let slot = self.slot(id)?;
        let mut s = slot.lock();
        if s.hidden() {
            return Err(InstanceError::NotFound(id.to_owned()));
        }
        if s.busy.is_some() || !allowed(&s) {
            return Err(conflict(&s));
        }
        s.generation += 1;
        s.busy = Some(op);
        let snapshot = Snapshot { record: s.record.clone(), state: s.state, shared: s.shared.clone() };
        let generation = s.generation;
        drop(s);
        Ok((Claim { instances: self, slot, id: id.to_owned(), generation, op, keep: false }, snapshot))
    }

    /// Takes the cell out of a slot, unsubscribes it and tells the usage
    /// index the instance left its revision. The caller halts the cell once
    /// the lock is released.
    fn detach(&self, s: &mut Slot, how: Left) -> Option<Arc<Cell>> {
        s.pending_failure = None;
        let cell = s.cell.take()?;
        self.unsubscribe(&s.record, &cell);
        let strategy = Arc::from(s.record.strategy.as_str());
        match how {
            Left::Stopped => self.usage.stopped(&strategy, s.record.hash, &s.record.id, now()),
            Left::Failed => self.usage.failed(&strategy, s.record.hash, &s.record.id, now()),
        }
        s.started_at = None;
        Some(cell)
    }

    /// The failure transition of a running instance, under its slot lock:
    /// it needs no claim because it is instantaneous. Moves the generation
    /// so that no older claim can commit over it.
    pub(super) fn fail_locked(&self, s: &mut Slot, error: String) -> (Ticket, Option<Arc<Cell>>) {
        let error = self.bounded_error(error);
        let cell = self.detach(s, Left::Failed);
        s.state = InstanceState::Failed;
        s.last_error = Some(error.clone());
        s.phase = Phase::Live;
        s.generation += 1;
        let record = &s.record;
        tracing::warn!(instance = %record.id, strategy = %record.strategy, hash = %record.hash, %error, "instance failed");
        let write = save(s, vec![Self::audit("fail", record, Some(error))]);
        (self.committer.enqueue(vec![write]), cell)
    }

    /// Stops the claimed instance's runtime, if it has one (state
    /// `stopping` meanwhile).
    fn take_down(&self, claim: &Claim<'_>) -> Result<(), InstanceError> {
        let mut s = claim.lock()?;
        if s.cell.is_none() {
            return Ok(());
        }
        s.state = InstanceState::Stopping;
        let cell = self.detach(&mut s, Left::Stopped);
        drop(s);
        halt(cell);
        Ok(())
    }

    /// Builds a runtime for the claimed instance on `record` and commits the
    /// outcome: `running`, or `failed` (422) when the strategy could not
    /// start. `audits` are written before the `start`/`fail` line.
    pub(super) fn bring_up(
        &self,
        claim: Claim<'_>,
        record: StoredInstance,
        shared: Arc<HostShared>,
        audits: Vec<crate::store::AuditEntry>,
    ) -> Result<InstanceView, InstanceError> {
        {
            let mut s = claim.lock()?;
            s.state = InstanceState::Starting;
            s.record = record.clone();
        }
        shared.reset_stop();
        let built = self.build_bounded(&record, &shared, claim.generation);
        if built.is_err() && self.closing.load(Ordering::Acquire) {
            // Interrupted by the shutdown: not a failure to record (a
            // restore stays stored running, to start at the next boot).
            return Err(InstanceError::Conflict(format!("instance \"{}\" was not started: shutting down", record.id)));
        }
        let mut s = match claim.lock() {
            Ok(s) => s,
            Err(superseded) => {
                drop(built);
                return Err(superseded);
            }
        };
        let write = self.apply_start(&mut s, built, audits, claim.generation);
        let view = self.render(&s);
        let failure = s.last_error.clone().filter(|_| s.state == InstanceState::Failed);
        claim.commit(s, vec![write])?;
        match failure {
            Some(error) => Err(InstanceError::StartFailed { id: view.id, error }),
            None => Ok(view),
        }
    }

    /// Applies a build's outcome to a claimed slot (running with a new
    /// subscribed cell, or failed) and returns the write recording it.
    fn apply_start(
        &self,
        s: &mut Slot,
        built: Result<JsInstance, String>,
        mut audits: Vec<crate::store::AuditEntry>,
        generation: u64,
    ) -> InstanceWrite {
        s.phase = Phase::Live;
        match built {
            Ok(js) => {
                let record = &s.record;
                let events = self
                    .registry
                    .read(|st| st.revision(&record.hash).map(|r| r.metadata.events.clone()))
                    .unwrap_or_default();
                let cell = Cell::new(
                    Arc::from(record.id.as_str()),
                    generation,
                    js,
                    s.shared.clone(),
                    events,
                    self.options.queue_capacity,
                    self.fatal_handler(),
                );
                self.subscribe(record, &cell);
                s.cell = Some(cell);
                s.state = InstanceState::Running;
                s.last_error = None;
                let started = now();
                s.started_at = Some(started);
                self.usage.started(&Arc::from(record.strategy.as_str()), record.hash, &record.id, started);
                audits.push(Self::audit("start", record, None));
            }
            Err(error) => {
                let error = self.bounded_error(error);
                s.state = InstanceState::Failed;
                audits.push(Self::audit("fail", &s.record, Some(error.clone())));
                s.last_error = Some(error);
            }
        }
        save(s, audits)
    }

    /// Builds a runtime under the start watchdog (see `boot.rs`).
    fn build_bounded(
        &self,
        record: &StoredInstance,
        shared: &Arc<HostShared>,
        generation: u64,
    ) -> Result<JsInstance, String> {
        let watch = self.watchdog.watch(&record.id, generation, shared, self.start_deadline());
        let built = self.build_runtime(record, shared.clone());
        match self.watchdog.unwatch(watch) {
            Some(expired) => Err(expired),
            None => built,
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
                me.mark_failed(cell, error);
            }
        })
    }

    /// A cell reports that its runtime died. Applied at once when no
    /// transition holds the slot; otherwise kept for when the claim is
    /// released (a claim that replaces the cell discards it). Never waits
    /// for the disk: this runs on a worker thread.
    fn mark_failed(&self, cell: &Cell, error: String) {
        let Ok(slot) = self.slot(&cell.id) else { return };
        let mut s = slot.lock();
        if !s.cell.as_deref().is_some_and(|current| std::ptr::eq(current, cell)) {
            return;
        }
        if s.busy.is_some() {
            s.pending_failure = Some(error);
            return;
        }
        let (ticket, _cell) = self.fail_locked(&mut s, error);
        drop(s);
        // The writer logs a failed commit; a worker does not wait for it.
        drop(ticket);
    }

    /// Marks a running instance failed exactly as its runtime dying would
    /// (fault injection for tests and operators' drills); a conflict when it
    /// is not running or a transition holds it.
    pub fn fail(&self, id: &str, error: &str) -> Result<(), InstanceError> {
        let slot = self.slot(id)?;
        let mut s = slot.lock();
        if s.hidden() {
            return Err(InstanceError::NotFound(id.to_owned()));
        }
        if s.busy.is_some() || s.state != InstanceState::Running {
            return Err(conflict(&s));
        }
        let (ticket, cell) = self.fail_locked(&mut s, error.to_owned());
        drop(s);
        halt(cell);
        ticket.wait()
    }

    /// Validates a create request: id, selector (resolved now), scope and
    /// config. Returns the record to store and whether to start it.
    fn prepare(&self, request: CreateInstanceRequest) -> Result<(StoredInstance, bool), InstanceError> {
        names::validate_instance_id(&request.id).map_err(|e| InstanceError::BadRequest(e.to_string()))?;
        let resolved = self.registry.resolve(&request.strategy.identifier)?;
        let revision = self.registry.read(|s| s.revision(&resolved.hash).cloned()).ok_or_else(|| {
            ResolveError::UnknownRevision {
                hash: resolved.hash.to_string(),
                within: Some(resolved.strategy.to_string()),
            }
        })?;
        self.validate_scope(&request.scope)?;
        let config = validate_config(&revision.metadata, &Value::Object(request.strategy.config))
            .map_err(|errors| InstanceError::BadRequest(format!("invalid config: {}", errors.join("; "))))?;
        let record = StoredInstance {
            id: request.id,
            selector: request.strategy.identifier,
            strategy: resolved.strategy.to_string(),
            hash: resolved.hash,
            config,
            scope: request.scope,
            created_at: now(),
        };
        Ok((record, request.auto_start))
    }

    /// Creates an instance pinned to what its selector resolves to now.
    pub fn create(&self, request: CreateInstanceRequest) -> Result<InstanceView, InstanceError> {
        self.create_many(vec![request]).pop().expect("one result per request")
    }

    /// Creates many instances: each is validated and its id claimed on its
    /// own (per-item results, in order), those asking for it are started in
    /// parallel, and every instance created is written in ONE transaction
    /// with its final state (`stopped`, `running` or `failed`), so a crash
    /// leaves each either absent or complete. A start that fails gives
    /// [`InstanceError::StartFailed`], but the instance exists, `failed`.
    pub fn create_many(&self, requests: Vec<CreateInstanceRequest>) -> Vec<Result<InstanceView, InstanceError>> {
        let mut results: Vec<Result<InstanceView, InstanceError>> = Vec::with_capacity(requests.len());
        let mut items = Vec::new();
        let prepared: Vec<_> = requests.into_iter().map(|request| self.prepare(request)).collect();
        {
            // Claim the ids: a placeholder per id, invisible until committed.
            let mut slots = self.slots.write();
            for outcome in prepared {
                let (record, auto_start) = match outcome {
                    Ok(prepared) => prepared,
                    Err(error) => {
                        results.push(Err(error));
                        continue;
                    }
                };
                if slots.contains_key(&record.id) {
                    results.push(Err(InstanceError::Conflict(format!("instance \"{}\" already exists", record.id))));
                    continue;
                }
                let shared = self.new_shared();
                let mut slot = Slot::new(record.clone(), InstanceState::Stopped, None, Phase::Creating, shared.clone());
                slot.generation = 1;
                slot.busy = Some(Op::Create);
                let slot = Arc::new(Mutex::new(slot));
                slots.insert(record.id.clone(), slot.clone());
                let claim =
                    Claim { instances: self, slot, id: record.id.clone(), generation: 1, op: Op::Create, keep: false };
                items.push((results.len(), claim, record, shared, auto_start));
                results.push(Err(InstanceError::NotFound(String::new())));
            }
        }
        if items.is_empty() {
            return results;
        }
        let to_build: Vec<_> = items.iter().filter(|item| item.4).map(|item| (&item.2, &item.3)).collect();
        let mut built = self.build_many(&to_build).into_iter();

        // Commit each in memory (visible from here, still busy), then write
        // them all in one transaction.
        let mut writes = Vec::with_capacity(items.len());
        let mut committed = Vec::with_capacity(items.len());
        for (index, claim, record, _, auto_start) in items {
            let outcome = auto_start.then(|| built.next().expect("one build per auto-started item"));
            let Ok(mut s) = claim.lock() else {
                results[index] =
                    Err(InstanceError::Conflict(format!("instance \"{}\" changed while created", record.id)));
                continue;
            };
            s.phase = Phase::Live;
            self.usage.created(Self::pin(&record), now());
            let create = Self::audit("create", &record, None);
            let write = match outcome {
                Some(outcome) => self.apply_start(&mut s, outcome, vec![create], claim.generation),
                None => save(&s, vec![create]),
            };
            results[index] = match (&s.state, &s.last_error) {
                (InstanceState::Failed, Some(error)) => {
                    Err(InstanceError::StartFailed { id: record.id.clone(), error: error.clone() })
                }
                _ => Ok(self.render(&s)),
            };
            drop(s);
            writes.push(write);
            committed.push((index, claim));
        }
        if let Err(error) = self.committer.enqueue(writes).wait() {
            // Nothing was written: take every instance of this batch back.
            let (message, full) = match error {
                InstanceError::StorageFull(message) => (message, true),
                InstanceError::Persist(message) => (message, false),
                other => (other.to_string(), false),
            };
            for (index, claim) in committed {
                self.undo_create(claim);
                let message = message.clone();
                results[index] =
                    Err(if full { InstanceError::StorageFull(message) } else { InstanceError::Persist(message) });
            }
        }
        results
    }

    /// Builds runtimes for `items` on a few threads; one outcome per item, in order.
    fn build_many(&self, items: &[(&StoredInstance, &Arc<HostShared>)]) -> Vec<Result<JsInstance, String>> {
        if items.len() <= 1 {
            return items.iter().map(|(record, shared)| self.build_bounded(record, shared, 1)).collect();
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(items.len());
        std::thread::scope(|scope| {
            let workers: Vec<_> = items
                .chunks(items.len().div_ceil(threads))
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().map(|(record, shared)| self.build_bounded(record, shared, 1)).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|worker| worker.join().expect("build worker panicked")).collect()
        })
    }

    /// Takes back a create whose write failed: its runtime is stopped and
    /// it leaves the map and the usage index.
    fn undo_create(&self, mut claim: Claim<'_>) {
        let Ok(mut s) = claim.lock() else { return };
        let cell = self.detach(&mut s, Left::Stopped);
        drop(s);
        halt(cell);
        let mut slots = self.slots.write();
        let Ok(mut s) = claim.lock() else { return };
        self.usage.deleted(Self::pin(&s.record), now());
        s.phase = Phase::Deleted;
        slots.remove(&claim.id);
        claim.keep = true;
    }

    /// Starts a stopped or failed instance.
    pub fn start(&self, id: &str) -> Result<InstanceView, InstanceError> {
        let (claim, snap) = self.claim(id, Op::Start, |s| {
            s.phase == Phase::Live && matches!(s.state, InstanceState::Stopped | InstanceState::Failed)
        })?;
        self.bring_up(claim, snap.record, snap.shared, Vec::new())
    }

    /// Stops a running instance (or one still waiting for its restore).
    pub fn stop(&self, id: &str) -> Result<InstanceView, InstanceError> {
        let (claim, _) =
            self.claim(id, Op::Stop, |s| s.state == InstanceState::Running || s.phase == Phase::Restoring)?;
        self.take_down(&claim)?;
        let mut s = claim.lock()?;
        s.state = InstanceState::Stopped;
        s.phase = Phase::Live;
        s.last_error = None;
        let write = save(&s, vec![Self::audit("stop", &s.record, None)]);
        let view = self.render(&s);
        claim.commit(s, vec![write])?;
        Ok(view)
    }

    /// Restarts an instance on the same hash (starts it if it was stopped).
    pub fn restart(&self, id: &str) -> Result<InstanceView, InstanceError> {
        let (claim, snap) = self.claim(id, Op::Restart, |s| {
            s.phase == Phase::Restoring
                || matches!(s.state, InstanceState::Running | InstanceState::Stopped | InstanceState::Failed)
        })?;
        self.take_down(&claim)?;
        self.bring_up(claim, snap.record, snap.shared, Vec::new())
    }

    /// Deletes an instance, stopping it first if it runs.
    pub fn delete(&self, id: &str) -> Result<(), InstanceError> {
        let (mut claim, _) = self.claim(id, Op::Delete, |_| true)?;
        self.take_down(&claim)?;
        let ticket = {
            let mut slots = self.slots.write();
            let mut s = claim.lock()?;
            self.usage.deleted(Self::pin(&s.record), now());
            s.phase = Phase::Deleted;
            slots.remove(id);
            // A stale handle on the slot finds it deleted and busy forever.
            claim.keep = true;
            self.committer.enqueue(vec![InstanceWrite::Delete {
                id: id.to_owned(),
                audit: Self::audit("delete", &s.record, None),
            }])
        };
        ticket.wait()?;
        for provider in &self.providers {
            provider.forget_owner(id);
        }
        Ok(())
    }

    /// Replaces an instance's config (never its pin); a running instance
    /// restarts with it on the same hash.
    pub fn update(&self, id: &str, request: UpdateInstanceRequest) -> Result<InstanceView, InstanceError> {
        if request.id.as_deref().is_some_and(|given| given != id) {
            return Err(InstanceError::BadRequest("id cannot change".into()));
        }
        let (claim, snap) = self.claim(id, Op::Update, |_| true)?;
        let record = &snap.record;
        if request.scope.as_ref().is_some_and(|scope| *scope != record.scope) {
            return Err(InstanceError::BadRequest("scope cannot change; only config may differ".into()));
        }
        let mut config = request.config;
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
        let updated = StoredInstance { config, ..snap.record.clone() };
        let audit = Self::audit("update", &updated, None);
        if snap.state == InstanceState::Running {
            self.take_down(&claim)?;
            return self.bring_up(claim, updated, snap.shared, vec![audit]);
        }
        let mut s = claim.lock()?;
        s.record = updated;
        let write = save(&s, vec![audit]);
        let view = self.render(&s);
        claim.commit(s, vec![write])?;
        Ok(view)
    }

    /// Re-pins one instance onto `hash` (and `selector`, when given),
    /// carrying its config over; a running one restarts there. `Ok(false)`
    /// when it is already there. The write of a stopped instance is
    /// returned to wait for, so that a batch shares one commit.
    pub(super) fn repin(
        &self,
        id: &str,
        hash: RevisionHash,
        selector: Option<String>,
    ) -> Result<Repin<'_>, InstanceError> {
        let (claim, snap) = self.claim(id, Op::Repin, |_| true)?;
        let record = &snap.record;
        let selector = selector.unwrap_or_else(|| record.selector.clone());
        if record.hash == hash && selector == record.selector {
            return Ok(Repin::Unchanged);
        }
        let (metadata, current) = self.registry.read(|st| {
            (st.revision(&hash).map(|r| r.metadata.clone()), st.revision(&record.hash).map(|r| r.metadata.clone()))
        });
        let metadata = metadata.ok_or_else(|| InstanceError::Conflict(format!("revision {hash} is not loaded")))?;
        let config = super::refresh::carry_config(&record.config, current.as_deref(), &metadata);
        let config = validate_config(&metadata, &Value::Object(config)).map_err(|errors| {
            InstanceError::BadRequest(format!("config does not fit {hash}: {}", errors.join("; ")))
        })?;
        let updated = StoredInstance { hash, config, selector, ..record.clone() };
        let audit = Self::audit("repin", &updated, Some(format!("{} -> {hash}", record.hash)));
        self.take_down(&claim)?;
        let mut s = claim.lock()?;
        self.usage.repinned(record.hash, &record.selector, Self::pin(&updated), now());
        s.record = updated.clone();
        if snap.state == InstanceState::Running {
            drop(s);
            return Ok(Repin::Restart(claim, Box::new((updated, snap.shared, audit)), record.hash));
        }
        let write = save(&s, vec![audit]);
        let ticket = self.committer.enqueue(vec![write]);
        drop(s);
        Ok(Repin::Written(claim, ticket, record.hash))
    }

    /// Finishes a [`Instances::repin`]: restarts the instance, or waits for
    /// its write. Returns the hash it moved from, `None` if it did not move.
    pub(super) fn finish_repin(&self, repin: Repin<'_>) -> Result<Option<RevisionHash>, InstanceError> {
        match repin {
            Repin::Unchanged => Ok(None),
            Repin::Restart(claim, restart, previous) => {
                let (record, shared, audit) = *restart;
                self.bring_up(claim, record, shared, vec![audit]).map(|_| Some(previous))
            }
            Repin::Written(claim, ticket, previous) => {
                let durable = ticket.wait();
                drop(claim);
                durable.map(|()| Some(previous))
            }
        }
    }

    /// Stops every runtime (daemon shutdown) without changing stored states,
    /// so running instances start again at the next boot. Restores still
    /// queued are abandoned; builds in flight are interrupted.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        // Record that running revisions were seen until now.
        self.usage.touch_running(now());
        self.flush_usage();
        let slots: Vec<_> = self.slots.read().values().cloned().collect();
        for slot in slots {
            let id = {
                let s = slot.lock();
                if s.busy.is_some() {
                    s.shared.request_stop();
                    continue;
                }
                s.record.id.clone()
            };
            let Ok((claim, _)) = self.claim(&id, Op::Shutdown, |s| s.state == InstanceState::Running) else {
                continue;
            };
            if self.take_down(&claim).is_ok()
                && let Ok(mut s) = claim.lock()
            {
                s.state = InstanceState::Stopped;
            }
        }
    }
}

/// A re-pin in progress (see [`Instances::repin`]).
pub(super) enum Repin<'a> {
    /// Already on that hash and selector.
    Unchanged,
    /// Was running: to restart on the new record, with its audit line and
    /// the hash it left.
    Restart(Claim<'a>, Box<(StoredInstance, Arc<HostShared>, crate::store::AuditEntry)>, RevisionHash),
    /// Was not running: its write is queued; the hash it left.
    Written(Claim<'a>, Ticket, RevisionHash),
}

/// The write recording a slot as it is now, with `audits`.
pub(super) fn save(s: &Slot, audits: Vec<crate::store::AuditEntry>) -> InstanceWrite {
    InstanceWrite::Save {
        instance: s.record.clone(),
        state: s.stored_state(),
        last_error: s.last_error.clone().filter(|_| s.state == InstanceState::Failed),
        audits,
    }
}

/// The 409 for an operation that found `s` busy or in the wrong state.
fn conflict(s: &Slot) -> InstanceError {
    let id = &s.record.id;
    match s.busy {
        Some(op) if !matches!(s.state, InstanceState::Starting | InstanceState::Stopping) => {
            InstanceError::Conflict(format!("instance \"{id}\" is busy: {} in progress", op.as_str()))
        }
        _ => InstanceError::Conflict(format!("instance \"{id}\" is {}", s.state.as_str())),
    }
}
