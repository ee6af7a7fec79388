// hostile: logs a 20 MiB string on every trade (kept truncated)
// expect: keeps-running
'use strict';
const metadata = { name: 'mem-huge-log', displayName: 'mem-huge-log', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        env.helpers.log('x'.repeat(20 << 20));
      },
    };
  },
};
