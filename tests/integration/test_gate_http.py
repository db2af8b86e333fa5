"""The HTTP/1.1 gate against hostile clients, over raw sockets: trailers,
field syntax, Host, the request line, framing, chunked bodies, deadlines,
response integrity and the connection limit. Each case sends bytes, checks
the exact answer (status, then a close where the connection cannot go on),
and that a well-formed request on a fresh connection is served afterwards."""
import base64
import json
import os
import re
import socket
import threading
import time

import pytest

from amqp_support import ROOT, BROKER_URL, scrape, value
from conftest import config_head, parse_responses, read_until_close, recv_all
from test_bus import BUS_CONFIG, Q_FOO, amqp, responders  # noqa: F401 (fixtures)


def demo_hashes():
    """The argon2id hashes config/portico.yaml ships for the demo users."""
    with open(os.path.join(ROOT, "config", "portico.yaml")) as f:
        text = f.read()
    return dict(re.findall(r'username: (\S+)\s+password_hash: "([^"]+)"', text))


HASHES = demo_hashes()
GATEWAY = ("gateway", "gateway-demo")
JOHN = ("john.doe", "secret")

SERVICES = {
    "gate/badctype.lua": """
        local service = require "portico.service"
        local M = service.new { name = "gate.badctype" }
        local HEADERS = {  -- ?h=NAME: response.headers that are not HTTP
          value = { ["X-A"] = "a\\r\\nSet-Cookie: injected=1" },
          name = { ["X-A: 1\\r\\nSet-Cookie"] = "injected=1" },  -- joined, it would look valid
          space = { ["X A"] = "injected" },
          ok = { ["X-Ok"] = "1" },
        }
        function M:handle()
          local q = self.request.http.query
          if q.h then
            for k, v in pairs(HEADERS[q.h]) do self.response.headers[k] = v end
          else
            -- ?nul: a NUL where C would cut the value short instead of refusing it
            self.response.content_type = q.nul ~= nil
              and "text/plain\\0Set-Cookie: injected=1" or "text/plain\\r\\nSet-Cookie: injected=1"
          end
          self.response.payload = "hello"
        end
        return M
    """,
}

CONFIG = config_head("""
    workers: 2
    max_header_bytes: 4KB
    max_body_bytes: 1MB
    header_timeout: {header_timeout}
    body_timeout: {body_timeout}
    body_deadline: {body_deadline}
    idle_timeout: 60s
    drain_timeout: 5s
""", log="""
    level: info
    access: {tmp}/access.log
""") + """security:
  basic_auth:
    - name: upstream.gateway
      trust_username_header: x-portico-username
      users:
        - username: gateway
          password_hash: "%(gateway)s"
    - name: api.users
      users:
        - username: john.doe
          password_hash: "%(john.doe)s"
channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [demo.echo, gate.badctype]
      security: upstream.gateway
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: demo.echo
    - name: auth.echo
      url_path: /auth/echo
      methods: [POST]
      service: demo.echo
      security: api.users
    - name: limited
      url_path: /limited
      methods: [POST]
      service: demo.echo
      security: upstream.gateway
      rate_limit: {{rate: 1/m, burst: 2, per: user}}
    - name: bad.ctype
      url_path: /bad/ctype
      methods: [GET]
      service: gate.badctype
""" % HASHES


@pytest.fixture
def start(start_gateway, tmp_path):
    def run(config=CONFIG, **opts):
        os.makedirs(tmp_path / "services" / "gate", exist_ok=True)
        for name, text in SERVICES.items():
            (tmp_path / "services" / name).write_text(text)
        values = dict(header_timeout="10s", body_timeout="10s", body_deadline="60s")
        values.update(opts)
        return start_gateway(config, **values)
    return run


@pytest.fixture
def gw(start):
    return start()


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def send(gw, raw, timeout=3):
    """Sends raw on a fresh connection; returns (responses, closed, data)."""
    s = gw.raw()
    try:
        s.sendall(raw)
    except OSError:
        pass  # refused while we were still sending: the answer is there to read
    data, closed = read_until_close(s, timeout)
    s.close()
    return parse_responses(data), closed, data


def served_after(gw):
    """A well-formed request on a fresh connection is served."""
    res, _, data = send(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                            b"Connection: close\r\n\r\n{}")
    assert [r[0] for r in res] == [200], data


