// hostile: Array.prototype.copyWithin over an array-like of length 2^53-1 (native loop)
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'native-copywithin', displayName: 'native-copywithin', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Array.prototype.copyWithin.call({ length: 2 ** 53 - 1 }, 0, 1);
      },
    };
  },
};
