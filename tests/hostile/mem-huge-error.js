// hostile: throws an Error with a 10 MiB message on every trade (kept truncated)
// expect: keeps-running
'use strict';
const metadata = { name: 'mem-huge-error', displayName: 'mem-huge-error', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        throw new Error('y'.repeat(10 << 20));
      },
    };
  },
};
