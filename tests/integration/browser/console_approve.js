#!/usr/bin/env node
// Drives phigate's approvals web console in headless Chromium (playwright-core, Debian's
// /usr/bin/chromium): sign in, find the pending request whose statement is the expected one,
// screenshot, click Approve, screenshot again.  Run by tests/integration/test_approvals_console.py.
//
//   node console_approve.js '{"url": "http://127.0.0.1:PORT", "approver": "...", "password": "...",
//                             "statement": "SELECT ...", "reason": "...", "artifacts": "DIR",
//                             "timeout_ms": 20000}'
//
// Prints {"event": "signed_in"} on stdout once the console is shown, then, as the last line, one
// JSON report: {"ok": true, "id", "statement", "identity", "flash", "shots": [...], ...}
// or {"ok": false, "error", "shots"}; exit status 0 / 1.
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

async function main() {
  const opt = JSON.parse(process.argv[2] || '{}');
  const timeout = opt.timeout_ms || 20000;
  const shots = [];
  const out = { ok: false, shots, console_errors: [] };
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    timeout,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(timeout);
    // CSP violations and script errors show up here: the console must run its own script.
    page.on('console', (m) => { if (m.type() === 'error') out.console_errors.push(m.text()); });
    page.on('pageerror', (e) => out.console_errors.push(String(e)));
    const shot = async (name) => {
      const file = path.join(opt.artifacts, name);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(file);
    };

    // Not signed in: the console sends us to the login form.
    await page.goto(opt.url + '/', { waitUntil: 'load' });
    out.login_url = page.url();
    await page.fill('input[name="name"]', opt.approver);
    await page.fill('input[name="password"]', opt.password);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type="submit"]')]);
    out.after_login_url = page.url();
    // Tell the test we are on the console: it may start a held statement now, which the
    // page's refresh script (not the server-rendered table) has to add.
    process.stdout.write(JSON.stringify({ event: 'signed_in' }) + '\n');

    // The request may arrive after the page was served: the page's own 2 s refresh adds it.
    const rows = page.locator('#reqs tbody tr');
    const row = rows.filter({ has: page.locator('pre', { hasText: opt.statement }) }).first();
    await row.waitFor({ state: 'visible', timeout });
    out.id = await row.getAttribute('data-id');
    out.statement = await row.locator('pre').textContent();
    out.identity = (await row.locator('td').nth(2).textContent()) || '';
    out.pending_rows = await rows.count();
    await row.locator('form[action$="/approve"] input[name="reason"]').fill(opt.reason);
    await shot('console_pending.png');

    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      row.locator('form[action$="/approve"] button.approve').click(),
    ]);
    const flash = page.locator('p.flash');
    out.flash = (await flash.count()) ? await flash.textContent() : null;
    const err = page.locator('p.err');
    out.page_error = (await err.count()) ? await err.textContent() : null;
    out.rows_after = await page.locator(`#reqs tbody tr[data-id="${out.id}"]`).count();
    await shot('console_approved.png');
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.stack ? e.stack : e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.ok ? 0 : 1);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exit(1);
});
