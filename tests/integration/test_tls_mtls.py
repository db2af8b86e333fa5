"""Client certificates (security.client_cert), the TLS handshake's own
time-out (server.tls.handshake_timeout) and session resumption by ticket and
by session id with rotating ticket keys: real clients only (Python's ssl,
curl, openssl s_client). Certificates are made in each test with the
openssl CLI."""
import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from amqp_support import Http, free_port, scrape, value
from conftest import config_head, read_until_close
from test_tls import (client_ctx, failures, get, https, make_ca, make_cert, openssl, tls_block,
                      wait_for, wait_port)

WHOAMI = """
local service = require "portico.service"
local M = service.new { name = "sec.whoami" }
function M:handle()
  local s = self.channel.security
  self.response.payload = { username = s.username or false, gateway = s.gateway or false }
end
return M
"""


def make_intermediate(d, ca, name):
    """An intermediate CA signed by ca: returns (cert, key)."""
    d = str(d)
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert, ext = os.path.join(d, name + ".pem"), os.path.join(d, name + ".ext")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=test intermediate " + name, "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", "7",
            "-days", "30", "-extfile", ext, "-out", cert)
    return cert, key


def make_client(d, ca, name, cn=None, sans=(), days="30", usage="clientAuth"):
    """A client certificate signed by ca (pem, key): returns (cert, key)."""
    d = str(d)
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert, ext = os.path.join(d, name + ".pem"), os.path.join(d, name + ".ext")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/O=Partners/CN=" + (cn or name), "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" % usage)
        if sans:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")), "-days", days, "-extfile", ext,
            "-out", cert)
    return cert, key


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    ca_a, ca_b = make_ca(d, "ca_a"), make_ca(d, "ca_b")
    p = {
        "dir": d, "ca_a": ca_a, "ca_b": ca_b,
        "server": make_cert(d, ca_a, "server", dns=["localhost"], ips=["127.0.0.1"]),
        "acme": make_client(d, ca_a, "acme", sans=["email:acme@partners.example"]),
        "beta": make_client(d, ca_a, "beta", sans=["DNS:beta.example", "URI:spiffe://p/beta"]),
        "other": make_client(d, ca_a, "other"),
        "dn": make_client(d, ca_a, "dn", cn="dn-only"),
        "expired": make_client(d, ca_a, "expired", cn="acme", days="-1"),
        "server_only": make_client(d, ca_a, "server_only", cn="acme", usage="serverAuth"),
        "acme_b": make_client(d, ca_b, "acme_b", cn="acme"),
        "edge": make_client(d, ca_a, "edge", cn="edge-gateway"),
    }
    # a certificate of an intermediate of CA A, sent with its chain
    inter = make_intermediate(d, ca_a, "inter")
    chained = make_client(d, inter, "chained")
    p["chained"] = (str(d / "chained_chain.pem"), chained[1])
    with open(p["chained"][0], "w") as f:
        f.write(open(chained[0]).read() + open(inter[0]).read())
    p["unchained"] = chained
    # the CA file only_b trusts, rewritten by the reload test
    p["only_b_ca"] = str(d / "only_b.pem")
    with open(p["only_b_ca"], "w") as f:
        f.write(open(ca_b[0]).read())
    return p


def mtls_config(p, server_extra="", tls_extra=""):
    return config_head("workers: 2\nheader_timeout: 10s\n" + server_extra +
                       tls_block([p["server"]], extra=tls_extra), log="""
        level: info
        access: {tmp}/access.log
    """) + """
security:
  client_cert:
    - name: partners
      ca: %(ca_a)s
      subjects: ["CN=acme", "DNS:beta.example", "CN=dn-only,O=Partners", "CN=chained"]
    - name: by_email
      ca: %(ca_a)s
      username: san_email
    - name: by_uri
      ca: %(ca_a)s
      username: san_uri
    - name: only_b
      ca: %(only_b)s
    - name: edge
      ca: %(ca_a)s
      subjects: ["CN=edge-gateway"]
      trust_username_header: x-end-user
channels:
  rest:
    - {{name: who, url_path: /mtls/who, methods: [GET], service: sec.whoami, security: partners}}
    - {{name: email, url_path: /mtls/email, methods: [GET], service: sec.whoami, security: by_email}}
    - {{name: uri, url_path: /mtls/uri, methods: [GET], service: sec.whoami, security: by_uri}}
    - {{name: b, url_path: /mtls/b, methods: [GET], service: sec.whoami, security: only_b}}
    - {{name: edge, url_path: /mtls/edge, methods: [GET], service: sec.whoami, security: edge}}
    - {{name: open, url_path: /open, methods: [GET], service: sec.whoami}}
  websocket:
    - {{name: ws, url_path: /mtls/ws, service: sec.whoami, security: partners}}
""" % {"ca_a": p["ca_a"][0], "only_b": p["only_b_ca"]}


