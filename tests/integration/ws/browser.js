// Runs the browser's own WebSocket in headless Chromium (Debian's chromium):
// node browser.js <ws url> '<message>' [expect]
// (PT_CHROMIUM_SPKI: base64 SHA-256 of a certificate's public key that
// Chromium then trusts, for a wss:// URL on a test certificate)
// Starts Chromium with a DevTools port, evaluates a page script that opens the
// socket, sends the message and resolves with the replies, prints them as JSON.
const { spawn } = require('child_process');
const http = require('http');
const os = require('os');
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');

const [url, message, expectArg] = process.argv.slice(2);
const expect = Number(expectArg || 1);
const port = 20000 + Math.floor(Math.random() * 20000);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'portico-chromium-'));
const chrome = spawn('chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--user-data-dir=${profile}`, `--remote-debugging-port=${port}`,
  ...(process.env.PT_CHROMIUM_SPKI
    ? [`--ignore-certificate-errors-spki-list=${process.env.PT_CHROMIUM_SPKI}`] : []),
  'about:blank',
], { stdio: 'ignore' });

function finish(code, out) {
  if (out) console.log(JSON.stringify(out));
  chrome.once('exit', () => {
    try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* left in tmp */ }
    process.exit(code);
  });
  chrome.kill('SIGKILL');
}
setTimeout(() => finish(1, { error: 'timeout' }), 30000);

function targets(cb, tries = 0) {
  http.get(`http://127.0.0.1:${port}/json/list`, (res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => cb(JSON.parse(body)));
  }).on('error', () => {
    if (tries > 100) finish(1, { error: 'no DevTools endpoint' });
    else setTimeout(() => targets(cb, tries + 1), 100);
  });
}

targets((list) => {
  const page = list.find((t) => t.type === 'page');
  const cdp = new WebSocket(page.webSocketDebuggerUrl);
  const script = `new Promise((resolve) => {
    const got = [];
    const ws = new WebSocket(${JSON.stringify(url)});
    ws.onopen = () => ws.send(${JSON.stringify(message)});
    ws.onmessage = (e) => { got.push(e.data); if (got.length >= ${expect}) { ws.close(); resolve({ replies: got, agent: navigator.userAgent }); } };
    ws.onerror = () => resolve({ error: 'socket error', replies: got });
    setTimeout(() => resolve({ error: 'no reply', replies: got }), 10000);
  })`;
  cdp.on('open', () => cdp.send(JSON.stringify({
    id: 1, method: 'Runtime.evaluate', params: { expression: script, awaitPromise: true, returnByValue: true },
  })));
  cdp.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id !== 1) return;
    const value = msg.result && msg.result.result && msg.result.result.value;
    finish(value && !value.error ? 0 : 1, value || msg);
  });
});
