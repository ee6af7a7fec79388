// hostile: the top level throws an Error whose name and stack getters loop
// expect: upload-refused CPU budget
'use strict';
const metadata = { name: 'cpu-top-level-error-name-getter', displayName: 'cpu-top-level-error-name-getter', events: ['Trade', 'ExecReport'], config: [] };
module.exports = { metadata, create() { return {}; } };
const e = new Error('boom');
Object.defineProperty(e, 'name', { get() { for (;;) {} } });
Object.defineProperty(e, 'stack', { get() { for (;;) {} } });
throw e;
