//! The built-in **simulated** venue (provider kind `sim`).
//!
//! Nothing here touches a real market. Prices are a seeded, bounded random
//! walk per symbol; trades, tickers and book snapshots are synthesised from
//! it; orders are paper trades against per-instance paper accounts. Every
//! event carries the configured provider name (default `sim`) so strategies
//! and operators can see where it came from.
//!
//! Determinism: all randomness comes from one [SplitMix64] generator seeded
//! with [`SimConfig::seed`], consumed in a fixed order. Given the same seed and
//! the same sequence of generation calls (e.g. [`SimVenue::step`] with the same
//! `now` values) the market data (ids, prices, quantities, sides) is
//! identical from run to run and across platforms: the generator uses only
//! integer and basic IEEE arithmetic, and prices and quantities are kept as
//! integer ticks (0.01) and lots (0.000001). Paper orders do not consume
//! randomness, but their private events take event ids from the same
//! counter as market data.
//!
//! Private events (ExecReports, BalanceUpdates) go only to the owning
//! instance through the [`PrivateSink`], never on the public broadcast. They
//! are queued under the state lock in event-id order and delivered after it
//! is released, by one thread at a time, so an instance sees its reports in
//! order (an order's `acknowledged` always before its `filled`) and the sink
//! may call back into the venue.
//!
//! [SplitMix64]: https://prng.di.unimi.it/splitmix64.c

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use strata_shared::metadata::EventKind;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{
    BalancePayload, BookLevel, BookPayload, ExecReportPayload, MarketEvent, MarketState, Millis, OrderRequest,
    OrderState, OrderType, Payload, PrivateSink, Provider, Side, TickerPayload, TradePayload, VenueError,
};

/// Capacity of the public market-data broadcast channel.
pub const BROADCAST_CAPACITY: usize = 4096;

/// Most resting (unfilled) limit orders one owner may have on the venue.
pub const MAX_OPEN_ORDERS_PER_OWNER: usize = 1_000;

/// Most book levels per side in a snapshot, whatever `book_depth` says.
pub const MAX_BOOK_DEPTH: usize = 1_000;

/// Price ticks per currency unit (prices have 2 decimals).
const PRICE_SCALE: f64 = 100.0;
/// Quantity lots per unit (quantities have 6 decimals).
const QTY_SCALE: f64 = 1_000_000.0;
/// Largest accepted order quantity (keeps lots exact in an `f64`).
const MAX_ORDER_QTY: f64 = 1e9;
/// Largest accepted limit price.
const MAX_ORDER_PRICE: f64 = 1e12;
/// Standard deviation of the relative price move per trade.
const WALK_SIGMA: f64 = 0.0005;
/// Pull of the price back towards its start, per trade.
const WALK_REVERSION: f64 = 0.0001;
/// Lowest price, relative to the start price, minus one (`0.5 ×` start).
const WALK_MIN: f64 = -0.5;
/// Highest price, relative to the start price, minus one (`2 ×` start).
const WALK_MAX: f64 = 1.0;
/// Base half spread relative to the mid price (0.5 bp; up to twice that).
const HALF_SPREAD: f64 = 0.00005;
/// Distance between book levels relative to the mid price (1 bp).
const LEVEL_STEP: f64 = 0.0001;
/// Rolling-volume buckets (one per minute, 24 h).
const VOLUME_BUCKETS: i64 = 1440;
/// Width of a rolling-volume bucket.
const VOLUME_BUCKET_MS: i64 = 60_000;
/// Shortest generation period, whatever the configured rate.
const MIN_PERIOD: Duration = Duration::from_millis(1);
/// Tolerance when comparing a notional with a balance.
const BALANCE_EPSILON: f64 = 1e-9;

/// Configuration of one simulated venue (`[[providers]]` of kind `sim`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct SimConfig {
    /// Provider name (the key instances use in their `scope`). Default `sim`.
    pub name: String,
    /// Symbols traded, `BASE-QUOTE` (e.g. `BTC-USDT`). Duplicates are ignored.
    /// A symbol without `-` is treated as quoted in `USD`.
    pub symbols: Vec<String>,
    /// Seed of the price generator. Default 42.
    pub seed: u64,
    /// Trades per second per symbol. Default 5; 0 (or not finite) disables trades.
    pub trades_per_sec: f64,
    /// Tickers per second per symbol. Default 1; 0 disables tickers.
    pub tickers_per_sec: f64,
    /// Book snapshots per second per symbol. Default 1; 0 disables snapshots.
    pub books_per_sec: f64,
    /// Levels per side in book snapshots. Default 5; at most [`MAX_BOOK_DEPTH`].
    pub book_depth: usize,
    /// Starting paper balance of every quote currency, per instance account. Default 100 000.
    pub starting_balance: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            name: "sim".to_owned(),
            symbols: vec!["BTC-USDT".to_owned(), "ETH-USDT".to_owned()],
            seed: 42,
            trades_per_sec: 5.0,
            tickers_per_sec: 1.0,
            books_per_sec: 1.0,
            book_depth: 5,
            starting_balance: 100_000.0,
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood), a tiny PRNG whose output is fixed by its
/// definition, so seeded runs reproduce across versions and platforms.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal (Irwin–Hall: twelve uniforms minus six),
    /// using only basic arithmetic so results are bit-identical everywhere.
    fn next_gaussian(&mut self) -> f64 {
        (0..12).map(|_| self.next_f64()).sum::<f64>() - 6.0
    }
}

/// One traded instrument (immutable).
#[derive(Debug)]
struct Instrument {
    symbol: Arc<str>,
    base: String,
    quote: String,
    start_price: f64,
}

/// Rolling 24 h traded quantity, in per-minute buckets.
#[derive(Debug)]
struct Volume {
    /// `(minute, lots)`; the minute says which window the bucket holds.
    buckets: Vec<(i64, i64)>,
}

impl Volume {
    fn new() -> Self {
        Self { buckets: vec![(i64::MIN, 0); VOLUME_BUCKETS as usize] }
    }

    fn add(&mut self, now: Millis, lots: i64) {
        let minute = now.div_euclid(VOLUME_BUCKET_MS);
        let bucket = &mut self.buckets[minute.rem_euclid(VOLUME_BUCKETS) as usize];
        if bucket.0 != minute {
            *bucket = (minute, 0);
        }
        bucket.1 = bucket.1.saturating_add(lots);
    }

    fn total(&self, now: Millis) -> i64 {
        let minute = now.div_euclid(VOLUME_BUCKET_MS);
        self.buckets
            .iter()
            .filter(|(m, _)| *m <= minute && *m > minute - VOLUME_BUCKETS)
            .fold(0i64, |acc, (_, lots)| acc.saturating_add(*lots))
    }
}

/// Mutable market state of one instrument. Prices are in ticks (0.01).
#[derive(Debug)]
struct Market {
    /// Price relative to the start price, minus one.
    deviation: f64,
    bid: i64,
    ask: i64,
    /// Last trade price, once a trade happened.
    last: Option<i64>,
    volume: Volume,
}

/// A paper balance of one currency.
#[derive(Debug, Clone, Copy, Default)]
struct Balance {
    total: f64,
    /// Held by resting limit buys.
    reserved: f64,
}

impl Balance {
    fn available(&self) -> f64 {
        self.total - self.reserved
    }
}

