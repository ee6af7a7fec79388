// hostile: create(env) runs a catastrophically backtracking regular expression
// expect: start-failed CPU budget
'use strict';
const metadata = { name: 'cpu-create-regexp', displayName: 'cpu-create-regexp', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { /(a+)+$/.test('a'.repeat(64) + 'b'); return {}; } };
