//! One instance's JS world: its QuickJS runtime, the strategy module, the
//! `env` it was created with and the handler object (SPEC §1.2, §2).
//!
//! [`JsInstance::start`] evaluates the module and calls `create(env)`;
//! [`JsInstance::dispatch`] hands one [`MarketEvent`] to the matching
//! handler. A [`JsInstance`] is `Send` but not shared: its owner (a worker)
//! calls it from one thread at a time, which serialises the instance's
//! handler calls. Everything other threads need — counters, recent logs and
//! the stop signal — lives in the [`HostShared`] given to `start`.
//!
//! JS values the host keeps between calls (the handler object, the handler
//! functions, interned property names and strings) are stored in the
//! runtime's user data, so they are freed with the runtime and the
//! `JsInstance` itself holds no JS handle.
//!
//! Sandboxing: every call into JS (module evaluation, `create`, each handler
//! call together with the promise jobs it queued) runs under the runtime's
//! [`CpuBudget`]; `helpers.sleep` pauses the budget while it waits. Hitting
//! the budget or the memory limit kills the instance
//! ([`HostError::CpuBudget`], [`HostError::Memory`]); an exception thrown by
//! a handler is counted and logged and the instance keeps running.

mod env;
mod fault;
mod marshal;
mod shared;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rquickjs::function::{Args, This};
use rquickjs::{Atom, Coerced, Context, Ctx, Exception, Object, Persistent, Promise, Runtime, Value};
use strata_shared::RevisionHash;
use strata_shared::metadata::{DRY_RUN_FIELD, EventKind, ModuleMetadata};

use crate::js::{self, CpuBudget, JsLimits, LogLevel};
use crate::runtime::logs::Counters;
use crate::runtime::orders::OrderRate;
use crate::venue::{MarketEvent, OrderState, OrderType, Payload, Provider, Side};

use env::{HostState, build_env};
use fault::{Fault, WarnLimiter, describe};
use marshal::*;

pub use fault::HostError;
pub use shared::{HostShared, NoSleepHook, SleepHook};

/// Default cap of one `helpers.sleep` call.
pub const DEFAULT_SLEEP_CAP: Duration = Duration::from_secs(5);

/// One provider in an instance's scope and the symbols it follows there.
pub type ScopeEntry = (Arc<dyn Provider>, Vec<Arc<str>>);

/// What an instance runs and with what (everything [`JsInstance::start`]
/// needs besides the source).
#[derive(Clone)]
pub struct HostSpec {
    /// Instance id; owner of its orders and prefix of their client ids.
    pub instance_id: Arc<str>,
    /// Strategy name.
    pub strategy: Arc<str>,
    /// The pinned revision.
    pub hash: RevisionHash,
    /// The revision's metadata (events, config schema).
    pub metadata: Arc<ModuleMetadata>,
    /// The instance config, already validated
    /// ([`super::config::validate_config`]), so with `dry_run`.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Providers in scope and their symbols, in scope order. The first
    /// provider is the instance's home provider; an empty symbol list means
    /// every symbol of the provider.
    pub scope: Vec<ScopeEntry>,
    /// Memory, stack and CPU limits of the runtime.
    pub limits: JsLimits,
    /// Longest a single `helpers.sleep` may wait ([`DEFAULT_SLEEP_CAP`]).
    pub sleep_cap: Duration,
    /// Orders a second before orders are throttled, then the instance
    /// failed ([`super::orders`]).
    pub max_orders_per_sec: u32,
}

/// A running strategy instance: its JS runtime and handler object.
///
/// `Send`, not `Sync`: call it from one thread at a time. After a
/// [`HostError::CpuBudget`] or [`HostError::Memory`] it only repeats that
/// error; drop it.
pub struct JsInstance {
    // Field order is drop order: the context goes before the runtime.
    context: Context,
    runtime: Runtime,
    budget: CpuBudget,
    /// The runtime's memory limit, for error messages.
    memory_limit: usize,
    state: Arc<HostState>,
    /// Module source, for error positions.
    source: Box<str>,
    /// Bit `kind_index(k)` set when the strategy subscribed to `k`.
    subscribed: u16,
    /// Bit `h as usize` set when the handler object has handler `h`.
    handlers: u16,
    /// Deliver market events of providers other than the first in scope.
    wants_cross_provider: bool,
    /// Slot indexes of the scope's provider names and symbols.
    scope_slots: Vec<ScopeSlots>,
    /// Set once the instance hit a fatal limit.
    dead: Option<HostError>,
    /// Rate limit of handler-error warnings in the daemon log (handlers and
    /// promise jobs alike).
    warnings: std::cell::RefCell<WarnLimiter>,
}

