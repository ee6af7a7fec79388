// hostile: metadata.toJSON loops (run when metadata is read at upload)
// expect: upload-refused CPU budget
'use strict';
module.exports = {
  metadata: { name: 'cpu-metadata-tojson', displayName: 'x', events: ['Trade'], config: [], toJSON() { for (;;) {} } },
  create() { return {}; },
};
