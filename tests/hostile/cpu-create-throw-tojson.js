// hostile: create(env) throws a plain object whose toJSON loops (formatted as JSON)
// expect: start-failed CPU budget
'use strict';
const metadata = { name: 'cpu-create-throw-tojson', displayName: 'cpu-create-throw-tojson', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { throw { toJSON() { for (;;) {} } }; } };
