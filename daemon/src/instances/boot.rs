//! Boot: loading every stored instance, then restoring the running ones in
//! the background; and the start watchdog that bounds every runtime build.
//!
//! [`Instances::restore`] only reads the database and fills the instance
//! map, so the daemon is ready (and every instance route answers) as soon as
//! it returns. Instances stored `running` show as `starting` until a
//! restore worker has built their runtime; meanwhile they can be read,
//! stopped, updated, re-pinned or deleted (a restore finding them changed
//! skips them). Each build runs under the CPU budget and the start deadline
//! below; an instance that fails to restore is `failed`, persisted, and not
//! retried at the next boot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use strata_shared::api::InstanceState;

use super::lifecycle::{Op, Phase};
use super::{InstanceError, Instances, Slot, now};
use crate::runtime::host::HostShared;
use crate::store::{InstanceStore, StoredState};

/// How long after its deadline a build that ignores the stop request is
/// left before its instance is failed without it.
const GRACE: Duration = Duration::from_secs(1);

/// Ids still to restore, shared by the restore workers.
type Queue = Arc<Mutex<VecDeque<String>>>;

impl Instances {
    /// Restores the usage index's timestamps and history, then loads every
    /// stored instance on exactly its pinned hash. Those stored `running` are
    /// started again by background workers (in id order), so this returns
    /// as soon as the map is filled. Returns how many instances there are.
    pub fn restore(&self) -> Result<usize, InstanceError> {
        self.usage.restore(self.store.load_usage()?);
        let stored = self.store.load_instances()?;
        let count = stored.len();
        let mut queue = VecDeque::new();
        {
            let mut slots = self.slots.write();
            for (record, state, last_error) in stored {
                let (state, phase) = match state {
                    StoredState::Running => {
                        queue.push_back(record.id.clone());
                        (InstanceState::Starting, Phase::Restoring)
                    }
                    StoredState::Failed => (InstanceState::Failed, Phase::Live),
                    StoredState::Stopped => (InstanceState::Stopped, Phase::Live),
                };
                self.usage.created(Self::pin(&record), now());
                let shared = self.new_shared();
                // Cut when first recorded (a mark fits on top); a longer one
                // was stored by an older daemon.
                let last_error = last_error.map(|e| {
                    let max = self.options.log_limits.line_max_bytes + crate::runtime::logs::MAX_MARK_BYTES;
                    crate::runtime::logs::truncate_message(e, max)
                });
                let id = record.id.clone();
                slots.insert(id, Arc::new(Mutex::new(Slot::new(record, state, last_error, phase, shared))));
            }
        }
        if !queue.is_empty() {
            let workers = self.options.workers.clamp(1, queue.len());
            let queue: Queue = Arc::new(Mutex::new(queue));
            for _ in 0..workers {
                self.spawn_restorer(&queue);
            }
        }
        Ok(count)
    }

