// The console's main flow in Firefox: Debian's firefox-esr driven by puppeteer-core over
// WebDriver BiDi (no geckodriver, no browser download), against the real `keyledger`
// binary (harness.mjs). console.test.mjs covers every view in Chromium; this file checks
// that what a security engineer does first also works in the other engine the console
// targets (docs/decisions/0005-console-plain-js.md).
//
//   bash scripts/install-browser.sh && node --test tests/console/
//
// FIREFOX_PATH overrides /usr/bin/firefox-esr. A missing Firefox fails the suite: it is
// never skipped. Screenshots go to tests/console/screenshots/firefox-*.png.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { Keyledger, nextWholeSecond, screenshotsDir, sleep } from './harness.mjs';

const browserPath = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';
const shotsDir = screenshotsDir();

let ledger, browser, page;
const dialogs = [];
const pageErrors = [];
const consoleErrors = [];
const cspViolations = [];
const state = {};

// Firefox does not hand its own CSP warnings to WebDriver BiDi, so every page reports its
// violations itself, to the console log, from a script that runs before the page's own.
function reportCspViolations() {
  document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
  });
}

const text = (selector) => page.$eval(selector, (el) => el.textContent);
const fill = (selector, value) => page.locator(selector).fill(value);
const click = (selector) => page.locator(selector).click();
const waitFor = (selector, options) => page.waitForSelector(selector, options);

async function shot(name, { fullPage = false } = {}) {
  mkdirSync(shotsDir, { recursive: true });
  await page.screenshot({ path: path.join(shotsDir, `firefox-${name}.png`), fullPage });
}

// The keys table's row for the key named `name`, once it is there.
function row(name) {
  return page.waitForFunction(
    (n) => [...document.querySelectorAll('#keys-table tbody tr')].find((tr) => tr.querySelector('a.key-name')?.textContent === n),
    {},
    name,
  );
}

async function openWorkspace(ws) {
  await page.goto(`${ledger.baseUrl}/console#/w/${ws}`);
  await waitFor('#workspace-name');
}

async function createInUi(name, fields = {}) {
  await click('#create-key');
  await fill('#create-name', name);
  if (fields.scopes) await fill('#create-scopes', fields.scopes);
  if (fields.expiry) await fill('#create-expiry', fields.expiry);
  await click('dialog button[type=submit]');
  await waitFor('#secret-value');
  const secret = await page.$eval('#secret-value', (el) => el.value);
  const keyId = await text('dialog dd code');
  return { secret, keyId };
}

async function closeSecret(secret) {
  await click('#secret-done');
  await waitFor('dialog[open]', { hidden: true });
  const html = await page.content();
  assert.ok(!html.includes(secret), 'the secret must leave the page once its dialog is closed');
}

