// keyledger's web console. Plain modern JavaScript, no framework, no build step.
//
// Rules this file keeps (see docs/decisions/0005-console-plain-js.md):
// - The admin key lives in this tab's sessionStorage only: never in a URL, a cookie or
//   any longer-lived storage. Every call is same-origin with `Authorization: Bearer`.
// - Every string that comes from the API or the user is rendered as text (text nodes,
//   textContent, attribute values): the DOM is built with h()/svg(), never from HTML.
// - No inline script or style (the page's CSP forbids both).

const KEY_STORE = 'keyledger.console.adminKey';
const RECENT_STORE = 'keyledger.console.recentWorkspaces';
// Also the workspace input's `pattern`, which browsers compile with the `v` flag: there a
// `-` in a class must be escaped, or the pattern is ignored with a console error.
const WORKSPACE_RE = /^(_ledger|[a-z0-9][a-z0-9_\-]{0,62})$/;
const session = window.sessionStorage;

const $ = (id) => document.getElementById(id);
const main = $('main');
const dialog = $('dialog');

// ---------------------------------------------------------------- DOM helpers

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

// h('a', {href: '#/x', class: 'btn', onclick: fn}, 'text', otherNode)
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.className = value;
    } else if (name === 'text') {
      el.textContent = String(value);
    } else if (name === 'value') {
      el.value = value;
    } else if (name === 'checked' || name === 'disabled' || name === 'required' || name === 'hidden' || name === 'readOnly') {
      el[name] = Boolean(value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  return append(el, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  return append(el, children);
}

// A route-safe hash link: every dynamic part is percent-encoded.
function link(parts, text, props = {}) {
  const href = '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
  return h('a', { ...props, href }, text);
}

function announce(text) {
  const status = $('status');
  status.textContent = '';
  // A fresh text node makes screen readers announce a repeated message again.
  setTimeout(() => { status.textContent = text; }, 30);
}

function showError(error) {
  const box = $('alert');
  box.replaceChildren();
  if (!error) { box.hidden = true; return; }
  const text = error instanceof ApiError ? error.describe() : String(error.message || error);
  append(box, [h('span', {}, text), ' ', h('button', { type: 'button', class: 'link', onclick: () => showError(null) }, 'Dismiss')]);
  box.hidden = false;
}

// ---------------------------------------------------------------- time and text

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
function relative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return seconds < 0 ? 'just now' : 'in a few seconds';
  for (const [unit, size] of [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (abs >= size) return rtf.format(Math.round(seconds / size), unit);
  }
  return rtf.format(Math.round(seconds / 60), 'minute');
}
function absolute(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}
function timeEl(iso, { abs = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, abs ? `${absolute(iso)} (${relative(iso)})` : relative(iso));
}
function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }
function list(values, empty = '—') { return values && values.length ? values.join(', ') : empty; }
function splitList(text) { return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean); }
function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}
// The hint of a secret (`kl_live_…WXYZ`), to say which key is signed in.
function hintOf(secret) {
  const parts = secret.split('_');
  return parts.length >= 3 ? `${parts[0]}_${parts[1]}_…${secret.slice(-4)}` : `…${secret.slice(-4)}`;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body, requestId) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || 'http_error';
    this.reason = (body && body.reason) || null;
    this.requestId = (body && body.request_id) || requestId || null;
  }
  describe() {
    return `${this.code}: ${this.message}${this.requestId ? ` (request ${this.requestId})` : ''}`;
  }
}

function adminKey() { return session.getItem(KEY_STORE); }

async function api(method, path, body, { key = adminKey(), idempotent = false, raw = false } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${key}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (idempotent) headers['Idempotency-Key'] = `console-${randomId()}`;
  const response = await fetch(path, init);
  if (raw && response.ok) return response;
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, data, response.headers.get('request-id'));
    if (response.status === 401 && key === adminKey()) {
      signOut(`Signed out: the admin key was refused (${error.code}: ${error.message}).`);
    }
    throw error;
  }
  return data;
}

const enc = encodeURIComponent;
const API = {
  keys: (ws, status = 'all') => api('GET', `/v1/workspaces/${enc(ws)}/keys?status=${enc(status)}`),
  create: (ws, body) => api('POST', `/v1/workspaces/${enc(ws)}/keys`, body, { idempotent: true }),
  key: (id) => api('GET', `/v1/keys/${enc(id)}`),
  rotate: (id, overlap) => api('POST', `/v1/keys/${enc(id)}/rotate`, { overlap }, { idempotent: true }),
  revoke: (id, reason) => api('POST', `/v1/keys/${enc(id)}/revoke`, reason ? { reason } : {}),
  disable: (id, reason) => api('POST', `/v1/keys/${enc(id)}/disable`, reason ? { reason } : {}),
  enable: (id, reason) => api('POST', `/v1/keys/${enc(id)}/enable`, reason ? { reason } : {}),
  setCredits: (id, body) => api('POST', `/v1/keys/${enc(id)}/credits`, body),
  update: (id, body) => api('PATCH', `/v1/keys/${enc(id)}`, body),
  revokeAll: (ws, reason) => api('POST', `/v1/workspaces/${enc(ws)}/keys/revoke-all`, reason ? { reason } : {}, { idempotent: true }),
  policy: (ws) => api('GET', `/v1/workspaces/${enc(ws)}/policy`),
  setPolicy: (ws, body) => api('PUT', `/v1/workspaces/${enc(ws)}/policy`, body),
  events: (id, params) => api('GET', `/v1/keys/${enc(id)}/events?${new URLSearchParams(params)}`),
  report: (id, params) => api('GET', `/v1/audit/keys/${enc(id)}/compromise?${new URLSearchParams(params)}`),
  checkpoint: () => api('GET', '/v1/log/checkpoint'),
  publicKey: () => api('GET', '/v1/log/public-key'),
};

// All events of a key matching `params`, page after page, up to `max`.
async function allEvents(id, params, max) {
  const events = [];
  let cursor = null;
  do {
    const page = await API.events(id, { ...params, limit: String(Math.min(1000, max - events.length)), ...(cursor ? { cursor } : {}) });
    events.push(...page.events);
    cursor = page.next_cursor;
  } while (cursor && events.length < max);
  return { events, truncated: Boolean(cursor) };
}

// ---------------------------------------------------------------- session

function recentWorkspaces() {
  try {
    const value = JSON.parse(session.getItem(RECENT_STORE) || '[]');
    return Array.isArray(value) ? value.filter((w) => typeof w === 'string' && WORKSPACE_RE.test(w)) : [];
  } catch { return []; }
}
function rememberWorkspace(ws) {
  session.setItem(RECENT_STORE, JSON.stringify([ws, ...recentWorkspaces().filter((w) => w !== ws)].slice(0, 12)));
}
function forgetWorkspace(ws) {
  session.setItem(RECENT_STORE, JSON.stringify(recentWorkspaces().filter((w) => w !== ws)));
}

let pendingRoute = null;
function signOut(message) {
  session.removeItem(KEY_STORE);
  session.removeItem(RECENT_STORE);
  closeDialog();
  updateChrome();
  if (location.hash !== '#/signin') {
    pendingRoute = null;
    location.hash = '#/signin';
  }
  if (message) showError(new Error(message));
}

function updateChrome() {
  const key = adminKey();
  $('nav').hidden = !key;
  $('who').hidden = !key;
  $('who-text').textContent = key ? `Admin key ${hintOf(key)}` : '';
}

// ---------------------------------------------------------------- views plumbing

let generation = 0;
// Starts a view: returns render(), which does nothing once another view has started.
function beginView(title) {
  const mine = ++generation;
  document.title = `${title} · keyledger console`;
  main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  return {
    get current() { return mine === generation; },
    render(...nodes) {
      if (mine !== generation) return false;
      main.replaceChildren();
      append(main, nodes);
      return true;
    },
  };
}

function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, status);
}

// Keys imported by a foreign hash (docs/import.md): a badge, titled with the re-hash state.
function importBadge(key) {
  if (!key.imported) return null;
  const title = key.rehashed_at ? `imported; re-hashed on first use ${key.rehashed_at}` : 'imported; not used yet (known by its foreign hash)';
  return [' ', h('span', { class: 'badge imported-badge', title }, 'imported')];
}

function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

function table(columns, rows, { caption, className = '' } = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: className },
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
}

function field(label, control, hint) {
  const id = control.id || `f-${randomId().slice(0, 8)}`;
  control.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h('span', { class: 'hint', id: `${id}-hint` }, hint);
    control.setAttribute('aria-describedby', `${id}-hint`);
  }
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

