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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use rquickjs::function::{Args, Opt, Rest, This};
use rquickjs::{Array, Atom, Coerced, Context, Ctx, Exception, Function, Object, Persistent, Promise, Runtime, Value};
use strata_shared::RevisionHash;
use strata_shared::metadata::{DRY_RUN_FIELD, Diagnostic, EventKind, ModuleMetadata, parse_duration};

use super::logs::{Counters, LogRing};
use super::orders::{Admission, OrderRate};
use crate::js::{self, CpuBudget, JsLimits, LogLevel};
use crate::venue::{MarketEvent, OrderRequest, OrderState, OrderType, Payload, Provider, Side};

/// Default cap of one `helpers.sleep` call.
pub const DEFAULT_SLEEP_CAP: Duration = Duration::from_secs(5);

/// What a strategy sees (if it catches it) once its order storm stops it.
const STORM_MESSAGE: &str = "order storm: the instance is being stopped";

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
    metrics: Option<crate::metrics::JsMetrics>,
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
    fn attach_budget(&self, budget: &CpuBudget) {
        let mut slot = self.budget.lock();
        if self.is_stopping() {
            budget.cancel();
        }
        *slot = Some(budget.clone());
    }

    /// Waits up to `timeout` for a stop request; true if one came.
    fn wait_for_stop(&self, timeout: Duration) -> bool {
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
    fn next_order_id(&self, instance_id: &str) -> String {
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
    /// Rate limit of handler-error warnings in the daemon log.
    warnings: WarnLimiter,
}

/// Slot indexes of one scoped provider's name and symbols.
struct ScopeSlots {
    name: usize,
    symbols: Vec<usize>,
}

/// State the `env` functions share with the instance.
struct HostState {
    instance_id: Arc<str>,
    strategy: Arc<str>,
    hash: String,
    shared: Arc<HostShared>,
    /// Scope with empty symbol lists expanded to the provider's symbols.
    scope: Vec<ScopeEntry>,
    dry_run: bool,
    sleep_cap: Duration,
    sleep_hook: Arc<dyn SleepHook>,
    budget: CpuBudget,
    /// The "current symbol": scope index of its provider (if in scope) and
    /// the symbol.
    current: Mutex<Option<(Option<usize>, Arc<str>)>>,
    /// The order-rate cap.
    orders: Mutex<OrderRate>,
    /// The number of orders refused, set once the cap saw an order storm
    /// (0 = no storm): the instance dies.
    storm: AtomicU32,
}

/// Handlers a strategy may define, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Trade,
    Ticker,
    BookSnapshot,
    KlineSummary,
    InstrumentUpdate,
    BalanceUpdate,
    RiskControl,
    ExtensionEvent,
    OrderAcknowledged,
    OrderPartialFill,
    OrderFilled,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
}

impl Handler {
    const ALL: [Handler; 14] = [
        Handler::Trade,
        Handler::Ticker,
        Handler::BookSnapshot,
        Handler::KlineSummary,
        Handler::InstrumentUpdate,
        Handler::BalanceUpdate,
        Handler::RiskControl,
        Handler::ExtensionEvent,
        Handler::OrderAcknowledged,
        Handler::OrderPartialFill,
        Handler::OrderFilled,
        Handler::OrderCancelled,
        Handler::OrderExpired,
        Handler::OrderRejected,
    ];

    fn name(self) -> &'static str {
        match self {
            Handler::Trade => "onTrade",
            Handler::Ticker => "onTicker",
            Handler::BookSnapshot => "onBookSnapshot",
            Handler::KlineSummary => "onKlineSummary",
            Handler::InstrumentUpdate => "onInstrumentUpdate",
            Handler::BalanceUpdate => "onBalanceUpdate",
            Handler::RiskControl => "onRiskControl",
            Handler::ExtensionEvent => "onExtensionEvent",
            Handler::OrderAcknowledged => "onOrderAcknowledged",
            Handler::OrderPartialFill => "onOrderPartialFill",
            Handler::OrderFilled => "onOrderFilled",
            Handler::OrderCancelled => "onOrderCancelled",
            Handler::OrderExpired => "onOrderExpired",
            Handler::OrderRejected => "onOrderRejected",
        }
    }

    /// The handler of an event, if its kind has one.
    fn of(event: &MarketEvent) -> Option<Handler> {
        Some(match event.kind {
            EventKind::Trade => Handler::Trade,
            EventKind::Ticker => Handler::Ticker,
            EventKind::BookSnapshot => Handler::BookSnapshot,
            EventKind::KlineSummary => Handler::KlineSummary,
            EventKind::InstrumentUpdate => Handler::InstrumentUpdate,
            EventKind::BalanceUpdate => Handler::BalanceUpdate,
            EventKind::RiskControl => Handler::RiskControl,
            EventKind::Extension => Handler::ExtensionEvent,
            EventKind::ExecReport => match &event.payload {
                Payload::ExecReport(report) => match report.state {
                    OrderState::Acknowledged => Handler::OrderAcknowledged,
                    OrderState::PartiallyFilled => Handler::OrderPartialFill,
                    OrderState::Filled => Handler::OrderFilled,
                    OrderState::Cancelled => Handler::OrderCancelled,
                    OrderState::Expired => Handler::OrderExpired,
                    OrderState::Rejected => Handler::OrderRejected,
                },
                _ => return None,
            },
        })
    }
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::Trade => 0,
        EventKind::Ticker => 1,
        EventKind::BookSnapshot => 2,
        EventKind::ExecReport => 3,
        EventKind::KlineSummary => 4,
        EventKind::InstrumentUpdate => 5,
        EventKind::BalanceUpdate => 6,
        EventKind::RiskControl => 7,
        EventKind::Extension => 8,
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

const ORDER_STATES: [OrderState; 6] = [
    OrderState::Acknowledged,
    OrderState::PartiallyFilled,
    OrderState::Filled,
    OrderState::Cancelled,
    OrderState::Expired,
    OrderState::Rejected,
];

fn state_index(state: OrderState) -> usize {
    match state {
        OrderState::Acknowledged => 0,
        OrderState::PartiallyFilled => 1,
        OrderState::Filled => 2,
        OrderState::Cancelled => 3,
        OrderState::Expired => 4,
        OrderState::Rejected => 5,
    }
}

fn order_type_index(order_type: OrderType) -> usize {
    match order_type {
        OrderType::Market => 0,
        OrderType::Limit => 1,
    }
}

// Layout of the value slots kept in the runtime's user data
// (`Vec<Value>`): handler object, handler functions (undefined when
// missing), constant strings, then the scope's provider names and symbols.
const SLOT_HANDLER_OBJECT: usize = 0;
const SLOT_HANDLERS: usize = 1;
const SLOT_EVENT_TYPES: usize = SLOT_HANDLERS + Handler::ALL.len();
const SLOT_SIDES: usize = SLOT_EVENT_TYPES + EventKind::ALL.len();
const SLOT_STATES: usize = SLOT_SIDES + 2;
const SLOT_ORDER_TYPES: usize = SLOT_STATES + ORDER_STATES.len();
const SLOT_INSTANCE_ID: usize = SLOT_ORDER_TYPES + 2;
const SLOT_STRATEGY: usize = SLOT_INSTANCE_ID + 1;
const SLOT_HASH: usize = SLOT_STRATEGY + 1;
const SLOT_SCOPE: usize = SLOT_HASH + 1;

/// JS values kept for the life of the runtime (see the slot layout above).
type Slots<'js> = Vec<Value<'js>>;
/// Property names interned once per runtime, indexed by [`Key`].
type Keys<'js> = Vec<Atom<'js>>;

macro_rules! keys {
    ($($variant:ident = $name:literal,)*) => {
        /// Property names the host sets on the objects it builds.
        #[derive(Debug, Clone, Copy)]
        enum Key { $($variant,)* }
        /// [`Key`] names, in declaration order.
        const KEY_NAMES: &[&str] = &[$($name,)*];
    };
}

keys! {
    InstanceId = "instanceId",
    Strategy = "strategy",
    Hash = "hash",
    Provider = "provider",
    Symbol = "symbol",
    EventId = "eventId",
    Type = "type",
    SeqProvider = "seqProvider",
    IngestTs = "ingestTs",
    EmitTs = "emitTs",
    Payload = "payload",
    TradeId = "tradeId",
    Side = "side",
    Price = "price",
    Quantity = "quantity",
    Timestamp = "timestamp",
    LastPrice = "lastPrice",
    BidPrice = "bidPrice",
    AskPrice = "askPrice",
    Volume24h = "volume24h",
    Bids = "bids",
    Asks = "asks",
    Checksum = "checksum",
    LastUpdate = "lastUpdate",
    ClientOrderId = "clientOrderId",
    ExchangeOrderId = "exchangeOrderId",
    State = "state",
    OrderType = "orderType",
    FilledQuantity = "filledQuantity",
    RemainingQty = "remainingQty",
    AvgFillPrice = "avgFillPrice",
    RejectReason = "rejectReason",
    Currency = "currency",
    Total = "total",
    Available = "available",
}

/// Where an event comes from, as indexes into the scope.
#[derive(Debug, Clone, Copy)]
struct Route {
    provider: Option<usize>,
    symbol: Option<usize>,
}

/// How a call into JS failed.
enum Fault {
    Stopped,
    CpuBudget,
    Memory(Diagnostic),
    /// The order-rate cap saw a storm (orders refused).
    OrderStorm(u32),
    Thrown(Diagnostic),
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
            warnings: WarnLimiter::default(),
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

