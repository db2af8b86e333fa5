"""The amqp_bus channel against a real RabbitMQ (scripts/rabbitmq): HTTP
requests published in WASP's routing, answered by a backend of the test's
own through RabbitMQ's direct reply-to. See docs/amqp.md, "The AMQP bus".

Each test reads like a Test::Nginx block: a config, requests, what the
backend receives, what the client gets back, and nothing at level error in
the log (the start_gateway fixture checks that).
"""

import asyncio
import json
import os
import re
import signal
import socket
import struct
import threading
import time

import pytest

from amqp_support import (scrape, value, BROKER_URL, AmqpClient, AmqpError, Http, _shortstr, _table,
                          broker_serving)
from conftest import config_head

X_FOO = "foo"                    # WASP's example exchange
Q_FOO = "portico-test.bus.foo"   # bound to foo with "bar.baz"
X_MISSING = "portico-test.bus.no-such-exchange"

BUS_CONFIG = config_head("""
    workers: 2
    drain_timeout: 5s
""", dirs="{tmp}/services") + """channels:
  amqp_bus:
    - name: bus
      url_prefix: /bus
      url: {url}
      reply_timeout: {reply_timeout}
"""


# ---- the broker and a backend on it -----------------------------------------


@pytest.fixture
def amqp(broker):
    if not broker_serving():
        broker.start_app()
    with AmqpClient() as c:
        c.exchange_declare(X_FOO, "topic")
        c.queue_declare(Q_FOO)
        c.queue_bind(Q_FOO, X_FOO, "bar.baz")
        c.queue_purge(Q_FOO)
        yield c


def start_bus(start_gateway, reply_timeout="5s"):
    return start_gateway(BUS_CONFIG, url=BROKER_URL, reply_timeout=reply_timeout)


class Responder(threading.Thread):
    """A backend: consumes queue (no-ack) on a connection of its own and
    calls answer(self, msg) for each message, on its own thread; answer
    replies with self.reply(...) (now, later, or never). Every message it
    got is in self.received."""

    def __init__(self, queue, answer):
        super().__init__(daemon=True)
        self.answer = answer
        self.received = []
        self.arrived = threading.Condition()
        self.client = AmqpClient()
        self.client.sock.settimeout(None)
        self.client._method(1, 60, 20, struct.pack(">H", 0) + _shortstr(queue) + _shortstr("") +
                            bytes([0b10]) + _table({}))  # Basic.Consume, no-ack
        self.client._expect(1, 60, 21)
        self.error = None
        self.start()

    def run(self):
        try:
            while True:
                cls, mth, r = self.client._next_method()
                if (cls, mth) != (60, 60):  # Basic.Deliver
                    continue
                r.shortstr()
                r.longlong()
                r.octet()
                exchange, rk = r.shortstr(), r.shortstr()
                msg = self.client._read_content(exchange, rk)
                with self.arrived:
                    self.received.append(msg)
                    self.arrived.notify_all()
                self.answer(self, msg)
        except (OSError, AmqpError) as e:
            self.error = e  # stopped, or the broker went away

    def reply(self, msg, body, status=None, content_type=None, correlation_id=None, headers=None):
        h = dict(headers or {})
        if status is not None:
            h["X-WASP-STATUS"] = status
        self.client.publish("", msg.props["reply_to"], body,
                            correlation_id=correlation_id or msg.props["correlation_id"],
                            content_type=content_type, headers=h or None)

    def wait_for(self, n, timeout=10):
        deadline = time.time() + timeout
        with self.arrived:
            while len(self.received) < n:
                left = deadline - time.time()
                assert left > 0, "the backend got %d messages, not %d" % (len(self.received), n)
                self.arrived.wait(left)

    def stop(self):
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(10)
        self.client.sock.close()


@pytest.fixture
def responders():
    started = []

    def start(answer, queue=Q_FOO):
        r = Responder(queue, answer)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def echo_answer(resp, msg):
    """Echoes what arrived, so each client can check it got its own reply."""
    doc = {"exchange": msg.exchange, "routing_key": msg.routing_key,
           "headers": msg.headers, "body": msg.body.decode("latin-1"),
           "correlation_id": msg.props.get("correlation_id")}
    resp.reply(msg, json.dumps(doc), status=200, content_type="application/json")


def correlation_of(cid):
    """Our correlation ids: the request's cid, a dot, a process-wide counter."""
    return re.compile(re.escape(cid) + r"\.[0-9]+$")


# ---- WASP's example ------------------------------------------------------------


