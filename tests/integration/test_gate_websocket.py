"""WebSocket gate: the output bound (a client that never reads, a slow
consumer of pushes), the size limits, and RFC 6455 conformance of frames and
handshakes. Raw sockets with hand-built frames: each case names the exact
close code or HTTP status, and a fresh well-formed socket is served after it."""
import errno
import json
import os
import re
import select
import socket
import struct
import threading
import time

import pytest

from amqp_support import Http

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
# ASan's quarantine keeps freed memory resident: RSS bounds mean nothing there
ASAN = os.environ.get("PT_ASAN") == "1"

WS_TAIL = """
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
      service_list: [demo.echo]
      ping_interval: 30s
      max_message_size: 64KB
      max_output: 1MB
      send_timeout: 2s
    - name: ws.push
      url_path: /ws-push
      service: demo.echo
      ping_interval: 30s
      max_output: 64KB
      send_timeout: 30s
"""

PUSH_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.push", input = { count = "integer", size = "integer" } }
function M:handle()
  local text = string.rep("p", self.request.input.size)
  for i = 1, self.request.input.count do
    self.out.websocket:send("ws.push", nil, text)
  end
  self.response.payload = { sent = self.request.input.count }
end
return M
"""


@pytest.fixture
def gw(start_gateway, tmp_path):
    from conftest import BASE_CONFIG
    svc = tmp_path / "services" / "test"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "push.lua").write_text(PUSH_SERVICE)
    cfg = BASE_CONFIG.replace("test.raise, test.slow]", "test.raise, test.slow, test.push]")
    return start_gateway(cfg.rstrip("\n") + "\n" + WS_TAIL)


# ---- frames and handshakes ----


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """A client frame (RFC 6455 5.2). length overrides the header's length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    k = int.from_bytes((key * (len(payload) // 4 + 1))[:len(payload)], "big")
    body = (int.from_bytes(payload, "big") ^ k).to_bytes(len(payload), "big") if payload else b""
    return head + key + body


def fast_frame(payload):
    """A masked text frame with the all-zero key (payload as is): cheap to
    make by the megabyte, and as valid as any other key."""
    n = len(payload)
    head = b"\x81" + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + b"\0\0\0\0" + payload


def request(path="/ws", version=b"13", key=KEY, method=b"GET", proto=b"HTTP/1.1",
            upgrade=b"websocket", connection=b"Upgrade"):
    lines = [method + b" " + path.encode() + b" " + proto, b"Host: t"]
    if upgrade is not None:
        lines.append(b"Upgrade: " + upgrade)
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def read_head(s):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return head


def status_of(gw, req):
    s = gw.raw()
    s.sendall(req)
    head = read_head(s)
    s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert m, head
    return int(m.group(1)), head


