// Browser tests of keyledger's web console: the real `keyledger` binary, Debian's
// chromium driven by playwright-core, node's built-in test runner. Every view and action;
// firefox.test.mjs runs the main flow in Firefox.
//
//   bash scripts/install-browser.sh && node --test tests/console/
//
// The test builds the binary with `cargo build -p keyledger` first (KEYLEDGER_BIN skips that),
// serves it on a free loopback port from a fresh data dir (harness.mjs), and drives the
// console in a fresh chromium profile (CHROMIUM_PATH overrides /usr/bin/chromium).
//
// Screenshots go to tests/console/screenshots/ (ignored by git); with
// CONSOLE_SCREENSHOTS=docs/img the README's images in docs/img/ are refreshed instead.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Keyledger, nextWholeSecond, screenshotsDir, sleep } from './harness.mjs';

const shotsDir = screenshotsDir(process.env.CONSOLE_SCREENSHOTS);
const browserPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

let ledger, baseUrl, adminKey, initJson, browser, page, userDataDir;
const dialogs = [];
const pageErrors = [];
const cspViolations = [];
const consoleErrors = [];
const state = {};

const adminApi = (method, url, body) => ledger.adminApi(method, url, body);
const verify = (secret, ip, userAgent) => ledger.verify(secret, ip, userAgent);

async function shot(name, { fullPage = false } = {}) {
  mkdirSync(shotsDir, { recursive: true });
  await page.screenshot({ path: path.join(shotsDir, `${name}.png`), fullPage });
}

function row(name) {
  return page.locator('#keys-table tbody tr').filter({ has: page.locator('a.key-name', { hasText: name }) }).first();
}

async function openWorkspace(ws) {
  await page.goto(`${baseUrl}/console#/w/${ws}`);
  await page.locator('#workspace-name').waitFor();
}

async function createInUi(name, fill = {}) {
  await page.click('#create-key');
  await page.fill('#create-name', name);
  if (fill.scopes) await page.fill('#create-scopes', fill.scopes);
  if (fill.resources) await page.fill('#create-resources', fill.resources);
  if (fill.owner) await page.fill('#create-owner', fill.owner);
  if (fill.expiry) await page.selectOption('#create-expiry', fill.expiry);
  await page.click('dialog button[type=submit]');
  await page.locator('#secret-value').waitFor();
  const secret = await page.inputValue('#secret-value');
  const keyId = await page.locator('dialog dd code').first().textContent();
  return { secret, keyId };
}

async function closeSecret(secret) {
  await page.click('#secret-done');
  await page.locator('dialog[open]').waitFor({ state: 'detached' }).catch(() => {});
  assert.equal(await page.locator('dialog').evaluate((d) => d.open), false);
  const html = await page.content();
  assert.ok(!html.includes(secret), 'the secret must leave the page once its dialog is closed');
}