    /// Starts one restore worker on `queue`.
    fn spawn_restorer(&self, queue: &Queue) {
        let (me, queue) = (self.me.clone(), queue.clone());
        let spawned = std::thread::Builder::new().name("restore".into()).spawn(move || {
            loop {
                let Some(id) = queue.lock().pop_front() else { return };
                let Some(me) = me.upgrade() else { return };
                if me.closing.load(Ordering::Acquire) {
                    return;
                }
                me.restore_one(&id, &queue);
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not spawn a restore worker");
        }
    }

    /// Starts one instance stored running, unless something changed it
    /// since boot (then it is left as it is now).
    fn restore_one(&self, id: &str, queue: &Queue) {
        let Ok((claim, snap)) = self.claim(id, Op::Restore, |s| s.phase == Phase::Restoring) else { return };
        let hash = snap.record.hash;
        if self.registry.read(|st| st.revision(&hash).is_none()) {
            // Most likely a broken registry entry: show the instance as
            // failed but keep it stored as running, so that it starts
            // again at the next boot once the registry is fixed.
            let error = format!("revision {hash} is not loaded (see /strategies/registry errors); not started");
            tracing::warn!(instance = %id, %error, "could not restart instance at boot");
            if let Ok(mut s) = claim.lock() {
                s.state = InstanceState::Failed;
                s.last_error = Some(error);
                s.phase = Phase::Live;
            }
            return;
        }
        Watchdog::restoring(queue);
        if let Err(error) = self.bring_up(claim, snap.record, snap.shared, Vec::new()) {
            tracing::warn!(instance = %id, %error, "could not restart instance at boot");
        }
    }

    /// How long building a runtime may take before the watchdog stops it:
    /// module evaluation, `create(env)` and the start's promise jobs each
    /// under the CPU budget, one capped sleep, and a second to spare.
    pub(super) fn start_deadline(&self) -> Duration {
        self.options.js_limits.cpu_budget * 3 + self.options.sleep_cap + Duration::from_secs(1)
    }

    /// Fails an instance whose build ignored the stop request past its
    /// deadline and grace: the build's claim is superseded (its result will
    /// be thrown away if it ever comes back) and `failed` is persisted, so
    /// the instance can be deleted or restarted and is not retried at boot.
    fn abandon_build(&self, id: &str, generation: u64, error: String) {
        let Ok(slot) = self.slot(id) else { return };
        let mut s = slot.lock();
        if s.generation != generation || s.busy.is_none() || s.hidden() {
            return;
        }
        s.busy = None;
        s.state = InstanceState::Failed;
        let error = self.bounded_error(error);
        s.last_error = Some(error.clone());
        s.phase = Phase::Live;
        s.generation += 1;
        tracing::error!(instance = %id, %error, "runtime build abandoned; its thread may still be running");
        let write = super::lifecycle::save(&s, vec![Self::audit("fail", &s.record, Some(error))]);
        let ticket = self.committer.enqueue(vec![write]);
        drop(s);
        if let Err(error) = ticket.wait() {
            tracing::error!(instance = %id, %error, "could not persist a failure");
        }
    }
}

/// One build in flight.
struct Watch {
    key: u64,
    id: String,
    generation: u64,
    deadline: Instant,
    /// The deadline's length, for the message.
    within: Duration,
    shared: Arc<HostShared>,
    /// Set once the deadline passed and a stop was requested.
    expired: bool,
    /// Set once the instance was failed without the build.
    abandoned: bool,
    /// The restore queue its thread was serving, to hand to a new worker.
    queue: Option<Queue>,
}

/// Bounds every runtime build (start, restart, update, re-pin, create with
/// `autoStart`, restore): past [`Instances::start_deadline`] it requests a
/// stop, which cancels the CPU budget and wakes a sleep, so the build
/// returns and fails with a message naming the deadline. A build that still
/// has not returned [`GRACE`] later is abandoned: its instance is failed
/// without it, and if it was a restore, another worker takes over the queue.
#[derive(Default)]
pub(super) struct Watchdog {
    watches: Mutex<Vec<Watch>>,
    wake: Condvar,
    next: AtomicU64,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").field("in_flight", &self.watches.lock().len()).finish()
    }
}

thread_local! {
    /// The restore queue the current thread serves, if it is a restore worker.
    static RESTORE_QUEUE: std::cell::RefCell<Option<Queue>> = const { std::cell::RefCell::new(None) };
}

impl Watchdog {
    /// Starts the watchdog thread; it ends once `instances` is dropped.
    pub(super) fn spawn(instances: &Arc<Instances>) {
        let (dog, me) = (instances.watchdog.clone(), Arc::downgrade(instances));
        let spawned = std::thread::Builder::new().name("start-watchdog".into()).spawn(move || dog.run(&me));
        if let Err(error) = spawned {
            tracing::error!(%error, "could not spawn the start watchdog");
        }
    }

    /// Notes that the next build on this thread restores from `queue`.
    fn restoring(queue: &Queue) {
        RESTORE_QUEUE.with(|q| *q.borrow_mut() = Some(queue.clone()));
    }

    /// Registers a build; returns its key for [`Watchdog::unwatch`].
    pub(super) fn watch(&self, id: &str, generation: u64, shared: &Arc<HostShared>, within: Duration) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let queue = RESTORE_QUEUE.with(|q| q.borrow_mut().take());
        self.watches.lock().push(Watch {
            key,
            id: id.to_owned(),
            generation,
            deadline: Instant::now() + within,
            within,
            shared: shared.clone(),
            expired: false,
            abandoned: false,
            queue,
        });
        self.wake.notify_one();
        key
    }

    /// Unregisters a build; `Some(error)` if its deadline passed.
    pub(super) fn unwatch(&self, key: u64) -> Option<String> {
        let mut watches = self.watches.lock();
        let index = watches.iter().position(|w| w.key == key)?;
        let watch = watches.swap_remove(index);
        watch.expired.then(|| format!("start did not finish within {} ms", watch.within.as_millis()))
    }

    fn run(&self, me: &Weak<Instances>) {
        loop {
            let mut expired = Vec::new();
            let mut abandoned = Vec::new();
            {
                let mut watches = self.watches.lock();
                let now = Instant::now();
                for watch in watches.iter_mut() {
                    if !watch.expired && now >= watch.deadline {
                        watch.expired = true;
                        expired.push(watch.shared.clone());
                    }
                    if !watch.abandoned && now >= watch.deadline + GRACE {
                        watch.abandoned = true;
                        abandoned.push((watch.id.clone(), watch.generation, watch.queue.take()));
                    }
                }
                if expired.is_empty() && abandoned.is_empty() {
                    let next = watches
                        .iter()
                        .filter(|w| !w.abandoned)
                        .map(|w| if w.expired { w.deadline + GRACE } else { w.deadline })
                        .min();
                    // Wake at least every second to notice the manager is gone.
                    let until = next.unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
                    self.wake.wait_until(&mut watches, until);
                    if me.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            }
            let Some(instances) = me.upgrade() else { return };
            for shared in expired {
                shared.request_stop();
            }
            for (id, generation, queue) in abandoned {
                let within = instances.start_deadline();
                instances.abandon_build(
                    &id,
                    generation,
                    format!("start did not finish within {} ms and did not stop when asked", within.as_millis()),
                );
                if let Some(queue) = queue {
                    instances.spawn_restorer(&queue);
                }
            }
        }
    }
}
