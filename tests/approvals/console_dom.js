// Runs the approvals console's refresh script (gate/admin_http.c) in jsdom against a page phigate
// served, with /api/requests answered by a canned list: new rows appear (built as text, never as
// markup), decided ones disappear, ages follow the server clock, rows with a foreign id are skipped.
// Usage: node console_dom.js PAGE.html   (needs the jsdom package on NODE_PATH)
'use strict';
const { JSDOM } = require('jsdom');
const fs = require('fs');

const html = fs.readFileSync(process.argv[2], 'utf8');
let calls = 0, lastUrl = null, lastOpts = null;
const dom = new JSDOM(html, {
  runScripts: 'dangerously', url: 'http://127.0.0.1:9/',
  beforeParse(win) {
    win.fetch = (url, opts) => {
      calls++; lastUrl = url; lastOpts = opts;
      const kept = win.document.querySelector('#reqs tbody tr');
      const now = Number(kept.dataset.created) + 65000;
      const body = { now_ms: now, requests: [
        { id: kept.dataset.id, created_ms: Number(kept.dataset.created), statement: 'unchanged' },
        { id: 'aaaaaaaaaaaaaaaa', created_ms: now - 5000, identity: 'agent9', client_addr: '10.0.0.1:1',
          database: 'clinic', protocol: 'postgres', rule: 'unscoped_read', reason: 'why', waiting: true,
          statement: "SELECT '<img src=x onerror=alert(1)>'" },
        { id: '"><script>', created_ms: 1, statement: 'a foreign id is never rendered' },
        { id: 'bbbbbbbbbbbbbbbb', created_ms: now, statement: { lossy: 'SELECT \ufffd', base64: 'AA==' } } ] };
      return Promise.resolve({ status: 200, json: () => Promise.resolve(body) });
    };
  } });
const d = dom.window.document;
const before = d.querySelectorAll('#reqs tbody tr').length;
setTimeout(() => {
  const rows = [...d.querySelectorAll('#reqs tbody tr')].map(tr => tr.dataset.id);
  const added = d.querySelector('tr[data-id="aaaaaaaaaaaaaaaa"]');
  const checks = {
    'page had rows to start with': before >= 2,
    'polled /api/requests with the cookie': calls >= 1 && lastUrl === '/api/requests' && lastOpts.credentials === 'same-origin',
    'decided rows removed, new rows added, foreign id skipped': rows.length === 3 && rows[1] === 'aaaaaaaaaaaaaaaa',
    'statement shown as text': added && added.querySelector('pre').textContent === "SELECT '<img src=x onerror=alert(1)>'" &&
      d.querySelectorAll('img').length === 0,
    'approve and deny forms carry the CSRF token': added && added.querySelectorAll('form input[name=csrf]').length === 2 &&
      [...added.querySelectorAll('form input[name=csrf]')].every(i => i.value === d.body.dataset.csrf && i.value.length === 64),
    'deny needs a reason': added && added.querySelector('form[action="/requests/aaaaaaaaaaaaaaaa/deny"] input[name=reason]').required,
    'ages follow the server clock': added && added.querySelector('.age').textContent === '5 s' &&
      d.querySelector('#reqs tbody tr .age').textContent === '65 s',
    'lossless strings shown by their text': d.querySelector('tr[data-id="bbbbbbbbbbbbbbbb"] pre').textContent === 'SELECT \ufffd',
    'status line counts rows': d.getElementById('st').textContent.startsWith('3 pending'),
  };
  let failed = 0;
  for (const [name, ok] of Object.entries(checks)) {
    console.log((ok ? 'ok   ' : 'FAIL ') + name);
    if (!ok) failed++;
  }
  console.log(`${Object.keys(checks).length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}, 2500);
