// The portico admin console: polls the admin listener's JSON (same origin,
// the browser's basic credentials) and renders it. No framework, no inline
// code (the Content-Security-Policy allows scripts from this origin only).
'use strict';

const POLL_MS = 2000;
let prevStats = null;
let lastState = null;
const health = new Map(); // upstream target -> what its last exchanges said

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? '' : String(k)));
  return e;
}

function fill(selector, rows, empty) {
  const body = document.querySelector(selector + ' tbody');
  const cols = document.querySelectorAll(selector + ' thead th').length;
  body.replaceChildren();
  if (!rows.length) body.append(el('tr', {}, el('td', { colspan: cols, class: 'muted' }, empty || 'none')));
  for (const r of rows) {
    body.append(el('tr', {}, ...r.map((c) => (c instanceof Node ? el('td', {}, c)
      : el('td', typeof c === 'number' ? { class: 'n' } : {}, c)))));
  }
}

function badge(text, kind) { return el('span', { class: 'badge ' + kind }, text); }
function time(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–'; }
function ms(us) { return us == null ? '–' : (us < 1000 ? (us / 1000).toFixed(2) : (us / 1000).toFixed(1)) + ' ms'; }

async function getJSON(path) {
  const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}

// ---- traffic: rates and quantiles from the difference of two stats ----

// The q-quantile (0..1) of a bucket histogram, interpolated within its bucket.
function quantile(buckets, bounds, q) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (!total) return null;
  let rank = q * total, seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    if (seen + buckets[i] >= rank && buckets[i] > 0) {
      const lo = i ? bounds[i - 1] : 0, hi = bounds[i];
      return lo + (hi - lo) * ((rank - seen) / buckets[i]);
    }
    seen += buckets[i];
  }
  return bounds[bounds.length - 1]; // past the last bound
}

function group(requests, key) {
  const out = new Map();
  for (const s of requests) {
    const k = s[key] || '(none)';
    const g = out.get(k) || { count: 0, errors: 0, buckets: new Array(s.buckets.length).fill(0) };
    g.count += s.count;
    if (s.status >= 500) g.errors += s.count;
    s.buckets.forEach((b, i) => { g.buckets[i] += b; });
    out.set(k, g);
  }
  return out;
}

function trafficRows(now, prev, key, dt, bounds) {
  const cur = group(now.requests, key), old = prev ? group(prev.requests, key) : new Map();
  const rows = [];
  for (const [k, g] of [...cur.entries()].sort()) {
    const o = old.get(k);
    const d = o ? g.buckets.map((b, i) => b - o.buckets[i]) : null;
    const window = d && d.some((x) => x > 0) ? d : g.buckets; // the last poll's, else all
    const rate = o && dt > 0 ? ((g.count - o.count) / dt).toFixed(2) : '–';
    rows.push([k, rate, g.count, g.errors, g.count ? (100 * g.errors / g.count).toFixed(1) + ' %' : '–',
      ms(quantile(window, bounds, 0.5)), ms(quantile(window, bounds, 0.99))]);
  }
  return rows;
}

function renderStats(now) {
  const dt = prevStats ? (now.time_ms - prevStats.time_ms) / 1000 : 0;
  fill('#traffic-channels', trafficRows(now, prevStats, 'channel', dt, now.bounds_us), 'no requests yet');
  fill('#traffic-services', trafficRows(now, prevStats, 'service', dt, now.bounds_us), 'no requests yet');
  document.getElementById('gauges').textContent =
    `${now.in_flight} requests in flight · ${now.connections_open} client connections open`;
  document.getElementById('ws-open').textContent = now.websockets_open;
  document.getElementById('ws-slow').textContent = now.ws_slow_consumers;

  // upstream targets: configured ones with the results of their exchanges
  const results = new Map();
  for (const t of now.targets) {
    const k = t.upstream + '\u0000' + t.target;
    const r = results.get(k) || { ok: 0, failed: 0 };
    if (t.ok) r.ok += t.count; else r.failed += t.count;
    results.set(k, r);
  }
  const before = new Map();
  for (const t of (prevStats ? prevStats.targets : [])) {
    const k = t.upstream + '\u0000' + t.target;
    const r = before.get(k) || { ok: 0, failed: 0 };
    if (t.ok) r.ok += t.count; else r.failed += t.count;
    before.set(k, r);
  }
  const rows = [];
  for (const u of (lastState ? lastState.upstreams : [])) {
    for (const target of u.targets) {
      const k = u.name + '\u0000' + target;
      const r = results.get(k) || { ok: 0, failed: 0 }, b = before.get(k) || { ok: 0, failed: 0 };
      const dOk = r.ok - b.ok, dFail = r.failed - b.failed;
      // the exchanges since the last poll decide; none: the last verdict stands
      if (dFail > 0 && dOk === 0) health.set(k, ['failing', 'bad']);
      else if (dFail > 0) health.set(k, ['some failures', 'warn']);
      else if (dOk > 0) health.set(k, ['ok', 'good']);
      const h = health.get(k) || ['no traffic', 'idle'];
      rows.push([u.name, target, badge(h[0], h[1]), r.ok, r.failed]);
    }
  }
  fill('#upstreams', rows, 'no upstreams configured');

  const live = new Map(now.amqp.map((a) => [a.kind + '\u0000' + a.name, a]));
  fill('#amqp', (lastState ? lastState.amqp : []).map((c) => {
    const a = live.get(c.kind + '\u0000' + c.name) || {};
    return [c.kind, c.name, c.broker + (c.queue ? ' · queue ' + c.queue : ''),
      a.up == null ? badge('not started', 'idle') : badge(String(a.up), a.up > 0 ? 'good' : 'bad'),
      a.published || 0, a.confirmed || 0, a.delivered || 0, a.failed || 0, a.reconnects || 0];
  }), 'no AMQP connections configured');
  prevStats = now;
}

