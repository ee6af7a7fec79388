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
//! A worker runs one cell for at most [`BATCH`] events or [`SLICE`], then
//! puts it back at the end of the run queue, so busy instances take turns.
//!
//! A handler that calls `helpers.sleep`, or one that computes for longer
//! than [`STALL`], holds its worker. So that neither delays anyone else, the
//! pool counts such workers as unavailable and adds a temporary worker
//! whenever fewer than its base number are available and cells are waiting
//! (a sleeping worker tells the pool at once through [`SleepHook`]; a monitor
//! thread notices long calls every few milliseconds). A temporary worker
//! leaves as soon as more than the base number are available again, or after
//! a second without work.

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
/// Time a worker spends on one cell before letting others run.
pub const SLICE: Duration = Duration::from_millis(5);
/// A call running longer than this counts its worker as unavailable.
pub const STALL: Duration = Duration::from_millis(20);
/// How often the monitor looks for stalled workers.
const MONITOR_PERIOD: Duration = Duration::from_millis(5);

/// Milliseconds since the first use, never 0 (0 means "not in a call").
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// When the worker's current call started (0 = not in a call, or sleeping).
#[derive(Debug, Default)]
struct WorkerClock {
    busy_since: std::sync::atomic::AtomicU64,
}

thread_local! {
    /// The clock of the pool worker running on this thread, if any.
    static CLOCK: std::cell::RefCell<Option<Arc<WorkerClock>>> = const { std::cell::RefCell::new(None) };
}

