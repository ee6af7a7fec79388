// hostile: catches every error and loops again
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-catch-retry', displayName: 'cpu-handler-catch-retry', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        for (;;) { try { for (;;) {} } catch (e) {} }
      },
    };
  },
};
