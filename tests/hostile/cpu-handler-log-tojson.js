// hostile: helpers.log of an object whose toJSON loops
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-log-tojson', displayName: 'cpu-handler-log-tojson', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        env.helpers.log({ toJSON() { for (;;) {} } });
      },
    };
  },
};
