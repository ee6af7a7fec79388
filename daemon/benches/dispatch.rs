//! Handler throughput of the JS host, from a bare rquickjs call loop up to
//! the daemon's worker pool, in one criterion group (`dispatch`), so that
//! every number comes from the same run on the same machine.
//!
//! Every benchmark delivers Trade events to the same trivial strategy,
//! `onTrade(ctx, evt, payload, price) { last = price; }`:
//!
//! - `bare_call_fresh_args` — the floor: one plain rquickjs runtime (no
//!   limits, no interrupt handler) calls the handler, building fresh `ctx`,
//!   `evt` and `payload` objects for every call with `Object::new` + `set`,
//!   with the fields and values the host gives strategies (checked at start
//!   against what the host really passes). Like the host, it interns the
//!   property names once and reuses the JS strings that do not change
//!   (instance id, strategy, hash, provider, symbol, type, side); `tradeId`,
//!   `price` and `quantity` are new JS strings per call, and `price` is
//!   parsed into the fourth argument.
//! - `bare_call_reused_args` — the same call with the objects built once
//!   (the absolute lower bound, for context).
//! - `host_dispatch` — `JsInstance::dispatch` of a Trade `MarketEvent`, one
//!   thread.
//! - `daemon_pool` — the daemon's real path: a `Pool` with 2 workers and
//!   100 cells, each with its own started `JsInstance`. One iteration fans
//!   100 events out to every cell the way `Instances::publish` does
//!   (`Cell::push`, `Pool::schedule` when it returns true), then waits until
//!   every cell's `eventsDelivered` reached its target, so one iteration is
//!   10,000 handler calls (`iter_custom`, whole batches timed). The waiting
//!   thread sleeps (20 µs at a time) rather than spins so as not to take a
//!   core from the workers; the wake-up delay makes this number slightly
//!   pessimistic.
//!
//! Throughput is in handler calls (elements) per second. At the end the
//! bench prints `host_dispatch / bare_call_fresh_args` and
//! `daemon_pool / bare_call_fresh_args` in throughput terms, read from
//! criterion's estimates of this run. If they are missing (filtered run,
//! `--test` mode), compute them by hand: ratio = thrpt(X) / thrpt(bare) =
//! time(bare) / (time(X) / elements per iteration of X), with the typical
//! (middle) values criterion prints. Note that `daemon_pool` uses two
//! worker threads against one for the bare loop: its per-core ratio is half
//! the printed one.
//!
//! Run: `cargo bench -p strata-daemon --bench dispatch`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rquickjs::function::This;
use rquickjs::{Atom, Context, Ctx, Function, Object, Runtime, Value};
use strata_daemon::instances::pool::{Cell, FatalHandler, Pool, PoolSleepHook};
use strata_daemon::js::{self, JsLimits};
use strata_daemon::runtime::config::validate_config;
use strata_daemon::runtime::host::{DEFAULT_SLEEP_CAP, HostShared, HostSpec, JsInstance, NoSleepHook, SleepHook};
use strata_daemon::venue::{MarketEvent, MarketState, OrderRequest, Payload, Provider, Side, TradePayload, VenueError};
use strata_shared::RevisionHash;
use strata_shared::metadata::EventKind;

/// Distinct events the single-thread benchmarks cycle through.
const EVENTS: usize = 64;
/// Cells (instances) of the pool benchmark.
const CELLS: usize = 100;
/// Events fanned out to every cell per pool iteration.
const PER_CELL: usize = 100;
/// Queue capacity of a cell (the daemon's default `queue_capacity`).
const QUEUE_CAPACITY: usize = 1024;
/// Worker threads of the pool benchmark.
const WORKERS: usize = 2;

const PROVIDER: &str = "sim";
const SYMBOL: &str = "BTC-USDT";

/// The body of `create(env)` of the benchmarked strategy; the bare loops
/// evaluate the same code.
const TRIVIAL: &str = "let last = 0; return { onTrade(ctx, evt, payload, price) { last = price; } };";
/// A strategy that logs what its handler receives, for the start-up check.
const ECHO: &str =
    "return { onTrade(ctx, evt, payload, price) { console.log(JSON.stringify([ctx, evt, payload, price])); } };";

