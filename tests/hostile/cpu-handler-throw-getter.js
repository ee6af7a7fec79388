// hostile: onTrade throws an object whose message getter loops (run while the error is formatted)
// expect: fails-running CPU budget
'use strict';
const metadata = { name: 'cpu-handler-throw-getter', displayName: 'cpu-handler-throw-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = {
  metadata,
  create(env) {
    return {
      onTrade() {
        throw { get message() { for (;;) {} } };
      },
    };
  },
};
