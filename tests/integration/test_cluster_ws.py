"""self.out.websocket:send across the nodes of a cluster
(docs/cluster-push.md): three portico nodes share one private redis-server;
a push made on node A reaches a WebSocket client on node C exactly once
(and A's own client once too), a push to one user reaches only that user's
sockets on every node, one sender's pushes arrive in the order it sent
them, and a push over 1 MiB is refused with a clear error before any socket
gets it."""
import base64
import json
import os
import socket
import struct
import subprocess
import textwrap
import time

from amqp_support import ROOT, Http, scrape, value
from conftest import config_head
from redis_support import cluster_yaml, redis, redis_server  # noqa: F401 (fixtures)

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

SERVICE = """
    local service = require "portico.service"
    local M = service.new { name = "cw.push" }
    function M:handle()
      local p = self.request.payload
      local out = { sent = 0 }
      if p.big then
        out.ok, out.err = self.out.websocket:send(p.channel or "ws", p.user, string.rep("x", p.big))
      else
        for i = 1, p.n or 1 do
          out.ok, out.err = self.out.websocket:send(p.channel or "ws", p.user,
                                                    { from = p.from, seq = i, text = p.text })
          if out.ok then out.sent = out.sent + 1 end
        end
      end
      self.response.payload = out
    end
    return M
"""