/// A provider that only names its symbols (the host asks nothing else of
/// it when the strategy sends no orders).
struct BenchProvider {
    symbols: Vec<Arc<str>>,
    tx: tokio::sync::broadcast::Sender<Arc<MarketEvent>>,
}

impl Provider for BenchProvider {
    fn name(&self) -> &str {
        PROVIDER
    }
    fn kind(&self) -> &str {
        "bench"
    }
    fn symbols(&self) -> &[Arc<str>] {
        &self.symbols
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<MarketEvent>> {
        self.tx.subscribe()
    }
    fn market_state(&self, _symbol: &str) -> Option<MarketState> {
        None
    }
    fn submit(&self, _order: OrderRequest) -> Result<(), VenueError> {
        Err(VenueError::InvalidOrder("the bench provider takes no orders".into()))
    }
}

/// A strategy module subscribed to Trade whose `create(env)` body is `create`.
fn module(create: &str) -> String {
    format!(
        "'use strict';\nmodule.exports = {{\n  metadata: {{ name: 'bench', displayName: 'Bench', events: ['Trade'] }},\n  create(env) {{\n{create}\n  }},\n}};\n"
    )
}

fn spec(source: &str, instance_id: &str, provider: &Arc<dyn Provider>) -> HostSpec {
    let limits = JsLimits::default();
    let metadata = js::inspect_module(source.as_bytes(), &limits).unwrap_or_else(|d| panic!("{d:#?}"));
    let config = validate_config(&metadata, &serde_json::json!({})).unwrap_or_else(|e| panic!("{e:#?}"));
    HostSpec {
        instance_id: Arc::from(instance_id),
        strategy: Arc::from(metadata.name.as_str()),
        hash: RevisionHash::of(source.as_bytes()),
        metadata: Arc::new(metadata),
        config,
        scope: vec![(Arc::clone(provider), vec![Arc::from(SYMBOL)])],
        limits,
        sleep_cap: DEFAULT_SLEEP_CAP,
        max_orders_per_sec: strata_daemon::runtime::orders::DEFAULT_MAX_ORDERS_PER_SEC,
    }
}

/// A Trade like the simulated venue's, sharing the provider and symbol
/// `Arc`s as a venue does.
fn trade(id: u64, provider: &Arc<str>, symbol: &Arc<str>) -> MarketEvent {
    let ts = 1_700_000_000_000 + id as i64 * 100;
    MarketEvent {
        event_id: id,
        provider: Arc::clone(provider),
        symbol: Arc::clone(symbol),
        kind: EventKind::Trade,
        seq_provider: id,
        ingest_ts: ts,
        emit_ts: ts + 1,
        payload: Payload::Trade(TradePayload {
            trade_id: format!("t-{id}"),
            side: if id.is_multiple_of(2) { Side::Buy } else { Side::Sell },
            price: format!("{:.2}", 65_000.0 + (id % 97) as f64 * 0.25),
            quantity: "0.0123".into(),
            timestamp: ts,
        }),
    }
}

/// What the bare loop reuses between calls: interned property names and
/// the strings that do not change from event to event (as the host keeps
/// them in its runtime).
struct Reused<'js> {
    instance_id_key: Atom<'js>,
    strategy_key: Atom<'js>,
    hash_key: Atom<'js>,
    provider_key: Atom<'js>,
    symbol_key: Atom<'js>,
    event_id_key: Atom<'js>,
    type_key: Atom<'js>,
    seq_provider_key: Atom<'js>,
    ingest_ts_key: Atom<'js>,
    emit_ts_key: Atom<'js>,
    payload_key: Atom<'js>,
    trade_id_key: Atom<'js>,
    side_key: Atom<'js>,
    price_key: Atom<'js>,
    quantity_key: Atom<'js>,
    timestamp_key: Atom<'js>,
    instance_id: Value<'js>,
    strategy: Value<'js>,
    hash: Value<'js>,
    provider: Value<'js>,
    symbol: Value<'js>,
    trade_type: Value<'js>,
    buy: Value<'js>,
    sell: Value<'js>,
}

