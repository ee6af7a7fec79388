// hostile: Array.prototype.fill over an array-like of length 2^53-1 (native loop, growing object)
// expect: fails-running CPU budget|memory limit
'use strict';
const metadata = { name: 'native-fill', displayName: 'native-fill', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.fill.call({ length: 2 ** 53 - 1 }, 0);
      },
    };
  },
};
