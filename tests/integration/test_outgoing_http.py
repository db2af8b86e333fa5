"""Outgoing HTTP connections (self.out.http) over real sockets: a service
calls the test's own backend (an HTTP/1.1 server in a thread) through an
outgoing.http connection. Each test reads like a Test::Nginx block: config,
request, what the backend and the client see, nothing unexpected in the log.
"""
import http.server
import json
import os
import signal
import socket
import textwrap
import threading
import time
import urllib.parse

import pytest

from amqp_support import free_port
from conftest import config_head

CONFIG = config_head("""
    workers: {workers}
    drain_timeout: 10s
""") + """channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [demo.echo, t.http]
outgoing:
  http:
    - name: crm
      targets: [{targets}]
      connect_timeout: 2s
      timeout: {timeout}
      keepalive: 8
      max_fails: 1
      fail_timeout: 1s
"""

# One service runs any call the test describes in its payload:
# {conn, fn, path, data, opts, verb, strict} -> {res = {...}} or {err = "..."}
HTTP_SERVICE = """
local service = require "portico.service"
local host = require "portico.host"
local M = service.new { name = "t.http" }

function M:handle()
  local p = self.request.payload
  local c = self.out.http[p.conn or "crm"]
  local t0 = host.now()
  local res, err
  if p.fn == "request" then
    res, err = c:request(p.verb, p.path, p.opts)
  elseif p.fn == "post" or p.fn == "put" or p.fn == "patch" then
    res, err = c[p.fn](c, p.path, p.data, p.opts)
  else
    res, err = c[p.fn or "get"](c, p.path, p.opts)
  end
  if not res and p.strict then return self:error(502, err) end
  if res and p.drop_body then res.body = #res.body end
  self.response.payload = { res = res, err = err, seconds = host.now() - t0, worker = host.worker }
end

return M
"""


