//! How calls into JS fail: the errors that end an instance, the faults of
//! one call, and how thrown values are counted and logged.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rquickjs::Ctx;
use strata_shared::metadata::Diagnostic;

use crate::js::{self, LogLevel};
use crate::runtime::logs::Counters;

use super::JsInstance;
use super::marshal::Handler;

/// Why starting an instance or delivering an event failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The module could not be evaluated, or `create(env)` threw or did not
    /// return an object (the message says where, with the line if known).
    #[error("{0}")]
    Start(String),
    /// JS ran past the CPU budget; the instance is dead.
    #[error("{0}")]
    CpuBudget(String),
    /// The runtime hit its memory limit; the instance is dead.
    #[error("{0}")]
    Memory(String),
    /// The strategy kept submitting orders over `max_orders_per_sec`; the
    /// instance is dead.
    #[error("{0}")]
    OrderRate(String),
    /// A stop was requested ([`HostShared::request_stop`]).
    #[error("the instance is stopping")]
    Stopped,
}

/// How a call into JS failed.
pub(super) enum Fault {
    Stopped,
    CpuBudget,
    Memory(Diagnostic),
    /// The order-rate cap saw a storm (orders refused).
    OrderStorm(u32),
    Thrown(Diagnostic),
}

impl JsInstance {
    /// Takes the pending exception of `error` and sorts it.
    pub(super) fn sort_error<'js>(&self, ctx: &Ctx<'js>, error: rquickjs::Error) -> Fault {
        self.fault_of(js::error_diagnostic(ctx, error, &self.budget, &self.source))
    }

    /// [`Fault::OrderStorm`] once the order-rate cap saw a storm.
    pub(super) fn storm_fault(&self) -> Option<Fault> {
        match self.state.storm.load(Ordering::Acquire) {
            0 => None,
            refused => Some(Fault::OrderStorm(refused)),
        }
    }

    pub(super) fn fault_of(&self, diagnostic: Diagnostic) -> Fault {
        if let Some(storm) = self.storm_fault() {
            storm
        } else if self.state.shared.is_stopping() || self.budget.is_cancelled() {
            Fault::Stopped
        } else if self.budget.fired() {
            Fault::CpuBudget
        } else if js::is_memory_limit(&diagnostic) {
            Fault::Memory(diagnostic)
        } else {
            Fault::Thrown(diagnostic)
        }
    }

    /// The error for a fatal fault of `what` (a handler, `create(env)`…).
    pub(super) fn fatal(&self, fault: Fault, what: &str) -> HostError {
        if let Some(metrics) = &self.state.shared.metrics {
            match fault {
                Fault::CpuBudget => metrics.interrupts.with_label_values(&["cpu"]).inc(),
                Fault::Memory(_) => metrics.interrupts.with_label_values(&["memory"]).inc(),
                Fault::OrderStorm(_) => metrics.interrupts.with_label_values(&["orders"]).inc(),
                Fault::Stopped | Fault::Thrown(_) => {}
            }
        }
        match fault {
            Fault::Stopped => HostError::Stopped,
            Fault::CpuBudget => HostError::CpuBudget(format!(
                "{what} exceeded the CPU budget of {} ms",
                self.budget.budget().as_millis()
            )),
            Fault::Memory(diagnostic) => HostError::Memory(match diagnostic.line {
                Some(line) => {
                    format!("{what} hit the memory limit of {} at line {line}", format_bytes(self.memory_limit))
                }
                None => format!("{what} hit the memory limit of {}", format_bytes(self.memory_limit)),
            }),
            Fault::OrderStorm(refused) => HostError::OrderRate(format!(
                "{what} kept submitting orders over the cap of {} a second (max_orders_per_sec): \
                 {refused} refused, order storm",
                self.state.orders.lock().rate()
            )),
            Fault::Thrown(diagnostic) => HostError::Start(format!("{what} failed{}", describe(&diagnostic))),
        }
    }

    /// Logs an error that ends the instance (instance log and daemon log);
    /// a stop is not one.
    pub(super) fn report(&self, error: &HostError) {
        if *error == HostError::Stopped {
            return;
        }
        self.state.shared.logs.push(LogLevel::Error, error.to_string());
        tracing::warn!(
            target: "strata::instance",
            instance = %self.state.instance_id,
            strategy = %self.state.strategy,
            hash = %self.state.hash,
            "{error}"
        );
    }

    /// Counts and logs a handler that threw.
    pub(super) fn handler_error(&self, handler: Handler, diagnostic: &Diagnostic) {
        self.thrown(&format!("{} threw", handler.name()), Some(handler.name()), diagnostic);
    }

    /// Counts and logs a promise job that threw (not tied to one handler).
    pub(super) fn handler_error_in_job(&self, diagnostic: &Diagnostic) {
        self.thrown("a promise job threw", None, diagnostic);
    }

    /// Counts a thrown error in `handlerErrors` and the daemon metric, logs
    /// it to the instance log, and to the daemon log at most once a second
    /// per instance (with the number suppressed meanwhile).
    fn thrown(&self, what: &str, handler: Option<&str>, diagnostic: &Diagnostic) {
        let state = &self.state;
        Counters::bump(&state.shared.counters.handler_errors);
        if let Some(metrics) = &state.shared.metrics {
            metrics.handler_errors.inc();
        }
        let message = format!("{what}{} (strategy {}, revision {})", describe(diagnostic), state.strategy, state.hash);
        state.shared.logs.push(LogLevel::Error, message.clone());
        if let Some(suppressed) = self.warnings.borrow_mut().admit() {
            tracing::warn!(
                target: "strata::instance",
                instance = %state.instance_id,
                strategy = %state.strategy,
                hash = %state.hash,
                handler,
                line = diagnostic.line,
                suppressed,
                "{message}"
            );
        }
    }
}

/// `: message (line L, column C)` for a diagnostic, for log lines and
/// errors.
pub(super) fn describe(diagnostic: &Diagnostic) -> String {
    match (diagnostic.line, diagnostic.column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}: {}", diagnostic.message),
        (Some(line), None) => format!(" at line {line}: {}", diagnostic.message),
        _ => format!(": {}", diagnostic.message),
    }
}

pub(super) fn format_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Limits handler-error warnings in the daemon log to one per second per
/// instance (the instance log gets every one).
#[derive(Debug, Default)]
pub(super) struct WarnLimiter {
    pub(super) last: Option<Instant>,
    pub(super) suppressed: u64,
}

impl WarnLimiter {
    /// `Some(number of warnings suppressed since the last one)` when a
    /// warning may be written now.
    pub(super) fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