function renderState(s) {
  lastState = s;
  document.getElementById('summary').textContent =
    `${s.version} · generation ${s.generation} · ${s.workers} workers · listening on ${s.listen}` +
    (s.tls_listen ? ` and ${s.tls_listen} (TLS)` : '') + ` · ${s.config}`;
  fill('#channels', s.channels.map((c) => [c.name, c.type, c.path || '–', c.methods.join(' ') || '–',
    [c.service].concat(c.services).filter((x, i, a) => x && a.indexOf(x) === i).join(', ') || '–',
    c.security ? `${c.security.name} (${c.security.kind})` : badge('open', 'warn'),
    c.rate_limit ? `${c.rate_limit.rate}/s, burst ${c.rate_limit.burst}${c.rate_limit.per_user ? ', per user' : ''}` : 'none']));
  fill('#services', s.services.map((f) => [f.service || badge('none', 'warn'), f.file, f.hash || '–',
    time(f.loaded_ms), f.error ? el('span', { class: 'err' }, f.error) : '–']));
  fill('#websockets', s.channels.filter((c) => c.type === 'websocket').map((c) =>
    [c.name, c.path, [c.service].concat(c.services).filter((x, i, a) => x && a.indexOf(x) === i).join(', ')]),
  'no WebSocket channels');
  fill('#reloads', s.reloads.map((r) => [time(r.time_ms), r.source, r.what || 'config',
    r.accepted ? badge('accepted', 'good') : badge('refused', 'bad'), r.generation,
    r.error ? el('span', { class: 'err' }, r.error) : '–']), 'no reload since the start');
}

function renderScheduler(j) {
  fill('#scheduler', j.jobs.map((x) => [x.name, x.service, x.schedule,
    !x.enabled ? badge('disabled', 'idle') : x.running ? badge('running', 'warn')
      : x.last_run ? badge(x.last_run.result, x.last_run.result === 'ok' ? 'good' : 'bad')
        : badge('next ' + (x.next_run || '–'), 'idle')]), 'no scheduled jobs');
}

async function poll() {
  try {
    const [state, stats, sched] = await Promise.all([
      getJSON('/console/api/state'), getJSON('/console/api/stats'), getJSON('/scheduler')]);
    renderState(state);
    renderStats(stats);
    renderScheduler(sched);
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    document.getElementById('updated').textContent = 'cannot reach the admin listener: ' + e.message;
  }
}

async function reload() {
  const out = document.getElementById('reload-result');
  out.textContent = 'reloading…';
  try {
    const r = await fetch('/reload', { method: 'POST', credentials: 'same-origin', headers: { 'X-Portico-Console': '1' } });
    const j = await r.json();
    out.replaceChildren(j.accepted ? badge('accepted: generation ' + j.generation, 'good')
      : badge('refused: ' + (j.error && j.error.message ? j.error.message : j.error), 'bad'));
  } catch (e) {
    out.textContent = 'failed: ' + e.message;
  }
  poll();
}

// ---- API explorer: a small renderer of the OpenAPI 3.1 document ----

