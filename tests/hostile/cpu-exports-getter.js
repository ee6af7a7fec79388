// hostile: module.exports is a getter that loops
// expect: upload-refused CPU budget
'use strict';
const metadata = { name: 'cpu-exports-getter', displayName: 'cpu-exports-getter', events: ['Trade', 'ExecReport'], config: [] };
Object.defineProperty(module, 'exports', { get() { for (;;) {} } });
