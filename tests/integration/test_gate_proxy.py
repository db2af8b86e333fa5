"""The proxy and outgoing HTTP against a hostile backend: a raw-socket server
of the test's own that records every byte it receives, per connection, and
answers with whatever bytes the test scripts. Each case checks what the
client gets (status, or the close), what the backend received (which request
on which connection), and that the next well-formed request on a fresh client
connection is served as it should be.
"""
import json
import os
import signal
import socket
import textwrap
import threading
import time

import pytest

from conftest import config_head, read_until_close
from test_outgoing_http import CONFIG as OUT_CONFIG, HTTP_SERVICE

CLOSE = "close"  # a step: the backend closes the connection


def ok(body, extra=""):
    """A well-formed keep-alive answer."""
    body = body.encode() if isinstance(body, str) else body
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + extra.encode() +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


class Request:
    def __init__(self, conn, n, head, body):
        self.conn, self.n, self.head, self.body = conn, n, head, body
        lines = head.decode("latin1").split("\r\n")
        self.method, self.target, _ = lines[0].split(" ", 2)
        self.path = self.target.partition("?")[0]
        self.headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()


class Hostile:
    """A backend on 127.0.0.1 that reads requests (Content-Length or chunked
    bodies) and asks answer(backend, request) what to send: a list of steps,
    bytes (sent as they are), a float (sleep that long), a threading.Event
    (wait until it is set) or CLOSE. With
    early=True, answer is asked as soon as the head is in, before the body
    is read. Every byte received is kept in conns[connection number]."""

    def __init__(self, answer, early=False):
        self.answer, self.early = answer, early
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []     # bytes received, per connection
        self.requests = []  # Request, in arrival order
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(b"")
                no = len(self.conns) - 1
            threading.Thread(target=self.serve, args=(s, no), daemon=True).start()

    def recv(self, s, no):
        data = s.recv(65536)
        with self.lock:
            self.conns[no] += data
        return data

    def serve(self, s, no):
        buf, n = b"", 0
        s.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = self.recv(s, no)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                req = Request(no, n, head, None)
                n += 1
                if self.early:
                    with self.lock:
                        self.requests.append(req)
                if self.early and self.run(s, self.answer(self, req)):
                    return
                body, buf = self.read_body(s, no, req, buf)
                req.body = body
                if not self.early:
                    with self.lock:
                        self.requests.append(req)
                if not self.early and self.run(s, self.answer(self, req)):
                    return
        except OSError:
            pass
        finally:
            s.close()

    def read_body(self, s, no, req, buf):
        def need(k):
            nonlocal buf
            while len(buf) < k:
                data = self.recv(s, no)
                if not data:
                    raise ConnectionError("eof in body")
                buf += data
        if req.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buf:
                    need(len(buf) + 1)
                line, _, buf = buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while not buf.startswith(b"\r\n"):  # trailer lines, then the blank one
                        while b"\r\n" not in buf:
                            need(len(buf) + 1)
                        buf = buf.partition(b"\r\n")[2]
                    return body, buf[2:]
                need(size + 2)
                body, buf = body + buf[:size], buf[size + 2:]
        size = int(req.headers.get("content-length", "0"))
        need(size)
        return buf[:size], buf[size:]

    @staticmethod
    def run(s, steps):
        """Runs the steps; True when the connection was closed."""
        for step in steps or []:
            if step is CLOSE:
                s.close()
                return True
            if isinstance(step, float):
                time.sleep(step)
            elif isinstance(step, threading.Event):
                step.wait(10)
            else:
                s.sendall(step)
        return False

    def on(self, no):
        """The requests that arrived on connection no, as (method, target)."""
        return [(r.method, r.target) for r in self.requests if r.conn == no]

    def close(self):
        self.sock.close()


@pytest.fixture
def hostile():
    made = []

    def make(answer, early=False):
        h = Hostile(answer, early)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


PROXY = config_head("workers: 1", log="level: info", dirs="{root}/services") + """channels:
  http_proxy:
    - name: gate
      url_prefix: /g
      connect_timeout: 1s
      read_timeout: {read_timeout}
      fail_timeout: 1s
      services:
        h:
          targets: [http://127.0.0.1:{port_h}]
"""


@pytest.fixture
def gate(start_gateway):
    def start(backend, read_timeout="2s"):
        gw = start_gateway(PROXY, port_h=backend.port, read_timeout=read_timeout)
        return gw
    return start


