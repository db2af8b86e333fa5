"""WebSocket channels with a client no one here wrote: the `ws` package from
npm, run by Node (tests/integration/ws/client.js drives it)."""
import json
import os
import resource
import subprocess
import time

import pytest

from amqp_support import ROOT
from conftest import ws_frame

WS_DIR = os.path.join(ROOT, "tests", "integration", "ws")

WS_CONFIG_TAIL = """
  websocket:
    - name: ws.secure
      url_path: /ws-secure
      service: demo.echo
      security: ws.users
      ping_interval: 30s
    - name: ws
      url_path: /ws
      service: demo.echo
      service_list: [demo.echo, customer.get, test.raise]
      ping_interval: 300ms
      missed_pings: 2
      max_message_size: 64KB
"""

PUSH_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.push", input = { text = "string", user = "string?" } }
function M:handle()
  self.out.websocket:send("ws", self.request.input.user, { pushed = self.request.input.text })
  self.response.payload = { sent = true }
end
return M
"""


@pytest.fixture(scope="module", autouse=True)
def ws_package():
    if not os.path.isdir(os.path.join(WS_DIR, "node_modules", "ws")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WS_DIR, check=True,
                       capture_output=True, timeout=300)


def password_hash(password):
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    r = subprocess.run([binary, "hash-password"], input=password + "\n", capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def wsgw(start_gateway, tmp_path):
    from conftest import BASE_CONFIG
    svc = tmp_path / "services" / "test"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "push.lua").write_text(PUSH_SERVICE)
    cfg = BASE_CONFIG.replace("test.raise, test.slow]", "test.raise, test.slow, test.push]")
    security = ("security:\n  basic_auth:\n    - name: ws.users\n      users:\n"
                "        - username: john.doe\n          password_hash: \"%s\"\n"
                % password_hash("secret"))
    cfg = cfg.replace("channels:\n", security + "channels:\n", 1)
    return start_gateway(cfg.rstrip("\n") + "\n" + WS_CONFIG_TAIL)


def client(gw, timeout=30, path="/ws", **plan):
    plan.setdefault("url", "ws://127.0.0.1:%d%s" % (gw.port, path))
    r = subprocess.run(["node", os.path.join(WS_DIR, "client.js"), json.dumps(plan)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def env(service, request_id, data):
    return json.dumps({"service": service, "request_id": request_id, "data": data})


def test_same_payload_as_rest(wsgw):
    rest = wsgw.http().post("/gateway/customer.get", {"customer_id": 123})
    res = client(wsgw, send=[env("customer.get", "r1", {"customer_id": 123})], expect=1)
    reply = json.loads(res["messages"][0][0])
    assert reply["request_id"] == "r1" and reply["status"] == 200
    assert reply["data"] == json.loads(rest[2])
    # a plain message runs the channel's own service and gets the bare payload
    res = client(wsgw, send=[json.dumps({"hello": "ws"})], expect=1)
    echo = json.loads(res["messages"][0][0])
    assert echo["payload"] == {"hello": "ws"}
    assert echo["channel"] == {"name": "ws", "type": "websocket"}


def test_hundred_requests_in_flight_on_one_socket(wsgw):
    msgs = [env("customer.get" if i % 2 else "demo.echo", i,
                {"customer_id": 123} if i % 2 else {"n": i}) for i in range(100)]
    res = client(wsgw, send=msgs, expect=100)
    replies = [json.loads(m) for m in res["messages"][0]]
    assert sorted(r["request_id"] for r in replies) == list(range(100))
    for r in replies:
        assert r["status"] == 200
        if r["request_id"] % 2:
            assert r["data"]["name"] == "John Doe"
        else:
            assert r["data"]["payload"] == {"n": r["request_id"]}


def test_errors_come_back_as_messages(wsgw):
    wsgw.expect_error("deliberate failure")
    res = client(wsgw, send=["{not json",
                             env("no.such", "a", {}),
                             env("customer.get-details", "b", {"customer_id": 123}),
                             env("customer.get", "c", {"customer_id": "x"}),
                             env("test.raise", "d", {"fail": True}),
                             env("customer.get", "e", {"customer_id": 123})], expect=6)
    replies = {}
    for m in res["messages"][0]:
        r = json.loads(m)
        replies[r["request_id"]] = r
    assert replies[None]["error"]["status"] == 400
    assert replies[None]["error"]["message"].startswith("invalid JSON")
    assert replies["a"]["error"]["status"] == 404
    assert replies["b"]["error"]["status"] == 403
    assert replies["c"]["error"]["status"] == 400
    assert "customer_id: expected integer" in replies["c"]["error"]["message"]
    assert replies["d"]["error"]["status"] == 500
    assert "secret" not in json.dumps(replies["d"])
    assert replies["e"]["status"] == 200, "the socket kept working after the errors"
    assert res["closes"][0]["code"] == 1000


def test_protocol_violations_close_with_the_right_code(wsgw):
    res = client(wsgw, send=["x" * (70 * 1024)], wait_for_close=True)
    assert res["closes"][0]["code"] == 1009
    res = client(wsgw, send=["{}"], binary=True, wait_for_close=True)
    assert res["closes"][0]["code"] == 1003


def test_authenticated_handshake(wsgw):
    import base64
    auth = lambda user, pw: {"Authorization": "Basic " +
                             base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}
    assert client(wsgw, path="/ws-secure")["http_status"] == 401
    assert client(wsgw, path="/ws-secure", headers=auth("john.doe", "wrong"))["http_status"] == 401
    assert client(wsgw, path="/ws-secure", headers={"Authorization": "Basic !!"})["http_status"] == 401
    res = client(wsgw, path="/ws-secure", headers=auth("john.doe", "secret"),
                 send=[json.dumps({"x": 1})], expect=1)
    assert res["opened"] == 1
    echo = json.loads(res["messages"][0][0])
    assert echo["username"] == "john.doe" and echo["channel"]["type"] == "websocket"
    assert "authorization" not in echo["headers"]


def test_refused_handshakes(wsgw):
    s = wsgw.raw()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 426")
    s = wsgw.raw()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 426")  # RFC 6455 4.4: the version it speaks
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in head
    res = client(wsgw, path="/nope")
    assert res["http_status"] == 404 and res["opened"] == 0


def test_silent_client_is_closed_after_missed_pings(wsgw):
    t0 = time.time()
    res = client(wsgw, autoPong=False, wait_for_close=True, wait_ms=5000)
    assert res["closes"], res
    # 300 ms pings, 2 missed: closed after about a second, well before the client gave up
    assert res["closes"][0]["code"] == 1006
    assert time.time() - t0 < 4
    res = client(wsgw, hold_ms=1500)  # a client that answers pings stays
    assert res["closes"][0]["code"] == 1000 and res["closes"][0]["after_ms"] >= 1400


def test_server_push_reaches_sockets(wsgw):
    import threading
    holder = {}

    def listen():
        holder["res"] = client(wsgw, expect=1, wait_ms=5000)

    t = threading.Thread(target=listen)
    t.start()
    deadline = time.time() + 5
    while time.time() < deadline:
        time.sleep(0.1)
        st, _, _ = wsgw.http().post("/gateway/test.push", {"text": "hi"})
        assert st == 200
        if not t.is_alive():
            break
        t.join(0.2)
        if not t.is_alive():
            break
    t.join(6)
    assert json.loads(holder["res"]["messages"][0][0]) == {"pushed": "hi"}


def test_thousand_concurrent_sockets(wsgw):
    pid = wsgw.proc.proc.pid

    def rss():
        with open("/proc/%d/status" % pid) as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

    before = rss()
    holder = {}
    import threading
    t = threading.Thread(target=lambda: holder.update(res=client(wsgw, sockets=1000,
                                                                 hold_ms=4000, timeout=60)))
    t.start()
    peak = before
    while t.is_alive():
        peak = max(peak, rss())
        time.sleep(0.2)
    res = holder["res"]
    assert res["opened"] == 1000
    assert len(res["closes"]) == 1000 and all(c["code"] == 1000 for c in res["closes"])
    print("\nWebSocket memory: %d KB before, %d KB with 1000 sockets: %.1f KB per socket"
          % (before, peak, (peak - before) / 1000.0))


def test_browser_websocket_in_headless_chromium(wsgw):
    """The browser's own WebSocket (Debian's chromium, headless) against /ws."""
    import shutil
    assert shutil.which("chromium"), "chromium is installed by scripts/install-deps"
    r = subprocess.run(["node", os.path.join(WS_DIR, "browser.js"),
                        "ws://127.0.0.1:%d/ws" % wsgw.port,
                        env("customer.get", "b1", {"customer_id": 123})],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "HeadlessChrome" in out["agent"]
    reply = json.loads(out["replies"][0])
    assert reply["request_id"] == "b1" and reply["data"]["name"] == "John Doe"


def ws_read(sock):
    """Reads one unmasked server frame: (opcode, payload)."""
    import struct

    def need(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the socket"
            data += chunk
        return data
    b0, b1 = need(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", need(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", need(8))[0]
    return b0 & 0x0f, need(n)


def test_socket_survives_reloads_and_answers_client_pings(wsgw, tmp_path):
    s = wsgw.raw(timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example

    def call(i):
        s.sendall(ws_frame(1, env("test.raise", i, {}).encode()))
        while True:
            op, payload = ws_read(s)
            if op == 1:
                return json.loads(payload)

    assert call(1)["status"] == 200
    # the client pings, the server answers with the same payload
    s.sendall(ws_frame(9, b"are you there"))
    while True:
        op, payload = ws_read(s)
        if op == 10:
            assert payload == b"are you there"
            break
    # a config reload that keeps the channel, and a service file rewritten
    admin = __import__("amqp_support").Http(wsgw.admin_port)
    assert admin.request("POST", "/reload")[0] == 200
    raise_lua = tmp_path / "services" / "test" / "raise.lua"
    raise_lua.write_text(raise_lua.read_text().replace("ok = true", "ok = 2"))
    deadline = time.time() + 3
    while True:
        reply = call(2)
        if reply["data"] == {"ok": 2}:
            break
        assert reply["data"] == {"ok": True} and time.time() < deadline
        time.sleep(0.1)
    s.sendall(ws_frame(8, b"\x03\xe8"))
    op, payload = ws_read(s)
    assert op == 8 and payload[:2] == b"\x03\xe8"