impl<'js> Reused<'js> {
    fn new(ctx: &Ctx<'js>, spec: &HostSpec) -> rquickjs::Result<Self> {
        let atom = |name: &str| Atom::from_str(ctx.clone(), name);
        let string = |text: &str| Ok::<_, rquickjs::Error>(rquickjs::String::from_str(ctx.clone(), text)?.into_value());
        Ok(Reused {
            instance_id_key: atom("instanceId")?,
            strategy_key: atom("strategy")?,
            hash_key: atom("hash")?,
            provider_key: atom("provider")?,
            symbol_key: atom("symbol")?,
            event_id_key: atom("eventId")?,
            type_key: atom("type")?,
            seq_provider_key: atom("seqProvider")?,
            ingest_ts_key: atom("ingestTs")?,
            emit_ts_key: atom("emitTs")?,
            payload_key: atom("payload")?,
            trade_id_key: atom("tradeId")?,
            side_key: atom("side")?,
            price_key: atom("price")?,
            quantity_key: atom("quantity")?,
            timestamp_key: atom("timestamp")?,
            instance_id: string(&spec.instance_id)?,
            strategy: string(&spec.strategy)?,
            hash: string(&spec.hash.to_string())?,
            provider: string(PROVIDER)?,
            symbol: string(SYMBOL)?,
            trade_type: string(EventKind::Trade.as_str())?,
            buy: string("buy")?,
            sell: string("sell")?,
        })
    }

    /// Fresh `ctx`, `evt`, `payload` and `price` for one Trade.
    fn args(
        &self,
        ctx: &Ctx<'js>,
        event: &MarketEvent,
    ) -> rquickjs::Result<(Object<'js>, Object<'js>, Object<'js>, f64)> {
        let Payload::Trade(trade) = &event.payload else { unreachable!("only trades here") };
        let payload = Object::new(ctx.clone())?;
        payload.set(self.trade_id_key.clone(), trade.trade_id.as_str())?;
        let side = match trade.side {
            Side::Buy => &self.buy,
            Side::Sell => &self.sell,
        };
        payload.set(self.side_key.clone(), side.clone())?;
        payload.set(self.price_key.clone(), trade.price.as_str())?;
        payload.set(self.quantity_key.clone(), trade.quantity.as_str())?;
        payload.set(self.timestamp_key.clone(), trade.timestamp as f64)?;

        let evt = Object::new(ctx.clone())?;
        evt.set(self.event_id_key.clone(), event.event_id as f64)?;
        evt.set(self.provider_key.clone(), self.provider.clone())?;
        evt.set(self.symbol_key.clone(), self.symbol.clone())?;
        evt.set(self.type_key.clone(), self.trade_type.clone())?;
        evt.set(self.seq_provider_key.clone(), event.seq_provider as f64)?;
        evt.set(self.ingest_ts_key.clone(), event.ingest_ts as f64)?;
        evt.set(self.emit_ts_key.clone(), event.emit_ts as f64)?;
        evt.set(self.payload_key.clone(), payload.clone())?;

        let context = Object::new(ctx.clone())?;
        context.set(self.instance_id_key.clone(), self.instance_id.clone())?;
        context.set(self.strategy_key.clone(), self.strategy.clone())?;
        context.set(self.hash_key.clone(), self.hash.clone())?;
        context.set(self.provider_key.clone(), self.provider.clone())?;
        context.set(self.symbol_key.clone(), self.symbol.clone())?;

        let price = trade.price.parse::<f64>().unwrap_or(f64::NAN);
        Ok((context, evt, payload, price))
    }
}

