"""AMQP against a real RabbitMQ (scripts/rabbitmq): outgoing connections with
publisher confirms, broker faults, AMQP channels, and the api.gateway example
end to end. See docs/amqp.md.

Each test reads like a Test::Nginx block: a config, requests, what the broker
and the client must see, and nothing unexpected in the error log.
"""

import datetime
import json
import os
import shutil
import subprocess
import textwrap
import threading
import time

import pytest

from amqp_support import (scrape, value, BROKER_URL, ROOT, AmqpClient, AmqpError, Http, Portico,
                          broker_serving, derive_config, free_port, rabbitmq, send_service)

EXAMPLE_CONFIG = os.path.join(ROOT, "config", "api-gateway.yaml")
REQUEST_JSON = os.path.join(ROOT, "config", "request.json")
AUTH = ("api", "api-demo")

X_INCOMING = "/incoming"
Q_INCOMING = "portico-test.incoming"  # bound to /incoming with key "api"
X_TEST = "portico-test.x"
Q_TEST = "portico-test.q"  # bound to portico-test.x with key "ok"
Q_IN = "portico-test.in"  # consumed by the AMQP channel, dead-letters to:
X_DLX = "portico-test.dlx"
Q_DEAD = "portico-test.dead"
Q_REPLIES = "portico-test.replies"


# ---- fixtures --------------------------------------------------------------


@pytest.fixture
def amqp(broker):
    if not broker_serving():
        broker.start_app()
    with AmqpClient() as c:
        c.exchange_declare(X_INCOMING, "topic")
        c.queue_declare(Q_INCOMING)
        c.queue_bind(Q_INCOMING, X_INCOMING, "api")
        c.exchange_declare(X_TEST, "direct")
        c.queue_declare(Q_TEST)
        c.queue_bind(Q_TEST, X_TEST, "ok")
        c.exchange_declare(X_DLX, "fanout")
        c.queue_declare(Q_DEAD)
        c.queue_bind(Q_DEAD, X_DLX, "")
        c.queue_declare(Q_IN, arguments={"x-dead-letter-exchange": X_DLX})
        c.queue_declare(Q_REPLIES)
        for q in (Q_INCOMING, Q_TEST, Q_IN, Q_DEAD, Q_REPLIES):
            c.queue_purge(q)
        yield c


def start_example(tmp_path, env=None):
    """config/api-gateway.yaml as shipped, on free ports, with the broker URL
    given through PORTICO_AMQP_URL as the README says."""
    port, admin = free_port(), free_port()
    cfg = derive_config(EXAMPLE_CONFIG, str(tmp_path), port, admin)
    env = dict({"PORTICO_AMQP_URL": BROKER_URL}, **(env or {}))
    return Portico(cfg, port, env=env), admin


@pytest.fixture
def example(tmp_path, amqp):
    gw, admin = start_example(tmp_path)
    gw.admin_port = admin
    yield gw
    assert gw.stop() == 0, gw.errors()


SEND_SERVICE = send_service("amqp.test.send", "My Backend")

CONSUME_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "amqp.test.consume", input = { n = "integer" } }
function M:handle()
  local n = self.request.input.n
  if n < 0 then error("negative numbers are refused") end
  local a = self.request.amqp
  self.response.payload = {
    doubled = n * 2, cid = self.cid, channel = self.channel.type,
    routing_key = a.routing_key, queue = a.queue, correlation_id = a.correlation_id,
    header = a.headers["x-test"], number = a.headers["x-number"],
    http_header = self.request.http.headers["x-test"], redelivered = a.redelivered,
  }