/// One instance's paper account.
#[derive(Debug, Default)]
struct Account {
    balances: HashMap<String, Balance>,
    open_orders: usize,
}

/// A limit order waiting for a crossing trade.
#[derive(Debug)]
struct RestingOrder {
    owner: Arc<str>,
    info: OrderInfo,
    /// Limit price in ticks.
    price: i64,
    /// Quote currency held for a buy.
    reserved: f64,
}

/// What every ExecReport of an order repeats.
#[derive(Debug, Clone)]
struct OrderInfo {
    client_order_id: String,
    exchange_order_id: String,
    side: Side,
    order_type: OrderType,
    /// Quantity in lots.
    lots: i64,
}

impl OrderInfo {
    fn report(&self, state: OrderState, price: i64, now: Millis, reject_reason: Option<&str>) -> ExecReportPayload {
        let filled = state == OrderState::Filled;
        let open = state == OrderState::Acknowledged;
        ExecReportPayload {
            client_order_id: self.client_order_id.clone(),
            exchange_order_id: self.exchange_order_id.clone(),
            state,
            side: self.side,
            order_type: self.order_type,
            price: fmt_ticks(price),
            quantity: fmt_lots(self.lots),
            filled_quantity: fmt_lots(if filled { self.lots } else { 0 }),
            remaining_qty: fmt_lots(if open { self.lots } else { 0 }),
            avg_fill_price: fmt_ticks(if filled { price } else { 0 }),
            timestamp: now,
            reject_reason: reject_reason.map(str::to_owned),
        }
    }
}

/// Which kinds of market data one generation call produces.
#[derive(Debug, Clone, Copy)]
struct Generate {
    trades: bool,
    tickers: bool,
    books: bool,
}

impl Generate {
    const ALL: Self = Self { trades: true, tickers: true, books: true };
    const TRADES: Self = Self { trades: true, tickers: false, books: false };
    const TICKERS: Self = Self { trades: false, tickers: true, books: false };
    const BOOKS: Self = Self { trades: false, tickers: false, books: true };
}

/// Everything behind the venue's lock.
#[derive(Debug)]
struct State {
    rng: SplitMix64,
    /// Last event id (also `seqProvider`) handed out.
    seq: u64,
    trade_seq: u64,
    order_seq: u64,
    /// Per instrument, same index as `SimVenue::instruments`.
    markets: Vec<Market>,
    /// Resting limit orders per instrument, in arrival order.
    resting: Vec<Vec<RestingOrder>>,
    accounts: HashMap<Arc<str>, Account>,
    /// Private events waiting for delivery, in event-id order.
    outbox: VecDeque<(Arc<str>, MarketEvent)>,
}

/// The built-in simulated venue: seeded synthetic market data and paper
/// trading. **Not a real market**: no order ever leaves the process.
///
/// Create it with [`SimVenue::new`], drive it with [`SimVenue::spawn`] (real
/// time, configured rates) or [`SimVenue::step`] (one deterministic tick),
/// and use it through the [`Provider`] trait.
pub struct SimVenue {
    config: SimConfig,
    provider: Arc<str>,
    symbols: Vec<Arc<str>>,
    instruments: Vec<Instrument>,
    index: HashMap<Arc<str>, usize>,
    tx: broadcast::Sender<Arc<MarketEvent>>,
    sink: Arc<dyn PrivateSink>,
    state: Mutex<State>,
    /// Held by the one thread currently delivering the outbox.
    delivering: Mutex<()>,
}

impl std::fmt::Debug for SimVenue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimVenue").field("config", &self.config).finish_non_exhaustive()
    }
}

impl SimVenue {
    /// Builds a simulated venue. Private events (order reports, balances) go
    /// to `sink`. Market data only flows once [`spawn`](Self::spawn) runs or
    /// [`step`](Self::step) is called.
    pub fn new(config: SimConfig, sink: Arc<dyn PrivateSink>) -> Arc<SimVenue> {
        let mut symbols: Vec<Arc<str>> = Vec::new();
        for s in &config.symbols {
            if !symbols.iter().any(|known| **known == **s) {
                symbols.push(Arc::from(s.as_str()));
            }
        }
        let instruments: Vec<Instrument> = symbols.iter().map(instrument).collect();
        let index = symbols.iter().enumerate().map(|(i, s)| (Arc::clone(s), i)).collect();
        let markets = instruments
            .iter()
            .map(|inst| {
                let (bid, ask) = quote_ticks(inst.start_price, inst.start_price * HALF_SPREAD * 1.5);
                Market { deviation: 0.0, bid, ask, last: None, volume: Volume::new() }
            })
            .collect();
        let state = State {
            rng: SplitMix64::new(config.seed),
            seq: 0,
            trade_seq: 0,
            order_seq: 0,
            markets,
            resting: instruments.iter().map(|_| Vec::new()).collect(),
            accounts: HashMap::new(),
            outbox: VecDeque::new(),
        };
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(SimVenue {
            provider: Arc::from(config.name.as_str()),
            config,
            symbols,
            instruments,
            index,
            tx,
            sink,
            state: Mutex::new(state),
            delivering: Mutex::new(()),
        })
    }

    /// The configuration the venue was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Advances the simulation by one tick: for every symbol, in configured
    /// order, one trade, one ticker and one book snapshot (timestamped
    /// `now`). Returns those events and publishes them on the broadcast;
    /// resting limit orders crossed by the trades are filled and reported
    /// through the sink before this returns (unless another thread is
    /// delivering, which then delivers them). Deterministic for a given seed
    /// and sequence of calls.
    pub fn step(&self, now: Millis) -> Vec<Arc<MarketEvent>> {
        self.generate(now, Generate::ALL)
    }