/// Slot indexes of one scoped provider's name and symbols.
struct ScopeSlots {
    name: usize,
    symbols: Vec<usize>,
}

/// Where an event comes from, as indexes into the scope.
#[derive(Debug, Clone, Copy)]
struct Route {
    provider: Option<usize>,
    symbol: Option<usize>,
}

impl JsInstance {
    /// Starts an instance: creates its runtime with `spec.limits`, evaluates
    /// `source` (its `console` writes to `shared.logs`), calls
    /// `create(env)` under the CPU budget and keeps the handler object it
    /// returns, then runs the promise jobs that queued.
    ///
    /// Errors: [`HostError::Start`] when the module throws or does not
    /// export `create`, or `create` throws or returns a non-object;
    /// [`HostError::CpuBudget`] / [`HostError::Memory`] when a limit was hit;
    /// [`HostError::Stopped`] when a stop was requested meanwhile.
    pub fn start(
        spec: HostSpec,
        source: &str,
        shared: Arc<HostShared>,
        sleep_hook: Arc<dyn SleepHook>,
    ) -> Result<Self, HostError> {
        if shared.is_stopping() {
            return Err(HostError::Stopped);
        }
        let (runtime, context, budget) = js::new_runtime(&spec.limits)
            .map_err(|err| HostError::Start(format!("could not create a JS runtime: {err}")))?;
        shared.attach_budget(&budget);

        let scope: Vec<ScopeEntry> = spec
            .scope
            .iter()
            .map(|(provider, symbols)| {
                let symbols = if symbols.is_empty() { provider.symbols().to_vec() } else { symbols.clone() };
                (Arc::clone(provider), symbols)
            })
            .collect();
        let dry_run = spec.config.get(DRY_RUN_FIELD).and_then(serde_json::Value::as_bool).unwrap_or(true);
        let current = scope.first().and_then(|(_, symbols)| symbols.first()).map(|symbol| (Some(0), symbol.clone()));
        let state = Arc::new(HostState {
            instance_id: spec.instance_id.clone(),
            strategy: spec.strategy.clone(),
            hash: spec.hash.to_string(),
            shared,
            scope,
            dry_run,
            sleep_cap: spec.sleep_cap,
            sleep_hook,
            budget: budget.clone(),
            current: Mutex::new(current),
            orders: Mutex::new(OrderRate::new(spec.max_orders_per_sec, Instant::now())),
            storm: AtomicU32::new(0),
        });

        let mut subscribed = 0u16;
        for kind in &spec.metadata.events {
            subscribed |= 1 << kind_index(*kind);
        }
        let mut instance = JsInstance {
            context,
            runtime,
            budget,
            memory_limit: spec.limits.memory_bytes,
            state,
            source: source.into(),
            subscribed,
            handlers: 0,
            wants_cross_provider: false,
            scope_slots: Vec::new(),
            dead: None,
            warnings: std::cell::RefCell::default(),
        };
        let started = instance.context.with(|ctx| instance.set_up(&ctx, &spec)).and_then(|setup| {
            instance.handlers = setup.handlers;
            instance.wants_cross_provider = setup.wants_cross_provider;
            instance.scope_slots = setup.scope_slots;
            instance.budget.arm();
            let jobs = instance.run_jobs(None).and_then(|()| instance.storm_fault().map_or(Ok(()), Err));
            instance.budget.disarm();
            match jobs {
                Ok(()) => Ok(()),
                Err(Fault::Thrown(diagnostic)) => {
                    Err(HostError::Start(format!("a promise job queued at start threw{}", describe(&diagnostic))))
                }
                Err(fault) => Err(instance.fatal(fault, "start")),
            }
        });
        match started {
            Ok(()) => Ok(instance),
            Err(error) => {
                instance.report(&error);
                Err(error)
            }
        }
    }

