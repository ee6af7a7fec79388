// hostile: Array.prototype.slice over an array-like of length 2^32-1
// expect: fails-running CPU budget|memory limit
'use strict';
const metadata = { name: 'native-slice', displayName: 'native-slice', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.slice.call({ length: 2 ** 32 - 1 });
      },
    };
  },
};