fn clock_set(value: u64) {
    CLOCK.with(|clock| {
        if let Some(clock) = clock.borrow().as_ref() {
            clock.busy_since.store(value, Ordering::Release);
        }
    });
}

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
    /// Private events (order reports, balances) in `queue`; changed only
    /// with `queue` locked.
    private: AtomicUsize,
    /// Set when a private event found `capacity` others pending: the
    /// instance floods orders faster than it handles their reports, and the
    /// next run fails it.
    overflowed: AtomicBool,
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
            private: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
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
    /// an ExecReport or balance update), counted in `eventsDropped`. Private
    /// events are bounded too: one that finds `capacity` private events
    /// pending is not queued, and the instance is failed at its next run.
    /// Returns true when the caller must schedule the cell.
    pub fn push(&self, event: Arc<MarketEvent>) -> bool {
        {
            let mut queue = self.queue.lock();
            if event.is_private() {
                if self.private.load(Ordering::Relaxed) >= self.capacity {
                    self.overflowed.store(true, Ordering::Release);
                    return !self.scheduled.swap(true, Ordering::AcqRel);
                }
                self.private.fetch_add(1, Ordering::Relaxed);
            }
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
        self.clear_queue();
        self.js.lock().take()
    }

    /// Empties the queue.
    fn clear_queue(&self) {
        let mut queue = self.queue.lock();
        queue.clear();
        self.private.store(0, Ordering::Relaxed);
    }

    /// The next queued event.
    fn pop(&self) -> Option<Arc<MarketEvent>> {
        let mut queue = self.queue.lock();
        let event = queue.pop_front()?;
        if event.is_private() {
            self.private.fetch_sub(1, Ordering::Relaxed);
        }
        Some(event)
    }

    /// Runs up to [`BATCH`] queued events. Returns true if the cell must be
    /// scheduled again.
    fn run(&self) -> bool {
        {
            let mut js = self.js.lock();
            if self.overflowed.load(Ordering::Acquire) && js.take().is_some() {
                (self.on_fatal)(
                    self,
                    format!(
                        "more than {} order reports pending: the instance submits orders faster than it handles \
                         their reports",
                        self.capacity
                    ),
                );
            }
            let started = std::time::Instant::now();
            for _ in 0..BATCH {
                let Some(runtime) = js.as_mut() else { break };
                let Some(event) = self.pop() else { break };
                clock_set(now_ms());
                let dispatched = runtime.dispatch(&event);
                clock_set(0);
                if let Err(error) = dispatched {
                    // The runtime is unusable (limit hit) or stopping: drop it
                    // here, on the thread that used it, and report.
                    js.take();
                    if !matches!(error, HostError::Stopped) {
                        (self.on_fatal)(self, error.to_string());
                    }
                    break;
                }
                if started.elapsed() >= SLICE {
                    break;
                }
            }
            if js.is_none() {
                self.clear_queue();
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
        self.clear_queue();
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
    clocks: Mutex<Vec<Arc<WorkerClock>>>,
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
            clocks: Mutex::new(Vec::new()),
        });
        for _ in 0..pool.base {
            pool.spawn_worker(false);
        }
        let monitor = Arc::downgrade(&pool);
        let spawned = std::thread::Builder::new().name("js-pool-monitor".into()).spawn(move || {
            while let Some(pool) = monitor.upgrade() {
                if pool.available() < pool.base && !pool.receiver.is_empty() {
                    pool.spawn_worker(true);
                }
                drop(pool);
                std::thread::sleep(MONITOR_PERIOD);
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot spawn the JS pool monitor; long handlers may delay others");
        }
        pool
    }

    /// Workers neither sleeping nor stuck in a call longer than [`STALL`].
    fn available(&self) -> usize {
        let now = now_ms();
        let stall = STALL.as_millis() as u64;
        let stalled = self
            .clocks
            .lock()
            .iter()
            .filter(|clock| {
                let since = clock.busy_since.load(Ordering::Acquire);
                since != 0 && now.saturating_sub(since) > stall
            })
            .count();
        let live = self.live.load(Ordering::Acquire);
        live.saturating_sub(self.sleeping.load(Ordering::Acquire)).saturating_sub(stalled)
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
        let clock = Arc::new(WorkerClock::default());
        self.clocks.lock().push(clock.clone());
        let pool = Arc::downgrade(self);
        let receiver = self.receiver.clone();
        let thread_clock = clock.clone();
        let spawned = std::thread::Builder::new()
            .name(if temporary { "js-worker-extra".into() } else { "js-worker".into() })
            // Room for QuickJS's own stack limit plus Rust frames.
            .stack_size(4 * 1024 * 1024)
            .spawn(move || {
                CLOCK.with(|c| *c.borrow_mut() = Some(thread_clock.clone()));
                worker(&pool, receiver, temporary);
                if let Some(pool) = pool.upgrade() {
                    pool.clocks.lock().retain(|c| !Arc::ptr_eq(c, &thread_clock));
                }
            });
        if let Err(error) = spawned {
            self.live.fetch_sub(1, Ordering::AcqRel);
            self.clocks.lock().retain(|c| !Arc::ptr_eq(c, &clock));
            tracing::error!(%error, "cannot spawn a JS worker thread");
        }
    }
}

/// Whether a temporary worker should leave (and, if so, it is counted out).
fn leave_if_surplus(pool: &std::sync::Weak<Pool>) -> bool {
    let Some(pool) = pool.upgrade() else { return true };
    if pool.available() > pool.base {
        pool.live.fetch_sub(1, Ordering::AcqRel);
        return true;
    }
    false
}

fn worker(pool: &std::sync::Weak<Pool>, receiver: Receiver<Arc<Cell>>, temporary: bool) {
    loop {
        if temporary && leave_if_surplus(pool) {
            return;
        }
        let cell = if temporary {
            match receiver.recv_timeout(Duration::from_secs(1)) {
                Ok(cell) => cell,
                Err(RecvTimeoutError::Timeout) => continue,
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
        // A sleeping worker is counted in `sleeping`, not as a stalled call.
        clock_set(0);
        pool.sleeping.fetch_add(1, Ordering::AcqRel);
        if pool.available() < pool.base {
            pool.spawn_worker(true);
        }
    }

    fn after_sleep(&self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sleeping.fetch_sub(1, Ordering::AcqRel);
        }
        clock_set(now_ms());
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
