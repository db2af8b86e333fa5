"""The access log's fields: the client address (X-Forwarded-For believed only
from server.trusted_proxies, walked from the right), the user agent, the
query with secrets hidden, the upstream and its time; every value escaped,
so a hostile header cannot forge a line or a field."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from amqp_support import Http, free_port
from conftest import config_head, recv_all


def config(trusted, backend_port):
    return config_head("workers: 1\n" + trusted, log="""
        level: info
        access: {tmp}/access.log
        redact_query: [session, Other-Secret]
    """) + """channels:
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: demo.echo
  http_proxy:
    - name: svc
      url_prefix: /svc
      services:
        one:
          targets: [127.0.0.1:%d]
""" % backend_port


class Backend(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def lines(gw, n):
    path = gw.tmp + "/access.log"
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            text = open(path, "rb").read().decode("utf-8")
        except FileNotFoundError:
            text = ""
        if len(text.splitlines()) >= n:
            break
        time.sleep(0.05)
    out = [json.loads(l) for l in text.splitlines()]
    assert len(out) == n, text
    return out


def start(start_gateway, trusted):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gw = start_gateway(config(trusted, srv.server_address[1]))
    return gw, srv


def test_fields_query_redaction_and_upstream(start_gateway):
    gw, srv = start(start_gateway, "")
    try:
        c = Http(gw.port)
        q = ("a=1&token=tok-SECRET1&session=sess-SECRET2&other-secret=x-SECRET3"
             "&T%6Fken=enc-SECRET4&api_key=k-SECRET5&b=two")
        assert c.request("GET", "/api/echo?" + q, headers={"User-Agent": "curl/8.0 test"})[0] == 200
        assert c.request("GET", "/svc/one/x?y=1")[0] == 200
        assert c.request("GET", "/api/echo")[0] == 200
        one, two, three = lines(gw, 3)
        assert one["client"] == one["peer"] == "127.0.0.1" and one["xff"] is None
        assert one["user_agent"] == "curl/8.0 test"
        assert one["query"] == ("a=1&token=[REDACTED]&session=[REDACTED]&other-secret=[REDACTED]"
                                "&T%6Fken=[REDACTED]&api_key=[REDACTED]&b=two")
        assert one["upstream"] is None and one["upstream_ms"] is None
        assert two["upstream"] == "127.0.0.1:%d" % srv.server_address[1]
        assert isinstance(two["upstream_ms"], float) and two["upstream_ms"] >= 0
        assert two["query"] == "y=1" and two["service"] == "one"
        assert three["query"] is None and three["user_agent"] is None
        text = open(gw.tmp + "/access.log").read()
        assert "SECRET" not in text
    finally:
        srv.shutdown()


def raw_get(gw, headers, path=b"/api/echo"):
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(
        k + b": " + v + b"\r\n" for k, v in headers) + b"Connection: close\r\n\r\n")
    data = recv_all(s)
    s.close()
    return data


def test_xff_only_from_trusted_proxies(start_gateway):
    # 127.0.0.1 (the test's own address) is a trusted proxy; so is 10.0.0.0/8
    gw, srv = start(start_gateway, "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]")
    try:
        cases = [
            # (X-Forwarded-For headers, the client the log must name)
            ([b"203.0.113.7"], "203.0.113.7"),
            ([b"198.51.100.1, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # past trusted hops
            ([b"198.51.100.1", b"203.0.113.9, 10.0.0.1"], "203.0.113.9"),  # two headers
            ([b"10.0.0.5, 10.0.0.1"], "10.0.0.5"),  # all trusted: the leftmost
            ([b"garbage, 10.0.0.1"], "10.0.0.1"),  # not an address: the last believed hop
            ([b"2001:db8::1"], "2001:db8::1"),
            ([], "127.0.0.1"),
        ]
        for hs, _ in cases:
            assert raw_get(gw, [(b"X-Forwarded-For", h) for h in hs]).startswith(b"HTTP/1.1 200")
        got = lines(gw, len(cases))
        for line, (hs, want) in zip(got, cases):
            assert line["client"] == want, (hs, line)
            assert line["peer"] == "127.0.0.1"
            assert line["xff"] == (hs[0].decode() if hs else None)
    finally:
        srv.shutdown()


def test_xff_ignored_from_untrusted_peers(start_gateway):
    gw, srv = start(start_gateway, "trusted_proxies: [10.0.0.0/8]")
    try:
        assert raw_get(gw, [(b"X-Forwarded-For", b"203.0.113.7")]).startswith(b"HTTP/1.1 200")
        (line,) = lines(gw, 1)
        assert line["client"] == "127.0.0.1" and line["xff"] is None
    finally:
        srv.shutdown()


def test_hostile_user_agent_is_escaped(start_gateway):
    gw, srv = start(start_gateway, "")
    try:
        hostile = [
            b'x", "status": 999, "forged": "1',
            b'a\\"b} {"time":"0"',
            b"caf\xc3\xa9 \xff\xfe broken utf-8",
            b"tab\there",
        ]
        for ua in hostile:
            # through the proxy: demo.echo would refuse to echo non-UTF-8
            assert raw_get(gw, [(b"User-Agent", ua)], b"/svc/one/x").startswith(b"HTTP/1.1 200")
        assert raw_get(gw, [])[:12] == b"HTTP/1.1 200"
        got = lines(gw, len(hostile) + 1)  # one JSON object a line, no more lines
        assert got[0]["user_agent"] == hostile[0].decode() and got[0]["status"] == 200
        assert "forged" not in got[0]
        assert got[1]["user_agent"] == hostile[1].decode()
        assert got[2]["user_agent"] == "caf\u00c3\u00a9 \u00ff\u00fe broken utf-8"
        assert got[3]["user_agent"] == "tab\there"
    finally:
        srv.shutdown()


def test_bad_trusted_proxies_are_refused(start_gateway):
    import pytest
    for bad in ("[10.0.0.0/33]", "[not-an-address]", "10.0.0.0/8", "[\"::1/129\"]"):
        with pytest.raises(RuntimeError, match="server.trusted_proxies"):
            start_gateway(config("trusted_proxies: " + bad, free_port()))