function definitions(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// ---------------------------------------------------------------- dialogs

let dialogOpener = null;
function openDialog(title, ...body) {
  dialogOpener = document.activeElement;
  dialog.replaceChildren(h('h2', { id: 'dialog-title' }, title));
  append(dialog, body);
  if (!dialog.open) dialog.showModal();
  const first = dialog.querySelector('input:not([readonly]), select, textarea, input, button');
  if (first) first.focus();
}
function closeDialog() {
  if (dialog.open) dialog.close();
}
dialog.addEventListener('close', () => {
  // Drop whatever the dialog showed (a secret above all) from the DOM.
  dialog.replaceChildren();
  if (dialogOpener && document.contains(dialogOpener)) dialogOpener.focus();
  dialogOpener = null;
});

function dialogError() { return h('p', { class: 'form-error', role: 'alert', hidden: true }); }
function setFormError(el, error) {
  el.textContent = error ? (error instanceof ApiError ? error.describe() : String(error.message || error)) : '';
  el.hidden = !error;
}

// A form inside the dialog; `submit` returns a promise; errors are shown in the dialog.
function dialogForm(fields, submitLabel, submit, { danger = false, canSubmit = null } = {}) {
  const error = dialogError();
  const button = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, submitLabel);
  const form = h('form', { novalidate: true }, fields, error,
    h('div', { class: 'actions' }, button, h('button', { type: 'button', onclick: closeDialog }, 'Cancel')));
  const refresh = () => { if (canSubmit) button.disabled = !canSubmit(); };
  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  refresh();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (canSubmit && !canSubmit()) return;
    if (!form.reportValidity()) return;
    button.disabled = true;
    setFormError(error, null);
    try {
      await submit();
    } catch (e) {
      setFormError(error, e);
    } finally {
      if (form.isConnected) button.disabled = canSubmit ? !canSubmit() : false;
    }
  });
  return form;
}

// The one place a secret is ever shown. It is gone from the page when the dialog closes.
function showSecret(title, issued, extra) {
  const input = h('input', { type: 'text', readOnly: true, class: 'mono secret', value: issued.secret, id: 'secret-value', spellcheck: 'false', autocomplete: 'off' });
  const copied = h('span', { class: 'muted', role: 'status' });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      copied.textContent = 'Copied to the clipboard.';
    } catch {
      input.select();
      copied.textContent = 'Copying was refused: the secret is selected, press Ctrl+C.';
    }
  };
  openDialog(title,
    h('p', { class: 'warning', id: 'secret-warning' }, h('strong', {}, 'Copy this secret now. It will not be shown again.'), ' keyledger stores only a hash of it; if it is lost, rotate the key.'),
    field('Secret', input),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', id: 'copy-secret', onclick: copy }, 'Copy'), copied),
    definitions([['Key id', h('code', {}, issued.key_id)], ['Name', issued.name], ['Hint', h('code', {}, issued.hint)], ['Expires', issued.expires_at ? timeEl(issued.expires_at, { abs: true }) : 'never']]),
    extra,
    h('div', { class: 'actions' }, h('button', { type: 'button', id: 'secret-done', onclick: closeDialog }, 'I have stored it, close')));
  input.select();
}

function createKeyDialog(ws, onDone) {
  const name = h('input', { type: 'text', required: true, maxlength: 100, autocomplete: 'off', id: 'create-name' });
  const environment = h('select', { id: 'create-env' }, h('option', { value: 'live' }, 'live'), h('option', { value: 'test' }, 'test'));
  const scopes = h('input', { type: 'text', autocomplete: 'off', id: 'create-scopes', placeholder: 'orders:read orders:write' });
  const resources = h('input', { type: 'text', autocomplete: 'off', id: 'create-resources', placeholder: 'empty = all resources' });
  const sources = h('input', { type: 'text', autocomplete: 'off', id: 'create-sources', placeholder: '10.0.0.0/8 2001:db8::/32' });
  const owner = h('input', { type: 'text', autocomplete: 'off', id: 'create-owner' });
  const expiry = h('select', { id: 'create-expiry' },
    h('option', { value: '' }, 'never'), h('option', { value: '30d' }, '30 days'), h('option', { value: '90d' }, '90 days'),
    h('option', { value: '365d' }, '1 year'), h('option', { value: 'custom' }, 'custom duration…'));
  const custom = h('input', { type: 'text', autocomplete: 'off', id: 'create-expiry-custom', placeholder: '12h, 30m, 180d', disabled: true });
  expiry.addEventListener('change', () => { custom.disabled = expiry.value !== 'custom'; if (!custom.disabled) custom.focus(); });
  const metadata = h('textarea', { id: 'create-metadata', rows: 2, class: 'mono', placeholder: '{"team": "payments"}' });
  const limits = h('input', { type: 'text', autocomplete: 'off', id: 'create-ratelimits', class: 'mono', placeholder: 'api=100/1m' });
  const form = dialogForm([
    field('Name', name),
    field('Environment', environment),
    field('Scopes', scopes, 'Separated by spaces or commas.'),
    field('Resources', resources, 'Allow-list, separated by spaces or commas. Empty allows all.'),
    field('Allowed sources', sources, 'IP addresses or CIDR networks, separated by spaces or commas. Empty: the workspace default, if any.'),
    field('Owner (optional)', owner),
    h('div', { class: 'row' }, field('Expires in', expiry), field('Custom duration', custom)),
    field('Rate limits (optional)', limits, `${RATE_LIMITS_HELP} Empty: the workspace default, if any.`),
    field('Metadata (optional JSON object)', metadata),
  ], 'Create key', async () => {
    const body = { name: name.value.trim(), environment: environment.value, scopes: splitList(scopes.value), resources: splitList(resources.value) };
    if (owner.value.trim()) body.owner = owner.value.trim();
    if (splitList(sources.value).length) body.allowed_sources = splitList(sources.value);
    const lifetime = expiry.value === 'custom' ? custom.value.trim() : expiry.value;
    if (lifetime) body.expires_in = lifetime;
    if (limits.value.trim()) body.ratelimits = parseRateLimits(limits.value);
    if (metadata.value.trim()) {
      try { body.metadata = JSON.parse(metadata.value); } catch { throw new Error('Metadata must be a JSON object.'); }
    }
    const key = await API.create(ws, body);
    announce(`Key ${key.name} created.`);
    showSecret('Key created', key);
    onDone(key);
  }, { canSubmit: () => name.value.trim().length > 0 });
  openDialog(`Create a key in ${ws}`, form);
}

function rotateDialog(key, onDone) {
  const overlap = h('select', { id: 'rotate-overlap' },
    h('option', { value: '0s' }, 'No overlap: revoke the old key now'),
    h('option', { value: '1h' }, '1 hour'),
    h('option', { value: '24h', selected: true }, '24 hours'),
    h('option', { value: '7d' }, '7 days'));
  const form = dialogForm([
    h('p', {}, 'The new key inherits the scopes, resources, environment, owner, metadata and lifetime of ', h('strong', {}, key.name), '.'),
    field('Overlap', overlap, 'How long the old key keeps working, so that clients can switch.'),
  ], 'Rotate key', async () => {
    const answer = await API.rotate(key.key_id, overlap.value);
    const previous = answer.previous;
    announce(`Key ${key.name} rotated.`);
    showSecret('Key rotated', answer.key, h('p', {},
      'The previous key ', h('code', {}, previous.key_id), ' ',
      previous.status === 'revoked' ? 'is revoked.' : ['stays valid until ', timeEl(previous.expires_at, { abs: true }), '.']));
    onDone(answer);
  });
  openDialog(`Rotate ${key.name}`, form);
}

function revokeDialog(key, onDone) {
  const reason = h('textarea', { id: 'revoke-reason', rows: 2, maxlength: 500 });
  const sure = h('input', { type: 'checkbox', id: 'revoke-confirm' });
  const form = dialogForm([
    h('p', {}, 'Revoking ', h('strong', {}, key.name), ' (', h('code', {}, key.key_id), ') is immediate and cannot be undone: every verification of it fails from now on.'),
    field('Reason (recorded in the log)', reason),
    h('div', { class: 'check' }, sure, h('label', { for: 'revoke-confirm' }, 'I understand that this key stops working now, for good.')),
  ], 'Revoke key', async () => {
    const revoked = await API.revoke(key.key_id, reason.value.trim());
    closeDialog();
    announce(`Key ${revoked.name} revoked.`);
    onDone(revoked);
  }, { danger: true, canSubmit: () => sure.checked });
  openDialog(`Revoke ${key.name}`, form);
}

function disableDialog(key, onDone) {
  const enabling = key.status === 'disabled';
  const reason = h('textarea', { id: 'disable-reason', rows: 2, maxlength: 500 });
  const form = dialogForm([
    h('p', {}, enabling
      ? ['Enabling ', h('strong', {}, key.name), ' lets it verify again.']
      : ['Disabling ', h('strong', {}, key.name), ' makes every verification fail until it is enabled again. Unlike revocation, this can be undone.']),
    field('Reason (recorded in the log)', reason),
  ], enabling ? 'Enable key' : 'Disable key', async () => {
    const changed = enabling ? await API.enable(key.key_id, reason.value.trim()) : await API.disable(key.key_id, reason.value.trim());
    closeDialog();
    announce(`Key ${changed.name} ${enabling ? 'enabled' : 'disabled'}.`);
    onDone(changed);
  }, { danger: !enabling });
  openDialog(`${enabling ? 'Enable' : 'Disable'} ${key.name}`, form);
}

