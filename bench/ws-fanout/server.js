// The Node reference of bench/run's fanout scenario: the npm `ws` server
// (bench/run installs it at run time into its cache, never into the tree)
// doing what portico's bench.push service does:
//   GET  /bench/ws    a WebSocket; x-portico-username names its user
//   POST /bench/push  {"seq":..,"user":"u0"?,..}: the body, as it came, to every
//                     socket, or to that user's sockets only (a Map of Sets,
//                     as a Node app keeps them); answers {"ok":true}
// The idiomatic broadcast of the ws docs: client.send(text) per socket.
//   node server.js PORT
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const byUser = new Map();
const all = new Set();

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/bench/push') {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not found"}');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let msg;
    try { msg = JSON.parse(text); } catch (e) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"error":"bad JSON"}');
      return;
    }
    const targets = msg.user ? (byUser.get(msg.user) || []) : all;
    for (const ws of targets) {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    }
    const body = '{"ok":true}';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60000;

const wss = new WebSocketServer({ server, path: '/bench/ws', perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const user = req.headers['x-portico-username'] || '';
  all.add(ws);
  if (!byUser.has(user)) byUser.set(user, new Set());
  byUser.get(user).add(ws);
  ws.on('close', () => {
    all.delete(ws);
    const s = byUser.get(user);
    if (s) { s.delete(ws); if (s.size === 0) byUser.delete(user); }
  });
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', 65535);