    /// Evaluates the module, builds `env`, calls `create(env)` and stores
    /// what dispatching needs in the runtime.
    fn set_up<'js>(&self, ctx: &Ctx<'js>, spec: &HostSpec) -> Result<Setup, HostError> {
        let state = Arc::clone(&self.state);
        let console_state = Arc::clone(&self.state);
        let exports = js::evaluate_module(ctx, &self.source, &self.budget, move |level, line| {
            tracing::debug!(target: "strata::instance", instance = %console_state.instance_id, level = level.method(), "{line}");
            console_state.shared.logs.push(level, line);
        })
        .map_err(|diagnostic| match self.fault_of(diagnostic) {
            Fault::Thrown(diagnostic) => {
                HostError::Start(format!("module evaluation failed{}", describe(&diagnostic)))
            }
            fault => self.fatal(fault, "module evaluation"),
        })?;

        let guarded = |what: &str, error: rquickjs::Error| match self.sort_error(ctx, error) {
            Fault::Thrown(diagnostic) => HostError::Start(format!("{what}{}", describe(&diagnostic))),
            fault => self.fatal(fault, "create(env)"),
        };

        // Armed from here on: reading `create` may run a getter, and
        // formatting what `create` threw runs the error's getters.
        let _armed = self.budget.armed();
        let create: Value<'js> = exports.get("create").map_err(|err| guarded("reading create threw", err))?;
        let Some(create) = create.into_function() else {
            return Err(HostError::Start("module.exports.create is not a function".into()));
        };
        let env = build_env(ctx, &state, spec).map_err(|err| guarded("building env failed", err))?;

        let created = create.call::<_, Value<'js>>((This(exports), env));
        let set_up = created.and_then(|handler| read_handler_object(ctx, &self.state, spec, handler));
        match set_up {
            Ok(Ok(setup)) => Ok(setup),
            Ok(Err(message)) => Err(HostError::Start(message)),
            Err(err) => Err(guarded("create(env) threw", err)),
        }
    }

    /// Delivers one event to the strategy.
    ///
    /// Not delivered (and not counted): events of a kind the strategy did
    /// not subscribe to, market events of a provider or symbol outside the
    /// scope, and market events of any provider but the first in scope
    /// unless the handler object's `wantsCrossProviderEvents` is truthy.
    /// The instance's own events (ExecReports, balances) are never filtered
    /// by provider. An ExecReport in state `filled` counts in
    /// `ordersFilled` even when not delivered.
    ///
    /// A delivered event counts in `eventsDelivered` and sets `lastEventAt`;
    /// the matching handler (if the handler object has it) is called with
    /// the handler object as `this`, then the promise jobs it queued run. A
    /// handler that throws, or returns a promise that rejects, counts in
    /// `handlerErrors` and is logged; that is still `Ok`.
    ///
    /// Errors: [`HostError::CpuBudget`] / [`HostError::Memory`] when the call
    /// hit a limit (the instance is dead from then on), and
    /// [`HostError::Stopped`] when a stop was requested before or during the
    /// call.
    pub fn dispatch(&mut self, event: &MarketEvent) -> Result<(), HostError> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        let shared = &self.state.shared;
        if shared.is_stopping() {
            return Err(HostError::Stopped);
        }
        if let Payload::ExecReport(report) = &event.payload
            && event.kind == EventKind::ExecReport
            && report.state == OrderState::Filled
        {
            Counters::bump(&shared.counters.orders_filled);
        }
        if self.subscribed & (1 << kind_index(event.kind)) == 0 {
            return Ok(());
        }
        let Some(route) = self.route(event) else {
            return Ok(());
        };
        Counters::bump(&shared.counters.events_delivered);
        shared.counters.last_event_at.store(now_millis(), Ordering::Relaxed);
        *self.state.current.lock() = Some((route.provider, event.symbol.clone()));

        let Some(handler) = Handler::of(event).filter(|handler| self.handlers & (1 << *handler as usize) != 0) else {
            return Ok(());
        };

        self.budget.arm();
        let called = self.context.with(|ctx| match self.call(&ctx, handler, event, route) {
            Ok(returned) => Ok(returned.into_promise().map(|promise| Persistent::save(&ctx, promise))),
            Err(err) => Err(self.sort_error(&ctx, err)),
        });
        let outcome = match called {
            Ok(promise) => self.run_jobs(promise),
            Err(fault) => Err(fault),
        };
        self.budget.disarm();
        // A strategy that caught the storm's error returned normally.
        let outcome = outcome.and_then(|()| self.storm_fault().map_or(Ok(()), Err));

        let result = match outcome {
            Ok(()) => Ok(()),
            Err(Fault::Thrown(diagnostic)) => {
                self.handler_error(handler, &diagnostic);
                Ok(())
            }
            Err(fault) => Err(self.fatal(fault, &format!("handler {}", handler.name()))),
        };
        if self.state.shared.is_stopping() {
            return Err(HostError::Stopped);
        }
        if let Err(error) = &result {
            self.report(error);
            self.dead = Some(error.clone());
        }
        result
    }

    /// Scope position of an event, or `None` if it is not for this
    /// instance.
    fn route(&self, event: &MarketEvent) -> Option<Route> {
        let provider = self.state.scope.iter().position(|(provider, _)| provider.name() == &*event.provider);
        let symbol = provider.and_then(|index| {
            self.state.scope[index]
                .1
                .iter()
                .position(|symbol| Arc::ptr_eq(symbol, &event.symbol) || *symbol == event.symbol)
        });
        if !event.is_private() {
            match provider {
                None => return None,
                Some(index) if index > 0 && !self.wants_cross_provider => return None,
                Some(_) if symbol.is_none() => return None,
                Some(_) => {}
            }
        }
        Some(Route { provider, symbol })
    }

    /// Builds `ctx`, `evt` and `payload` and calls the handler.
    fn call<'js>(
        &self,
        ctx: &Ctx<'js>,
        handler: Handler,
        event: &MarketEvent,
        route: Route,
    ) -> rquickjs::Result<Value<'js>> {
        let (Some(slots), Some(keys)) = (ctx.userdata::<Slots<'js>>(), ctx.userdata::<Keys<'js>>()) else {
            return Err(Exception::throw_internal(ctx, "host state missing from the runtime"));
        };
        let Some(function) = slots[SLOT_HANDLERS + handler as usize].as_function() else {
            return Ok(Value::new_undefined(ctx.clone()));
        };
        let key = |key: Key| keys[key as usize].clone();

        let (provider, symbol) = match route.provider {
            Some(index) => {
                let scope = &self.scope_slots[index];
                let symbol = match route.symbol {
                    Some(symbol) => slots[scope.symbols[symbol]].clone(),
                    None => js_string(ctx, &event.symbol)?,
                };
                (slots[scope.name].clone(), symbol)
            }
            None => (js_string(ctx, &event.provider)?, js_string(ctx, &event.symbol)?),
        };

        let payload = self.payload_object(ctx, &slots, &keys, &event.payload)?;
        let evt = Object::new(ctx.clone())?;
        evt.set(key(Key::EventId), event.event_id as f64)?;
        evt.set(key(Key::Provider), provider.clone())?;
        evt.set(key(Key::Symbol), symbol.clone())?;
        evt.set(key(Key::Type), slots[SLOT_EVENT_TYPES + kind_index(event.kind)].clone())?;
        evt.set(key(Key::SeqProvider), event.seq_provider as f64)?;
        evt.set(key(Key::IngestTs), event.ingest_ts as f64)?;
        evt.set(key(Key::EmitTs), event.emit_ts as f64)?;
        evt.set(key(Key::Payload), payload.clone())?;

        let context = Object::new(ctx.clone())?;
        context.set(key(Key::InstanceId), slots[SLOT_INSTANCE_ID].clone())?;
        context.set(key(Key::Strategy), slots[SLOT_STRATEGY].clone())?;
        context.set(key(Key::Hash), slots[SLOT_HASH].clone())?;
        context.set(key(Key::Provider), provider)?;
        context.set(key(Key::Symbol), symbol)?;

        let mut args = Args::new(ctx.clone(), 4);
        args.this(slots[SLOT_HANDLER_OBJECT].clone())?;
        args.push_arg(context)?;
        args.push_arg(evt)?;
        args.push_arg(payload)?;
        match (&event.payload, handler) {
            (Payload::Trade(trade), Handler::Trade) => args.push_arg(js_number(&trade.price))?,
            (Payload::ExecReport(report), Handler::OrderRejected) => args.push_arg(report.reject_reason.as_deref())?,
            _ => {}
        }
        args.apply(function)
    }

    /// Runs the pending promise jobs (the budget must be armed), then, if
    /// `promise` (what a handler returned) rejected, reports its reason as
    /// thrown.
    fn run_jobs(&self, promise: Option<Persistent<Promise<'static>>>) -> Result<(), Fault> {
        loop {
            match self.runtime.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => break,
                Err(job) => {
                    let fault = job.0.with(|ctx| self.sort_error(&ctx, rquickjs::Error::Exception));
                    match fault {
                        // A job that threw is reported like a handler that
                        // threw; the remaining jobs still run.
                        Fault::Thrown(diagnostic) => self.handler_error_in_job(&diagnostic),
                        fault => return Err(fault),
                    }
                }
            }
        }
        let Some(promise) = promise else {
            return Ok(());
        };
        self.context.with(|ctx| {
            let promise = promise.restore(&ctx).map_err(|err| self.sort_error(&ctx, err))?;
            match promise.result::<Value>() {
                Some(Err(err)) => Err(self.sort_error(&ctx, err)),
                _ => Ok(()),
            }
        })
    }

    /// The shared state this instance reports to.
    pub fn shared(&self) -> &Arc<HostShared> {
        &self.state.shared
    }

    /// Whether the handler object asked for other providers' market events
    /// (`wantsCrossProviderEvents`, read once at start).
    pub fn wants_cross_provider_events(&self) -> bool {
        self.wants_cross_provider
    }

    /// Bytes the runtime's heap uses now.
    pub fn memory_used(&self) -> u64 {
        self.runtime.memory_usage().memory_used_size.try_into().unwrap_or(0)
    }
}