// Usage credits (docs/credits.md): the balance on the key view, and a top-up dialog.
function creditsText(credits) {
  const refill = credits.refill ? ` · refilled to ${credits.refill.amount} ${credits.refill.interval}` : '';
  return `${credits.remaining} left${refill}`;
}

// Rate limits (docs/api.md, "Rate limits") in the CLI's notation, one per line or separated by
// commas: `api=100/1m`, and `heavy=5/1h named` for a limit applied only when a request names it.
function rateLimitsText(limits) {
  return (limits ?? []).map((l) => `${l.name}=${l.limit}/${l.duration}${l.auto_apply === false ? ' named' : ''}`).join(', ');
}

function parseRateLimits(text) {
  return text.split(/[,\n]+/).map((s) => s.trim()).filter(Boolean).map((entry) => {
    const m = /^([^=\s]+)=(\d+)\/(\S+?)(\s+named)?$/.exec(entry);
    if (!m) throw new Error(`Rate limit "${entry}": write NAME=LIMIT/DURATION, e.g. api=100/1m (add " named" for a limit applied only when named).`);
    return { name: m[1], limit: Number(m[2]), duration: m[3], auto_apply: !m[4] };
  });
}

const RATE_LIMITS_HELP = 'NAME=LIMIT/DURATION, e.g. api=100/1m; separated by commas or lines; add " named" for a limit applied only when a request names it.';

function rateLimitsDialog(key, onDone) {
  const own = key.ratelimits_from === 'key';
  const limits = h('textarea', { id: 'ratelimits-input', rows: 3, class: 'mono', placeholder: 'api=100/1m' });
  limits.value = own ? rateLimitsText(key.ratelimits) : '';
  const form = dialogForm([
    h('p', {}, key.ratelimits_from === 'policy'
      ? [h('strong', {}, key.name), ' is under its workspace default: ', rateLimitsText(key.ratelimits), '. Limits set here replace it.']
      : own ? ['Saving replaces the limits of ', h('strong', {}, key.name), '; empty puts it back under the workspace default, if any.']
        : [h('strong', {}, key.name), ' has no rate limits.']),
    field('Rate limits', limits, RATE_LIMITS_HELP),
  ], 'Save rate limits', async () => {
    const changed = await API.update(key.key_id, { ratelimits: parseRateLimits(limits.value) });
    closeDialog();
    announce(`Rate limits of ${changed.name}: ${rateLimitsText(changed.ratelimits) || 'none'}.`);
    onDone(changed);
  });
  openDialog(`Rate limits of ${key.name}`, form);
}

function creditsDialog(key, onDone) {
  const amount = h('input', { type: 'number', id: 'credits-amount', min: 0, step: 1, required: true, inputmode: 'numeric' });
  const mode = h('select', { id: 'credits-mode' }, h('option', { value: 'add' }, 'Add to the balance'), h('option', { value: 'set' }, 'Set the balance to'));
  if (!key.credits) { mode.value = 'set'; mode.disabled = true; }
  const form = dialogForm([
    h('p', {}, key.credits ? ['Balance of ', h('strong', {}, key.name), ': ', creditsText(key.credits), '.'] : [h('strong', {}, key.name), ' has no credits: setting a balance meters its verifications.']),
    field('Change', mode),
    field('Credits', amount, 'A whole number; recorded in the log as a credits_set event.'),
  ], 'Save credits', async () => {
    const n = Number(amount.value);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error('Credits must be a whole number of at least 0.');
    const changed = await API.setCredits(key.key_id, { [mode.value]: n });
    closeDialog();
    announce(`Credits of ${changed.name}: ${changed.credits.remaining} left.`);
    onDone(changed);
  });
  openDialog(`Credits of ${key.name}`, form);
}

function revokeAllDialog(ws, activeCount, onDone) {
  const reason = h('textarea', { id: 'revoke-all-reason', rows: 2, maxlength: 500 });
  const typed = h('input', { type: 'text', id: 'revoke-all-confirm', autocomplete: 'off', spellcheck: 'false' });
  const form = dialogForm([
    h('p', { class: 'warning' }, h('strong', {}, 'Emergency: '), `every key of workspace ${ws} (${plural(activeCount, 'active key')} now) is revoked at once. This cannot be undone.`),
    field('Reason (recorded in the log)', reason),
    field(`Type the workspace name (${ws}) to confirm`, typed),
  ], 'Revoke all keys', async () => {
    const answer = await API.revokeAll(ws, reason.value.trim());
    closeDialog();
    announce(`Revoked ${plural(answer.revoked, 'key')} in ${ws}.`);
    onDone(answer);
  }, { danger: true, canSubmit: () => typed.value === ws });
  openDialog(`Revoke all keys of ${ws}`, form);
}

// ---------------------------------------------------------------- sign in

function viewSignIn() {
  const view = beginView('Sign in');
  updateChrome();
  const input = h('input', { type: 'password', id: 'admin-key', autocomplete: 'off', spellcheck: 'false', required: true });
  const error = dialogError();
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card narrow', novalidate: true },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Sign in with an admin key (a key of the ', h('code', {}, '_ledger'), ' workspace). The console can do exactly what that key may do, through the same API.'),
    field('Admin key', input, 'Kept in this tab only (sessionStorage) and sent as Authorization: Bearer. Closing the tab forgets it.'),
    error,
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) { setFormError(error, new Error('Enter an admin key.')); input.focus(); return; }
    button.disabled = true;
    setFormError(error, null);
    try {
      let discovered = [];
      try {
        const answer = await api('GET', '/v1/workspaces/_ledger/keys?status=active', undefined, { key });
        discovered = answer.keys;
      } catch (e) {
        // 403/404: a valid admin key that may not read `_ledger`; anything else is fatal,
        // including a key refused from this address by its source allow-list.
        const notAdmin = e instanceof ApiError && e.status === 403 && /not an admin key/i.test(e.message);
        const outside = e instanceof ApiError && e.reason === 'source_not_allowed';
        if (!(e instanceof ApiError) || e.status === 401 || notAdmin || outside || e.status >= 500) throw e;
      }
      session.setItem(KEY_STORE, key);
      input.value = '';
      for (const ws of discovered.flatMap((k) => k.resources)) if (WORKSPACE_RE.test(ws) && !recentWorkspaces().includes(ws)) rememberWorkspace(ws);
      if (discovered.length && !recentWorkspaces().includes('_ledger')) rememberWorkspace('_ledger');
      showError(null);
      updateChrome();
      announce('Signed in.');
      const next = pendingRoute && pendingRoute !== '#/signin' ? pendingRoute : '#/workspaces';
      pendingRoute = null;
      location.hash = next;
    } catch (e) {
      setFormError(error, e);
      button.disabled = false;
      input.focus();
    }
  });
  view.render(form);
  input.focus();
}

// ---------------------------------------------------------------- workspaces

function viewWorkspaces() {
  const view = beginView('Workspaces');
  const input = h('input', { type: 'text', id: 'workspace-input', list: 'workspace-list', autocomplete: 'off', spellcheck: 'false', required: true, pattern: WORKSPACE_RE.source.slice(1, -1) });
  const error = dialogError();
  const form = h('form', { class: 'card', novalidate: true },
    h('h2', {}, 'Open a workspace'),
    h('p', { class: 'muted' }, 'Workspaces are implicit: there is no list of them. Type a workspace id; the ones you open are remembered in this tab.'),
    h('div', { class: 'row' }, field('Workspace id', input), h('div', { class: 'actions end' }, h('button', { type: 'submit', class: 'primary' }, 'Open'))),
    h('datalist', { id: 'workspace-list' }, recentWorkspaces().map((w) => h('option', { value: w }))),
    error);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const ws = input.value.trim();
    if (!WORKSPACE_RE.test(ws)) { setFormError(error, new Error('A workspace id is 1–63 characters of a–z, 0–9, _ and -, starting with a letter or digit.')); return; }
    location.hash = `#/w/${enc(ws)}`;
  });
  const recent = recentWorkspaces();
  const rows = recent.map((ws) => {
    const counts = h('td', { class: 'muted' }, '…');
    const last = h('td', { class: 'muted' }, '…');
    API.keys(ws).then((answer) => {
      const active = answer.keys.filter((k) => k.status === 'active').length;
      counts.replaceChildren(`${active} active of ${answer.keys.length}`);
      counts.className = '';
      const used = answer.keys.map((k) => k.last_used_at).filter(Boolean).sort().pop();
      last.replaceChildren(used ? timeEl(used) : 'never');
      last.className = '';
    }, (e) => { counts.replaceChildren(e.status === 404 ? 'not visible to this key' : e.code || 'error'); last.replaceChildren(''); });
    return h('tr', {},
      h('th', { scope: 'row' }, link(['w', ws], ws)),
      counts, last,
      h('td', {}, h('button', { type: 'button', class: 'link', 'aria-label': `Forget ${ws}`, onclick: () => { forgetWorkspace(ws); viewWorkspaces(); } }, 'Forget')));
  });
  view.render(
    h('h1', {}, 'Workspaces'),
    form,
    section('Recent workspaces', recent.length
      ? table(['Workspace', 'Keys', 'Last use', ''], rows)
      : h('p', { class: 'muted' }, 'None yet in this tab.')));
}

