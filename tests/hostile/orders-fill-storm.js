// hostile: every fill submits two more orders (dry_run false): reports multiply
// expect: fails-running order storm|order reports pending
// config: {"dry_run": false}
'use strict';
const metadata = { name: 'orders-fill-storm', displayName: 'orders-fill-storm', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    let started = false;
    return {
      onTrade() {
        if (!started) { started = true; env.runtime.submitMarketOrder('sim', 'buy', 0.001); }
      },
      onOrderFilled() {
        env.runtime.submitMarketOrder('sim', 'buy', 0.001);
        env.runtime.submitMarketOrder('sim', 'sell', 0.001);
      },
    };
  },
};