function schemaText(s, doc, depth, hops = 0) {
  if (!s) return 'any';
  if (depth > 6) return '…';
  if (s.$ref) {
    const name = s.$ref.replace(/^#\/components\/schemas\//, '');
    const target = doc.components && doc.components.schemas && doc.components.schemas[name];
    return target && hops < 8 ? schemaText(target, doc, depth, hops + 1) : name; // a cycle stops at its name
  }
  const pad = '  '.repeat(depth);
  let t = Array.isArray(s.type) ? s.type.join(' | ') : (s.type || (s.oneOf || s.anyOf ? 'one of' : 'any'));
  const extra = [];
  for (const k of ['format', 'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems']) {
    if (s[k] != null) extra.push(`${k} ${s[k]}`);
  }
  if (s.enum) extra.push('one of ' + s.enum.map((x) => JSON.stringify(x)).join(', '));
  if (extra.length) t += ' (' + extra.join(', ') + ')';
  if (s.type === 'object' || s.properties) {
    const req = new Set(s.required || []);
    const lines = Object.entries(s.properties || {}).map(([k, v]) =>
      `${pad}  ${k}${req.has(k) ? '' : '?'}: ${schemaText(v, doc, depth + 1)}`);
    return lines.length ? `{\n${lines.join('\n')}\n${pad}}` : t;
  }
  if (s.items) return `array of ${schemaText(s.items, doc, depth)}`;
  if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map((x) => schemaText(x, doc, depth)).join(' | ');
  return t;
}

function bodySchema(content) {
  if (!content) return null;
  const c = content['application/json'] || Object.values(content)[0];
  return c ? c.schema : null;
}

function renderExplorer(doc) {
  const status = document.getElementById('explorer-status');
  const root = document.getElementById('explorer-paths');
  root.replaceChildren();
  status.textContent = `${doc.info ? doc.info.title + ' ' + (doc.info.version || '') : ''} · OpenAPI ${doc.openapi} · ` +
    `${Object.keys(doc.paths || {}).length} paths`;
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!['get', 'put', 'post', 'delete', 'patch', 'head', 'options'].includes(method)) continue;
      const d = el('details', { class: 'op' });
      const sec = (op.security || doc.security || []).map((x) => Object.keys(x).join('+')).filter(Boolean);
      d.append(el('summary', {}, el('span', { class: 'method ' + method }, method.toUpperCase()), ' ',
        el('code', {}, path), ' ', el('span', { class: 'muted' }, op.summary || op.operationId || ''),
        sec.length ? el('span', { class: 'badge idle' }, sec.join(', ')) : ''));
      if (op.description) d.append(el('p', {}, op.description));
      const params = (op.parameters || []).concat(item.parameters || []);
      if (params.length) {
        d.append(el('h4', {}, 'Parameters'), el('pre', {}, params.map((p) =>
          `${p.name} (${p.in}${p.required ? ', required' : ''}): ${schemaText(p.schema, doc, 0)}`).join('\n')));
      }
      const rb = op.requestBody && bodySchema(op.requestBody.content);
      if (rb) d.append(el('h4', {}, 'Request body'), el('pre', {}, schemaText(rb, doc, 0)));
      for (const [code, resp] of Object.entries(op.responses || {})) {
        const rs = resp.content ? bodySchema(resp.content) : null;
        d.append(el('h4', {}, `Response ${code}`, el('span', { class: 'muted' }, ' ' + (resp.description || ''))));
        if (rs) d.append(el('pre', {}, schemaText(rs, doc, 0)));
      }
      const use = el('button', { type: 'button' }, 'Try it');
      use.addEventListener('click', () => {
        document.getElementById('try-method').value = method.toUpperCase();
        document.getElementById('try-path').value = path;
        document.getElementById('try-body').value = rb ? '{}' : '';
        document.getElementById('try-path').focus();
      });
      d.append(use);
      root.append(d);
    }
  }
}

async function loadExplorer() {
  const status = document.getElementById('explorer-status');
  try {
    const r = await fetch('/openapi.json', { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 404) {
      status.textContent = 'no API description (this portico serves no /openapi.json)';
      document.getElementById('explorer-paths').replaceChildren();
      return;
    }
    if (!r.ok) throw new Error('/openapi.json: ' + r.status);
    renderExplorer(await r.json());
  } catch (e) {
    status.textContent = 'cannot load the API description: ' + e.message;
  }
}

async function sendTry(ev) {
  ev.preventDefault();
  const out = document.getElementById('try-result');
  const headers = {};
  for (const line of document.getElementById('try-headers').value.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const req = {
    method: document.getElementById('try-method').value,
    path: document.getElementById('try-path').value,
    headers,
    body: document.getElementById('try-body').value,
  };
  out.textContent = 'sending…';
  try {
    const r = await fetch('/console/api/try', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'X-Portico-Console': '1', 'Content-Type': 'application/json' }, body: JSON.stringify(req),
    });
    const j = await r.json();
    if (!r.ok) { out.textContent = 'refused: ' + (j.error ? j.error.message : r.status); return; }
    let text = j.body;
    if (/json/.test(j.headers['content-type'] || '') && !j.truncated) {
      try { text = JSON.stringify(JSON.parse(j.body), null, 2); } catch (e) { /* shown as it came */ }
    }
    out.textContent = `HTTP ${j.status}\n` + Object.entries(j.headers).map(([k, v]) => `${k}: ${v}`).join('\n') +
      '\n\n' + text + (j.truncated ? '\n… (truncated)' : '');
    out.dataset.status = String(j.status);
  } catch (e) {
    out.textContent = 'failed: ' + e.message;
  }
}

function route() {
  const explorer = location.hash === '#explorer';
  document.getElementById('overview').hidden = explorer;
  document.getElementById('explorer').hidden = !explorer;
  document.getElementById('tab-overview').classList.toggle('active', !explorer);
  document.getElementById('tab-explorer').classList.toggle('active', explorer);
  if (explorer) loadExplorer();
}

document.getElementById('reload').addEventListener('click', reload);
document.getElementById('try-form').addEventListener('submit', sendTry);
window.addEventListener('hashchange', route);
route();
poll();
setInterval(poll, POLL_MS);
