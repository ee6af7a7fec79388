//! The worker pool that runs instances' JavaScript.
//!
//! Threading model: a fixed pool of worker threads (one per core by
//! default) runs every instance. Each running instance is a [`Cell`]: its
//! runtime plus a bounded queue of events. An event for an idle cell
//! schedules the cell once (the `scheduled` flag); a worker then owns the
//! cell's runtime, drains up to [`BATCH`] events and re-schedules it if more
//! arrived, so one instance's calls are strictly serialised and never run on
//! two threads at once, while thousands of instances share a few threads.
//!
//! A handler that calls `helpers.sleep` blocks its worker. So that it never
//! delays anyone else, the worker tells the pool first ([`SleepHook`]) and the
//! pool adds a temporary worker whenever fewer than its base number are
//! awake; temporary workers leave after a second without work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use strata_shared::metadata::EventKind;

use crate::runtime::host::{HostError, HostShared, JsInstance, SleepHook};
use crate::venue::MarketEvent;

/// Events a worker handles for one cell before letting others run.
pub const BATCH: usize = 64;

/// What a cell reports when its runtime died (CPU budget, memory, a bug):
/// the message becomes the instance's `lastError`.
pub type FatalHandler = Arc<dyn Fn(&Cell, String) + Send + Sync>;

