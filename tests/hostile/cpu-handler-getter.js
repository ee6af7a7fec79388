// hostile: create returns a handler object whose onTrade getter loops
// expect: start-failed CPU budget
'use strict';
const metadata = { name: 'cpu-handler-getter', displayName: 'cpu-handler-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { return { get onTrade() { for (;;) {} } }; } };
