// hostile: a promise job queued by onTrade loops
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-promise-job', displayName: 'cpu-handler-promise-job', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        Promise.resolve().then(() => { for (;;) {} });
      },
    };
  },
};