describe('keyledger web console in Firefox', { timeout: 180000 }, () => {
  before(async () => {
    assert.ok(existsSync(browserPath), `no Firefox at ${browserPath}: run scripts/install-browser.sh`);
    ledger = await Keyledger.start();
    browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: browserPath,
      headless: true,
      // The report form takes local time; the test computes UTC.
      env: { ...process.env, TZ: 'UTC' },
    });
    page = (await browser.pages())[0] || await browser.newPage();
    await page.setViewport({ width: 1280, height: 860 });
    page.setDefaultTimeout(10000);
    await page.evaluateOnNewDocument(reportCspViolations);
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => {
      if (/CSP violation|Content-Security-Policy|Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
      else if (m.type() === 'error') consoleErrors.push(m.text());
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await ledger?.stop();
  });

  it('signs in with the admin key', async () => {
    assert.match(await browser.version(), /firefox/i);
    await page.goto(`${ledger.baseUrl}/console`);
    await fill('#admin-key', 'kl_live_notakeyatall');
    await click('form button[type=submit]');
    await waitFor('form .form-error:not([hidden])');
    await fill('#admin-key', ledger.adminKey);
    await click('form button[type=submit]');
    await waitFor('#workspace-input');
    assert.equal(await page.evaluate((k) => sessionStorage.getItem('keyledger.console.adminKey') === k, ledger.adminKey), true);
    assert.ok(!page.url().includes(ledger.adminKey));
  });

  it('opens a workspace, creates a key, shows its secret once, and lists it', async () => {
    // The input's pattern is a valid `v`-flag regexp, so the browser checks it.
    const mismatch = (value) => page.$eval('#workspace-input', (el, v) => { el.value = v; return el.validity.patternMismatch; }, value);
    assert.equal(await mismatch('Not a workspace'), true);
    assert.equal(await mismatch('acme'), false);
    await fill('#workspace-input', 'acme');
    await click('form button[type=submit]');
    await waitFor('#workspace-name');
    await waitFor('#keys-table');
    const { secret, keyId } = await createInUi('ci-deploy', { scopes: 'orders:read orders:write', expiry: '90d' });
    assert.match(secret, /^kl_live_[0-9A-Za-z]{40,}$/);
    assert.match(await text('#secret-warning'), /will not be shown again/);
    assert.equal(await text('#copy-secret'), 'Copy');
    await click('#copy-secret');
    await page.waitForFunction(() => document.querySelector('dialog [role=status]')?.textContent);
    assert.equal(await text('dialog [role=status]'), 'Copied to the clipboard.');
    await shot('create-secret');
    await closeSecret(secret);
    state.ci = { secret, keyId };
    const r = await row('ci-deploy');
    assert.match(await r.evaluate((tr) => tr.textContent), /active/);
    assert.match(await r.$eval('td.last-used', (td) => td.textContent), /never/);
    const view = await ledger.adminApi('GET', `/v1/keys/${keyId}`);
    assert.equal(view.name, 'ci-deploy');
    assert.deepEqual(view.scopes, ['orders:read', 'orders:write']);
  });

  it('verifies the key through the API and shows "last used" after a reload', async () => {
    assert.equal((await ledger.verify(state.ci.secret, '192.0.2.44')).status, 200);
    await page.reload();
    const r = await row('ci-deploy');
    await page.waitForFunction(() => /just now/.test(document.querySelector('#keys-table tbody tr td.last-used')?.textContent || ''));
    assert.match(await r.$eval('td.last-used', (td) => td.textContent), /just now from 192\.0\.2\.44/);
    assert.equal((await r.$eval('td.num', (td) => td.textContent)).trim(), '1');
  });

  it('renders a hostile key name as inert text', async () => {
    const name = '<img src=x onerror=alert(1)>';
    const { secret } = await createInUi(name);
    await closeSecret(secret);
    const r = await row(name);
    assert.equal(await r.$eval('a.key-name', (a) => a.textContent), name);
    assert.equal(await page.$$eval('main img', (imgs) => imgs.length), 0);
    await r.$eval('a.key-name', (a) => a.click());
    await page.waitForFunction((n) => document.querySelector('#key-title')?.textContent === n, {}, name);
    assert.equal(await page.$$eval('main img, dialog img', (imgs) => imgs.length), 0);
    await openWorkspace('acme');
    assert.deepEqual(dialogs, [], 'no script ran from the key name');
  });

  it('revokes a key with a reason and a confirmation', async () => {
    const r = await row('ci-deploy');
    await r.$eval('a.key-name', (a) => a.click());
    await waitFor('#revoke');
    await click('#revoke');
    await fill('#revoke-reason', 'no longer needed');
    assert.equal(await page.$eval('dialog button[type=submit]', (b) => b.disabled), true, 'revoking needs the confirmation');
    await click('#revoke-confirm');
    await click('dialog button[type=submit]');
    await waitFor('.title-row .status-revoked');
    assert.match(await text('main'), /no longer needed/);
    assert.equal((await ledger.verify(state.ci.secret)).status, 401);
    assert.equal((await ledger.adminApi('GET', `/v1/keys/${state.ci.keyId}`)).status, 'revoked');
  });

  it('renders the compromise report with its chart', async () => {
    const leaky = await ledger.adminApi('POST', '/v1/workspaces/acme/keys', { name: 'leaky', scopes: ['orders:read'] });
    for (let i = 0; i < 3; i++) assert.equal((await ledger.verify(leaky.secret, '203.0.113.10', 'payments-service/2.1')).status, 200);
    const since = await nextWholeSecond();
    for (let i = 0; i < 4; i++) assert.equal((await ledger.verify(leaky.secret, '198.51.100.77', 'curl/8.5.0')).status, 200);
    assert.equal((await ledger.verify(leaky.secret, '203.0.113.10', 'payments-service/2.1')).status, 200);

    await page.goto(`${ledger.baseUrl}/console#/k/${leaky.key_id}`);
    await click('#open-report');
    await waitFor('#report-form');
    // Firefox's own datetime-local input, with seconds (step=1), in the browser's UTC.
    await fill('#report-since', since.toISOString().slice(0, 19));
    await click('#run-report');
    await page.waitForFunction((s) => decodeURIComponent(location.hash).includes(s), {}, since.toISOString());
    await waitFor('#sources-table');
    assert.match(await page.$eval('#sources-table tr[data-value="198.51.100.77"]', (tr) => `${tr.className} ${tr.textContent}`), /\bnew\b.*new since/);
    assert.match(await page.$eval('#sources-table tr[data-value="203.0.113.10"]', (tr) => tr.textContent), /seen before/);
    await waitFor('#uses-chart rect.new-source');
    assert.equal(await page.$eval('#uses-chart rect.new-source', (r) => r.getAttribute('data-source')), '198.51.100.77');
    // Laid out, not just in the DOM: the SVG and its bars have a size in Firefox.
    const box = await page.$eval('#uses-chart', (c) => { const b = c.getBoundingClientRect(); return { width: b.width, height: b.height }; });
    assert.ok(box.width > 300 && box.height > 100, `chart box ${JSON.stringify(box)}`);
    const bars = await page.$$eval('#uses-chart rect.new-source', (rects) => rects.map((r) => r.getBoundingClientRect().height));
    assert.ok(bars.some((h) => h > 0), `bars ${bars}`);
    assert.match(await text('#chart-legend li.new'), /198\.51\.100\.77/);
    await shot('compromise-report', { fullPage: true });
    await openWorkspace('acme');
    await row('leaky');
    await shot('keys');
  });

  it('showed no dialog, no page error, and broke no CSP rule', async () => {
    assert.deepEqual(dialogs, []);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
    assert.deepEqual(cspViolations, []);
    // The check above can fail: an inline script is refused here, and reported.
    const ran = await page.evaluate(async () => {
      const script = document.createElement('script');
      script.textContent = 'window.inlineScriptRan = true;';
      document.body.append(script);
      await new Promise((resolve) => setTimeout(resolve, 200));
      return window.inlineScriptRan === true;
    });
    assert.equal(ran, false, 'the CSP must refuse inline script');
    for (let i = 0; i < 20 && !cspViolations.length; i++) await sleep(100);
    assert.match(cspViolations.join('\n'), /CSP violation: script-src/);
  });
});
