// Strata example strategy: grid, revision v1.0.0.
//
// On the first usable book snapshot it fixes a centre price (the mid) and lays out `levels` buy
// levels below it and `levels` sell levels above it, `spacingPct` percent apart
// (centre * (1 -/+ i * spacingPct / 100), i = 1..levels). On every BookSnapshot each idle level
// gets a resting limit order of `quantity` — a buy level only while it is below the best ask,
// a sell level only while it is above the best bid, so orders rest instead of crossing the book.
// A level is re-armed (made idle, so the next snapshot places it again) when its order is
// filled, cancelled, expired or rejected (rejected levels wait a few seconds first).
//
// The net position is kept within +/- levels * quantity by counting working orders. The grid
// never moves: if the price leaves it, the strategy waits for it to come back. With dry_run on,
// orders never reach the venue and no ExecReports come back: a working level then gets a paper
// fill once the book trades through its price.
"use strict";

const EPS = 1e-9;
const REJECT_RETRY_MS = 10_000;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$/;

const toNumber = (value, fallback = NaN) => {
  if (value === null || value === undefined || value === "") return fallback;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : fallback;
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
const roundPrice = (p) => Number(p.toPrecision(10));
const orderIdOf = (result) => {
  const id = typeof result === "object" ? result?.clientOrderId ?? result?.orderId ?? result?.id : result;
  return typeof id === "string" || typeof id === "number" ? String(id) : null;
};

// Best bid / best ask of a snapshot; levels may be {price, quantity} objects or [price, qty]
// pairs, in any order.
const bestOf = (levels, pickBest) => {
  let best = NaN;
  for (const level of Array.isArray(levels) ? levels : []) {
    const price = toNumber(Array.isArray(level) ? level[0] : level?.price);
    const qty = toNumber(Array.isArray(level) ? level[1] : level?.quantity, 1);
    if (price > 0 && qty > 0) best = pickBest(best, price);
  }
  return best;
};
const higher = (a, b) => (Number.isNaN(a) || b > a ? b : a);
const lower = (a, b) => (Number.isNaN(a) || b < a ? b : a);

module.exports = {
  metadata: {
    name: "grid",
    displayName: "Grid (fixed limit-order ladder around the first price)",
    description:
      "Lays `levels` buy and `levels` sell limit orders `spacingPct`% apart around the first " +
      "observed mid, places them on book snapshots and re-arms each level when its order is " +
      "filled or cancelled.",
    tag: "v1.0.0",
    config: [
      { name: "levels", type: "int", default: 5, required: false, description: "Number of levels on each side of the centre (1-50)." },
      { name: "spacingPct", type: "float", default: 0.5, required: false, description: "Distance between levels, in percent of the centre price (0.5 = 0.5%)." },
      { name: "quantity", type: "number", default: 0.01, required: false, description: "Size of each level's order, in base units." },
    ],
    events: ["BookSnapshot", "ExecReport"],
  },

  create(env) {
    const cfg = env?.config ?? {};
    const runtime = env?.runtime ?? {};
    const levelCount = Math.min(50, Math.max(1, Math.trunc(toNumber(cfg.levels, 5))));
    const requestedSpacing = toNumber(cfg.spacingPct, 0.5);
    const spacingPct = requestedSpacing > 0 && requestedSpacing * levelCount < 100 ? requestedSpacing : 0.5;
    const quantity = Math.abs(toNumber(cfg.quantity, 0.01));
    const maxInventory = roundQty(levelCount * quantity);

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
        const chosen = runtime.selectProvider?.(evt?.symbol ?? "grid");
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

    if (spacingPct !== requestedSpacing) log(`grid: spacingPct ${cfg.spacingPct} unusable, using ${spacingPct}`);

    // Each level: { index, side, price, state: "idle" | "working", id, paper, retryAt }.
    let grid = null;
    const filledByOrder = new Map(); // clientOrderId -> cumulative quantity already booked
    let now = NaN;
    let position = 0;
    let wasActive = true;

    const tick = (evt, payload) => {
      const t = eventTime(evt, payload);
      if (Number.isFinite(t) && !(t < now)) now = t;
      return now;
    };

    const buildGrid = (centre) => {
      const step = spacingPct / 100;
      const levels = [];
      for (let i = 1; i <= levelCount; i += 1) {
        levels.push({ index: -i, side: "buy", price: roundPrice(centre * (1 - i * step)), state: "idle", id: null, paper: false, retryAt: -Infinity });
        levels.push({ index: i, side: "sell", price: roundPrice(centre * (1 + i * step)), state: "idle", id: null, paper: false, retryAt: -Infinity });
      }
      log(`grid: centre ${centre}, ${levelCount} levels each side ${spacingPct}% apart: ${levels.map(({ side, price }) => `${side}@${price}`).join(" ")}`);
      return { centre, levels };
    };

    const rearm = (level, why, retryAt = -Infinity) => {
      level.state = "idle";
      level.id = null;
      level.paper = false;
      level.retryAt = retryAt;
      log(`grid: level ${level.index} (${level.side} @ ${level.price}) ${why}; re-armed, position ${position}`);
    };

    // Working exposure on one side, in base units.
    const workingQty = (side) =>
      grid.levels.filter((level) => level.state === "working" && level.side === side).length * quantity;

    const place = (evt, level) => {
      let result;
      try {
        result = runtime.submitOrder(pickProvider(evt), level.side, quantity, level.price);
      } catch (err) {
        level.retryAt = now + REJECT_RETRY_MS;
        log(`grid: submit for level ${level.index} failed (${err?.message ?? err}); retrying later`);
        return;
      }
      level.state = "working";
      level.id = orderIdOf(result);
      level.paper = dryRun();
      log(`grid: ${level.side} ${quantity} limit ${level.price} (level ${level.index})`);
    };

    // The working level an ExecReport belongs to: by clientOrderId, else by side and price.
    const levelFor = (payload) => {
      if (!grid) return null;
      const id = payload?.clientOrderId ?? null;
      const working = grid.levels.filter((level) => level.state === "working" && !level.paper);
      if (id !== null) {
        const byId = working.find((level) => level.id === String(id));
        if (byId) return byId;
      }
      const sign = sideSign(payload?.side);
      const price = toNumber(payload?.price);
      if (!(price > 0)) return null;
      return working.find((level) => sideSign(level.side) === sign && level.id === null && Math.abs(level.price - price) <= level.price * 1e-6)
        ?? working.find((level) => sideSign(level.side) === sign && Math.abs(level.price - price) <= level.price * 1e-6)
        ?? null;
    };

    const bookReport = (payload, final) => {
      if (dryRun()) return;
      const sign = sideSign(payload?.side);
      const id = payload?.clientOrderId ?? null;
      const cumulative = toNumber(payload?.filledQuantity, final ? toNumber(payload?.quantity, 0) : NaN);
      if (!Number.isFinite(cumulative)) return;
      let delta = cumulative;
      if (id !== null) {
        const key = String(id);
        delta = cumulative - (filledByOrder.get(key) ?? 0);
        if (final) filledByOrder.delete(key);
        else filledByOrder.set(key, cumulative);
      } else if (!final) {
        return;
      }
      if (sign !== 0 && delta > EPS) position = roundQty(position + sign * delta);
    };

    const finish = (evt, payload, why, retryDelayMs = 0) => {
      tick(evt, payload);
      const level = levelFor(payload);
      bookReport(payload, true);
      if (level) rearm(level, why, retryDelayMs > 0 ? now + retryDelayMs : -Infinity);
      else log(`grid: ${why} for an order that matches no working level (${payload?.clientOrderId ?? "no id"}); position ${position}`);
    };

    return {
      onBookSnapshot(ctx, evt, payload) {
        tick(evt, payload);
        let bid = bestOf(payload?.bids, higher);
        let ask = bestOf(payload?.asks, lower);
        if (!(bid > 0)) bid = runtimePrice("getBidPrice");
        if (!(ask > 0)) ask = runtimePrice("getAskPrice");
        if (!(bid > 0 && ask >= bid)) return;
        if (!grid) grid = buildGrid((bid + ask) / 2);

        // Dry run: a paper order fills once the book trades through its price.
        for (const level of grid.levels) {
          if (level.state !== "working" || !level.paper) continue;
          const crossed = level.side === "buy" ? ask <= level.price : bid >= level.price;
          if (crossed) {
            position = roundQty(position + sideSign(level.side) * quantity);
            rearm(level, "paper-filled (dry run)");
          }
        }

        const active = tradingActive();
        if (active !== wasActive) log(`grid: trading ${active ? "active" : "inactive"}`);
        wasActive = active;
        if (!active || !(quantity > EPS)) return;

        for (const level of grid.levels) {
          if (level.state !== "idle" || now < level.retryAt) continue;
          if (level.side === "buy") {
            if (!(level.price < ask)) continue;
            if (position + workingQty("buy") + quantity > maxInventory + EPS) continue;
          } else {
            if (!(level.price > bid)) continue;
            if (-position + workingQty("sell") + quantity > maxInventory + EPS) continue;
          }
          place(evt, level);
        }
      },

      onOrderAcknowledged(ctx, evt, payload) {
        tick(evt, payload);
        const level = levelFor(payload);
        if (level && level.id === null && payload?.clientOrderId) level.id = String(payload.clientOrderId);
      },

      onOrderPartialFill(ctx, evt, payload) {
        tick(evt, payload);
        bookReport(payload, false);
      },

      onOrderFilled(ctx, evt, payload) {
        finish(evt, payload, `filled at ${payload?.avgFillPrice ?? payload?.price ?? "?"}`);
      },

      onOrderCancelled(ctx, evt, payload) {
        finish(evt, payload, "cancelled");
      },

      onOrderExpired(ctx, evt, payload) {
        finish(evt, payload, "expired");
      },

      onOrderRejected(ctx, evt, payload, reason) {
        finish(evt, payload, `rejected (${reason ?? payload?.rejectReason ?? "no reason given"})`, REJECT_RETRY_MS);
      },
    };
  },
};
