// hostile: a loop in a finally block after the budget fired
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-finally-loop', displayName: 'cpu-handler-finally-loop', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        try { for (;;) {} } finally { for (;;) {} }
      },
    };
  },
};
