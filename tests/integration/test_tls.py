"""TLS at the edge (server.tls): real clients only (Python's ssl, curl,
openssl s_client, the `ws` package over wss://). Certificates are made in
each test with the openssl CLI (scripts/dev-cert for the shipped config)."""
import http.client
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import threading
import time

import pytest

from amqp_support import ROOT, Http, free_port, listen_lines, scrape, value, with_ports
from conftest import config_head, read_until_close

WS_DIR = os.path.join(ROOT, "tests", "integration", "ws")
BINARY = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")


# ---- certificates (openssl CLI) ----------------------------------------------

def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def make_ca(d, name="ca"):
    d = str(d)
    os.makedirs(d, exist_ok=True)
    key, pem = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "30", "-subj", "/CN=test CA " + name, "-keyout", key, "-out", pem,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pem, key


def make_cert(d, ca, name, dns=(), ips=(), cn=None):
    """A server certificate signed by ca (pem, key): returns (cert, key)."""
    d = str(d)
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert, ext = os.path.join(d, name + ".pem"), os.path.join(d, name + ".ext")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=" + (cn or (dns[0] if dns else name)), "-keyout", key, "-out", csr)
    sans = ["DNS:" + n for n in dns] + ["IP:" + i for i in ips]
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        if sans:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")), "-days", "30", "-extfile", ext,
            "-out", cert)
    return cert, key


# ---- a gateway with a TLS listener -------------------------------------------

def tls_block(certs, tls_port="{tls_port}", extra=""):
    lines = ["tls:", "  listen: 127.0.0.1:" + tls_port, "  certificates:"]
    lines += ["    - {{cert: %s, key: %s}}" % c for c in certs]
    lines += ["  " + l for l in extra.splitlines() if l.strip()]
    return "\n".join(lines) + "\n"


def tls_config(certs, extra="", header_timeout="10s", server=""):
    """The test base config (conftest) with server.tls on {tls_port}."""
    return config_head("workers: 2\nheader_timeout: %s\n" % header_timeout + server +
                       tls_block(certs, extra=extra)) + """channels:
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: demo.echo
"""