def refused(gw, raw, status):
    """raw gets exactly one answer, status with a JSON error, then a close."""
    res, closed, data = send(gw, raw)
    assert [r[0] for r in res] == [status], (raw[:200], data[:500])
    _, headers, body = res[0]
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["status"] == status and err["cid"] == headers["x-correlation-id"]
    assert headers["connection"] == "close" and closed, (raw[:200], data[:500])
    served_after(gw)
    return err


def served(gw, raw):
    """raw gets one 200 answer; returns its decoded JSON body."""
    res, _, data = send(gw, raw)
    assert [r[0] for r in res] == [200], (raw[:200], data[:500])
    return json.loads(res[0][2])


def chunked(path, chunks, trailers=b"", headers=b"", version=b"1.1"):
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: t\r\n" + headers +
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body + b"0\r\n" +
            trailers + b"\r\n")


def auth(creds):
    return b"Authorization: " + basic(*creds).encode() + b"\r\n"


# ---- 1. trailers never count as headers ------------------------------------------------


def test_a_trailer_username_after_a_gateway_credential_is_not_believed(gw):
    # as a header it is believed: the check that the trailer is the difference
    who = served(gw, b"POST /gateway/demo.echo HTTP/1.1\r\nHost: t\r\n" + auth(GATEWAY) +
                 b"x-portico-username: john.doe\r\nContent-Length: 2\r\nConnection: close\r\n"
                 b"\r\n{}")
    assert who["username"] == "john.doe"
    who = served(gw, chunked(b"/gateway/demo.echo", [b"{}"], headers=auth(GATEWAY),
                             trailers=b"x-portico-username: admin\r\n"))
    assert who["username"] == "gateway", who
    assert "x-portico-username" not in who["headers"]
    served_after(gw)


def test_an_authorization_sent_only_as_a_trailer_does_not_authenticate(gw):
    res, _, data = send(gw, chunked(b"/auth/echo", [b"{}"], trailers=auth(JOHN)))
    assert [r[0] for r in res] == [401], data
    served_after(gw)


def test_trailers_open_no_rate_limit_bucket(gw):
    for want in (200, 200, 429):
        res, _, data = send(gw, b"POST /limited HTTP/1.1\r\nHost: t\r\n" + auth(GATEWAY) +
                            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert [r[0] for r in res] == [want], data
    # the gateway's bucket is empty; a trailer must not make a fresh user of it
    for user in (b"u1", b"u2"):
        res, _, data = send(gw, chunked(b"/limited", [b"{}"], headers=auth(GATEWAY),
                                        trailers=b"x-portico-username: " + user + b"\r\n"))
        assert [r[0] for r in res] == [429], data
    served_after(gw)


def test_a_service_sees_no_trailer(gw):
    who = served(gw, chunked(b"/api/echo", [b'{"a":', b"1}"],
                             trailers=b"X-Trailer: 1\r\nContent-Type: text/evil\r\n"))
    assert who["payload"] == {"a": 1}
    assert "x-trailer" not in who["headers"] and "content-type" not in who["headers"], who
    served_after(gw)


@pytest.mark.parametrize("trailer", [b"X-T : 1\r\n", b": 1\r\n", b"X-T:\r\n folded\r\n"])
def test_trailers_are_syntax_checked(gw, trailer):
    refused(gw, chunked(b"/api/echo", [b"{}"], trailers=trailer), 400)


def test_trailers_count_against_max_header_bytes(gw):
    # whitespace is never stored, but it is sent: it counts (max_header_bytes 4KB)
    refused(gw, chunked(b"/api/echo", [b"{}"], trailers=b"X-T:" + b" " * 5000 + b"1\r\n"), 431)


# ---- 2. field names are tokens, values have no control bytes ---------------------------


@pytest.mark.parametrize("line", [b"Host : evil", b"X-A : b", b": empty-name"])
def test_bad_field_lines_are_400_and_close(gw, line):
    refused(gw, b"GET /api/echo HTTP/1.1\r\nHost: t\r\n" + line + b"\r\n\r\n", 400)


@pytest.mark.parametrize("line", [b"X-A\x7f: b", b"X(A): b", b"X-A: a\x00b", b"X-A: a\x01b",
                                  b"X-A: a\rb", b"X-A: a\x7fb"])
def test_field_bytes_llhttp_refused_stay_refused(gw, line):
    # guards: llhttp 8.1 refused these before the gate's own checks too
    refused(gw, b"GET /api/echo HTTP/1.1\r\nHost: t\r\n" + line + b"\r\n\r\n", 400)
    refused(gw, chunked(b"/api/echo", [b"{}"], trailers=line + b"\r\n"), 400)


def test_a_spaced_trusted_username_header_is_refused_not_believed(gw):
    refused(gw, b"POST /gateway/demo.echo HTTP/1.1\r\nHost: t\r\n" + auth(GATEWAY) +
            b"x-portico-username : admin\r\nContent-Length: 2\r\n\r\n{}", 400)
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nx-portico-username : admin\r\n"
            b"Content-Length: 2\r\n\r\n{}", 400)