// ---------------------------------------------------------------- keys table

const keysState = { sort: 'created_at', dir: -1, status: 'all', search: '' };
const SORTS = {
  name: (k) => k.name.toLowerCase(),
  environment: (k) => k.environment,
  status: (k) => k.status,
  created_at: (k) => k.created_at,
  last_used_at: (k) => k.last_used_at || '',
  use_count: (k) => k.use_count,
};

async function viewKeys(ws) {
  const view = beginView(`Keys of ${ws}`);
  if (!WORKSPACE_RE.test(ws)) { view.render(h('h1', {}, 'No such workspace'), h('p', {}, 'That is not a workspace id.')); return; }
  let keys;
  try {
    keys = (await API.keys(ws)).keys;
  } catch (e) {
    view.render(h('h1', {}, `Workspace ${ws}`), h('p', { class: 'form-error', role: 'alert' }, e.describe ? e.describe() : String(e)));
    return;
  }
  if (!view.current) return;
  rememberWorkspace(ws);
  const reload = () => viewKeys(ws);
  const activeCount = keys.filter((k) => k.status === 'active').length;

  const search = h('input', { type: 'search', id: 'key-search', value: keysState.search, autocomplete: 'off', placeholder: 'name, owner or key id' });
  const status = h('select', { id: 'status-filter' }, ['all', 'active', 'disabled', 'expired', 'revoked'].map((s) => h('option', { value: s, selected: s === keysState.status }, s)));
  const tbody = h('tbody');
  const headRow = h('tr');
  const count = h('p', { class: 'muted', id: 'key-count' });

  const columns = [['name', 'Name'], [null, 'Hint'], ['environment', 'Env'], [null, 'Scopes'], ['status', 'Status'], ['created_at', 'Created'], ['last_used_at', 'Last used'], ['use_count', 'Uses']];
  const drawHead = () => {
    headRow.replaceChildren(...columns.map(([sortKey, label]) => {
      if (!sortKey) return h('th', { scope: 'col' }, label);
      const active = keysState.sort === sortKey;
      return h('th', { scope: 'col', 'aria-sort': active ? (keysState.dir > 0 ? 'ascending' : 'descending') : 'none', class: sortKey === 'use_count' ? 'num' : '' },
        h('button', { type: 'button', class: 'sort', onclick: () => {
          keysState.dir = keysState.sort === sortKey ? -keysState.dir : 1;
          keysState.sort = sortKey;
          draw();
          headRow.querySelector(`[data-sort="${sortKey}"]`)?.focus();
        }, 'data-sort': sortKey }, label, h('span', { 'aria-hidden': 'true', class: 'arrow' }, active ? (keysState.dir > 0 ? ' ▲' : ' ▼') : '')));
    }));
  };
  const draw = () => {
    drawHead();
    const needle = keysState.search.trim().toLowerCase();
    const key = SORTS[keysState.sort];
    const shown = keys
      .filter((k) => keysState.status === 'all' || k.status === keysState.status)
      .filter((k) => !needle || [k.name, k.owner || '', k.key_id, k.hint].some((v) => v.toLowerCase().includes(needle)))
      .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * keysState.dir);
    count.textContent = `${plural(shown.length, 'key')} shown of ${keys.length} (${activeCount} active).`;
    tbody.replaceChildren(...shown.map((k) => h('tr', { 'data-key-id': k.key_id, class: `status-row-${k.status}` },
      h('th', { scope: 'row', class: 'name' }, link(['k', k.key_id], k.name, { class: 'key-name' }), h('br'), h('span', { class: 'mono small muted' }, k.key_id), k.owner ? h('span', { class: 'small muted' }, ` · ${k.owner}`) : null),
      h('td', {}, h('code', { class: 'nowrap' }, k.hint), importBadge(k)),
      h('td', {}, k.environment),
      h('td', { class: 'scopes' }, k.scopes.length ? k.scopes.map((s) => h('span', { class: 'chip' }, s)) : h('span', { class: 'muted' }, 'none')),
      h('td', {}, statusBadge(k.status)),
      h('td', {}, timeEl(k.created_at)),
      h('td', { class: 'last-used' }, k.last_used_at ? [timeEl(k.last_used_at), k.last_used_ip ? h('span', { class: 'small muted' }, ` from ${k.last_used_ip}`) : null] : h('span', { class: 'muted' }, 'never')),
      h('td', { class: 'num' }, String(k.use_count)))));
    if (!shown.length) tbody.append(h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, keys.length ? 'No key matches.' : 'No keys yet. Create one.')));
  };
  search.addEventListener('input', () => { keysState.search = search.value; draw(); });
  status.addEventListener('change', () => { keysState.status = status.value; draw(); });
  draw();

  view.render(
    h('div', { class: 'title-row' },
      h('h1', {}, 'Workspace ', h('span', { class: 'mono', id: 'workspace-name' }, ws)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', id: 'create-key', onclick: () => createKeyDialog(ws, () => { keysState.status = 'all'; reload(); }) }, 'Create key'),
        link(['w', ws, 'policy'], 'Policy', { class: 'button' }),
        link(['w', ws, 'reports'], 'Compliance report', { class: 'button', id: 'open-reports' }),
        h('button', { type: 'button', id: 'refresh', onclick: reload }, 'Refresh'),
        h('button', { type: 'button', class: 'danger', id: 'revoke-all', onclick: () => revokeAllDialog(ws, activeCount, reload) }, 'Revoke all…'))),
    h('div', { class: 'filters' }, field('Search', search), field('Status', status)),
    count,
    h('div', { class: 'table-wrap' }, h('table', { id: 'keys-table' }, h('caption', { class: 'visually-hidden' }, `Keys of ${ws}`), h('thead', {}, headRow), tbody)));
}

// ---------------------------------------------------------------- policy

async function viewPolicy(ws) {
  const view = beginView(`Policy of ${ws}`);
  let policy;
  try { policy = await API.policy(ws); } catch (e) { view.render(h('h1', {}, `Policy of ${ws}`), h('p', { class: 'form-error', role: 'alert' }, e.describe ? e.describe() : String(e))); return; }
  const max = h('input', { type: 'number', min: 1, id: 'policy-max', value: policy.max_active_keys ?? '' });
  const requireExpiry = h('input', { type: 'checkbox', id: 'policy-require-expiry', checked: policy.require_expiry });
  const lifetime = h('input', { type: 'text', id: 'policy-lifetime', value: policy.max_lifetime ?? '', placeholder: '90d', autocomplete: 'off' });
  const prefix = h('input', { type: 'text', id: 'policy-prefix', value: policy.key_prefix ?? '', placeholder: 'kl', autocomplete: 'off', pattern: '[a-z][a-z0-9]{0,15}' });
  const onLeak = h('select', { id: 'policy-on-leak' },
    h('option', { value: 'notify', selected: policy.on_leak !== 'revoke' }, 'Notify (record it, send key.leaked)'),
    h('option', { value: 'revoke', selected: policy.on_leak === 'revoke' }, 'Revoke the key at once'));
  const limits = h('textarea', { id: 'policy-ratelimits', rows: 2, class: 'mono', placeholder: 'api=100/1m' });
  limits.value = rateLimitsText(policy.ratelimits);
  const error = dialogError();
  const form = h('form', { class: 'card', novalidate: true },
    h('h2', {}, 'Edit'),
    h('p', { class: 'muted' }, 'Saving replaces the whole policy (needs ledger:admin). A create or rotation that would break it is refused.'),
    field('Most active keys (empty: no limit)', max),
    h('div', { class: 'check' }, requireExpiry, h('label', { for: 'policy-require-expiry' }, 'Every key must expire')),
    field('Longest lifetime (empty: no limit)', lifetime, 'A duration such as 90d or 12h.'),
    field('Key prefix (empty: kl)', prefix),
    field('When one of its keys is reported leaked', onLeak, 'By GitHub secret scanning or a public report (docs/leaks.md).'),
    // Admin keys are never rate-limited (docs/credits.md): no default for `_ledger`.
    ws === '_ledger' ? null : field('Default rate limits (empty: none)', limits, `${RATE_LIMITS_HELP} Keys with limits of their own keep them.`),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'policy-save' }, 'Save policy'), link(['w', ws], 'Back to keys', { class: 'button' })));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    // The source allow-list settings are kept as they are (the CLI edits them).
    const body = { require_expiry: requireExpiry.checked, on_leak: onLeak.value, allowed_sources: policy.allowed_sources ?? [], require_allowed_sources: !!policy.require_allowed_sources };
    if (max.value) body.max_active_keys = Number(max.value);
    if (lifetime.value.trim()) body.max_lifetime = lifetime.value.trim();
    if (prefix.value.trim()) body.key_prefix = prefix.value.trim();
    setFormError(error, null);
    try {
      body.ratelimits = ws === '_ledger' ? [] : parseRateLimits(limits.value);
      await API.setPolicy(ws, body);
      announce(`Policy of ${ws} saved.`);
      viewPolicy(ws);
    } catch (e) { setFormError(error, e); }
  });
  view.render(
    h('h1', {}, 'Policy of ', h('span', { class: 'mono' }, ws)),
    section('Current policy', definitions([
      ['Most active keys', policy.max_active_keys ?? 'no limit'],
      ['Expiry required', policy.require_expiry ? 'yes' : 'no'],
      ['Longest lifetime', policy.max_lifetime ?? 'no limit'],
      ['Key prefix', policy.key_prefix ?? 'kl (default)'],
      ['Default allowed sources', list(policy.allowed_sources ?? [], 'none')],
      ['Allow-list required on live keys', policy.require_allowed_sources ? 'yes' : 'no'],
      ['On a leak report', h('span', { id: 'policy-on-leak-current' }, policy.on_leak === 'revoke' ? 'revoke the key' : 'notify')],
      ['Default rate limits', h('span', { id: 'policy-ratelimits-current' }, rateLimitsText(policy.ratelimits) || 'none')],
    ])),
    form);
}