    /// Starts generating simulated market data in real time at the configured
    /// rates (per symbol: `trades_per_sec` trades, `tickers_per_sec` tickers,
    /// `books_per_sec` book snapshots), timestamped with the wall clock.
    /// Runs until the returned handle is aborted. Needs a Tokio runtime; call
    /// it once per venue (each call adds its own generator).
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        tracing::info!(
            provider = %self.provider,
            symbols = ?self.config.symbols,
            seed = self.config.seed,
            "simulated venue started: synthetic prices and paper fills (not a real market)"
        );
        let venue = Arc::clone(self);
        tokio::spawn(async move { venue.run().await })
    }

    /// Forgets `owner`'s paper account and resting orders (e.g. when the
    /// instance is deleted). Its next order starts a fresh account.
    pub fn remove_owner(&self, owner: &str) {
        let mut st = self.state.lock();
        st.accounts.remove(owner);
        for orders in &mut st.resting {
            orders.retain(|o| &*o.owner != owner);
        }
    }

    async fn run(self: Arc<Self>) {
        let mut trades = interval_for(self.config.trades_per_sec);
        let mut tickers = interval_for(self.config.tickers_per_sec);
        let mut books = interval_for(self.config.books_per_sec);
        loop {
            let what = tokio::select! {
                biased;
                () = tick(&mut trades) => Generate::TRADES,
                () = tick(&mut tickers) => Generate::TICKERS,
                () = tick(&mut books) => Generate::BOOKS,
            };
            self.generate(wall_clock_ms(), what);
        }
    }

    /// Generates `what` for every symbol, publishes it, then delivers any
    /// private events (limit fills) it caused.
    fn generate(&self, now: Millis, what: Generate) -> Vec<Arc<MarketEvent>> {
        let events = {
            let mut st = self.state.lock();
            let mut events = Vec::new();
            for idx in 0..self.instruments.len() {
                if what.trades {
                    events.push(Arc::new(self.trade(&mut st, idx, now)));
                }
                if what.tickers {
                    events.push(Arc::new(self.ticker(&mut st, idx, now)));
                }
                if what.books {
                    events.push(Arc::new(self.book(&mut st, idx, now)));
                }
            }
            // Published under the lock so the stream stays in seq order; a
            // broadcast send never blocks and runs no foreign code.
            for event in &events {
                let _ = self.tx.send(Arc::clone(event));
            }
            events
        };
        self.flush();
        events
    }

    fn event(&self, st: &mut State, idx: usize, kind: EventKind, payload: Payload, now: Millis) -> MarketEvent {
        st.seq += 1;
        MarketEvent {
            event_id: st.seq,
            provider: Arc::clone(&self.provider),
            symbol: Arc::clone(&self.instruments[idx].symbol),
            kind,
            seq_provider: st.seq,
            ingest_ts: now,
            emit_ts: now,
            payload,
        }
    }

    fn push_private(&self, st: &mut State, owner: &Arc<str>, idx: usize, payload: Payload, now: Millis) {
        let kind = match payload {
            Payload::Balance(_) => EventKind::BalanceUpdate,
            _ => EventKind::ExecReport,
        };
        let event = self.event(st, idx, kind, payload, now);
        st.outbox.push_back((Arc::clone(owner), event));
    }

    fn push_balance(&self, st: &mut State, owner: &Arc<str>, idx: usize, currency: &str, now: Millis) {
        let balance =
            st.accounts.get(owner).and_then(|account| account.balances.get(currency)).copied().unwrap_or_default();
        let payload = Payload::Balance(BalancePayload {
            currency: currency.to_owned(),
            total: fmt_amount(balance.total),
            available: fmt_amount(balance.available()),
            timestamp: now,
        });
        self.push_private(st, owner, idx, payload, now);
    }

    /// The paper account of `owner`, created on first use: every quote
    /// currency at the starting balance, every base currency at zero.
    fn account<'a>(&self, st: &'a mut State, owner: &Arc<str>) -> &'a mut Account {
        st.accounts.entry(Arc::clone(owner)).or_insert_with(|| {
            let mut account = Account::default();
            for inst in &self.instruments {
                account
                    .balances
                    .insert(inst.quote.clone(), Balance { total: self.config.starting_balance, reserved: 0.0 });
            }
            for inst in &self.instruments {
                account.balances.entry(inst.base.clone()).or_default();
            }
            account
        })
    }

    /// Moves the price one random step, prints one trade and fills the
    /// resting limit orders it crosses.
    fn trade(&self, st: &mut State, idx: usize, now: Millis) -> MarketEvent {
        let start = self.instruments[idx].start_price;
        let z = st.rng.next_gaussian();
        let spread_noise = st.rng.next_f64();
        let side = if st.rng.next_f64() < 0.5 { Side::Buy } else { Side::Sell };
        let size = st.rng.next_f64();
        let market = &mut st.markets[idx];
        market.deviation = (market.deviation * (1.0 - WALK_REVERSION) + WALK_SIGMA * z).clamp(WALK_MIN, WALK_MAX);
        let mid = start * (1.0 + market.deviation);
        (market.bid, market.ask) = quote_ticks(mid, mid * HALF_SPREAD * (1.0 + spread_noise));
        let price = match side {
            Side::Buy => market.ask,
            Side::Sell => market.bid,
        };
        let lots = random_lots(size, mid);
        market.last = Some(price);
        market.volume.add(now, lots);
        st.trade_seq += 1;
        let payload = Payload::Trade(TradePayload {
            trade_id: st.trade_seq.to_string(),
            side,
            price: fmt_ticks(price),
            quantity: fmt_lots(lots),
            timestamp: now,
        });
        let event = self.event(st, idx, EventKind::Trade, payload, now);
        self.fill_crossed(st, idx, price, now);
        event
    }

    /// Fills (whole, at their limit) the resting orders of instrument `idx`
    /// that a trade at `price` crosses: buys at or above it, sells at or below.
    fn fill_crossed(&self, st: &mut State, idx: usize, price: i64, now: Millis) {
        let crosses = |o: &RestingOrder| match o.info.side {
            Side::Buy => price <= o.price,
            Side::Sell => price >= o.price,
        };
        if !st.resting[idx].iter().any(crosses) {
            return;
        }
        let (filled, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.resting[idx]).into_iter().partition(crosses);
        st.resting[idx] = kept;
        for order in filled {
            self.settle(st, &order.owner, idx, &order.info, order.price, order.reserved, now);
            if let Some(account) = st.accounts.get_mut(&order.owner) {
                account.open_orders = account.open_orders.saturating_sub(1);
            }
        }
    }

    /// Books a fill of `info` at `price` ticks: the `filled` report, then
    /// one balance update per currency (quote, then base).
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        st: &mut State,
        owner: &Arc<str>,
        idx: usize,
        info: &OrderInfo,
        price: i64,
        reserved: f64,
        now: Millis,
    ) {
        let inst = &self.instruments[idx];
        let qty = info.lots as f64 / QTY_SCALE;
        let notional = qty * (price as f64 / PRICE_SCALE);
        let account = self.account(st, owner);
        let quote = account.balances.entry(inst.quote.clone()).or_default();
        match info.side {
            Side::Buy => {
                quote.total -= notional;
                quote.reserved = (quote.reserved - reserved).max(0.0);
            }
            Side::Sell => quote.total += notional,
        }
        let base = account.balances.entry(inst.base.clone()).or_default();
        match info.side {
            Side::Buy => base.total += qty,
            Side::Sell => base.total -= qty,
        }
        let report = info.report(OrderState::Filled, price, now, None);
        self.push_private(st, owner, idx, Payload::ExecReport(report), now);
        self.push_balance(st, owner, idx, &inst.quote, now);
        self.push_balance(st, owner, idx, &inst.base, now);
    }

    fn ticker(&self, st: &mut State, idx: usize, now: Millis) -> MarketEvent {
        let market = &st.markets[idx];
        let payload = Payload::Ticker(TickerPayload {
            last_price: fmt_ticks(market.last.unwrap_or((market.bid + market.ask) / 2)),
            bid_price: fmt_ticks(market.bid),
            ask_price: fmt_ticks(market.ask),
            volume24h: fmt_lots(market.volume.total(now)),
            timestamp: now,
        });
        self.event(st, idx, EventKind::Ticker, payload, now)
    }

    fn book(&self, st: &mut State, idx: usize, now: Millis) -> MarketEvent {
        let (bid, ask) = (st.markets[idx].bid, st.markets[idx].ask);
        let mid = (bid + ask) as f64 / 2.0 / PRICE_SCALE;
        let step = ((mid * LEVEL_STEP * PRICE_SCALE).round() as i64).max(1);
        let level = |price: i64, rng: &mut SplitMix64| BookLevel {
            price: fmt_ticks(price),
            quantity: fmt_lots(random_lots(rng.next_f64(), mid)),
        };
        let depth = self.config.book_depth.min(MAX_BOOK_DEPTH);
        let mut bids = Vec::with_capacity(depth);
        let mut asks = Vec::with_capacity(depth);
        for i in 0..depth as i64 {
            let price = bid - i * step;
            if price > 0 {
                bids.push(level(price, &mut st.rng));
            }
        }
        for i in 0..depth as i64 {
            asks.push(level(ask + i * step, &mut st.rng));
        }
        let checksum = book_checksum(&bids, &asks);
        let payload = Payload::Book(BookPayload { bids, asks, checksum, last_update: now });
        self.event(st, idx, EventKind::BookSnapshot, payload, now)
    }

    /// Delivers queued private events in order. Only one thread delivers at
    /// a time; a thread that finds delivery in progress (including a sink
    /// calling back into the venue) leaves its events to that thread.
    fn flush(&self) {
        loop {
            let Some(guard) = self.delivering.try_lock() else {
                return;
            };
            loop {
                let batch: Vec<_> = self.state.lock().outbox.drain(..).collect();
                if batch.is_empty() {
                    break;
                }
                for (owner, event) in batch {
                    self.sink.deliver(&owner, event);
                }
            }
            drop(guard);
            // Events queued after our last look but before we let go would
            // otherwise wait for the next flush.
            if self.state.lock().outbox.is_empty() {
                return;
            }
        }
    }

    /// Handles a validated order under the state lock, queueing its reports.
    fn place(&self, st: &mut State, order: &OrderRequest, idx: usize, lots: i64, limit: Option<i64>, now: Millis) {
        st.order_seq += 1;
        let info = OrderInfo {
            client_order_id: order.client_order_id.clone(),
            exchange_order_id: format!("{}-{}", self.provider, st.order_seq),
            side: order.side,
            order_type: if limit.is_some() { OrderType::Limit } else { OrderType::Market },
            lots,
        };
        let owner = &order.owner;
        let inst = &self.instruments[idx];
        let (bid, ask) = (st.markets[idx].bid, st.markets[idx].ask);
        let price = limit.unwrap_or(match order.side {
            Side::Buy => ask,
            Side::Sell => bid,
        });
        let notional = lots as f64 / QTY_SCALE * (price as f64 / PRICE_SCALE);
        let account = self.account(st, owner);
        let available = account.balances.get(&inst.quote).map_or(0.0, Balance::available);
        let reject = if order.side == Side::Buy && notional > available + BALANCE_EPSILON {
            Some("insufficient balance")
        } else if limit.is_some() && account.open_orders >= MAX_OPEN_ORDERS_PER_OWNER {
            Some("too many open orders")
        } else {
            None
        };
        if let Some(reason) = reject {
            let report = info.report(OrderState::Rejected, price, now, Some(reason));
            self.push_private(st, owner, idx, Payload::ExecReport(report), now);
            return;
        }
        let ack = info.report(OrderState::Acknowledged, price, now, None);
        self.push_private(st, owner, idx, Payload::ExecReport(ack), now);
        match limit {
            None => self.settle(st, owner, idx, &info, price, 0.0, now),
            Some(limit) => {
                let reserved = if order.side == Side::Buy { notional } else { 0.0 };
                let account = self.account(st, owner);
                account.open_orders += 1;
                if reserved > 0.0 {
                    account.balances.entry(inst.quote.clone()).or_default().reserved += reserved;
                    self.push_balance(st, owner, idx, &inst.quote, now);
                }
                st.resting[idx].push(RestingOrder { owner: Arc::clone(owner), info, price: limit, reserved });
            }
        }
    }
}

