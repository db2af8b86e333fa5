"""https:// targets: http_proxy services and outgoing.http connections over
TLS to real Python ssl backends (http_backend.py --cert/--key), with
certificates made by the openssl CLI for the module (never committed):
verification by the system store plus tls.ca_file, refused certificates
(expired, self-signed, wrong host) as 502 with OpenSSL's reason in the log,
verify: false with its warning, client certificates, keep-alive reuse,
session resumption, broken or stalled handshakes, WebSocket over TLS. See
docs/tls.md, "Client side"."""
import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest

from amqp_support import Http, free_port, scrape, value
from conftest import config_head

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- certificates (openssl CLI) ----------------------------------------------

def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A test CA (ca.pem) and, signed by it: good.* (localhost, 127.0.0.1),
    expired.* (the same names, valid in 2020 only), wrong-host.*
    (other.example only), client.* (a client certificate, CN portico-client);
    self-signed.* (localhost, 127.0.0.1, signed by itself)."""
    d = str(tmp_path_factory.mktemp("https-certs"))
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=https backend test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-x509", *key, "-keyout", "self-signed.key", "-out", "self-signed.pem",
            "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                "copy_extensions = none\n[p]\ncommonName = supplied\n"
                "[local]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage = serverAuth\n"
                "[wrong]\nsubjectAltName = DNS:other.example\nextendedKeyUsage = serverAuth\n"
                "[client]\nextendedKeyUsage = clientAuth\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    for name, ext, dates in (("good", "local", ["-days", "30"]),
                             ("expired", "local", ["-startdate", "20200101000000Z",
                                                   "-enddate", "20200102000000Z"]),
                             ("wrong-host", "wrong", ["-days", "30"]),
                             ("client", "client", ["-days", "30"])):
        cn = "portico-client" if name == "client" else name
        openssl("req", *key, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn, cwd=d)
        openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", name + ".csr", "-out", name + ".pem", "-extensions", ext, "-notext",
                *dates, cwd=d)
    return d


class TlsBackend:
    """http_backend.py over TLS with the certificate NAME of certs, as a
    process; client_ca: require a client certificate of it."""

    def __init__(self, certs, name="good", client_ca=None, max_tls=None):
        self.port = free_port()
        args = [sys.executable, os.path.join(HERE, "http_backend.py"), str(self.port),
                "--cert", os.path.join(certs, name + ".pem"),
                "--key", os.path.join(certs, name + ".key")]
        if client_ca:
            args += ["--client-ca", client_ca]
        if max_tls:
            args += ["--max-tls", max_tls]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout.readline().strip() == b"ready"

    def kill(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tls_backend(certs):
    started = []

    def start(name="good", client_ca=None, max_tls=None):
        b = TlsBackend(certs, name, client_ca, max_tls)
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()


class RawServer:
    """A TCP server in a thread that answers a connection with garbage (not
    a ServerHello) or reads and says nothing (a stalled handshake)."""

    def __init__(self, mode):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.conns = []
        self.accepted = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            if self.mode == "garbage":
                try:
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" + b"\x00" * 64)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


# ---- the gateway -------------------------------------------------------------

CALL_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "t.call" }

function M:handle()
  local p = self.request.payload
  local res, err = self.out.http[p.conn]:get(p.path or "/x")
  self.response.payload = { res = res, err = err }
end

return M
"""


def start_with(start_gateway, tmp_path, services, outgoing="", sub=None):
    """A gateway with one worker, channel svc (http_proxy, /svc) over the
    services YAML given, the gateway channel /gateway/t.call and the
    outgoing.http entries given (in tmp_path / sub when given)."""
    d = tmp_path / sub if sub else tmp_path
    os.makedirs(d / "services" / "t", exist_ok=True)
    with open(d / "services" / "t" / "call.lua", "w") as f:
        f.write(textwrap.dedent(CALL_SERVICE))

    def literal(part, indent):  # kept as it is by Gateway's str.format
        return textwrap.indent(textwrap.dedent(part).replace("{", "{{").replace("}", "}}"), indent)

    text = config_head("workers: 1", log="level: info") + """channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [POST]
      gateway_service_list: [t.call]
  http_proxy:
    - name: svc
      url_prefix: /svc
      connect_timeout: 1s
      read_timeout: 5s
      fail_timeout: 0s
      services:
""" + literal(services, " " * 8) + ("outgoing:\n  http:\n" + literal(outgoing, "    ")
                                     if outgoing else "")
    return start_gateway(text, sub=sub)


