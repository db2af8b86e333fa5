"""Server push to many WebSockets at once (issue 22): a push to a channel
reaches each of a few hundred sockets, spread over two workers, once and in
order; a push to one user reaches that user's sockets only; a reader that
takes nothing is closed (1008, counted, logged) while the others get
everything. The sockets are plain TCP with a hand-made handshake, so that
hundreds fit in one select loop."""
import base64
import json
import select
import socket
import struct
import time

import pytest

USERS = 10
SOCKETS = 300

PUSH_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.fanout" }
function M:handle()
  local p = self.request.payload
  self.out.websocket:send("fan", p.user, self.request.raw)
  self.response.payload = { ok = true }
end
return M
"""

GATEWAY_AUTH = "Basic " + base64.b64encode(b"gateway:gw-secret").decode()


def fan_config(tmp_path, max_output="64KB"):
    from conftest import BASE_CONFIG
    from test_websocket import password_hash
    (tmp_path / "services" / "test").mkdir(parents=True, exist_ok=True)
    (tmp_path / "services" / "test" / "fanout.lua").write_text(PUSH_SERVICE)
    cfg = BASE_CONFIG.replace("test.raise, test.slow]", "test.raise, test.slow, test.fanout]")
    security = ("security:\n  basic_auth:\n    - name: fan.gateway\n"
                "      trust_username_header: x-portico-username\n      users:\n"
                "        - username: gateway\n          password_hash: \"%s\"\n"
                % password_hash("gw-secret"))
    cfg = cfg.replace("channels:\n", security + "channels:\n", 1)
    cfg = cfg.rstrip("\n") + """
  websocket:
    - name: fan
      url_path: /fan
      service: demo.echo
      security: fan.gateway
      ping_interval: 1h
      max_output: %s
      send_timeout: 2s