class Backend:
    """An HTTP/1.1 server (keep-alive) that records every request.

    /echo            200, JSON of what arrived
    /slow?delay=S    the same, after S seconds
    /headers         repeated headers, text/plain
    /big?size=N      N bytes with Content-Length; &chunked=1: chunked
    /status?code=C   that status, JSON body
    """

    def __init__(self):
        self.requests = []
        self.slow_started = threading.Event()
        self.slow_done = threading.Event()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path, _, query = self.path.partition("?")
                q = dict(urllib.parse.parse_qsl(query))
                rec = {"method": self.command, "target": self.path, "path": path, "query": query,
                       "headers": list(self.headers.items()), "body": body,
                       "client_port": self.client_address[1]}
                backend.requests.append(rec)
                if path == "/slow":
                    backend.slow_started.set()
                    time.sleep(float(q.get("delay", "1")))
                    backend.slow_done.set()
                if path == "/headers":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Set-Cookie", "a=1")
                    self.send_header("Set-Cookie", "b=2")
                    self.send_header("X-Multi", "one")
                    self.send_header("x-multi", "two")
                    self.send_header("Content-Length", "5")
                    self.end_headers()
                    self.wfile.write(b"hello")
                    return
                if path == "/big":
                    size = int(q["size"])
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    chunked = q.get("chunked") == "1"
                    if chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(size))
                    self.end_headers()
                    piece = b"x" * 65536
                    try:
                        left = size
                        while left:
                            part = piece[:min(left, len(piece))]
                            left -= len(part)
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked
                                             else part)
                        if chunked:
                            self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        pass  # portico gave up reading: that is the point
                    self.close_connection = True
                    return
                status = int(q.get("code", "200")) if path == "/status" else 200
                out = json.dumps({"method": self.command, "path": path, "query": query,
                                  "body": body.decode("latin-1")}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Backend", "yes")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any
            do_PROPFIND = handle_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


@pytest.fixture
def start(start_gateway, tmp_path):
    """start(targets=[...], timeout=..., workers=...) -> a gateway whose crm
    connection points at targets, with t.http loaded."""

    def go(targets, timeout="10s", workers=1):
        os.makedirs(tmp_path / "services" / "http", exist_ok=True)
        with open(tmp_path / "services" / "http" / "call.lua", "w") as f:
            f.write(textwrap.dedent(HTTP_SERVICE))
        return start_gateway(CONFIG, targets=", ".join("http://127.0.0.1:%d" % p for p in targets),
                             timeout=timeout, workers=workers)

    return go


def call(gw, payload, headers=None, client=None):
    c = client or gw.http()
    status, h, body = c.post("/gateway/t.http", payload, headers)
    return status, h, json.loads(body)


def header_map(pairs):
    return {k.lower(): v for k, v in pairs}


def test_get_with_query_and_headers_and_post_json(start, backend):
    gw = start([backend.port])
    status, h, out = call(gw, {"fn": "get", "path": "/echo", "opts": {
        "query": {"q": "a b&c", "page": 2, "tag": ["x", "y"]},
        "headers": {"X-Tenant": "acme", "X-Many": ["1", "2"]}}},
        headers={"X-Correlation-Id": "cid-out-1"})
    assert status == 200, out
    res = out["res"]
    assert res["status"] == 200
    assert res["headers"]["content-type"] == "application/json"
    assert res["headers"]["x-backend"] == "yes"
    assert res["json"] == {"method": "GET", "path": "/echo", "query": "page=2&q=a%20b%26c&tag=x&tag=y",
                           "body": ""}
    assert json.loads(res["body"]) == res["json"]

    got = backend.requests[-1]
    assert got["method"] == "GET"
    assert got["target"] == "/echo?page=2&q=a%20b%26c&tag=x&tag=y"
    assert got["body"] == b""
    names = [k.lower() for k, _ in got["headers"]]
    assert sorted(names) == sorted(["host", "x-tenant", "x-many", "x-many", "user-agent", "accept",
                                    "x-correlation-id"])
    hm = header_map(got["headers"])
    assert hm["host"] == "127.0.0.1:%d" % backend.port
    assert hm["x-tenant"] == "acme"
    assert [v for k, v in got["headers"] if k.lower() == "x-many"] == ["1", "2"]
    assert hm["user-agent"] == "portico"
    assert hm["accept"] == "*/*"
    assert hm["x-correlation-id"] == "cid-out-1"  # the caller's cid flows downstream

    status, h, out = call(gw, {"fn": "post", "path": "/echo", "data": {"name": "Ann", "n": 1}},
                          headers={"X-Correlation-Id": "cid-out-2"})
    assert status == 200, out
    assert out["res"]["status"] == 200
    got = backend.requests[-1]
    assert got["method"] == "POST"
    assert got["target"] == "/echo"
    assert json.loads(got["body"]) == {"name": "Ann", "n": 1}
    hm = header_map(got["headers"])
    assert hm["content-type"] == "application/json"
    assert hm["content-length"] == str(len(got["body"]))
    assert hm["x-correlation-id"] == "cid-out-2"
    assert json.loads(out["res"]["json"]["body"]) == {"name": "Ann", "n": 1}


def test_every_method_and_a_string_body(start, backend):
    gw = start([backend.port])
    cases = [
        ({"fn": "put", "path": "/echo", "data": "plain text",
          "opts": {"headers": {"Content-Type": "text/plain"}}}, "PUT", b"plain text"),
        ({"fn": "patch", "path": "/echo", "data": {"a": [1, 2]}}, "PATCH", b'{"a":[1,2]}'),
        ({"fn": "delete", "path": "/echo?id=7"}, "DELETE", b""),
        ({"fn": "options", "path": "/echo"}, "OPTIONS", b""),
        ({"fn": "request", "verb": "PROPFIND", "path": "/echo", "opts": {"body": "<x/>"}},
         "PROPFIND", b"<x/>"),
    ]
    for payload, method, body in cases:
        status, _, out = call(gw, payload)
        assert status == 200, out
        assert out["res"]["status"] == 200
        assert out["res"]["json"]["method"] == method
        got = backend.requests[-1]
        assert (got["method"], got["body"]) == (method, body)
    assert header_map(backend.requests[0]["headers"])["content-type"] == "text/plain"
    assert backend.requests[2]["target"] == "/echo?id=7"

    status, _, out = call(gw, {"fn": "head", "path": "/echo"})
    assert status == 200, out
    res = out["res"]
    assert res["status"] == 200 and res["body"] == "" and "json" not in res
    assert res["headers"]["content-type"] == "application/json"
    assert int(res["headers"]["content-length"]) > 0
    assert backend.requests[-1]["method"] == "HEAD"


def test_statuses_and_headers_come_back_as_they_are(start, backend):
    gw = start([backend.port])
    status, _, out = call(gw, {"path": "/status?code=404"})
    assert status == 200, out
    assert out["res"]["status"] == 404  # an answer, not an error
    assert out["res"]["json"]["path"] == "/status"
    status, _, out = call(gw, {"path": "/headers"})
    res = out["res"]
    assert res["body"] == "hello" and "json" not in res  # text/plain is not decoded
    assert res["headers"]["set-cookie"] == "a=1, b=2"
    assert res["headers"]["x-multi"] == "one, two"
    assert all(k == k.lower() for k in res["headers"])


def test_keepalive_reuses_the_connection(start, backend):
    gw = start([backend.port])
    client = gw.http()
    for _ in range(3):
        status, _, out = call(gw, {"path": "/echo"}, client=client)
        assert status == 200, out
    ports = {r["client_port"] for r in backend.requests}
    assert len(ports) == 1, ports


def test_connection_refused_is_an_error_value(start, backend):
    dead = free_port()  # nothing listens there
    gw = start([dead])
    status, _, out = call(gw, {"path": "/echo"})
    assert status == 200, out
    assert "res" not in out
    assert out["err"].startswith("crm: connect failed (")
    assert "127.0.0.1:%d" % dead in out["err"]
    # the service turns it into a clear error for its caller
    status, h, body = gw.http().post("/gateway/t.http", {"path": "/echo", "strict": True})
    err = json.loads(body)["error"]
    assert status == 502
    assert err["message"].startswith("crm: connect failed")


def test_unknown_connection_is_an_error_value(start, backend):
    gw = start([backend.port])
    status, _, out = call(gw, {"conn": "nope", "path": "/echo"})
    assert status == 200, out
    assert out["err"] == "no outgoing.http connection named 'nope'"


def test_mistakes_raise_in_the_service(start, backend):
    gw = start([backend.port])
    gw.expect_error(r"handler raised: .*header Host is set by portico")
    gw.expect_error(r"handler raised: .*path must be a string starting with '/'")
    status, _, out = call(gw, {"path": "/echo", "opts": {"headers": {"Host": "evil"}}})
    assert status == 500
    status, _, out = call(gw, {"path": "echo"})
    assert status == 500
    assert backend.requests == []


def test_slow_backend_times_out(start, backend):
    gw = start([backend.port], timeout="1s")
    t0 = time.time()
    status, _, out = call(gw, {"path": "/slow?delay=3"})
    took = time.time() - t0
    assert status == 200, out
    assert out["err"].startswith("crm: timed out"), out
    assert 0.9 <= took < 2.5, took
    # a per-call timeout overrides the connection's
    t0 = time.time()
    status, _, out = call(gw, {"path": "/slow?delay=3", "opts": {"timeout": 0.3}})
    took = time.time() - t0
    assert out["err"].startswith("crm: timed out"), out
    assert 0.25 <= took < 1.0, took


@pytest.mark.parametrize("chunked", [False, True])
def test_response_larger_than_the_cap(start, backend, chunked):
    gw = start([backend.port])
    size = 16 * 1024 * 1024 + 1
    status, _, out = call(gw, {"path": "/big?size=%d&chunked=%d" % (size, int(chunked))})
    assert status == 200, out
    assert out["err"] == "crm: the response is larger than 16MB"
    # just under the cap is fine
    status, _, out = call(gw, {"path": "/big?size=%d&chunked=%d" % (size - 1, int(chunked)),
                               "drop_body": True})
    assert status == 200, out
    assert out["res"]["body"] == size - 1


def test_other_requests_are_served_while_a_call_waits(start, backend):
    """The issue's key test: with one worker, a service waiting ~1.5 s on its
    backend does not hold up other requests on the same worker."""
    gw = start([backend.port], workers=1)
    slow = {}

    def slow_call():
        t0 = time.time()
        slow["status"], _, slow["out"] = call(gw, {"path": "/slow?delay=1.5"})
        slow["took"] = time.time() - t0
        slow["end"] = time.time()

    th = threading.Thread(target=slow_call)
    th.start()
    assert backend.slow_started.wait(5), "the slow call never reached the backend"
    client = gw.http()
    ends = []
    for i in range(5):
        t0 = time.time()
        status, _, body = client.post("/gateway/demo.echo", {"i": i})
        assert status == 200
        assert json.loads(body)["payload"] == {"i": i}
        assert time.time() - t0 < 0.5
        ends.append(time.time())
    assert not backend.slow_done.is_set(), "the other requests waited for the slow one"
    th.join(10)
    assert slow["status"] == 200, slow
    assert slow["out"]["res"]["status"] == 200
    assert slow["took"] >= 1.4
    assert max(ends) < slow["end"]


def test_calls_on_one_worker_wait_side_by_side(start, backend):
    gw = start([backend.port], workers=1)
    results = []

    def one():
        results.append(call(gw, {"path": "/slow?delay=1"}))

    t0 = time.time()
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    took = time.time() - t0
    assert [r[0] for r in results] == [200] * 4
    assert all(r[2]["res"]["status"] == 200 for r in results)
    assert took < 2.5, took  # four 1 s calls, not one after another


class RawBackend:
    """Accepts connections and answers each with the same raw bytes, then closes."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.accepted = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(2)
            try:
                conn.recv(65536)
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("reply,why", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n", "malformed answer"),
    (b"", "closed the connection before answering"),
])
def test_a_broken_answer_is_an_error_value(start, reply, why):
    raw = RawBackend(reply)
    try:
        gw = start([raw.port])
        status, _, out = call(gw, {"path": "/echo"})
        assert status == 200, out
        assert out["err"].startswith("crm: bad answer ("), out
        assert why in out["err"], out
        # a POST is never sent twice; a GET may be tried once more on a new connection
        before = raw.accepted
        status, _, out = call(gw, {"fn": "post", "path": "/echo", "data": {"a": 1}})
        assert out["err"].startswith("crm: bad answer ("), out
        assert raw.accepted == before + 1
    finally:
        raw.close()


def test_stop_while_a_call_waits_ends_cleanly(start, backend):
    gw = start([backend.port], workers=1)
    th = threading.Thread(target=lambda: _swallow(lambda: call(gw, {"path": "/slow?delay=1"})))
    th.start()
    assert backend.slow_started.wait(5)
    t0 = time.time()
    assert gw.proc.stop() == 0
    assert time.time() - t0 < 8
    th.join(10)


def _swallow(fn):
    try:
        fn()
    except (OSError, ValueError):
        pass


def test_a_config_reload_changes_connections_calls_in_flight_finish(start):
    a, b = Backend(), Backend()
    try:
        gw = start([a.port], workers=1)
        slow = {}
        th = threading.Thread(target=lambda: slow.update(out=call(gw, {"path": "/slow?delay=1"})))
        th.start()
        assert a.slow_started.wait(5)
        text = open(gw.config).read()
        text = text.replace("targets: [http://127.0.0.1:%d]" % a.port,
                            "targets: [http://127.0.0.1:%d]" % b.port)
        text += "    - name: erp\n      targets: [http://127.0.0.1:%d]\n" % a.port
        with open(gw.config, "w") as f:
            f.write(text)
        gw.proc.proc.send_signal(signal.SIGHUP)
        assert gw.log_has("config reloaded: generation 2")
        _, _, out = call(gw, {"path": "/echo"})
        assert out["res"]["status"] == 200, out
        assert [r["path"] for r in b.requests] == ["/echo"]  # crm is b now
        _, _, out = call(gw, {"conn": "erp", "path": "/echo?x=1"})
        assert out["res"]["json"]["query"] == "x=1", out
        th.join(10)
        assert slow["out"][2]["res"]["status"] == 200  # finished on the old target
        assert [r["path"] for r in a.requests] == ["/slow", "/echo"]
    finally:
        a.close()
        b.close()