def test_trailing_whitespace_is_not_part_of_a_value(gw):
    who = served(gw, b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A:  b \t \r\n"
                     b"Connection: close\r\n\r\n")
    assert who["headers"]["x-a"] == "b"


# ---- 3. Host --------------------------------------------------------------------------


@pytest.mark.parametrize("head", [b"", b"Host: a\r\nHost: b\r\n", b"Host: a b\r\n",
                                  b"Host: user@h\r\n", b"Host:\r\n", b"Host: h:8x\r\n"])
def test_http11_needs_exactly_one_valid_host(gw, head):
    refused(gw, b"GET /api/echo HTTP/1.1\r\n" + head + b"\r\n", 400)


def test_http10_without_host_is_served(gw):
    res, closed, data = send(gw, b"GET /api/echo HTTP/1.0\r\n\r\n")
    assert [r[0] for r in res] == [200] and closed, data


def test_absolute_form_is_routed_by_its_path_with_its_authority_as_host(gw):
    who = served(gw, b"GET http://example.com:8080/api/echo?x=1 HTTP/1.1\r\nHost: other\r\n"
                     b"Connection: close\r\n\r\n")
    assert who["path"] == "/api/echo" and who["query"] == {"x": "1"}, who
    assert who["headers"]["host"] == "example.com:8080"
    who = served(gw, b"GET HTTPS://example.com/api/echo HTTP/1.0\r\n\r\n")
    assert who["path"] == "/api/echo" and who["headers"]["host"] == "example.com"
    deadline = time.time() + 3  # each worker writes its lines after its loop iteration
    while True:
        with open(os.path.join(gw.tmp, "access.log")) as f:
            paths = [json.loads(line)["path"] for line in f]
        if len(paths) >= 2 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert paths[-2:] == ["/api/echo", "/api/echo"], paths
    served_after(gw)


@pytest.mark.parametrize("target", [b"http://user@example.com/api/echo", b"http:///api/echo",
                                    b"ftp://example.com/api/echo"])
def test_bad_absolute_forms_are_400(gw, target):
    refused(gw, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n", 400)


# ---- 4. the request line and framing ---------------------------------------------------


def test_a_request_line_without_version_is_400_at_once(gw):
    t0 = time.time()
    refused(gw, b"GET /api/echo\r\n", 400)
    assert time.time() - t0 < 3  # not the 10 s header time-out


@pytest.mark.parametrize("version", [b"2.0", b"1.2", b"0.9", b"3.0"])
def test_other_versions_are_505(gw, version):
    res, closed, data = send(gw, b"GET /api/echo HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    assert [r[0] for r in res] == [505] and closed, data
    assert data.split(b"\r\n")[0] == b"HTTP/1.1 505 HTTP Version Not Supported"
    served_after(gw)


@pytest.mark.parametrize("te", [b"gzip, chunked", b"identity", b"chunked, chunked", b"gzip"])
def test_transfer_codings_other_than_chunked_are_501(gw, te):
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te +
            b"\r\n\r\n0\r\n\r\n", 501)


def test_two_chunked_transfer_encoding_fields_are_501(gw):
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501)


@pytest.mark.parametrize("head", [
    b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 1, 2\r\n", b"Content-Length: +2\r\n", b"Content-Length:  2x\r\n",
    b"Content-Length: 2\r\nContent-Length: 2\r\n"])
def test_ambiguous_lengths_are_400(gw, head):
    # guards: llhttp 8.1 refused these before the gate's own checks too
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n{}", 400)


