"""Memory per idle connection (issue 22), and that connections still work
after idling: the request state a connection takes from its worker's pool
on a request's first byte, and gives back when it goes idle, comes back
clean; a WebSocket's wslay context is made again when frames begin.

The bound is asserted at a few thousand connections on one worker, with a
margin (bench/conn-memory measures at 15 000 and prints the figures)."""
import base64
import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import time

import pytest

from amqp_support import ROOT, free_port
from conftest import config_head, ws_frame

N = 3000
HTTP_BOUND = 1024  # bytes per idle keep-alive HTTP connection
WS_BOUND = 4096    # bytes per idle WebSocket that exchanged a message

CONFIG = config_head("""
    workers: 1
    max_connections: 20000
    header_timeout: {header_timeout}
    idle_timeout: 120s
""", log="level: info") + """channels:
  rest:
    - name: echo
      url_path: /echo
      methods: [GET, POST]
      service: demo.echo
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
      ping_interval: {ping_interval}
      missed_pings: 3
"""


@pytest.fixture(scope="module", autouse=True)
def open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < N + 500:
        pytest.skip("the open-file limit (%d) is below %d" % (hard, N + 500))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def gw(start_gateway):
    def start(header_timeout="10s", ping_interval="60s", config=CONFIG, **kw):
        return start_gateway(config, header_timeout=header_timeout,
                             ping_interval=ping_interval, **kw)
    return start


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def recv_head(s, buf=b""):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "closed before the head: %r" % buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def read_response(s, buf=b""):
    """(status, headers dict, body, bytes after it)."""
    head, rest = recv_head(s, buf)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk, "closed in the body"
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def get(s, path="/echo", extra=b""):
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
    status, headers, body, rest = read_response(s)
    assert rest == b""
    return status, headers, body


