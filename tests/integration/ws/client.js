// A WebSocket client for the integration tests, on the `ws` package.
// node client.js '<plan as JSON>' prints one JSON result line:
//   plan: { url, headers, sockets (default 1), send: [text...], binary: bool,
//           expect: number of messages to wait for (per socket), wait_ms,
//           autoPong (default true), hold_ms (keep sockets open, then report) }
//   result: { opened, http_status, messages: [[text...] per socket],
//             closes: [{code, reason, after_ms}], errors: [...] }
const WebSocket = require('ws');

const plan = JSON.parse(process.argv[2]);
const n = plan.sockets || 1;
const result = { opened: 0, http_status: null, messages: [], closes: [], errors: [] };
const started = Date.now();
let finished = 0;

function done() {
  finished++;
  if (finished === n) {
    console.log(JSON.stringify(result));
    process.exit(0);
  }
}

for (let i = 0; i < n; i++) {
  const got = [];
  result.messages.push(got);
  const ws = new WebSocket(plan.url, { headers: plan.headers || {}, autoPong: plan.autoPong !== false,
                                        maxPayload: 64 * 1024 * 1024 });
  let ended = false;
  const end = () => { if (!ended) { ended = true; done(); } };
  const timer = setTimeout(() => {
    if (plan.hold_ms) { ws.close(1000); return; }
    result.errors.push('timeout');
    ws.terminate();
    end();
  }, plan.hold_ms || plan.wait_ms || 5000);
  ws.on('unexpected-response', (req, res) => {
    result.http_status = res.statusCode;
    clearTimeout(timer);
    end();
  });
  ws.on('open', () => {
    result.opened++;
    for (const text of plan.send || []) {
      if (plan.binary) ws.send(Buffer.from(text), { binary: true });
      else ws.send(text);
    }
    if (!plan.expect && !plan.hold_ms && !plan.wait_for_close) { ws.close(1000); }
  });
  ws.on('message', (data) => {
    got.push(data.toString());
    if (plan.expect && got.length >= plan.expect) { ws.close(1000); }
  });
  ws.on('close', (code, reason) => {
    result.closes.push({ code, reason: reason.toString(), after_ms: Date.now() - started });
    clearTimeout(timer);
    end();
  });
  ws.on('error', (e) => { result.errors.push(String(e.message || e)); });
}
