// Strata example strategy: mean-reversion (Bollinger-style z-score), revision v1.0.0.
//
// Tracks the mid price ((bid + ask) / 2, else the last price) of the last `window` tickers and
// its z-score against their mean and standard deviation. When the mid is `entryZ` deviations
// below the mean it bids `quantity` at the best bid (a passive limit order); when the position
// is long and the z-score has come back above -`exitZ` it offers the position at the best ask.
// With `allowShort` the mirror trades are made above the mean.
//
// One working order at a time. The runtime has no cancel call, so a live order that gets no
// report within `orderTimeout` stops blocking new decisions (fills that arrive later are still
// booked). With dry_run on, orders never reach the venue and no ExecReports come back: the
// strategy then books a paper fill once a later ticker trades through its limit price.
"use strict";

const EPS = 1e-9;
const UNIT_MS = { ns: 1e-6, us: 1e-3, "\u00b5s": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$/;

const toNumber = (value, fallback = NaN) => {
  if (value === null || value === undefined || value === "") return fallback;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : fallback;
};

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
const orderIdOf = (result) => {
  const id = typeof result === "object" ? result?.clientOrderId ?? result?.orderId ?? result?.id : result;
  return typeof id === "string" || typeof id === "number" ? String(id) : null;
};

const meanAndStd = (values) => {
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  const variance = values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / values.length;
  return { mean, std: Math.sqrt(variance) };
};

module.exports = {
  metadata: {
    name: "mean-reversion",
    displayName: "Mean reversion (Bollinger z-score on ticker mid)",
    description:
      "Bids at the best bid when the ticker mid is `entryZ` standard deviations below its " +
      "`window`-ticker mean and offers the position back at the best ask once the z-score is " +
      "inside `exitZ`. Passive limit orders, one at a time.",
    tag: "v1.0.0",
    config: [
      { name: "window", type: "int", default: 50, required: false, description: "Number of recent ticker mids in the mean / standard deviation (min 2)." },
      { name: "entryZ", type: "float", default: 2.0, required: false, description: "Absolute z-score at which a position is opened." },
      { name: "exitZ", type: "float", default: 0.5, required: false, description: "Absolute z-score inside which the position is closed (must be below entryZ; else entryZ / 2 is used)." },
      { name: "quantity", type: "number", default: 0.01, required: false, description: "Size of each entry order, in base units." },
      { name: "allowShort", type: "bool", default: false, required: false, description: "Also sell short when the mid is entryZ deviations above the mean." },
      { name: "orderTimeout", type: "duration", default: "60s", required: false, description: "How long a live order with no report blocks new orders." },
    ],
    events: ["Ticker", "ExecReport"],
  },

  create(env) {
    const cfg = env?.config ?? {};
    const runtime = env?.runtime ?? {};
    const windowSize = Math.max(2, Math.trunc(toNumber(cfg.window, 50)));
    const entryZ = Math.abs(toNumber(cfg.entryZ, 2.0));
    const requestedExitZ = Math.abs(toNumber(cfg.exitZ, 0.5));
    const exitZ = requestedExitZ < entryZ ? requestedExitZ : entryZ / 2;
    const quantity = Math.abs(toNumber(cfg.quantity, 0.01));
    const allowShort = cfg.allowShort === true || cfg.allowShort === "true";
    const orderTimeoutMs = parseDuration(cfg.orderTimeout, 60_000);

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
        const chosen = runtime.selectProvider?.(evt?.symbol ?? "mean-reversion");
        if (chosen) return typeof chosen === "string" ? chosen : chosen.name ?? chosen.id;
        const first = runtime.providers?.()?.[0];
        return typeof first === "string" ? first : first?.name ?? first?.id;
      } catch (_) {
        return undefined;
      }
    };
    const runtimePrice = (fn) => {
      try {
        return toNumber(runtime[fn]?.());
      } catch (_) {
        return NaN;
      }
    };

    if (exitZ !== requestedExitZ) log(`mean-reversion: exitZ ${requestedExitZ} is not below entryZ ${entryZ}; using ${exitZ}`);

    const mids = [];
    const filledByOrder = new Map(); // clientOrderId -> cumulative quantity already booked
    let now = NaN;
    let position = 0;
    let working = null; // { id, side, qty, price, placedAt, paper }
    let wasActive = true;
    let failures = 0;

    const tick = (evt, payload) => {
      const t = eventTime(evt, payload);
      if (Number.isFinite(t) && !(t < now)) now = t;
      return now;
    };

    const book = (sign, qty) => {
      if (sign !== 0 && qty > EPS) position = roundQty(position + sign * qty);
    };

    // Live fills: books the part of filledQuantity not booked yet for this clientOrderId.
    const bookReport = (payload, final) => {
      if (dryRun()) return;
      const id = payload?.clientOrderId ?? null;
      const cumulative = toNumber(payload?.filledQuantity, final ? toNumber(payload?.quantity, 0) : NaN);
      if (!Number.isFinite(cumulative)) return;
      if (id === null) {
        if (final) book(sideSign(payload?.side), cumulative);
        return;
      }
      const key = String(id);
      book(sideSign(payload?.side), cumulative - (filledByOrder.get(key) ?? 0));
      if (final) filledByOrder.delete(key);
      else filledByOrder.set(key, cumulative);
    };
    const release = (payload) => {
      const id = payload?.clientOrderId ?? null;
      if (working && !working.paper && (working.id === null || id === null || working.id === String(id))) working = null;
    };

    const place = (evt, side, qty, price, why, z) => {
      const provider = pickProvider(evt);
      let result;
      try {
        result = runtime.submitOrder(provider, side, qty, price);
      } catch (err) {
        failures += 1;
        if (failures <= 3 || failures % 100 === 0) log(`mean-reversion: submit failed (${err?.message ?? err})`);
        return;
      }
      failures = 0;
      working = { id: orderIdOf(result), side, qty, price, placedAt: now, paper: dryRun() };
      log(`mean-reversion: ${side} ${qty} limit ${price} to ${why} (z=${z.toFixed(2)}, position ${position})`);
    };

    return {
      onTicker(ctx, evt, payload) {
        const t = tick(evt, payload);
        const last = toNumber(payload?.lastPrice);
        let bid = toNumber(payload?.bidPrice);
        let ask = toNumber(payload?.askPrice);
        if (!(bid > 0)) bid = runtimePrice("getBidPrice");
        if (!(ask > 0)) ask = runtimePrice("getAskPrice");
        const quoted = bid > 0 && ask >= bid;
        const mid = quoted ? (bid + ask) / 2 : last;
        if (!(mid > 0)) return;

        // Dry run: a paper order fills once the market trades through its price.
        if (working?.paper) {
          const { side, qty, price } = working;
          const crossed = side === "buy"
            ? (ask > 0 && ask <= price) || (last > 0 && last <= price)
            : (bid > 0 && bid >= price) || (last > 0 && last >= price);
          if (crossed) {
            book(sideSign(side), qty);
            working = null;
            log(`mean-reversion: dry run, paper fill ${side} ${qty} at ${price}; position ${position}`);
          }
        }

        mids.push(mid);
        if (mids.length > windowSize) mids.shift();
        if (mids.length < windowSize) return;
        const { mean, std } = meanAndStd(mids);
        if (!(std > mid * 1e-9)) return;
        const z = (mid - mean) / std;

        if (working) {
          if (working.paper || !(t - working.placedAt > orderTimeoutMs)) return;
          log(`mean-reversion: no report for order ${working.id ?? "(no id)"} after ${orderTimeoutMs} ms, no longer waiting for it`);
          working = null;
        }

        const active = tradingActive();
        if (active !== wasActive) log(`mean-reversion: trading ${active ? "active" : "inactive"}`);
        wasActive = active;
        if (!active) return;

        const bidPx = bid > 0 ? bid : mid;
        const askPx = ask > 0 ? ask : mid;
        if (position > EPS) {
          if (z >= -exitZ) place(evt, "sell", position, askPx, "exit long", z);
        } else if (position < -EPS) {
          if (z <= exitZ) place(evt, "buy", -position, bidPx, "exit short", z);
        } else if (quantity > EPS) {
          if (z <= -entryZ) place(evt, "buy", quantity, bidPx, "enter long", z);
          else if (allowShort && z >= entryZ) place(evt, "sell", quantity, askPx, "enter short", z);
        }
      },

      onOrderAcknowledged(ctx, evt, payload) {
        tick(evt, payload);
        if (working && !working.paper && working.id === null && payload?.clientOrderId) working.id = String(payload.clientOrderId);
      },

      onOrderPartialFill(ctx, evt, payload) {
        tick(evt, payload);
        bookReport(payload, false);
      },

      onOrderFilled(ctx, evt, payload) {
        tick(evt, payload);
        bookReport(payload, true);
        release(payload);
        log(`mean-reversion: ${payload?.side ?? "?"} ${payload?.filledQuantity ?? "?"} filled at ${payload?.avgFillPrice ?? payload?.price ?? "?"}; position ${position}`);
      },

      onOrderCancelled(ctx, evt, payload) {
        tick(evt, payload);
        bookReport(payload, true);
        release(payload);
        log(`mean-reversion: order ${payload?.clientOrderId ?? "?"} cancelled; position ${position}`);
      },

      onOrderExpired(ctx, evt, payload) {
        tick(evt, payload);
        bookReport(payload, true);
        release(payload);
        log(`mean-reversion: order ${payload?.clientOrderId ?? "?"} expired; position ${position}`);
      },

      onOrderRejected(ctx, evt, payload, reason) {
        tick(evt, payload);
        bookReport(payload, true);
        release(payload);
        log(`mean-reversion: order rejected (${reason ?? payload?.rejectReason ?? "no reason given"})`);
      },
    };
  },
};