def start_mtls(start_gateway, tmp_path, p, sub=None, **kw):
    svc = (tmp_path / sub if sub else tmp_path) / "services" / "sec"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "whoami.lua").write_text(WHOAMI)
    tls_port = free_port()
    gw = start_gateway(mtls_config(p, **kw), sub=sub, tls_port=tls_port)
    gw.tls_port = tls_port
    wait_port(tls_port)
    return gw


def ctx_with(p, who=None, **kw):
    ctx = client_ctx(p["ca_a"][0], **kw)
    if who:
        ctx.load_cert_chain(*p[who])
    return ctx


def call(gw, p, who, path, headers=None, **kw):
    conn = https(gw.tls_port, ctx_with(p, who, **kw))
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), json.loads(body)


def refused(gw, p, who, path, status, message):
    st, hdrs, body = call(gw, p, who, path)
    assert st == status, (st, body)
    assert body["error"]["message"] == message, body
    if status == 401:
        assert hdrs["WWW-Authenticate"] == 'TLS realm="portico"'
    return body


def test_username_from_cn_and_from_sans(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    st, _, body = call(gw, pki, "acme", "/mtls/who")
    assert st == 200 and body == {"username": "acme", "gateway": False}
    # allowed by its DNS subjectAltName, named by its CN
    assert call(gw, pki, "beta", "/mtls/who")[2]["username"] == "beta"
    # allowed by its whole subject DN
    assert call(gw, pki, "dn", "/mtls/who")[2]["username"] == "dn-only"
    assert call(gw, pki, "acme", "/mtls/email")[2]["username"] == "acme@partners.example"
    assert call(gw, pki, "beta", "/mtls/uri")[2]["username"] == "spiffe://p/beta"
    # through an intermediate the client sends; without it, no chain to CA A
    assert call(gw, pki, "chained", "/mtls/who")[2]["username"] == "chained"
    refused(gw, pki, "unchained", "/mtls/who", 401,
            "the client certificate is not issued by a CA this channel trusts")
    # no such SAN to name the user
    refused(gw, pki, "acme", "/mtls/uri", 403,
            "the client certificate has no URI subjectAltName to name the user")
    # curl, and the access log's user
    r = subprocess.run(["curl", "-sS", "--cacert", pki["ca_a"][0], "--cert", pki["acme"][0],
                        "--key", pki["acme"][1], "https://127.0.0.1:%d/mtls/who" % gw.tls_port],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["username"] == "acme", r.stderr
    log = os.path.join(gw.tmp, "access.log")
    assert wait_for(lambda: os.path.exists(log) and '"username":"acme@partners.example"'
                    in open(log).read().replace(" ", ""))
    # keep-alive: one connection, several requests, the same answer
    conn = https(gw.tls_port, ctx_with(pki, "acme"))
    for _ in range(3):
        st, b = get(conn, "/mtls/who")
        assert st == 200 and json.loads(b)["username"] == "acme"
    st, b = get(conn, "/mtls/b")  # another definition on the same connection
    assert st == 401 and b"not issued by a CA this channel trusts" in b
    assert json.loads(get(conn, "/mtls/who")[1])["username"] == "acme"
    conn.close()


def test_refusals(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    refused(gw, pki, None, "/mtls/who", 401, "a client certificate is required")
    refused(gw, pki, "acme_b", "/mtls/who", 401,
            "the client certificate is not issued by a CA this channel trusts")
    refused(gw, pki, "expired", "/mtls/who", 401, "the client certificate has expired")
    refused(gw, pki, "server_only", "/mtls/who", 401,
            "the client certificate is not for client authentication")
    refused(gw, pki, "other", "/mtls/who", 403,
            "the client certificate's subject is not allowed on this channel")
    # the CA check is the definition's: both CAs are in the listener's list,
    # yet CA A's certificate does not pass the definition of CA B only
    refused(gw, pki, "acme", "/mtls/b", 401,
            "the client certificate is not issued by a CA this channel trusts")
    assert call(gw, pki, "acme_b", "/mtls/b")[2]["username"] == "acme"
    # an open channel over TLS takes any certificate, or none
    assert call(gw, pki, "acme_b", "/open")[0] == 200
    assert call(gw, pki, "expired", "/open")[0] == 200
    # plaintext
    st, _, body = gw.http().request("GET", "/mtls/who")
    assert st == 403 and json.loads(body)["error"]["message"] == \
        "this channel takes a TLS client certificate: call it on the TLS listener"
    # the listener asks for certificates of both CAs
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % gw.tls_port,
                        "-CAfile", pki["ca_a"][0]], input="", capture_output=True, text=True,
                       timeout=30)
    names = r.stdout.split("Acceptable client certificate CA names", 1)[1].split("---")[0]
    assert "test CA ca_a" in names and "test CA ca_b" in names, r.stdout


def test_trusted_gateway_by_client_certificate(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    st, _, body = call(gw, pki, "edge", "/mtls/edge", {"x-end-user": "john.doe"})
    assert st == 200 and body == {"username": "john.doe", "gateway": "edge-gateway"}
    assert call(gw, pki, "edge", "/mtls/edge")[2] == {"username": "edge-gateway",
                                                       "gateway": False}
    # the header proves nothing without the gateway's certificate
    refused(gw, pki, "acme", "/mtls/edge", 403,
            "the client certificate's subject is not allowed on this channel")
    refused(gw, pki, None, "/mtls/edge", 401, "a client certificate is required")
    # and from another caller it is refused outright
    st, _, body = call(gw, pki, "acme", "/mtls/who", {"x-end-user": "john.doe"})
    assert st == 403 and "not accepted from this caller" in body["error"]["message"]
    st, _, body = call(gw, pki, "edge", "/mtls/edge", {"x-end-user": "bad\x7fname"})
    assert st == 400


def test_reload_reads_the_ca_file_again(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    gw.expect_error("config reload refused")
    assert call(gw, pki, "acme_b", "/mtls/b")[0] == 200
    kept = https(gw.tls_port, ctx_with(pki, "acme_b"))
    assert get(kept, "/mtls/b")[0] == 200
    with open(pki["only_b_ca"], "w") as f:
        f.write(open(pki["ca_a"][0]).read())
    admin = Http(gw.admin_port)
    st, _, body = admin.request("POST", "/reload")
    assert st == 200 and json.loads(body)["accepted"] is True, body
    assert call(gw, pki, "acme", "/mtls/b")[2]["username"] == "acme"
    refused(gw, pki, "acme_b", "/mtls/b", 401,
            "the client certificate is not issued by a CA this channel trusts")
    # a connection from before is checked again under the new definitions
    assert get(kept, "/mtls/b")[0] == 401
    kept.close()
    # a CA file that is no longer PEM: the reload is refused with file and line
    with open(pki["only_b_ca"], "w") as f:
        f.write("not a certificate\n")
    st, _, body = admin.request("POST", "/reload")
    answer = json.loads(body)
    assert answer["accepted"] is False and "security.client_cert[3].ca: no PEM certificate" \
        in answer["error"], answer
    assert call(gw, pki, "acme", "/mtls/b")[0] == 200


def test_handshake_timeout_closes_a_stalled_client(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki, tls_extra="handshake_timeout: 1s")
    base = failures(gw, "timeout")
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(),
                                                server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    s = socket.create_connection(("127.0.0.1", gw.tls_port))
    s.sendall(hello[:len(hello) // 2])
    # header_timeout is 10s: only the handshake's own time-out closes it this soon
    data, closed = read_until_close(s, 5)
    assert closed and data == b""
    s.close()
    assert wait_for(lambda: failures(gw, "timeout") == base + 1)
    # a finished handshake leaves the head header_timeout, not handshake_timeout
    conn = https(gw.tls_port, ctx_with(pki, "acme"))
    conn.connect()
    time.sleep(1.5)
    assert get(conn, "/mtls/who")[0] == 200
    conn.close()


def resumed(gw):
    return value(scrape(gw), "portico_tls_resumed_total")


def test_resumption_by_ticket_and_by_session_id(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    # Python: TLS 1.2 with a session id only (no ticket), then with a ticket
    for no_ticket in (True, False):
        ctx = ctx_with(pki, "acme", maximum_version=ssl.TLSVersion.TLSv1_2)
        if no_ticket:
            ctx.options |= ssl.OP_NO_TICKET
        conn = https(gw.tls_port, ctx)
        assert get(conn, "/mtls/who")[0] == 200
        session = conn.sock.session
        assert session.has_ticket is (not no_ticket)
        conn.close()
        before = resumed(gw)
        raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        assert s.session_reused, no_ticket
        # the resumed session still names the user by its certificate
        s.sendall(b"GET /mtls/who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_until_close(s, 5)
        assert b" 200 " in data and b'"acme"' in data, data
        s.close()
        assert wait_for(lambda: resumed(gw) == before + 1)
    # openssl s_client -sess_out / -sess_in, by session id and by ticket, 1.2 and 1.3
    for flags in (["-tls1_2", "-no_ticket"], ["-tls1_2"], ["-tls1_3"]):
        sess = str(tmp_path / "sess.pem")
        common = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % gw.tls_port,
                  "-CAfile", pki["ca_a"][0], "-servername", "localhost"] + flags
        req = "GET /open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        r = subprocess.run(common + ["-sess_out", sess, "-ign_eof"], input=req,
                           capture_output=True, text=True, timeout=30)
        assert "HTTP/1.1 200" in r.stdout, r.stdout + r.stderr
        before = resumed(gw)
        r = subprocess.run(common + ["-sess_in", sess, "-ign_eof"], input=req,
                           capture_output=True, text=True, timeout=30)
        assert "Reused, " in r.stdout and "HTTP/1.1 200" in r.stdout, (flags, r.stdout)
        assert wait_for(lambda: resumed(gw) == before + 1), flags


def ticket_session(gw, pki):
    ctx = client_ctx(pki["ca_a"][0], maximum_version=ssl.TLSVersion.TLSv1_2)
    conn = https(gw.tls_port, ctx)
    assert get(conn, "/open")[0] == 200
    session = conn.sock.session
    conn.close()
    assert session.has_ticket
    return ctx, session


def reuses(gw, ctx, session):
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
        return s.session_reused


def test_ticket_keys_rotate(start_gateway, tmp_path, pki):
    # a rotation every 3s: the previous key still opens tickets for one more
    # period, a key two periods old opens none
    gw = start_mtls(start_gateway, tmp_path, pki, tls_extra="ticket_rotation: 3s")
    ctx, session = ticket_session(gw, pki)
    assert session.ticket_lifetime_hint == 6  # a session lives as long as its key opens tickets
    assert reuses(gw, ctx, session)
    time.sleep(3.1)  # the key of this ticket is now the previous one
    assert reuses(gw, ctx, session)
    gw2 = start_mtls(start_gateway, tmp_path, pki, sub="b", tls_extra="ticket_rotation: 1s")
    ctx, session = ticket_session(gw2, pki)
    time.sleep(2.2)  # past two periods of its key
    assert not reuses(gw2, ctx, session)
    ctx, session = ticket_session(gw2, pki)  # a new ticket, under the current key
    assert reuses(gw2, ctx, session)


def ws_upgrade(gw, p, who):
    """A WebSocket handshake over TLS with who's certificate (None: none):
    (status line, the socket)."""
    raw = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
    s = ctx_with(p, who).wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET /mtls/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0], s


def test_websocket_over_tls_takes_the_user_from_the_certificate(start_gateway, tmp_path, pki):
    gw = start_mtls(start_gateway, tmp_path, pki)
    status, s = ws_upgrade(gw, pki, "acme")
    assert status == b"HTTP/1.1 101 Switching Protocols", status
    mask = os.urandom(4)
    payload = b"{}"
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frame = s.recv(4096)
    assert frame[0] == 0x81, frame
    assert json.loads(frame[2:2 + (frame[1] & 0x7F)]) == {"username": "acme", "gateway": False}
    s.close()
    for who, want in ((None, b" 401 "), ("acme_b", b" 401 "), ("other", b" 403 ")):
        status, s = ws_upgrade(gw, pki, who)
        assert want in status + b" ", (who, status)
        s.close()
