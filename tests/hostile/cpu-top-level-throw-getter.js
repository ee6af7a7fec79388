// hostile: the top level throws an object whose message getter loops (run while the error is formatted)
// expect: upload-refused CPU budget
'use strict';
const metadata = { name: 'cpu-top-level-throw-getter', displayName: 'cpu-top-level-throw-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { return {}; } };
throw { get message() { for (;;) {} } };
