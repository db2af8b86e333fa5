"""AMQP gate: what a hostile backend or publisher sends through the broker
is bounded and checked before it reaches a client or a service. A real
broker (scripts/rabbitmq) and the standard-library client of
amqp_support.py; each case names the exact answer and shows the connection
still serves afterwards."""

import json
import time

import pytest

from amqp_support import scrape, value, BROKER_URL, AmqpClient, Http, broker_serving
from conftest import config_head
from test_bus import Q_FOO, X_FOO, Responder

BUS_SMALL = config_head("""
    workers: 2
    max_body_bytes: 64KB
    drain_timeout: 5s
""", dirs="{tmp}/services") + """channels:
  amqp_bus:
    - name: bus
      url_prefix: /bus
      url: {url}
      reply_timeout: 5s
"""


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


@pytest.fixture
def backend(amqp):
    started = []

    def start(answer):
        r = Responder(Q_FOO, answer)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


# ---- the bus: a reply is bounded like a request body ----


def test_a_bus_reply_over_max_body_bytes_is_a_502_and_not_buffered(start_gateway, backend):
    """A reply body over server.max_body_bytes is refused with 502 and read
    frame by frame into nothing (before: rabbitmq-c buffered the whole body,
    and the client got it); exactly the bound passes; the connection keeps
    serving, and a large reply nobody waits for is dropped the same way."""
    gw = start_gateway(BUS_SMALL, url=BROKER_URL)
    gw.expect_error("over server.max_body_bytes")  # logged at warn

    def answer(resp, msg):
        n = int(msg.headers["X-WASP-QS"])
        if n < 0:  # a stray reply, then the real one
            resp.reply(msg, b"s" * (8 << 20), correlation_id="nobody.1")
            n = 10
        resp.reply(msg, b"r" * n, status=200, content_type="application/octet-stream")

    backend(answer)
    http = Http(gw.port)
    status, _h, body = http.request("GET", "/bus/foo/bar/baz?%d" % (64 * 1024))
    assert status == 200 and body == b"r" * (64 * 1024)
    status, _h, body = http.request("GET", "/bus/foo/bar/baz?%d" % (64 * 1024 + 1))
    assert status == 502 and b"max_body_bytes" in body, (status, body[:200])
    status, _h, body = http.request("GET", "/bus/foo/bar/baz?%d" % (20 << 20))
    assert status == 502, (status, body[:200])
    status, _h, body = http.request("GET", "/bus/foo/bar/baz?-1")
    assert (status, body) == (200, b"r" * 10)
    http.close()


@pytest.mark.parametrize("status", ["abc", "1000", "99", -5, "", "2" * 40, 150],
                         ids=["letters", "high", "low", "negative", "empty", "40-digits", "1xx"])
def test_a_bus_status_that_is_not_a_final_status_is_a_502(start_gateway, backend, status):
    """X-WASP-STATUS never reaches the status line unchecked, and is never
    guessed either: anything but 200..599 is the peer's mistake, a 502
    without the reply's body (no overflow for 40 digits)."""
    gw = start_gateway(BUS_SMALL, url=BROKER_URL)
    gw.expect_error("X-WASP-STATUS is not a final status")
    backend(lambda resp, msg: resp.reply(
        msg, b"reply-body", status=201 if msg.headers.get("X-WASP-QS") == "good" else status))
    code, _h, body = Http(gw.port).request("GET", "/bus/foo/bar/baz")
    assert code == 502 and b"reply-body" not in body, (code, body)
    assert Http(gw.port).request("GET", "/bus/foo/bar/baz?good")[::2] == (201, b"reply-body")


# ---- AMQP channels: a hostile publisher ----

Q_IN = "portico-test.gate.in"
X_DLX = "portico-test.gate.dlx"
Q_DEAD = "portico-test.gate.dead"
Q_REPLIES = "portico-test.gate.replies"

