// hostile: the default (string) sort of two million numbers (native comparisons)
// expect: fails-running CPU budget|memory limit
'use strict';
const metadata = { name: 'native-sort-strings', displayName: 'native-sort-strings', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        const a = []; for (let i = 0; i < 2e6; i++) a.push((i * 7919) % 2e6); for (;;) a.sort();
      },
    };
  },
};
