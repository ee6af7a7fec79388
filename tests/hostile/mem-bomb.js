// hostile: allocates without end
// expect: fails-running memory limit
'use strict';
const metadata = { name: 'mem-bomb', displayName: 'mem-bomb', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        const a = []; for (;;) a.push(new Array(1e5).fill(1));
      },
    };
  },
};