end
return M
"""


@pytest.fixture
def lab(tmp_path, amqp):
    """A gateway with a sending service and an AMQP channel on Q_IN."""
    services = tmp_path / "services"
    services.mkdir()
    (services / "send.lua").write_text(SEND_SERVICE)
    (services / "consume.lua").write_text(CONSUME_SERVICE)
    port, admin = free_port(), free_port()
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(textwrap.dedent("""\
        server:
          listen: 127.0.0.1:%(port)d
          workers: 2
        admin:
          listen: 127.0.0.1:%(admin)d
        services:
          dirs: [%(services)s]
        outgoing:
          amqp:
            - name: My Backend
              url: %(url)s
              heartbeat: 5s
              pool_size: 2
              timeout: 5s
            - name: Unconfirmed
              url: %(url)s
              confirms: false
        channels:
          rest:
            - name: send
              url_path: /test/send
              methods: [POST]
              service: amqp.test.send
          amqp:
            - name: test.in
              connection: My Backend
              queue: %(q_in)s
              service: amqp.test.consume
              prefetch: 8
              concurrency: 4
        """) % {"port": port, "admin": admin, "services": services, "url": BROKER_URL,
                "q_in": Q_IN})
    gw = Portico(str(cfg), port)
    gw.admin_port = admin
    wait_for_log(gw, "consuming queue '%s'" % Q_IN)
    yield gw
    assert gw.stop() == 0, gw.errors()


def wait_for_log(gw, text, timeout=10):
    deadline = time.time() + timeout
    while text not in gw.errors():
        assert time.time() < deadline, "no %r in the log:\n%s" % (text, gw.errors())
        time.sleep(0.05)


def queue_counts(queue):
    """(ready, unacknowledged) as the broker reports them."""
    out = rabbitmq("ctl", "-q", "list_queues", "name", "messages_ready",
                   "messages_unacknowledged")
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == queue:
            return int(parts[1]), int(parts[2])
    raise AssertionError("queue %s not listed: %s" % (queue, out))


def unexpected_errors(gw, allowed=()):
    return [e for e in gw.log_lines("error")
            if not any(a in e.get("msg", "") for a in allowed)]


def check_accepted_message(msg, original, cid):
    doc = msg.json()
    for k, v in original.items():
        assert doc[k] == v, k
    assert doc["_receiver"] == "api.gateway"
    assert doc["_correlation_id"] == cid
    received = datetime.datetime.fromisoformat(doc["_date_received"].replace("Z", "+00:00"))
    assert received.tzinfo is not None and received.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - received).total_seconds()) < 120
    assert msg.props.get("content_type") == "application/json"
    assert msg.props.get("delivery_mode") == 2  # persistent


# ---- the api.gateway example ---------------------------------------------------


def test_api_gateway_example_end_to_end(example, amqp):
    original = json.load(open(REQUEST_JSON))
    http = Http(example.port, auth=AUTH)
    status, headers, body = http.post("/api/v1/user", open(REQUEST_JSON, "rb").read())
    assert status == 200, body
    assert json.loads(body) == {"result": "OK, data accepted"}
    cid = headers["x-correlation-id"]
    msgs = amqp.drain(Q_INCOMING)
    assert len(msgs) == 1, msgs
    assert msgs[0].exchange == X_INCOMING and msgs[0].routing_key == "api"
    check_accepted_message(msgs[0], original, cid)

    # The caller's correlation id is the one the backend sees.
    status, headers, body = http.post("/api/v1/user", {"x": 1},
                                      headers={"x-correlation-id": "order-4711"})
    assert status == 200, body
    assert amqp.drain(Q_INCOMING)[0].json()["_correlation_id"] == "order-4711"

    # No credentials, wrong password: refused before the service runs, nothing sent.
    assert Http(example.port).post("/api/v1/user", {"x": 1})[0] == 401
    assert Http(example.port, auth=("api", "wrong")).post("/api/v1/user", {"x": 1})[0] == 401
    # Not a JSON object: 400, nothing sent.
    assert http.post("/api/v1/user", "[1, 2]")[0] == 400
    assert amqp.queue_count(Q_INCOMING) == 0

    # The curl line of the README, as written (the port is the test's own).
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-s", "--data-binary", "@request.json",
             "http://api:api-demo@localhost:%d/api/v1/user" % example.port],
            cwd=os.path.dirname(REQUEST_JSON), stdout=subprocess.PIPE, text=True, timeout=30)
        assert json.loads(out.stdout) == {"result": "OK, data accepted"}
        msgs = amqp.drain(Q_INCOMING)
        assert len(msgs) == 1
        assert msgs[0].json()["_receiver"] == "api.gateway"
    assert unexpected_errors(example) == []


def test_api_gateway_10000_messages_none_lost_or_duplicated(example, amqp):
    total, threads = 10000, 16
    original = json.load(open(REQUEST_JSON))
    statuses, cids, failures = {}, {}, []

    def client(k):
        http = Http(example.port, auth=AUTH)
        try:
            for seq in range(k, total, threads):
                status, headers, body = http.post("/api/v1/user", dict(original, seq=seq))
                statuses[seq] = status
                cids[seq] = headers.get("x-correlation-id")
                if status != 200:
                    failures.append((seq, status, body))
        finally:
            http.close()

    started = time.time()
    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.time() - started
    assert failures == [], failures[:5]
    assert len(statuses) == total

    msgs = amqp.drain(Q_INCOMING)
    seqs = [m.json()["seq"] for m in msgs]
    assert len(msgs) == total, "%d messages for %d accepted requests" % (len(msgs), total)
    assert sorted(seqs) == list(range(total))  # none lost, none twice
    for m in msgs[:: total // 50]:
        doc = m.json()
        check_accepted_message(m, dict(original, seq=doc["seq"]), cids[doc["seq"]])
    assert len({m.json()["_correlation_id"] for m in msgs}) == total
    print("10000 requests through api.gateway in %.1fs" % elapsed)
    assert unexpected_errors(example) == []


# ---- broker faults ---------------------------------------------------------


def test_broker_stopped_and_started_mid_test(example, amqp, broker):
    http = Http(example.port, auth=AUTH)
    echo = Http(example.port)
    accepted = 0
    assert http.post("/api/v1/user", {"n": 0})[0] == 200
    accepted += 1

    broker.stop_app()
    try:
        for n in range(1, 6):
            t0 = time.time()
            status, _h, body = http.post("/api/v1/user", {"n": n})
            took = time.time() - t0
            assert status == 503, body
            assert json.loads(body)["error"]["status"] == 503
            assert took < 1.0, "a send while the broker is down took %.2fs" % took
        # The rest of the gateway keeps serving.
        status, _h, body = echo.post("/api/echo", {"still": "here"})
        assert status == 200, body
        assert Http(example.admin_port).request("GET", "/healthz")[0] == 200
    finally:
        broker.start_app()

    # Sends work again without a restart, once a connection is back.
    deadline = time.time() + 30
    while True:
        status, _h, body = http.post("/api/v1/user", {"n": 100})
        if status == 200:
            accepted += 1
            break
        assert status == 503, body
        assert time.time() < deadline, "sends did not recover after the broker came back"
        time.sleep(0.2)
    for n in range(101, 111):
        assert http.post("/api/v1/user", {"n": n})[0] == 200
        accepted += 1

    # Every message a client was told was accepted is there, once.
    with AmqpClient() as fresh:
        msgs = fresh.drain(Q_INCOMING)
    ns = [m.json()["n"] for m in msgs]
    assert len(msgs) == accepted and sorted(ns) == [0, 100] + list(range(101, 111)), ns
    assert unexpected_errors(example) == []


def test_broker_down_at_start(tmp_path, amqp, broker):
    broker.stop_app()
    try:
        gw, _admin = start_example(tmp_path)
        try:
            http = Http(gw.port, auth=AUTH)
            t0 = time.time()
            status, _h, body = http.post("/api/v1/user", {"n": 1})
            assert status == 503, body
            assert time.time() - t0 < 1.0
            assert Http(gw.port).post("/api/echo", {"a": 1})[0] == 200
        finally:
            broker.start_app()
        deadline = time.time() + 30
        while http.post("/api/v1/user", {"n": 2})[0] != 200:
            assert time.time() < deadline, "no connection after the broker came up"
            time.sleep(0.2)
        with AmqpClient() as fresh:
            assert [m.json()["n"] for m in fresh.drain(Q_INCOMING)] == [2]
    finally:
        assert gw.stop() == 0


# ---- publisher confirms ------------------------------------------------------


def test_send_confirms_and_errors(lab, amqp):
    http = Http(lab.port)

    def send(**kw):
        status, _h, body = http.post("/test/send", kw)
        return status, json.loads(body)

    # Confirmed, with every property mapped.
    status, body = send(data={"k": "v"}, exchange=X_TEST, routing_key="ok",
                        props={"headers": {"x-s": "text", "x-n": 42, "x-b": True},
                               "message_id": "m-1", "correlation_id": "c-1",
                               "expiration": "60000", "persistent": False,
                               "content_type": "application/vnd.test+json",
                               "reply_to": "nowhere", "type": "t", "app_id": "portico-test",
                               "priority": 3, "timestamp": 1700000000})
    assert (status, body) == (200, {"sent": True})
    m = amqp.get(Q_TEST)
    assert m.json() == {"k": "v"}
    assert m.props["headers"] == {"x-s": "text", "x-n": 42, "x-b": True}
    assert m.props["message_id"] == "m-1" and m.props["correlation_id"] == "c-1"
    assert m.props["expiration"] == "60000" and m.props["delivery_mode"] == 1
    assert m.props["content_type"] == "application/vnd.test+json"
    assert m.props["reply_to"] == "nowhere" and m.props["type"] == "t"
    assert m.props["app_id"] == "portico-test" and m.props["priority"] == 3
    assert m.props["timestamp"] == 1700000000

    # A string goes as it is.
    assert send(data="plain text", exchange=X_TEST, routing_key="ok")[0] == 200
    m = amqp.get(Q_TEST)
    assert m.body == b"plain text" and "content_type" not in m.props

    # A missing exchange comes back as an error, and only for that send.
    status, body = send(data={"k": 1}, exchange="portico-test.missing", routing_key="ok")
    assert status == 503 and body["sent"] is False
    assert "404" in body["error"] and "portico-test.missing" in body["error"], body

    # Routed nowhere: the broker returns the mandatory message.
    status, body = send(data={"k": 2}, exchange=X_TEST, routing_key="unbound")
    assert status == 503 and "NO_ROUTE" in body["error"], body

    # The connection is still good; nothing stray reached the queue.
    assert send(data={"k": 3}, exchange=X_TEST, routing_key="ok") == (200, {"sent": True})
    assert [m.json() for m in amqp.drain(Q_TEST)] == [{"k": 3}]

    # Without confirms the send returns once written.
    assert send(data={"k": 4}, outconn="Unconfirmed", exchange=X_TEST,
                routing_key="ok") == (200, {"sent": True})
    assert amqp.wait_get(Q_TEST).json() == {"k": 4}

    # /metrics: 4 handed to My Backend (the unroutable one too), 3 confirmed,
    # 2 failed (missing exchange, unroutable); Unconfirmed published 1
    m = scrape(lab)
    mine = {"kind": "outgoing", "name": "My Backend"}
    assert value(m, "portico_amqp_published_total", **mine) == 4
    assert value(m, "portico_amqp_confirmed_total", **mine) == 3
    assert value(m, "portico_amqp_failed_total", **mine) == 2
    assert value(m, "portico_amqp_connections_up", **mine) == 2  # pool_size
    unconfirmed = {"kind": "outgoing", "name": "Unconfirmed"}
    assert value(m, "portico_amqp_published_total", **unconfirmed) == 1
    assert value(m, "portico_amqp_confirmed_total", **unconfirmed) == 0

    # A programmer mistake raises (500), it is not a broker error.
    status, body = send(data={"k": 5}, outconn="No Such Connection", exchange=X_TEST,
                        routing_key="ok")
    assert status == 500
    assert unexpected_errors(lab, allowed=("No Such Connection",)) == []


# ---- AMQP channels -----------------------------------------------------------


def test_amqp_channel_acks_replies_and_dead_letters(lab, amqp):
    amqp.confirm_select()
    # A good message: handled, replied to with the same correlation id, acked.
    assert amqp.publish("", Q_IN, {"n": 21}, correlation_id="corr-1", reply_to=Q_REPLIES,
                        headers={"x-test": "yes", "x-number": 7})
    reply = amqp.wait_get(Q_REPLIES)
    assert reply is not None, lab.errors()
    assert reply.props.get("correlation_id") == "corr-1"
    assert reply.headers.get("x-portico-status") == 200
    doc = reply.json()
    assert doc["doubled"] == 42 and doc["channel"] == "amqp"
    assert doc["cid"] == "corr-1" and doc["correlation_id"] == "corr-1"
    assert doc["routing_key"] == Q_IN and doc["queue"] == Q_IN
    assert doc["header"] == "yes" and doc["number"] == 7 and doc["http_header"] == "yes"
    assert doc["redelivered"] is False

    # The handler raises: rejected to the dead-letter exchange, not requeued.
    assert amqp.publish("", Q_IN, {"n": -1})
    # The input fails its schema, or is not JSON: the same.
    assert amqp.publish("", Q_IN, {"n": "many"})
    assert amqp.publish("", Q_IN, "not json")
    assert amqp.wait_count(Q_DEAD, 3) == 3, lab.errors()
    dead = amqp.drain(Q_DEAD)
    assert sorted(m.body for m in dead) == sorted(
        [b'{"n": -1}', b'{"n": "many"}', b"not json"])
    for m in dead:
        assert m.headers["x-death"][0]["reason"] == "rejected"
        assert m.headers["x-death"][0]["count"] == 1  # once: never requeued first

    # Many good ones, more than prefetch and concurrency: every one acked once.
    for n in range(40):
        assert amqp.publish("", Q_IN, {"n": n}, correlation_id="c-%d" % n,
                            reply_to=Q_REPLIES)
    deadline = time.time() + 20
    replies = []
    while len(replies) < 40 and time.time() < deadline:
        replies += amqp.drain(Q_REPLIES)
        time.sleep(0.05)
    assert sorted(r.json()["doubled"] for r in replies) == [2 * n for n in range(40)]
    assert {r.props["correlation_id"] for r in replies} == {"c-%d" % n for n in range(40)}
    assert queue_counts(Q_IN) == (0, 0)  # nothing waiting, nothing unacknowledged
    assert amqp.queue_count(Q_DEAD) == 0
    # /metrics: 44 deliveries, 3 of them rejected, 41 replies published
    m = scrape(lab)
    ch = {"kind": "channel", "name": "test.in"}
    assert value(m, "portico_amqp_delivered_total", **ch) == 44
    assert value(m, "portico_amqp_failed_total", **ch) == 3
    assert value(m, "portico_amqp_published_total", **ch) == 41
    assert value(m, "portico_amqp_connections_up", **ch) == 1
    assert unexpected_errors(lab, allowed=("negative numbers are refused",)) == []
