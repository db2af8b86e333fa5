"""amqps:// against a real RabbitMQ TLS listener (scripts/rabbitmq: 127.0.0.1:5671,
a certificate for localhost and 127.0.0.1 signed by the test CA in its
folder), and against small TLS servers of the test's own for certificates
the broker does not have (wrong host, expired). See docs/amqp.md, "amqps://".

Each test reads like a Test::Nginx block: a config, requests, what the
broker and the client see, and nothing at level error in the log (the
start_gateway fixture checks that).
"""

import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from amqp_support import (BROKER_TLS_CA, BROKER_TLS_DIR, BROKER_TLS_PORT, AmqpClient, Http,
                          broker_serving, rabbitmq, send_service)
from conftest import config_head

X_TEST = "portico-test.amqps.x"
Q_TEST = "portico-test.amqps.q"       # bound to X_TEST with key "ok"
Q_IN = "portico-test.amqps.in"        # consumed by an AMQP channel over TLS
Q_REPLIES = "portico-test.amqps.replies"
X_BUS = "portico-test.amqps.bus"
Q_BUS = "portico-test.amqps.bus.q"    # bound to X_BUS with "echo"

SEND_SERVICE = send_service("amqps.send", "Broker")

CONSUME_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "amqps.consume", input = { n = "integer" } }
function M:handle()
  self.response.payload = { doubled = self.request.input.n * 2, channel = self.channel.type }
end
return M
"""


def tls_url(host="localhost", port=None):
    return "amqps://guest:guest@%s:%d/" % (host, port or BROKER_TLS_PORT)


def gateway_config(tmp_path, body):
    """A test config whose services dir has the two services above; body is
    the YAML after services (outgoing, channels)."""
    services = tmp_path / "amqps-services"
    services.mkdir(exist_ok=True)
    (services / "send.lua").write_text(SEND_SERVICE)
    (services / "consume.lua").write_text(CONSUME_SERVICE)
    body = body.replace("{", "{{").replace("}", "}}")  # a template for start_gateway
    return config_head("workers: 2\ndrain_timeout: 5s", dirs=str(services)) + body


def send_channel():
    return """  rest:
    - name: send
      url_path: /send
      methods: [POST]
      service: amqps.send
"""


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Certificates the broker does not have, made with the openssl CLI:
    another CA (other-ca.pem), and signed by the broker's test CA a
    certificate for another host (wrong-host.*) and an expired one for
    localhost (expired.*)."""
    d = str(tmp_path_factory.mktemp("amqps-certs"))
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "30",
            "-subj", "/CN=not the broker's CA", cwd=d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                "[p]\ncommonName = supplied\n"
                "[wrong]\nsubjectAltName = DNS:broker.example\n"
                "[local]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    ca = ["-cert", BROKER_TLS_CA, "-keyfile", os.path.join(BROKER_TLS_DIR, "ca.key")]
    for name, ext, dates in (("wrong-host", "wrong", ["-days", "30"]),
                             ("expired", "local", ["-startdate", "20200101000000Z",
                                                   "-enddate", "20200102000000Z"])):
        openssl("req", *key, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + name, cwd=d)
        openssl("ca", "-batch", "-config", "ca.cnf", *ca, "-in", name + ".csr",
                "-out", name + ".pem", "-extensions", ext, "-notext", *dates, cwd=d)
    return d


@pytest.fixture
def amqp(broker):
    if not broker_serving():
        broker.start_app()
    try:
        socket.create_connection(("127.0.0.1", BROKER_TLS_PORT), timeout=2).close()
    except OSError:
        pytest.fail("the test broker has no TLS listener on 127.0.0.1:%d (it was started "
                    "before scripts/rabbitmq made one): scripts/rabbitmq stop, then start"
                    % BROKER_TLS_PORT)
    with AmqpClient() as c:
        c.exchange_declare(X_TEST, "direct")
        c.queue_declare(Q_TEST)
        c.queue_bind(Q_TEST, X_TEST, "ok")
        c.queue_declare(Q_IN)
        c.queue_declare(Q_REPLIES)
        c.exchange_declare(X_BUS, "topic")
        c.queue_declare(Q_BUS)
        c.queue_bind(Q_BUS, X_BUS, "echo")
        for q in (Q_TEST, Q_IN, Q_REPLIES, Q_BUS):
            c.queue_purge(q)
        yield c


def tls_connections():
    """(peer_cert_subject, user) of every TLS connection the broker has."""
    out = rabbitmq("ctl", "-q", "list_connections", "ssl", "peer_cert_subject", "user")
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [(r[1], r[2]) for r in rows if len(r) >= 3 and r[0] == "true"]


def send(gw, outconn="Broker", exchange=X_TEST, routing_key="ok", data=None):
    return Http(gw.port).post("/send", json.dumps({
        "data": data or {"hello": "tls"}, "outconn": outconn, "exchange": exchange,
        "routing_key": routing_key}), headers={"Content-Type": "application/json"})


def fd_count(gw):
    return len(os.listdir("/proc/%d/fd" % gw.proc.proc.pid))