// ---------------------------------------------------------------- key detail

function eventDetails(e) {
  const parts = [];
  if (e.kind === 'created') {
    parts.push(`${e.name ?? ''} · scopes ${list(e.scopes, 'none')} · resources ${list(e.resources, 'all')}`);
    if (e.rotated_from) parts.push(['rotated from ', link(['k', e.rotated_from], e.rotated_from, { class: 'mono' })]);
  }
  if (e.kind === 'rotated') {
    if (e.rotated_to) parts.push(['replaced by ', link(['k', e.rotated_to], e.rotated_to, { class: 'mono' })]);
    parts.push(e.valid_until ? ['old key valid until ', timeEl(e.valid_until, { abs: true })] : 'old key revoked at once');
  }
  if (e.kind === 'leak_reported') parts.push([`reported by ${e.reporter ?? 'someone'}`, e.url ? ` at ${e.url}` : '', e.source ? ` (${e.source})` : '']);
  if (e.reason) parts.push(`reason: ${e.reason}`);
  if (e.detail) parts.push(e.detail);
  if (e.changes) parts.push(`changes: ${JSON.stringify(e.changes)}`);
  if (e.policy) parts.push(`policy: ${JSON.stringify(e.policy)}`);
  return parts.map((p, i) => [i ? ' — ' : '', p]);
}

// Admin key id → name, for actors (only if this admin key may read `_ledger`).
let actorNames = null;
function loadActorNames() {
  if (!actorNames) {
    actorNames = API.keys('_ledger').then((answer) => new Map(answer.keys.map((k) => [k.key_id, k.name])), () => new Map());
  }
  return actorNames;
}
function actorEl(actor) {
  const el = h('span', { class: 'actor' }, h('span', { class: 'mono' }, actor));
  if (/^key_/.test(actor)) {
    loadActorNames().then((names) => {
      if (names.has(actor)) el.replaceChildren(names.get(actor), ' (', link(['k', actor], actor, { class: 'mono' }), ')');
    });
  }
  return el;
}

// A key reported leaked (docs/leaks.md): a banner above everything, with the latest report.
function leakBanner(key, leaks) {
  const last = leaks[leaks.length - 1];
  return h('div', { class: 'banner leak-banner', role: 'alert', id: 'leak-banner' },
    h('strong', {}, leaks.length > 1 ? `Reported leaked ${leaks.length} times` : 'Reported leaked'),
    ' — latest by ', last.reporter ?? 'someone', last.url ? [' at ', h('code', {}, last.url)] : '', ' on ', timeEl(last.at, { abs: true }), '. ',
    key.status === 'revoked' ? 'The key is revoked.' : 'The key is still valid: revoke or rotate it.');
}

function timeline(events) {
  if (!events.length) return h('p', { class: 'muted' }, 'No lifecycle events.');
  return h('ol', { class: 'timeline', id: 'timeline' }, events.map((e) => h('li', { class: `event kind-${e.kind}` },
    h('div', { class: 'when' }, timeEl(e.at, { abs: true })),
    h('div', {}, h('span', { class: `badge kind kind-${e.kind}` }, e.kind), ' by ', actorEl(e.actor), ' ', h('span', { class: 'small muted' }, `#${e.seq} · ${e.request_id}`)),
    h('div', { class: 'small' }, eventDetails(e)))));
}

function usesTable(events) {
  if (!events.length) return h('p', { class: 'muted' }, 'No uses recorded.');
  return table(['When', 'Outcome', 'Address', 'User agent', 'Request', 'Gateway request id'], events.map((e) => {
    const c = e.context || {};
    return h('tr', { class: e.kind === 'denied' ? 'denied' : '' },
      h('td', {}, timeEl(e.at)),
      h('td', {}, e.kind === 'used' ? h('span', { class: 'badge status-active' }, 'allowed') : h('span', { class: 'badge status-revoked' }, `denied: ${e.reason ?? ''}`)),
      h('td', { class: 'mono' }, c.ip ?? '—'),
      h('td', { class: 'ua' }, c.user_agent ?? '—'),
      h('td', { class: 'mono small' }, [c.method, c.path].filter(Boolean).join(' ') || '—'),
      h('td', { class: 'mono small' }, c.request_id ?? '—'));
  }), { className: 'uses', caption: 'Most recent first' });
}

// The most recent `n` usage events, without reading a long history from its start.
async function recentUses(id, n) {
  for (const days of [1, 30, null]) {
    const params = { kind: 'usage' };
    if (days) params.from = new Date(Date.now() - days * 86400000).toISOString();
    const { events } = await allEvents(id, params, 5000);
    if (events.length >= n || days === null) return events.slice(-n).reverse();
  }
  return [];
}

function keyActions(key, refresh) {
  const live = key.status !== 'revoked';
  return h('div', { class: 'actions' },
    live && key.status !== 'expired' ? h('button', { type: 'button', id: 'rotate', onclick: () => rotateDialog(key, refresh) }, 'Rotate…') : null,
    live && (key.status === 'active' || key.status === 'disabled') ? h('button', { type: 'button', id: 'toggle-disabled', onclick: () => disableDialog(key, refresh) }, key.status === 'disabled' ? 'Enable…' : 'Disable…') : null,
    // Admin keys are never metered nor rate-limited (docs/credits.md).
    live && key.workspace !== '_ledger' ? h('button', { type: 'button', id: 'edit-ratelimits', onclick: () => rateLimitsDialog(key, refresh) }, 'Rate limits…') : null,
    live && key.workspace !== '_ledger' ? h('button', { type: 'button', id: 'top-up', onclick: () => creditsDialog(key, refresh) }, key.credits ? 'Top up credits…' : 'Set credits…') : null,
    link(['k', key.key_id, 'report'], 'Compromise report', { class: 'button', id: 'open-report' }),
    live ? h('button', { type: 'button', class: 'danger', id: 'revoke', onclick: () => revokeDialog(key, refresh) }, 'Revoke…') : null);
}

