// Browser test of compliance reports (docs/compliance.md): the console's Reports view of a
// workspace shows the signed report's summary and downloads the HTML; the downloaded page
// renders in chromium without a console error, without script, with its charts drawn.
//
//   bash scripts/install-browser.sh && node --test tests/console/reports.test.mjs
//
// Screenshots (compliance-console.png, compliance-report.png) go to
// tests/console/screenshots/, or with CONSOLE_SCREENSHOTS=docs/img to docs/img/.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Keyledger, screenshotsDir } from './harness.mjs';

const shotsDir = screenshotsDir(process.env.CONSOLE_SCREENSHOTS);
const browserPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

let ledger, browser, page, userDataDir, downloadsDir;
const pageErrors = [];
const consoleErrors = [];

describe('compliance reports in the browser', { timeout: 180000 }, () => {
  before(async () => {
    assert.ok(existsSync(browserPath), `no browser at ${browserPath}: run scripts/install-browser.sh`);
    userDataDir = mkdtempSync(path.join(tmpdir(), 'keyledger-report-profile-'));
    downloadsDir = mkdtempSync(path.join(tmpdir(), 'keyledger-report-downloads-'));
    ledger = await Keyledger.start();
    // A small history: busy keys used from a few addresses, one never used, a revoked one
    // still presented, a policy with a maximum lifetime.
    // Created before the policy: a key without expiry, never used.
    await ledger.adminApi('POST', '/v1/workspaces/acme/keys', { name: 'never-used', owner: 'platform', scopes: ['orders:read'] });
    await ledger.adminApi('PUT', '/v1/workspaces/acme/policy', { max_lifetime: '90d' });
    const keys = {};
    for (const [name, owner] of [['checkout', 'payments'], ['search', 'discovery'], ['billing-export', 'finance'], ['legacy-batch', 'platform']]) {
      keys[name] = await ledger.adminApi('POST', '/v1/workspaces/acme/keys', { name, owner, scopes: ['orders:read'], expires_in: '60d' });
    }
    for (let i = 0; i < 24; i++) await ledger.verify(keys.checkout.secret, `203.0.113.${1 + (i % 4)}`);
    for (let i = 0; i < 9; i++) await ledger.verify(keys.search.secret, '198.51.100.7');
    for (let i = 0; i < 4; i++) await ledger.verify(keys['billing-export'].secret, '192.0.2.10');
    await ledger.verify(keys['legacy-batch'].secret, '192.0.2.99');
    await ledger.adminApi('POST', `/v1/keys/${keys['legacy-batch'].key_id}/revoke`, { reason: 'replaced by the new batch job' });
    for (let i = 0; i < 3; i++) await ledger.verify(keys['legacy-batch'].secret, '192.0.2.99');

    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: browserPath,
      headless: true,
      acceptDownloads: true,
      downloadsPath: downloadsDir,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 860 },
      timezoneId: 'UTC',
      locale: 'en-GB',
      colorScheme: 'light',
    });
    page = browser.pages()[0] || await browser.newPage();
    page.setDefaultTimeout(15000);
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await ledger?.stop();
    for (const dir of [userDataDir, downloadsDir]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let htmlPath;

  it('shows the summary of a workspace and downloads the HTML report', async () => {
    await page.goto(`${ledger.baseUrl}/console`);
    await page.locator('#admin-key').waitFor();
    await page.fill('#admin-key', ledger.adminKey);
    await page.click('form button[type=submit]');
    await page.locator('#workspace-input').waitFor();
    await page.goto(`${ledger.baseUrl}/console#/w/acme`);
    await page.click('#open-reports');
    await page.locator('#compliance-summary').waitFor();
    const summary = await page.locator('#compliance-summary').textContent();
    assert.match(summary, /5\s*keys in the inventory/);
    assert.match(summary, /38\s*verifications/);
    assert.match(summary, /3\s*denials/);
    mkdirSync(shotsDir, { recursive: true });
    await page.screenshot({ path: path.join(shotsDir, 'compliance-console.png') });
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#report-download-html')]);
    assert.match(download.suggestedFilename(), /^keyledger-compliance-acme-\d{4}-\d\d-\d\d-\d{4}-\d\d-\d\d\.html$/);
    htmlPath = path.join(downloadsDir, 'report.html');
    await download.saveAs(htmlPath);
    const html = readFileSync(htmlPath, 'utf8');
    assert.ok(!html.includes(ledger.adminKey), 'the admin key is in the report');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
  });

  it('renders the downloaded report without script, without errors, with its charts drawn', async () => {
    assert.ok(htmlPath, 'the previous test downloads the report');
    // A separate browser with JavaScript off: the page must not need it.
    const plain = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    const context = await plain.newContext({ javaScriptEnabled: false, timezoneId: 'UTC', locale: 'en-GB', colorScheme: 'light' });
    const reader = await context.newPage();
    const errors = [];
    reader.on('pageerror', (e) => errors.push(String(e)));
    reader.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    const requests = [];
    reader.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
    await reader.setViewportSize({ width: 1200, height: 900 });
    await reader.goto(`file://${htmlPath}`);
    for (const id of ['chart-days', 'chart-keys']) {
      const box = await reader.locator(`svg#${id}`).boundingBox();
      assert.ok(box && box.width > 100 && box.height > 20, `${id} is not drawn: ${JSON.stringify(box)}`);
    }
    const bars = await reader.$$eval('svg#chart-days rect', (rects) => rects.filter((r) => r.getBoundingClientRect().height > 0).length);
    assert.ok(bars >= 1, 'no bar of the daily chart has a height');
    const keyBars = await reader.$$eval('svg#chart-keys rect', (rects) => rects.filter((r) => r.getBoundingClientRect().width > 0).length);
    assert.ok(keyBars >= 4, `only ${keyBars} key bars are drawn`);
    const text = await reader.locator('body').innerText();
    assert.match(text, /Inventory at the end of the period/);
    assert.match(text, /replaced by the new batch job/);
    assert.match(text, /used after revocation/);
    assert.deepEqual(errors, []);
    assert.deepEqual(requests, [], 'the report fetched something');
    await reader.screenshot({ path: path.join(shotsDir, 'compliance-report.png'), fullPage: false });
    await reader.locator('#usage').screenshot({ path: path.join(shotsDir, 'compliance-usage.png') });
    await reader.emulateMedia({ media: 'print' });
    const printBox = await reader.locator('svg#chart-days').boundingBox();
    assert.ok(printBox && printBox.width > 100, 'the chart is not drawn for print');
    await plain.close();
  });
});