def test_wasp_example_end_to_end(start_gateway, amqp, responders):
    gw = start_bus(start_gateway)

    def answer(resp, msg):
        # A stray reply and a duplicate: dropped by the gateway, never mixed up.
        resp.reply(msg, "stray", status=500, correlation_id="no-such-request.1")
        resp.reply(msg, "reply to " + msg.body.decode(), status=201,
                   content_type="text/x-wasp; charset=utf-8")
        resp.reply(msg, "late duplicate", status=500)

    backend = responders(answer)
    http = Http(gw.port)
    status, headers, body = http.request(
        "GET", "/bus/foo/bar/baz?page=1&size=20", body="the body",
        headers={"Content-Type": "text/plain", "X-Correlation-Id": "wasp-example-1"})
    assert status == 201, body
    assert body == b"reply to the body"
    assert headers["content-type"] == "text/x-wasp; charset=utf-8"

    backend.wait_for(1)
    msg = backend.received[0]
    assert msg.exchange == "foo"
    assert msg.routing_key == "bar.baz"
    assert msg.headers == {"X-WASP-METHOD": "GET", "X-WASP-QS": "page=1&size=20"}
    assert msg.body == b"the body"
    assert msg.props["content_type"] == "text/plain"
    assert correlation_of("wasp-example-1").match(msg.props["correlation_id"]), msg.props
    assert msg.props["reply_to"].startswith("amq.rabbitmq.reply-to.")

    # The same x-correlation-id again: a correlation id of its own.
    status, _h, body = http.request("POST", "/bus/foo/bar/baz", body="second",
                                    headers={"X-Correlation-Id": "wasp-example-1"})
    assert (status, body) == (201, b"reply to second")
    backend.wait_for(2)
    second = backend.received[1]
    assert correlation_of("wasp-example-1").match(second.props["correlation_id"])
    assert second.props["correlation_id"] != msg.props["correlation_id"]
    assert second.headers == {"X-WASP-METHOD": "POST", "X-WASP-QS": ""}
    assert "content_type" not in second.props
    http.close()
    assert gw.log_has("AMQP bus 'bus': connected to amqp://guest@127.0.0.1:")


def test_reply_status_body_and_content_type(start_gateway, amqp, responders):
    gw = start_bus(start_gateway)
    gw.expect_error("X-WASP-STATUS is not a final status")
    big = bytes(range(256)) * 1200  # 300 KB, over several frames both ways

    def answer(resp, msg):
        case = msg.headers["X-WASP-QS"]
        if case == "int":
            resp.reply(msg, "created", status=201, content_type="text/plain")
        elif case == "string":
            resp.reply(msg, "accepted", status="202")
        elif case == "none":
            resp.reply(msg, "")
        elif case == "junk":
            resp.reply(msg, "junk", status="20x")
        elif case == "high":
            resp.reply(msg, "high", status="1000")
        elif case == "low":
            resp.reply(msg, "low", status="100")  # not a final answer
        elif case == "lowercase":
            resp.reply(msg, "teapot", headers={"x-wasp-status": 418})
        elif case == "big":
            resp.reply(msg, msg.body[::-1], status=200, content_type="application/octet-stream")

    responders(answer)
    http = Http(gw.port)

    def get(case, body=None):
        return http.request("POST" if body else "GET", "/bus/foo/bar/baz?" + case, body=body)

    status, headers, body = get("int")
    assert (status, body, headers["content-type"]) == (201, b"created", "text/plain")
    assert get("string")[::2] == (202, b"accepted")
    assert get("none")[::2] == (200, b"")
    # a status that is not a final one is the peer's mistake: 502, never a guess
    for case in ("junk", "high", "low"):
        status, _, body = get(case)
        assert status == 502 and case.encode() not in body, (case, status, body)
    assert get("lowercase")[::2] == (418, b"teapot")
    status, headers, body = get("big", big)
    assert status == 200 and body == big[::-1]
    assert headers["content-type"] == "application/octet-stream"
    http.close()


# ---- failures --------------------------------------------------------------------


def test_no_reply_is_504_after_the_time_out(start_gateway, amqp, responders):
    gw = start_bus(start_gateway, reply_timeout="1s")
    gw.expect_error(r"^no reply from the AMQP bus within 1000 ms$")
    backend = responders(lambda resp, msg: None)  # reads, never answers
    http = Http(gw.port)
    t0 = time.time()
    status, _h, body = http.request("GET", "/bus/foo/bar/baz")
    took = time.time() - t0
    assert status == 504, body
    assert 0.9 <= took < 3.0, "504 after %.2fs with a 1s reply time-out" % took
    backend.wait_for(1)
    # The answer that comes too late is dropped; the next request is fine.
    backend.answer = echo_answer
    backend.reply(backend.received[0], "too late", status=200)
    status, _h, body = http.request("GET", "/bus/foo/bar/baz")
    assert status == 200, body
    assert json.loads(body)["routing_key"] == "bar.baz"
    http.close()