PEEK_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "gate.peek" }
function M:handle()
  local names = {}
  for k, v in pairs(self.request.http.headers) do names[#names + 1] = k end
  table.sort(names)
  local d, t = 0, self.request.amqp.headers["x-deep"]
  while type(t) == "table" do
    d = d + 1
    t = t.a or t[1]
  end
  self.response.payload = { http = names, good = self.request.http.headers["x-good"], depth = d }
end
return M
"""

CHANNEL_CONFIG = config_head("""
    workers: 2
    max_body_bytes: 64KB
""", dirs="{tmp}/services") + """channels:
  amqp:
    - name: gate.in
      url: {url}
      queue: """ + Q_IN + """
      service: gate.peek
      prefetch: 4
"""


@pytest.fixture
def channel_gw(start_gateway, tmp_path, broker):
    if not broker_serving():
        broker.start_app()
    with AmqpClient() as c:
        c.exchange_declare(X_DLX, "fanout")
        c.queue_declare(Q_DEAD)
        c.queue_bind(Q_DEAD, X_DLX, "")
        c.queue_declare(Q_IN, arguments={"x-dead-letter-exchange": X_DLX})
        c.queue_declare(Q_REPLIES)
        for q in (Q_IN, Q_DEAD, Q_REPLIES):
            c.queue_purge(q)
        svc = tmp_path / "services"
        svc.mkdir(parents=True, exist_ok=True)
        (svc / "peek.lua").write_text(PEEK_SERVICE)
        gw = start_gateway(CHANNEL_CONFIG, url=BROKER_URL)
        assert gw.log_has("consuming queue '%s'" % Q_IN, timeout=10)
        yield gw, c
        c.queue_delete(Q_IN)


def test_a_delivery_over_max_body_bytes_is_dead_lettered_unread(channel_gw):
    """A body over server.max_body_bytes never reaches the service and is
    never held whole: rejected without requeue, to the dead-letter exchange
    (before: buffered by rabbitmq-c and run). Exactly the bound is served;
    the channel goes on."""
    gw, amqp = channel_gw
    assert amqp.publish("", Q_IN, b"[" + b" " * (64 * 1024 - 2) + b"]", reply_to=Q_REPLIES,
                        correlation_id="fits")
    assert amqp.publish("", Q_IN, b"[" + b" " * (64 * 1024 - 1) + b"]", reply_to=Q_REPLIES,
                        correlation_id="over")
    assert amqp.publish("", Q_IN, b"x" * (16 << 20), reply_to=Q_REPLIES, correlation_id="huge")
    assert amqp.publish("", Q_IN, b"{}", reply_to=Q_REPLIES, correlation_id="after")
    replies = {}
    deadline = time.time() + 20
    while len(replies) < 2 and time.time() < deadline:
        m = amqp.get(Q_REPLIES)
        if m:
            replies[m.props["correlation_id"]] = m
        else:
            time.sleep(0.05)
    assert sorted(replies) == ["after", "fits"], sorted(replies)
    assert replies["fits"].headers["x-portico-status"] == 200
    dead = amqp.wait_count(Q_DEAD, 2)
    got = sorted(len(m.body) for m in amqp.drain(Q_DEAD))
    assert got == [64 * 1024 + 1, 16 << 20], got
    assert gw.log_has("over server.max_body_bytes")


def test_headers_reach_http_headers_only_as_valid_fields(channel_gw):
    """AMQP headers become self.request.http.headers only with a token name
    and a valid field value, as an HTTP client must send them (before: a NUL, CR LF or a
    name with a space reached the service as a header)."""
    gw, amqp = channel_gw
    headers = {"x-good": "fine", "x-crlf": "a\r\nInjected: 1", "x-nul": "a\x00b",
               "bad name": "v", "x-ctl": "\x01", "x-num": 7}
    assert amqp.publish("", Q_IN, b"{}", reply_to=Q_REPLIES, correlation_id="h",
                        headers=headers)
    m = amqp.wait_get(Q_REPLIES)
    doc = m.json()
    assert doc["good"] == "fine"
    assert doc["http"] == ["x-good", "x-num"], doc


class RawValue:
    """An AMQP field value given as its encoded bytes."""

    def __init__(self, data):
        self.data = data


def nested(depth, kind):
    import struct
    inner = b"F" + struct.pack(">I", 0)
    for _ in range(depth):
        if kind == "table":
            t = bytes([1]) + b"a" + inner
            inner = b"F" + struct.pack(">I", len(t)) + t
        else:
            inner = b"A" + struct.pack(">I", len(inner)) + inner
    return RawValue(inner)


@pytest.mark.parametrize("kind,depth", [("table", 12000), ("array", 20000)])
def test_deeply_nested_headers_are_cut_at_32_levels(channel_gw, monkeypatch, kind, depth):
    """A header table nested 12,000 deep, or an array 20,000 deep (both fit
    one content header frame), is cut at 32 levels on its way to Lua
    (before: handed over whole, one C recursion and one Lua table per
    level), and the service runs."""
    import amqp_support
    gw, amqp = channel_gw
    orig = amqp_support._value
    monkeypatch.setattr(amqp_support, "_value",
                        lambda v: v.data if isinstance(v, RawValue) else orig(v))
    assert amqp.publish("", Q_IN, b"{}", reply_to=Q_REPLIES, correlation_id="deep",
                        headers={"x-deep": nested(depth, kind)})
    m = amqp.wait_get(Q_REPLIES, timeout=15)
    assert m.headers["x-portico-status"] == 200, m.body[:300]
    assert m.json()["depth"] <= 33, m.json()
    assert amqp.publish("", Q_IN, b"{}", reply_to=Q_REPLIES, correlation_id="after")
    assert amqp.wait_get(Q_REPLIES, timeout=15).props["correlation_id"] == "after"
