"""declare: on an AMQP connection (docs/amqp.md, "Declare"): portico
declares exchanges, queues and bindings on every connect and reconnect, so a
fresh broker needs no setup step; a declaration the broker refuses (an
existing exchange of another type: 406 PRECONDITION_FAILED) is logged with
its name and the broker's text, and portico keeps serving.

They use the test broker (scripts/rabbitmq)."""

import os
import random
import re
import subprocess
import textwrap
import time

import pytest

from amqp_support import AmqpClient, AmqpError, BROKER_URL, Http, broker_serving, rabbitmq, \
    send_service
from conftest import config_head

pytestmark = pytest.mark.usefixtures("broker")

TAG = "pt-decl-%d-%d" % (os.getpid(), random.randrange(1 << 30))
X, Q, KEY = TAG + ".x", TAG + ".q", "k." + TAG


def config(kind="topic"):
    return config_head("workers: 1") + textwrap.dedent("""\
        outgoing:
          amqp:
            - name: out
              url: %s
              declare:
                exchanges:
                  - {name: %s, type: %s}
                queues:
                  - {name: %s, durable: false}
                bindings:
                  - {exchange: %s, queue: %s, routing_key: %s}
        channels:
          rest:
            - name: send
              url_path: /send
              methods: [POST]
              service: t.send
        """) % (BROKER_URL, X, kind, Q, X, Q, KEY)


@pytest.fixture
def names():
    with AmqpClient() as c:
        for op, name in ((c.queue_delete, Q), (c.exchange_delete, X)):
            try:
                op(name)
            except AmqpError:
                pass
    yield
    with AmqpClient() as c:
        c.queue_delete(Q)
        c.exchange_delete(X)


def start(start_gateway, kind="topic"):
    gw = start_gateway(config(kind).replace("{", "{{").replace("}", "}}")
                       .replace("{{port}}", "{port}").replace("{{admin_port}}", "{admin_port}")
                       .replace("{{root}}", "{root}").replace("{{tmp}}", "{tmp}"))
    return gw


def send(gw):
    return Http(gw.port).post("/send", {"data": {"n": 1}, "exchange": X, "routing_key": KEY})


def wait_declared(timeout=10):
    deadline = time.time() + timeout
    while True:
        try:
            with AmqpClient() as c:
                return c.queue_count(Q)
        except AmqpError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_declared_on_connect_so_a_fresh_broker_routes(start_gateway, names, tmp_path):
    # the service file first: the gateway loads it at the start
    os.makedirs(tmp_path / "services" / "t", exist_ok=True)
    (tmp_path / "services" / "t" / "send.lua").write_text(send_service("t.send", "out"))
    gw = start(start_gateway)
    assert wait_declared() == 0
    status, _, body = send(gw)
    assert status == 200, body
    with AmqpClient() as c:
        m = c.wait_get(Q)
        assert m is not None and m.json() == {"n": 1}


def portico_connection(gw):
    """The broker's pid of portico's connection (found by its local port)."""
    out = subprocess.run(["ss", "-Htnp", "dst", "127.0.0.1:5672"], stdout=subprocess.PIPE,
                         text=True).stdout
    ports = [int(m.group(1)) for line in out.splitlines()
             if "pid=%d," % gw.proc.proc.pid in line
             for m in [re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:5672", line)] if m]
    assert ports, out
    for line in rabbitmq("ctl", "list_connections", "pid", "peer_port").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in ports:
            return parts[0]
    raise AssertionError("no broker connection of portico")


def test_declared_again_on_reconnect(start_gateway, names, tmp_path):
    os.makedirs(tmp_path / "services" / "t", exist_ok=True)
    (tmp_path / "services" / "t" / "send.lua").write_text(send_service("t.send", "out"))
    gw = start(start_gateway)
    wait_declared()
    with AmqpClient() as c:
        c.queue_delete(Q)
        c.exchange_delete(X)
    rabbitmq("ctl", "close_connection", portico_connection(gw), "test: reconnect")
    assert gw.log_has("reconnecting")
    assert wait_declared() == 0
    deadline = time.time() + 10
    while True:  # the publisher is back once its connection is
        status, _, body = send(gw)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, body


def test_refusal_is_logged_and_portico_keeps_serving(start_gateway, names, tmp_path):
    with AmqpClient() as c:  # exists already, as another type
        c.exchange_declare(X, "direct", durable=True)
    os.makedirs(tmp_path / "services" / "t", exist_ok=True)
    (tmp_path / "services" / "t" / "send.lua").write_text(send_service("t.send", "out"))
    gw = start(start_gateway)
    gw.expect_error("the broker refused to declare exchange")
    assert gw.log_has("PRECONDITION_FAILED")
    err = [e["msg"] for e in gw.log_lines("error")]
    assert any(("the broker refused to declare exchange '%s' (topic, durable): 406 "
                "PRECONDITION_FAILED" % X) in m and "'direct'" in m for m in err), err
    # the rest is still declared, and the existing exchange works
    assert wait_declared() == 0
    status, _, body = send(gw)
    assert status == 200, body
    with AmqpClient() as c:
        assert c.wait_get(Q) is not None


def test_check_names_the_line(tmp_path):
    from amqp_support import ROOT
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lua:\n  path: %s/lua\noutgoing:\n  amqp:\n    - name: b\n      declare:\n"
                   "        exchanges:\n          - {name: x, type: tpoic}\n" % ROOT)
    r = subprocess.run([binary, "--check", "-c", str(cfg)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0
    assert "bad.yaml:8: outgoing.amqp[0].declare.exchanges[0].type: expected direct, fanout, " \
           "topic, headers or x-<plugin>" in r.stderr, r.stderr


def test_api_gateway_example_works_on_a_fresh_broker(broker, tmp_path):
    """The README's AMQP example as shipped, on a broker that has never seen
    /incoming: the connection declares it (before: 503, exchange not found)."""
    from amqp_support import ROOT, Portico, derive_config, free_port
    with AmqpClient() as c:
        for op, name in ((c.queue_delete, "api.incoming"), (c.exchange_delete, "/incoming")):
            op(name)
    port, admin = free_port(), free_port()
    cfg = derive_config(os.path.join(ROOT, "config", "api-gateway.yaml"), str(tmp_path), port,
                        admin)
    p = Portico(cfg, port, workdir=str(tmp_path), env={"PORTICO_AMQP_URL": BROKER_URL})
    try:
        body = open(os.path.join(ROOT, "config", "request.json"), "rb").read()
        deadline = time.time() + 10
        while True:  # the connection comes up in the background
            status, _, answer = Http(port, auth=("api", "api-demo")).post(
                "/api/v1/user", body, {"Content-Type": "application/json"})
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert status == 200 and b"OK, data accepted" in answer, answer
        with AmqpClient() as c:
            m = c.wait_get("api.incoming")
            assert m is not None and m.json()["_receiver"] == "api.gateway"
    finally:
        code = p.stop()
    log = open(p.log_path).read()
    assert code == 0 and '"level":"error"' not in log, log