impl Provider for SimVenue {
    fn name(&self) -> &str {
        &self.provider
    }

    fn kind(&self) -> &str {
        "sim"
    }

    fn symbols(&self) -> &[Arc<str>] {
        &self.symbols
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<MarketEvent>> {
        self.tx.subscribe()
    }

    fn market_state(&self, symbol: &str) -> Option<MarketState> {
        let idx = *self.index.get(symbol)?;
        let st = self.state.lock();
        let market = &st.markets[idx];
        let last = market.last? as f64 / PRICE_SCALE;
        let bid = market.bid as f64 / PRICE_SCALE;
        let ask = market.ask as f64 / PRICE_SCALE;
        let spread = (market.ask - market.bid) as f64 / PRICE_SCALE;
        let mid = (bid + ask) / 2.0;
        Some(MarketState { last, bid, ask, spread, spread_pct: spread / mid * 100.0 })
    }

    /// Paper-trades `order` on the owner's account (see the module docs).
    ///
    /// Quantities are rounded to 0.000001 and limit prices to 0.01. Market
    /// orders fill at once at the ask (buy) or bid (sell); limit orders rest
    /// (a buy holds its notional of quote currency) until a simulated trade
    /// prints at or through the limit, then fill whole at the limit. Buys
    /// beyond the available quote balance are rejected with an ExecReport;
    /// selling more base than held (short selling) is allowed.
    fn submit(&self, order: OrderRequest) -> Result<(), VenueError> {
        let idx = *self.index.get(&*order.symbol).ok_or_else(|| VenueError::UnknownSymbol(order.symbol.to_string()))?;
        let lots = scaled(order.quantity, QTY_SCALE, MAX_ORDER_QTY)
            .map_err(|why| VenueError::InvalidOrder(format!("quantity {why}")))?;
        let limit = order
            .price
            .map(|p| scaled(p, PRICE_SCALE, MAX_ORDER_PRICE))
            .transpose()
            .map_err(|why| VenueError::InvalidOrder(format!("price {why}")))?;
        let now = wall_clock_ms();
        self.place(&mut self.state.lock(), &order, idx, lots, limit, now);
        self.flush();
        Ok(())
    }

    fn forget_owner(&self, owner: &str) {
        self.remove_owner(owner);
    }
}

/// Splits `BASE-QUOTE` and picks a plausible start price.
fn instrument(symbol: &Arc<str>) -> Instrument {
    let (base, quote) = symbol.split_once('-').unwrap_or((symbol, "USD"));
    let start_price = match base.to_ascii_uppercase().as_str() {
        "BTC" | "XBT" => 60_000.0,
        "ETH" => 3_000.0,
        _ => 100.0,
    };
    Instrument { symbol: Arc::clone(symbol), base: base.to_owned(), quote: quote.to_owned(), start_price }
}

/// Best bid and ask in ticks around `mid`, at least one tick apart, bid ≥ 1 tick.
fn quote_ticks(mid: f64, half_spread: f64) -> (i64, i64) {
    let bid = (((mid - half_spread) * PRICE_SCALE).floor() as i64).max(1);
    let ask = (((mid + half_spread) * PRICE_SCALE).ceil() as i64).max(bid + 1);
    (bid, ask)
}

/// A random size in lots worth roughly 10 to 5 000 quote units at `mid`,
/// skewed towards small trades; `u` is uniform in `[0, 1)`.
fn random_lots(u: f64, mid: f64) -> i64 {
    let notional = 10.0 + 4_990.0 * u * u * u;
    ((notional / mid * QTY_SCALE).round() as i64).max(1)
}

/// `value × scale` as an integer, or why it is not acceptable.
fn scaled(value: f64, scale: f64, max: f64) -> Result<i64, String> {
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("must be a finite number > 0 (got {value})"));
    }
    if value > max {
        return Err(format!("must be at most {max} (got {value})"));
    }
    let units = (value * scale).round() as i64;
    if units < 1 {
        return Err(format!("is below the venue's increment {} (got {value})", 1.0 / scale));
    }
    Ok(units)
}