/// One running instance: its runtime and its inbound queue.
pub struct Cell {
    /// Instance id.
    pub id: Arc<str>,
    /// Start generation, so late reports from an old run are ignored.
    pub generation: u64,
    /// Counters and logs, shared with the manager.
    pub shared: Arc<HostShared>,
    kinds: Vec<EventKind>,
    capacity: usize,
    queue: Mutex<VecDeque<Arc<MarketEvent>>>,
    scheduled: AtomicBool,
    js: Mutex<Option<JsInstance>>,
    on_fatal: FatalHandler,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell").field("id", &self.id).field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl Cell {
    /// A cell around a started runtime.
    pub fn new(
        id: Arc<str>,
        generation: u64,
        js: JsInstance,
        shared: Arc<HostShared>,
        kinds: Vec<EventKind>,
        capacity: usize,
        on_fatal: FatalHandler,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            generation,
            shared,
            kinds,
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            scheduled: AtomicBool::new(false),
            js: Mutex::new(Some(js)),
            on_fatal,
        })
    }

    /// Whether the strategy handles this kind of event at all.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Queues an event. A full queue loses its oldest market event (never
    /// an ExecReport or balance update), counted in `eventsDropped`.
    /// Returns true when the caller must schedule the cell.
    pub fn push(&self, event: Arc<MarketEvent>) -> bool {
        {
            let mut queue = self.queue.lock();
            if queue.len() >= self.capacity {
                let victim = if event.is_private() {
                    queue.iter().position(|e| !e.is_private())
                } else {
                    Some(queue.iter().position(|e| !e.is_private()).unwrap_or(0))
                };
                match victim {
                    Some(index) if !queue[index].is_private() => {
                        queue.remove(index);
                        self.shared.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    // Only private events queued: they are never dropped, and
                    // neither is the new one if it is private.
                    _ if !event.is_private() => {
                        self.shared.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    _ => {}
                }
            }
            queue.push_back(event);
        }
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// Takes the runtime out (to stop it), waiting for a running handler to
    /// return. Call `shared.request_stop()` first so that it returns at once.
    pub fn take_runtime(&self) -> Option<JsInstance> {
        self.queue.lock().clear();
        self.js.lock().take()
    }

    /// Runs up to [`BATCH`] queued events. Returns true if the cell must be
    /// scheduled again.
    fn run(&self) -> bool {
        {
            let mut js = self.js.lock();
            for _ in 0..BATCH {
                let Some(runtime) = js.as_mut() else { break };
                let Some(event) = self.queue.lock().pop_front() else { break };
                if let Err(error) = runtime.dispatch(&event) {
                    // The runtime is unusable (limit hit) or stopping: drop it
                    // here, on the thread that used it, and report.
                    js.take();
                    if !matches!(error, HostError::Stopped) {
                        (self.on_fatal)(self, error.to_string());
                    }
                    break;
                }
            }
            if js.is_none() {
                self.queue.lock().clear();
            }
        }
        self.scheduled.store(false, Ordering::Release);
        !self.queue.lock().is_empty() && !self.scheduled.swap(true, Ordering::AcqRel)
    }
}

impl Cell {
    /// After a panic inside [`Cell::run`]: the runtime may be mid-call, so it
    /// is leaked rather than dropped (dropping it could abort the process),
    /// and the instance is reported failed. Nothing else is affected.
    fn fail_after_panic(&self, message: String) {
        if let Some(js) = self.js.try_lock().and_then(|mut js| js.take()) {
            std::mem::forget(js);
        }
        self.queue.lock().clear();
        self.scheduled.store(false, Ordering::Release);
        (self.on_fatal)(self, format!("internal error while handling an event: {message}"));
    }
}

/// The pool. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pool {
    sender: Sender<Arc<Cell>>,
    receiver: Receiver<Arc<Cell>>,
    base: usize,
    live: AtomicUsize,
    sleeping: AtomicUsize,
}

impl Pool {
    /// Starts `workers` threads.
    pub fn new(workers: usize) -> Arc<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let pool = Arc::new(Self {
            sender,
            receiver,
            base: workers.max(1),
            live: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
        });
        for _ in 0..pool.base {
            pool.spawn_worker(false);
        }
        pool
    }

    /// Schedules a cell (after [`Cell::push`] returned true).
    pub fn schedule(&self, cell: Arc<Cell>) {
        let _ = self.sender.send(cell);
    }

    /// Worker threads alive now (base plus temporary ones).
    pub fn workers(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn spawn_worker(self: &Arc<Self>, temporary: bool) {
        self.live.fetch_add(1, Ordering::AcqRel);
        let pool = Arc::downgrade(self);
        let receiver = self.receiver.clone();
        let spawned = std::thread::Builder::new()
            .name(if temporary { "js-worker-extra".into() } else { "js-worker".into() })
            // Room for QuickJS's own stack limit plus Rust frames.
            .stack_size(4 * 1024 * 1024)
            .spawn(move || worker(pool, receiver, temporary));
        if let Err(error) = spawned {
            self.live.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(%error, "cannot spawn a JS worker thread");
        }
    }
}

fn worker(pool: std::sync::Weak<Pool>, receiver: Receiver<Arc<Cell>>, temporary: bool) {
    loop {
        let cell = if temporary {
            match receiver.recv_timeout(Duration::from_secs(1)) {
                Ok(cell) => cell,
                Err(RecvTimeoutError::Timeout) => {
                    let Some(pool) = pool.upgrade() else { return };
                    let awake = pool.live.load(Ordering::Acquire) - pool.sleeping.load(Ordering::Acquire);
                    if awake > pool.base {
                        pool.live.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match receiver.recv() {
                Ok(cell) => cell,
                Err(_) => return,
            }
        };
        // A panic (a bug, in our code or a dependency) fails one instance,
        // never the worker or the daemon.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cell.run())) {
            Ok(true) => match pool.upgrade() {
                Some(pool) => pool.schedule(cell),
                None => return,
            },
            Ok(false) => {}
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                tracing::error!(instance = %cell.id, %message, "instance panicked; marking it failed");
                cell.fail_after_panic(message);
            }
        }
    }
}

impl SleepHook for PoolSleepHook {
    fn before_sleep(&self) {
        let Some(pool) = self.0.upgrade() else { return };
        let sleeping = pool.sleeping.fetch_add(1, Ordering::AcqRel) + 1;
        if pool.live.load(Ordering::Acquire).saturating_sub(sleeping) < pool.base {
            pool.spawn_worker(true);
        }
    }

    fn after_sleep(&self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sleeping.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The [`SleepHook`] given to every runtime of a pool.
#[derive(Debug, Clone)]
pub struct PoolSleepHook(std::sync::Weak<Pool>);

impl PoolSleepHook {
    /// The hook for `pool`.
    pub fn new(pool: &Arc<Pool>) -> Self {
        Self(Arc::downgrade(pool))
    }
}