def test_a_reload_changes_the_reply_time_out(start_gateway, amqp, responders):
    gw = start_bus(start_gateway, reply_timeout="30s")
    gw.expect_error(r"^no reply from the AMQP bus within 1000 ms$")
    responders(lambda resp, msg: None)
    with open(gw.config) as f:
        text = f.read()
    with open(gw.config, "w") as f:
        f.write(text.replace("reply_timeout: 30s", "reply_timeout: 1s"))
    gw.proc.proc.send_signal(signal.SIGHUP)
    assert gw.log_has("config reloaded: generation 2")
    t0 = time.time()
    status, _h, body = Http(gw.port).request("GET", "/bus/foo/bar/baz")
    assert status == 504, body
    assert time.time() - t0 < 3.0


def test_unroutable_and_missing_exchange_are_502(start_gateway, amqp, responders):
    gw = start_bus(start_gateway)
    gw.expect_error(r"^the broker returned the message: 312 NO_ROUTE \(exchange 'foo', "
                    r"routing key 'nobody.home'\)$")
    gw.expect_error(r"^the broker refused exchange '%s': 404 NOT_FOUND" % re.escape(X_MISSING))
    responders(echo_answer)
    http = Http(gw.port)
    t0 = time.time()
    status, _h, body = http.request("GET", "/bus/foo/nobody/home")  # no queue bound
    assert status == 502, body
    assert time.time() - t0 < 2.0
    status, _h, body = http.request("GET", "/bus/%s/a/b" % X_MISSING)
    assert status == 502, body
    # Neither closed the channel under the other requests.
    status, _h, body = http.request("GET", "/bus/foo/bar/baz?x=1")
    assert status == 200, body
    assert json.loads(body)["headers"]["X-WASP-QS"] == "x=1"
    # Percent-encoded segments make the routing key; a malformed one is refused.
    with AmqpClient() as c:
        c.queue_bind(Q_FOO, X_FOO, "a b.c/d")
    try:
        status, _h, body = http.request("GET", "/bus/foo/a%20b/c%2Fd")
        assert status == 200, body
        assert json.loads(body)["routing_key"] == "a b.c/d"
    finally:
        with AmqpClient() as c:
            c._method(1, 50, 50, struct.pack(">H", 0) + _shortstr(Q_FOO) + _shortstr(X_FOO) +
                      _shortstr("a b.c/d") + _table({}))  # Queue.Unbind
            c._expect(1, 50, 51)
    assert http.request("GET", "/bus/foo/bar/%zz")[0] == 400
    http.close()
    # /metrics counted it all: 3 published (the unroutable one too), 2 replies,
    # 2 failures (unroutable, missing exchange; the router refused the bad
    # encoding before the bus saw it), 1 connection up
    m = scrape(gw)
    labels = {"kind": "bus", "name": "bus"}
    assert value(m, "portico_amqp_published_total", **labels) == 3
    assert value(m, "portico_amqp_confirmed_total", **labels) == 2
    assert value(m, "portico_amqp_failed_total", **labels) == 2
    assert value(m, "portico_amqp_connections_up", **labels) == 1
    assert value(m, "portico_amqp_reconnects_total", **labels) == 0


# ---- many at once ------------------------------------------------------------------


def test_1000_concurrent_requests_each_get_their_own_reply(start_gateway, amqp, responders):
    total = 1000
    gw = start_bus(start_gateway, reply_timeout="60s")
    held, all_in = [], threading.Event()

    def answer(resp, msg):
        # Nothing is answered before all 1000 are in flight; then all at
        # once, in reverse order.
        held.append(msg)
        if len(held) < total:
            return
        all_in.set()
        for m in reversed(held):
            i = json.loads(m.body)["i"]
            resp.reply(m, json.dumps({"i": i, "qs": m.headers["X-WASP-QS"]}),
                       status=200 + i % 3, content_type="application/json")

    backend = responders(answer)

    async def one(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        body = json.dumps({"i": i}).encode()
        cid = "same-cid" if i % 2 else "cid-%d" % i  # half of them share one cid
        writer.write(b"POST /bus/foo/bar/baz?n=%d HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/json\r\nX-Correlation-Id: %s\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (i, cid.encode(), len(body), body))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        data = await reader.readexactly(length)
        writer.close()
        return i, status, data

    async def run_all():
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(total))), 90)

    t0 = time.time()
    results = asyncio.run(run_all())
    elapsed = time.time() - t0
    assert all_in.is_set(), "only %d requests reached the backend" % len(held)
    wrong = [(i, s, d[:100]) for i, s, d in results
             if s != 200 + i % 3 or json.loads(d) != {"i": i, "qs": "n=%d" % i}]
    assert wrong == [], wrong[:5]
    assert len({m.props["correlation_id"] for m in backend.received}) == total
    print("%d concurrent bus requests in %.1fs" % (total, elapsed))