    /// Builds the payload object (the shapes of SPEC §1.2).
    fn payload_object<'js>(
        &self,
        ctx: &Ctx<'js>,
        slots: &Slots<'js>,
        keys: &Keys<'js>,
        payload: &Payload,
    ) -> rquickjs::Result<Object<'js>> {
        let key = |key: Key| keys[key as usize].clone();
        let side = |side: Side| slots[SLOT_SIDES + side_index(side)].clone();
        let object = Object::new(ctx.clone())?;
        match payload {
            Payload::Trade(trade) => {
                object.set(key(Key::TradeId), trade.trade_id.as_str())?;
                object.set(key(Key::Side), side(trade.side))?;
                object.set(key(Key::Price), trade.price.as_str())?;
                object.set(key(Key::Quantity), trade.quantity.as_str())?;
                object.set(key(Key::Timestamp), trade.timestamp as f64)?;
            }
            Payload::Ticker(ticker) => {
                object.set(key(Key::LastPrice), ticker.last_price.as_str())?;
                object.set(key(Key::BidPrice), ticker.bid_price.as_str())?;
                object.set(key(Key::AskPrice), ticker.ask_price.as_str())?;
                object.set(key(Key::Volume24h), ticker.volume24h.as_str())?;
                object.set(key(Key::Timestamp), ticker.timestamp as f64)?;
            }
            Payload::Book(book) => {
                for (name, levels) in [(Key::Bids, &book.bids), (Key::Asks, &book.asks)] {
                    let array = Array::new(ctx.clone())?;
                    for (index, level) in levels.iter().enumerate() {
                        let entry = Object::new(ctx.clone())?;
                        entry.set(key(Key::Price), level.price.as_str())?;
                        entry.set(key(Key::Quantity), level.quantity.as_str())?;
                        array.set(index, entry)?;
                    }
                    object.set(key(name), array)?;
                }
                object.set(key(Key::Checksum), f64::from(book.checksum))?;
                object.set(key(Key::LastUpdate), book.last_update as f64)?;
            }
            Payload::ExecReport(report) => {
                object.set(key(Key::ClientOrderId), report.client_order_id.as_str())?;
                object.set(key(Key::ExchangeOrderId), report.exchange_order_id.as_str())?;
                object.set(key(Key::State), slots[SLOT_STATES + state_index(report.state)].clone())?;
                object.set(key(Key::Side), side(report.side))?;
                object
                    .set(key(Key::OrderType), slots[SLOT_ORDER_TYPES + order_type_index(report.order_type)].clone())?;
                object.set(key(Key::Price), report.price.as_str())?;
                object.set(key(Key::Quantity), report.quantity.as_str())?;
                object.set(key(Key::FilledQuantity), report.filled_quantity.as_str())?;
                object.set(key(Key::RemainingQty), report.remaining_qty.as_str())?;
                object.set(key(Key::AvgFillPrice), report.avg_fill_price.as_str())?;
                object.set(key(Key::Timestamp), report.timestamp as f64)?;
                if let Some(reason) = &report.reject_reason {
                    object.set(key(Key::RejectReason), reason.as_str())?;
                }
            }
            Payload::Balance(balance) => {
                object.set(key(Key::Currency), balance.currency.as_str())?;
                object.set(key(Key::Total), balance.total.as_str())?;
                object.set(key(Key::Available), balance.available.as_str())?;
                object.set(key(Key::Timestamp), balance.timestamp as f64)?;
            }
        }
        Ok(object)
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

    /// Takes the pending exception of `error` and sorts it.
    fn sort_error<'js>(&self, ctx: &Ctx<'js>, error: rquickjs::Error) -> Fault {
        self.fault_of(js::error_diagnostic(ctx, error, &self.budget, &self.source))
    }

    /// [`Fault::OrderStorm`] once the order-rate cap saw a storm.
    fn storm_fault(&self) -> Option<Fault> {
        match self.state.storm.load(Ordering::Acquire) {
            0 => None,
            refused => Some(Fault::OrderStorm(refused)),
        }
    }

    fn fault_of(&self, diagnostic: Diagnostic) -> Fault {
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
    fn fatal(&self, fault: Fault, what: &str) -> HostError {
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
    fn report(&self, error: &HostError) {
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
    fn handler_error(&mut self, handler: Handler, diagnostic: &Diagnostic) {
        let state = &self.state;
        Counters::bump(&state.shared.counters.handler_errors);
        if let Some(metrics) = &state.shared.metrics {
            metrics.handler_errors.inc();
        }
        let message = format!(
            "{} threw{} (strategy {}, revision {})",
            handler.name(),
            describe(diagnostic),
            state.strategy,
            state.hash
        );
        state.shared.logs.push(LogLevel::Error, message.clone());
        if let Some(suppressed) = self.warnings.admit() {
            tracing::warn!(
                target: "strata::instance",
                instance = %state.instance_id,
                strategy = %state.strategy,
                hash = %state.hash,
                handler = handler.name(),
                line = diagnostic.line,
                suppressed,
                "{message}"
            );
        }
    }

    /// Logs a promise job that threw (not tied to one handler).
    fn handler_error_in_job(&self, diagnostic: &Diagnostic) {
        let state = &self.state;
        Counters::bump(&state.shared.counters.handler_errors);
        if let Some(metrics) = &state.shared.metrics {
            metrics.handler_errors.inc();
        }
        let message = format!(
            "a promise job threw{} (strategy {}, revision {})",
            describe(diagnostic),
            state.strategy,
            state.hash
        );
        state.shared.logs.push(LogLevel::Error, message.clone());
        tracing::warn!(
            target: "strata::instance",
            instance = %state.instance_id,
            strategy = %state.strategy,
            hash = %state.hash,
            line = diagnostic.line,
            "{message}"
        );
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

/// `: message (line L, column C)` for a diagnostic, for log lines and
/// errors.
fn describe(diagnostic: &Diagnostic) -> String {
    match (diagnostic.line, diagnostic.column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}: {}", diagnostic.message),
        (Some(line), None) => format!(" at line {line}: {}", diagnostic.message),
        _ => format!(": {}", diagnostic.message),
    }
}

fn format_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Limits handler-error warnings in the daemon log to one per second per
/// instance (the instance log gets every one).
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// `Some(number of warnings suppressed since the last one)` when a
    /// warning may be written now.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0))
}

fn js_string<'js>(ctx: &Ctx<'js>, text: &str) -> rquickjs::Result<Value<'js>> {
    Ok(rquickjs::String::from_str(ctx.clone(), text)?.into_value())
}

/// `Number(text)` for the decimal strings of payloads (NaN if it is not
/// one).
fn js_number(text: &str) -> f64 {
    let text = text.trim();
    if text.is_empty() {
        return 0.0;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        text.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// JSON name of a side (as serde writes it).
fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// JSON name of an order state (as serde writes it).
fn state_name(state: OrderState) -> &'static str {
    match state {
        OrderState::Acknowledged => "acknowledged",
        OrderState::PartiallyFilled => "partiallyFilled",
        OrderState::Filled => "filled",
        OrderState::Cancelled => "cancelled",
        OrderState::Expired => "expired",
        OrderState::Rejected => "rejected",
    }
}

/// JSON name of an order type (as serde writes it).
fn order_type_name(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Market => "market",
        OrderType::Limit => "limit",
    }
}

// ---------------------------------------------------------------------------
// env

/// Builds `env` (SPEC §1.2).
fn build_env<'js>(ctx: &Ctx<'js>, state: &Arc<HostState>, spec: &HostSpec) -> rquickjs::Result<Object<'js>> {
    let env = Object::new(ctx.clone())?;
    let config = serde_json::to_string(&spec.config).map_err(|err| Exception::throw_internal(ctx, &err.to_string()))?;
    env.set("config", ctx.json_parse(config)?)?;
    let metadata =
        serde_json::to_string(&*spec.metadata).map_err(|err| Exception::throw_internal(ctx, &err.to_string()))?;
    env.set("metadata", ctx.json_parse(metadata)?)?;
    let events = Array::new(ctx.clone())?;
    for (index, kind) in spec.metadata.events.iter().enumerate() {
        events.set(index, kind.as_str())?;
    }
    env.set("events", events)?;

    let helpers = Object::new(ctx.clone())?;
    let st = Arc::clone(state);
    define(ctx, &helpers, "log", move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<()> {
        let line = js::format_log_args(&ctx, args.0)?;
        tracing::debug!(target: "strata::instance", instance = %st.instance_id, "{line}");
        st.shared.logs.push(LogLevel::Info, line);
        Ok(())
    })?;
    let st = Arc::clone(state);
    define(ctx, &helpers, "sleep", move |ctx: Ctx<'js>, ms: Opt<Value<'js>>| -> rquickjs::Result<()> {
        let duration = sleep_duration(&ctx, ms.0)?;
        if st.sleep(duration.min(st.sleep_cap)) {
            Ok(())
        } else {
            Err(Exception::throw_internal(&ctx, "sleep interrupted: the instance is stopping"))
        }
    })?;
    env.set("helpers", helpers)?;

    let runtime = Object::new(ctx.clone())?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "isTradingActive", move || !st.shared.is_stopping())?;
    let dry_run = state.dry_run;
    define(ctx, &runtime, "isDryRun", move || dry_run)?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "providers", move |ctx: Ctx<'js>| -> rquickjs::Result<Array<'js>> {
        let names = Array::new(ctx.clone())?;
        for (index, (provider, _)) in st.scope.iter().enumerate() {
            names.set(index, provider.name())?;
        }
        Ok(names)
    })?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "selectProvider", move |ctx: Ctx<'js>, seed: Opt<Value<'js>>| {
        st.select_provider(&ctx, seed.0)
    })?;
    let st = Arc::clone(state);
    define(
        ctx,
        &runtime,
        "submitMarketOrder",
        move |ctx: Ctx<'js>, provider: Opt<Value<'js>>, side: Opt<Value<'js>>, qty: Opt<Value<'js>>| {
            st.submit(&ctx, provider.0, side.0, qty.0, None)
        },
    )?;
    let st = Arc::clone(state);
    define(
        ctx,
        &runtime,
        "submitOrder",
        move |ctx: Ctx<'js>,
              provider: Opt<Value<'js>>,
              side: Opt<Value<'js>>,
              qty: Opt<Value<'js>>,
              price: Opt<Value<'js>>| { st.submit(&ctx, provider.0, side.0, qty.0, Some(price.0)) },
    )?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "getLastPrice", move || st.market_state().map(|market| market.last))?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "getBidPrice", move || st.market_state().map(|market| market.bid))?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "getAskPrice", move || st.market_state().map(|market| market.ask))?;
    let st = Arc::clone(state);
    define(ctx, &runtime, "getMarketState", move |ctx: Ctx<'js>| -> rquickjs::Result<Option<Object<'js>>> {
        let Some(market) = st.market_state() else {
            return Ok(None);
        };
        let object = Object::new(ctx)?;
        object.set("last", market.last)?;
        object.set("bid", market.bid)?;
        object.set("ask", market.ask)?;
        object.set("spread", market.spread)?;
        object.set("spreadPct", market.spread_pct)?;
        Ok(Some(object))
    })?;
    env.set("runtime", runtime)?;
    Ok(env)
}

