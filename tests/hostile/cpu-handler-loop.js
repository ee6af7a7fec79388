// hostile: a plain infinite loop in onTrade
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-loop', displayName: 'cpu-handler-loop', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        for (;;) {}
      },
    };
  },
};