def get(gw, path):
    h = gw.http()
    status, hdrs, data = h.request("GET", path)
    h.close()
    return status, data


def seen(data):
    return json.loads(data)


def call(gw, conn, path="/x"):
    h = gw.http()
    status, _, body = h.post("/gateway/t.call", {"conn": conn, "path": path})
    h.close()
    assert status == 200, body
    return json.loads(body)


def metric(gw, name):
    return value(scrape(gw), name)


# ---- a good backend ----------------------------------------------------------

def test_proxy_and_outgoing_verified_with_ca_file(start_gateway, tmp_path, certs, tls_backend):
    b = tls_backend("good")
    ca = os.path.join(certs, "ca.pem")
    gw = start_with(start_gateway, tmp_path, """
        ip:
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s}
        name:
          targets: [https://localhost:%d]
          tls: {ca_file: %s}
    """ % (b.port, ca, b.port, ca), outgoing="""
        - name: crm
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s}
    """ % (b.port, ca))
    h = gw.http()
    for svc in ("ip", "name"):
        status, _, data = h.request("POST", "/svc/%s/a/b?q=1" % svc, body=b"x" * 100000)
        assert status == 200, data
        info = seen(data)
        assert info["target"] == "/a/b?q=1"
        assert info["body_len"] == 100000
        assert info["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
        assert info["tls"]["client_cn"] is None
    # keep-alive: the backend sees N requests on one TLS connection
    conns = {seen(h.request("GET", "/svc/ip/ka")[2])["connection"] for _ in range(5)}
    assert len(conns) == 1, conns
    h.close()
    out = call(gw, "crm", "/from-lua")
    assert out.get("err") is None, out
    assert out["res"]["status"] == 200
    assert out["res"]["json"]["target"] == "/from-lua"
    assert out["res"]["json"]["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    m = lambda name: value(samples, name)
    samples = scrape(gw)
    assert m("portico_upstream_tls_handshakes_total") >= 3
    assert m("portico_upstream_tls_handshake_failures_total") == 0


def frozen(gw):
    """A context in which portico's process is stopped (SIGSTOP): bytes sent
    meanwhile wait in its sockets and are seen in one loop turn."""
    class Frozen:
        def __enter__(self):
            os.kill(gw.proc.proc.pid, signal.SIGSTOP)
            time.sleep(0.1)

        def __exit__(self, *exc):
            os.kill(gw.proc.proc.pid, signal.SIGCONT)
    return Frozen()


def test_pooled_tls_connection_with_a_close_notify_or_a_stray_answer_is_not_reused(
        start_gateway, tmp_path, certs, tls_backend):
    """Pool integrity over TLS: the target closes a kept-alive connection
    (close_notify), or sends an answer nobody asked for, while it is idle or
    in the same loop turn as the request that would take it: the next client
    gets its own answer, on a new connection."""
    b = tls_backend("good")
    gw = start_with(start_gateway, tmp_path, """
        pool:
          targets: [https://localhost:%d]
          tls: {ca_file: %s}
    """ % (b.port, os.path.join(certs, "ca.pem")))
    h = gw.http()
    for path in ("/then-close", "/then-junk?delay=0.2"):
        first = seen(h.request("GET", "/svc/pool" + path)[2])
        time.sleep(0.5)  # the close_notify or the stray answer came while idle
        status, _, data = h.request("GET", "/svc/pool/next")
        assert status == 200, data
        assert data.startswith(b"{"), (path, data)
        assert seen(data)["target"] == "/next"
        assert seen(data)["connection"] != first["connection"]
    h.close()
    # the stray answer reaches portico's socket in the loop turn of the next request
    s = gw.raw()
    first = seen(get(gw, "/svc/pool/then-junk?delay=0.3")[1])
    with frozen(gw):
        time.sleep(0.6)
        s.sendall(b"GET /svc/pool/next HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert seen(body)["target"] == "/next"
    assert seen(body)["connection"] != first["connection"]
    s.close()


def test_the_system_store_verifies_by_default(start_gateway, tmp_path, certs, tls_backend,
                                              monkeypatch):
    """No ca_file: the system store decides. Debian's does not know the test
    CA; with SSL_CERT_FILE (OpenSSL's override of the store's file) naming
    it, the same target verifies."""
    b = tls_backend("good")
    services = """
        sys:
          targets: [https://localhost:%d]
    """ % b.port
    gw = start_with(start_gateway, tmp_path, services, sub="plain")
    gw.expect_error("TLS handshake with the target failed: unable to get local issuer certificate")
    status, data = get(gw, "/svc/sys/x")
    assert status == 502, data
    assert gw.log_has("TLS handshake with localhost:%d failed: unable to get local issuer "
                      "certificate" % b.port)
    monkeypatch.setenv("SSL_CERT_FILE", os.path.join(certs, "ca.pem"))
    gw = start_with(start_gateway, tmp_path, services, sub="store")
    status, data = get(gw, "/svc/sys/x")
    assert status == 200, data


@pytest.mark.parametrize("max_tls,version", [(None, "TLSv1.3"), ("1.2", "TLSv1.2")])
def test_session_resumption_on_a_new_connection(start_gateway, tmp_path, certs, tls_backend,
                                                max_tls, version):
    """Each connection after the first resumes, also when the target gives
    no new session on a resumed one (TLS 1.2): the target's session outlives
    the connections that used it."""
    b = tls_backend("good", max_tls=max_tls)
    gw = start_with(start_gateway, tmp_path, """
        fresh:
          targets: [https://127.0.0.1:%d]
          keepalive: 0
          tls: {ca_file: %s}
    """ % (b.port, os.path.join(certs, "ca.pem")))
    infos = [seen(get(gw, "/svc/fresh/r%d" % i)[1]) for i in range(5)]
    assert len({i["connection"] for i in infos}) == 5  # keepalive 0: a connection each
    assert {i["tls"]["version"] for i in infos} == {version}
    assert [i["tls"]["session_reused"] for i in infos] == [False, True, True, True, True]
    assert metric(gw, "portico_upstream_tls_resumed_total") == 4


# ---- refused certificates ----------------------------------------------------

@pytest.mark.parametrize("name,reason", [("expired", "certificate has expired"),
                                         ("self-signed", "self-signed certificate"),
                                         ("wrong-host", "hostname mismatch")])
def test_refused_certificate_is_502_with_the_reason(start_gateway, tmp_path, certs, tls_backend,
                                                     name, reason):
    b = tls_backend(name)
    ca = os.path.join(certs, "ca.pem")
    gw = start_with(start_gateway, tmp_path, """
        bad:
          targets: [https://localhost:%d]
          tls: {ca_file: %s}
    """ % (b.port, ca), outgoing="""
        - name: bad
          targets: [https://localhost:%d]
          tls: {ca_file: %s}
    """ % (b.port, ca))
    gw.expect_error("TLS handshake with the target failed: " + reason)
    status, data = get(gw, "/svc/bad/x")
    assert status == 502, data
    msg = json.loads(data)["error"]["message"]
    assert msg == "TLS handshake with the target failed: " + reason, msg
    assert gw.log_has("TLS handshake with localhost:%d failed: %s" % (b.port, reason))
    out = call(gw, "bad")
    assert out.get("res") is None
    assert out["err"] == "bad: connect failed (TLS handshake with localhost:%d failed: %s)" % (
        b.port, reason), out
    assert metric(gw, "portico_upstream_tls_handshake_failures_total") >= 2


def test_verify_false_works_and_warns(start_gateway, tmp_path, certs, tls_backend):
    b = tls_backend("self-signed")
    gw = start_with(start_gateway, tmp_path, """
        lax:
          targets: [https://127.0.0.1:%d]
          tls: {verify: false}
    """ % b.port)
    status, data = get(gw, "/svc/lax/x")
    assert status == 200, data
    assert seen(data)["tls"]["version"]
    warns = [e for e in gw.log_lines("warn") if "tls.verify is false" in e.get("msg", "")]
    assert len(warns) == 1, gw.log_text()
    assert "channels.http_proxy[0].services.lax" in warns[0]["msg"]


def test_server_name_override(start_gateway, tmp_path, certs, tls_backend):
    b = tls_backend("wrong-host")  # names other.example only
    ca = os.path.join(certs, "ca.pem")
    gw = start_with(start_gateway, tmp_path, """
        named:
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s, server_name: other.example}
    """ % (b.port, ca))
    status, data = get(gw, "/svc/named/x")
    assert status == 200, data


def test_client_certificate(start_gateway, tmp_path, certs, tls_backend):
    ca = os.path.join(certs, "ca.pem")
    b = tls_backend("good", client_ca=ca)
    gw = start_with(start_gateway, tmp_path, """
        mtls:
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s, cert: %s, key: %s}
        anon:
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s}
    """ % (b.port, ca, os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"),
           b.port, ca))
    status, data = get(gw, "/svc/mtls/x")
    assert status == 200, data
    assert seen(data)["tls"]["client_cn"] == "portico-client"
    # without one the backend refuses (TLS 1.3: after portico's handshake ended)
    gw.expect_error("closed the connection before answering")
    status, data = get(gw, "/svc/anon/x")
    assert status == 502, data
    assert gw.log_has("127.0.0.1:%d closed the connection before answering: end of file (it "
                      "asked for a client certificate: tls has none)" % b.port)


# ---- broken handshakes -------------------------------------------------------

def test_garbage_and_stalled_handshakes(start_gateway, tmp_path, certs, tls_backend):
    garbage, stall = RawServer("garbage"), RawServer("stall")
    good = tls_backend("good")
    try:
        gw = start_with(start_gateway, tmp_path, """
            garbage:
              targets: [https://127.0.0.1:%d]
            stall:
              targets: [https://127.0.0.1:%d]
            good:
              targets: [https://localhost:%d]
              tls: {ca_file: %s}
        """ % (garbage.port, stall.port, good.port, os.path.join(certs, "ca.pem")))
        gw.expect_error("TLS handshake with the target failed: ")
        gw.expect_error(r"connecting to the target timed out after 1000 ms \(in the TLS handshake\)")
        status, data = get(gw, "/svc/garbage/x")
        assert status == 502, data
        assert json.loads(data)["error"]["message"].startswith(
            "TLS handshake with the target failed: ")
        assert gw.log_has("TLS handshake with 127.0.0.1:%d failed: " % garbage.port)
        status, data = get(gw, "/svc/stall/x")
        assert status == 504, data
        assert gw.log_has("connecting to 127.0.0.1:%d timed out after 1000 ms (in the TLS "
                          "handshake)" % stall.port)
        assert stall.accepted >= 1
        # still serving
        assert get(gw, "/svc/good/x")[0] == 200
    finally:
        garbage.close()
        stall.close()


# ---- WebSocket over an https target ------------------------------------------

def ws_frame(text):
    data = text.encode()
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data))


def test_websocket_through_an_https_target(start_gateway, tmp_path, certs, tls_backend):
    b = tls_backend("good")
    gw = start_with(start_gateway, tmp_path, """
        ws:
          targets: [https://localhost:%d]
          tls: {ca_file: %s}
    """ % (b.port, os.path.join(certs, "ca.pem")))
    s = gw.raw()
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /svc/ws/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC11B85").encode()).digest())
    assert b"Sec-WebSocket-Accept: " + accept in head
    for i in range(3):
        s.sendall(ws_frame("hello %d" % i))
        while len(rest) < 2 or len(rest) < 2 + rest[1]:
            rest += s.recv(4096)
        n = rest[1]
        assert rest[2:2 + n] == ("echo:%d:hello %d" % (b.port, i)).encode()
        rest = rest[2 + n:]
    s.sendall(bytes([0x88, 0x80]) + b"\0\0\0\0")
    assert s.recv(2) == b"\x88\x00"
    s.close()


# ---- reload ------------------------------------------------------------------

def test_reload_rereads_the_tls_files_and_refuses_broken_ones(start_gateway, tmp_path, certs,
                                                             tls_backend):
    b = tls_backend("good")
    ca = tmp_path / "ca.pem"
    good_ca = open(os.path.join(certs, "ca.pem"), "rb").read()
    ca.write_bytes(good_ca)
    gw = start_with(start_gateway, tmp_path, """
        r:
          targets: [https://localhost:%d]
          keepalive: 0
          tls: {ca_file: %s}
    """ % (b.port, ca))
    gw.expect_error("config reload refused")
    gw.expect_error("TLS handshake with the target failed: unable to get local issuer")
    admin = Http(gw.admin_port)
    assert get(gw, "/svc/r/x")[0] == 200
    # a broken ca_file: refused with file and line, the running CA keeps verifying
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    st, _, body = admin.request("POST", "/reload")
    answer = json.loads(body)
    assert answer["accepted"] is False, answer
    assert "portico.yaml:" in answer["error"] and "services.r.tls: ca_file" in answer["error"]
    assert "not a PEM file of certificates" in answer["error"], answer
    assert get(gw, "/svc/r/x")[0] == 200  # a new connection, on the old context
    # another CA in the file: accepted, and new connections are checked against it
    ca.write_bytes(open(os.path.join(certs, "self-signed.pem"), "rb").read())
    st, _, body = admin.request("POST", "/reload")
    assert json.loads(body)["accepted"] is True, body
    status, data = get(gw, "/svc/r/x")
    assert status == 502, data
    assert "unable to get local issuer certificate" in json.loads(data)["error"]["message"]
    admin.close()


# ---- config ------------------------------------------------------------------

def test_config_errors_name_the_line(tmp_path, certs):
    """A few of the unit tests' cases through the binary: it refuses to start."""
    binary = os.environ.get("PORTICO_BIN") or os.path.join(HERE, "..", "..", "build", "portico")
    cases = [
        ("targets: [http://127.0.0.1:1, https://127.0.0.1:2]",
         "http:// and https:// targets cannot be mixed in one upstream"),
        ("targets: [https://127.0.0.1:2]\n          tls: {ca_file: %s/missing.pem}" % certs,
         "tls.ca_file: cannot read"),
        ("targets: [https://127.0.0.1:2]\n          tls: {cert: %s/client.pem, key: %s/good.key}"
         % (certs, certs), "does not match the certificate"),
    ]
    for yaml_line, needle in cases:
        path = tmp_path / "bad.yaml"
        path.write_text("channels:\n  http_proxy:\n    - name: p\n      url_prefix: /p\n"
                        "      services:\n        s:\n          %s\n" % yaml_line)
        r = subprocess.run([binary, "-c", str(path)], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        assert "bad.yaml:" in r.stderr and needle in r.stderr, r.stderr


def test_a_pooled_connection_portico_closes_ends_with_close_notify(start_gateway, tmp_path,
                                                                    certs):
    """When portico closes an idle pooled TLS connection (here: at exit, as
    on a reload or the idle limit), it sends a close_notify first: the
    backend sees an orderly end, not a truncation."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(certs, "good.pem"), os.path.join(certs, "good.key"))
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python's default hides a truncation
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    ends = []

    def serve():
        raw, _ = lsock.accept()
        s = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    ends.append("close_notify")
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    _, _, buf = buf.partition(b"\r\n\r\n")
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except ssl.SSLError as e:  # UNEXPECTED_EOF_WHILE_READING: no close_notify
            ends.append("truncated" if "EOF" in str(e).upper() else "error %r" % e)
        except OSError as e:
            ends.append("error %r" % e)
        finally:
            s.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    gw = start_with(start_gateway, tmp_path, """
        b:
          targets: [https://127.0.0.1:%d]
          tls: {ca_file: %s}
    """ % (port, os.path.join(certs, "ca.pem")))
    assert get(gw, "/svc/b/x") == (200, b"ok")
    gw.proc.proc.terminate()
    gw.proc.proc.wait(timeout=10)
    t.join(10)
    lsock.close()
    assert ends == ["close_notify"], ends