/// Sets `object[name]` to a host function named `name`.
fn define<'js, F, P>(ctx: &Ctx<'js>, object: &Object<'js>, name: &str, function: F) -> rquickjs::Result<()>
where
    F: rquickjs::function::IntoJsFunc<'js, P> + 'js,
{
    object.set(name, Function::new(ctx.clone(), function)?.with_name(name)?)
}

/// The duration a `helpers.sleep` argument asks for: a number of
/// milliseconds or a duration string (`"150ms"`, `"2s"`).
fn sleep_duration<'js>(ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<Duration> {
    let Some(value) = value else {
        return Err(Exception::throw_type(
            ctx,
            "sleep(ms) needs a number of milliseconds or a duration like \"150ms\"",
        ));
    };
    if let Some(ms) = value.as_number() {
        if !ms.is_finite() || ms < 0.0 {
            return Err(Exception::throw_range(ctx, &format!("sleep: {ms} is not a valid number of milliseconds")));
        }
        return Ok(Duration::from_secs_f64(ms.min(1e12) / 1_000.0));
    }
    if let Some(text) = value.as_string() {
        let text = text.to_string()?;
        return parse_duration(text.trim()).ok_or_else(|| {
            Exception::throw_range(
                ctx,
                &format!("sleep: {text:?} is not a duration (use e.g. \"150ms\", \"2s\" or a number of ms)"),
            )
        });
    }
    Err(Exception::throw_type(
        ctx,
        &format!("sleep(ms) needs a number or a duration string, got {}", value.type_name()),
    ))
}

impl HostState {
    /// Sleeps up to `duration` without counting against the CPU budget;
    /// false when a stop cut it short.
    fn sleep(&self, duration: Duration) -> bool {
        if self.shared.is_stopping() {
            return false;
        }
        if duration.is_zero() {
            return true;
        }
        let remaining = self.budget.pause();
        self.sleep_hook.before_sleep();
        let stopped = self.shared.wait_for_stop(duration);
        self.sleep_hook.after_sleep();
        self.budget.resume(remaining);
        !stopped
    }

    /// Best prices of the current symbol.
    fn market_state(&self) -> Option<crate::venue::MarketState> {
        let current = self.current.lock();
        let (provider, symbol) = current.as_ref()?;
        let (provider, _) = self.scope.get(provider.unwrap_or(0))?;
        provider.market_state(symbol)
    }

    /// `selectProvider(seed)`: a deterministic pick among the scope's
    /// providers (FNV-1a of a string seed, an integer seed modulo the
    /// count); `null` with no provider in scope.
    fn select_provider<'js>(&self, ctx: &Ctx<'js>, seed: Option<Value<'js>>) -> rquickjs::Result<Option<String>> {
        let count = self.scope.len() as u64;
        if count == 0 {
            return Ok(None);
        }
        let seed = seed.unwrap_or_else(|| Value::new_undefined(ctx.clone()));
        let pick = if let Some(number) = seed.as_number() {
            if number.is_finite() && number.fract() == 0.0 && number.abs() < 9.0e15 {
                (number as i64).rem_euclid(count as i64) as u64
            } else {
                fnv1a(&number.to_bits().to_le_bytes()) % count
            }
        } else if let Some(text) = seed.as_string() {
            fnv1a(text.to_string()?.as_bytes()) % count
        } else if seed.is_undefined() || seed.is_null() {
            0
        } else {
            return Err(Exception::throw_type(
                ctx,
                &format!("selectProvider(seed) needs a string or number seed, got {}", seed.type_name()),
            ));
        };
        Ok(self.scope.get(pick as usize).map(|(provider, _)| provider.name().to_owned()))
    }

    /// `submitMarketOrder` (price `None`) / `submitOrder` (price
    /// `Some(value)`; null or undefined = market).
    fn submit<'js>(
        &self,
        ctx: &Ctx<'js>,
        provider: Option<Value<'js>>,
        side: Option<Value<'js>>,
        quantity: Option<Value<'js>>,
        price: Option<Option<Value<'js>>>,
    ) -> rquickjs::Result<String> {
        let (provider, symbols) = self.provider_arg(ctx, provider)?;
        let side = side_arg(ctx, side)?;
        let quantity = positive_arg(ctx, "quantity", quantity)?;
        let price = match price.flatten() {
            Some(price) if !price.is_null() && !price.is_undefined() => Some(positive_arg(ctx, "price", Some(price))?),
            _ => None,
        };
        if self.shared.is_stopping() {
            return Err(Exception::throw_message(ctx, "cannot submit orders: the instance is stopping"));
        }
        self.admit_order(ctx)?;
        let symbol = {
            let current = self.current.lock();
            match current.as_ref() {
                Some((_, symbol)) if symbols.contains(symbol) => symbol.clone(),
                _ => match symbols.first() {
                    Some(symbol) => symbol.clone(),
                    None => {
                        return Err(Exception::throw_message(
                            ctx,
                            &format!("provider {:?} has no symbol in this instance's scope", provider.name()),
                        ));
                    }
                },
            }
        };
        let client_order_id = self.shared.next_order_id(&self.instance_id);
        let side_name = side_name(side);
        let at = price.map_or_else(|| "market".to_owned(), |price| price.to_string());
        if self.dry_run {
            Counters::bump(&self.shared.counters.orders_submitted);
            self.shared.logs.push(
                LogLevel::Info,
                format!("[dry-run] {side_name} {quantity} {symbol} @ {at} ({}, {client_order_id})", provider.name()),
            );
            return Ok(client_order_id);
        }
        let order = OrderRequest {
            owner: self.instance_id.clone(),
            client_order_id: client_order_id.clone(),
            symbol: symbol.clone(),
            side,
            quantity,
            price,
        };
        provider.submit(order).map_err(|err| {
            Exception::throw_message(ctx, &format!("order rejected by provider {:?}: {err}", provider.name()))
        })?;
        Counters::bump(&self.shared.counters.orders_submitted);
        self.shared.logs.push(
            LogLevel::Info,
            format!("order {client_order_id}: {side_name} {quantity} {symbol} @ {at} sent to {}", provider.name()),
        );
        Ok(client_order_id)
    }

    /// Applies the order-rate cap: an order over it throws (catchable); an
    /// order storm stops all JS of the instance (uncatchable) and marks it
    /// so the call's fault is [`Fault::OrderStorm`].
    fn admit_order<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<()> {
        if self.storm.load(Ordering::Acquire) != 0 {
            return Err(Exception::throw_internal(ctx, STORM_MESSAGE));
        }
        let mut orders = self.orders.lock();
        match orders.admit(Instant::now()) {
            Admission::Sent => Ok(()),
            Admission::Throttled => Err(Exception::throw_message(
                ctx,
                &format!("order refused: over the cap of {} orders a second (max_orders_per_sec)", orders.rate()),
            )),
            Admission::Storm(refused) => {
                self.storm.store(refused.max(1), Ordering::Release);
                self.budget.cancel();
                Err(Exception::throw_internal(ctx, STORM_MESSAGE))
            }
        }
    }

    /// The scoped provider an order names, with its scoped symbols.
    fn provider_arg<'js>(&self, ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<&ScopeEntry> {
        let Some(name) = value.as_ref().and_then(Value::as_string) else {
            let got = value.as_ref().map_or("nothing", Value::type_name);
            return Err(Exception::throw_type(ctx, &format!("provider must be a provider name (string), got {got}")));
        };
        let name = name.to_string()?;
        self.scope.iter().find(|(provider, _)| provider.name() == name).ok_or_else(|| {
            let known: Vec<&str> = self.scope.iter().map(|(provider, _)| provider.name()).collect();
            Exception::throw_type(
                ctx,
                &format!(
                    "unknown provider {name:?} (in scope: {})",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            )
        })
    }
}

