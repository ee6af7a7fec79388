// hostile: the top level loops forever
// expect: upload-refused CPU budget
'use strict';
const metadata = { name: 'cpu-top-level-loop', displayName: 'cpu-top-level-loop', events: ['Trade', 'ExecReport'], config: [] };
for (;;) {}
module.exports = { metadata, create() { return {}; } };