/// What [`JsInstance::set_up`] learnt about the handler object.
struct Setup {
    handlers: u16,
    wants_cross_provider: bool,
    scope_slots: Vec<ScopeSlots>,
}

/// Checks what `create` returned, reads the handlers and
/// `wantsCrossProviderEvents`, and stores the slots and keys in the runtime.
/// The inner error is a contract violation (not an object).
fn read_handler_object<'js>(
    ctx: &Ctx<'js>,
    state: &HostState,
    spec: &HostSpec,
    handler: Value<'js>,
) -> rquickjs::Result<Result<Setup, String>> {
    if handler.is_promise() {
        return Ok(Err("create(env) returned a promise; it must return the handler object itself".into()));
    }
    let Some(object) = handler.as_object().filter(|_| !handler.is_function()) else {
        return Ok(Err(format!("create(env) must return an object, got {}", handler.type_name())));
    };

    let mut setup = Setup { handlers: 0, wants_cross_provider: false, scope_slots: Vec::new() };
    let mut slots: Slots<'js> = Vec::with_capacity(SLOT_SCOPE + 8);
    slots.push(handler.clone());
    for (index, kind) in Handler::ALL.iter().enumerate() {
        let value: Value<'js> = object.get(kind.name())?;
        if value.is_function() {
            setup.handlers |= 1 << index;
            slots.push(value);
        } else {
            if !value.is_undefined() && !value.is_null() {
                state.shared.logs.push(
                    LogLevel::Warn,
                    format!("{} is not a function (it is {}): ignored", kind.name(), value.type_name()),
                );
            }
            slots.push(Value::new_undefined(ctx.clone()));
        }
    }
    let wants: Value<'js> = object.get("wantsCrossProviderEvents")?;
    let wants = match wants.as_function() {
        Some(function) => function.call::<_, Value<'js>>((This(handler.clone()),))?,
        None => wants,
    };
    setup.wants_cross_provider = wants.get::<Coerced<bool>>()?.0;

    for kind in EventKind::ALL {
        slots.push(js_string(ctx, kind.as_str())?);
    }
    for side in [Side::Buy, Side::Sell] {
        slots.push(js_string(ctx, side_name(side))?);
    }
    for order_state in ORDER_STATES {
        slots.push(js_string(ctx, state_name(order_state))?);
    }
    for order_type in [OrderType::Market, OrderType::Limit] {
        slots.push(js_string(ctx, order_type_name(order_type))?);
    }
    slots.push(js_string(ctx, &spec.instance_id)?);
    slots.push(js_string(ctx, &spec.strategy)?);
    slots.push(js_string(ctx, &state.hash)?);
    debug_assert_eq!(slots.len(), SLOT_SCOPE);
    for (provider, symbols) in &state.scope {
        let name = slots.len();
        slots.push(js_string(ctx, provider.name())?);
        let mut symbol_slots = Vec::with_capacity(symbols.len());
        for symbol in symbols {
            symbol_slots.push(slots.len());
            slots.push(js_string(ctx, symbol)?);
        }
        setup.scope_slots.push(ScopeSlots { name, symbols: symbol_slots });
    }

    let keys: Keys<'js> =
        KEY_NAMES.iter().map(|name| Atom::from_str(ctx.clone(), name)).collect::<rquickjs::Result<_>>()?;
    if ctx.store_userdata(slots).is_err() || ctx.store_userdata(keys).is_err() {
        return Ok(Err("internal error: the runtime's user data is busy".into()));
    }
    Ok(Ok(setup))
}
