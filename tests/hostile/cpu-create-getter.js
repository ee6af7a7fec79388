// hostile: exports.create is a getter that loops (read at upload and at start)
// expect: upload-refused CPU budget
'use strict';
const metadata = { name: 'cpu-create-getter', displayName: 'cpu-create-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, get create() { for (;;) {} } };