def opened(gw, path="/ws", rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", gw.port))
    s.settimeout(5)
    s.sendall(request(path))
    head = read_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def need(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(s):
    b0, b1 = need(s, 2)
    assert not b1 & 0x80, "server frames are not masked"
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", need(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", need(s, 8))[0]
    return b0 & 0x0f, need(s, n)


def close_code(s):
    """The code of the server's close frame: an int, None for a close without
    one, "eof" when the socket ended with no close frame."""
    try:
        while True:
            op, payload = read_frame(s)
            if op == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    except (EOFError, ConnectionResetError):
        return "eof"


def echo_works(gw):
    s = opened(gw)
    s.sendall(frame(1, json.dumps({"service": "demo.echo", "request_id": "fresh",
                                   "data": {"x": 1}}).encode()))
    op, payload = read_frame(s)
    assert op == 1 and json.loads(payload)["request_id"] == "fresh"
    s.sendall(frame(8, b"\x03\xe8"))
    assert close_code(s) == 1000
    s.close()


def closes_with(gw, data, code):
    s = opened(gw)
    s.sendall(data)
    assert close_code(s) == code
    s.close()
    echo_works(gw)


# ---- conformance: frames ----


def test_close_with_a_one_byte_body_is_a_protocol_error(gw):
    closes_with(gw, frame(8, b"\x03"), 1002)


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_invalid_close_codes_are_protocol_errors(gw, code):
    closes_with(gw, frame(8, struct.pack("!H", code)), 1002)


def test_text_that_is_not_utf8_closes_1007(gw):
    closes_with(gw, frame(1, b'{"a": "\xc3\x28"}'), 1007)
    # split across fragments: the bad sequence straddles them
    closes_with(gw, frame(1, b'{"a": "\xe2\x82', fin=False) + frame(0, b'\x28"}'), 1007)


def test_unmasked_client_frames_close_1002(gw):
    closes_with(gw, frame(1, b"{}", mask=False), 1002)


def test_control_frames_over_125_bytes_or_fragmented_close_1002(gw):
    closes_with(gw, frame(9, b"x" * 126), 1002)
    closes_with(gw, frame(9, b"ping", fin=False), 1002)
    closes_with(gw, frame(8, b"\x03\xe8" + b"r" * 124), 1002)


def test_reserved_bits_and_opcodes_close_1002(gw):
    closes_with(gw, frame(1, b"{}", rsv=4), 1002)
    closes_with(gw, frame(3, b""), 1002)
    closes_with(gw, frame(0, b"{}"), 1002)  # a continuation with nothing to continue


def test_messages_over_the_limit_close_1009(gw):
    closes_with(gw, frame(1, b"x" * (65 * 1024)), 1009)
    # fragments that add up past it
    closes_with(gw, frame(1, b"x" * 40000, fin=False) + frame(0, b"x" * 40000), 1009)
    # tiny fragments: each costs wslay some 100 bytes of its own, so a message
    # under the limit in bytes is over it in fragments (was some 100x its size)
    tiny = frame(1, b"[", fin=False) + frame(0, b" ", fin=False) * 2000 + frame(0, b"]")
    closes_with(gw, tiny, 1009)
    closes_with(gw, frame(1, b"", fin=False) +
                frame(0, b"", fin=False) * 1000 + frame(0, b"{}"), 1009)
    # a header announcing 1 TB: refused at its first byte, before anything is buffered
    s = opened(gw)
    s.sendall(frame(1, b"", length=1 << 40) + b"x")
    assert close_code(s) == 1009
    echo_works(gw)


# ---- conformance: handshakes ----


def test_unsupported_version_is_426_with_the_version_spoken(gw):
    for v in (b"8", b"14", b"1"):
        status, head = status_of(gw, request(version=v))
        assert status == 426
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in head
    echo_works(gw)


def test_key_must_be_16_bytes_in_base64(gw):
    for key in (b"abc", b"!!!!!!!!!!!!!!!!!!!!!!==", b"dGhlIHNhbXBsZSBub25jZQab",
                b"dGhlIHNhbXBsZSBub25jZQ=a", b"dGhlIHNhbXBsZSBub25j"):
        assert status_of(gw, request(key=key))[0] == 400, key
    assert status_of(gw, request(key=None))[0] == 400
    echo_works(gw)


def test_handshake_needs_http11_and_get(gw):
    assert status_of(gw, request(proto=b"HTTP/1.0"))[0] == 400
    assert status_of(gw, request(method=b"HEAD"))[0] == 405
    assert status_of(gw, request(method=b"POST"))[0] == 405
    echo_works(gw)


def test_upgrade_and_connection_tokens(gw):
    # no Upgrade at all: this is a WebSocket endpoint, upgrade to it
    status, head = status_of(gw, request(upgrade=None, connection=None, version=None, key=None))
    assert status == 426 and b"\r\nUpgrade: websocket\r\n" in head
    status, head = status_of(gw, request(upgrade=b"h2c"))
    assert status == 426 and b"\r\nUpgrade: websocket\r\n" in head
    # Upgrade: websocket without the Connection token is a broken handshake
    assert status_of(gw, request(connection=b"keep-alive"))[0] == 400
    assert status_of(gw, request(connection=None))[0] == 400
    # tokens are matched as list items, in any case
    s = gw.raw()
    s.sendall(request(connection=b"keep-alive, UPGRADE", upgrade=b"WebSocket"))
    assert read_head(s).startswith(b"HTTP/1.1 101")
    s.close()
    echo_works(gw)


# ---- the output bound ----


def rss_kb(gw):
    with open("/proc/%d/status" % gw.proc.proc.pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def echo_requests(total_bytes, pad=8000):
    """Frames of echo requests, about total_bytes of them, as one block. Big
    ones: the server's kernel buffers take some 4 MB of replies per socket
    before its own queue grows, and few big replies get there sooner."""
    one = fast_frame(json.dumps({"service": "demo.echo", "request_id": 1,
                                 "data": {"pad": "x" * pad}}).encode())
    return one * (total_bytes // len(one) + 1)


def test_client_that_never_reads_is_bounded_and_closed(gw):
    # warm the workers up first: the baseline includes what serving costs
    for _ in range(4):
        echo_works(gw)
    time.sleep(0.3)
    baseline = rss_kb(gw)
    s = opened(gw, rcvbuf=64 * 1024)
    s.setblocking(False)
    block = memoryview(echo_requests(1 << 20))  # sent without copies
    sent, peak, stalled_at, closed_at = 0, baseline, None, None
    deadline = time.time() + 30
    while sent < 64 << 20 and time.time() < deadline:
        peak = max(peak, rss_kb(gw))
        _, w, _ = select.select([], [s], [], 0.2)
        if not w:
            stalled_at = stalled_at or time.time()
            if time.time() - stalled_at > 8:
                break
            continue
        try:
            sent += s.send(block[sent % len(block):])
            stalled_at = None
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed_at = time.time()
            break
    if closed_at is None:
        # the server stopped reading: the socket must go within send_timeout (2s)
        t0 = time.time()
        while time.time() - t0 < 8:
            peak = max(peak, rss_kb(gw))
            try:
                s.send(b"\x81")
            except BlockingIOError:
                time.sleep(0.1)
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed_at = time.time()
                break
    s.close()
    print("\nclient that never reads: sent %.1f MB; RSS %d KB before, %d KB peak"
          % (sent / 1048576.0, baseline, peak))
    assert closed_at is not None, "the socket was not closed"
    assert sent < 48 << 20, "the server kept reading frames it could not answer"
    time.sleep(1.5)  # the heap trim is at most once a second
    after = rss_kb(gw)
    print("RSS after: %d KB" % after)
    if not ASAN:
        assert peak < baseline + 40 * 1024, (baseline, peak)
        assert after < baseline + 30 * 1024, (baseline, after)
    metrics = Http(gw.admin_port).request("GET", "/metrics")[2].decode()
    assert re.search(r"^portico_ws_slow_consumers_total [1-9]", metrics, re.M), metrics
    echo_works(gw)


def test_many_clients_that_never_read_leave_no_memory_behind(gw):
    """40 sockets flood and never read: each is held to its bound, and once
    they are closed the heap goes back to the system (without the trim,
    glibc kept some 75 MB of the worker arenas resident here)."""
    for _ in range(4):
        echo_works(gw)
    time.sleep(0.3)
    baseline = rss_kb(gw)
    socks = [opened(gw, rcvbuf=64 * 1024) for _ in range(40)]
    block = memoryview(echo_requests(1 << 20))  # sent without copies
    for s in socks:
        s.setblocking(False)
    sent = dict((s, 0) for s in socks)
    alive, peak = set(socks), baseline
    deadline = time.time() + 60  # generous: a loaded machine serves them slowly
    while alive and time.time() < deadline:
        peak = max(peak, rss_kb(gw))
        _, writable, _ = select.select([], list(alive), [], 0.2)
        for s in writable:
            try:
                sent[s] += s.send(block[sent[s] % len(block):])
            except BlockingIOError:
                pass
            except OSError:
                alive.discard(s)  # closed by the server: send_timeout passed
    for s in socks:
        s.close()
    print("\n40 clients that never read: sent %.0f MB; RSS %d KB before, %d KB peak"
          % (sum(sent.values()) / 1048576.0, baseline, peak))
    assert not alive, "%d sockets were not closed" % len(alive)
    time.sleep(2)  # the last deferred trim is at most a second after the last close
    after = rss_kb(gw)
    print("RSS after: %d KB" % after)
    if not ASAN:
        assert peak < baseline + 120 * 1024, (baseline, peak)  # about 1.8 MB a socket
        assert after < baseline + 30 * 1024, (baseline, after)
    echo_works(gw)


def test_paused_client_gets_every_reply_once_it_reads(gw):
    """Reads stop and start again: nothing is lost on the way."""
    n = 3000
    frames = b"".join(fast_frame(json.dumps({"service": "demo.echo", "request_id": i,
                                             "data": {"pad": "y" * 700}}).encode())
                      for i in range(n))
    s = opened(gw, rcvbuf=64 * 1024)
    t = threading.Thread(target=s.sendall, args=(frames,))
    t.start()
    time.sleep(0.5)  # replies pile up past max_output (1MB): the server pauses
    seen = set()
    s.settimeout(10)
    while len(seen) < n:
        op, payload = read_frame(s)
        if op == 1:
            seen.add(json.loads(payload)["request_id"])
    t.join(10)
    assert seen == set(range(n))
    s.sendall(frame(8, b"\x03\xe8"))
    assert close_code(s) == 1000


def metric(gw, name):
    text = Http(gw.admin_port).request("GET", "/metrics")[2].decode()
    m = re.search(r"^%s (\d+)" % re.escape(name), text, re.M)
    assert m, text
    return int(m.group(1))


def test_push_to_a_slow_consumer_drops_it(gw):
    before = metric(gw, "portico_ws_slow_consumers_total")
    slow = opened(gw, "/ws-push", rcvbuf=32 * 1024)  # reads nothing from here on
    st, _, body = gw.http().post("/gateway/test.push", {"count": 300, "size": 65536})
    assert st == 200, body
    # the pushes reach the socket's worker in their own time: it is counted
    # as dropped before this side reads a byte (reading would make it keep up)
    deadline = time.time() + 10
    while metric(gw, "portico_ws_slow_consumers_total") <= before:
        assert time.time() < deadline, "the slow consumer was not dropped"
        time.sleep(0.05)
    # the consumer is gone: what the kernel held comes, then the end
    slow.settimeout(10)
    got, ended = 0, False
    t0 = time.time()
    while time.time() - t0 < 20:
        try:
            chunk = slow.recv(1 << 20)
        except ConnectionResetError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        got += len(chunk)
    assert ended, "the slow consumer was not dropped"
    assert got < 300 * 65536 // 2, "most of the pushes were buffered for it"
    # a consumer that keeps up still gets pushes
    fresh = opened(gw, "/ws-push")
    st, _, _ = gw.http().post("/gateway/test.push", {"count": 3, "size": 100})
    assert st == 200
    for _ in range(3):
        op, payload = read_frame(fresh)
        assert op == 1 and payload == b"p" * 100
    fresh.close()
    echo_works(gw)


# ---- the token in the query (browsers cannot set headers on a WebSocket) ----

TOKEN_CONFIG = """
security:
  jwt:
    - name: tokens
      algorithm: HS256
      secret_env: PT_IT_WS_JWT_SECRET
channels:
  websocket:
    - name: ws.token
      url_path: /ws
      service: demo.echo
      security: tokens
      token_query_param: access_token
"""


def test_token_given_twice_in_the_query_is_refused(start_gateway, monkeypatch):
    """Which of two tokens would be the credential is ambiguous: 400, never
    'the first one wins' (nor a 401 that hides the reason)."""
    from conftest import config_head
    from test_security import jwt
    secret = "ws-jwt-secret-that-is-long-enough-0123456789"
    monkeypatch.setenv("PT_IT_WS_JWT_SECRET", secret)
    gw = start_gateway(config_head("workers: 1") + TOKEN_CONFIG)
    good = jwt({"sub": "alice", "exp": int(time.time()) + 600}, secret=secret)
    other = jwt({"sub": "mallory", "exp": int(time.time()) + 600}, secret=secret)
    for query in ("access_token=%s&access_token=%s" % (good, other),
                  "access_token=%s&%%61ccess_token=%s" % (good, other),
                  "access_token=%s&access_token" % good):
        status, head = status_of(gw, request("/ws?" + query))
        assert status == 400, (query, head)
    assert status_of(gw, request("/ws?access_token=" + good))[0] == 101
    assert status_of(gw, request("/ws"))[0] == 401


# ---- what a service answers must fit a text frame ----

LATIN1_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.latin1" }
function M:handle()
  self.response.content_type = "text/plain"
  self.response.payload = "caf\\233"   -- Latin-1, not UTF-8
end
return M
"""


@pytest.mark.parametrize("envelope", [False, True], ids=["plain", "request_id"])
def test_an_answer_that_is_not_utf8_is_an_error_message(start_gateway, tmp_path, envelope):
    """A text frame must be UTF-8 (RFC 6455 5.6): the client gets a 500
    error message, never the bytes, and the socket stays usable."""
    from conftest import BASE_CONFIG
    svc = tmp_path / "services" / "test"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "latin1.lua").write_text(LATIN1_SERVICE)
    cfg = BASE_CONFIG.rstrip("\n") + "\n" + WS_TAIL.replace(
        "service: demo.echo\n      service_list: [demo.echo]",
        "service: test.latin1\n      service_list: [demo.echo, test.latin1]", 1)
    gw = start_gateway(cfg)
    gw.expect_error("not valid UTF-8")
    s = opened(gw)
    # a plain message runs the channel's service; an envelope names it
    msg = {"service": "test.latin1", "request_id": 7, "data": {}} if envelope else {"x": 1}
    s.sendall(frame(1, json.dumps(msg).encode()))
    op, payload = read_frame(s)
    assert op == 1
    reply = json.loads(payload.decode("utf-8"))
    # the cid is hex and may hold "caf": look for the service's text in the message
    assert reply["error"]["status"] == 500 and b"caf\xe9" not in payload, reply
    assert "caf" not in reply["error"]["message"], reply
    s.sendall(frame(1, json.dumps({"service": "demo.echo", "request_id": "after",
                                   "data": {"x": 1}}).encode()))
    op, payload = read_frame(s)
    assert json.loads(payload)["request_id"] == "after"
    s.close()
    echo_works(gw)


# ---- the envelope: what a client sends is checked before it is echoed ----


def call(s, text):
    s.sendall(frame(1, text if isinstance(text, bytes) else text.encode()))
    op, payload = read_frame(s)
    assert op == 1
    return json.loads(payload)


def echoed(reply):
    """The payload demo.echo saw, from an envelope's reply or a plain one."""
    data = reply.get("data", reply)
    if isinstance(data, str):
        data = json.loads(data)
    return data["payload"]


@pytest.mark.parametrize("rid", ["x" * 257, "x" * 60000, 1.5, [1], {"a": 1}, True],
                         ids=["257B", "60KB", "float", "array", "object", "bool"])
def test_request_id_is_bounded_in_size_and_type(gw, rid):
    """request_id is echoed in every reply to the call: only null, an
    integer or a string of at most 256 bytes. Anything else is a 400 whose
    request_id is null (before: echoed whatever it was), and the socket goes
    on."""
    s = opened(gw)
    s.settimeout(10)
    reply = call(s, json.dumps({"service": "demo.echo", "request_id": rid, "data": {}}))
    assert reply["error"]["status"] == 400 and "request_id" in reply["error"]["message"]
    assert reply["request_id"] is None
    reply = call(s, json.dumps({"service": "demo.echo", "request_id": "x" * 256, "data": {"k": 1}}))
    assert reply["request_id"] == "x" * 256 and echoed(reply) == {"k": 1}
    reply = call(s, '{"service": "demo.echo", "request_id": -9223372036854775808, "data": 1}')
    assert reply["request_id"] == -9223372036854775808
    s.close()


def test_json_that_jansson_refuses_is_read_like_a_rest_body(gw):
    """\\u0000 and an integer beyond 64 bits are JSON: a REST body with them
    is served (cjson decodes them), so a WebSocket message is too (before:
    400 "invalid JSON" from jansson). A request_id integer keeps its value."""
    s = opened(gw)
    reply = call(s, '{"service": "demo.echo", "request_id": 5, "data": {"s": "a\\u0000b"}}')
    assert reply["request_id"] == 5 and echoed(reply) == {"s": "a\x00b"}, reply
    reply = call(s, '{"service": "demo.echo", "request_id": 9007199254740992, '
                    '"data": {"n": 123456789012345678901234567890}}')
    assert reply["request_id"] == 9007199254740992, reply
    assert echoed(reply)["n"] == pytest.approx(1.2345678901234568e29), reply
    # a plain message goes to the channel's service as it came
    reply = call(s, '{"n": 123456789012345678901234567890, "s": "\\u0000"}')
    assert echoed(reply) == {"n": pytest.approx(1.2345678901234568e29), "s": "\x00"}, reply
    s.close()


@pytest.mark.parametrize("text", ["[" * 1001 + "]" * 1001,
                                  '{"service": "demo.echo", "data": ' + "[" * 1000 + "]" * 1000 + "}",
                                  "[NaN]", '{"a": 1} x', "[1.]"],
                         ids=["depth-1001", "data-depth", "nan", "trailing", "1."])
def test_json_the_strict_check_refuses_is_a_400_message(gw, text):
    """The strict check of REST bodies decides (depth 1000, RFC 8259's
    grammar): a clean 400 error message, and the socket is kept. data-depth
    (1001 levels with the envelope) was served before, jansson allowing
    2048; the other cases are guards (jansson or the runtime refused them)."""
    s = opened(gw)
    reply = call(s, text)
    assert reply["error"]["status"] == 400 and "invalid JSON" in reply["error"]["message"], reply
    reply = call(s, json.dumps({"service": "demo.echo", "request_id": 1, "data": 2}))
    assert reply["request_id"] == 1
    s.close()


@pytest.mark.parametrize("svc", [1, None, ["demo.echo"], {"x": 1}, "", "a" * 300],
                         ids=["int", "null", "array", "object", "empty", "long"])
def test_a_service_that_is_not_a_name_is_a_400(gw, svc):
    """Guard (passed before): a non-string or malformed service is refused
    with the call's request_id, the socket kept."""
    s = opened(gw)
    reply = call(s, json.dumps({"service": svc, "request_id": "r", "data": {}}))
    assert reply["error"]["status"] == 400 and reply["request_id"] == "r", reply
    s.close()


# ---- frames that never end, pings that are never read ----

WS_SHORT = """
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
      ping_interval: 300ms
      missed_pings: 2
      max_output: 64KB
      send_timeout: 1s
"""


@pytest.fixture
def gw_short(start_gateway):
    from conftest import BASE_CONFIG
    return start_gateway(BASE_CONFIG.rstrip("\n") + "\n" + WS_SHORT)


@pytest.mark.parametrize("half", [b"\x81", b"\x81\xfe\x00", b"\x81\x85\0\0\0\0ab",
                                  b"\x01\x80\0\0\0\0"],
                         ids=["one-byte", "half-length", "half-payload", "unfinished-message"])
def test_a_half_frame_does_not_hold_the_socket(gw_short, half):
    """Guard (passed before): a client that starts a frame (or a fragmented
    message) and never finishes it cannot answer pings: it is closed after
    missed_pings of them, without a close frame."""
    s = opened(gw_short)
    s.sendall(half)
    t0 = time.monotonic()
    s.settimeout(5)
    code = close_code(s)
    assert code == "eof" and time.monotonic() - t0 < 3, code
    s.close()


def test_ping_flood_from_a_client_that_never_reads_is_bounded(gw_short):
    """Guard (passed before): every ping gets a pong queued; a client that
    never reads them is held to max_output (its frames wait) and closed
    after send_timeout, like one that floods messages."""
    s = opened(gw_short, rcvbuf=4096)
    s.setblocking(False)
    ping = frame(9, b"p" * 125)
    chunk = ping * 500
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 6:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        pytest.fail("a client flooding pings was not closed")
    # the server stopped reading at the bound: far less went in than 6 s allow
    assert sent < 64 * 1024 * 1024, sent
    s.close()
    echo_works(gw_short)


# ---- more of the input side (guards: each passed before) ----


def padded(n):
    """A JSON text of exactly n bytes (a plain message for demo.echo)."""
    return b'"' + b"a" * (n - 2) + b'"'


def test_a_message_of_exactly_max_message_size_passes_one_byte_more_is_1009(gw):
    s = opened(gw)
    s.settimeout(10)
    s.sendall(frame(1, padded(64 * 1024)))
    op, payload = read_frame(s)
    assert op == 1 and b"error" not in payload[:20], payload[:200]
    # in fragments: the same sum
    half = padded(64 * 1024)
    s.sendall(frame(1, half[:30000], fin=False) + frame(0, half[30000:]))
    op, payload = read_frame(s)
    assert op == 1 and b"error" not in payload[:20]
    s.close()
    closes_with(gw, frame(1, padded(64 * 1024 + 1)), 1009)
    closes_with(gw, frame(1, half[:30000], fin=False) + frame(0, half[30000:] + b" "), 1009)


def test_pings_between_fragments_are_answered_and_the_message_kept(gw):
    """RFC 6455 5.4: control frames may come between the fragments of a
    message; each ping gets its pong and the message arrives whole."""
    s = opened(gw)
    msg = json.dumps({"service": "demo.echo", "request_id": "frag", "data": {"k": "v" * 50}})
    parts = [msg[i:i + 7].encode() for i in range(0, len(msg), 7)]
    data = b""
    for i, p in enumerate(parts):
        op = 1 if i == 0 else 0
        data += frame(op, p, fin=i == len(parts) - 1)
        if i < len(parts) - 1:
            data += frame(9, b"p%d" % i)
    s.sendall(data)
    pongs, reply = 0, None
    while reply is None:
        op, payload = read_frame(s)
        if op == 10:
            pongs += 1
        elif op == 1:
            reply = json.loads(payload)
    assert reply["request_id"] == "frag" and echoed(reply) == {"k": "v" * 50}
    assert pongs == len(parts) - 1
    s.close()


def test_a_client_that_closes_and_keeps_sending_is_not_served(gw):
    """After its close, a client's messages run nothing and the socket
    ends (the server answers the close, then drops what follows)."""
    s = opened(gw)
    s.sendall(frame(8, b"\x03\xe8") +
              frame(1, json.dumps({"service": "demo.echo", "request_id": "late",
                                   "data": {}}).encode()) * 50 + frame(9, b"x") * 50)
    frames = []
    try:
        while True:
            frames.append(read_frame(s))
    except (EOFError, ConnectionResetError, socket.timeout):
        pass
    assert frames and frames[0][0] == 8 and struct.unpack("!H", frames[0][1][:2])[0] == 1000
    assert all(op != 1 for op, _ in frames), frames
    s.close()
    echo_works(gw)


BADPUSH_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.push" }
function M:handle()
  local how, ok, err = self.request.payload.how
  if how == "host" then  -- the C primitive itself, past portico.websocket
    ok, err = pcall(require("portico.host").ws_push, "ws.push", nil, "caf\\233")
  else
    ok, err = pcall(self.out.websocket.send, self.out.websocket, "ws.push", nil,
                    how == "table" and { s = "caf\\233" } or "caf\\233")
  end
  self.response.payload = { ok = ok, err = tostring(err) }
end
return M
"""


@pytest.mark.parametrize("how", ["string", "table", "host"])
def test_a_push_that_is_not_utf8_is_refused_at_the_caller(start_gateway, tmp_path, how):
    """A push becomes a text frame, which RFC 6455 5.6 requires to be UTF-8:
    Latin-1 from a service (as a string or inside a table cjson encodes
    byte for byte) raises at the caller (before: sent to every socket as
    an invalid text frame) and no socket gets a frame."""
    from conftest import BASE_CONFIG
    svc = tmp_path / "services" / "test"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "push.lua").write_text(BADPUSH_SERVICE)
    cfg = BASE_CONFIG.replace("test.raise, test.slow]", "test.raise, test.slow, test.push]")
    gw = start_gateway(cfg.rstrip("\n") + "\n" + WS_TAIL)
    s = opened(gw, "/ws-push")
    st, _, body = gw.http().post("/gateway/test.push", {"how": how})
    assert st == 200, body
    doc = json.loads(body)
    assert doc["ok"] is False and "UTF-8" in doc["err"], doc
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
