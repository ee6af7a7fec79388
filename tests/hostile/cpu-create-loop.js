// hostile: create(env) loops forever
// expect: start-failed CPU budget
'use strict';
const metadata = { name: 'cpu-create-loop', displayName: 'cpu-create-loop', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { for (;;) {} } };
