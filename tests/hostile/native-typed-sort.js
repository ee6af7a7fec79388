// hostile: sorting a large typed array with the native comparator, over and over
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'native-typed-sort', displayName: 'native-typed-sort', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        const a = new Float64Array(4e6); for (let i = 0; i < a.length; i++) a[i] = (i * 7919) % 4e6; for (;;) { a.sort(); a.reverse(); }
      },
    };
  },
};
