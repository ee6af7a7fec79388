// hostile: Array.prototype.lastIndexOf over an array-like of length 2^53-1 (native loop)
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'native-lastindexof', displayName: 'native-lastindexof', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.lastIndexOf.call({ length: 2 ** 53 - 1 }, 1);
      },
    };
  },
};