/// FNV-1a (32 bit) over `price:quantity` of each bid, `|`, then each ask.
fn book_checksum(bids: &[BookLevel], asks: &[BookLevel]) -> u32 {
    let mut hash: u32 = 0x811C_9DC5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    for (i, side) in [bids, asks].into_iter().enumerate() {
        if i > 0 {
            feed(b"|");
        }
        for level in side {
            feed(level.price.as_bytes());
            feed(b":");
            feed(level.quantity.as_bytes());
            feed(b";");
        }
    }
    hash
}

/// Ticks (0.01) as a 2-decimal string.
fn fmt_ticks(ticks: i64) -> String {
    fmt_fixed(ticks, 100, 2)
}

/// Lots (0.000001) as a 6-decimal string.
fn fmt_lots(lots: i64) -> String {
    fmt_fixed(lots, 1_000_000, 6)
}

fn fmt_fixed(value: i64, scale: u64, decimals: usize) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    format!("{sign}{}.{:0decimals$}", abs / scale, abs % scale)
}

/// A balance with 8 decimals (never `-0.00000000`).
fn fmt_amount(value: f64) -> String {
    let value = if value.abs() < 5e-9 { 0.0 } else { value };
    format!("{value:.8}")
}

fn wall_clock_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

/// A ticking interval for `rate` events per second, first tick one period
/// from now; `None` when the rate disables the stream.
fn interval_for(rate: f64) -> Option<Interval> {
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(MIN_PERIOD).max(MIN_PERIOD);
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    Some(interval)
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every delivery.
    #[derive(Default)]
    struct RecordingSink {
        events: Mutex<Vec<(String, MarketEvent)>>,
    }

    impl PrivateSink for RecordingSink {
        fn deliver(&self, owner: &str, event: MarketEvent) {
            self.events.lock().push((owner.to_owned(), event));
        }
    }

    impl RecordingSink {
        fn take(&self) -> Vec<(String, MarketEvent)> {
            std::mem::take(&mut *self.events.lock())
        }
    }

    fn venue_with(config: SimConfig) -> (Arc<SimVenue>, Arc<RecordingSink>) {
        let sink = Arc::new(RecordingSink::default());
        (SimVenue::new(config, sink.clone()), sink)
    }

    fn venue() -> (Arc<SimVenue>, Arc<RecordingSink>) {
        venue_with(SimConfig::default())
    }

    fn order(owner: &str, id: &str, symbol: &str, side: Side, quantity: f64, price: Option<f64>) -> OrderRequest {
        OrderRequest {
            owner: Arc::from(owner),
            client_order_id: id.to_owned(),
            symbol: Arc::from(symbol),
            side,
            quantity,
            price,
        }
    }

    fn report(event: &MarketEvent) -> &ExecReportPayload {
        match &event.payload {
            Payload::ExecReport(r) => r,
            other => panic!("not an ExecReport: {other:?}"),
        }
    }

    fn balance(event: &MarketEvent) -> &BalancePayload {
        match &event.payload {
            Payload::Balance(b) => b,
            other => panic!("not a BalanceUpdate: {other:?}"),
        }
    }

    fn trade_price(event: &MarketEvent) -> Option<f64> {
        match &event.payload {
            Payload::Trade(t) => Some(t.price.parse().unwrap()),
            _ => None,
        }
    }

    fn num(s: &str) -> f64 {
        s.parse().unwrap()
    }

    #[test]
    fn splitmix64_matches_reference_output() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn same_seed_same_events_different_seed_different_events() {
        let run = |seed: u64| {
            let (v, _) = venue_with(SimConfig { seed, ..SimConfig::default() });
            (0..500).flat_map(|i| v.step(1_700_000_000_000 + i * 200)).collect::<Vec<_>>()
        };
        let a = run(42);
        let b = run(42);
        assert_eq!(a.len(), 500 * 2 * 3);
        assert_eq!(a, b);
        let c = run(43);
        assert_eq!(a.len(), c.len());
        assert_ne!(a, c);
        // Same ids and timestamps, different prices.
        assert!(a.iter().zip(&c).all(|(x, y)| x.event_id == y.event_id && x.emit_ts == y.emit_ts));
    }

    #[test]
    fn step_emits_trade_ticker_book_per_symbol_with_increasing_ids() {
        let (v, _) = venue();
        let mut rx = v.subscribe();
        let events = v.step(1_000);
        let kinds: Vec<_> = events.iter().map(|e| (e.symbol.to_string(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("BTC-USDT".to_owned(), EventKind::Trade),
                ("BTC-USDT".to_owned(), EventKind::Ticker),
                ("BTC-USDT".to_owned(), EventKind::BookSnapshot),
                ("ETH-USDT".to_owned(), EventKind::Trade),
                ("ETH-USDT".to_owned(), EventKind::Ticker),
                ("ETH-USDT".to_owned(), EventKind::BookSnapshot),
            ]
        );
        let more = v.step(2_000);
        for (i, e) in events.iter().chain(&more).enumerate() {
            assert_eq!(e.event_id, i as u64 + 1);
            assert_eq!(e.seq_provider, e.event_id);
            assert_eq!(&*e.provider, "sim");
            assert!(!e.is_private());
        }
        assert!(events.iter().all(|e| e.ingest_ts == 1_000 && e.emit_ts == 1_000));
        for e in events.iter().chain(&more) {
            assert_eq!(&rx.try_recv().unwrap(), e);
        }
        assert!(rx.try_recv().is_err());
        // Decimal formatting and plausible start prices.
        let Payload::Trade(t) = &events[0].payload else { panic!() };
        assert_eq!(t.price.split('.').nth(1).unwrap().len(), 2);
        assert_eq!(t.quantity.split('.').nth(1).unwrap().len(), 6);
        assert!((59_000.0..61_000.0).contains(&num(&t.price)));
        let Payload::Ticker(tk) = &events[4].payload else { panic!() };
        assert!((2_950.0..3_050.0).contains(&num(&tk.last_price)));
        assert!(num(&tk.bid_price) < num(&tk.ask_price));
        let vol1 = num(&tk.volume24h);
        let Payload::Ticker(tk2) = &more[4].payload else { panic!() };
        assert!(num(&tk2.volume24h) > vol1);
    }

    #[test]
    fn book_snapshot_is_ordered_and_checksummed() {
        let (v, _) = venue_with(SimConfig { book_depth: 7, ..SimConfig::default() });
        for now in 0..50 {
            for e in v.step(now) {
                let Payload::Book(b) = &e.payload else { continue };
                assert_eq!((b.bids.len(), b.asks.len()), (7, 7));
                assert_eq!(b.checksum, book_checksum(&b.bids, &b.asks));
                assert_eq!(b.last_update, now);
                let bids: Vec<f64> = b.bids.iter().map(|l| num(&l.price)).collect();
                let asks: Vec<f64> = b.asks.iter().map(|l| num(&l.price)).collect();
                assert!(bids.windows(2).all(|w| w[0] > w[1]));
                assert!(asks.windows(2).all(|w| w[0] < w[1]));
                assert!(bids[0] < asks[0]);
                assert!(b.bids.iter().chain(&b.asks).all(|l| num(&l.quantity) > 0.0));
                let state = v.market_state(&e.symbol).unwrap();
                assert_eq!((state.bid, state.ask), (bids[0], asks[0]));
            }
        }
        let level = |p: &str| BookLevel { price: p.to_owned(), quantity: "1.000000".to_owned() };
        assert_ne!(
            book_checksum(&[level("1.00")], &[level("2.00")]),
            book_checksum(&[level("2.00")], &[level("1.00")])
        );
    }

    #[test]
    fn prices_stay_positive_and_bounded_with_bid_below_ask() {
        let config = SimConfig {
            symbols: vec!["BTC-USDT".into(), "ETH-USDT".into(), "XYZ-USDT".into()],
            ..SimConfig::default()
        };
        let (v, _) = venue_with(config);
        let starts = [60_000.0, 3_000.0, 100.0];
        let (mut lo, mut hi) = ([f64::MAX; 3], [0.0f64; 3]);
        for i in 0..100_000 {
            let events = v.generate(i, Generate::TRADES);
            for (k, (e, symbol)) in events.iter().zip(v.symbols()).enumerate() {
                let price = trade_price(e).unwrap();
                let s = v.market_state(symbol).unwrap();
                assert!(s.bid > 0.0 && s.bid < s.ask, "step {i}: {s:?}");
                assert!(s.spread > 0.0 && s.spread_pct > 0.0 && s.spread_pct < 0.1, "step {i}: {s:?}");
                assert!(price == s.bid || price == s.ask);
                assert!(price >= starts[k] * 0.49 && price <= starts[k] * 2.01, "step {i}: {price}");
                lo[k] = lo[k].min(price);
                hi[k] = hi[k].max(price);
            }
        }
        // The walk actually moves.
        for k in 0..3 {
            assert!(hi[k] / lo[k] > 1.01, "{k}: {} .. {}", lo[k], hi[k]);
        }
    }

    #[test]
    fn market_state_needs_a_trade_and_a_known_symbol() {
        let (v, _) = venue();
        assert_eq!(v.market_state("BTC-USDT"), None);
        assert_eq!(v.market_state("DOGE-USDT"), None);
        v.step(0);
        let s = v.market_state("BTC-USDT").unwrap();
        assert!((s.spread - (s.ask - s.bid)).abs() < 1e-9);
        assert!((s.spread_pct - s.spread / ((s.ask + s.bid) / 2.0) * 100.0).abs() < 1e-12);
        assert!(s.last == s.bid || s.last == s.ask);
    }

    #[tokio::test]
    async fn spawned_task_generates_at_the_configured_rates() {
        // Ten times the default rates for one real second (the daemon's
        // tokio has no `test-util`, so time cannot be paused here).
        let config =
            SimConfig { trades_per_sec: 50.0, tickers_per_sec: 10.0, books_per_sec: 10.0, ..SimConfig::default() };
        let (v, _) = venue_with(config);
        let mut rx = v.subscribe();
        let started = std::time::Instant::now();
        let handle = v.spawn();
        tokio::time::sleep(Duration::from_millis(1_010)).await;
        handle.abort();
        let _ = handle.await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut counts: HashMap<(String, EventKind), usize> = HashMap::new();
        while let Ok(e) = rx.try_recv() {
            *counts.entry((e.symbol.to_string(), e.kind)).or_default() += 1;
        }
        for symbol in ["BTC-USDT", "ETH-USDT"] {
            let n = |kind| counts.get(&(symbol.to_owned(), kind)).copied().unwrap_or(0);
            let (trades, tickers, books) = (n(EventKind::Trade), n(EventKind::Ticker), n(EventKind::BookSnapshot));
            // At most what the elapsed time allows; at least most of it.
            assert!(trades as f64 <= elapsed * 50.0 + 1.0 && trades >= 35, "{symbol}: {trades} trades in {elapsed}s");
            assert!(tickers as f64 <= elapsed * 10.0 + 1.0 && tickers >= 7, "{symbol}: {tickers} tickers");
            assert!(books as f64 <= elapsed * 10.0 + 1.0 && books >= 7, "{symbol}: {books} books");
        }
    }

    #[tokio::test]
    async fn zero_rates_disable_streams() {
        let config =
            SimConfig { tickers_per_sec: 0.0, books_per_sec: f64::NAN, trades_per_sec: 100.0, ..SimConfig::default() };
        let (v, _) = venue_with(config);
        let mut rx = v.subscribe();
        let handle = v.spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.abort();
        let mut n = 0;
        while let Ok(e) = rx.try_recv() {
            assert_eq!(e.kind, EventKind::Trade);
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn market_buy_fills_at_ask_and_reports_only_to_owner() {
        let (v, sink) = venue();
        let mut rx = v.subscribe();
        v.step(0);
        while rx.try_recv().is_ok() {}
        let ask = v.market_state("BTC-USDT").unwrap().ask;
        v.submit(order("inst-a", "c1", "BTC-USDT", Side::Buy, 0.5, None)).unwrap();
        let got = sink.take();
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got.iter().all(|(owner, e)| owner == "inst-a" && e.is_private() && &*e.symbol == "BTC-USDT"));
        let kinds: Vec<_> = got.iter().map(|(_, e)| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::ExecReport, EventKind::ExecReport, EventKind::BalanceUpdate, EventKind::BalanceUpdate]
        );
        assert!(got.windows(2).all(|w| w[1].1.event_id == w[0].1.event_id + 1));
        assert!(got[0].1.event_id > 6 && got.iter().all(|(_, e)| e.seq_provider == e.event_id));

        let ack = report(&got[0].1);
        assert_eq!(ack.state, OrderState::Acknowledged);
        assert_eq!((ack.client_order_id.as_str(), ack.order_type, ack.side), ("c1", OrderType::Market, Side::Buy));
        assert_eq!((ack.quantity.as_str(), ack.filled_quantity.as_str()), ("0.500000", "0.000000"));
        assert_eq!(ack.remaining_qty, "0.500000");
        assert!(ack.exchange_order_id.starts_with("sim-"));
        let fill = report(&got[1].1);
        assert_eq!(fill.state, OrderState::Filled);
        assert_eq!(fill.exchange_order_id, ack.exchange_order_id);
        assert_eq!((num(&fill.price), num(&fill.avg_fill_price)), (ask, ask));
        assert_eq!((fill.filled_quantity.as_str(), fill.remaining_qty.as_str()), ("0.500000", "0.000000"));
        assert_eq!(fill.reject_reason, None);

        let usdt = balance(&got[2].1);
        assert_eq!(usdt.currency, "USDT");
        assert!((num(&usdt.total) - (100_000.0 - 0.5 * ask)).abs() < 1e-6);
        assert_eq!(usdt.total, usdt.available);
        let btc = balance(&got[3].1);
        assert_eq!(
            (btc.currency.as_str(), btc.total.as_str(), btc.available.as_str()),
            ("BTC", "0.50000000", "0.50000000")
        );

        // A second order gets a new exchange id; nothing private was broadcast.
        v.submit(order("inst-a", "c2", "BTC-USDT", Side::Buy, 0.1, None)).unwrap();
        let got2 = sink.take();
        assert_ne!(report(&got2[0].1).exchange_order_id, ack.exchange_order_id);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn market_sell_fills_at_bid_and_may_go_short() {
        let (v, sink) = venue();
        v.step(0);
        let bid = v.market_state("ETH-USDT").unwrap().bid;
        v.submit(order("inst-b", "s1", "ETH-USDT", Side::Sell, 2.0, None)).unwrap();
        let got = sink.take();
        assert_eq!(got.len(), 4);
        assert_eq!(num(&report(&got[1].1).avg_fill_price), bid);
        assert!((num(&balance(&got[2].1).total) - (100_000.0 + 2.0 * bid)).abs() < 1e-6);
        assert_eq!(balance(&got[3].1).total, "-2.00000000");
        // The ETH buy and the BTC account share the one USDT balance.
        v.submit(order("inst-b", "b1", "BTC-USDT", Side::Buy, 0.001, None)).unwrap();
        let usdt = num(&balance(&sink.take()[2].1).total);
        assert!(usdt > 100_000.0 && usdt < 100_000.0 + 2.0 * bid);
    }

    #[test]
    fn accounts_are_per_owner() {
        let (v, sink) = venue();
        v.step(0);
        v.submit(order("a", "1", "BTC-USDT", Side::Buy, 1.0, None)).unwrap();
        v.submit(order("b", "1", "BTC-USDT", Side::Buy, 1.0, None)).unwrap();
        let got = sink.take();
        assert_eq!(balance(&got[2].1).total, balance(&got[6].1).total);
        assert_eq!((got[0].0.as_str(), got[4].0.as_str()), ("a", "b"));
        v.remove_owner("a");
        assert!(!v.state.lock().accounts.contains_key("a"));
    }

    /// Steps until a trade of `symbol` satisfies `cross`, checking that the
    /// resting order stays silent until then and fills on that very step.
    fn step_until_filled(
        v: &SimVenue,
        sink: &RecordingSink,
        symbol: &str,
        cross: impl Fn(f64) -> bool,
    ) -> Vec<(String, MarketEvent)> {
        for now in 1..200_000 {
            let events = v.step(now);
            let price = events.iter().filter(|e| &*e.symbol == symbol).find_map(|e| trade_price(e)).unwrap();
            let got = sink.take();
            if cross(price) {
                assert_eq!(got.len(), 3, "step {now}: {got:#?}");
                assert!(got.iter().all(|(_, e)| e.emit_ts == now));
                return got;
            }
            assert!(got.is_empty(), "filled without a crossing trade at step {now}: {got:#?}");
        }
        panic!("no crossing trade");
    }

    #[test]
    fn limit_buy_rests_until_a_trade_prints_at_or_below_it() {
        let (v, sink) = venue();
        v.step(0);
        let limit = (v.market_state("ETH-USDT").unwrap().bid - 5.0).round();
        v.submit(order("inst-a", "L1", "ETH-USDT", Side::Buy, 10.0, Some(limit))).unwrap();
        let got = sink.take();
        assert_eq!(got.len(), 2);
        let ack = report(&got[0].1);
        assert_eq!((ack.state, ack.order_type, num(&ack.price)), (OrderState::Acknowledged, OrderType::Limit, limit));
        // The notional is held while the order rests.
        let held = balance(&got[1].1);
        assert_eq!(num(&held.total), 100_000.0);
        assert!((num(&held.available) - (100_000.0 - 10.0 * limit)).abs() < 1e-6);

        let got = step_until_filled(&v, &sink, "ETH-USDT", |p| p <= limit);
        assert!(got.iter().all(|(owner, _)| owner == "inst-a"));
        let fill = report(&got[0].1);
        assert_eq!((fill.state, fill.client_order_id.as_str()), (OrderState::Filled, "L1"));
        assert_eq!(fill.exchange_order_id, ack.exchange_order_id);
        assert_eq!((num(&fill.price), num(&fill.avg_fill_price)), (limit, limit));
        let usdt = balance(&got[1].1);
        assert!((num(&usdt.total) - (100_000.0 - 10.0 * limit)).abs() < 1e-6);
        assert_eq!(usdt.total, usdt.available);
        assert_eq!(balance(&got[2].1).total, "10.00000000");
        assert!(v.state.lock().resting.iter().all(Vec::is_empty));
        assert_eq!(v.state.lock().accounts["inst-a"].open_orders, 0);
    }

    #[test]
    fn limit_sell_rests_until_a_trade_prints_at_or_above_it() {
        let (v, sink) = venue();
        v.step(0);
        let limit = (v.market_state("BTC-USDT").unwrap().ask + 30.0).round();
        v.submit(order("inst-s", "L2", "BTC-USDT", Side::Sell, 0.25, Some(limit))).unwrap();
        assert_eq!(sink.take().len(), 1, "a sell holds nothing");
        let got = step_until_filled(&v, &sink, "BTC-USDT", |p| p >= limit);
        assert_eq!(num(&report(&got[0].1).avg_fill_price), limit);
        assert!((num(&balance(&got[1].1).total) - (100_000.0 + 0.25 * limit)).abs() < 1e-6);
        assert_eq!(balance(&got[2].1).total, "-0.25000000");
    }

    #[test]
    fn insufficient_balance_is_rejected_with_a_reason() {
        let (v, sink) = venue();
        v.step(0);
        v.submit(order("poor", "m1", "BTC-USDT", Side::Buy, 10.0, None)).unwrap();
        let got = sink.take();
        assert_eq!(got.len(), 1);
        let r = report(&got[0].1);
        assert_eq!(r.state, OrderState::Rejected);
        assert_eq!(r.reject_reason.as_deref(), Some("insufficient balance"));
        assert_eq!((r.filled_quantity.as_str(), r.remaining_qty.as_str()), ("0.000000", "0.000000"));
        let json = serde_json::to_value(&got[0].1).unwrap();
        assert_eq!(json["type"], "ExecReport");
        assert_eq!(json["payload"]["rejectReason"], "insufficient balance");
        assert_eq!(json["payload"]["state"], "rejected");

        // Limit buys count against the balance, including ones already resting.
        v.submit(order("poor", "l1", "ETH-USDT", Side::Buy, 30.0, Some(3_000.0))).unwrap();
        assert_eq!(report(&sink.take()[0].1).state, OrderState::Acknowledged);
        v.submit(order("poor", "l2", "ETH-USDT", Side::Buy, 5.0, Some(3_000.0))).unwrap();
        let got = sink.take();
        assert_eq!(got.len(), 1);
        assert_eq!(report(&got[0].1).reject_reason.as_deref(), Some("insufficient balance"));
        // Selling (going short) needs no balance.
        v.submit(order("poor", "s1", "BTC-USDT", Side::Sell, 10.0, None)).unwrap();
        assert_eq!(report(&sink.take()[1].1).state, OrderState::Filled);
    }

    #[test]
    fn too_many_resting_orders_are_rejected() {
        let (v, sink) = venue();
        v.step(0);
        for i in 0..MAX_OPEN_ORDERS_PER_OWNER {
            v.submit(order("spam", &i.to_string(), "BTC-USDT", Side::Sell, 0.001, Some(1e9))).unwrap();
        }
        sink.take();
        v.submit(order("spam", "last", "BTC-USDT", Side::Sell, 0.001, Some(1e9))).unwrap();
        assert_eq!(report(&sink.take()[0].1).reject_reason.as_deref(), Some("too many open orders"));
    }

    #[test]
    fn invalid_orders_are_refused_outright() {
        let (v, sink) = venue();
        v.step(0);
        let err = v.submit(order("a", "x", "DOGE-USDT", Side::Buy, 1.0, None)).unwrap_err();
        assert_eq!(err, VenueError::UnknownSymbol("DOGE-USDT".to_owned()));
        for qty in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9, 1e12] {
            let err = v.submit(order("a", "x", "BTC-USDT", Side::Buy, qty, None)).unwrap_err();
            assert!(matches!(err, VenueError::InvalidOrder(ref m) if m.starts_with("quantity")), "{qty}: {err}");
        }
        for price in [0.0, -5.0, f64::NAN, f64::NEG_INFINITY, 0.001, 1e13] {
            let err = v.submit(order("a", "x", "BTC-USDT", Side::Sell, 1.0, Some(price))).unwrap_err();
            assert!(matches!(err, VenueError::InvalidOrder(ref m) if m.starts_with("price")), "{price}: {err}");
        }
        assert!(sink.take().is_empty());
        assert!(v.state.lock().accounts.is_empty());
    }

    #[test]
    fn private_events_never_reach_the_broadcast() {
        let (v, sink) = venue();
        let mut rx = v.subscribe();
        let (mut public, mut seen) = (0, 0);
        for now in 0..2_000 {
            public += v.step(now).len();
            while let Ok(e) = rx.try_recv() {
                assert!(!e.is_private());
                assert!(matches!(e.kind, EventKind::Trade | EventKind::Ticker | EventKind::BookSnapshot));
                seen += 1;
            }
            if now % 10 == 0 {
                let s = v.market_state("BTC-USDT").unwrap();
                let side = if now % 20 == 0 { Side::Buy } else { Side::Sell };
                v.submit(order("p", &format!("m{now}"), "BTC-USDT", side, 0.01, None)).unwrap();
                v.submit(order("p", &format!("l{now}"), "BTC-USDT", side, 0.01, Some(s.last))).unwrap();
            }
        }
        let private = sink.take();
        assert!(private.iter().any(|(_, e)| report_state(e) == Some(OrderState::Filled)));
        assert!(rx.try_recv().is_err());
        assert_eq!(seen, public);
    }

    fn report_state(e: &MarketEvent) -> Option<OrderState> {
        match &e.payload {
            Payload::ExecReport(r) => Some(r.state),
            _ => None,
        }
    }

    /// A sink that trades from inside `deliver`, as an instance might.
    struct ReentrantSink {
        venue: std::sync::OnceLock<std::sync::Weak<SimVenue>>,
        inner: RecordingSink,
    }

    impl PrivateSink for ReentrantSink {
        fn deliver(&self, owner: &str, event: MarketEvent) {
            if report_state(&event) == Some(OrderState::Filled)
                && let Some(v) = self.venue.get().and_then(std::sync::Weak::upgrade)
            {
                let r = report(&event);
                assert!(v.market_state("BTC-USDT").is_some());
                if r.client_order_id.len() < 4 {
                    let next = format!("{}+", r.client_order_id);
                    v.submit(order(owner, &next, "BTC-USDT", Side::Sell, 0.01, None)).unwrap();
                }
            }
            self.inner.deliver(owner, event);
        }
    }

    #[test]
    fn sink_may_call_back_into_the_venue() {
        let sink = Arc::new(ReentrantSink { venue: std::sync::OnceLock::new(), inner: RecordingSink::default() });
        let v = SimVenue::new(SimConfig::default(), sink.clone());
        sink.venue.set(Arc::downgrade(&v)).unwrap();
        v.step(0);
        v.submit(order("r", "o", "BTC-USDT", Side::Buy, 0.01, None)).unwrap();
        let got = sink.inner.take();
        // o, o+, o++, o+++: four orders of four events each, in id order.
        assert_eq!(got.len(), 16, "{got:#?}");
        assert!(got.windows(2).all(|w| w[0].1.event_id < w[1].1.event_id));
        let filled: Vec<_> = got
            .iter()
            .filter(|(_, e)| report_state(e) == Some(OrderState::Filled))
            .map(|(_, e)| report(e).client_order_id.clone())
            .collect();
        assert_eq!(filled, ["o", "o+", "o++", "o+++"]);
    }

    #[test]
    fn concurrent_orders_and_steps_deliver_in_order() {
        let (v, sink) = venue();
        v.step(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for now in 1..3_000 {
                    v.step(now);
                }
            });
            for t in 0..3 {
                let v = &v;
                s.spawn(move || {
                    for i in 0..300 {
                        let st = v.market_state("ETH-USDT").unwrap();
                        let (side, price) = if i % 2 == 0 { (Side::Buy, st.bid) } else { (Side::Sell, st.ask) };
                        let owner = format!("t{t}");
                        v.submit(order(&owner, &format!("{i}"), "ETH-USDT", side, 0.01, Some(price))).unwrap();
                        v.submit(order(&owner, &format!("m{i}"), "ETH-USDT", side, 0.01, None)).unwrap();
                    }
                });
            }
        });
        let got = sink.take();
        assert!(got.windows(2).all(|w| w[0].1.event_id < w[1].1.event_id), "out of order");
        let mut acked = std::collections::HashSet::new();
        for (owner, e) in &got {
            if let Payload::ExecReport(r) = &e.payload {
                match r.state {
                    OrderState::Acknowledged => assert!(acked.insert(r.exchange_order_id.clone())),
                    OrderState::Filled => assert!(acked.contains(&r.exchange_order_id), "{owner}: fill before ack"),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(acked.len(), 3 * 600);
    }

    #[test]
    fn config_defaults_and_strict_fields() {
        let c: SimConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((c.name.as_str(), c.seed, c.book_depth), ("sim", 42, 5));
        assert_eq!(c.symbols, ["BTC-USDT", "ETH-USDT"]);
        assert_eq!((c.trades_per_sec, c.tickers_per_sec, c.books_per_sec), (5.0, 1.0, 1.0));
        assert_eq!(c.starting_balance, 100_000.0);
        let c: SimConfig =
            serde_json::from_str(r#"{"name":"paper","symbols":["SOL-USDC","SOL-USDC"],"trades_per_sec":2.5}"#).unwrap();
        assert_eq!(c.trades_per_sec, 2.5);
        let v = SimVenue::new(c, Arc::new(RecordingSink::default()));
        assert_eq!((v.name(), v.kind()), ("paper", "sim"));
        assert_eq!(v.symbols(), [Arc::<str>::from("SOL-USDC")]);
        let e = &v.step(0)[0];
        assert_eq!(&*e.provider, "paper");
        assert!((95.0..105.0).contains(&trade_price(e).unwrap()));
        assert!(serde_json::from_str::<SimConfig>(r#"{"seeed":1}"#).is_err());
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(fmt_ticks(6_000_012), "60000.12");
        assert_eq!(fmt_ticks(5), "0.05");
        assert_eq!(fmt_ticks(-105), "-1.05");
        assert_eq!(fmt_lots(1), "0.000001");
        assert_eq!(fmt_lots(-2_500_000), "-2.500000");
        assert_eq!(fmt_amount(-1e-12), "0.00000000");
        assert_eq!(fmt_amount(1.5), "1.50000000");
        let mut vol = Volume::new();
        vol.add(0, 5);
        vol.add(59_999, 5);
        vol.add(60_000, 1);
        assert_eq!(vol.total(60_000), 11);
        assert_eq!(vol.total(24 * 3_600_000 - 1), 11);
        assert_eq!(vol.total(24 * 3_600_000), 1);
        assert_eq!(vol.total(24 * 3_600_000 + 60_000), 0);
    }
}
