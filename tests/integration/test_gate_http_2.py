"""The HTTP/1.1 gate against a hostile client, second part: the request line,
the target, methods, field counts, smuggling variants, pipelining and a
client that never reads. Same shape as test_gate_http: raw bytes, the exact
answer and close, then a well-formed request on a fresh connection.
Cases marked "guard" passed before the change that came with them: they
keep llhttp's or an earlier check's refusal from going away."""
import json
import socket
import threading
import time

import pytest

from conftest import parse_responses, read_until_close
from test_gate_http import (CONFIG, GATEWAY, JOHN, auth, chunked, refused, send, served,  # noqa: F401
                            served_after, start, gw)

H = b"Host: t\r\n"


# ---- the request line ------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"GET  /api/echo HTTP/1.1", b"GET /api/echo  HTTP/1.1",
                                  b"GET /api/echo RTSP/1.0", b"SOURCE /api/echo ICE/1.0",
                                  b"GET /api/echo HTTP/1.1 "])
def test_a_request_line_is_exactly_method_sp_target_sp_http_version(gw, line):
    # llhttp 8.1 skipped runs of SP, read RTSP/1.0 as HTTP/1.0; the last one was a 505
    refused(gw, line + b"\r\n" + H + b"\r\n", 400)


def test_a_request_line_across_reads_is_checked_the_same(gw):
    for line, want in ((b"GET /api/echo  HTTP/1.1", [400]), (b"GET /api/echo RTSP/1.0", [400]),
                       (b"GET /api/echo HTTP/1.1", [200])):
        s = gw.raw()
        for ch in line:  # one byte a segment: the line's end is in earlier reads
            s.sendall(bytes([ch]))
            time.sleep(0.005)
        s.sendall(b"\r\n" + H + b"Connection: close\r\n\r\n")
        data, closed = read_until_close(s)
        assert [r[0] for r in parse_responses(data)] == want and closed, (line, data)
    served_after(gw)


# ---- the target ------------------------------------------------------------------------


@pytest.mark.parametrize("target", [b"/api/e\tcho", b"/api/e\x0ccho", b"/api/echo\xc3\xa9",
                                    b"/api/echo?a=\x80", b"/api/echo#frag", b"/api/echo?a=1#frag",
                                    b"http://h/api/echo#f"])
