// hostile: Array.prototype.includes over an array-like of length 2^53-1 (native loop)
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'native-includes', displayName: 'native-includes', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.includes.call({ length: 2 ** 53 - 1 }, 1);
      },
    };
  },
};
