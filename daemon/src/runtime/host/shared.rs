//! State an instance shares with the threads around it: counters, logs,
//! the stop signal; and the sleep hook a worker pool lends threads through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::js::CpuBudget;
use crate::runtime::logs::{Counters, LogRing};

/// State of one instance shared between its [`JsInstance`] and the instance
/// manager: counters, recent logs and the stop signal.
///
/// Keep one per instance for the instance's whole life (across restarts):
/// its counters, logs and order sequence then carry over, and client order
/// ids stay unique. Call [`HostShared::reset_stop`] before starting the
/// instance again after a stop.
#[derive(Debug, Default)]
pub struct HostShared {
    /// The instance's counters.
    pub counters: Counters,
    /// The instance's recent log lines.
    pub logs: LogRing,
    stopping: AtomicBool,
    /// Budget of the running runtime, cancelled by a stop request.
    budget: Mutex<Option<CpuBudget>>,
    sleep_lock: Mutex<()>,
    sleep_wake: Condvar,
    /// Last order number handed out (client order ids are
    /// `<instance>-<n>`).
    order_seq: AtomicU64,
    /// Daemon-wide handler error and interrupt counters.
    pub(super) metrics: Option<crate::metrics::JsMetrics>,
}

impl HostShared {
    /// Fresh shared state with a log ring of the default size.
    pub fn new() -> Self {
        HostShared::default()
    }

    /// Fresh shared state that also counts into the daemon-wide `metrics`.
    pub fn with_metrics(metrics: Option<crate::metrics::JsMetrics>) -> Self {
        HostShared { metrics, ..HostShared::default() }
    }

    /// Fresh shared state keeping the last `log_capacity` log lines.
    pub fn with_log_capacity(log_capacity: usize) -> Self {
        HostShared { logs: LogRing::new(log_capacity), ..HostShared::default() }
    }

    /// Asks the instance to stop, from any thread: a `helpers.sleep` in
    /// progress returns at once, running JS is interrupted at its next
    /// interrupt check, `isTradingActive()` turns false, and the current and
    /// every later [`JsInstance::dispatch`] answer [`HostError::Stopped`].
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        {
            let _guard = self.sleep_lock.lock();
            self.sleep_wake.notify_all();
        }
        if let Some(budget) = self.budget.lock().as_ref() {
            budget.cancel();
        }
    }

    /// Whether a stop was requested (and not reset since).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Clears a stop request so the instance can be started again. Call it
    /// only once the stopped [`JsInstance`] has been dropped.
    pub fn reset_stop(&self) {
        let mut budget = self.budget.lock();
        *budget = None;
        self.stopping.store(false, Ordering::SeqCst);
    }

    /// Registers the budget of a starting runtime so a stop can cancel it
    /// (at once if the stop came first).
    pub(super) fn attach_budget(&self, budget: &CpuBudget) {
        let mut slot = self.budget.lock();
        if self.is_stopping() {
            budget.cancel();
        }
        *slot = Some(budget.clone());
    }

    /// Waits up to `timeout` for a stop request; true if one came.
    pub(super) fn wait_for_stop(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.sleep_lock.lock();
        loop {
            if self.is_stopping() {
                return true;
            }
            match deadline {
                Some(deadline) => {
                    if self.sleep_wake.wait_until(&mut guard, deadline).timed_out() {
                        return self.is_stopping();
                    }
                }
                None => self.sleep_wake.wait(&mut guard),
            }
        }
    }

    /// The next client order id of `instance_id`.
    pub(super) fn next_order_id(&self, instance_id: &str) -> String {
        let n = self.order_seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{instance_id}-{n}")
    }
}

/// Told when a handler blocks in `helpers.sleep`, so that a worker pool can
/// lend another thread to the other instances meanwhile.
pub trait SleepHook: Send + Sync {
    /// Called on the sleeping thread just before it blocks.
    fn before_sleep(&self);
    /// Called on the sleeping thread just after it wakes.
    fn after_sleep(&self);
}

/// A [`SleepHook`] that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSleepHook;

impl SleepHook for NoSleepHook {
    fn before_sleep(&self) {}
    fn after_sleep(&self) {}
}
