// Strata example strategy: noop, revision v1.0.0 — the smallest useful template.
//
// It subscribes to trades, counts them in closure state and does nothing else: no orders, no
// per-event logging. Copy it to start a new strategy:
//   - `metadata.name` must match [a-z0-9][a-z0-9._-]{0,63}; `displayName` is 1-80 characters;
//   - `config` declares the instance settings (types bool, int, float/number, string, duration);
//     the daemon adds a `dry_run` bool (default true) by itself, so do not declare one;
//   - `events` lists what to receive: Trade, Ticker, BookSnapshot, ExecReport, KlineSummary,
//     InstrumentUpdate, BalanceUpdate, RiskControl, Extension;
//   - `create(env)` runs once per instance start; keep state in its closure and return the
//     handlers. Payload decimals arrive as strings: parse them with Number().
// Available in env: config, metadata, events, helpers.log(...args), helpers.sleep(ms | "150ms"),
// runtime.isTradingActive(), isDryRun(), providers(), selectProvider(seed),
// submitMarketOrder(provider, side, qty), submitOrder(provider, side, qty, price | null),
// getLastPrice(), getBidPrice(), getAskPrice(), getMarketState().
"use strict";

module.exports = {
  metadata: {
    name: "noop",
    displayName: "No-op (template)",
    description: "Counts trades and never trades. A minimal template to copy for new strategies.",
    tag: "v1.0.0",
    config: [
      { name: "logEvery", type: "int", default: 0, required: false, description: "Log the running trade count every N trades (0 = never)." },
    ],
    events: ["Trade"],
  },

  create(env) {
    const logEvery = Math.max(0, Math.trunc(Number(env?.config?.logEvery ?? 0)) || 0);
    let trades = 0;
    let lastPrice = NaN;

    return {
      // Other handlers, all optional: onTicker, onBookSnapshot, onKlineSummary,
      // onInstrumentUpdate, onBalanceUpdate, onRiskControl, onExtensionEvent(ctx, evt, payload),
      // and for this instance's own orders onOrderAcknowledged, onOrderPartialFill,
      // onOrderFilled, onOrderCancelled, onOrderExpired, onOrderRejected(ctx, evt, payload, reason).
      onTrade(ctx, evt, payload, price) {
        trades += 1;
        const px = Number(price ?? payload?.price);
        if (Number.isFinite(px)) lastPrice = px;
        if (logEvery > 0 && trades % logEvery === 0) env.helpers.log(`noop: ${trades} trades seen, last at ${lastPrice}`);
      },
    };
  },
};