/// Checks that the bare loop builds exactly what the host passes: the
/// same strategy logs `JSON.stringify([ctx, evt, payload, price])` in the
/// host, and the same expression is evaluated on the bare loop's arguments.
fn check_same_arguments<'js>(ctx: &Ctx<'js>, reused: &Reused<'js>, spec: &HostSpec, events: &[MarketEvent]) {
    let shared = Arc::new(HostShared::new());
    let source = module(ECHO);
    // Same spec, so the same `ctx` (instance id, strategy and hash too).
    let echo_spec = spec.clone();
    let mut host =
        JsInstance::start(echo_spec, &source, Arc::clone(&shared), Arc::new(NoSleepHook)).expect("echo starts");
    let stringify: Function = ctx
        .eval("(ctx, evt, payload, price) => JSON.stringify([ctx, evt, payload, price])")
        .expect("stringify function");
    for event in &events[..2] {
        host.dispatch(event).expect("echo dispatch");
        let from_host = shared.logs.lines().last().expect("echo logged").message.clone();
        let (context, evt, payload, price) = reused.args(ctx, event).expect("bare args");
        let from_bare: String = stringify.call((context, evt, payload, price)).expect("stringify");
        assert_eq!(from_bare, from_host, "the bare loop must build what the host passes");
    }
}

/// The trivial handler object and its `onTrade`, evaluated in a bare context.
fn bare_handler<'js>(ctx: &Ctx<'js>) -> (Object<'js>, Function<'js>) {
    let handler: Object = ctx.eval(format!("'use strict'; (function () {{ {TRIVIAL} }})()")).expect("handler object");
    let on_trade: Function = handler.get("onTrade").expect("onTrade");
    (handler, on_trade)
}

