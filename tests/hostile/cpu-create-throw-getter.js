// hostile: create(env) throws an object whose message getter loops
// expect: start-failed CPU budget
'use strict';
const metadata = { name: 'cpu-create-throw-getter', displayName: 'cpu-create-throw-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { throw { get message() { for (;;) {} } }; } };