/// An order side: `buy/long/bid`, `sell/short/ask` (any case) or a signed
/// number.
fn side_arg<'js>(ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<Side> {
    let value = value.unwrap_or_else(|| Value::new_undefined(ctx.clone()));
    if let Some(number) = value.as_number() {
        return if number > 0.0 {
            Ok(Side::Buy)
        } else if number < 0.0 {
            Ok(Side::Sell)
        } else {
            Err(Exception::throw_range(
                ctx,
                &format!("side {number} has no sign (use a positive number to buy, negative to sell)"),
            ))
        };
    }
    if let Some(text) = value.as_string() {
        let text = text.to_string()?;
        return match text.trim().to_ascii_lowercase().as_str() {
            "buy" | "long" | "bid" => Ok(Side::Buy),
            "sell" | "short" | "ask" => Ok(Side::Sell),
            _ => Err(Exception::throw_range(
                ctx,
                &format!("unknown side {text:?} (use buy/long/bid, sell/short/ask or a signed number)"),
            )),
        };
    }
    Err(Exception::throw_type(ctx, &format!("side must be a string or a signed number, got {}", value.type_name())))
}

/// A finite number > 0 (a number or a numeric string).
fn positive_arg<'js>(ctx: &Ctx<'js>, what: &str, value: Option<Value<'js>>) -> rquickjs::Result<f64> {
    let value = value.unwrap_or_else(|| Value::new_undefined(ctx.clone()));
    let number = if let Some(number) = value.as_number() {
        number
    } else if let Some(text) = value.as_string() {
        js_number(&text.to_string()?)
    } else {
        return Err(Exception::throw_type(ctx, &format!("{what} must be a number, got {}", value.type_name())));
    };
    if number.is_finite() && number > 0.0 {
        Ok(number)
    } else {
        Err(Exception::throw_range(ctx, &format!("{what} must be a finite number greater than 0, got {number}")))
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde_json::json;

    use super::*;
    use crate::runtime::config::validate_config;
    use crate::venue::{
        BookLevel, BookPayload, ExecReportPayload, MarketState, TickerPayload, TradePayload, VenueError,
    };

    /// A provider with prices set by the test that records orders.
    struct FakeProvider {
        name: String,
        symbols: Vec<Arc<str>>,
        prices: Mutex<Vec<(Arc<str>, f64)>>,
        orders: Mutex<Vec<OrderRequest>>,
        reject: AtomicBool,
        tx: tokio::sync::broadcast::Sender<Arc<MarketEvent>>,
    }

    impl FakeProvider {
        fn new(name: &str, symbols: &[&str]) -> Arc<FakeProvider> {
            Arc::new(FakeProvider {
                name: name.into(),
                symbols: symbols.iter().map(|s| Arc::from(*s)).collect(),
                prices: Mutex::new(Vec::new()),
                orders: Mutex::new(Vec::new()),
                reject: AtomicBool::new(false),
                tx: tokio::sync::broadcast::channel(4).0,
            })
        }

        fn set_price(&self, symbol: &str, price: f64) {
            let mut prices = self.prices.lock();
            prices.retain(|(s, _)| &**s != symbol);
            prices.push((Arc::from(symbol), price));
        }

        fn orders(&self) -> Vec<OrderRequest> {
            self.orders.lock().clone()
        }
    }

    impl Provider for FakeProvider {
        fn name(&self) -> &str {
            &self.name
        }
        fn kind(&self) -> &str {
            "fake"
        }
        fn symbols(&self) -> &[Arc<str>] {
            &self.symbols
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<MarketEvent>> {
            self.tx.subscribe()
        }
        fn market_state(&self, symbol: &str) -> Option<MarketState> {
            let prices = self.prices.lock();
            let (_, last) = prices.iter().find(|(s, _)| &**s == symbol)?;
            let (bid, ask) = (last - 0.5, last + 0.5);
            Some(MarketState { last: *last, bid, ask, spread: ask - bid, spread_pct: (ask - bid) / last * 100.0 })
        }
        fn submit(&self, order: OrderRequest) -> Result<(), VenueError> {
            if self.reject.load(Ordering::SeqCst) {
                return Err(VenueError::InvalidOrder("test rejects everything".into()));
            }
            self.orders.lock().push(order);
            Ok(())
        }
    }

    /// Counts sleep hook calls.
    #[derive(Default)]
    struct CountingHook {
        before: AtomicUsize,
        after: AtomicUsize,
    }

    impl SleepHook for CountingHook {
        fn before_sleep(&self) {
            self.before.fetch_add(1, Ordering::SeqCst);
        }
        fn after_sleep(&self) {
            self.after.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A test module: `events` is a JS array literal, `create` the body of
    /// `create(env)`.
    fn module(events: &str, create: &str) -> String {
        format!(
            "'use strict';\nmodule.exports = {{\n  metadata: {{ name: 'test', displayName: 'Test', events: {events},\n    config: [{{ name: 'size', type: 'number', default: 0.5 }}] }},\n  create(env) {{\n{create}\n  }},\n}};\n"
        )
    }

    struct Harness {
        instance: JsInstance,
        shared: Arc<HostShared>,
        providers: Vec<Arc<FakeProvider>>,
    }

    fn spec_for(
        source: &str,
        config: serde_json::Value,
        providers: &[Arc<FakeProvider>],
        limits: JsLimits,
    ) -> HostSpec {
        let metadata = js::inspect_module(source.as_bytes(), &limits).unwrap_or_else(|d| panic!("{d:#?}"));
        let config = validate_config(&metadata, &config).unwrap_or_else(|e| panic!("{e:#?}"));
        HostSpec {
            instance_id: Arc::from("inst-1"),
            strategy: Arc::from(metadata.name.as_str()),
            hash: RevisionHash::of(source.as_bytes()),
            metadata: Arc::new(metadata),
            config,
            scope: providers.iter().map(|p| (Arc::clone(p) as Arc<dyn Provider>, p.symbols.clone())).collect(),
            limits,
            sleep_cap: DEFAULT_SLEEP_CAP,
            max_orders_per_sec: crate::runtime::orders::DEFAULT_MAX_ORDERS_PER_SEC,
        }
    }

    fn start_with(
        source: &str,
        config: serde_json::Value,
        limits: JsLimits,
        sleep_cap: Duration,
        hook: Arc<dyn SleepHook>,
    ) -> Result<Harness, HostError> {
        let providers = vec![FakeProvider::new("sim", &["BTC-USDT", "ETH-USDT"])];
        let mut spec = spec_for(source, config, &providers, limits);
        spec.sleep_cap = sleep_cap;
        let shared = Arc::new(HostShared::new());
        let instance = JsInstance::start(spec, source, Arc::clone(&shared), hook)?;
        Ok(Harness { instance, shared, providers })
    }

    fn start(source: &str) -> Harness {
        start_with(source, json!({}), JsLimits::default(), DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook))
            .unwrap_or_else(|e| panic!("start failed: {e}"))
    }

    /// `JSON.stringify(expr)` evaluated in the instance, parsed.
    fn eval_json(instance: &JsInstance, expr: &str) -> serde_json::Value {
        instance.context.with(|ctx| {
            let text: String = ctx.eval(format!("JSON.stringify({expr})")).unwrap_or_else(|e| {
                let caught = ctx.catch();
                panic!("eval {expr}: {e} {caught:?}")
            });
            serde_json::from_str(&text).unwrap()
        })
    }

    fn counters(h: &Harness) -> crate::runtime::logs::CountersView {
        h.shared.counters.snapshot()
    }

    fn event(id: u64, provider: &str, symbol: &str, kind: EventKind, payload: Payload) -> MarketEvent {
        MarketEvent {
            event_id: id,
            provider: Arc::from(provider),
            symbol: Arc::from(symbol),
            kind,
            seq_provider: id,
            ingest_ts: 1_700_000_000_000 + id as i64 * 100,
            emit_ts: 1_700_000_000_000 + id as i64 * 100 + 1,
            payload,
        }
    }

    fn trade_on(id: u64, provider: &str, symbol: &str, price: f64) -> MarketEvent {
        event(
            id,
            provider,
            symbol,
            EventKind::Trade,
            Payload::Trade(TradePayload {
                trade_id: format!("t-{id}"),
                side: if id.is_multiple_of(2) { Side::Buy } else { Side::Sell },
                price: format!("{price:.2}"),
                quantity: "0.0123".into(),
                timestamp: 1_700_000_000_000 + id as i64 * 100,
            }),
        )
    }

    fn trade(id: u64, price: f64) -> MarketEvent {
        trade_on(id, "sim", "BTC-USDT", price)
    }

    fn ticker(id: u64, price: f64) -> MarketEvent {
        event(
            id,
            "sim",
            "BTC-USDT",
            EventKind::Ticker,
            Payload::Ticker(TickerPayload {
                last_price: format!("{price:.2}"),
                bid_price: format!("{:.2}", price - 0.5),
                ask_price: format!("{:.2}", price + 0.5),
                volume24h: "1234.5".into(),
                timestamp: 1_700_000_000_000 + id as i64 * 100,
            }),
        )
    }

    fn book(id: u64, price: f64) -> MarketEvent {
        let level = |p: f64| BookLevel { price: format!("{p:.2}"), quantity: "0.5".into() };
        event(
            id,
            "sim",
            "BTC-USDT",
            EventKind::BookSnapshot,
            Payload::Book(BookPayload {
                bids: (1..=5).map(|i| level(price - 0.5 * f64::from(i))).collect(),
                asks: (1..=5).map(|i| level(price + 0.5 * f64::from(i))).collect(),
                checksum: 42,
                last_update: 1_700_000_000_000 + id as i64 * 100,
            }),
        )
    }

    fn report(id: u64, order: &OrderRequest, state: OrderState, reason: Option<&str>) -> MarketEvent {
        let filled = matches!(state, OrderState::Filled);
        let price = order.price.unwrap_or(65_000.0);
        event(
            id,
            "sim",
            &order.symbol,
            EventKind::ExecReport,
            Payload::ExecReport(ExecReportPayload {
                client_order_id: order.client_order_id.clone(),
                exchange_order_id: format!("x-{id}"),
                state,
                side: order.side,
                order_type: if order.price.is_some() { OrderType::Limit } else { OrderType::Market },
                price: format!("{price:.2}"),
                quantity: order.quantity.to_string(),
                filled_quantity: if filled { order.quantity.to_string() } else { "0".into() },
                remaining_qty: if filled { "0".into() } else { order.quantity.to_string() },
                avg_fill_price: if filled { format!("{price:.2}") } else { "0".into() },
                timestamp: 1_700_000_000_000 + id as i64 * 100,
                reject_reason: reason.map(str::to_owned),
            }),
        )
    }

    fn error_lines(shared: &HostShared) -> Vec<String> {
        shared.logs.lines().into_iter().filter(|l| l.level == LogLevel::Error).map(|l| l.message).collect()
    }

    #[test]
    fn js_instance_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<JsInstance>();
        assert_send::<HostError>();
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<HostShared>();
    }

    #[test]
    fn names_match_serde() {
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(serde_json::to_value(side).unwrap(), json!(side_name(side)));
        }
        for state in ORDER_STATES {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(state_name(state)));
            assert_eq!(ORDER_STATES[state_index(state)], state);
        }
        for order_type in [OrderType::Market, OrderType::Limit] {
            assert_eq!(serde_json::to_value(order_type).unwrap(), json!(order_type_name(order_type)));
        }
        for kind in EventKind::ALL {
            assert_eq!(EventKind::ALL[kind_index(kind)], kind);
        }
        for (index, handler) in Handler::ALL.iter().enumerate() {
            assert_eq!(*handler as usize, index);
        }
        assert_eq!(js_number("65000.12"), 65000.12);
        assert_eq!(js_number(" 1 "), 1.0);
        assert_eq!(js_number(""), 0.0);
        assert!(js_number("inf").is_nan());
        assert!(js_number("abc").is_nan());
    }

    #[test]
    fn evt_ctx_and_payload_have_the_documented_shape() {
        let source = module(
            "['Trade', 'Ticker', 'BookSnapshot', 'ExecReport', 'BalanceUpdate']",
            "globalThis.seen = [];
             const keep = (name) => function (ctx, evt, payload, extra) {
               seen.push({ name, self: this === handlers, ctx, evt, same: evt.payload === payload, extra,
                           nargs: arguments.length });
             };
             const handlers = { onTrade: keep('onTrade'), onTicker: keep('onTicker'),
               onBookSnapshot: keep('onBookSnapshot'), onOrderRejected: keep('onOrderRejected'),
               onOrderFilled: keep('onOrderFilled'), onBalanceUpdate: keep('onBalanceUpdate') };
             return handlers;",
        );
        let mut h = start(&source);
        h.instance.dispatch(&trade(7, 65000.12)).unwrap();
        h.instance.dispatch(&ticker(8, 65000.0)).unwrap();
        h.instance.dispatch(&book(9, 65000.0)).unwrap();
        let order = OrderRequest {
            owner: Arc::from("inst-1"),
            client_order_id: "inst-1-1".into(),
            symbol: Arc::from("ETH-USDT"),
            side: Side::Sell,
            quantity: 0.25,
            price: Some(3000.0),
        };
        h.instance.dispatch(&report(10, &order, OrderState::Rejected, Some("no funds"))).unwrap();
        h.instance.dispatch(&report(11, &order, OrderState::Filled, None)).unwrap();
        let balance = event(
            12,
            "sim",
            "BTC-USDT",
            EventKind::BalanceUpdate,
            Payload::Balance(crate::venue::BalancePayload {
                currency: "USDT".into(),
                total: "1000".into(),
                available: "900".into(),
                timestamp: 5,
            }),
        );
        h.instance.dispatch(&balance).unwrap();

        let seen = eval_json(&h.instance, "seen");
        let hash = RevisionHash::of(source.as_bytes()).to_string();
        assert_eq!(
            seen[0],
            json!({"name": "onTrade", "self": true, "same": true, "extra": 65000.12, "nargs": 4,
                   "ctx": {"instanceId": "inst-1", "strategy": "test", "hash": hash, "provider": "sim", "symbol": "BTC-USDT"},
                   "evt": {"eventId": 7, "provider": "sim", "symbol": "BTC-USDT", "type": "Trade", "seqProvider": 7,
                           "ingestTs": 1_700_000_000_700_i64, "emitTs": 1_700_000_000_701_i64,
                           "payload": {"tradeId": "t-7", "side": "sell", "price": "65000.12", "quantity": "0.0123",
                                       "timestamp": 1_700_000_000_700_i64}}})
        );
        // The JS objects serialise exactly like the Rust event.
        for (index, evt) in [trade(7, 65000.12), ticker(8, 65000.0), book(9, 65000.0)].iter().enumerate() {
            assert_eq!(seen[index]["evt"], serde_json::to_value(evt).unwrap(), "{index}");
            assert_eq!(seen[index]["nargs"], json!(if index == 0 { 4 } else { 3 }));
        }
        assert_eq!(seen[3]["name"], "onOrderRejected");
        assert_eq!(seen[3]["extra"], "no funds");
        assert_eq!(seen[3]["ctx"]["symbol"], "ETH-USDT");
        assert_eq!(
            seen[3]["evt"],
            serde_json::to_value(report(10, &order, OrderState::Rejected, Some("no funds"))).unwrap()
        );
        assert_eq!(seen[4]["name"], "onOrderFilled");
        assert_eq!(seen[4]["nargs"], 3);
        assert_eq!(seen[4]["evt"], serde_json::to_value(report(11, &order, OrderState::Filled, None)).unwrap());
        assert_eq!(seen[5]["evt"], serde_json::to_value(&balance).unwrap());
        let c = counters(&h);
        assert_eq!((c.events_delivered, c.orders_filled, c.handler_errors), (6, 1, 0));
        assert!(c.last_event_at.is_some());
    }

    #[test]
    fn env_carries_config_metadata_events_and_runtime() {
        let source = module(
            "['Trade']",
            "globalThis.env = { config: env.config, metadata: env.metadata, events: env.events,
               helpers: Object.keys(env.helpers), runtime: Object.keys(env.runtime),
               dry: env.runtime.isDryRun(), active: env.runtime.isTradingActive(),
               providers: env.runtime.providers(), last: env.runtime.getLastPrice(),
               state: env.runtime.getMarketState() };
             globalThis.rt = env.runtime;
             return {};",
        );
        let h = start_with(&source, json!({"size": 2}), JsLimits::default(), DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook))
            .unwrap();
        let env = eval_json(&h.instance, "env");
        assert_eq!(env["config"], json!({"size": 2, "dry_run": true}));
        assert_eq!(env["metadata"]["name"], "test");
        assert_eq!(env["metadata"]["config"][1]["name"], "dry_run");
        assert_eq!(env["events"], json!(["Trade"]));
        assert_eq!(env["helpers"], json!(["log", "sleep"]));
        assert_eq!(
            env["runtime"],
            json!([
                "isTradingActive",
                "isDryRun",
                "providers",
                "selectProvider",
                "submitMarketOrder",
                "submitOrder",
                "getLastPrice",
                "getBidPrice",
                "getAskPrice",
                "getMarketState"
            ])
        );
        assert_eq!(env["dry"], true);
        assert_eq!(env["active"], true);
        assert_eq!(env["providers"], json!(["sim"]));
        assert_eq!(env["last"], json!(null));
        assert_eq!(env["state"], json!(null));
        assert!(!h.instance.wants_cross_provider_events());
    }

    #[test]
    fn market_getters_follow_the_current_symbol() {
        let source = module(
            "['Trade']",
            "globalThis.rt = env.runtime; globalThis.got = [];
             return { onTrade(ctx) { got.push([ctx.symbol, rt.getLastPrice(), rt.getBidPrice(), rt.getAskPrice(),
                                               rt.getMarketState()]); } };",
        );
        let mut h = start(&source);
        let sim = &h.providers[0];
        sim.set_price("BTC-USDT", 100.0);
        sim.set_price("ETH-USDT", 10.0);
        // Before any event: the first symbol of the first provider.
        assert_eq!(eval_json(&h.instance, "rt.getLastPrice()"), json!(100));
        h.instance.dispatch(&trade_on(1, "sim", "ETH-USDT", 10.0)).unwrap();
        h.instance.dispatch(&trade_on(2, "sim", "BTC-USDT", 100.0)).unwrap();
        let got = eval_json(&h.instance, "got");
        assert_eq!(
            got[0],
            json!(["ETH-USDT", 10, 9.5, 10.5, {"last": 10, "bid": 9.5, "ask": 10.5, "spread": 1, "spreadPct": 10}])
        );
        assert_eq!(got[1][0], "BTC-USDT");
        assert_eq!(got[1][1], 100);
        // After the event: still the last event's symbol.
        assert_eq!(eval_json(&h.instance, "rt.getAskPrice()"), json!(100.5));
    }

    #[test]
    fn dry_run_orders_are_logged_and_counted_but_never_sent() {
        let source = module(
            "['Trade']",
            "globalThis.ids = [];
             return { onTrade(ctx, evt) {
               ids.push(env.runtime.submitMarketOrder('sim', 'buy', 0.01));
               ids.push(env.runtime.submitOrder('sim', -1, '0.5', 64000.5));
               ids.push(env.runtime.submitOrder(evt.provider, 'LONG', 2, null));
             } };",
        );
        let mut h = start(&source);
        h.instance.dispatch(&trade_on(1, "sim", "ETH-USDT", 10.0)).unwrap();
        assert_eq!(eval_json(&h.instance, "ids"), json!(["inst-1-1", "inst-1-2", "inst-1-3"]));
        assert!(h.providers[0].orders().is_empty());
        let c = counters(&h);
        assert_eq!((c.orders_submitted, c.handler_errors), (3, 0));
        let lines: Vec<String> = h.shared.logs.lines().into_iter().map(|l| l.message).collect();
        assert!(lines[0].starts_with("[dry-run] buy 0.01 ETH-USDT @ market"), "{lines:?}");
        assert!(lines[1].starts_with("[dry-run] sell 0.5 ETH-USDT @ 64000.5"), "{lines:?}");
        assert!(lines[2].starts_with("[dry-run] buy 2 ETH-USDT @ market"), "{lines:?}");
    }

    #[test]
    fn live_orders_reach_the_provider() {
        let source = module(
            "['Trade']",
            "globalThis.ids = []; globalThis.errors = [];
             return { onTrade(ctx, evt) {
               ids.push(env.runtime.submitMarketOrder('sim', 'sell', 0.25));
               ids.push(env.runtime.submitOrder('sim', 'bid', 1, 99.5));
               try { env.runtime.submitMarketOrder('sim', 'buy', 1); } catch (e) { errors.push(e.message); }
             } };",
        );
        let mut h = start_with(
            &source,
            json!({"dry_run": false}),
            JsLimits::default(),
            DEFAULT_SLEEP_CAP,
            Arc::new(NoSleepHook),
        )
        .unwrap();
        h.instance.dispatch(&trade_on(1, "sim", "ETH-USDT", 10.0)).unwrap();
        // Not submitted yet: the third order of the first call went through too.
        let orders = h.providers[0].orders();
        assert_eq!(orders.len(), 3);
        assert_eq!(
            orders[0],
            OrderRequest {
                owner: Arc::from("inst-1"),
                client_order_id: "inst-1-1".into(),
                symbol: Arc::from("ETH-USDT"),
                side: Side::Sell,
                quantity: 0.25,
                price: None,
            }
        );
        assert_eq!((orders[1].side, orders[1].price, &*orders[1].symbol), (Side::Buy, Some(99.5), "ETH-USDT"));
        assert_eq!(counters(&h).orders_submitted, 3);

        h.providers[0].reject.store(true, Ordering::SeqCst);
        h.instance.dispatch(&trade(2, 10.0)).unwrap();
        // The first submit of the handler threw: the handler error is counted.
        assert_eq!(counters(&h).orders_submitted, 3);
        assert_eq!(counters(&h).handler_errors, 1);
        let errors = error_lines(&h.shared);
        assert!(
            errors[0].contains("onTrade threw") && errors[0].contains("order rejected by provider \"sim\""),
            "{errors:?}"
        );
        assert!(errors[0].starts_with("onTrade threw at line 8, column 37: Error: order"), "{errors:?}");
    }

    #[test]
    fn bad_order_arguments_throw_type_or_range_errors() {
        let source = module(
            "['Trade']",
            "const rt = env.runtime;
             const attempt = (f) => { try { f(); return 'ok'; } catch (e) { return e.name + ': ' + e.message; } };
             globalThis.results = [
               attempt(() => rt.submitMarketOrder('nope', 'buy', 1)),
               attempt(() => rt.submitMarketOrder(undefined, 'buy', 1)),
               attempt(() => rt.submitMarketOrder('sim', 'hold', 1)),
               attempt(() => rt.submitMarketOrder('sim', 0, 1)),
               attempt(() => rt.submitMarketOrder('sim', {}, 1)),
               attempt(() => rt.submitMarketOrder('sim', 'buy', 0)),
               attempt(() => rt.submitMarketOrder('sim', 'buy', -1)),
               attempt(() => rt.submitMarketOrder('sim', 'buy', Infinity)),
               attempt(() => rt.submitMarketOrder('sim', 'buy')),
               attempt(() => rt.submitMarketOrder('sim', 'buy', 'lots')),
               attempt(() => rt.submitOrder('sim', 'buy', 1, -5)),
               attempt(() => rt.submitOrder('sim', 'buy', 1, 'x')),
               attempt(() => rt.submitOrder('sim', ' Sell ', 1, 5)),
               attempt(() => rt.submitOrder('sim', 'ask', 1, undefined)),
               attempt(() => env.helpers.sleep('soon')),
               attempt(() => env.helpers.sleep(-1)),
               attempt(() => env.helpers.sleep({})),
               attempt(() => rt.selectProvider({})),
             ];
             return {};",
        );
        let h = start(&source);
        let results = eval_json(&h.instance, "results");
        let results: Vec<&str> = results.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let expect = [
            "TypeError: unknown provider \"nope\" (in scope: sim)",
            "TypeError: provider must be a provider name (string), got undefined",
            "RangeError: unknown side \"hold\"",
            "RangeError: side 0 has no sign",
            "TypeError: side must be a string or a signed number, got object",
            "RangeError: quantity must be a finite number greater than 0, got 0",
            "RangeError: quantity must be a finite number greater than 0, got -1",
            "RangeError: quantity must be a finite number greater than 0, got inf",
            "TypeError: quantity must be a number, got undefined",
            "RangeError: quantity must be a finite number greater than 0, got NaN",
            "RangeError: price must be a finite number greater than 0, got -5",
            "RangeError: price must be a finite number greater than 0, got NaN",
            "ok",
            "ok",
            "RangeError: sleep: \"soon\" is not a duration",
            "RangeError: sleep: -1 is not a valid number of milliseconds",
            "TypeError: sleep(ms) needs a number or a duration string, got object",
            "TypeError: selectProvider(seed) needs a string or number seed, got object",
        ];
        assert_eq!(results.len(), expect.len());
        for (got, want) in results.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
        assert_eq!(counters(&h).orders_submitted, 2);
    }

    #[test]
    fn select_provider_is_deterministic() {
        let source = module(
            "['Trade']",
            "const rt = env.runtime;
             globalThis.picks = ['a', 'b', 'c', 'BTC-USDT', 0, 1, 2, 3, -1, 2.5, null].map((s) => rt.selectProvider(s));
             globalThis.again = ['a', 'b', 'c', 'BTC-USDT', 0, 1, 2, 3, -1, 2.5, null].map((s) => rt.selectProvider(s));
             return {};",
        );
        let providers =
            vec![FakeProvider::new("p0", &["X"]), FakeProvider::new("p1", &["X"]), FakeProvider::new("p2", &["X"])];
        let spec = spec_for(&source, json!({}), &providers, JsLimits::default());
        let instance = JsInstance::start(spec, &source, Arc::new(HostShared::new()), Arc::new(NoSleepHook)).unwrap();
        let picks = eval_json(&instance, "picks");
        assert_eq!(picks, eval_json(&instance, "again"));
        let names = ["p0", "p1", "p2"];
        let by_string = |s: &str| names[(fnv1a(s.as_bytes()) % 3) as usize];
        assert_eq!(
            picks,
            json!([
                by_string("a"),
                by_string("b"),
                by_string("c"),
                by_string("BTC-USDT"),
                "p0",
                "p1",
                "p2",
                "p0",
                "p2",
                names[(fnv1a(&2.5f64.to_bits().to_le_bytes()) % 3) as usize],
                "p0"
            ])
        );
    }

    #[test]
    fn cross_provider_events_need_opt_in() {
        for (wants, expected) in
            [("", 2), ("wantsCrossProviderEvents: true,", 4), ("wantsCrossProviderEvents() { return 1; },", 4)]
        {
            let source = module(
                "['Trade']",
                &format!(
                    "globalThis.got = []; return {{ {wants} onTrade(ctx) {{ got.push(ctx.provider + '/' + ctx.symbol); }} }};"
                ),
            );
            let providers = vec![FakeProvider::new("home", &["A", "B"]), FakeProvider::new("away", &["A"])];
            let mut spec = spec_for(&source, json!({}), &providers, JsLimits::default());
            spec.scope[0].1 = vec![Arc::from("A")];
            let shared = Arc::new(HostShared::new());
            let mut instance = JsInstance::start(spec, &source, Arc::clone(&shared), Arc::new(NoSleepHook)).unwrap();
            for (id, (provider, symbol)) in
                [("home", "A"), ("away", "A"), ("home", "B"), ("elsewhere", "A"), ("home", "A"), ("away", "A")]
                    .into_iter()
                    .enumerate()
            {
                instance.dispatch(&trade_on(id as u64, provider, symbol, 1.0)).unwrap();
            }
            assert_eq!(shared.counters.snapshot().events_delivered, expected, "{wants}");
            let got = eval_json(&instance, "got");
            if expected == 2 {
                assert_eq!(got, json!(["home/A", "home/A"]));
            } else {
                assert_eq!(got, json!(["home/A", "away/A", "home/A", "away/A"]));
            }
        }
    }

    #[test]
    fn exec_report_filled_calls_on_order_filled_and_counts() {
        let source = module(
            "['Trade', 'ExecReport']",
            "globalThis.calls = [];
             const note = (name) => (ctx, evt, payload, reason) => calls.push([name, payload.state, payload.clientOrderId, reason ?? null]);
             return { onOrderAcknowledged: note('ack'), onOrderPartialFill: note('partial'), onOrderFilled: note('filled'),
                      onOrderCancelled: note('cancelled'), onOrderExpired: note('expired'), onOrderRejected: note('rejected') };",
        );
        let mut h = start(&source);
        let order = OrderRequest {
            owner: Arc::from("inst-1"),
            client_order_id: "inst-1-9".into(),
            symbol: Arc::from("BTC-USDT"),
            side: Side::Buy,
            quantity: 1.0,
            price: None,
        };
        for (id, state) in ORDER_STATES.into_iter().enumerate() {
            let reason = (state == OrderState::Rejected).then_some("too big");
            h.instance.dispatch(&report(id as u64, &order, state, reason)).unwrap();
        }
        assert_eq!(
            eval_json(&h.instance, "calls"),
            json!([
                ["ack", "acknowledged", "inst-1-9", null],
                ["partial", "partiallyFilled", "inst-1-9", null],
                ["filled", "filled", "inst-1-9", null],
                ["cancelled", "cancelled", "inst-1-9", null],
                ["expired", "expired", "inst-1-9", null],
                ["rejected", "rejected", "inst-1-9", "too big"]
            ])
        );
        let c = counters(&h);
        assert_eq!((c.events_delivered, c.orders_filled, c.handler_errors), (6, 1, 0));
    }

    #[test]
    fn events_not_subscribed_are_not_delivered() {
        let source = module(
            "['Ticker']",
            "globalThis.calls = 0;
             return { onTrade() { calls++; }, onTicker() { calls += 100; } };",
        );
        let mut h = start(&source);
        h.instance.dispatch(&trade(1, 1.0)).unwrap();
        h.instance.dispatch(&book(2, 1.0)).unwrap();
        assert_eq!(counters(&h).events_delivered, 0);
        assert_eq!(counters(&h).last_event_at, None);
        assert_eq!(eval_json(&h.instance, "calls"), json!(0));
        h.instance.dispatch(&ticker(3, 1.0)).unwrap();
        assert_eq!(counters(&h).events_delivered, 1);
        assert_eq!(eval_json(&h.instance, "calls"), json!(100));
        // A subscribed kind with no handler still counts as delivered.
        let source = module("['Trade', 'Ticker']", "return {};");
        let mut h = start(&source);
        h.instance.dispatch(&trade(1, 1.0)).unwrap();
        assert_eq!(counters(&h).events_delivered, 1);
    }

    #[test]
    fn a_throwing_handler_is_counted_and_the_next_event_is_handled() {
        let source = module(
            "['Trade']",
            "globalThis.handled = 0;
             return { onTrade(ctx, evt, payload, price) {
               if (evt.eventId === 2) {
                 null.boom;
               }
               handled++;
             } };",
        );
        let mut h = start(&source);
        for id in 1..=3 {
            h.instance.dispatch(&trade(id, 1.0)).unwrap();
        }
        assert_eq!(eval_json(&h.instance, "handled"), json!(2));
        let c = counters(&h);
        assert_eq!((c.events_delivered, c.handler_errors), (3, 1));
        let errors = error_lines(&h.shared);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("onTrade threw at line 9, column 18: TypeError: cannot read property"),
            "{errors:?}"
        );
        let revision = RevisionHash::of(source.as_bytes());
        assert!(errors[0].ends_with(&format!("(strategy test, revision {revision})")), "{errors:?}");
    }

    #[test]
    fn async_handler_rejections_count_as_handler_errors() {
        let source = module(
            "['Trade']",
            "globalThis.after = 0;
             return { async onTrade(ctx, evt) {
               await null;
               after++;
               if (evt.eventId === 1) throw new RangeError('late');
             } };",
        );
        let mut h = start(&source);
        h.instance.dispatch(&trade(1, 1.0)).unwrap();
        h.instance.dispatch(&trade(2, 1.0)).unwrap();
        assert_eq!(eval_json(&h.instance, "after"), json!(2), "promise jobs ran");
        assert_eq!(counters(&h).handler_errors, 1);
        let errors = error_lines(&h.shared);
        assert!(errors[0].starts_with("onTrade threw at line 10, column 49: RangeError: late"), "{errors:?}");
    }

    #[test]
    fn an_infinite_loop_hits_the_cpu_budget() {
        let source = module("['Trade']", "return { onTrade() { for (;;) {} } };");
        let limits = JsLimits { cpu_budget: Duration::from_millis(100), ..JsLimits::default() };
        let mut h = start_with(&source, json!({}), limits, DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook)).unwrap();
        let started = Instant::now();
        let err = h.instance.dispatch(&trade(1, 1.0)).unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err, HostError::CpuBudget("handler onTrade exceeded the CPU budget of 100 ms".into()));
        assert!(elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(750), "{elapsed:?}");
        // Dead from now on.
        assert_eq!(h.instance.dispatch(&trade(2, 1.0)).unwrap_err(), err);
        assert_eq!(counters(&h).handler_errors, 0);
        assert!(error_lines(&h.shared)[0].contains("CPU budget"));
    }

    #[test]
    fn a_loop_in_create_or_the_module_hits_the_cpu_budget() {
        let limits = JsLimits { cpu_budget: Duration::from_millis(50), ..JsLimits::default() };
        let source = module("['Trade']", "while (true) {}");
        let providers = vec![FakeProvider::new("sim", &["BTC-USDT"])];
        let spec = spec_for(&source, json!({}), &providers, limits.clone());
        let err =
            JsInstance::start(spec.clone(), &source, Arc::new(HostShared::new()), Arc::new(NoSleepHook)).err().unwrap();
        assert_eq!(err, HostError::CpuBudget("create(env) exceeded the CPU budget of 50 ms".into()));
        let looping = format!("if (globalThis.loop) for (;;) {{}}\n{source}");
        let spec = HostSpec { ..spec };
        let shared = Arc::new(HostShared::new());
        let err = JsInstance::start(spec, &format!("globalThis.loop = 1;\n{looping}"), shared, Arc::new(NoSleepHook))
            .err()
            .unwrap();
        assert_eq!(err, HostError::CpuBudget("module evaluation exceeded the CPU budget of 50 ms".into()));
    }

    #[test]
    fn unbounded_allocation_hits_the_memory_limit() {
        let source = module(
            "['Trade']",
            "const hoard = [];
             return { onTrade() { for (;;) hoard.push(new Array(10000).fill(1.5)); } };",
        );
        let limits = JsLimits { memory_bytes: 16 << 20, cpu_budget: Duration::from_secs(10), ..JsLimits::default() };
        let mut h = start_with(&source, json!({}), limits, DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook)).unwrap();
        let err = h.instance.dispatch(&trade(1, 1.0)).unwrap_err();
        let HostError::Memory(message) = &err else { panic!("{err:?}") };
        assert!(message.starts_with("handler onTrade hit the memory limit of 16 MiB"), "{message}");
        assert_eq!(h.instance.dispatch(&trade(2, 1.0)).unwrap_err(), err);
    }

    #[test]
    fn start_errors_say_where() {
        let cases = [
            (
                "'use strict';\nmodule.exports = {\n  create( {\n};",
                "module evaluation failed at line 4, column 2: SyntaxError",
            ),
            (
                &*module("['Trade']", "    throw new Error('nope');"),
                "create(env) threw at line 6, column 15: Error: nope",
            ),
            (&*module("['Trade']", "    return 42;"), "create(env) must return an object, got int"),
            (&*module("['Trade']", "    return () => 1;"), "create(env) must return an object, got function"),
            (&*module("['Trade']", "    return Promise.resolve({});"), "create(env) returned a promise"),
        ];
        let metadata_source = module("['Trade']", "return {};");
        for (source, expected) in cases {
            let providers = vec![FakeProvider::new("sim", &["BTC-USDT"])];
            let mut spec = spec_for(&metadata_source, json!({}), &providers, JsLimits::default());
            spec.hash = RevisionHash::of(source.as_bytes());
            let shared = Arc::new(HostShared::new());
            let err = JsInstance::start(spec, source, Arc::clone(&shared), Arc::new(NoSleepHook)).err().unwrap();
            let HostError::Start(message) = &err else { panic!("{err:?}") };
            assert!(message.starts_with(expected), "{message:?} should start with {expected:?}");
            assert_eq!(error_lines(&shared), std::slice::from_ref(message), "the instance log says why");
        }
    }

    #[test]
    fn console_and_helpers_log_land_in_the_ring() {
        let source = format!(
            "console.log('loading', 1, {{a: 1}});\n{}",
            module(
                "['Trade']",
                "console.warn('careful'); console.error(new TypeError('bad'));
                 return { onTrade(ctx, evt, payload, price) { env.helpers.log('trade', price, [1, 2]); console.info('x'); } };"
            )
        );
        let mut h = start(&source);
        h.instance.dispatch(&trade(1, 65000.5)).unwrap();
        let lines: Vec<(LogLevel, String)> = h.shared.logs.lines().into_iter().map(|l| (l.level, l.message)).collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Log, "loading 1 {\"a\":1}".to_owned()),
                (LogLevel::Warn, "careful".to_owned()),
                (LogLevel::Error, "TypeError: bad".to_owned()),
                (LogLevel::Info, "trade 65000.5 [1,2]".to_owned()),
                (LogLevel::Info, "x".to_owned()),
            ]
        );
    }

    #[test]
    fn sleep_waits_is_capped_and_does_not_use_the_cpu_budget() {
        let source = module(
            "['Trade']",
            "return { onTrade(ctx, evt) {
               const t0 = Date.now();
               env.helpers.sleep(evt.eventId === 1 ? '50ms' : evt.eventId === 2 ? 10000 : 400);
               globalThis.slept = Date.now() - t0;
             } };",
        );
        let hook = Arc::new(CountingHook::default());
        let limits = JsLimits { cpu_budget: Duration::from_millis(250), ..JsLimits::default() };
        let mut h = start_with(&source, json!({}), limits, Duration::from_secs(1), hook.clone()).unwrap();

        let started = Instant::now();
        h.instance.dispatch(&trade(1, 1.0)).unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(50) && elapsed < Duration::from_millis(400), "{elapsed:?}");

        // Capped by sleep_cap (1 s), not 10 s.
        let started = Instant::now();
        h.instance.dispatch(&trade(2, 1.0)).unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1600), "{elapsed:?}");

        // 400 ms of sleep with a 250 ms CPU budget: no CpuBudget error.
        h.instance.dispatch(&trade(3, 1.0)).unwrap();
        assert!(eval_json(&h.instance, "slept").as_f64().unwrap() >= 399.0);
        assert_eq!(counters(&h).handler_errors, 0);
        assert_eq!(hook.before.load(Ordering::SeqCst), 3);
        assert_eq!(hook.after.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn request_stop_interrupts_sleep_at_once() {
        let source = module("['Trade']", "return { onTrade() { env.helpers.sleep('5s'); globalThis.after = true; } };");
        let mut h = start(&source);
        let shared = Arc::clone(&h.shared);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            shared.request_stop();
        });
        let started = Instant::now();
        let err = h.instance.dispatch(&trade(1, 1.0)).unwrap_err();
        let elapsed = started.elapsed();
        stopper.join().unwrap();
        assert_eq!(err, HostError::Stopped);
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
        assert_eq!(eval_json(&h.instance, "globalThis.after ?? null"), json!(null));
        assert_eq!(h.instance.dispatch(&trade(2, 1.0)).unwrap_err(), HostError::Stopped);
        assert_eq!(counters(&h).handler_errors, 0);
    }

    #[test]
    fn request_stop_interrupts_a_busy_handler_and_trading_turns_inactive() {
        let source = module(
            "['Trade']",
            "return { onTrade() { while (env.runtime.isTradingActive() || true) { try { for (;;) {} } catch (e) {} } } };",
        );
        let limits = JsLimits { cpu_budget: Duration::from_secs(30), ..JsLimits::default() };
        let mut h = start_with(&source, json!({}), limits, DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook)).unwrap();
        let shared = Arc::clone(&h.shared);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            shared.request_stop();
        });
        let started = Instant::now();
        assert_eq!(h.instance.dispatch(&trade(1, 1.0)).unwrap_err(), HostError::Stopped);
        assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
        stopper.join().unwrap();

        // A stop before start is reported too; reset_stop allows a new start.
        let shared = Arc::new(HostShared::new());
        shared.request_stop();
        let providers = vec![FakeProvider::new("sim", &["BTC-USDT"])];
        let spec = spec_for(&source, json!({}), &providers, JsLimits::default());
        let err = JsInstance::start(spec.clone(), &source, Arc::clone(&shared), Arc::new(NoSleepHook)).err();
        assert_eq!(err, Some(HostError::Stopped));
        shared.reset_stop();
        let instance = JsInstance::start(spec, &source, Arc::clone(&shared), Arc::new(NoSleepHook)).unwrap();
        assert_eq!(eval_json(&instance, "1"), json!(1));
    }

    /// Drives one demo strategy with 200 synthetic events; live orders get
    /// acknowledged and then filled (every fifth one rejected).
    fn run_demo(path: &std::path::Path, dry_run: bool) -> (crate::runtime::logs::CountersView, usize) {
        let source = std::fs::read_to_string(path).unwrap();
        let providers = vec![FakeProvider::new("sim", &["BTC-USDT", "ETH-USDT"])];
        let spec = spec_for(&source, json!({"dry_run": dry_run}), &providers, JsLimits::default());
        let shared = Arc::new(HostShared::new());
        let mut instance = JsInstance::start(spec, &source, Arc::clone(&shared), Arc::new(NoSleepHook))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut price = 65_000.0_f64;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut id = 0;
        let mut reported = 0;
        for i in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // A random walk with bursts, so that every strategy trades.
            let step = (seed % 2001) as f64 / 1000.0 - 1.0;
            price *= 1.0 + step * if (i / 25) % 2 == 0 { 0.004 } else { 0.0005 };
            providers[0].set_price("BTC-USDT", price);
            id += 1;
            let event = match i % 3 {
                0 => trade(id, price),
                1 => ticker(id, price),
                _ => book(id, price),
            };
            instance.dispatch(&event).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let orders = providers[0].orders();
            for order in &orders[reported..] {
                id += 1;
                instance.dispatch(&report(id, order, OrderState::Acknowledged, None)).unwrap();
                id += 1;
                let rejected = (reported + 1) % 5 == 0;
                let final_state = if rejected { OrderState::Rejected } else { OrderState::Filled };
                instance.dispatch(&report(id, order, final_state, rejected.then_some("test"))).unwrap();
                reported += 1;
            }
        }
        let errors = error_lines(&shared);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        (shared.counters.snapshot(), providers[0].orders().len())
    }

    #[test]
    fn demo_strategies_run() {
        // The daemon crate's demo directory; `file!()` is the fallback for a
        // crate that includes this file by absolute path.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/strategies");
        let dir = if dir.exists() {
            dir
        } else {
            std::path::Path::new(file!()).parent().unwrap().join("../../demo/strategies")
        };
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "js"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 6, "{paths:?}");
        for path in paths {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (dry, sent) = run_demo(&path, true);
            assert_eq!(dry.handler_errors, 0, "{name}");
            assert_eq!(sent, 0, "{name}: dry run never reaches the provider");
            let (live, sent) = run_demo(&path, false);
            assert_eq!(live.handler_errors, 0, "{name}");
            assert_eq!(live.orders_submitted as usize, sent, "{name}");
            if name != "noop.js" {
                assert!(dry.orders_submitted > 0, "{name} never traded in dry run");
                assert!(sent > 0, "{name} never traded live");
                assert!(live.orders_filled > 0, "{name}");
            }
            eprintln!(
                "{name}: dry run {} events, {} orders; live {} events, {} orders, {} filled",
                dry.events_delivered,
                dry.orders_submitted,
                live.events_delivered,
                live.orders_submitted,
                live.orders_filled
            );
        }
    }

    /// Per-dispatch cost of a Trade to a trivial `onTrade`, against a bare
    /// call of the same function with no arguments. Run with
    /// `cargo test --release -- --ignored --nocapture dispatch_cost`.
    #[test]
    #[ignore = "benchmark"]
    fn dispatch_cost() {
        let source = module("['Trade']", "let n = 0; return { onTrade(ctx, evt, payload, price) { n++; } };");
        let mut h = start(&source);
        let rounds = 200_000u32;
        let event = trade(1, 65000.12);
        for _ in 0..3 {
            let started = Instant::now();
            for _ in 0..rounds {
                h.instance.dispatch(&event).unwrap();
            }
            let dispatch = started.elapsed() / rounds;

            let (bare, prebuilt) = h.instance.context.with(|ctx| {
                let slots = ctx.userdata::<Slots>().unwrap();
                let function = slots[SLOT_HANDLERS + Handler::Trade as usize].as_function().unwrap().clone();
                let this = slots[SLOT_HANDLER_OBJECT].clone();
                let started = Instant::now();
                for _ in 0..rounds {
                    function.call::<_, ()>((This(this.clone()),)).unwrap();
                }
                let bare = started.elapsed() / rounds;
                // The same call with ctx, evt and payload built once.
                let (a, b, c) = (
                    Object::new(ctx.clone()).unwrap(),
                    Object::new(ctx.clone()).unwrap(),
                    Object::new(ctx.clone()).unwrap(),
                );
                let started = Instant::now();
                for _ in 0..rounds {
                    function.call::<_, ()>((This(this.clone()), a.clone(), b.clone(), c.clone(), 65000.12)).unwrap();
                }
                (bare, started.elapsed() / rounds)
            });
            eprintln!(
                "dispatch {dispatch:?} per Trade, bare call {bare:?} (ratio {:.1}), call with prebuilt args {prebuilt:?}",
                dispatch.as_secs_f64() / bare.as_secs_f64()
            );
        }
        eprintln!("runtime memory after start: {} bytes", h.instance.memory_used());
    }
}
