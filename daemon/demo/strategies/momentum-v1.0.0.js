// Strata example strategy: momentum, revision v1.0.0 (the first release).
//
// Keeps the last `lookback` trade prices, measures the return across that window and trades in
// its direction: a return above +threshold means "be long `quantity`", below -threshold means
// "be flat". One order at a time, at least `cooldown` apart, only while trading is active.
// Known limits, addressed in later revisions: it ignores the spread (v1.1.0 adds a spread
// filter and an optional short side), holds one fixed-size position, simply retries a rejected
// order after the cooldown and books fills from the final report only (v1.2.0).
//
// Time comes from the events (evt.emitTs, else payload.timestamp), never from the wall clock, so
// a replay behaves like the live run. With dry_run on, orders are not sent to the venue and no
// ExecReports come back: the strategy then books each market order as filled immediately (a
// paper position) so that it keeps making sensible decisions.
"use strict";

const EPS = 1e-9;
const ORDER_TTL_MS = 30_000; // an order with no report after this long no longer blocks trading
const UNIT_MS = { ns: 1e-6, us: 1e-3, "\u00b5s": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$/;

// Payload decimals are strings; anything unparsable becomes `fallback`.
const toNumber = (value, fallback = NaN) => {
  if (value === null || value === undefined || value === "") return fallback;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : fallback;
};

// "5s", "150ms", "1m30s", a number of milliseconds, or a serialised { secs, nanos }.
const parseDuration = (value, fallbackMs) => {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value : fallbackMs;
  if (value && typeof value === "object" && "secs" in value) {
    const ms = toNumber(value.secs, 0) * 1_000 + toNumber(value.nanos, 0) / 1e6;
    return ms >= 0 ? ms : fallbackMs;
  }
  if (typeof value !== "string") return fallbackMs;
  const text = value.replace(/\s+/g, "").toLowerCase();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const part = /(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  let match;
  while ((match = part.exec(text)) !== null) {
    if (match.index !== consumed) return fallbackMs;
    total += Number(match[1]) * UNIT_MS[match[2]];
    consumed = part.lastIndex;
  }
  return consumed > 0 && consumed === text.length ? total : fallbackMs;
};

// Event timestamps as epoch milliseconds: RFC 3339 strings, or numbers in s / ms / us / ns
// (told apart by magnitude; small numbers are taken as a millisecond counter).
const toEpochMs = (value) => {
  if (value === null || value === undefined || value === "") return NaN;
  let n = value;
  if (typeof value === "string") {
    const text = value.trim();
    const m = RFC3339.exec(text);
    if (m) {
      const [, y, mo, d, h, mi, s, frac = "", zone = "Z"] = m;
      let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) + Number(`0.${frac || "0"}`) * 1_000;
      if (zone !== "Z" && zone !== "z") {
        const digits = zone.slice(1).replace(":", "");
        const offsetMin = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2));
        ms -= (zone[0] === "-" ? -1 : 1) * offsetMin * 60_000;
      }
      return ms;
    }
    n = Number(text);
    if (!Number.isFinite(n)) return Date.parse(text);
  }
  n = Number(n);
  if (!Number.isFinite(n)) return NaN;
  const abs = Math.abs(n);
  if (abs >= 1e17) return n / 1e6;
  if (abs >= 1e14) return n / 1e3;
  if (abs >= 1e11) return n;
  if (abs >= 1e9) return n * 1e3;
  return n;
};

const eventTime = (evt, payload) => {
  for (const candidate of [evt?.emitTs, payload?.timestamp, evt?.ingestTs]) {
    const t = toEpochMs(candidate);
    if (Number.isFinite(t)) return t;
  }
  return NaN;
};

const sideSign = (side) => {
  if (typeof side === "number") return Math.sign(side);
  const s = String(side ?? "").trim().toLowerCase();
  if (s === "buy" || s === "long" || s === "bid") return 1;
  if (s === "sell" || s === "short" || s === "ask") return -1;
  const n = Number(s);
  return Number.isFinite(n) ? Math.sign(n) : 0;
};