def http_conn(port, ctx=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def ws_read(s, buf):
    """(opcode, payload, rest)."""
    def need(k):
        nonlocal buf
        while len(buf) < k:
            chunk = s.recv(65536)
            assert chunk, "closed in a frame"
            buf += chunk
    need(2)
    opcode, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        need(4)
        n, off = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, off = struct.unpack("!Q", buf[2:10])[0], 10
    need(off + n)
    return opcode, buf[off:off + n], buf[off + n:]


def ws_open(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def ws_call(s, buf, payload):
    """Sends payload, answers pings, returns (the reply's JSON, rest)."""
    s.sendall(ws_frame(0x1, json.dumps(payload).encode()))
    while True:
        op, data, buf = ws_read(s, buf)
        if op == 0x9:
            s.sendall(ws_frame(0xA, data))
            continue
        assert op == 0x1, op
        return json.loads(data), buf


def per_connection(pid, opener):
    """RSS growth per connection over N idle ones, after a warm-up of
    connections opened, used and closed."""
    for s in [opener()[0] for _ in range(300)]:
        s.close()
    time.sleep(0.3)
    before = rss_kb(pid)
    conns = [opener() for _ in range(N)]
    time.sleep(0.5)
    return (rss_kb(pid) - before) * 1024.0 / N, conns


# ---- the bounds ----

def test_an_idle_keep_alive_connection_costs_under_a_kilobyte(gw):
    g = gw()

    def opener():
        s = http_conn(g.port)
        assert get(s)[0] == 200
        return s, b""

    per, conns = per_connection(g.proc.proc.pid, opener)
    print("\nidle keep-alive HTTP: %.0f B per connection (n=%d)" % (per, N))
    assert per <= HTTP_BOUND, "%.0f B per idle connection" % per
    # every one still serves, in any order, after idling
    for s, _ in conns[::-1][::97]:
        status, _, body = get(s)
        assert status == 200 and json.loads(body)["path"] == "/echo"
    for s, _ in conns:
        s.close()
    assert g.log_has("open-file limit")


def test_an_idle_websocket_costs_under_four_kilobytes(gw):
    g = gw()

    def opener():
        s, buf = ws_open(g.port)
        reply, buf = ws_call(s, buf, {"hello": "world"})
        assert reply["payload"] == {"hello": "world"}
        return s, buf

    per, conns = per_connection(g.proc.proc.pid, opener)
    print("\nidle WebSocket: %.0f B per connection (n=%d)" % (per, N))
    assert per <= WS_BOUND, "%.0f B per idle WebSocket" % per
    for s, buf in conns[::211]:
        reply, _ = ws_call(s, buf, {"again": 1})
        assert reply["payload"] == {"again": 1}
    for s, _ in conns:
        s.close()


# ---- the pooled state comes back clean ----

def test_a_pooled_request_state_carries_nothing_over(gw):
    g = gw()
    a = http_conn(g.port)
    big = b"X-Leak: " + b"s" * 6000 + b"\r\nX-Correlation-Id: leaky-cid-1\r\n"
    a.sendall(b"POST /echo?q=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + big +
              b"Content-Length: 13\r\n\r\n{\"secret\": 1}")
    status, headers, body, _ = read_response(a)
    assert status == 200 and headers["x-correlation-id"] == "leaky-cid-1"
    assert json.loads(body)["payload"] == {"secret": 1}
    # a is idle now: its state went back; the next request (here or on
    # another connection) takes it again
    for s in (a, http_conn(g.port)):
        status, headers, body = get(s, "/echo")
        echo = json.loads(body)
        assert status == 200
        assert headers["x-correlation-id"] != "leaky-cid-1"
        assert "x-leak" not in echo["headers"] and echo.get("payload") is None
        assert echo.get("query") in ("", None, {}) and echo["method"] == "GET"
        s.close()


def test_pipelined_requests_after_idle(gw):
    g = gw()
    s = http_conn(g.port)
    assert get(s)[0] == 200
    time.sleep(0.3)
    s.sendall(b"".join(b"GET /echo?i=%d HTTP/1.1\r\nHost: t\r\nX-Correlation-Id: pipe-%d\r\n\r\n"
                       % (i, i) for i in range(5)))
    rest = b""
    for i in range(5):
        status, headers, body, rest = read_response(s, rest)
        assert status == 200 and headers["x-correlation-id"] == "pipe-%d" % i
    assert rest == b""
    # a request cut across reads, after the connection went idle again
    s.sendall(b"GET /echo HTTP/1.1\r\nHo")
    time.sleep(0.1)
    s.sendall(b"st: t\r\n\r\n")
    assert read_response(s)[0] == 200
    s.close()


def test_a_slow_head_after_idle_gets_408_in_header_timeout(gw):
    g = gw(header_timeout="1s")
    s = http_conn(g.port)
    assert get(s)[0] == 200
    time.sleep(1.5)  # idle longer than header_timeout: only idle_timeout counts
    s.sendall(b"GET /echo HTTP/1.1\r\nHost")
    t0 = time.time()
    status, _, body, _ = read_response(s)
    took = time.time() - t0
    assert status == 408, body
    assert 0.5 < took < 3, took
    s.close()
    # the first request of a connection: the head's deadline runs from the accept
    s = http_conn(g.port)
    s.sendall(b"GET /ec")
    assert read_response(s)[0] == 408
    s.close()


def test_a_websocket_after_idle_answers_pings_and_messages(gw):
    g = gw(ping_interval="500ms")
    s, buf = ws_open(g.port)
    reply, buf = ws_call(s, buf, {"n": 1})
    assert reply["payload"] == {"n": 1}
    # idle through a few pings: each one is sent by a context made for it
    pings = 0
    deadline = time.time() + 1.8
    s.settimeout(0.2)
    while time.time() < deadline:
        try:
            op, data, buf = ws_read(s, buf)
        except socket.timeout:
            continue
        assert op == 0x9
        pings += 1
        s.sendall(ws_frame(0xA, data))
    s.settimeout(10)
    assert pings >= 2
    # a message cut into fragments across reads, after idle
    text = json.dumps({"n": 2}).encode()
    mask = os.urandom(4)
    part1, part2 = text[:4], text[4:]
    s.sendall(bytes([0x01, 0x80 | len(part1)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(part1)))
    time.sleep(0.1)
    frame2 = bytes([0x80, 0x80 | len(part2)]) + mask + \
        bytes(b ^ mask[i % 4] for i, b in enumerate(part2))
    s.sendall(frame2[:3])  # a header cut in two
    time.sleep(0.1)
    s.sendall(frame2[3:])
    while True:
        op, data, buf = ws_read(s, buf)
        if op == 0x9:
            s.sendall(ws_frame(0xA, data))
            continue
        break
    assert op == 0x1 and json.loads(data)["payload"] == {"n": 2}
    # a close after idle is answered with a close
    s.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
    while True:
        op, data, buf = ws_read(s, buf)
        if op == 0x8:
            break
    assert struct.unpack("!H", data[:2])[0] == 1000
    s.close()


# ---- TLS ----

def openssl_certs(d):
    r = subprocess.run([os.path.join(ROOT, "scripts", "dev-cert"), str(d)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(d)


def test_tls_connections_after_idle(gw, tmp_path):
    certs = openssl_certs(tmp_path / "certs")
    tls_port = free_port()
    config = CONFIG.replace("  idle_timeout: 120s\n", "  idle_timeout: 120s\n  tls:\n"
                            "    listen: 127.0.0.1:%d\n    certificates:\n"
                            "      - {{cert: %s/server.pem, key: %s/server.key}}\n"
                            % (tls_port, certs, certs))
    g = gw(config=config)
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.05)
    conns = []
    for i in range(200):
        s = http_conn(tls_port, ctx)
        status, headers, body = get(s, "/echo?i=%d" % i, b"X-Correlation-Id: tls-%d\r\n" % i)
        assert status == 200 and headers["x-correlation-id"] == "tls-%d" % i
        conns.append(s)
    time.sleep(0.3)
    # again on each, after idling, with a large answer (the BIOs grow, then shrink)
    for i, s in enumerate(conns):
        status, headers, body = get(s, "/echo", b"X-Big: " + b"b" * 6000 + b"\r\n")
        assert status == 200 and headers["x-correlation-id"] != "tls-%d" % i
        assert json.loads(body)["headers"]["x-big"] == "b" * 6000
    for s in conns[::20]:
        assert get(s)[0] == 200
    for s in conns:
        s.close()


# ---- the open-file limit ----

def test_the_soft_open_file_limit_is_raised_to_the_hard_one(gw):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        g = gw()  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open("/proc/%d/limits" % g.proc.proc.pid) as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert line.split()[3] == str(hard), line
    if low < hard:
        assert g.log_has("open-file limit raised from %d to %d" % (low, hard))
    else:
        assert g.log_has("open-file limit: %d" % hard)
