//! Market venues ("providers"): where instances get market data and send
//! orders. The only venue today is the simulated one (`sim`); the
//! [`Provider`] trait is the seam a real venue adapter plugs into.
//!
//! This module defines the event and order types shared by venues, the JS
//! host and the instance manager. Payload decimals are strings, as strategies
//! receive them (SPEC §1.2).

pub mod sim;

use std::sync::Arc;

use serde::Serialize;
use strata_shared::metadata::EventKind;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// One event as a strategy sees it (`evt` in SPEC §1.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketEvent {
    /// Unique per provider, increasing.
    pub event_id: u64,
    /// Provider name (e.g. `sim`).
    #[serde(serialize_with = "serialize_arc_str")]
    pub provider: Arc<str>,
    /// Instrument, e.g. `BTC-USDT`.
    #[serde(serialize_with = "serialize_arc_str")]
    pub symbol: Arc<str>,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Sequence number within the provider's stream.
    pub seq_provider: u64,
    /// When the venue produced it.
    pub ingest_ts: Millis,
    /// When it was emitted to instances.
    pub emit_ts: Millis,
    /// The payload (also passed as the handler's third argument).
    pub payload: Payload,
}

/// Serialises an `Arc<str>` as a plain string (serde's `rc` feature is off).
fn serialize_arc_str<S: serde::Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

impl MarketEvent {
    /// Whether the event must never be dropped from a full queue
    /// (an instance's own order reports and balances).
    pub fn is_private(&self) -> bool {
        matches!(self.payload, Payload::ExecReport(_) | Payload::Balance(_))
    }
}

/// Event payloads. Serialised without a tag: the event's `type` says which.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// A public trade.
    Trade(TradePayload),
    /// Best bid/ask and 24h volume.
    Ticker(TickerPayload),
    /// Order book levels.
    Book(BookPayload),
    /// A report on one of the instance's own orders.
    ExecReport(ExecReportPayload),
    /// The instance's paper balance changed.
    Balance(BalancePayload),
}

/// Trade payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TradePayload {
    /// Venue trade id.
    pub trade_id: String,
    /// Aggressor side: `buy` or `sell`.
    pub side: Side,
    /// Price (decimal string).
    pub price: String,
    /// Quantity (decimal string).
    pub quantity: String,
    /// Venue timestamp.
    pub timestamp: Millis,
}

/// Ticker payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickerPayload {
    /// Last trade price.
    pub last_price: String,
    /// Best bid.
    pub bid_price: String,
    /// Best ask.
    pub ask_price: String,
    /// Volume over 24 h.
    pub volume24h: String,
    /// Venue timestamp.
    pub timestamp: Millis,
}

/// One book level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookLevel {
    /// Price (decimal string).
    pub price: String,
    /// Quantity (decimal string).
    pub quantity: String,
}

/// Book snapshot payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BookPayload {
    /// Bids, best first.
    pub bids: Vec<BookLevel>,
    /// Asks, best first.
    pub asks: Vec<BookLevel>,
    /// Checksum of the levels.
    pub checksum: u32,
    /// Venue timestamp.
    pub last_update: Millis,
}

/// Order states reported in ExecReports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderState {
    /// Accepted by the venue.
    Acknowledged,
    /// Partly filled.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Cancelled.
    Cancelled,
    /// Expired.
    Expired,
    /// Rejected (see `rejectReason`).
    Rejected,
}

/// Order type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OrderType {
    /// Fill at the best available price.
    Market,
    /// Fill at the given price or better.
    Limit,
}

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// Buy (long, bid).
    Buy,
    /// Sell (short, ask).
    Sell,
}

/// ExecReport payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecReportPayload {
    /// Our id for the order.
    pub client_order_id: String,
    /// The venue's id for the order.
    pub exchange_order_id: String,
    /// New state.
    pub state: OrderState,
    /// Side.
    pub side: Side,
    /// Market or limit.
    pub order_type: OrderType,
    /// Limit price, or the fill price for market orders (decimal string).
    pub price: String,
    /// Ordered quantity.
    pub quantity: String,
    /// Filled so far.
    pub filled_quantity: String,
    /// Still open.
    pub remaining_qty: String,
    /// Average fill price.
    pub avg_fill_price: String,
    /// Venue timestamp.
    pub timestamp: Millis,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<String>,
}

/// BalanceUpdate payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BalancePayload {
    /// Currency, e.g. `USDT`.
    pub currency: String,
    /// Total balance.
    pub total: String,
    /// Available balance.
    pub available: String,
    /// Venue timestamp.
    pub timestamp: Millis,
}

/// Best prices of one symbol (`getMarketState()`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketState {
    /// Last trade price.
    pub last: f64,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// `ask - bid`.
    pub spread: f64,
    /// Spread as a percentage of the mid price.
    pub spread_pct: f64,
}

/// An order an instance sends to a venue (never for dry-run instances).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    /// The instance that owns the order; its ExecReports go only there.
    pub owner: Arc<str>,
    /// Our id for the order (unique per daemon).
    pub client_order_id: String,
    /// Instrument.
    pub symbol: Arc<str>,
    /// Side.
    pub side: Side,
    /// Quantity (> 0).
    pub quantity: f64,
    /// Limit price; `None` for a market order.
    pub price: Option<f64>,
}

/// Why a venue refused an order outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenueError {
    /// The symbol is not traded on this venue.
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    /// The order is malformed (quantity, price).
    #[error("invalid order: {0}")]
    InvalidOrder(String),
}

/// Where a venue delivers an instance's private events (ExecReports,
/// balance updates). Implemented by the instance manager.
pub trait PrivateSink: Send + Sync {
    /// Delivers `event` to the instance `owner`, if it still exists.
    fn deliver(&self, owner: &str, event: MarketEvent);
}

/// A market venue. Implementations must be cheap to call from many threads.
pub trait Provider: Send + Sync {
    /// Configured name (the key of an instance's `scope`).
    fn name(&self) -> &str;
    /// Kind, e.g. `sim`.
    fn kind(&self) -> &str;
    /// Symbols it trades.
    fn symbols(&self) -> &[Arc<str>];
    /// Public market data: every event of every symbol. A receiver that
    /// falls behind loses the oldest events (broadcast semantics).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<MarketEvent>>;
    /// Best prices of a symbol, if any trade happened yet.
    fn market_state(&self, symbol: &str) -> Option<MarketState>;
    /// Sends an order. Reports come back through the [`PrivateSink`].
    fn submit(&self, order: OrderRequest) -> Result<(), VenueError>;
    /// Forgets everything the venue holds for `owner` (a deleted instance):
    /// paper accounts, resting orders. Real venues keep their own books.
    fn forget_owner(&self, _owner: &str) {}
}