def test_http10_with_chunked_is_answered_then_closed(gw):
    res, closed, data = send(gw, chunked(b"/api/echo", [b"{}"], version=b"1.0").replace(
        b"Connection: close", b"Connection: keep-alive") + b"GET /api/echo HTTP/1.0\r\n\r\n")
    assert [r[0] for r in res] == [200] and closed, data
    assert res[0][1]["connection"] == "close"
    served_after(gw)


def test_a_te_request_header_is_no_problem(gw):
    who = served(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: TE, close"
                     b"\r\nContent-Length: 2\r\n\r\n{}")
    assert who["payload"] == {}


# ---- 5. line endings and chunked bodies ------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"GET /api/echo HTTP/1.1\nHost: t\r\n\r\n",
    b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\n",
    b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n",
    b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A: b\r\n\tc\r\n\r\n",
    b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\rX"])  # llhttp took CR and any byte as CRLF
def test_bare_lf_and_obs_fold_in_the_head_are_400(gw, raw):
    refused(gw, raw, 400)


@pytest.mark.parametrize("body", [b"2\r\n{}XY0\r\n\r\n", b"2\r\n{}\rX0\r\n\r\n",
                                  b"2\r\n{}\n\r0\r\n\r\n", b"2\r\n{}\r\n0\r\n\n",
                                  b"2\r\n{}\r\n0\r\n\rX"])
def test_chunk_framing_is_exactly_crlf(gw, body):
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
            body, 400)


def test_crlf_after_chunk_data_split_across_reads(gw):
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}")
    time.sleep(0.2)
    s.sendall(b"\r")
    time.sleep(0.2)
    s.sendall(b"X0\r\n\r\n")
    data, closed = read_until_close(s)
    assert [r[0] for r in parse_responses(data)] == [400] and closed, data
    served_after(gw)


def test_megabytes_of_chunk_extension_are_413(gw):
    t0 = time.time()
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;x=")
    sent = 0
    try:
        while sent < 8 * 1024 * 1024:
            s.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    data, closed = read_until_close(s)
    assert [r[0] for r in parse_responses(data)] == [413] and closed, data
    served_after(gw)


def test_many_small_chunk_extensions_add_up(gw):
    chunks = b"".join(b"1;ext=" + b"v" * 200 + b"\r\n{\r\n" for _ in range(40))
    refused(gw, b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
            chunks + b"0\r\n\r\n", 413)


