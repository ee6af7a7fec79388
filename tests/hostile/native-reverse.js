// hostile: Array.prototype.reverse over an array-like of length 2^53-1 (native loop)
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'native-reverse', displayName: 'native-reverse', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.reverse.call({ length: 2 ** 53 - 1 });
      },
    };
  },
};
