//! Tests of the JS host.

use std::sync::atomic::{AtomicBool, AtomicUsize};

use serde_json::json;

use super::env::fnv1a;
use super::*;
use crate::runtime::config::validate_config;
use crate::venue::{
    BookLevel, BookPayload, ExecReportPayload, MarketState, OrderRequest, TickerPayload, TradePayload, VenueError,
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

fn spec_for(source: &str, config: serde_json::Value, providers: &[Arc<FakeProvider>], limits: JsLimits) -> HostSpec {
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
    let h =
        start_with(&source, json!({"size": 2}), JsLimits::default(), DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook)).unwrap();
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
    let mut h =
        start_with(&source, json!({"dry_run": false}), JsLimits::default(), DEFAULT_SLEEP_CAP, Arc::new(NoSleepHook))
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
    assert!(errors[0].starts_with("onTrade threw at line 9, column 18: TypeError: cannot read property"), "{errors:?}");
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
        (&*module("['Trade']", "    throw new Error('nope');"), "create(env) threw at line 6, column 15: Error: nope"),
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
    let dir =
        if dir.exists() { dir } else { std::path::Path::new(file!()).parent().unwrap().join("../../demo/strategies") };
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