def test_small_chunk_extensions_and_pipelined_chunked_requests_are_served(gw):
    one = (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"1;a=b\r\n{\r\n00001\r\n}\r\n0\r\nX-T: 1\r\n\r\n")
    s = gw.raw()
    s.sendall(one + one + b"GET /api/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    res = parse_responses(recv_all(s))
    assert [r[0] for r in res] == [200, 200, 200]
    assert json.loads(res[0][2])["payload"] == {}


# ---- 6. deadlines -----------------------------------------------------------------------


def test_a_dribbled_body_meets_the_body_deadline(start):
    gw = start(body_timeout="2s", body_deadline="2s")
    s = gw.raw()
    t0 = time.time()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    s.settimeout(0.5)
    data = b""
    while time.time() - t0 < 8 and not data:
        try:
            s.sendall(b" ")  # one byte in each gap: body_timeout alone never fires
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
    data2, closed = read_until_close(s)
    took = time.time() - t0
    res = parse_responses(data + data2)
    assert [r[0] for r in res] == [408] and closed, data
    assert 1.5 < took < 5, took
    served_after(gw)


def test_a_dribbled_head_meets_the_header_deadline_from_the_accept(start):
    gw = start(header_timeout="3s")
    s = gw.raw()
    t0 = time.time()
    time.sleep(2)
    data = b""
    s.settimeout(0.3)
    for ch in b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 100:
        try:
            s.sendall(bytes([ch]))
            data = s.recv(65536)
            break
        except socket.timeout:
            continue
        except OSError:
            break
    rest, closed = read_until_close(s)
    took = time.time() - t0
    assert [r[0] for r in parse_responses(data + rest)] == [408] and closed, data
    assert 2.5 < took < 4.5, took  # from the accept (3 s), not from the first byte (5 s)
    served_after(gw)


# ---- 7. response integrity --------------------------------------------------------------


@pytest.mark.parametrize("query", [b"", b"?nul", b"?h=value", b"?h=name", b"?h=space"],
                         ids=["crlf", "nul", "header-value", "header-name", "header-name-space"])
def test_a_service_content_type_with_crlf_is_a_500_not_a_header(gw, query):
    gw.expect_error("response headers are not valid")
    res, _, data = send(gw, b"GET /bad/ctype" + query +
                        b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in res] == [500], data
    status, headers, body = res[0]
    assert "set-cookie" not in headers and b"injected" not in data
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    lines = [e for e in gw.log_lines("error") if e.get("cid") == err["cid"]]
    assert lines and all("injected" not in json.dumps(e) for e in lines), lines
    served_after(gw)


def test_a_valid_service_header_is_sent(gw):
    res, _, data = send(gw, b"GET /bad/ctype?h=ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in res] == [200], data
    assert res[0][1]["x-ok"] == "1"


@pytest.mark.parametrize("sep", ["\r\n", "\0"], ids=["crlf", "nul"])
def test_a_bus_reply_content_type_with_crlf_is_a_502(start_gateway, amqp, responders, sep):
    gw = start_gateway(BUS_CONFIG, url=BROKER_URL, reply_timeout="5s")
    gw.expect_error("content type is not a valid header")
    responders(lambda resp, msg: resp.reply(msg, "hi", status=200,
                                            content_type="text/plain" + sep +
                                            "Set-Cookie: injected=1"))
    res, _, data = send(gw, b"GET /bus/foo/bar/baz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                            b"\r\n", timeout=8)
    assert [r[0] for r in res] == [502], data
    assert b"injected" not in data and "set-cookie" not in res[0][1]
    assert "injected" not in gw.log_text()


# ---- 8. max_connections is the process's --------------------------------------------------


def test_max_connections_is_process_wide(start):
    gw = start(CONFIG.replace("workers: 2", "workers: 4\n  max_connections: 8"))
    deadline = time.time() + 5  # the fixture's readiness probe must be gone first
    while value(scrape(gw), "portico_connections_open") and time.time() < deadline:
        time.sleep(0.05)
    socks = []
    for _ in range(8):  # spread over 4 workers by the kernel: a per-worker share refuses some
        s = gw.raw()
        s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        head = s.recv(100)
        assert head.startswith(b"HTTP/1.1 200"), "connection %d refused" % len(socks)
        socks.append(s)
    extra = [gw.raw() for _ in range(3)]
    for s in extra:
        s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_until_close(s, 3) == (b"", True), "served past the limit"
    assert value(scrape(gw), "portico_connections_refused_total") == 3
    warns = [e["msg"] for e in gw.log_lines("warn") if "connection refused" in e["msg"]]
    assert 1 <= len(warns) <= 2, warns  # at most one a second
    socks.pop().close()
    time.sleep(0.2)
    served_after(gw)
    for s in socks:
        s.close()


# ---- the proxy gets the path of an absolute form, and no request trailer ------------------


PROXY_CONFIG = config_head("workers: 1", log=None) + """channels:
  http_proxy:
    - name: svc
      url_prefix: /svc
      services:
        raw:
          targets: [http://127.0.0.1:{target_port}]
"""


class RawTarget(threading.Thread):
    """A target that keeps the bytes of one request and answers 200."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.got = b""
        self.start()

    def run(self):
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        while not self.got.endswith(b"0\r\n\r\n"):  # the test sends a chunked body
            piece = conn.recv(65536)
            if not piece:
                break
            self.got += piece
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()


def test_the_proxy_gets_the_path_and_no_trailer(start_gateway):
    target = RawTarget()
    gw = start_gateway(PROXY_CONFIG, target_port=target.port)
    res, _, data = send(gw, b"POST http://example.com/svc/raw/x?y=1 HTTP/1.1\r\nHost: other\r\n"
                            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                            b"2\r\nab\r\n0\r\nX-Secret-Trailer: 1\r\n\r\n", timeout=5)
    target.join(5)
    assert [r[0] for r in res] == [200], data
    head, _, body = target.got.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /x?y=1 HTTP/1.1", target.got
    assert b"\r\nX-Forwarded-Host: example.com\r\n" in head + b"\r\n", head
    assert body == b"2\r\nab\r\n0\r\n\r\n" and b"Secret" not in target.got, target.got