async function viewKey(id) {
  const view = beginView('Key');
  let key;
  try { key = await API.key(id); } catch (e) { view.render(h('h1', {}, 'Key'), h('p', { class: 'form-error', role: 'alert' }, e.describe ? e.describe() : String(e))); return; }
  document.title = `${key.name} · keyledger console`;
  const refresh = () => viewKey(id);
  const lifecycle = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const uses = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const rendered = view.render(
    h('p', { class: 'crumbs' }, link(['w', key.workspace], `← ${key.workspace}`)),
    h('div', { class: 'title-row' }, h('h1', { id: 'key-title' }, key.name), statusBadge(key.status), importBadge(key)),
    keyActions(key, refresh),
    section('Key', definitions([
      ['Key id', h('code', {}, key.key_id)],
      ['Workspace', link(['w', key.workspace], key.workspace)],
      ['Hint', h('code', {}, key.hint)],
      ['Environment', key.environment],
      ['Scopes', list(key.scopes, 'none')],
      ['Resources', list(key.resources, 'all')],
      ['Allowed sources', [list(key.allowed_sources ?? [], 'any'), key.allowed_sources_from === 'policy' ? ' (workspace default)' : '']],
      ['Owner', key.owner ?? '—'],
      ['Metadata', h('code', { class: 'wrap' }, JSON.stringify(key.metadata))],
      ['Created', [timeEl(key.created_at, { abs: true }), ' by ', actorEl(key.created_by)]],
      ['Expires', key.expires_at ? timeEl(key.expires_at, { abs: true }) : 'never'],
      key.revoked_at && ['Revoked', [timeEl(key.revoked_at, { abs: true }), key.revoked_reason ? ` — ${key.revoked_reason}` : '']],
      key.disabled_reason && ['Disabled because', key.disabled_reason],
      key.rotated_from && ['Rotated from', link(['k', key.rotated_from], key.rotated_from, { class: 'mono' })],
      key.rotated_to && ['Rotated to', link(['k', key.rotated_to], key.rotated_to, { class: 'mono' })],
      ['Last used', key.last_used_at ? [timeEl(key.last_used_at, { abs: true }), key.last_used_ip ? ` from ${key.last_used_ip}` : ''] : 'never'],
      ['Uses', String(key.use_count)],
      key.credits && ['Credits', h('span', { id: 'credits' }, creditsText(key.credits))],
      key.ratelimits?.length && ['Rate limits', h('span', { id: 'ratelimits' }, rateLimitsText(key.ratelimits), key.ratelimits_from === 'policy' ? ' (workspace default)' : '')],
      key.imported && ['Imported', [key.external_id ? h('code', {}, key.external_id) : 'by its foreign hash', key.rehashed_at ? [' · re-hashed ', timeEl(key.rehashed_at, { abs: true })] : ' · not used yet']],
    ])),
    section('Lifecycle', lifecycle),
    section('Recent uses', uses));
  if (!rendered) return;
  allEvents(id, { kind: 'lifecycle' }, 1000).then(({ events }) => {
    lifecycle.replaceChildren(timeline(events));
    const leaks = events.filter((e) => e.kind === 'leak_reported');
    if (leaks.length && view.current) main.prepend(leakBanner(key, leaks));
  },
    (e) => lifecycle.replaceChildren(h('p', { class: 'muted' }, e.describe ? e.describe() : String(e))));
  recentUses(id, 50).then((events) => uses.replaceChildren(usesTable(events)),
    (e) => uses.replaceChildren(h('p', { class: 'muted' }, e.describe ? e.describe() : String(e))));
}

// ---------------------------------------------------------------- compromise report

const OLD_COLOURS = ['#1f5fbf', '#2a7f62', '#5a6472', '#6a4fc9', '#0f6f8f', '#7a6a3a', '#3d5a80'];
const NEW_COLOURS = ['#c81e1e', '#d9480f', '#a61e4d', '#e67700'];

