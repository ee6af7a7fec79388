// hostile: every trade and every fill submit two more orders (dry_run false), refusals caught
// expect: fails-running order storm|order reports pending
// config: {"dry_run": false}
'use strict';
const metadata = { name: 'orders-fill-storm', displayName: 'orders-fill-storm', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    const two = () => {
      for (const side of ['buy', 'sell']) {
        try { env.runtime.submitMarketOrder('sim', side, 0.001); } catch (e) {}
      }
    };
    return {
      onTrade: two,
      onOrderFilled: two,
    };
  },
};