fn dispatch(c: &mut Criterion) {
    let started = SystemTime::now();
    let provider: Arc<dyn Provider> =
        Arc::new(BenchProvider { symbols: vec![Arc::from(SYMBOL)], tx: tokio::sync::broadcast::channel(4).0 });
    let (provider_name, symbol): (Arc<str>, Arc<str>) = (Arc::from(PROVIDER), Arc::from(SYMBOL));
    let events: Vec<MarketEvent> = (1..=EVENTS as u64).map(|id| trade(id, &provider_name, &symbol)).collect();
    let source = module(TRIVIAL);
    let host_spec = spec(&source, "inst-0", &provider);

    let mut group = c.benchmark_group("dispatch");
    group.sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    let mut ran = [false; 4];

    // 1 and 2: the bare loops, in one plain runtime.
    group.throughput(Throughput::Elements(1));
    let runtime = Runtime::new().expect("runtime");
    let context = Context::full(&runtime).expect("context");
    context.with(|ctx| {
        let reused = Reused::new(&ctx, &host_spec).expect("reused values");
        check_same_arguments(&ctx, &reused, &host_spec, &events);
        let (handler, on_trade) = bare_handler(&ctx);

        let mut i = 0;
        group.bench_function("bare_call_fresh_args", |b| {
            ran[0] = true;
            b.iter(|| {
                i = (i + 1) % EVENTS;
                let (context, evt, payload, price) = reused.args(&ctx, black_box(&events[i])).expect("args");
                on_trade.call::<_, ()>((This(handler.clone()), context, evt, payload, price)).expect("call");
            })
        });

        let (context, evt, payload, price) = reused.args(&ctx, &events[0]).expect("args");
        group.bench_function("bare_call_reused_args", |b| {
            ran[1] = true;
            b.iter(|| {
                on_trade
                    .call::<_, ()>((
                        This(handler.clone()),
                        context.clone(),
                        evt.clone(),
                        payload.clone(),
                        black_box(price),
                    ))
                    .expect("call");
            })
        });
    });
    drop(context);
    drop(runtime);

    // 3: JsInstance::dispatch, one thread.
    let shared = Arc::new(HostShared::new());
    let mut instance =
        JsInstance::start(host_spec.clone(), &source, Arc::clone(&shared), Arc::new(NoSleepHook)).expect("starts");
    let mut i = 0;
    group.bench_function("host_dispatch", |b| {
        ran[2] = true;
        b.iter(|| {
            i = (i + 1) % EVENTS;
            instance.dispatch(black_box(&events[i])).expect("dispatch");
        })
    });
    assert_eq!(shared.counters.handler_errors.load(Ordering::Relaxed), 0, "the handler never throws");
    drop(instance);

    // 4: the worker pool, CELLS instances fed PER_CELL events each per
    // iteration.
    let pool = Pool::new(WORKERS);
    let hook: Arc<dyn SleepHook> = Arc::new(PoolSleepHook::new(&pool));
    let on_fatal: FatalHandler = Arc::new(|cell, message| eprintln!("instance {} died: {message}", cell.id));
    let cells: Vec<Arc<Cell>> = (0..CELLS)
        .map(|n| {
            let id = format!("inst-{n}");
            let shared = Arc::new(HostShared::new());
            let js = JsInstance::start(spec(&source, &id, &provider), &source, Arc::clone(&shared), Arc::clone(&hook))
                .expect("starts");
            Cell::new(Arc::from(id), 1, js, shared, vec![EventKind::Trade], QUEUE_CAPACITY, Arc::clone(&on_fatal))
        })
        .collect();
    let batch: Vec<Arc<MarketEvent>> = events.iter().cycle().take(PER_CELL).cloned().map(Arc::new).collect();
    let mut expected = 0u64;
    group.throughput(Throughput::Elements((CELLS * PER_CELL) as u64));
    group.bench_function("daemon_pool", |b| {
        ran[3] = true;
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                expected += PER_CELL as u64;
                let start = Instant::now();
                // As `Instances::publish`: each event to every subscribed cell.
                for event in &batch {
                    for cell in &cells {
                        if cell.wants(event.kind) && cell.push(Arc::clone(event)) {
                            pool.schedule(Arc::clone(cell));
                        }
                    }
                }
                for cell in &cells {
                    while cell.shared.counters.events_delivered.load(Ordering::Acquire) < expected {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    group.finish();
    for cell in &cells {
        let counters = &cell.shared.counters;
        assert_eq!(counters.events_dropped.load(Ordering::Relaxed), 0, "no event dropped");
        assert_eq!(counters.handler_errors.load(Ordering::Relaxed), 0, "the handler never throws");
        cell.shared.request_stop();
        drop(cell.take_runtime());
    }

    if ran.iter().all(|ran| *ran) {
        print_ratios(started);
    }
}

/// Criterion's output directory, as criterion finds it (its `cargo
/// metadata` step replaced by the bench executable's place in the target
/// directory: `<target>/<profile>/deps/dispatch-<hash>`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// Throughput (elements/s) of one benchmark of this run, from criterion's
/// typical estimate (the slope, else the mean) of the time per iteration.
fn throughput(dir: &std::path::Path, name: &str, elements: f64, since: SystemTime) -> Option<f64> {
    let file = dir.join("dispatch").join(name).join("new").join("estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    let typical = estimates.get("slope").filter(|slope| !slope.is_null()).or_else(|| estimates.get("mean"))?;
    let nanos = typical.get("point_estimate")?.as_f64()?;
    Some(elements / (nanos * 1e-9))
}

fn print_ratios(since: SystemTime) {
    let Some(dir) = criterion_dir() else {
        println!(
            "ratios: criterion's output directory not found; compute them by hand (see the header of benches/dispatch.rs)"
        );
        return;
    };
    let names = [
        ("bare_call_fresh_args", 1.0),
        ("bare_call_reused_args", 1.0),
        ("host_dispatch", 1.0),
        ("daemon_pool", (CELLS * PER_CELL) as f64),
    ];
    let mut rates = Vec::new();
    for (name, elements) in names {
        match throughput(&dir, name, elements, since) {
            Some(rate) => rates.push(rate),
            None => {
                println!("ratios: no estimate of {name} from this run in {}; compute them by hand", dir.display());
                return;
            }
        }
    }
    println!();
    println!("handler calls per second (criterion's typical estimate):");
    for ((name, _), rate) in names.iter().zip(&rates) {
        println!("  {name:<22} {:>12.0}/s   {:>8.1} ns/call", rate, 1e9 / rate);
    }
    println!("host_dispatch / bare_call_fresh_args = {:.3}", rates[2] / rates[0]);
    println!(
        "daemon_pool   / bare_call_fresh_args = {:.3}  ({WORKERS} workers; {:.3} per worker)",
        rates[3] / rates[0],
        rates[3] / rates[0] / WORKERS as f64
    );
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