// "YYYY-MM-DDTHH:MM:SS" in local time, for <input type=datetime-local step=1>.
function toLocalInput(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fromLocalInput(text) {
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

function usesChart(events, { start, end, since, newSources }) {
  const width = 820, height = 220, left = 44, right = 12, top = 14, bottom = 40;
  const t0 = Date.parse(start), t1 = Math.max(Date.parse(end), t0 + 1000);
  const bins = 48;
  const binMs = (t1 - t0) / bins;
  const totals = new Map();
  for (const e of events) {
    const ip = (e.context && e.context.ip) || 'unknown';
    totals.set(ip, (totals.get(ip) || 0) + 1);
  }
  // New sources first (they are the point), then the busiest others; the rest as "other".
  const ordered = [...totals.keys()].sort((a, b) => (newSources.has(b) - newSources.has(a)) || totals.get(b) - totals.get(a));
  const series = ordered.slice(0, 10);
  const other = ordered.length > series.length;
  let oldIndex = 0, newIndex = 0;
  const colour = new Map(series.map((ip) => [ip, newSources.has(ip) ? NEW_COLOURS[newIndex++ % NEW_COLOURS.length] : OLD_COLOURS[oldIndex++ % OLD_COLOURS.length]]));
  if (other) colour.set('other', '#9aa3ad');
  const counts = Array.from({ length: bins }, () => new Map());
  for (const e of events) {
    const t = Date.parse(e.at);
    if (t < t0 || t > t1) continue;
    const bin = Math.min(bins - 1, Math.floor((t - t0) / binMs));
    let ip = (e.context && e.context.ip) || 'unknown';
    if (!colour.has(ip)) ip = 'other';
    counts[bin].set(ip, (counts[bin].get(ip) || 0) + 1);
  }
  const peak = Math.max(1, ...counts.map((m) => [...m.values()].reduce((a, b) => a + b, 0)));
  const plotW = width - left - right, plotH = height - top - bottom;
  const barW = plotW / bins;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': 'chart-title chart-desc', class: 'chart', id: 'uses-chart' },
    svg('title', { id: 'chart-title' }, 'Uses over time by source address'),
    svg('desc', { id: 'chart-desc' }, `${plural(events.length, 'use')} from ${totals.size} ${totals.size === 1 ? 'address' : 'addresses'}; ${newSources.size} new since the report's start. The tables below hold the same data.`),
    svg('line', { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, stroke: '#5a6472' }),
    svg('line', { x1: left, y1: top, x2: left, y2: top + plotH, stroke: '#5a6472' }),
    svg('text', { x: left - 6, y: top + 10, 'text-anchor': 'end', class: 'axis' }, String(peak)),
    svg('text', { x: left - 6, y: top + plotH, 'text-anchor': 'end', class: 'axis' }, '0'),
    svg('text', { x: left, y: height - 8, class: 'axis' }, absolute(start)),
    svg('text', { x: left + plotW, y: height - 8, 'text-anchor': 'end', class: 'axis' }, absolute(end)));
  counts.forEach((m, i) => {
    let y = top + plotH;
    for (const ip of [...colour.keys()]) {
      const n = m.get(ip);
      if (!n) continue;
      const hgt = (n / peak) * plotH;
      y -= hgt;
      const from = new Date(t0 + i * binMs).toISOString();
      chart.append(svg('rect', { x: (left + i * barW + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, barW - 2).toFixed(1), height: hgt.toFixed(1), fill: colour.get(ip), class: newSources.has(ip) ? 'bar new-source' : 'bar', 'data-source': ip },
        svg('title', {}, `${ip}${newSources.has(ip) ? ' (new)' : ''}: ${plural(n, 'use')} from ${absolute(from)}`)));
    }
  });
  if (since) {
    const sx = x(Date.parse(since));
    if (sx >= left && sx <= left + plotW) {
      chart.append(
        svg('line', { x1: sx.toFixed(1), y1: top - 4, x2: sx.toFixed(1), y2: top + plotH, stroke: '#111', 'stroke-width': 1.5, 'stroke-dasharray': '5 4' }),
        svg('text', { x: (sx + 4).toFixed(1), y: top + 6, class: 'axis strong' }, 'since'));
    }
  }
  const legend = h('ul', { class: 'legend', id: 'chart-legend', 'aria-label': 'Chart legend' }, [...colour.entries()].map(([ip, fill]) => h('li', { class: newSources.has(ip) ? 'new' : '' },
    svg('svg', { width: 14, height: 14, 'aria-hidden': 'true' }, svg('rect', { width: 14, height: 14, fill })),
    ' ', h('span', { class: 'mono' }, ip), ` (${totals.get(ip) ?? ordered.slice(series.length).reduce((a, k) => a + totals.get(k), 0)})`,
    newSources.has(ip) ? [' ', h('span', { class: 'badge new-badge' }, 'new')] : null)));
  return h('figure', { class: 'chart-wrap' }, chart, legend);
}

function statsTable(rows, label, { showNew = true, id } = {}) {
  if (!rows.length) return h('p', { class: 'muted' }, `No ${label.toLowerCase()} in this window.`);
  const sorted = [...rows].sort((a, b) => (b.new_since - a.new_since) || b.count - a.count);
  return h('div', { class: 'table-wrap' }, h('table', { id },
    h('thead', {}, h('tr', {}, [label, 'First seen', 'Last seen', 'Uses', 'Allowed', 'Denied', showNew ? 'New since' : null].filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, sorted.map((s) => h('tr', { class: s.new_since && showNew ? 'new' : '', 'data-value': s.value },
      h('th', { scope: 'row', class: 'mono value' }, s.value),
      h('td', {}, timeEl(s.first_seen, { abs: true })),
      h('td', {}, timeEl(s.last_seen)),
      h('td', { class: 'num' }, String(s.count)),
      h('td', { class: 'num' }, String(s.allowed)),
      h('td', { class: 'num' }, String(s.denied)),
      showNew ? h('td', {}, s.new_since ? h('span', { class: 'badge new-badge' }, 'new since') : h('span', { class: 'muted' }, 'seen before')) : null)))));
}

async function viewReport(id, params) {
  const view = beginView('Compromise report');
  const since = params.get('since') || new Date(Date.now() - 86400000).toISOString();
  const until = params.get('until') || null;
  let report;
  try {
    report = await API.report(id, until ? { since, until } : { since });
  } catch (e) {
    view.render(h('h1', {}, 'Compromise report'), h('p', { class: 'form-error', role: 'alert' }, e.describe ? e.describe() : String(e)));
    return;
  }
  const key = report.key;
  document.title = `Compromise report: ${key.name} · keyledger console`;
  const end = report.window.until;
  const span = Math.max(Date.parse(end) - Date.parse(since), 3600000);
  const start = new Date(Math.max(Date.parse(key.created_at), Date.parse(since) - span)).toISOString();
  const newSources = new Set(report.sources.filter((s) => s.new_since).map((s) => s.value));

  const sinceInput = h('input', { type: 'datetime-local', step: 1, id: 'report-since', value: toLocalInput(since), required: true });
  const untilInput = h('input', { type: 'datetime-local', step: 1, id: 'report-until', value: until ? toLocalInput(until) : '' });
  const go = (s, u) => {
    const q = new URLSearchParams({ since: s });
    if (u) q.set('until', u);
    location.hash = `#/k/${enc(id)}/report?${q}`;
  };
  const form = h('form', { class: 'card', novalidate: true, id: 'report-form' },
    h('div', { class: 'row' },
      field('Suspected leak since (your local time)', sinceInput),
      field('Until (empty: now)', untilInput),
      h('div', { class: 'actions end' }, h('button', { type: 'submit', class: 'primary', id: 'run-report' }, 'Run report'))),
    h('div', { class: 'actions' }, h('span', { class: 'muted' }, 'Or: '),
      [['last hour', 3600000], ['last 24 hours', 86400000], ['last 7 days', 7 * 86400000]].map(([label, ms]) =>
        h('button', { type: 'button', class: 'link', onclick: () => go(new Date(Date.now() - ms).toISOString()) }, label)),
      h('button', { type: 'button', class: 'link', onclick: () => go(key.created_at) }, 'whole life')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const s = fromLocalInput(sinceInput.value);
    if (!s) { sinceInput.focus(); return; }
    go(s, untilInput.value ? fromLocalInput(untilInput.value) : null);
  });

  const after = report.after_revocation;
  const chartBox = h('div', {}, h('p', { class: 'muted' }, 'Loading uses…'));
  const refresh = () => viewReport(id, params);
  const rendered = view.render(
    h('p', { class: 'crumbs' }, link(['w', key.workspace], `← ${key.workspace}`), ' / ', link(['k', key.key_id], key.name)),
    h('div', { class: 'title-row' },
      h('h1', {}, 'Compromise report: ', h('span', { id: 'report-key-name' }, key.name)), statusBadge(key.status),
      key.status !== 'revoked' ? h('button', { type: 'button', class: 'danger', id: 'report-revoke', onclick: () => revokeDialog(key, refresh) }, 'Revoke this key…') : null),
    form,
    h('div', { class: 'summary', id: 'report-summary' },
      [['Allowed uses', report.uses.allowed], ['Denied', report.uses.denied], ['Sources', report.sources.length],
        ['New sources', newSources.size], ['After revocation', after.count]].map(([label, n]) =>
        h('div', { class: `stat${label === 'New sources' && n ? ' alarm' : ''}${label === 'After revocation' && n ? ' alarm' : ''}` }, h('span', { class: 'n' }, String(n)), h('span', { class: 'label' }, label)))),
    h('p', { class: 'muted' }, 'Window: ', timeEl(since, { abs: true }), ' → ', timeEl(end, { abs: true }),
      report.uses.first ? [' · first use ', timeEl(report.uses.first), ', last ', timeEl(report.uses.last)] : ' · no use in the window'),
    section('Uses over time, by source', chartBox),
    section('Source addresses', statsTable(report.sources, 'Address', { id: 'sources-table' })),
    section('User agents', statsTable(report.user_agents, 'User agent', { id: 'agents-table' })),
    section('Paths', report.paths.length
      ? table(['Path', 'Uses'], report.paths.map((p) => h('tr', {}, h('th', { scope: 'row', class: 'mono' }, p.value), h('td', { class: 'num' }, String(p.count)))))
      : h('p', { class: 'muted' }, 'No paths recorded.')),
    section('Attempts after revocation or expiry', h('div', { id: 'after-revocation' },
      after.since
        ? [h('p', {}, `${plural(after.count, 'attempt')} since `, timeEl(after.since, { abs: true }),
          after.count ? [' (first ', timeEl(after.first), ', last ', timeEl(after.last), ')'] : '', '.'),
        statsTable(after.sources, 'Address', { showNew: false })]
        : h('p', { class: 'muted' }, 'The key is neither revoked nor expired.'))),
    section('Lifecycle', timeline(report.lifecycle)));
  if (!rendered) return;
  try {
    const { events, truncated } = await allEvents(id, { kind: 'usage', from: start, to: end }, 10000);
    chartBox.replaceChildren(usesChart(events, { start, end, since, newSources }),
      ...(truncated ? [h('p', { class: 'muted' }, 'The chart shows the first 10 000 uses of the period.')] : []));
  } catch (e) {
    chartBox.replaceChildren(h('p', { class: 'muted' }, e.describe ? e.describe() : String(e)));
  }
}

// ---------------------------------------------------------------- integrity

function copyButton(getText, label) {
  const note = h('span', { class: 'muted small', role: 'status' });
  return [h('button', { type: 'button', class: 'link', onclick: async () => {
    try { await navigator.clipboard.writeText(getText()); note.textContent = ' copied'; } catch { note.textContent = ' copy refused'; }
  } }, label), note];
}

function commands(lines) { return h('pre', { class: 'commands' }, h('code', {}, lines.join('\n'))); }

// The red banner of a fork alarm (docs/operations.md, "Witnesses"): a witness has seen
// another view of this log. Text only, built with h(), never HTML from the server.
function forkAlarmBanner(alarm) {
  if (!alarm) return null;
  const claim = alarm.kind === 'witness_ahead'
    ? `says it cosigned size ${alarm.witness_size}, larger than this log's ${alarm.log_size}`
    : `returned a cosignature that does not match this log's checkpoint of size ${alarm.log_size}`;
  return h('div', { class: 'alert fork-alarm', role: 'alert', id: 'fork-alarm' },
    h('strong', {}, 'Fork alarm: '), `witness ${alarm.witness} ${claim} (${alarm.detected_at}). Someone may have shown it another view of this log; see docs/operations.md, "Witnesses".`);
}

async function viewIntegrity() {
  const view = beginView('Integrity');
  let checkpoint = null, publicKey = null, checkpointError = null;
  try {
    [checkpoint, publicKey] = await Promise.all([
      API.checkpoint().catch((e) => { if (e.status === 404) { checkpointError = e; return null; } throw e; }),
      API.publicKey(),
    ]);
  } catch (e) {
    view.render(h('h1', {}, 'Integrity'), h('p', { class: 'form-error', role: 'alert' }, e.describe ? e.describe() : String(e)));
    return;
  }
  const origin = location.origin;
  const pk = publicKey.public_key;
  const exportWs = h('input', { type: 'text', id: 'export-workspace', autocomplete: 'off', placeholder: 'empty: every workspace', list: 'export-ws-list' });
  const exportNote = h('p', { class: 'muted', role: 'status' });
  const exportForm = h('form', { class: 'row', novalidate: true },
    field('Workspace', exportWs), h('datalist', { id: 'export-ws-list' }, recentWorkspaces().map((w) => h('option', { value: w }))),
    h('div', { class: 'actions end' }, h('button', { type: 'submit' }, 'Download signed export (JSONL)')));
  exportForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const ws = exportWs.value.trim();
    exportNote.textContent = 'Exporting…';
    try {
      const response = await api('GET', `/v1/export${ws ? `?workspace=${enc(ws)}` : ''}`, undefined, { raw: true });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: `keyledger-export${ws ? `-${ws}` : ''}.jsonl` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      exportNote.textContent = `Export downloaded (${blob.size} bytes). Verify it with the command above.`;
    } catch (e) {
      exportNote.textContent = e.describe ? e.describe() : String(e);
    }
  });
  view.render(
    h('h1', {}, 'Integrity'),
    forkAlarmBanner(checkpoint && checkpoint.fork_alarm),
    h('p', {}, 'keyledger keeps its history as an append-only log hashed into a Merkle tree (RFC 9162 with BLAKE3). Checkpoints of the tree are signed with the log\'s Ed25519 key, so anyone holding the public key can check an export without trusting this server.'),
    section('Current checkpoint', checkpoint
      ? [definitions([
        ['Log size', h('span', { id: 'log-size' }, `${checkpoint.size} events`)],
        ['Root hash', h('code', { class: 'wrap', id: 'root-hash' }, checkpoint.root_hash)],
        ['Signed', timeEl(checkpoint.timestamp, { abs: true })],
        ['Witness cosignatures', h('span', { id: 'cosignatures' }, (checkpoint.witnesses ?? []).length
          ? `${checkpoint.cosignatures} (${checkpoint.witnesses.join(', ')})${checkpoint.quorum_met ? '' : ' — quorum not met'}`
          : `${checkpoint.cosignatures ?? 0}`)],
      ]), h('h3', {}, 'Signed note'), h('pre', { class: 'note', id: 'checkpoint-note' }, checkpoint.note)]
      : h('p', { class: 'muted' }, checkpointError ? checkpointError.message : 'No checkpoint yet.')),
    section('Log public key', definitions([
      ['Algorithm', publicKey.algorithm],
      ['Verifier key', [h('code', { class: 'wrap', id: 'public-key' }, pk), ' ', copyButton(() => pk, 'Copy')]],
      ['Bare key (base64)', h('code', { class: 'wrap' }, publicKey.public_key_base64 ?? '—')],
      ['Origin', publicKey.origin ?? '—'],
    ]), h('p', { class: 'muted' }, 'Compare it with the log_public_key that keyledger init printed, obtained out of band: a server cannot vouch for its own key.')),
    section('Verify an export',
      h('p', {}, '1. Export the events (needs ledger:export; a workspace-limited key must name its workspace):'),
      commands([
        `export KEYLEDGER_URL=${origin}`,
        `curl -sf "$KEYLEDGER_URL/v1/export?workspace=WORKSPACE" \\`,
        '  -H "Authorization: Bearer $KEYLEDGER_ADMIN_KEY" -o export.jsonl',
      ]),
      exportForm, exportNote,
      h('p', {}, '2. Verify it offline, anywhere, with the public key above (exit status 0 means every line is in the signed tree):'),
      commands([`keyledger export verify export.jsonl --public-key '${pk}'`]),
      h('p', {}, '3. On the server, with keyledger stopped, re-check the whole log, every checkpoint signature and the projections:'),
      commands(['keyledger log verify --data-dir ./keyledger-data']),
      h('p', { class: 'muted' }, 'The export format is specified in docs/export-format.md, precisely enough to write an independent verifier.')));
}