def exchange(gw, raw, timeout=3.0):
    """Sends raw bytes on a fresh client connection; returns (status, headers,
    body, closed) of the one answer (Content-Length or chunked framing), or
    (None, {}, data, closed) when no whole head came."""
    s = gw.raw(timeout)
    s.sendall(raw)
    return read_answer(s, timeout)


def read_answer(s, timeout=3.0, close=True, head=False):
    """One answer from s (head: to a HEAD request, so without a body)."""
    s.settimeout(timeout)
    buf, closed = b"", False

    def more():
        nonlocal buf, closed
        try:
            data = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            data = b""
        if not data:
            closed = True
        buf += data
        return bool(data)
    while b"\r\n\r\n" not in buf:
        if not more():
            return None, {}, buf, True
    top, _, rest = buf.partition(b"\r\n\r\n")
    lines = top.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    buf = rest
    body = b""
    if head:
        complete = True
    elif "content-length" in headers:
        n = int(headers["content-length"][0])
        while len(buf) < n and more():
            pass
        body, buf = buf[:n], buf[n:]
        complete = len(body) == n
    elif "chunked" in headers.get("transfer-encoding", [""])[0]:
        complete = False
        while True:
            while b"\r\n" not in buf and more():
                pass
            if b"\r\n" not in buf:
                break
            line, _, buf = buf.partition(b"\r\n")
            size = int(line, 16)
            while len(buf) < size + 2 and more():
                pass
            if len(buf) < size + 2:
                break
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                complete = True
                break
    else:
        complete = status in (204, 304) or status < 200
        if not complete:
            while more():
                pass
            body, buf = buf, b""
    if close:
        # what else comes on this connection (nothing, or the close)
        s.settimeout(0.3)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    closed = True
                    break
                buf += data
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
        s.close()
    headers["_complete"] = complete
    headers["_rest"] = buf
    return status, headers, body, closed