# ---- over the broker's TLS listener ----------------------------------------------


def test_amqps_publish_with_confirms_and_a_client_certificate(tmp_path, start_gateway, amqp):
    gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Broker
      url: %s
      tls:
        ca_file: %s
        cert: %s/client.pem
        key: %s/client.key
channels:
%s""" % (tls_url(), BROKER_TLS_CA, BROKER_TLS_DIR, BROKER_TLS_DIR, send_channel())))
    assert gw.log_has("AMQP 'Broker' [1]: connected to amqps://guest@localhost:%d/ "
                      "(publisher confirms)" % BROKER_TLS_PORT)
    status, _, body = send(gw, data={"n": 1, "over": "amqps"})
    assert status == 200, body
    assert json.loads(body) == {"sent": True}
    msg = amqp.wait_get(Q_TEST)
    assert json.loads(msg.body) == {"n": 1, "over": "amqps"}
    # the broker saw TLS and the client certificate
    assert any("portico-test-client" in subject for subject, _ in tls_connections())


def test_amqps_channel_runs_its_service(tmp_path, start_gateway, amqp):
    # an IP address: checked against the certificate's IP entry
    gw = start_gateway(gateway_config(tmp_path, """channels:
  amqp:
    - name: tls.in
      url: %s
      tls: {ca_file: %s}
      queue: %s
      service: amqps.consume
""" % (tls_url("127.0.0.1"), BROKER_TLS_CA, Q_IN)))
    assert gw.log_has("AMQP channel 'tls.in': consuming queue '%s' on amqps://guest@127.0.0.1"
                      % Q_IN)
    amqp.publish("", Q_IN, json.dumps({"n": 21}), reply_to=Q_REPLIES, correlation_id="tls-1",
                 content_type="application/json")
    reply = amqp.wait_get(Q_REPLIES)
    assert json.loads(reply.body) == {"doubled": 42, "channel": "amqp"}
    assert reply.props.get("correlation_id") == "tls-1"
    assert amqp.queue_count(Q_IN) == 0


def test_amqps_bus_round_trip(tmp_path, start_gateway, amqp):
    gw = start_gateway(gateway_config(tmp_path, """channels:
  amqp_bus:
    - name: bus
      url_prefix: /bus
      url: %s
      tls: {ca_file: %s}
      reply_timeout: 5s
""" % (tls_url(), BROKER_TLS_CA)))
    assert gw.log_has("AMQP bus 'bus': connected to amqps://guest@localhost")
    backend = BusEcho(Q_BUS)
    try:
        status, headers, body = Http(gw.port).request("POST", "/bus/%s/echo?x=1" % X_BUS,
                                                      body="over tls")
        assert status == 200, body
        assert body == b"echo: over tls"
        assert headers["content-type"] == "text/plain"
    finally:
        backend.stop()


# ---- refused certificates: 503 at once, a clear log line, the usual retry ----------


def test_amqps_wrong_ca_is_503_and_named_in_the_log(tmp_path, start_gateway, amqp, certs):
    gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Broker
      url: %s
      tls: {ca_file: %s/other-ca.pem}
    - name: System store
      url: %s
channels:
  amqp_bus:
    - name: bus
      url_prefix: /bus
      url: %s
      tls: {ca_file: %s/other-ca.pem}
  amqp:
    - name: tls.in
      connection: Broker
      queue: %s
      service: amqps.consume
%s""" % (tls_url(), certs, tls_url(), tls_url(), certs, Q_IN, send_channel())))
    refused = ("TLS handshake with localhost:%d failed: the broker's certificate was refused: "
               "self-signed certificate in certificate chain (certificate /CN=portico test CA)"
               % BROKER_TLS_PORT)
    gw.expect_error("no connection to the broker")  # what the bus logs for its 503
    assert gw.log_has("AMQP 'Broker' [1]: " + refused)
    assert gw.log_has("AMQP 'System store' [1]: " + refused)  # the test CA is in no system store
    assert gw.log_has("AMQP bus 'bus': " + refused)
    assert gw.log_has("AMQP channel 'tls.in': " + refused)
    assert "retrying in the background" in [l for l in gw.log_text().splitlines()
                                            if refused in l][0]
    t = time.time()
    status, _, body = send(gw)
    assert status == 503, body
    assert json.loads(body)["error"] == "no connection to the broker of 'Broker'"
    status, _, body = Http(gw.port).request("GET", "/bus/%s/echo" % X_BUS)
    assert status == 503, body
    assert time.time() - t < 2
    # the retries (0.1 s doubling: several per connection by then) leave no
    # socket behind; at most one per connection is open at a time
    fds = fd_count(gw)
    time.sleep(2.5)
    assert fd_count(gw) <= fds + 4
    assert amqp.queue_count(Q_TEST) == 0


def test_amqps_verify_false_connects_with_a_warning(tmp_path, start_gateway, amqp):
    gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Broker
      url: %s
      tls: {verify: false}
