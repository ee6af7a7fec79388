//! Marshalling between Rust and JS: handler names, the value slots and
//! interned keys kept in the runtime, event payload objects, and the
//! names of sides, states and order types.

use std::time::{SystemTime, UNIX_EPOCH};

use rquickjs::{Array, Atom, Ctx, Object, Value};
use strata_shared::metadata::EventKind;

use crate::venue::{MarketEvent, OrderState, OrderType, Payload, Side};

use super::JsInstance;

/// Handlers a strategy may define, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handler {
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
    pub(super) const ALL: [Handler; 14] = [
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

    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn of(event: &MarketEvent) -> Option<Handler> {
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

pub(super) fn kind_index(kind: EventKind) -> usize {
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

pub(super) fn side_index(side: Side) -> usize {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

pub(super) const ORDER_STATES: [OrderState; 6] = [
    OrderState::Acknowledged,
    OrderState::PartiallyFilled,
    OrderState::Filled,
    OrderState::Cancelled,
    OrderState::Expired,
    OrderState::Rejected,
];

pub(super) fn state_index(state: OrderState) -> usize {
    match state {
        OrderState::Acknowledged => 0,
        OrderState::PartiallyFilled => 1,
        OrderState::Filled => 2,
        OrderState::Cancelled => 3,
        OrderState::Expired => 4,
        OrderState::Rejected => 5,
    }
}

pub(super) fn order_type_index(order_type: OrderType) -> usize {
    match order_type {
        OrderType::Market => 0,
        OrderType::Limit => 1,
    }
}

// Layout of the value slots kept in the runtime's user data
// (`Vec<Value>`): handler object, handler functions (undefined when
// missing), constant strings, then the scope's provider names and symbols.
pub(super) const SLOT_HANDLER_OBJECT: usize = 0;
pub(super) const SLOT_HANDLERS: usize = 1;
pub(super) const SLOT_EVENT_TYPES: usize = SLOT_HANDLERS + Handler::ALL.len();
pub(super) const SLOT_SIDES: usize = SLOT_EVENT_TYPES + EventKind::ALL.len();
pub(super) const SLOT_STATES: usize = SLOT_SIDES + 2;
pub(super) const SLOT_ORDER_TYPES: usize = SLOT_STATES + ORDER_STATES.len();
pub(super) const SLOT_INSTANCE_ID: usize = SLOT_ORDER_TYPES + 2;
pub(super) const SLOT_STRATEGY: usize = SLOT_INSTANCE_ID + 1;
pub(super) const SLOT_HASH: usize = SLOT_STRATEGY + 1;
pub(super) const SLOT_SCOPE: usize = SLOT_HASH + 1;

/// JS values kept for the life of the runtime (see the slot layout above).
pub(super) type Slots<'js> = Vec<Value<'js>>;
/// Property names interned once per runtime, indexed by [`Key`].
pub(super) type Keys<'js> = Vec<Atom<'js>>;

macro_rules! keys {
    ($($variant:ident = $name:literal,)*) => {
        /// Property names the host sets on the objects it builds.
        #[derive(Debug, Clone, Copy)]
        pub(super) enum Key { $($variant,)* }
        /// [`Key`] names, in declaration order.
        pub(super) const KEY_NAMES: &[&str] = &[$($name,)*];
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

impl JsInstance {
    /// Builds the payload object (the shapes of SPEC §1.2).
    pub(super) fn payload_object<'js>(
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
}

pub(super) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0))
}

pub(super) fn js_string<'js>(ctx: &Ctx<'js>, text: &str) -> rquickjs::Result<Value<'js>> {
    Ok(rquickjs::String::from_str(ctx.clone(), text)?.into_value())
}

/// `Number(text)` for the decimal strings of payloads (NaN if it is not
/// one).
pub(super) fn js_number(text: &str) -> f64 {
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
pub(super) fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// JSON name of an order state (as serde writes it).
pub(super) fn state_name(state: OrderState) -> &'static str {
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
pub(super) fn order_type_name(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Market => "market",
        OrderType::Limit => "limit",
    }
}