def test_a_target_is_printable_ascii_without_a_fragment(gw, target):
    # llhttp 8.1 took these: a tab was a router 400 on a kept connection, a
    # fragment reached the service in the query
    refused(gw, b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n", 400)


@pytest.mark.parametrize("target", [b"/api/e\x00cho", b"/api/e\x01cho", b"/api/e\x7fcho"])
def test_nul_ctl_and_del_in_the_target_stay_refused(gw, target):
    refused(gw, b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n", 400)  # guard: llhttp


def test_ascii_rfc3986_leaves_out_still_passes(gw):
    # guard for the target check: what llhttp's strict mode and nginx take stays taken
    who = served(gw, b"GET /api/echo?a={|}&b=%22 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert who["query"]["a"] == "{|}", who


def test_a_target_longer_than_max_header_bytes_is_414(gw):
    refused(gw, b"GET /api/echo?" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414)


def test_absolute_form_wins_over_host_for_routing_and_services(gw):
    # guard: RFC 9112 §3.2.2, the Host field is ignored
    who = served(gw, b"GET http://a.example/api/echo HTTP/1.1\r\nHost: b.example\r\n"
                     b"Connection: close\r\n\r\n")
    assert who["headers"]["host"] == "a.example" and who["path"] == "/api/echo", who


# ---- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
                                 b"\x16\x03\x01\x02\x00",
                                 b"CONNECT /api/echo HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\n\r\n"])
def test_connect_is_501_and_never_a_tunnel(gw, raw):
    # it was a router 400 or 405 after llhttp had stopped parsing for a tunnel
    err = refused(gw, raw, 501)
    assert "CONNECT" in err["message"]


@pytest.mark.parametrize("method", [b"FOO", b"get", b"Get", b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF"])
def test_an_unknown_method_is_501(gw, method):
    # methods are case-sensitive (RFC 9110 §9.1): these were 400s
    refused(gw, method + b" /api/echo HTTP/1.1\r\n" + H + b"\r\n", 501)


def test_a_request_line_that_is_no_method_stays_400(gw):
    refused(gw, b"GARBAGE\r\n\r\n", 400)  # guard
    refused(gw, b"\x01GET /api/echo HTTP/1.1\r\n" + H + b"\r\n", 400)  # guard


# ---- field counts and Host -------------------------------------------------------------


def test_more_than_100_header_fields_are_431(gw):
    # 2 + 98 = 100 fields are served; one more is not, far within max_header_bytes
    who = served(gw, b"GET /api/echo HTTP/1.1\r\n" + H + b"Connection: close\r\n" +
                 b"a:\r\n" * 98 + b"\r\n")
    assert "a" in who["headers"]
    refused(gw, b"GET /api/echo HTTP/1.1\r\n" + H + b"Connection: close\r\n" + b"a:\r\n" * 99 +
            b"\r\n", 431)


def test_more_than_100_trailer_fields_are_431(gw):
    refused(gw, chunked(b"/api/echo", [b"{}"], trailers=b"a:\r\n" * 101), 431)


@pytest.mark.parametrize("host", [b"t:65536", b"t:99999999999999999999", b"[::1]:70000"])
def test_a_host_port_past_65535_is_400(gw, host):
    refused(gw, b"GET /api/echo HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400)
    served(gw, b"GET /api/echo HTTP/1.1\r\nHost: t:065535\r\nConnection: close\r\n\r\n")


def test_a_header_line_just_over_the_limit_across_segments_is_431(gw):
    # guard: max_header_bytes 4KB, the line arrives in pieces
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\n" + H + b"X-Big: ")
    for _ in range(5):
        time.sleep(0.05)
        try:
            s.sendall(b"a" * 820)
        except OSError:
            break
    try:
        s.sendall(b"\r\n\r\n")
    except OSError:
        pass
    data, closed = read_until_close(s)
    assert [r[0] for r in parse_responses(data)] == [431] and closed, data
    served_after(gw)


# ---- smuggling variants (guards: llhttp 8.1 or the earlier pass refused them) ------------


@pytest.mark.parametrize("head,body,status", [
    (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", 400),   # CL.TE
    (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n", 400),   # TE.CL
    (b"Transfer-Encoding: x\r\n chunked\r\n", b"0\r\n\r\n", 400),                  # obs-fold
    (b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n", 400),
    (b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n", 501),
    (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", 501),
    (b"Content-Length: 18446744073709551617\r\n", b"{}", 400),
    (b"Content-Length: 99999999999999999999999\r\n", b"{}", 400),
    (b"Transfer-Encoding: chunked\r\n", b"-2\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"0x2\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b" 2\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"\r\n{}\r\n0\r\n\r\n", 400),
])
def test_smuggling_variants_are_refused(gw, head, body, status):
    refused(gw, b"POST /api/echo HTTP/1.1\r\n" + H + head + b"\r\n" + body, status)


def test_a_content_length_trailer_changes_nothing(gw):
    # guard: trailers never frame, and never reach the service
    res, closed, data = send(gw, chunked(b"/api/echo", [b"{}"], trailers=b"Content-Length: 5\r\n") +
                             b"GET /api/echo HTTP/1.1\r\n" + H + b"\r\n")
    assert [r[0] for r in res] == [200] and closed, data
    assert "content-length" not in json.loads(res[0][2])["headers"]


def test_leading_zeros_in_content_length_are_its_digits(gw):
    # allowed: Content-Length = 1*DIGIT (RFC 9110 §8.6); nginx and Envoy read it so too
    who = served(gw, b"POST /api/echo HTTP/1.1\r\n" + H + b"Content-Length: 002\r\n"
                     b"Connection: close\r\n\r\n{}")
    assert who["payload"] == {}


# ---- pipelining, Expect, security headers (guards) -------------------------------------


def test_nothing_after_a_connection_close_request_is_answered(gw):
    res, closed, data = send(gw, b"GET /api/echo HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
                             b"GET /api/echo HTTP/1.1\r\n" + H + b"\r\n")
    assert [r[0] for r in res] == [200] and closed, data


def test_http10_keep_alive_pipelining_ends_with_the_first_plain_request(gw):
    ka = b"GET /api/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    res, closed, data = send(gw, ka + ka + b"GET /api/echo HTTP/1.0\r\n\r\n" + ka)
    assert [r[0] for r in res] == [200, 200, 200] and closed, data
    assert [r[1].get("connection") for r in res] == ["keep-alive", "keep-alive", "close"]


@pytest.mark.parametrize("raw,want", [
    (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nExpect: 100-CONTINUE\r\nContent-Length: 2\r\n"
     b"Connection: close\r\n\r\n{}", [100, 200]),  # case-insensitive (RFC 9110 §10.1.1)
    (b"POST /api/echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", [200]),
    (b"GET /api/echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
     [200]),
])
def test_expect_100_continue_only_where_a_body_will_be_read(gw, raw, want):
    s = gw.raw()
    s.sendall(raw)
    data, closed = read_until_close(s)
    codes = [int(line.split()[1]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    assert codes == want and closed, data


def test_security_header_names_are_case_insensitive_and_unique(gw):
    who = served(gw, b"POST /auth/echo HTTP/1.1\r\n" + H +
                 auth(JOHN).replace(b"Authorization", b"AUTHORIZATION") +
                 b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert who["username"] == "john.doe" and "authorization" not in who["headers"]
    for raw in (b"POST /auth/echo HTTP/1.1\r\n" + H + auth(JOHN) + auth(("x", "y")),
                b"POST /gateway/demo.echo HTTP/1.1\r\n" + H + auth(GATEWAY) +
                b"x-portico-username: john.doe\r\nX-Portico-Username: admin\r\n"):
        res, _, data = send(gw, raw + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert [r[0] for r in res] == [400], data


def test_a_correlation_id_with_bad_bytes_is_not_echoed(gw):
    res, _, data = send(gw, b"GET /api/echo HTTP/1.1\r\n" + H +
                        b"x-correlation-id: a\"b<x>\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in res] == [200] and b"<x>" not in data.split(b"\r\n\r\n")[0], data


# ---- a client that never reads ---------------------------------------------------------


def test_a_client_that_pipelines_and_never_reads_is_closed(start):
    gw = start(CONFIG.replace("idle_timeout: 60s", "idle_timeout: 2s"))
    s = gw.raw()
    s.settimeout(None)  # the flood blocks once the gateway stops reading
    one = b"GET /api/echo HTTP/1.1\r\n" + H + b"\r\n"

    def flood():
        try:
            while True:
                s.sendall(one * 256)
        except OSError:
            pass  # the gateway closed the connection
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    # the answers fill both socket buffers, the gateway stops reading past 256 KiB
    # of pending requests; an answer that cannot go out for idle_timeout (2 s)
    # ends the connection (it used to wait for ever)
    t.join(8)
    s.settimeout(1)
    closed, t0 = not t.is_alive(), time.time()
    while not closed and time.time() - t0 < 10:  # without the close, answers go on
        try:
            piece = s.recv(1 << 20)
        except socket.timeout:
            break
        except OSError:
            closed = True
            break
        closed = not piece
    s.close()
    assert closed, "the connection stayed open for a client that does not read"
    served_after(gw)
