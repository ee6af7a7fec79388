// hostile: Array.prototype.join over an array-like of length 2^32-1 (native loop, growing string)
// expect: fails-running CPU budget|memory limit
'use strict';
const metadata = { name: 'native-join', displayName: 'native-join', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.join.call({ length: 2 ** 32 - 1 }, '');
      },
    };
  },
};
