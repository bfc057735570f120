// What every browser test of the console shares: the real `keyledger` binary (built with
// `cargo build -p keyledger` unless KEYLEDGER_BIN names one), served on a free loopback port
// from a fresh data dir, and the admin API and /v1/verify called from node.
//
// Not a test file itself: node --test picks up only `*.test.mjs`.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Where screenshots go: tests/console/screenshots/ (ignored by git) unless `env` names
// another directory relative to the repository.
export function screenshotsDir(env) {
  return path.resolve(root, env || 'tests/console/screenshots');
}

function buildBinary() {
  const build = spawnSync('cargo', ['build', '-q', '-p', 'keyledger', '--message-format=json'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] });
  assert.equal(build.status, 0, 'cargo build -p keyledger failed');
  for (const line of build.stdout.split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    const message = JSON.parse(line);
    if (message.reason === 'compiler-artifact' && message.executable && message.target.name === 'keyledger') return message.executable;
  }
  throw new Error('cargo did not report the keyledger executable');
}

// A running `keyledger serve` on a fresh data dir: `baseUrl`, the init output (`initJson`,
// `adminKey`), the admin API and verify, and `stop()`, which also removes the data dir.
export class Keyledger {
  static async start() {
    const started = Date.now();
    const binary = process.env.KEYLEDGER_BIN || buildBinary();
    console.log(`cargo build -p keyledger: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keyledger-console-data-'));
    rmSync(dataDir, { recursive: true });
    const ledger = new Keyledger(dataDir);
    await ledger.#serve(binary);
    return ledger;
  }

  constructor(dataDir) {
    this.dataDir = dataDir;
  }

  async #serve(binary) {
    const init = spawnSync(binary, ['init', '--data-dir', this.dataDir], { encoding: 'utf8' });
    assert.equal(init.status, 0, init.stderr);
    this.initJson = JSON.parse(init.stdout);
    this.adminKey = this.initJson.admin_key;
    const server = spawn(binary, ['serve', '--data-dir', this.dataDir, '--listen', '127.0.0.1:0', '--trust-forwarded-for', '--checkpoint-interval-secs', '1'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'info' } });
    this.server = server;
    let output = '';
    const address = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`keyledger did not start:\n${output}`)), 30000);
      const look = (chunk) => {
        output += chunk;
        const m = output.replace(/\x1b\[[0-9;]*m/g, '').match(/keyledger is serving[^\n]*?(127\.0\.0\.1:\d+)|address[=:]\s*"?(127\.0\.0\.1:\d+)/);
        if (m) { clearTimeout(timer); resolve(m[1] || m[2]); }
      };
      server.stdout.on('data', look);
      server.stderr.on('data', look);
      server.on('exit', (code) => reject(new Error(`keyledger exited (${code}):\n${output}`)));
    });
    this.baseUrl = `http://${address}`;
    for (let i = 0; i < 100; i++) {
      try { if ((await fetch(`${this.baseUrl}/healthz`)).ok) return; } catch { /* not yet */ }
      await sleep(100);
    }
    throw new Error('keyledger never answered /healthz');
  }

  async stop() {
    const server = this.server;
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((resolve) => { server.once('exit', resolve); setTimeout(resolve, 5000); });
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async adminApi(method, url, body) {
    const response = await fetch(`${this.baseUrl}${url}`, {
      method,
      headers: { Authorization: `Bearer ${this.adminKey}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json();
    assert.ok(response.ok, `${method} ${url}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  }

  // One gateway-style verification of `secret`, as if from `ip` (X-Forwarded-For).
  async verify(secret, ip, userAgent) {
    const headers = { Authorization: `Bearer ${secret}`, 'User-Agent': userAgent || 'console-test/1.0', 'X-Forwarded-Uri': '/orders/42', 'X-Forwarded-Method': 'GET' };
    if (ip) headers['X-Forwarded-For'] = ip;
    return fetch(`${this.baseUrl}/v1/verify`, { headers });
  }
}

// The start of the next whole second, after uses made before it: the compromise report's
// `since` (which has whole-second precision) then splits old uses from new ones cleanly.
export async function nextWholeSecond() {
  await sleep(1100);
  const since = new Date(Math.ceil(Date.now() / 1000) * 1000);
  await sleep(since - Date.now() + 300);
  return since;
}