const roundQty = (q) => Math.round(q * 1e8) / 1e8;
const pct = (x) => `${(x * 100).toFixed(3)}%`;
// submitMarketOrder/submitOrder may return an id, or an object carrying one, or nothing.
const orderIdOf = (result) => {
  const id = typeof result === "object" ? result?.clientOrderId ?? result?.orderId ?? result?.id : result;
  return typeof id === "string" || typeof id === "number" ? String(id) : null;
};

module.exports = {
  metadata: {
    name: "momentum",
    displayName: "Momentum (trade-window return)",
    description:
      "Holds `quantity` long while the return over the last `lookback` trades is above " +
      "`threshold` and goes flat below -`threshold`; waits `cooldown` between orders.",
    tag: "v1.0.0",
    config: [
      { name: "lookback", type: "int", default: 20, required: false, description: "Number of recent trade prices in the momentum window (min 2)." },
      { name: "threshold", type: "float", default: 0.002, required: false, description: "Window return that triggers a trade, as a fraction (0.002 = 0.2%)." },
      { name: "quantity", type: "number", default: 0.01, required: false, description: "Position size held on a signal, in base units." },
      { name: "cooldown", type: "duration", default: "5s", required: false, description: "Minimum time between two orders (event time)." },
    ],
    events: ["Trade", "ExecReport"],
  },

  create(env) {
    const cfg = env?.config ?? {};
    const runtime = env?.runtime ?? {};
    const lookback = Math.max(2, Math.trunc(toNumber(cfg.lookback, 20)));
    const threshold = Math.abs(toNumber(cfg.threshold, 0.002));
    const quantity = Math.abs(toNumber(cfg.quantity, 0.01));
    const cooldownMs = parseDuration(cfg.cooldown, 5_000);

    const log = (...args) => {
      try {
        const sink = env?.helpers?.log;
        if (typeof sink === "function") sink(...args);
        else console.log(...args);
      } catch (_) {
        // logging must never break trading
      }
    };
    const tradingActive = () => {
      try {
        return typeof runtime.isTradingActive !== "function" || runtime.isTradingActive() !== false;
      } catch (_) {
        return false;
      }
    };
    const dryRun = () => {
      try {
        return typeof runtime.isDryRun === "function" ? Boolean(runtime.isDryRun()) : cfg.dry_run !== false;
      } catch (_) {
        return true;
      }
    };
    const pickProvider = (evt) => {
      if (evt?.provider) return evt.provider;
      try {
        const chosen = runtime.selectProvider?.(evt?.symbol ?? "momentum");
        if (chosen) return typeof chosen === "string" ? chosen : chosen.name ?? chosen.id;
        const first = runtime.providers?.()?.[0];
        return typeof first === "string" ? first : first?.name ?? first?.id;
      } catch (_) {
        return undefined;
      }
    };

    const prices = [];
    let now = NaN;
    let position = 0; // filled position in base units (+ long, - short)
    let pending = null; // { id, side, qty, submittedAt } while a live order awaits its report
    let lastOrderAt = -Infinity;
    let lastNote = "";
    let warnedNoClock = false;

    const tick = (evt, payload) => {
      const t = eventTime(evt, payload);
      if (Number.isFinite(t) && !(t < now)) now = t;
      return now;
    };
    const note = (message) => {
      if (message !== lastNote) log(message);
      lastNote = message;
    };

    // The order that moves the position to the signal's target, or null when already there.
    const planOrder = (signal) => {
      const target = signal > 0 ? quantity : 0;
      const delta = roundQty(target - position);
      if (Math.abs(delta) <= EPS) return null;
      const why = target > 0 ? "go long" : "go flat";
      return { side: delta > 0 ? "buy" : "sell", qty: Math.abs(delta), why };
    };

    const blockedBy = (t) => {
      if (!tradingActive()) return "trading inactive";
      if (pending) {
        if (t - pending.submittedAt > ORDER_TTL_MS) {
          log(`momentum: no report for order ${pending.id ?? "(no id)"} after ${ORDER_TTL_MS} ms, no longer waiting for it`);
          pending = null;
        } else {
          return "waiting for the previous order";
        }
      }
      if (t < lastOrderAt + cooldownMs) return "cooldown";
      return "";
    };

    const submit = (order, t, evt, ret, price) => {
      const { side, qty, why } = order;
      const provider = pickProvider(evt);
      lastOrderAt = t;
      let result;
      try {
        result = runtime.submitMarketOrder(provider, side, qty);
      } catch (err) {
        log(`momentum: submit failed (${err?.message ?? err}); retrying after the cooldown`);
        return;
      }
      lastNote = "";
      log(`momentum: ${side} ${qty} at market (~${Number(price.toPrecision(10))}) to ${why}; return ${pct(ret)} over ${lookback} trades, position ${position}`);
      if (dryRun()) {
        position = roundQty(position + sideSign(side) * qty);
        log(`momentum: dry run, booking the order as filled; paper position ${position}`);
      } else {
        pending = { id: orderIdOf(result), side, qty, submittedAt: t };
      }
    };

    // Books a filled order: its final report's filledQuantity is the order's total.
    const bookFill = (payload) => {
      if (dryRun()) return;
      const sign = sideSign(payload?.side);
      const filled = toNumber(payload?.filledQuantity, toNumber(payload?.quantity, 0));
      if (sign !== 0 && filled > EPS) position = roundQty(position + sign * filled);
    };
    const settle = (payload) => {
      const id = payload?.clientOrderId ?? null;
      if (pending && (pending.id === null || id === null || pending.id === String(id))) pending = null;
    };

    return {
      onTrade(ctx, evt, payload, price) {
        const t = tick(evt, payload);
        const px = toNumber(price, toNumber(payload?.price));
        if (!(px > 0)) return;
        prices.push(px);
        if (prices.length > lookback) prices.shift();
        if (prices.length < lookback) return;

        const ret = px / prices[0] - 1;
        const signal = ret > threshold ? 1 : ret < -threshold ? -1 : 0;
        if (signal === 0) return;
        const order = planOrder(signal);
        if (!order) return;
        if (!Number.isFinite(t) && !warnedNoClock) {
          warnedNoClock = true;
          log("momentum: events carry no timestamp; cooldown cannot be enforced");
        }
        const blocked = blockedBy(t);
        if (blocked) {
          note(`momentum: wanted to ${order.side} ${order.qty} (${order.why}) but skipped: ${blocked}`);
          return;
        }
        submit(order, t, evt, ret, px);
      },

      onOrderAcknowledged(ctx, evt, payload) {
        tick(evt, payload);
        if (pending && pending.id === null && payload?.clientOrderId) pending.id = String(payload.clientOrderId);
      },

      onOrderFilled(ctx, evt, payload) {
        tick(evt, payload);
        bookFill(payload);
        settle(payload);
        log(`momentum: ${payload?.side ?? "?"} ${payload?.filledQuantity ?? "?"} filled at ${payload?.avgFillPrice ?? "?"}; position ${position}`);
      },

      onOrderCancelled(ctx, evt, payload) {
        tick(evt, payload);
        settle(payload);
        log(`momentum: order ${payload?.clientOrderId ?? "?"} cancelled; position ${position}`);
      },

      onOrderExpired(ctx, evt, payload) {
        tick(evt, payload);
        settle(payload);
        log(`momentum: order ${payload?.clientOrderId ?? "?"} expired; position ${position}`);
      },

      onOrderRejected(ctx, evt, payload, reason) {
        tick(evt, payload);
        settle(payload);
        log(`momentum: order rejected (${reason ?? payload?.rejectReason ?? "no reason given"}); retrying after the cooldown`);
      },
    };
  },
};