// ---------------------------------------------------------------- compliance reports

// The first day of the current calendar quarter and tomorrow, as YYYY-MM-DD (UTC).
function quarterToDate() {
  const now = new Date();
  const start = new Date(Date.UTC(now.getUTCFullYear(), Math.floor(now.getUTCMonth() / 3) * 3, 1));
  const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
  return [start.toISOString().slice(0, 10), end.toISOString().slice(0, 10)];
}

function complianceQuery(ws, from, to, unusedDays, format) {
  const q = new URLSearchParams({ workspace: ws, from, to, unused_days: unusedDays, format });
  return `/v1/reports/compliance?${q}`;
}

// Downloads a report through the admin API (the key never goes into a URL) as a file.
async function downloadCompliance(ws, from, to, unusedDays, format) {
  const response = await api('GET', complianceQuery(ws, from, to, unusedDays, format), undefined, { raw: true });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: `keyledger-compliance-${ws}-${from}-${to}.${format}`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function complianceSummary(report) {
  const f = report.figures;
  const live = f.inventory.filter((k) => k.status === 'active' || k.status === 'disabled').length;
  const card = (n, label) => h('div', { class: 'stat' }, h('span', { class: 'n' }, String(n)), h('span', { class: 'label' }, label));
  return h('div', { id: 'compliance-summary' },
    h('div', { class: 'summary' },
      card(f.inventory.length, 'keys in the inventory'), card(live, 'live at the end'),
      card(Object.values(f.lifecycle.counts).reduce((a, b) => a + b, 0), 'lifecycle events'),
      card(f.exceptions.length, 'exceptions'), card(f.usage.used, 'verifications'), card(f.usage.denied, 'denials'),
      card(f.break_glass.count, 'break-glass recoveries')),
    table(['Exception', 'Keys'], Object.entries(f.exception_counts).map(([kind, n]) => h('tr', {}, h('th', { scope: 'row' }, kind.replaceAll('_', ' ')), h('td', { class: 'num' }, String(n)))), { caption: 'Exceptions by kind' }),
    h('p', { class: 'muted small' }, `Computed from the first ${report.checkpoint.size} events of the log (root ${report.checkpoint.root_hash.slice(0, 16)}…) and signed with the log's key.`));
}

async function viewComplianceReports(ws) {
  const view = beginView(`Compliance report of ${ws}`);
  if (!WORKSPACE_RE.test(ws)) { view.render(h('h1', {}, 'No such workspace'), h('p', {}, 'That is not a workspace id.')); return; }
  const [defaultFrom, defaultTo] = quarterToDate();
  const from = h('input', { type: 'date', id: 'report-from', value: defaultFrom, required: true });
  const to = h('input', { type: 'date', id: 'report-to', value: defaultTo, required: true });
  const unused = h('input', { type: 'number', id: 'report-unused', min: 1, max: 3650, value: 90, required: true });
  const result = h('div', { id: 'compliance-result', 'aria-live': 'polite' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const run = async (action) => {
    error.hidden = true;
    try { await action(); } catch (e) { error.textContent = e.describe ? e.describe() : String(e); error.hidden = false; }
  };
  const show = () => run(async () => {
    result.replaceChildren(h('p', { class: 'muted' }, 'Computing…'));
    const report = await api('GET', complianceQuery(ws, from.value, to.value, unused.value, 'json'));
    result.replaceChildren(complianceSummary(report));
  });
  view.render(
    h('div', { class: 'title-row' },
      h('h1', {}, 'Compliance report of ', h('span', { class: 'mono', id: 'workspace-name' }, ws)),
      h('div', { class: 'actions' }, link(['w', ws], 'Keys', { class: 'button' }))),
    h('p', {}, 'Inventory, lifecycle with actors and request ids, exceptions and usage for a period, signed with the log’s key. ',
      'Download the HTML to read or print it; ', h('code', {}, 'keyledger report verify'), ' checks it against the log (docs/compliance.md).'),
    h('form', { class: 'filters', id: 'report-form', onsubmit: (event) => { event.preventDefault(); show(); } },
      field('From (UTC, inclusive)', from), field('To (UTC, exclusive)', to), field('Unused after (days)', unused),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary', id: 'report-show' }, 'Show summary'),
        h('button', { type: 'button', id: 'report-download-html', onclick: () => run(() => downloadCompliance(ws, from.value, to.value, unused.value, 'html')) }, 'Download HTML'),
        h('button', { type: 'button', id: 'report-download-json', onclick: () => run(() => downloadCompliance(ws, from.value, to.value, unused.value, 'json')) }, 'Download JSON'))),
    error,
    result);
  show();
}

// ---------------------------------------------------------------- router

const ROUTES = [
  [/^\/signin$/, () => viewSignIn()],
  [/^\/workspaces$/, () => viewWorkspaces()],
  [/^\/w\/([^/]+)$/, (m) => viewKeys(m[1])],
  [/^\/w\/([^/]+)\/policy$/, (m) => viewPolicy(m[1])],
  [/^\/w\/([^/]+)\/reports$/, (m) => viewComplianceReports(m[1])],
  [/^\/k\/([^/]+)$/, (m) => viewKey(m[1])],
  [/^\/k\/([^/]+)\/report$/, (m, params) => viewReport(m[1], params)],
  [/^\/integrity$/, () => viewIntegrity()],
];

function route() {
  const raw = location.hash.replace(/^#/, '') || '/workspaces';
  const [path, query] = raw.split('?');
  const params = new URLSearchParams(query || '');
  closeDialog();
  showError(null);
  $('status').textContent = '';
  if (!adminKey() && path !== '/signin') {
    pendingRoute = `#${raw}`;
    location.replace('#/signin');
    return;
  }
  if (adminKey() && path === '/signin') { location.replace('#/workspaces'); return; }
  updateChrome();
  for (const [re, view] of ROUTES) {
    const m = path.match(re);
    if (m) {
      let decoded;
      try { decoded = m.map((part, i) => (i ? decodeURIComponent(part) : part)); } catch { break; }
      Promise.resolve(view(decoded, params)).catch((e) => showError(e));
      main.focus({ preventScroll: true });
      for (const a of document.querySelectorAll('#nav a')) {
        if (a.getAttribute('href') === `#${path}` || (path.startsWith('/w') || path.startsWith('/k')) && a.getAttribute('href') === '#/workspaces') a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
      }
      return;
    }
  }
  const view = beginView('Not found');
  view.render(h('h1', {}, 'Not found'), h('p', {}, link(['workspaces'], 'Go to workspaces')));
}

$('signout').addEventListener('click', () => signOut(null));
document.querySelector('.skip').addEventListener('click', (event) => { event.preventDefault(); main.focus(); });
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (event) => showError(event.reason));
route();
