"""amqps:// against a real RabbitMQ TLS listener (scripts/rabbitmq: 127.0.0.1:5671,
a certificate for localhost and 127.0.0.1 signed by the test CA in its
folder), and against small TLS servers of the test's own for certificates
the broker does not have (wrong host, expired), for a server that demands a
client certificate, and for a "broker" that takes the TCP connection and never
answers the handshake. See docs/amqp.md, "amqps://".

Each test reads like a Test::Nginx block: a config, requests, what the
broker and the client see, and nothing at level error in the log (the
start_gateway fixture checks that).
"""

import json
import os
import select
import socket
import ssl
import subprocess
import threading
import time

import pytest

from amqp_support import (BROKER_PORT, BROKER_TLS_CA, BROKER_TLS_DIR, BROKER_TLS_PORT,
                          AmqpClient, Http,
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
    another CA (other-ca.pem) and a client certificate it signed
    (stranger-client.*), and signed by the broker's test CA a certificate for
    another host (wrong-host.*) and an expired one for localhost (expired.*)."""
    d = str(tmp_path_factory.mktemp("amqps-certs"))
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "30",
            "-subj", "/CN=not the broker's CA", cwd=d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                "[p]\ncommonName = supplied\n"
                "[wrong]\nsubjectAltName = DNS:broker.example\n"
                "[local]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n"
                "[client]\nextendedKeyUsage = clientAuth\n")
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
    openssl("req", *key, "-keyout", "stranger-client.key", "-out", "stranger-client.csr",
            "-subj", "/CN=portico-stranger", cwd=d)
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "other-ca.pem", "-keyfile",
            "other-ca.key", "-in", "stranger-client.csr", "-out", "stranger-client.pem",
            "-extensions", "client", "-notext", "-days", "30", cwd=d)
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

    def __init__(self, cert, key, client_ca=None, tls12=False):
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if tls12:  # the client certificate is then checked within the handshake
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if client_ca:  # as RabbitMQ's verify_peer with fail_if_no_peer_cert
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
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


def test_amqps_broker_refuses_the_client_certificate(tmp_path, start_gateway, amqp, certs):
    # The broker's listener checks client certificates against its CA
    # (verify_peer): one of another CA is refused, with the broker's alert in
    # the log. A server that requires one (fail_if_no_peer_cert) refuses
    # portico without: the log says which option is missing. Under TLS 1.2
    # the refusal comes within the handshake.
    demanding = TlsServer(os.path.join(BROKER_TLS_DIR, "server.pem"),
                          os.path.join(BROKER_TLS_DIR, "server.key"), client_ca=BROKER_TLS_CA)
    old = TlsServer(os.path.join(BROKER_TLS_DIR, "server.pem"),
                    os.path.join(BROKER_TLS_DIR, "server.key"), client_ca=BROKER_TLS_CA,
                    tls12=True)
    try:
        gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Broker
      url: %s
      tls:
        ca_file: %s
        cert: %s/stranger-client.pem
        key: %s/stranger-client.key
    - name: Demanding
      url: %s
      tls: {ca_file: %s}
    - name: TLS 1.2
      url: %s
      tls:
        ca_file: %s
        cert: %s/stranger-client.pem
        key: %s/stranger-client.key
channels:
  amqp:
    - name: tls.in
      connection: Broker
      queue: %s
      service: amqps.consume
%s""" % (tls_url(), BROKER_TLS_CA, certs, certs, tls_url("localhost", demanding.port),
         BROKER_TLS_CA, tls_url("localhost", old.port), BROKER_TLS_CA, certs, certs, Q_IN,
         send_channel())))
        # TLS 1.3: the server checks the certificate after portico's half of
        # the handshake, so the refusal ends the login: with the alert it sent,
        # or, when its reset overtook the alert, with what that means
        lost = ("the broker closed the connection right after the TLS handshake (as one that "
                "refuses the client certificate does under TLS 1.3)")
        for who, url, alert in (
                ("AMQP 'Broker' [1]", tls_url(),
                 "the broker sent the alert 'unknown CA': it refused portico's client "
                 "certificate"),
                ("AMQP channel 'tls.in'", tls_url(),
                 "the broker sent the alert 'unknown CA': it refused portico's client "
                 "certificate"),
                ("AMQP 'Demanding' [1]", tls_url("localhost", demanding.port),
                 "the broker sent the alert 'certificate required': it wants a client "
                 "certificate (tls.cert and tls.key)")):
            head = "%s: cannot log in to %s: " % (who, url.replace("guest:guest", "guest"))
            assert gw.log_has(head), gw.log_text()
            line = [l for l in gw.log_text().splitlines() if head in l][0]
            assert (head + alert + "; retrying" in line or head + lost + "; retrying" in line), \
                line
        assert gw.log_has("AMQP 'TLS 1.2' [1]: TLS handshake with localhost:%d failed: the "
                          "broker sent the alert 'unknown CA': it refused portico's client "
                          "certificate; retrying in the background" % old.port), gw.log_text()
        for name in ("Broker", "Demanding", "TLS 1.2"):
            status, _, body = send(gw, outconn=name)
            assert status == 503, body
            assert json.loads(body)["error"] == "no connection to the broker of '%s'" % name
        assert not any("portico-stranger" in subject for subject, _ in tls_connections())
        assert demanding.handshakes == 0 and old.handshakes == 0
        assert amqp.queue_count(Q_TEST) == 0
    finally:
        demanding.stop()
        old.stop()