def get(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: client.example\r\n%s\r\n" % (path, extra)).encode()


def error_of(body):
    return json.loads(body)["error"]


def served_after(gw, backend, marker="after"):
    """The next well-formed request, on a fresh client connection, gets its
    own answer."""
    status, _, body, _ = exchange(gw, get("/g/h/" + marker))
    assert (status, body) == (200, ("answer:/" + marker).encode())


def normal(b, req):
    """The well-formed answer every test falls back on: its own path."""
    return [ok("answer:" + req.path)]


# ---- 1. pool integrity -------------------------------------------------------


def frozen(gw):
    """A context in which portico's process is stopped (SIGSTOP): bytes sent
    meanwhile all wait in its sockets and are seen in one loop turn, in the
    order they arrived."""
    class Frozen:
        def __enter__(self):
            pid = gw.proc.proc.pid
            os.kill(pid, signal.SIGSTOP)
            deadline = time.time() + 5
            while time.time() < deadline:  # the signal is asynchronous: wait for every thread
                states = []
                for task in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/stat" % (pid, task)) as f:
                        states.append(f.read().rpartition(")")[2].split()[0])
                if all(st in ("T", "t") for st in states):
                    return
                time.sleep(0.005)
            raise AssertionError("portico did not stop")

        def __exit__(self, *exc):
            os.kill(gw.proc.proc.pid, signal.SIGCONT)
    return Frozen()



def next_two_on_a_fresh_connection(gw, backend, first):
    """The two requests after the first are answered right, on the backend's
    second connection: the first one carried the first request only."""
    for path in ("/two", "/three"):
        status, _, body, _ = exchange(gw, get("/g/h" + path))
        assert (status, body) == (200, b"answer:" + path.encode())
    assert backend.on(0) == [first]
    assert [t for _, t in backend.on(1)] == ["/two", "/three"]

def test_a_late_answer_reaches_nobody_three_clients(gate, hostile):
    """Three clients one after the other on one keep-alive pool. The first
    answer is followed by a second one nobody asked for, which arrives in the
    same loop turn as the second client's request. Before: the second client
    got the stray answer (the pooled connection was handed over unread)."""
    late = threading.Event()

    def answer(b, req):
        if req.path == "/one":
            return [ok("first"), late, ok("stray")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, _, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"first")
    second, third = gw.raw(), gw.raw()
    time.sleep(0.2)  # both accepted and idle
    with frozen(gw):
        second.sendall(get("/g/h/two"))
        time.sleep(0.05)
        late.set()
        time.sleep(0.2)  # the stray answer is in portico's socket too
    status, _, body, _ = read_answer(second)
    assert (status, body) == (200, b"answer:/two")
    third.sendall(get("/g/h/three"))
    status, _, body, _ = read_answer(third)
    assert (status, body) == (200, b"answer:/three")
    # /one alone on the first connection, byte for byte; the stray reached nobody
    assert backend.on(0) == [("GET", "/one")]
    assert backend.conns[0] == backend.requests[0].head + b"\r\n\r\n"
    assert backend.on(1) == [("GET", "/two"), ("GET", "/three")]
    served_after(gw, backend)


def test_a_late_answer_on_an_idle_connection_closes_it(gate, hostile):
    """The stray answer comes while the connection waits in the pool."""
    def answer(b, req):
        if req.path == "/one":
            return [ok("first"), 0.15, ok("stray")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, _, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"first")
    time.sleep(0.5)
    next_two_on_a_fresh_connection(gw, backend, ("GET", "/one"))


def test_a_stray_answer_right_behind_the_first(gate, hostile):
    """The stray answer comes in the same segment as the real one: the
    connection is not pooled."""
    def answer(b, req):
        if req.path == "/one":
            return [ok("first") + ok("stray")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, _, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"first")
    next_two_on_a_fresh_connection(gw, backend, ("GET", "/one"))


@pytest.mark.parametrize("method,code", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_a_body_after_a_bodiless_answer_reaches_nobody(gate, hostile, method, code):
    """HEAD, 204 and 304 answers have no body, whatever Content-Length says
    (a 304 gives its representation's). Before: portico waited for 5 body
    bytes, and took them from what the backend sent next."""
    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % code, 1.0, ok("stray")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    t0 = time.time()
    s = gw.raw()
    s.sendall(("%s /g/h/one HTTP/1.1\r\nHost: x\r\n\r\n" % method).encode())
    status, headers, body, _ = read_answer(s, close=False, head=method == "HEAD")
    assert (status, body) == (code, b"")
    assert time.time() - t0 < 0.8  # not held until the backend sent more
    assert ("content-length" in headers) == (code == 200)  # HEAD keeps the length
    time.sleep(1.5)  # the stray answer comes while the connection is idle
    next_two_on_a_fresh_connection(gw, backend, (method, "/one"))
    s.close()


NOT_POOLED = {
    "connection-close": ok("first", "Connection: close\r\n"),
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    "close-delimited": [b"HTTP/1.1 200 OK\r\n\r\nfirst", CLOSE],
}


@pytest.mark.parametrize("case", sorted(NOT_POOLED))
def test_answers_that_end_their_connection_are_not_pooled(gate, hostile, case):
    """Connection: close, HTTP/1.0 without keep-alive, a body delimited by
    the close: the next request goes on a fresh connection."""
    def answer(b, req):
        if req.path == "/one":
            steps = NOT_POOLED[case]
            return steps if isinstance(steps, list) else [steps]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, _, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"first")
    next_two_on_a_fresh_connection(gw, backend, ("GET", "/one"))


def test_an_answer_before_the_whole_request_body_is_not_pooled(gate, hostile):
    """The backend answers as soon as the head is in; the rest of the body
    comes later. The connection is not reused: the body's bytes were still
    on their way to it."""
    def answer(b, req):
        if req.path == "/upload":
            return [ok("early")]
        return normal(b, req)
    backend = hostile(answer, early=True)
    gw = gate(backend)
    s = gw.raw()
    s.sendall(b"POST /g/h/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    status, _, body, _ = read_answer(s, close=False)
    assert (status, body) == (200, b"early")
    time.sleep(0.1)
    try:
        s.sendall(b"56789")
    except OSError:
        pass
    s.close()
    time.sleep(0.2)
    next_two_on_a_fresh_connection(gw, backend, ("POST", "/upload"))
    assert b"/two" not in backend.conns[0]


# ---- 2. answers are checked --------------------------------------------------

BAD_HEADS = {
    "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nno",
    "status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nno",
    "name-not-token": b"HTTP/1.1 200 OK\r\nX(Y): 1\r\nContent-Length: 2\r\n\r\nno",
    "value-nul": b"HTTP/1.1 200 OK\r\nX-V: a\x00b\r\nContent-Length: 2\r\n\r\nno",
    "value-cr": b"HTTP/1.1 200 OK\r\nX-V: a\rb\r\nContent-Length: 2\r\n\r\nno",
    "value-ctl": b"HTTP/1.1 200 OK\r\nX-V: a\x01b\r\nContent-Length: 2\r\n\r\nno",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nno",
    "content-length-list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nno",
    "content-length-sign": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nno",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nno",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
    "te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
    "te-and-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nno\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_HEADS))
def test_a_refused_answer_is_a_json_502_and_not_retried(gate, hostile, case):
    """Each answer is refused before a byte of it reaches the client: a JSON
    502 with the cid; the GET is not sent again (one request on the backend),
    and the next request is served on a fresh connection."""
    def answer(b, req):
        if req.path == "/one":
            return [BAD_HEADS[case], 0.5, CLOSE]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    gw.expect_error("malformed answer")
    status, headers, body, _ = exchange(gw, get("/g/h/one", "X-Correlation-Id: cid-bad-1\r\n"))
    assert status == 502, (status, body)
    err = error_of(body)
    assert err["cid"] == "cid-bad-1" and "malformed answer" in err["message"], err
    assert b"no" not in body.replace(b"not", b"").replace(b"nobody", b"")
    served_after(gw, backend)
    assert backend.on(0) == [("GET", "/one")]
    assert backend.on(1) == [("GET", "/after")]


def test_a_malformed_chunk_after_bytes_reached_the_client_closes_it(gate, hostile):
    """Once part of the answer is out, a bad chunk can only close the client's
    connection: the answer it has is visibly incomplete."""
    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0.2,
                    b"zz\r\n", 0.5, CLOSE]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    gw.expect_error("malformed answer")
    status, headers, body, closed = exchange(gw, get("/g/h/one"))
    assert status == 200 and body == b"hello"
    assert closed and not headers["_complete"]  # no last chunk: the client knows
    served_after(gw, backend)
    assert backend.on(0) == [("GET", "/one")]


def test_interim_answers_are_not_the_answer(gate, hostile):
    """100 and 103 before the real answer are skipped, and never carry a
    body, whatever they say: before, a 100 with Content-Length ate the start
    of the real answer."""
    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n", 0.1,
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
                    ok("final")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, headers, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"final")
    assert headers["_rest"] == b""
    status, _, body, _ = exchange(gw, get("/g/h/two"))
    assert (status, body) == (200, b"answer:/two")
    assert backend.on(0) == [("GET", "/one"), ("GET", "/two")]  # pooled: it ended cleanly


def test_trailers_are_dropped_both_ways(gate, hostile):
    """A backend's trailers never reach the client (200 of them: before, the
    128th ended the answer mid-way), and a client's never reach the backend."""
    trailers = b"".join(b"X-T%d: secret\r\n" % i for i in range(200))

    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T0\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, headers, body, closed = exchange(gw, get("/g/h/one"))
    assert (status, body, closed) == (200, b"hello", False)
    assert headers["_complete"] and headers["_rest"] == b""
    assert "trailer" not in headers
    s = gw.raw()
    s.sendall(b"POST /g/h/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\nX-Client-Trailer: secret\r\n\r\n")
    status, _, body, _ = read_answer(s)
    assert (status, body) == (200, b"answer:/up")
    received = backend.conns[0]
    assert received.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), received
    assert b"X-Client-Trailer" not in received and b"secret" not in received