# ---- the broker goes away and comes back -------------------------------------------


def test_broker_down_is_503_and_the_bus_recovers(start_gateway, amqp, broker, responders):
    gw = start_bus(start_gateway, reply_timeout="20s")
    gw.expect_error(r"^the broker connection was lost: ")
    gw.expect_error(r"^no connection to the broker$")
    backend = responders(lambda resp, msg: None)  # holds what it gets
    http = Http(gw.port)

    # A request waiting for its reply when the broker goes: 503, not 504.
    pending = {}

    def waiting():
        pending["result"] = Http(gw.port).request("GET", "/bus/foo/bar/baz?waiting")

    t = threading.Thread(target=waiting)
    t.start()
    backend.wait_for(1)
    broker.stop_app()
    try:
        t.join(10)
        assert not t.is_alive(), "the waiting request was not answered when the broker went"
        assert pending["result"][0] == 503, pending["result"]
        assert gw.log_has("AMQP bus 'bus': connection lost")
        for _ in range(5):
            t0 = time.time()
            status, _h, body = http.request("GET", "/bus/foo/bar/baz")
            assert status == 503, body
            took = time.time() - t0
            assert took < 1.0, "a bus request while the broker is down took %.2fs" % took
    finally:
        broker.start_app()

    responders(echo_answer)
    deadline = time.time() + 30
    while True:
        status, _h, body = http.request("GET", "/bus/foo/bar/baz?back=1")
        if status == 200:
            break
        assert status == 503, body
        assert time.time() < deadline, "the bus did not recover after the broker came back"
        time.sleep(0.2)
    assert json.loads(body)["headers"] == {"X-WASP-METHOD": "GET", "X-WASP-QS": "back=1"}
    http.close()
    m = scrape(gw)
    assert value(m, "portico_amqp_reconnects_total", kind="bus", name="bus") >= 1
    assert value(m, "portico_amqp_connections_up", kind="bus", name="bus") == 1


def test_broker_down_at_start(start_gateway, amqp, broker, responders):
    broker.stop_app()
    try:
        gw = start_bus(start_gateway)
        gw.expect_error(r"^no connection to the broker$")
        t0 = time.time()
        status, _h, body = Http(gw.port).request("GET", "/bus/foo/bar/baz")
        assert status == 503, body
        assert time.time() - t0 < 1.0
    finally:
        broker.start_app()
    responders(echo_answer)
    http = Http(gw.port)
    deadline = time.time() + 30
    while http.request("GET", "/bus/foo/bar/baz")[0] != 200:
        assert time.time() < deadline, "no bus connection after the broker came up"
        time.sleep(0.2)
    http.close()


def test_stop_with_a_request_waiting(start_gateway, amqp, responders):
    """SIGTERM while a request waits for its reply: the drain waits for it
    (at most drain_timeout, 5s here), then closes its connection; the bus
    answers the request 503 on the thread that joins the worker, and the
    stop is clean (under PT_ASAN: nothing leaked)."""
    gw = start_bus(start_gateway, reply_timeout="30s")
    backend = responders(lambda resp, msg: None)
    result = {}

    def waiting():
        try:
            result["r"] = Http(gw.port, timeout=20).request("GET", "/bus/foo/bar/baz")
        except Exception as e:  # the connection closed at the drain time-out
            result["r"] = e

    t = threading.Thread(target=waiting)
    t.start()
    backend.wait_for(1)
    t0 = time.time()
    gw.proc.proc.send_signal(15)
    assert gw.proc.proc.wait(20) == 0
    took = time.time() - t0
    assert 4.5 < took < 10, "stopped after %.1fs with a 5s drain_timeout" % took
    t.join(10)
    assert isinstance(result.get("r"), Exception), result
    assert gw.log_has("drain time-out: closing 1 connections")


def test_access_log_names_the_exchange_and_its_time(start_gateway, amqp, responders):
    conf = BUS_CONFIG.replace("log:\n  level: info\n",
                              "log:\n  level: info\n  access: {tmp}/access.log\n")
    assert conf != BUS_CONFIG
    gw = start_gateway(conf, url=BROKER_URL, reply_timeout="5s")
    responders(echo_answer)
    http = Http(gw.port)
    assert http.request("GET", "/bus/foo/bar/baz?x=1")[0] == 200
    path = gw.tmp + "/access.log"
    deadline = time.time() + 5
    while time.time() < deadline and not (os.path.exists(path) and open(path).read()):
        time.sleep(0.05)
    (line,) = [json.loads(l) for l in open(path).read().splitlines()]
    assert line["upstream"] == "amqp:foo" and line["service"] == "foo"
    assert isinstance(line["upstream_ms"], float) and line["upstream_ms"] >= 0
    assert line["query"] == "x=1"