def password_hash(password):
    r = subprocess.run([BIN, "hash-password"], input=password + "\n", capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def start_nodes(start_gateway, tmp_path, redis, n=3):
    svc = tmp_path / "svc"
    (svc / "cw").mkdir(parents=True, exist_ok=True)
    (svc / "cw" / "push.lua").write_text(textwrap.dedent(SERVICE))
    h = password_hash("secret")
    security = ("security:\n  basic_auth:\n    - name: ws.users\n      users:\n" +
                "".join("        - username: %s\n          password_hash: \"%s\"\n" % (u, h)
                        for u in ("ann", "bob")))
    channels = """channels:
  rest:
    - name: push
      url_path: /push
      methods: [POST]
      service: cw.push
  websocket:
    - name: ws
      url_path: /ws
      service: cw.push
    - name: ws.users
      url_path: /ws-users
      service: cw.push
      security: ws.users
"""
    nodes = []
    for i in range(n):
        text = (config_head("workers: 2", dirs=str(svc)) + security.replace("{", "{{") +
                channels + cluster_yaml(redis.url, "node%d" % (i + 1)).replace("{", "{{")
                .replace("}", "}}"))
        nodes.append(start_gateway(text, sub="node%d" % (i + 1)))
    return nodes


class Ws:
    """A raw WebSocket client (RFC 6455), enough to read pushed text."""

    def __init__(self, node, path="/ws", user=None):
        self.s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        auth = ""
        if user:
            auth = "Authorization: Basic %s\r\n" % base64.b64encode(
                ("%s:secret" % user).encode()).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n"
                        % (path, auth)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = b""

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                return False
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(1 << 20)
            except socket.timeout:
                return False
            assert chunk, "the server closed the socket"
            self.buf += chunk
        return True

    def texts(self, wait=1.0, count=None):
        """Text messages that come within wait seconds (or the first count)."""
        out, deadline = [], time.time() + wait
        while count is None or len(out) < count:
            if not self._need(2, deadline):
                break
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7f, 2
            if n == 126:
                if not self._need(4, deadline):
                    break
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if not self._need(10, deadline):
                    break
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            if not self._need(off + n, deadline):
                break
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            if b0 & 0x0f == 1:
                out.append(json.loads(payload) if payload[:1] == b"{" else payload.decode())
            elif b0 & 0x0f == 9:  # a ping: answer it (masked pong)
                mask = os.urandom(4)
                self.s.sendall(bytes([0x8a, 0x80 | len(payload)]) + mask +
                               bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
        return out

    def close(self):
        self.s.close()


def push(node, **body):
    st, _, data = Http(node.port, timeout=20).post("/push", body)
    assert st == 200, data
    return json.loads(data)


def subscribed(redis, n):
    deadline = time.time() + 5
    while redis.cmd("PUBSUB", "NUMSUB", "portico:ws")[1] != n:
        assert time.time() < deadline, redis.cmd("PUBSUB", "NUMSUB", "portico:ws")
        time.sleep(0.05)


def test_a_push_on_node_a_reaches_a_client_on_node_c_exactly_once(start_gateway, tmp_path,
                                                                   redis):
    a, b, c = start_nodes(start_gateway, tmp_path, redis)
    subscribed(redis, 3)  # one subscriber per node (each has WebSocket channels)
    on_c, on_a = Ws(c), Ws(a)
    assert push(a, text="hi", **{"from": "a"}) == {"ok": True, "sent": 1}
    assert on_c.texts(wait=1.5) == [{"from": "a", "seq": 1, "text": "hi"}]
    assert on_a.texts(wait=0.3) == [{"from": "a", "seq": 1, "text": "hi"}]  # local, not twice
    s = scrape(c)
    assert value(s, "portico_ws_cluster_received_total") >= 1
    assert value(scrape(a), "portico_ws_cluster_own_total") >= 1
    assert value(scrape(a), "portico_ws_cluster_published_total") >= 1


def test_a_push_to_one_user_reaches_only_that_user_on_every_node(start_gateway, tmp_path, redis):
    a, b, c = start_nodes(start_gateway, tmp_path, redis)
    subscribed(redis, 3)
    ann_c, ann_b, bob_c = Ws(c, "/ws-users", "ann"), Ws(b, "/ws-users", "ann"), \
        Ws(c, "/ws-users", "bob")
    push(a, channel="ws.users", user="ann", text="for ann", **{"from": "a"})
    want = [{"from": "a", "seq": 1, "text": "for ann"}]
    assert ann_c.texts(wait=1.5, count=1) == want
    assert ann_b.texts(wait=1.5, count=1) == want
    assert bob_c.texts(wait=0.5) == []
    assert ann_c.texts(wait=0.3) == []  # once each


def test_one_senders_pushes_arrive_in_order(start_gateway, tmp_path, redis):
    a, b, c = start_nodes(start_gateway, tmp_path, redis)
    subscribed(redis, 3)
    on_c = Ws(c)
    assert push(a, n=300, text="x", **{"from": "a"})["sent"] == 300
    got = on_c.texts(wait=5, count=300)
    assert [m["seq"] for m in got] == list(range(1, 301))
    assert on_c.texts(wait=0.3) == []


def test_a_push_over_one_mib_is_refused(start_gateway, tmp_path, redis):
    a, b = start_nodes(start_gateway, tmp_path, redis, n=2)
    subscribed(redis, 2)
    on_a, on_b = Ws(a), Ws(b)
    out = push(a, big=(1 << 20) + 1)
    assert out.get("ok") is None
    assert out["err"] == ("websocket:send: the message is 1048577 bytes, more than a push may "
                          "carry across the cluster (1048576)")
    assert on_a.texts(wait=0.5) == [] and on_b.texts(wait=0.2) == []
    out = push(a, big=1 << 20)  # the bound itself goes
    assert out["ok"] is True
    assert len(on_b.texts(wait=3, count=1)[0]) == 1 << 20


def test_no_subscriber_without_websocket_channels(start_gateway, tmp_path, redis):
    text = (config_head("workers: 1", dirs="{root}/services") + "channels: {{}}\n" +
            cluster_yaml(redis.url, "lonely"))
    gw = start_gateway(text, sub="lonely")
    time.sleep(0.5)
    assert redis.cmd("PUBSUB", "NUMSUB", "portico:ws")[1] == 0
    # the reload that brings the first WebSocket channel makes the subscriber
    with open(gw.config) as f:
        cfg = f.read()
    with open(gw.config, "w") as f:
        f.write(cfg.replace("channels: {}\n", "channels:\n  websocket:\n    - name: ws\n"
                            "      url_path: /ws\n      service: demo.echo\n"))
    st, _, body = Http(gw.admin_port).request("POST", "/reload")
    assert st == 200, body
    subscribed(redis, 1)