describe('keyledger web console', { timeout: 180000 }, () => {
  before(async () => {
    assert.ok(existsSync(browserPath), `no browser at ${browserPath}: run scripts/install-browser.sh`);
    userDataDir = mkdtempSync(path.join(tmpdir(), 'keyledger-console-profile-'));
    ledger = await Keyledger.start();
    ({ baseUrl, adminKey, initJson } = ledger);
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: browserPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 860 },
      timezoneId: 'UTC',
      locale: 'en-GB',
      colorScheme: 'light',
    });
    page = browser.pages()[0] || await browser.newPage();
    page.setDefaultTimeout(10000);
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
      // The API's 4xx answers (a wrong admin key on purpose) are logged too, and expected.
      else if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) consoleErrors.push(m.text());
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await ledger?.stop();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  it('serves the console with a strict CSP and hardening headers, small', async () => {
    let total = 0;
    for (const file of ['', '/app.js', '/app.css']) {
      const response = await fetch(`${baseUrl}/console${file}`);
      assert.equal(response.status, 200, file);
      const csp = response.headers.get('content-security-policy');
      assert.equal(csp, "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
      assert.equal(response.headers.get('x-frame-options'), 'DENY');
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(response.headers.get('referrer-policy'), 'no-referrer');
      assert.match(response.headers.get('content-type'), { '': /^text\/html/, '/app.js': /^text\/javascript/, '/app.css': /^text\/css/ }[file]);
      total += (await response.arrayBuffer()).byteLength;
    }
    assert.ok(total < 200 * 1024, `first load is ${total} bytes`);
    assert.equal((await fetch(`${baseUrl}/console/secrets.txt`)).status, 404);
  });

  it('signs in with the admin key and keeps it in sessionStorage only', async () => {
    await page.goto(`${baseUrl}/console`);
    await page.locator('#admin-key').waitFor();
    await page.fill('#admin-key', 'kl_live_notakeyatall');
    await page.click('form button[type=submit]');
    await page.locator('form .form-error:not([hidden])').waitFor();
    // An admin key used from outside its source allow-list is refused, not signed in.
    const elsewhere = await adminApi('POST', '/v1/workspaces/_ledger/keys', { name: 'elsewhere', scopes: ['ledger:keys:read'], allowed_sources: ['192.0.2.0/24'] });
    await page.fill('#admin-key', elsewhere.secret);
    await page.click('form button[type=submit]');
    await page.locator('form .form-error:not([hidden])').filter({ hasText: /may not be used from/ }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keyledger.console.adminKey')), null);
    await page.fill('#admin-key', adminKey);
    await page.click('form button[type=submit]');
    await page.locator('#workspace-input').waitFor();
    assert.equal(await page.evaluate((k) => sessionStorage.getItem('keyledger.console.adminKey') === k, adminKey), true);
    assert.ok(!page.url().includes(adminKey));
  });

  it('creates a key, shows its secret once, and lists it', async () => {
    // The input's pattern is a valid `v`-flag regexp, so the browser checks it.
    const mismatch = (value) => page.$eval('#workspace-input', (el, v) => { el.value = v; return el.validity.patternMismatch; }, value);
    assert.equal(await mismatch('Not a workspace'), true);
    assert.equal(await mismatch('acme'), false);
    await page.fill('#workspace-input', 'acme');
    await page.click('form button[type=submit]');
    await page.locator('#workspace-name').waitFor();
    const { secret, keyId } = await createInUi('ci-deploy', { scopes: 'orders:read orders:write', resources: 'store-1', owner: 'team-payments', expiry: '90d' });
    assert.match(secret, /^kl_live_[0-9A-Za-z]{40,}$/);
    assert.match(await page.textContent('#secret-warning'), /will not be shown again/);
    await shot('create-secret');
    await closeSecret(secret);
    state.ci = { secret, keyId };
    const r = row('ci-deploy');
    await r.waitFor();
    assert.match(await r.textContent(), /active/);
    assert.match(await r.locator('td.last-used').textContent(), /never/);
    // The key answers through the public API exactly like any other.
    const view = await adminApi('GET', `/v1/keys/${keyId}`);
    assert.equal(view.name, 'ci-deploy');
    assert.deepEqual(view.scopes, ['orders:read', 'orders:write']);
  });

  it('verifies the key through the API and shows "last used" after a reload', async () => {
    const response = await verify(state.ci.secret, '192.0.2.44');
    assert.equal(response.status, 200);
    await page.reload();
    const r = row('ci-deploy');
    await r.waitFor();
    await page.waitForFunction(() => /just now/.test(document.querySelector('#keys-table tbody tr td.last-used')?.textContent || ''));
    assert.match(await r.locator('td.last-used').textContent(), /just now from 192\.0\.2\.44/);
    assert.equal((await r.locator('td.num').textContent()).trim(), '1');
  });

  it('renders a hostile key name as inert text', async () => {
    const name = '<img src=x onerror=alert(1)>';
    const { secret } = await createInUi(name);
    await closeSecret(secret);
    const link = page.locator('#keys-table a.key-name', { hasText: name });
    await link.waitFor();
    assert.equal(await link.textContent(), name);
    assert.equal(await page.locator('main img').count(), 0);
    await page.fill('#key-search', 'onerror');
    assert.match(await page.textContent('#key-count'), /^1 key shown/);
    await page.fill('#key-search', '');
    await link.click();
    await page.locator('#key-title').waitFor();
    assert.equal(await page.textContent('#key-title'), name);
    assert.equal(await page.locator('main img, dialog img').count(), 0);
    await openWorkspace('acme');
    assert.deepEqual(dialogs, [], 'no script ran from the key name');
  });

  it('shows the key detail with its lifecycle and recent uses, then rotates it', async () => {
    await row('ci-deploy').locator('a.key-name').click();
    await page.locator('#timeline li').first().waitFor();
    assert.match(await page.textContent('#timeline'), new RegExp(`created by .*${initJson.admin_key_id}`));
    await page.locator('table.uses tbody tr').first().waitFor();
    assert.match(await page.textContent('table.uses'), /192\.0\.2\.44/);
    await shot('key-detail', { fullPage: true });

    await page.click('#rotate');
    await page.selectOption('#rotate-overlap', '24h');
    await page.click('dialog button[type=submit]');
    await page.locator('#secret-value').waitFor();
    const secret = await page.inputValue('#secret-value');
    assert.notEqual(secret, state.ci.secret);
    assert.match(await page.textContent('dialog'), /stays valid until/);
    await closeSecret(secret);
    await page.locator('#timeline li.kind-rotated').waitFor();
    // Both work during the overlap.
    assert.equal((await verify(state.ci.secret)).status, 200);
    assert.equal((await verify(secret)).status, 200);
    state.rotated = secret;
  });

  it('disables, enables and revokes a key with a reason and a confirmation', async () => {
    await openWorkspace('acme');
    const { secret, keyId } = await createInUi('short-lived');
    await closeSecret(secret);
    await row('short-lived').locator('a.key-name').click();
    await page.click('#toggle-disabled');
    await page.fill('#disable-reason', 'investigating');
    await page.click('dialog button[type=submit]');
    await page.locator('.title-row .status-disabled').waitFor();
    assert.equal((await verify(secret)).status, 401);
    await page.click('#toggle-disabled');
    await page.click('dialog button[type=submit]');
    await page.locator('.title-row .status-active').waitFor();
    assert.equal((await verify(secret)).status, 200);

    await page.click('#revoke');
    await page.fill('#revoke-reason', 'no longer needed');
    assert.equal(await page.locator('dialog button[type=submit]').isDisabled(), true, 'revoking needs the confirmation');
    await page.check('#revoke-confirm');
    await page.click('dialog button[type=submit]');
    await page.locator('.title-row .status-revoked').waitFor();
    assert.match(await page.textContent('main'), /no longer needed/);
    assert.equal((await verify(secret)).status, 401);
    assert.equal((await adminApi('GET', `/v1/keys/${keyId}`)).status, 'revoked');
  });

  it('highlights a new source in the compromise report and revokes from there', async () => {
    const leaky = await adminApi('POST', '/v1/workspaces/acme/keys', { name: 'leaky', scopes: ['orders:read'] });
    for (let i = 0; i < 3; i++) assert.equal((await verify(leaky.secret, '203.0.113.10', 'payments-service/2.1')).status, 200);
    const since = await nextWholeSecond();
    for (let i = 0; i < 4; i++) assert.equal((await verify(leaky.secret, '198.51.100.77', 'curl/8.5.0')).status, 200);
    assert.equal((await verify(leaky.secret, '203.0.113.10', 'payments-service/2.1')).status, 200);

    await page.goto(`${baseUrl}/console#/k/${leaky.key_id}`);
    await page.click('#open-report');
    await page.locator('#report-form').waitFor();
    // The form takes local time; the browser runs in UTC.
    await page.fill('#report-since', since.toISOString().slice(0, 19));
    await page.click('#run-report');
    await page.waitForFunction((s) => decodeURIComponent(location.hash).includes(s), since.toISOString());
    await page.locator('#sources-table').waitFor();
    const fresh = page.locator('#sources-table tr[data-value="198.51.100.77"]');
    const known = page.locator('#sources-table tr[data-value="203.0.113.10"]');
    assert.match(await fresh.getAttribute('class'), /\bnew\b/);
    assert.match(await fresh.textContent(), /new since/);
    assert.doesNotMatch(await known.getAttribute('class'), /\bnew\b/);
    assert.match(await known.textContent(), /seen before/);
    assert.match(await page.locator('#agents-table tr.new').textContent(), /curl\/8\.5\.0/);
    await page.locator('#uses-chart rect.new-source').first().waitFor();
    assert.equal(await page.locator('#uses-chart rect.new-source').first().getAttribute('data-source'), '198.51.100.77');
    assert.match(await page.textContent('#chart-legend li.new'), /198\.51\.100\.77/);
    await shot('compromise-report', { fullPage: true });

    await page.click('#report-revoke');
    await page.fill('#revoke-reason', 'leaked in a CI log');
    await page.check('#revoke-confirm');
    await page.click('dialog button[type=submit]');
    await page.locator('.title-row .status-revoked').waitFor();
    assert.equal((await verify(leaky.secret, '198.51.100.77', 'curl/8.5.0')).status, 401);
    await page.reload();
    await page.locator('#after-revocation').waitFor();
    assert.match(await page.textContent('#after-revocation'), /1 attempt since/);
    assert.match(await page.textContent('#after-revocation'), /198\.51\.100\.77/);
  });

  it('edits the policy', async () => {
    await page.goto(`${baseUrl}/console#/w/acme/policy`);
    await page.fill('#policy-max', '50');
    await page.fill('#policy-lifetime', '400d');
    await page.selectOption('#policy-on-leak', 'revoke');
    await page.click('#policy-save');
    await page.waitForFunction(() => /400d/.test(document.querySelector('main .facts')?.textContent || ''));
    const policy = await adminApi('GET', '/v1/workspaces/acme/policy');
    assert.equal(policy.max_active_keys, 50);
    assert.equal(policy.max_lifetime, '400d');
    assert.equal(policy.on_leak, 'revoke');
    assert.equal(await page.textContent('#policy-on-leak-current'), 'revoke the key');

    // A bad rate limit is refused in the page and changes nothing.
    await page.fill('#policy-ratelimits', 'api=lots');
    await page.click('#policy-save');
    await page.locator('main .form-error:not([hidden])').waitFor();
    assert.match(await page.textContent('main .form-error'), /NAME=LIMIT\/DURATION/);
    assert.deepEqual((await adminApi('GET', '/v1/workspaces/acme/policy')).ratelimits, []);
    await page.fill('#policy-ratelimits', 'api=100/1m, heavy=5/1h named');
    await page.click('#policy-save');
    await page.waitForFunction(() => /heavy=5\/1h named/.test(document.querySelector('#policy-ratelimits-current')?.textContent || ''));
    assert.deepEqual((await adminApi('GET', '/v1/workspaces/acme/policy')).ratelimits, [
      { name: 'api', limit: 100, duration: '1m', auto_apply: true },
      { name: 'heavy', limit: 5, duration: '1h', auto_apply: false },
    ]);
    // Saving again keeps the limits and the leak setting: the page sends the policy whole.
    await page.click('#policy-save');
    await page.waitForFunction(() => document.querySelector('#policy-ratelimits-current'));
    const kept = await adminApi('GET', '/v1/workspaces/acme/policy');
    assert.equal(kept.ratelimits.length, 2);
    assert.equal(kept.on_leak, 'revoke');
  });

  it("shows a key's rate limits and edits them", async () => {
    const created = await adminApi('POST', '/v1/workspaces/acme/keys', { name: 'metered', expires_in: '30d' });
    await page.goto(`${baseUrl}/console#/k/${created.key_id}`);
    await page.locator('#ratelimits').waitFor();
    assert.equal(await page.textContent('#ratelimits'), 'api=100/1m, heavy=5/1h named (workspace default)');
    await page.click('#edit-ratelimits');
    await page.fill('#ratelimits-input', 'api=2/1h');
    await page.click('dialog button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#ratelimits')?.textContent === 'api=2/1h');
    assert.equal((await verify(created.secret, '203.0.113.9', 'curl/8.5.0')).status, 200);
    assert.equal((await verify(created.secret, '203.0.113.9', 'curl/8.5.0')).status, 200);
    assert.equal((await verify(created.secret, '203.0.113.9', 'curl/8.5.0')).status, 429);
    const key = await adminApi('GET', `/v1/keys/${created.key_id}`);
    assert.equal(key.ratelimits_from, 'key');
  });

  it('shows a leak report as a banner and in the timeline', async () => {
    const created = await adminApi('POST', '/v1/workspaces/acme/keys', { name: 'pasted', expires_in: '30d' });
    const answer = await fetch(`${baseUrl}/v1/leaks/report`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ secrets: [created.secret], url: 'https://paste.example/p1' }),
    });
    assert.equal(answer.status, 202);
    for (let i = 0; i < 100 && (await adminApi('GET', `/v1/keys/${created.key_id}`)).status !== 'revoked'; i++) await sleep(100);
    await page.goto(`${baseUrl}/console#/k/${created.key_id}`);
    await page.locator('#leak-banner').waitFor();
    assert.match(await page.textContent('#leak-banner'), /Reported leaked .*public .*paste\.example\/p1.*The key is revoked/s);
    await page.locator('#timeline li.kind-leak_reported').waitFor();
    assert.match(await page.textContent('#timeline'), /reported by public at https:\/\/paste\.example\/p1/);
  });

  it('shows the integrity page', async () => {
    await page.click('#nav a[href="#/integrity"]');
    await page.locator('#public-key').waitFor();
    assert.equal(await page.textContent('#public-key'), initJson.log_public_key);
    await page.waitForFunction(() => document.querySelector('#log-size'), null, { timeout: 5000 }).catch(async () => {
      await sleep(1200);
      await page.reload();
      await page.locator('#log-size').waitFor();
    });
    assert.match(await page.textContent('#log-size'), /^\d+ events$/);
    assert.match(await page.textContent('main'), /keyledger export verify export\.jsonl --public-key/);
    await shot('integrity', { fullPage: true });
  });

  it('revokes every key of a workspace after the typed confirmation', async () => {
    await openWorkspace('acme');
    await row('leaky').waitFor();
    await shot('keys');
    await page.click('#revoke-all');
    await page.fill('#revoke-all-reason', 'incident drill');
    await page.fill('#revoke-all-confirm', 'acm');
    assert.equal(await page.locator('dialog button[type=submit]').isDisabled(), true);
    await page.fill('#revoke-all-confirm', 'acme');
    await page.click('dialog button[type=submit]');
    await page.waitForFunction(() => /\(0 active\)/.test(document.querySelector('#key-count')?.textContent || ''));
    assert.equal((await verify(state.rotated)).status, 401);
    assert.equal((await verify(state.ci.secret)).status, 401);
    const active = await adminApi('GET', '/v1/workspaces/acme/keys?status=active');
    assert.equal(active.keys.length, 0);
  });

  it('never put the admin key in a URL, a cookie or localStorage, and broke no CSP rule', async () => {
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.deepEqual(await browser.cookies(), []);
    assert.ok(!page.url().includes(adminKey));
    const history = await page.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name).concat(performance.getEntriesByType('navigation').map((e) => e.name)));
    assert.ok(history.every((u) => !u.includes(adminKey)), 'no request URL carries the key');
    assert.deepEqual(dialogs, []);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
    assert.deepEqual(consoleErrors, []);
    // Signing out forgets it.
    await page.click('#signout');
    await page.locator('#admin-key').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('keyledger.console.adminKey')), null);
  });
});