class StallingBroker(threading.Thread):
    """A "broker" on a free port that takes TCP connections and answers
    nothing: it reads what comes (the ClientHello) and holds the connection
    open. After relay() it passes new connections through to the real
    broker's TLS port instead."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held, self.first_bytes = [], []
        self.relaying = threading.Event()
        self.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.relaying.is_set():
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()
                continue
            conn.settimeout(2)
            try:
                self.first_bytes.append(conn.recv(5))
            except OSError:
                self.first_bytes.append(b"")
            self.held.append(conn)

    def _relay(self, conn):
        up = socket.create_connection(("127.0.0.1", BROKER_TLS_PORT))
        ends = {conn: up, up: conn}
        try:
            while True:
                ready, _, _ = select.select(list(ends), [], [], 30)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    ends[s].sendall(data)
        except OSError:
            pass
        finally:
            conn.close()
            up.close()

    def relay(self):
        self.relaying.set()

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


def test_amqps_stalled_handshake_times_out_and_reconnects(tmp_path, start_gateway, amqp):
    stall = StallingBroker()
    try:
        gw = start_gateway(gateway_config(tmp_path, """outgoing:
  amqp:
    - name: Stalled
      url: %s
      tls: {ca_file: %s}
      timeout: 1s
    - name: Plain
      url: amqp://guest:guest@127.0.0.1:%d/
channels:
  amqp_bus:
    - name: bus
      url_prefix: /bus
      url: %s
      tls: {ca_file: %s}
  amqp:
    - name: tls.in
      url: %s
      tls: {ca_file: %s}
      queue: %s
      service: amqps.consume
%s""" % (tls_url("127.0.0.1", stall.port), BROKER_TLS_CA, BROKER_PORT,
         tls_url("127.0.0.1", stall.port), BROKER_TLS_CA, tls_url("127.0.0.1", stall.port),
         BROKER_TLS_CA, Q_IN, send_channel())))
        gw.expect_error("no connection to the broker")  # what the bus logs for its 503
        # portico started and its workers answer while the three handshakes
        # (outgoing, bus, channel) hang: the plain connection sends
        assert gw.log_has("AMQP 'Plain' [1]: connected to amqp://")
        status, _, body = send(gw, outconn="Plain")
        assert status == 200, body
        assert json.loads(amqp.wait_get(Q_TEST).body) == {"hello": "tls"}
        deadline = time.time() + 4
        while len(stall.held) < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert len(stall.held) >= 3
        assert all(b[:1] == b"\x16" for b in stall.first_bytes)  # a TLS handshake record
        # each times out with a clear line (outgoing: its 1 s; bus and channel: 5 s)
        timed_out = ("TLS handshake with 127.0.0.1:%d timed out: no answer from the broker "
                     "within %%s s; retrying in the background" % stall.port)
        assert gw.log_has("AMQP 'Stalled' [1]: " + timed_out % "1.0", timeout=10)
        assert gw.log_has("AMQP bus 'bus': " + timed_out % "5.0", timeout=15)
        assert gw.log_has("AMQP channel 'tls.in': " + timed_out % "5.0", timeout=15)
        status, _, body = send(gw, outconn="Stalled")
        assert status == 503, body
        assert json.loads(body)["error"] == "no connection to the broker of 'Stalled'"
        status, _, body = Http(gw.port).request("GET", "/bus/%s/echo" % X_BUS)
        assert status == 503, body
        # the broker answers again: each retries and connects
        stall.relay()
        assert gw.log_has("AMQP 'Stalled' [1]: connected to amqps://guest@127.0.0.1:%d/"
                          % stall.port, timeout=30)
        assert gw.log_has("AMQP bus 'bus': connected to amqps://", timeout=30)
        assert gw.log_has("AMQP channel 'tls.in': consuming queue '%s'" % Q_IN, timeout=30)
        status, _, body = send(gw, outconn="Stalled", data={"after": "stall"})
        assert status == 200, body
        assert json.loads(amqp.wait_get(Q_TEST).body) == {"after": "stall"}
    finally:
        stall.stop()


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
