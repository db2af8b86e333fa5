// Drives the admin console in headless Chromium (Debian's chromium) over the
// DevTools protocol, with the ws package of ../ws (npm ci there):
//   node drive.js <console url> <screenshot dir> [user:password]
// Loads the page at a laptop's size, waits for two polls, reads each section's
// text, saves a screenshot, clicks "Reload the config" and waits for the new
// entry, opens the API explorer and sends a request from its form (PT_TRY:
// JSON {method, path, headers, body}), and renders PT_OPENAPI (a document) with
// the explorer's renderer. Prints one JSON object.
// Without credentials it only loads the page and reports what it shows.
'use strict';
const { spawn } = require('child_process');
const http = require('http');
const os = require('os');
const fs = require('fs');
const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'ws', 'node_modules', 'ws'));

const [url, shotDir, auth] = process.argv.slice(2);
const tryReq = process.env.PT_TRY ? JSON.parse(process.env.PT_TRY) : null;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'portico-console-'));
const chrome = spawn('chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank',
], { stdio: 'ignore' });

function finish(code, out) {
  console.log(JSON.stringify(out));
  chrome.once('exit', () => {
    try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* left in tmp */ }
    process.exit(code);
  });
  chrome.kill('SIGKILL');
}
setTimeout(() => finish(1, { error: 'timeout' }), 80000);

// Chromium picks a free port and writes it to DevToolsActivePort in the profile.
function targets(cb, tries = 0) {
  const retry = () => {
    if (tries > 400) finish(1, { error: 'no DevTools endpoint' });
    else setTimeout(() => targets(cb, tries + 1), 100);
  };
  let port;
  try {
    port = Number(fs.readFileSync(path.join(profile, 'DevToolsActivePort'), 'utf8').split('\n')[0]);
  } catch (e) { /* not yet */ }
  if (!port) { retry(); return; }
  http.get(`http://127.0.0.1:${port}/json/list`, (res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => {
      const list = JSON.parse(body);
      if (list.some((t) => t.type === 'page')) cb(list); else retry();
    });
  }).on('error', retry);
}

targets(async (list) => {
  const page = list.find((t) => t.type === 'page');
  const cdp = new WebSocket(page.webSocketDebuggerUrl);
  let seq = 0;
  const pending = new Map();
  const events = [];
  cdp.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    } else if (msg.method) {
      events.push(msg);
    }
  });
  const send = (method, params) => new Promise((resolve) => {
    const id = ++seq;
    pending.set(id, resolve);
    cdp.send(JSON.stringify({ id, method, params: params || {} }));
  });
  const evaluate = async (expression) => {
    const r = await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    return r.result && r.result.result ? r.result.result.value : undefined;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (expression, what) => {
    for (let i = 0; i < 100; i++) {
      if (await evaluate(expression)) return;
      await sleep(100);
    }
    throw new Error('waited in vain for ' + what);
  };
  const sections = () => evaluate(`(() => {
    const out = {};
    for (const s of document.querySelectorAll('main section[id], main div section[id]')) out[s.id] = s.innerText;
    out.summary = document.getElementById('summary').innerText;
    return out;
  })()`);

  cdp.on('open', async () => {
    try {
      await send('Network.enable');
      await send('Page.enable');
      await send('Runtime.enable');
      await send('Log.enable');
      if (auth) {
        await send('Network.setExtraHTTPHeaders',
          { headers: { Authorization: 'Basic ' + Buffer.from(auth).toString('base64') } });
      }
      await send('Emulation.setDeviceMetricsOverride',
        { width: 1440, height: 900, deviceScaleFactor: 1, mobile: false });
      await send('Page.navigate', { url });
      await until('document.readyState === "complete"', 'the page');
      const doc = events.find((e) => e.method === 'Network.responseReceived' && e.params.type === 'Document');
      const status = doc ? doc.params.response.status : 0;
      if (!auth) {
        finish(0, { status, title: await evaluate('document.title'), text: await evaluate('document.body.innerText') });
        return;
      }
      await until('Number(document.body.dataset.polls || 0) >= 2', 'two polls');
      const before = await sections();
      const shot = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
      const shotPath = path.join(shotDir, 'console.png');
      fs.writeFileSync(shotPath, Buffer.from(shot.result.data, 'base64'));
      const rows = await evaluate('document.querySelectorAll("#reloads tbody tr").length');
      const hadEntry = await evaluate('!document.querySelector("#reloads tbody td.muted")');
      await evaluate('document.getElementById("reload").click()');
      await until('/accepted|refused/.test(document.getElementById("reload-result").innerText)', 'the reload answer');
      const want = hadEntry ? rows + 1 : 1;
      await until(`document.querySelectorAll("#reloads tbody tr").length >= ${want} &&
        !document.querySelector("#reloads tbody td.muted")`, 'the new reload entry');
      const reloadResult = await evaluate('document.getElementById("reload-result").innerText');
      const firstReload = await evaluate('document.querySelector("#reloads tbody tr").innerText');
      await evaluate('location.hash = "#explorer"');
      await until('document.getElementById("explorer-status").innerText !== "loading…"', 'the explorer');
      const explorer = {
        status: await evaluate('document.getElementById("explorer-status").innerText'),
        operations: await evaluate('document.querySelectorAll("#explorer-paths details.op").length'),
        text: await evaluate('document.getElementById("explorer-paths").innerText'),
      };
      // the renderer on a given document (PT_OPENAPI), whatever /openapi.json answers
      let rendered = null;
      if (process.env.PT_OPENAPI) {
        rendered = await evaluate(`(() => {
          renderExplorer(${process.env.PT_OPENAPI});
          return { status: document.getElementById('explorer-status').innerText,
            operations: document.querySelectorAll('#explorer-paths details.op').length,
            text: (() => { document.querySelectorAll('#explorer-paths details').forEach((d) => { d.open = true; });
              return document.getElementById('explorer-paths').innerText; })() };
        })()`);
      }
      let tried = null;
      if (tryReq) {
        await evaluate(`(() => {
          const r = ${JSON.stringify(tryReq)};
          document.getElementById('try-method').value = r.method;
          document.getElementById('try-path').value = r.path;
          document.getElementById('try-headers').value = Object.entries(r.headers || {}).map(([k, v]) => k + ': ' + v).join('\\n');
          document.getElementById('try-body').value = r.body || '';
          document.querySelector('#try-form button[type=submit]').click();
        })()`);
        await until('document.getElementById("try-result").dataset.status || /refused|failed/.test(document.getElementById("try-result").innerText)', 'the explorer answer');
        tried = await evaluate('document.getElementById("try-result").innerText');
        const shot2 = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
        fs.writeFileSync(path.join(shotDir, 'explorer.png'), Buffer.from(shot2.result.data, 'base64'));
      }
      const violations = events.filter((e) => e.method === 'Runtime.exceptionThrown' ||
        (e.method === 'Log.entryAdded' && e.params.entry.source !== 'network'))
        .map((e) => JSON.stringify(e.params).slice(0, 400));
      finish(0, { status, before, shot: shotPath, reloadResult, firstReload, explorer, rendered, tried, violations });
    } catch (e) {
      finish(1, { error: String(e && e.stack || e), sections: await sections().catch(() => null) });
    }
  });
});