channels:
%s""" % (tls_url(), send_channel())))
    warnings = [e["msg"] for e in gw.log_lines("warn") if "tls.verify is false" in e["msg"]]
    assert warnings == ["AMQP 'Broker': tls.verify is false: the certificate of "
                        "amqps://guest@localhost:%d/ is not checked, so anyone on the path can "
                        "pose as the broker" % BROKER_TLS_PORT]
    assert gw.log_has("AMQP 'Broker' [1]: connected to amqps://")
    status, _, body = send(gw)
    assert status == 200, body
    assert json.loads(amqp.wait_get(Q_TEST).body) == {"hello": "tls"}


class TlsServer(threading.Thread):
    """A TLS server on a free port with the given certificate: completes
    handshakes it can, then closes. Enough to see a client refuse it."""

    def __init__(self, cert, key):
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True):
                    self.handshakes += 1
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def stop(self):
        self.sock.close()


def test_amqps_wrong_host_and_expired_certificates_are_refused(tmp_path, start_gateway, certs):
    wrong = TlsServer(os.path.join(certs, "wrong-host.pem"), os.path.join(certs, "wrong-host.key"))
    expired = TlsServer(os.path.join(certs, "expired.pem"), os.path.join(certs, "expired.key"))
    try:
        gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Wrong host
      url: %s
      tls: {ca_file: %s}
    - name: Wrong IP
      url: %s
      tls: {ca_file: %s}
    - name: Expired
      url: %s
      tls: {ca_file: %s}
channels:
%s""" % (tls_url("localhost", wrong.port), BROKER_TLS_CA, tls_url("127.0.0.1", wrong.port),
         BROKER_TLS_CA, tls_url("localhost", expired.port), BROKER_TLS_CA, send_channel())))
        assert gw.log_has("AMQP 'Wrong host' [1]: TLS handshake with localhost:%d failed: the "
                          "broker's certificate was refused: hostname mismatch" % wrong.port)
        assert gw.log_has("AMQP 'Wrong IP' [1]: TLS handshake with 127.0.0.1:%d failed: the "
                          "broker's certificate was refused: IP address mismatch" % wrong.port)
        assert gw.log_has("AMQP 'Expired' [1]: TLS handshake with localhost:%d failed: the "
                          "broker's certificate was refused: certificate has expired"
                          % expired.port)
        for name in ("Wrong host", "Expired"):
            status, _, body = send(gw, outconn=name)
            assert status == 503, body
    finally:
        wrong.stop()
        expired.stop()


def test_amqps_options_on_amqp_url_and_missing_ca_file_name_the_line(tmp_path):
    binary = os.environ.get("PORTICO_BIN") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "build", "portico")
    cases = [("url: amqp://guest:guest@127.0.0.1:5672/\n      tls: {verify: false}",
              ":7: outgoing.amqp[0].tls: TLS options need an amqps:// URL"),
             ("url: %s\n      tls: {ca_file: no-such-ca.pem}" % tls_url(),
              ":7: outgoing.amqp[0].tls.ca_file: cannot read no-such-ca.pem: No such file")]
    for i, (lines, message) in enumerate(cases):
        path = tmp_path / ("bad%d.yaml" % i)
        path.write_text("services:\n  dirs: []\noutgoing:\n  amqp:\n    - name: Broker\n      %s\n"
                        % lines)
        proc = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 1
        assert str(path) + message in proc.stderr, proc.stderr


# ---- the broker goes away and comes back ---------------------------------------------


def test_broker_amqps_reconnects_after_a_restart(tmp_path, start_gateway, amqp, broker):
    gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Broker
      url: %s
      tls: {ca_file: %s}
channels:
%s""" % (tls_url(), BROKER_TLS_CA, send_channel())))
    assert gw.log_has("AMQP 'Broker' [1]: connected to amqps://")
    broker.stop_app()
    try:
        assert gw.log_has("AMQP 'Broker' [1]: connection lost")
        status, _, _ = send(gw)
        assert status == 503
    finally:
        broker.start_app()
    deadline = time.time() + 20
    while True:
        status, _, body = send(gw)
        if status == 200:
            break
        assert time.time() < deadline, body
        time.sleep(0.2)
    with AmqpClient() as c:
        assert json.loads(c.wait_get(Q_TEST).body) == {"hello": "tls"}


# ---- helpers -------------------------------------------------------------------------


class BusEcho(threading.Thread):
    """A bus backend on the plain port: answers every message of queue with
    "echo: <body>" to its reply_to."""

    def __init__(self, queue):
        super().__init__(daemon=True)
        self.client = AmqpClient()
        self.queue = queue
        self.stopped = threading.Event()
        self.start()

    def run(self):
        while not self.stopped.is_set():
            msg = self.client.get(self.queue)
            if msg is None:
                time.sleep(0.02)
                continue
            self.client.publish("", msg.props["reply_to"], b"echo: " + msg.body,
                                correlation_id=msg.props["correlation_id"],
                                content_type="text/plain")

    def stop(self):
        self.stopped.set()
        self.join(5)
        self.client.close()