# ---- 3. no protocol switch nobody asked for ---------------------------------

def test_a_101_nobody_asked_for_is_a_502(gate, hostile):
    """A 101 to a plain GET: 502, and what the client sends next is a new
    request, routed and proxied as one, never bytes into the backend's
    socket."""
    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n", 1.0, CLOSE]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    gw.expect_error("malformed answer")
    s = gw.raw()
    s.sendall(get("/g/h/one"))
    status, headers, body, closed = read_answer(s, close=False)
    assert status == 502 and "101" in error_of(body)["message"]
    s.sendall(get("/g/h/next"))
    status, _, body, _ = read_answer(s)
    assert (status, body) == (200, b"answer:/next")
    assert backend.on(0) == [("GET", "/one")]
    assert backend.conns[0].count(b"GET") == 1  # nothing else went down that socket
    assert backend.on(1) == [("GET", "/next")]
    assert backend.requests[1].headers["via"] == "1.1 portico"
    served_after(gw, backend)


def test_a_101_to_another_protocol_is_a_502(gate, hostile):
    """The client asked for websocket; the backend switches to h2c."""
    def answer(b, req):
        if req.path == "/ws":
            return [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                    b"Connection: Upgrade\r\n\r\n", 1.0, CLOSE]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    gw.expect_error("malformed answer")
    s = gw.raw()
    s.sendall(b"GET /g/h/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, headers, body, closed = read_answer(s, close=False)
    assert status == 502 and "101" in error_of(body)["message"]
    try:
        s.sendall(b"\x81\x85\x00\x00\x00\x00hello")
    except OSError:
        pass
    assert read_until_close(s)[1]
    time.sleep(0.2)
    assert backend.on(0) == [("GET", "/ws")]
    assert b"hello" not in backend.conns[0]
    served_after(gw, backend)


# ---- 4. nothing internal leaks -----------------------------------------------

LEAKY = config_head("workers: 1", log="level: info", dirs="{root}/services") + """channels:
  http_proxy:
    - name: gate
      url_prefix: /g
      connect_timeout: 1s
      read_timeout: 1s
      services:
        down:
          targets: [http://127.0.0.1:{dead}]
        slow:
          targets: [http://127.0.0.1:{port_h}]
        nameless:
          targets: [http://no-such-host.invalid:{dead}]
"""


def test_error_answers_name_no_internal_address(start_gateway, hostile):
    from amqp_support import free_port

    def answer(b, req):
        if req.path == "/slow":
            return [3.0]
        if req.path == "/garbage":
            return [b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n"]
        return normal(b, req)
    backend = hostile(answer)
    dead = free_port()
    gw = start_gateway(LEAKY, port_h=backend.port, dead=dead)
    gw.expect_error("cannot connect|did not answer|malformed|cannot resolve")
    for path, code, cid in (("/g/down/x", 502, "leak-1"), ("/g/slow/slow", 504, "leak-2"),
                            ("/g/slow/garbage", 502, "leak-3"), ("/g/nameless/x", 502, "leak-4")):
        status, _, body, _ = exchange(gw, get(path, "X-Correlation-Id: %s\r\n" % cid))
        assert status == code, (path, body)
        err = error_of(body)
        assert err["cid"] == cid
        for secret in (b"127.0.0.1", str(dead).encode(), str(backend.port).encode(),
                       b"no-such-host"):
            assert secret not in body, (path, body)
    # the log has the details, with the cid
    details = [e for e in gw.log_lines() if e.get("level") in ("warn", "error") and
               e.get("cid", "").startswith("leak-")]
    text = json.dumps(details)
    assert "127.0.0.1:%d" % dead in text and "127.0.0.1:%d" % backend.port in text
    assert "no-such-host.invalid" in text
    status, _, body, _ = exchange(gw, get("/g/slow/fine"))
    assert (status, body) == (200, b"answer:/fine")


# ---- 5. bounded heads, hop-by-hop fields --------------------------------------

def test_interim_answers_forever_are_a_502(gate, hostile):
    """1xx answers without end: each is small, together they pass the head
    limit. Before: read for ever."""
    flood = b"HTTP/1.1 100 Continue\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"

    def answer(b, req):
        if req.path == "/one":
            return [flood] * 200 + [5.0]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend, read_timeout="10s")
    gw.expect_error("malformed answer")
    t0 = time.time()
    status, _, body, _ = exchange(gw, get("/g/h/one"), timeout=8)
    assert status == 502 and "64 KB" in error_of(body)["message"], body
    assert time.time() - t0 < 3
    served_after(gw, backend)


def test_a_head_that_trickles_in_for_ever_times_out(gate, hostile):
    """A header line every 100 ms: the head has one read_timeout, not one per
    read. Before: every read started the time-out again. A whole 1xx answer
    (102 Processing from a slow target) does start it again."""
    def answer(b, req):
        if req.path == "/one":
            return [b"HTTP/1.1 200 OK\r\n"] + [0.1, b"X-Drip: 1\r\n"] * 60
        if req.path == "/processing":
            return [0.7, b"HTTP/1.1 102 Processing\r\n\r\n"] * 3 + [0.7, ok("done")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend, read_timeout="1s")
    gw.expect_error("did not answer")
    t0 = time.time()
    status, _, body, _ = exchange(gw, get("/g/h/one"), timeout=8)
    assert status == 504, body
    assert time.time() - t0 < 2.5
    served_after(gw, backend)
    status, _, body, _ = exchange(gw, get("/g/h/processing"), timeout=8)
    assert (status, body) == (200, b"done")


def test_every_connection_field_of_the_backend_is_honoured(gate, hostile):
    """Two Connection fields: what each names stays on the backend's hop.
    Before: only the last one counted."""
    def answer(b, req):
        if req.path == "/one":
            return [ok("hop", "Connection: X-First\r\nX-First: secret1\r\n"
                           "Connection: keep-alive, X-Second\r\nX-Second: secret2\r\n"
                           "Keep-Alive: timeout=5\r\nX-Kept: yes\r\n")]
        return normal(b, req)
    backend = hostile(answer)
    gw = gate(backend)
    status, headers, body, _ = exchange(gw, get("/g/h/one"))
    assert (status, body) == (200, b"hop")
    assert headers["x-kept"] == ["yes"]
    for name in ("x-first", "x-second", "keep-alive", "connection"):
        assert name not in headers, headers
    # the client's side too
    s = gw.raw()
    s.sendall(b"GET /g/h/two HTTP/1.1\r\nHost: x\r\nConnection: X-A\r\nConnection: X-B\r\n"
              b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n")
    assert read_answer(s)[0] == 200
    seen = backend.requests[-1].headers
    assert "x-a" not in seen and "x-b" not in seen and seen["x-c"] == "3"


# ---- outgoing HTTP from a Lua service ----------------------------------------

@pytest.fixture
def lua_gate(start_gateway, tmp_path):
    def go(backend, timeout="2s"):
        os.makedirs(tmp_path / "services" / "http", exist_ok=True)
        with open(tmp_path / "services" / "http" / "call.lua", "w") as f:
            f.write(textwrap.dedent(HTTP_SERVICE))
        return start_gateway(OUT_CONFIG, targets="http://127.0.0.1:%d" % backend.port,
                             timeout=timeout, workers=1)
    return go


def lua_call(gw, path, client=None, fn="get"):
    c = client or gw.http()
    status, _, body = c.post("/gateway/t.http", {"fn": fn, "path": path})
    assert status == 200, body
    return json.loads(body)


def test_lua_a_late_answer_reaches_no_other_call(lua_gate, hostile):
    late = threading.Event()

    def answer(b, req):
        if req.path == "/one":
            return [ok("first"), late, ok("stray")]
        return normal(b, req)
    backend = hostile(answer)
    gw = lua_gate(backend)
    assert lua_call(gw, "/one")["res"]["body"] == "first"
    second, third = gw.http(), gw.http()
    second.conn.connect()
    third.conn.connect()
    time.sleep(0.2)
    out = {}
    th = threading.Thread(target=lambda: out.update(r=lua_call(gw, "/two", second)))
    with frozen(gw):
        th.start()
        time.sleep(0.1)  # the client's request waits in portico's socket
        late.set()
        time.sleep(0.2)
    th.join(10)
    assert out["r"]["res"]["body"] == "answer:/two", out
    assert lua_call(gw, "/three", third)["res"]["body"] == "answer:/three"
    assert backend.on(0) == [("GET", "/one")]
    assert backend.on(1) == [("GET", "/two"), ("GET", "/three")]


LUA_BAD = {
    "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nno",
    "value-ctl": b"HTTP/1.1 200 OK\r\nX-V: a\x01b\r\nContent-Length: 2\r\n\r\nno",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nno",
    "unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\n\r\nno",
}


@pytest.mark.parametrize("case", sorted(LUA_BAD))
def test_lua_a_bad_answer_is_an_error_value(lua_gate, hostile, case):
    def answer(b, req):
        if req.path == "/one":
            return [LUA_BAD[case], 5.0, CLOSE]
        return normal(b, req)
    backend = hostile(answer)
    gw = lua_gate(backend)
    t0 = time.time()
    out = lua_call(gw, "/one")
    assert out.get("res") is None and out["err"].startswith("crm: bad answer ("), out
    assert "malformed answer" in out["err"]
    assert "127.0.0.1:%d" % backend.port in out["err"]  # a service may see where
    assert time.time() - t0 < 3  # not when the backend closes
    assert lua_call(gw, "/two")["res"]["body"] == "answer:/two"
    assert backend.on(0) == [("GET", "/one")]
    assert backend.on(1) == [("GET", "/two")]

