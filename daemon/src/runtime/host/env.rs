//! The `env` a strategy is created with (SPEC §1.2): `helpers`, `runtime`
//! and `console`, and the host state behind them (sleeps, market getters,
//! orders and their rate cap).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rquickjs::function::{Opt, Rest};
use rquickjs::{Array, Ctx, Exception, Function, Object, Value};
use strata_shared::metadata::parse_duration;

use crate::js::{self, CpuBudget, LogLevel};
use crate::runtime::logs::Counters;
use crate::runtime::orders::{Admission, OrderRate};
use crate::venue::{OrderRequest, Side};

use super::marshal::*;
use super::{HostShared, HostSpec, ScopeEntry, SleepHook};

/// What a strategy sees (if it catches it) once its order storm stops it.
pub(super) const STORM_MESSAGE: &str = "order storm: the instance is being stopped";

/// State the `env` functions share with the instance.
pub(super) struct HostState {
    pub(super) instance_id: Arc<str>,
    pub(super) strategy: Arc<str>,
    pub(super) hash: String,
    pub(super) shared: Arc<HostShared>,
    /// Scope with empty symbol lists expanded to the provider's symbols.
    pub(super) scope: Vec<ScopeEntry>,
    pub(super) dry_run: bool,
    pub(super) sleep_cap: Duration,
    pub(super) sleep_hook: Arc<dyn SleepHook>,
    pub(super) budget: CpuBudget,
    /// The "current symbol": scope index of its provider (if in scope) and
    /// the symbol.
    pub(super) current: Mutex<Option<(Option<usize>, Arc<str>)>>,
    /// The order-rate cap.
    pub(super) orders: Mutex<OrderRate>,
    /// The number of orders refused, set once the cap saw an order storm
    /// (0 = no storm): the instance dies.
    pub(super) storm: AtomicU32,
}

/// Builds `env` (SPEC §1.2).
pub(super) fn build_env<'js>(ctx: &Ctx<'js>, state: &Arc<HostState>, spec: &HostSpec) -> rquickjs::Result<Object<'js>> {
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
pub(super) fn define<'js, F, P>(ctx: &Ctx<'js>, object: &Object<'js>, name: &str, function: F) -> rquickjs::Result<()>
where
    F: rquickjs::function::IntoJsFunc<'js, P> + 'js,
{
    object.set(name, Function::new(ctx.clone(), function)?.with_name(name)?)
}

/// The duration a `helpers.sleep` argument asks for: a number of
/// milliseconds or a duration string (`"150ms"`, `"2s"`).
pub(super) fn sleep_duration<'js>(ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<Duration> {
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
    pub(super) fn sleep(&self, duration: Duration) -> bool {
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
    pub(super) fn market_state(&self) -> Option<crate::venue::MarketState> {
        let current = self.current.lock();
        let (provider, symbol) = current.as_ref()?;
        let (provider, _) = self.scope.get(provider.unwrap_or(0))?;
        provider.market_state(symbol)
    }

    /// `selectProvider(seed)`: a deterministic pick among the scope's
    /// providers (FNV-1a of a string seed, an integer seed modulo the
    /// count); `null` with no provider in scope.
    pub(super) fn select_provider<'js>(
        &self,
        ctx: &Ctx<'js>,
        seed: Option<Value<'js>>,
    ) -> rquickjs::Result<Option<String>> {
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
    pub(super) fn submit<'js>(
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
    pub(super) fn admit_order<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<()> {
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
    pub(super) fn provider_arg<'js>(&self, ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<&ScopeEntry> {
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
pub(super) fn side_arg<'js>(ctx: &Ctx<'js>, value: Option<Value<'js>>) -> rquickjs::Result<Side> {
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
pub(super) fn positive_arg<'js>(ctx: &Ctx<'js>, what: &str, value: Option<Value<'js>>) -> rquickjs::Result<f64> {
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
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
