// hostile: allocates without end
// expect: fails-running memory limit
'use strict';
const metadata = { name: 'mem-bomb', displayName: 'mem-bomb', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        const keep = []; for (;;) keep.push(new Float64Array(1 << 20));
      },
    };
  },
};
