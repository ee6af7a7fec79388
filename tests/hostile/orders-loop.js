// hostile: submits orders in a tight loop, catching the refusals
// expect: fails-running order storm
'use strict';
const metadata = { name: 'orders-loop', displayName: 'orders-loop', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        for (let i = 0; i < 100000; i++) { try { env.runtime.submitMarketOrder('sim', 'buy', 0.001); } catch (e) {} }
      },
    };
  },
};