""" % max_output
    return cfg


@pytest.fixture
def fan(start_gateway, tmp_path):
    return start_gateway(fan_config(tmp_path))


@pytest.fixture
def fan_big(start_gateway, tmp_path):
    """Big messages: the body limit of the push call raised to 2 MB, and
    max_output to 4 MB (a 1 MB message is no backlog)."""
    cfg = fan_config(tmp_path, max_output="4MB").replace("max_body_bytes: 1MB",
                                                         "max_body_bytes: 2MB")
    return start_gateway(cfg)


class Sock:
    def __init__(self, gw, user, rcvbuf=None):
        self.user, self.buf, self.msgs, self.closed = user, b"", [], None
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.connect(("127.0.0.1", gw.port))
        self.s.sendall(("GET /fan HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\nAuthorization: %s\r\n"
                        "x-portico-username: %s\r\n\r\n" % (GATEWAY_AUTH, user)).encode())

    def handshake(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            assert d, "closed during the handshake"
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.s.setblocking(False)
        self.frames()

    def read(self):
        try:
            d = self.s.recv(1 << 20)
        except BlockingIOError:
            return
        except ConnectionError:
            d = b""
        if not d:
            self.closed = self.closed or "eof"
            return
        self.buf += d
        self.frames()

    def frames(self):
        while len(self.buf) >= 2:
            op, n, hl = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, hl = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, hl = struct.unpack(">Q", self.buf[2:10])[0], 10
            if len(self.buf) < hl + n:
                return
            payload, self.buf = self.buf[hl:hl + n], self.buf[hl + n:]
            if op == 1:
                self.msgs.append(json.loads(payload)["seq"])
            elif op == 8:
                self.closed = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else "close"


def open_all(gw, n, users):
    first = Sock(gw, "u0")
    first.handshake()         # the password is checked once, then cached
    socks = [first] + [Sock(gw, "u%d" % (i % users)) for i in range(1, n)]
    for s in socks[1:]:
        s.handshake()
    return socks


def pump(socks, until, timeout=10):
    deadline = time.time() + timeout
    while not until() and time.time() < deadline:
        live = [s for s in socks if not s.closed]
        r, _, _ = select.select([s.s for s in live], [], [], 0.05)
        ready = set(r)
        for s in live:
            if s.s in ready:
                s.read()
    return until()


def push(http, seq, user=None, pad=0):
    body = {"seq": seq, "pad": "x" * pad}
    if user:
        body["user"] = user
    st, _, b = http.post("/gateway/test.fanout", body)
    assert st == 200, b


def test_a_push_reaches_every_socket_of_the_channel_once_and_in_order(fan):
    socks = open_all(fan, SOCKETS, USERS)
    http = fan.http()
    for seq in range(1, 51):
        push(http, seq)
    want = list(range(1, 51))
    assert pump(socks, lambda: all(len(s.msgs) >= 50 for s in socks))
    pump(socks, lambda: False, timeout=0.3)       # nothing more comes
    bad = [(s.user, s.msgs[:5]) for s in socks if s.msgs != want]
    assert not bad, bad[:3]
    assert not [s for s in socks if s.closed]
    for s in socks:
        s.s.close()


def test_a_push_to_one_user_reaches_only_that_users_sockets(fan):
    socks = open_all(fan, SOCKETS, USERS)
    http = fan.http()
    for seq in range(1, 11):
        push(http, seq, user="u3")
    push(http, 100)                  # to everyone: behind u3's pushes on every worker
    assert pump(socks, lambda: all(s.msgs and s.msgs[-1] == 100 for s in socks))
    mine = [s for s in socks if s.user == "u3"]
    assert len(mine) == SOCKETS // USERS
    assert all(s.msgs == list(range(1, 11)) + [100] for s in mine)
    assert all(s.msgs == [100] for s in socks if s.user != "u3")
    for s in socks:
        s.s.close()


def test_a_reader_that_takes_nothing_is_closed_and_the_others_get_everything(fan):
    socks = open_all(fan, 20, 5)
    stuck = Sock(fan, "u1", rcvbuf=4096)
    stuck.handshake()
    http = fan.http()
    n = 400                          # 400 x 8 KB: past the 64 KB bound and the socket buffers
    for seq in range(1, n + 1):      # the others read as it comes
        push(http, seq, pad=8000)
        assert pump(socks, lambda: all(len(s.msgs) >= seq for s in socks), timeout=5)
    assert all(s.msgs == list(range(1, n + 1)) for s in socks)
    assert fan.log_has("a push found its output over max_output, closing with 1008", timeout=5)
    # the stuck socket's connection is gone: reading it now ends in EOF (or
    # the 1008 close frame, should it have caught up with it)
    stuck.s.setblocking(True)
    stuck.s.settimeout(5)
    try:
        while stuck.s.recv(1 << 20):
            pass
    except ConnectionError:
        pass
    from test_gate_websocket import metric
    assert metric(fan, "portico_ws_slow_consumers_total") == 1
    for s in socks:
        s.s.close()


def test_a_push_bigger_than_the_batch_bound_reaches_everyone_whole(fan_big):
    """100 sockets x 1 MB over two workers is past the 32 MB a worker batches
    before it writes (pt_ws_push then writes as it goes, mid-push): every
    socket still gets the whole message, once, and a small one behind it."""
    socks = open_all(fan_big, 100, 10)
    http = fan_big.http()
    push(http, 1, pad=1024 * 1024)
    push(http, 2)
    assert pump(socks, lambda: all(len(s.msgs) >= 2 for s in socks), timeout=30)
    assert all(s.msgs == [1, 2] for s in socks)
    assert not [s for s in socks if s.closed]
    for s in socks:
        s.s.close()


def test_a_burst_of_pushes_past_max_output_does_not_drop_a_reader_that_keeps_up(fan):
    """Pushes that arrive together are batched; a batch bigger than the
    socket's max_output (64 KB here) is written as it grows, not counted as a
    backlog: a socket that reads gets them all and stays open."""
    socks = open_all(fan, 4, 2)
    bodies = [json.dumps({"seq": i, "pad": "x" * 30000}).encode() for i in range(1, 11)]
    s = fan.raw()
    s.sendall(b"".join(b"POST /gateway/test.fanout HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(b), b) for b in bodies))
    assert pump(socks, lambda: all(len(x.msgs) >= 10 or x.closed for x in socks), timeout=10)
    assert [x.msgs for x in socks] == [list(range(1, 11))] * 4
    assert not [x for x in socks if x.closed]
    s.close()
    for x in socks:
        x.s.close()