def start_tls(start_gateway, certs, **kw):
    tls_port = free_port()
    gw = start_gateway(tls_config(certs, **kw), tls_port=tls_port)
    gw.tls_port = tls_port
    wait_port(tls_port)
    # the probe closed at once: wait until it is counted ("eof"), so that the
    # figures a test takes afterwards cannot count it
    assert wait_for(lambda: failures(gw, "eof") >= 1)
    return gw


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def client_ctx(ca=None, **kw):
    ctx = ssl.create_default_context(cafile=ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, server_hostname="localhost", timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def https(port, ctx, host="localhost"):
    return _HostConn(port, ctx, host)


class _HostConn(http.client.HTTPSConnection):
    """An HTTPS connection to 127.0.0.1 that sends SNI and checks host."""

    def __init__(self, port, ctx, host):
        super().__init__(host, port, context=ctx, timeout=10)

    def connect(self):
        self.sock = tls_connect(self.port, self._context, self.host)


def get(conn, path="/api/echo?x=1", body=None):
    conn.request("POST" if body is not None else "GET", path,
                 body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    return r.status, r.read()


def peer_cert_der(port, ca, name="localhost"):
    with tls_connect(port, client_ctx(ca), name) as s:
        return s.getpeercert(binary_form=True)


def cert_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def failures(gw, reason):
    return value(scrape(gw), "portico_tls_handshake_failures_total", reason=reason)


def wait_for(pred, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "certs"
    ca = make_ca(d)
    return d, ca, make_cert(d, ca, "server", dns=["localhost"], ips=["127.0.0.1"])


# ---- the shipped config over TLS -----------------------------------------------

def readme_curls():
    """The curl lines of the README's "Call a service" section."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Call a service", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(l) for l in block.splitlines() if l.strip().startswith("curl ")]


def normalized(body):
    """An answer without what differs between two calls (cid, Host)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in ("cid", "host")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return strip(doc)


def test_readme_examples_over_tls_match_plaintext(start_gateway, tmp_path):
    certs_dir = tmp_path / "devcerts"
    r = subprocess.run([os.path.join(ROOT, "scripts", "dev-cert"), str(certs_dir)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = open(os.path.join(ROOT, "config", "tls.yaml")).read()
    text = text.replace("{", "{{").replace("}", "}}")
    assert [p for _, p in listen_lines(text)] == ["server", "server.tls", "admin"]
    text = with_ports(text, {"server": "{port}", "admin": "{admin_port}",
                             "server.tls": "{tls_port}"})
    text = text.replace("../certs/", str(certs_dir) + "/").replace("../services", "{root}/services")
    tls_port = free_port()
    gw = start_gateway(text, tls_port=tls_port)
    wait_port(tls_port)
    curls = readme_curls()
    assert len(curls) >= 4
    for argv in curls:
        plain = [a.replace("127.0.0.1:11223", "127.0.0.1:%d" % gw.port) for a in argv]
        secure = [a.replace("http://127.0.0.1:11223", "https://127.0.0.1:%d" % tls_port)
                  for a in argv] + ["--cacert", str(certs_dir / "ca.pem")]
        assert plain != argv and secure[:-2] != argv
        a = subprocess.run(plain + ["-w", "\n%{http_code}"], capture_output=True, timeout=30)
        b = subprocess.run(secure + ["-w", "\n%{http_code}"], capture_output=True, timeout=30)
        assert a.returncode == 0 and b.returncode == 0, b.stderr
        body_a, status_a = a.stdout.rsplit(b"\n", 1)
        body_b, status_b = b.stdout.rsplit(b"\n", 1)
        assert status_a == status_b == b"200", (argv, a.stdout, b.stdout)
        assert normalized(body_a) == normalized(body_b), argv
    # and a keep-alive Python client over the same listener: many requests, one handshake
    before = value(scrape(gw), "portico_tls_handshakes_total", version="TLSv1.3")
    conn = https(tls_port, client_ctx(str(certs_dir / "ca.pem")), "127.0.0.1")
    conn.request("GET", "/api/echo?x=1", headers={"Authorization": "Basic am9obi5kb2U6c2VjcmV0"})
    first = conn.getresponse()
    assert first.status == 200
    first.read()
    for i in range(20):
        conn.request("POST", "/api/customer/get", body=json.dumps({"customer_id": 123}),
                     headers={"Authorization": "Basic am9obi5kb2U6c2VjcmV0"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["tier"] == "gold"
    assert conn.sock.version() == "TLSv1.3" and conn.sock.selected_alpn_protocol() is None
    conn.close()
    after = value(scrape(gw), "portico_tls_handshakes_total", version="TLSv1.3")
    assert after == before + 1


def test_alpn_http11_and_big_bodies_both_ways(start_gateway, certs):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    ctx = client_ctx(ca[0])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    conn = https(gw.tls_port, ctx)
    payload = {"blob": "x" * 300000}  # many TLS records each way
    status, body = get(conn, "/api/echo", payload)
    assert status == 200 and json.loads(body)["payload"] == payload
    assert conn.sock.selected_alpn_protocol() == "http/1.1"
    # pipelined requests in one write
    s = tls_connect(gw.tls_port, client_ctx(ca[0]))
    s.sendall(b"GET /api/echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n" * 3 +
              b"GET /api/echo?a=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data, closed = read_until_close(s, 5)
    assert closed and data.count(b"HTTP/1.1 200") == 4
    s.close()


def test_sni_picks_the_certificate(start_gateway, tmp_path):
    d = tmp_path / "certs"
    ca = make_ca(d)
    a = make_cert(d, ca, "a", dns=["a.test", "localhost"])
    b = make_cert(d, ca, "b", dns=["b.test"])
    c = make_cert(d, ca, "c", dns=["*.c.test"])
    gw = start_tls(start_gateway, [a, b, c])
    assert peer_cert_der(gw.tls_port, ca[0], "b.test") == cert_der(b[0])
    assert peer_cert_der(gw.tls_port, ca[0], "B.TEST") == cert_der(b[0])
    assert peer_cert_der(gw.tls_port, ca[0], "x.c.test") == cert_der(c[0])
    assert peer_cert_der(gw.tls_port, ca[0], "a.test") == cert_der(a[0])
    # an unknown name, or none, gets the first (the default)
    unchecked = client_ctx(ca[0], check_hostname=False)
    assert peer_cert_der(gw.tls_port, unchecked, "other.test") == cert_der(a[0]) \
        if False else True
    with tls_connect(gw.tls_port, unchecked, "other.test") as s:
        assert s.getpeercert(binary_form=True) == cert_der(a[0])
    with tls_connect(gw.tls_port, unchecked, None) as s:
        assert s.getpeercert(binary_form=True) == cert_der(a[0])
    # openssl s_client sees the same
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % gw.tls_port,
                          "-servername", "b.test", "-CAfile", ca[0], "-verify_return_error"],
                         input="", capture_output=True, text=True, timeout=30)
    assert "subject=CN = b.test" in out.stdout and "Verify return code: 0 (ok)" in out.stdout
    # the request goes through on the SNI-chosen certificate
    conn = https(gw.tls_port, client_ctx(ca[0]), "b.test")
    assert get(conn)[0] == 200


def test_old_versions_refused(start_gateway, certs):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = client_ctx(ca[0], minimum_version=ssl.TLSVersion.MINIMUM_SUPPORTED,
                         maximum_version=version)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            tls_connect(gw.tls_port, ctx)
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % gw.tls_port,
                          "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
                         input="", capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "BEGIN CERTIFICATE" not in out.stdout
    assert wait_for(lambda: failures(gw, "version") >= 3)
    # TLS 1.2 and 1.3 are served
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(ca[0], minimum_version=version, maximum_version=version)
        with tls_connect(gw.tls_port, ctx) as s:
            assert s.version() == version.name.replace("_", ".")
    for v in ("TLSv1.2", "TLSv1.3"):  # TLS 1.3: counted once the server read our Finished
        assert wait_for(lambda: value(scrape(gw), "portico_tls_handshakes_total", version=v) >= 1)


def test_min_version_tls13(start_gateway, certs):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server], extra="min_version: TLSv1.3")
    ctx = client_ctx(ca[0], maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        tls_connect(gw.tls_port, ctx)
    with tls_connect(gw.tls_port, client_ctx(ca[0])) as s:
        assert s.version() == "TLSv1.3"


def run_config(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text.format(port=free_port(), admin_port=free_port(), tls_port=free_port(),
                                root=ROOT, tmp=str(tmp_path)))
    r = subprocess.run([BINARY, "-c", str(path)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


def line_of(text, needle):
    for i, l in enumerate(text.format(port=1, admin_port=2, tls_port=3, root=ROOT,
                                      tmp="t").splitlines(), 1):
        if needle in l:
            return i
    raise AssertionError(needle)


def test_config_errors_name_file_and_line(tmp_path, certs):
    d, ca, server = certs
    other = make_cert(d, ca, "other", dns=["other.test"])
    garbage = d / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    # an encrypted key is refused at once: OpenSSL's default would ask for
    # the password on the terminal
    encrypted = d / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", server[1], "-aes256", "-passout", "pass:secret",
                    "-out", str(encrypted)], check=True, capture_output=True)
    cases = [
        ([(server[0], str(encrypted))], "", "not a PEM private key without a password"),
        ([(str(d / "missing.pem"), server[1])], "", "missing.pem: cannot read"),
        ([(server[0], other[1])], "", "does not match the certificate"),
        ([(str(garbage), server[1])], "", "not a PEM certificate"),
        ([(server[0], str(garbage))], "", "not a PEM private key"),
        ([server], "min_version: TLSv1.1", "TLSv1.1 is not allowed"),
        ([server], "min_version: TLSv1", "TLSv1 is not allowed"),
        ([server], "min_version: TLSv9", "expected TLSv1.2 or TLSv1.3"),
        ([server], "client_ca: " + str(d / "nope.pem"), "nope.pem: cannot read"),
        ([server], "handshake_timeout: 0s", "server.tls.handshake_timeout:"),
        ([server], "handshake_timeout: soon", "server.tls.handshake_timeout:"),
        ([server], "ticket_rotation: 500ms", "server.tls.ticket_rotation:"),
        ([server], "ticket_rotation: 2d", "server.tls.ticket_rotation:"),
    ]
    for pairs, extra, message in cases:
        text = tls_config(pairs, extra=extra)
        code, err = run_config(tmp_path, text)
        assert code != 0, message
        needle = extra.split(":")[0] if extra else pairs[0][0]
        assert re.search(r"bad\.yaml:%d: " % line_of(text, needle), err), (message, err)
        assert message in err, err


def test_plaintext_garbage_and_stall_closed_and_counted(start_gateway, certs):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server], header_timeout="1s")
    reasons = ("plaintext", "protocol", "timeout", "eof")
    base = {r: failures(gw, r) for r in reasons}  # start_tls's probe closed at once: "eof"
    # plain HTTP to the TLS port
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    data, closed = read_until_close(s, 5)
    assert closed and b"HTTP/1.1 200" not in data
    s.close()
    # garbage where a ClientHello should be
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(b"\x16\x03\x01\x00\x10" + os.urandom(16) + b"\x00" * 64)
    data, closed = read_until_close(s, 5)
    assert closed
    s.close()
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(os.urandom(2000))
    data, closed = read_until_close(s, 5)
    assert closed
    s.close()
    # a client that stalls mid-handshake: half a real ClientHello, then nothing
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(),
                                                server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    started = time.time()
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(hello[:len(hello) // 2])
    data, closed = read_until_close(s, 5)
    assert closed and data == b"" and 0.5 < time.time() - started < 4
    s.close()
    # one that connects and says nothing
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    data, closed = read_until_close(s, 5)
    assert closed
    s.close()
    # one that closes mid-handshake
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(hello[:20])
    s.close()
    def delta():
        return {r: failures(gw, r) - base[r] for r in reasons}
    assert wait_for(lambda: delta() == {"plaintext": 1, "protocol": 2, "timeout": 2, "eof": 1}), \
        delta()
    assert wait_for(lambda: value(scrape(gw), "portico_connections_open") == 0)
    # and it serves on
    assert get(https(gw.tls_port, client_ctx(ca[0])))[0] == 200
    assert gw.http().request("GET", "/api/echo")[0] == 200


def test_a_connection_portico_closes_ends_with_close_notify(start_gateway, certs):
    """An idle keep-alive connection closed at idle_timeout gets a TLS
    close_notify before the TCP close: the client sees an orderly end, not
    a truncation (a ragged EOF raises with suppress_ragged_eofs off)."""
    d, ca, server = certs
    gw = start_tls(start_gateway, [server], server="idle_timeout: 1s\n")
    ctx = client_ctx(ca[0])
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python's default hides a truncation
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200"), data
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(4096)
    assert s.recv(4096) == b""  # close_notify at idle_timeout (SSLEOFError without it)
    s.close()
    # and when a drain closes an idle connection (SIGTERM)
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(4096)
    gw.proc.proc.terminate()
    assert s.recv(4096) == b""
    s.close()


def test_client_refusing_our_certificate_is_counted(start_gateway, certs, tmp_path):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    stranger = make_ca(tmp_path / "other", "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(gw.tls_port, client_ctx(stranger[0]))
    assert wait_for(lambda: failures(gw, "alert") == 1)


def test_session_resumption(start_gateway, certs):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(ca[0], maximum_version=version)
        conn = https(gw.tls_port, ctx)
        assert get(conn)[0] == 200  # TLS 1.3 tickets come after the handshake
        session = conn.sock.session
        conn.close()
        raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        assert s.session_reused, version
        s.close()
    # the server counts once it read the client's Finished: it may come after our close
    assert wait_for(lambda: value(scrape(gw), "portico_tls_resumed_total") >= 2)


def test_reload_new_certificate(start_gateway, certs, tmp_path):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    gw.expect_error("config reload refused")
    conn_old = https(gw.tls_port, client_ctx(ca[0]))
    assert get(conn_old)[0] == 200
    old_der = conn_old.sock.getpeercert(binary_form=True)
    assert old_der == cert_der(server[0])
    admin = Http(gw.admin_port)

    # a new certificate in the same files
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    new = make_cert(new_dir, ca, "server", dns=["localhost"], ips=["127.0.0.1"])
    for src, dst in zip(new, server):
        os.replace(src, dst)
    st, _, body = admin.request("POST", "/reload")
    assert st == 200 and json.loads(body)["accepted"] is True, body
    assert peer_cert_der(gw.tls_port, ca[0]) == cert_der(server[0]) != old_der
    # the connection from before keeps going on its own
    for _ in range(3):
        assert get(conn_old)[0] == 200
    assert conn_old.sock.getpeercert(binary_form=True) == old_der

    # a broken pair is refused with file and line, and the new one keeps serving
    current = cert_der(server[0])
    mismatched = make_cert(new_dir, ca, "mismatch", dns=["localhost"])
    with open(server[1], "wb") as f:
        f.write(open(mismatched[1], "rb").read())
    st, _, body = admin.request("POST", "/reload")
    answer = json.loads(body)
    assert answer["accepted"] is False
    assert re.search(r"portico\.yaml:\d+: server\.tls\.certificates\[0\]: key .* does not match",
                     answer["error"]), answer
    assert peer_cert_der(gw.tls_port, ca[0]) == current
    with open(server[1], "wb") as f:
        f.write(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    st, _, body = admin.request("POST", "/reload")
    assert json.loads(body)["accepted"] is False and "not a PEM private key" in body.decode()
    os.unlink(server[0])
    st, _, body = admin.request("POST", "/reload")
    assert json.loads(body)["accepted"] is False and "cannot read" in body.decode()
    assert peer_cert_der(gw.tls_port, ca[0]) == current
    assert get(conn_old)[0] == 200
    conn_old.close()


def test_reload_under_tls_load_fails_nothing(start_gateway, certs, tmp_path):
    d, ca, server = certs
    gw = start_tls(start_gateway, [server])
    stop, errors, done = threading.Event(), [], [0]

    def load(keep_alive):
        ctx = client_ctx(ca[0])
        conn = https(gw.tls_port, ctx) if keep_alive else None
        while not stop.is_set():
            try:
                c = conn or https(gw.tls_port, ctx)
                status, _ = get(c)
                if status != 200:
                    errors.append(status)
                if not keep_alive:
                    c.close()
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(repr(e))
    threads = [threading.Thread(target=load, args=(k,)) for k in (True, False, False)]
    for t in threads:
        t.start()
    admin = Http(gw.admin_port)
    try:
        for i in range(5):
            new = make_cert(tmp_path, ca, "gen%d" % i, dns=["localhost"])
            for src, dst in zip(new, server):
                os.replace(src, dst)
            st, _, body = admin.request("POST", "/reload")
            assert json.loads(body)["accepted"] is True
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and done[0] > 20


def test_wss_echo(start_gateway, certs):
    d, ca, server = certs
    if not os.path.isdir(os.path.join(WS_DIR, "node_modules", "ws")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WS_DIR, check=True,
                       capture_output=True, timeout=300)
    tls_port = free_port()
    cfg = tls_config([server]).rstrip("\n") + """
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
"""
    gw = start_gateway(cfg, tls_port=tls_port)
    wait_port(tls_port)
    plan = {"url": "wss://localhost:%d/ws" % tls_port, "send": ['{"hello": "wss"}', json.dumps({"big": "x" * 40000})],
            "expect": 2}
    r = subprocess.run(["node", os.path.join(WS_DIR, "client.js"), json.dumps(plan)],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, NODE_EXTRA_CA_CERTS=ca[0]))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["opened"] == 1 and res["errors"] == [], res
    first, second = (json.loads(m) for m in res["messages"][0])
    assert first["payload"] == {"hello": "wss"}, first
    assert second["payload"] == {"big": "x" * 40000}  # past one TLS record
    assert res["closes"][0]["code"] == 1000


def spki_sha256(cert):
    """base64 of the SHA-256 of cert's public key (Chromium's SPKI pin)."""
    import base64
    import hashlib
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         capture_output=True, check=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_wss_in_headless_chromium(start_gateway, certs):
    """The browser's own WebSocket over wss:// (Chromium trusts the test
    certificate's key by its SPKI pin, the CA is not installed)."""
    import shutil
    assert shutil.which("chromium"), "chromium is installed by scripts/install-deps"
    d, ca, server = certs
    tls_port = free_port()
    cfg = tls_config([server]).rstrip("\n") + """
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
"""
    gw = start_gateway(cfg, tls_port=tls_port)
    wait_port(tls_port)
    r = subprocess.run(["node", os.path.join(WS_DIR, "browser.js"),
                        "wss://localhost:%d/ws" % tls_port, json.dumps({"from": "chromium"})],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PT_CHROMIUM_SPKI=spki_sha256(server[0])))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "HeadlessChrome" in out["agent"]
    assert json.loads(out["replies"][0])["payload"] == {"from": "chromium"}
    assert value(scrape(gw), "portico_tls_handshakes_total", version="TLSv1.3") >= 1
