"""Distributed tracing (docs/tracing.md): W3C trace context in and out of
portico, spans exported as OTLP/JSON to a collector. The collector here is
a small http.server that decodes each post; the backend records the
headers it gets. Broker cases use the test broker."""
import json
import os
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from amqp_support import BROKER_URL, AmqpClient, Http, broker_serving, free_port, scrape
from conftest import config_head
from test_https_backend import certs  # noqa: F401 (its test CA and certificates)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TP = "00-%s-%s-01" % (CLIENT_TRACE, CLIENT_SPAN)
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


class Receiver:
    """An OTLP/HTTP collector: POST /v1/traces with application/json."""

    def __init__(self, tls=None):
        self.spans, self.posts, self.bad = [], 0, []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    assert self.path == "/v1/traces", self.path
                    assert self.headers["Content-Type"] == "application/json"
                    doc = json.loads(body)
                    for rs in doc["resourceSpans"]:
                        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                        for ss in rs["scopeSpans"]:
                            for s in ss["spans"]:
                                s["_resource"] = attrs
                                s["_auth"] = self.headers.get("Authorization")
                                rec.spans.append(s)
                    rec.posts += 1
                    self.send_response(200)
                except Exception as e:  # the test fails on any of these
                    rec.bad.append(repr(e))
                    self.send_response(400)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        if tls:  # (cert, key): an https collector
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [s for s in list(self.spans) if pred(s)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("no such span in %s" % json.dumps(self.spans, indent=1))

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        assert self.bad == []


class Backend:
    """Answers {} and keeps the headers of each request."""

    def __init__(self):
        self.seen = []
        be = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                h = {k.lower(): v for k, v in self.headers.items()}
                h["_traceparents"] = len(self.headers.get_all("traceparent") or [])
                be.seen.append(h)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "11")
                self.end_headers()
                self.wfile.write(b'{"ok":true}')

            do_GET = do_POST = handle_one

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SERVICES = {
    "front.lua": """
local service = require "portico.service"
local M = service.new { name = "trace.front" }
function M:handle()
  self.trace:set("order.id", "o-17"):set("order.lines", 3)
  local s = self.trace:span("price lookup")
  s:set("cache.hit", false)
  s:finish()
  self.response.payload = { back = self:invoke("trace.back", {}),
                            trace_id = self.trace.trace_id }
end
return M
""",
    "back.lua": """
local service = require "portico.service"
local M = service.new { name = "trace.back" }
function M:handle()
  local res, err = self.out.http.crm:get("/customers/1")
  self.trace:set("crm.status", res and res.status or 0)
  self.response.payload = { status = res and res.status, err = err and err.kind }
end
return M
""",
    "plain.lua": """
local service = require "portico.service"
local M = service.new { name = "trace.plain" }
function M:handle()
  -- untraced or traced, the same code: self.trace never fails
  self.trace:set("k", "v"):span("x"):finish()
  self.response.payload = { tp = self.trace:traceparent() or "none" }
end
return M
""",
    "esc.lua": r"""
local service = require "portico.service"
local M = service.new { name = "trace.esc" }
function M:handle()
  self.trace:set("q", 'say "hi" \\ back')
    :set("ctl", "a\nb\tc\1d\127e")
    :set("utf8", "h\195\169llo, a long text that is more than a word")
    :set("bad", "x\255\254y")
    :set('k"ey', "v")
    :set("edge", "1234567\"")
    :set("neg", -42):set("big", 9007199254740993):set("half", 0.5)
  self.response.payload = { ok = true }
end
return M
""",
    "send.lua": """
local service = require "portico.service"
local M = service.new { name = "trace.send" }
function M:handle()
  local p = self.request.payload
  local ok, err = self.out.amqp:send({ n = 1 }, "bus", "", p.queue, { headers = { x = "y" } })
  self.response.payload = { sent = ok and true or false, err = err }
end
return M
""",
}


def config(tmp, collector_port, backend_port, extra_tracing="", amqp=False, jobs=False,
           timeout="1s", scheme="http"):
    text = config_head("workers: 2", log="level: info\naccess: %s/access.log" % tmp,
                       dirs="{root}/services, %s/services" % tmp)
    text += """tracing:
  endpoint: %s://127.0.0.1:%d/v1/traces
  ratio: 1.0
  batch_size: 4
  interval: 100ms
  timeout: %s
  service_name: gw-under-test
  headers: {authorization: "Bearer s3cret"}
%s
outgoing:
  http:
    - name: crm
      targets: [http://127.0.0.1:%d]
""" % (scheme, collector_port, timeout, extra_tracing, backend_port)
    if amqp:
        text += """  amqp:
    - name: bus
      url: %s
      timeout: 5s
""" % BROKER_URL
    if jobs:
        text += """scheduler:
  jobs:
    - {name: tick, service: trace.front, every: 200ms}
"""
    text += """channels:
""" + ("""  amqp:
    - {name: trace.in, connection: bus, queue: portico-test.trace.in, service: trace.plain}
  amqp_bus:
    - {name: bbus, url_prefix: /bus, url: "%s", reply_timeout: 5s}
""" % BROKER_URL if amqp else "") + """  rest:
    - {name: api.front, url_path: /front, methods: [GET], service: trace.front}
    - {name: api.plain, url_path: /plain, methods: [GET], service: trace.plain}
    - {name: api.esc, url_path: /esc, methods: [GET], service: trace.esc}
    - {name: api.send, url_path: /send, methods: [POST], service: trace.send}
  http_proxy:
    - name: px
      url_prefix: /px
      services:
        crm:
          targets: [http://127.0.0.1:%d]
        flaky:
          targets: [http://127.0.0.1:%d, http://127.0.0.1:%d]
""" % (backend_port, free_port(), backend_port)
    return text


@pytest.fixture
def lab(tmp_path, start_gateway):
    rec, be = Receiver(), Backend()
    os.makedirs(tmp_path / "services", exist_ok=True)
    for name, text in SERVICES.items():
        (tmp_path / "services" / name).write_text(text)

    def start(**kw):
        text = config(tmp_path, kw.pop("collector", rec.port), be.port, **kw)
        return start_gateway(text.replace("{", "{{").replace("}", "}}")
                             .replace("{{port}}", "{port}").replace("{{admin_port}}", "{admin_port}")
                             .replace("{{root}}", "{root}"))

    yield rec, be, start
    rec.close()
    be.close()


def by_id(spans):
    return {s["spanId"]: s for s in spans}


def attrs(span):
    out = {}
    for a in span["attributes"]:
        v = a["value"]
        out[a["key"]] = v.get("stringValue", v.get("intValue", v.get("doubleValue")))
    return out


def test_proxy_keeps_the_trace_and_names_portico_as_parent(lab):
    rec, be, start = lab
    gw = start()
    status, _h, _b = gw.http().request("GET", "/px/crm/x", headers={
        "traceparent": CLIENT_TP, "tracestate": "rojo=00f067aa0ba902b7", "X-Correlation-Id": "c-1"})
    assert status == 200
    seen = be.seen[-1]
    m = TP.match(seen["traceparent"])
    assert m and m.group(1) == CLIENT_TRACE and m.group(2) != CLIENT_SPAN
    assert seen["_traceparents"] == 1  # the client's is replaced, not passed on too
    assert seen["tracestate"] == "rojo=00f067aa0ba902b7"
    # the client span of the proxy is the backend's parent; its parent is
    # the server span, whose parent is the client's
    proxy = rec.wait(lambda s: s["spanId"] == m.group(2))[0]
    assert proxy["kind"] == 3 and proxy["traceId"] == CLIENT_TRACE
    assert attrs(proxy)["portico.upstream"] == "crm"
    assert attrs(proxy)["http.response.status_code"] == "200"
    assert attrs(proxy)["server.address"] == "127.0.0.1:%d" % be.port
    assert attrs(proxy)["portico.retries"] == "0" and "portico.failed_target" not in attrs(proxy)
    server = rec.wait(lambda s: s["spanId"] == proxy["parentSpanId"])[0]
    assert server["kind"] == 2 and server["parentSpanId"] == CLIENT_SPAN
    a = attrs(server)
    assert a["portico.channel"] == "px" and a["portico.cid"] == "c-1"
    assert a["http.response.status_code"] == "200" and a["http.request.method"] == "GET"
    assert "portico.security_us" in a
    assert server["_resource"]["service.name"] == {"stringValue": "gw-under-test"}
    assert server["_auth"] == "Bearer s3cret"
    assert int(server["startTimeUnixNano"]) <= int(proxy["startTimeUnixNano"])
    assert int(proxy["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    # the access log names the trace
    deadline = time.time() + 5
    while True:
        lines = [json.loads(l) for l in open(os.path.join(gw.tmp, "access.log"))]
        if lines or time.time() > deadline:
            break
        time.sleep(0.05)
    assert lines[-1]["trace_id"] == CLIENT_TRACE and lines[-1]["cid"] == "c-1"


BAD = [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # upper case
    "ff-%s-%s-01" % (CLIENT_TRACE, CLIENT_SPAN),                  # version ff
    "00-%s-%s-01" % ("0" * 32, CLIENT_SPAN),                      # zero trace id
    "00-%s-%s-01" % (CLIENT_TRACE, "0" * 16),                     # zero parent id
    "00-%s-%s-01-extra" % (CLIENT_TRACE, CLIENT_SPAN),            # 00 is 55 bytes exactly
    "00-%s-%s-1" % (CLIENT_TRACE, CLIENT_SPAN),                   # short flags
    "00-%s-%s" % (CLIENT_TRACE, CLIENT_SPAN),                     # no flags
    "00-%s%s-01" % (CLIENT_TRACE, CLIENT_SPAN),                   # a separator missing
    "garbage",
]


def test_a_retried_proxy_call_names_both_targets(lab):
    rec, be, start = lab
    gw = start()
    http = gw.http()
    for _ in range(4):
        assert http.request("GET", "/px/flaky/x")[0] == 200
    retried = rec.wait(lambda s: s["name"] == "proxy" and attrs(s).get("portico.retries") == "1")[0]
    a = attrs(retried)
    assert a["server.address"] == "127.0.0.1:%d" % be.port
    assert a["portico.failed_target"].startswith("127.0.0.1:") and \
        a["portico.failed_target"] != a["server.address"]
    assert a["portico.retry"] == "1" and retried["status"] == {}
    # the failed attempt is a client span of its own beside it: same parent,
    # its target, its number, the failure; over before the retry started
    first = rec.wait(lambda s: s["name"] == "proxy" and s["spanId"] != retried["spanId"] and
                     s["parentSpanId"] == retried["parentSpanId"])[0]
    f = attrs(first)
    assert first["kind"] == 3 and first["traceId"] == retried["traceId"]
    assert f["server.address"] == a["portico.failed_target"] and f["portico.retry"] == "0"
    assert first["status"]["code"] == 2 and a["portico.failed_target"] in first["status"]["message"]
    assert f["portico.upstream"] == "flaky" and f["url.path"] == "/x"
    assert int(first["endTimeUnixNano"]) <= int(retried["startTimeUnixNano"])
    # the target that answered names the last attempt as its parent
    assert any(TP.match(h["traceparent"]).group(2) == retried["spanId"] for h in be.seen)
    # a call that was not retried is one attempt, number 0
    one = rec.wait(lambda s: s["name"] == "proxy" and attrs(s).get("portico.retries") == "0")[0]
    assert attrs(one)["portico.retry"] == "0"


def test_attribute_text_is_escaped_and_bad_utf8_replaced(lab):
    # the exporter renders with a word-at-a-time scan: quotes, backslashes,
    # control bytes, UTF-8 and bytes that are not UTF-8, at any offset
    rec, be, start = lab
    gw = start()
    assert gw.http().request("GET", "/esc?x=\"1\"")[0] == 200
    span = rec.wait(lambda s: s["name"] == "service trace.esc")[0]
    a = attrs(span)
    assert a["q"] == 'say "hi" \\ back'
    assert a["ctl"] == "a\nb\tc\x01d\x7fe"
    assert a["utf8"] == "h\u00e9llo, a long text that is more than a word"
    assert a["bad"] == "x??y"
    assert a['k"ey'] == "v" and a["edge"] == '1234567"'
    assert a["neg"] == "-42" and a["half"] == 0.5
    server = rec.wait(lambda s: s["spanId"] == span["parentSpanId"])[0]
    assert attrs(server)["url.path"] == "/esc"


def test_an_invalid_traceparent_starts_a_new_trace(lab):
    rec, be, start = lab
    gw = start()
    http = gw.http()
    made = set()
    for bad in BAD:
        status, _h, _b = http.request("GET", "/px/crm/x", headers={
            "traceparent": bad, "tracestate": "rojo=1"})
        assert status == 200
        seen = be.seen[-1]
        m = TP.match(seen["traceparent"])
        assert m, (bad, seen)
        assert m.group(1) != CLIENT_TRACE and m.group(1) not in made, bad
        assert seen["traceparent"] != bad and "tracestate" not in seen, bad
        assert seen["_traceparents"] == 1, bad
        made.add(m.group(1))
        root = rec.wait(lambda s, t=m.group(1): s["traceId"] == t and s["kind"] == 2)[0]
        assert root["parentSpanId"] == "", bad
    # two traceparent fields are no valid one
    s = gw.raw()
    s.sendall(("GET /px/crm/x HTTP/1.1\r\nHost: a\r\ntraceparent: %s\r\n"
               "traceparent: %s\r\nConnection: close\r\n\r\n" % (CLIENT_TP, CLIENT_TP)).encode())
    while s.recv(4096):
        pass
    assert TP.match(be.seen[-1]["traceparent"]).group(1) != CLIENT_TRACE
    # a later version is read as far as version 00 goes; 00 goes on
    later = "cc-%s-%s-01-more" % (CLIENT_TRACE, CLIENT_SPAN)
    assert http.request("GET", "/px/crm/x", headers={"traceparent": later})[0] == 200
    m = TP.match(be.seen[-1]["traceparent"])
    assert m.group(1) == CLIENT_TRACE


def test_one_trace_across_invoke_and_outgoing_http(lab):
    rec, be, start = lab
    gw = start()
    status, _h, body = gw.http().request("GET", "/front", headers={"traceparent": CLIENT_TP})
    assert status == 200, body
    doc = json.loads(body)
    assert doc["trace_id"] == CLIENT_TRACE and doc["back"]["status"] == 200
    m = TP.match(be.seen[-1]["traceparent"])
    assert m and m.group(1) == CLIENT_TRACE
    # the chain: server <- service trace.front <- invoke <- service trace.back <- http GET
    out = rec.wait(lambda s: s["spanId"] == m.group(2))[0]
    assert out["name"] == "http GET" and out["kind"] == 3
    assert attrs(out)["http.response.status_code"] == "200"
    assert attrs(out)["portico.outconn"] == "crm"
    rec.wait(lambda s: s["kind"] == 2 and s["traceId"] == CLIENT_TRACE)
    spans = by_id(s for s in rec.spans if s["traceId"] == CLIENT_TRACE)
    back = spans[out["parentSpanId"]]
    assert back["name"] == "service trace.back" and attrs(back)["crm.status"] == "200"
    invoke = spans[back["parentSpanId"]]
    assert invoke["name"] == "invoke trace.back"
    front = spans[invoke["parentSpanId"]]
    assert front["name"] == "service trace.front"
    assert attrs(front)["order.id"] == "o-17" and attrs(front)["order.lines"] == "3"
    server = spans[front["parentSpanId"]]
    assert server["kind"] == 2 and server["parentSpanId"] == CLIENT_SPAN
    assert attrs(server)["portico.service"] == "trace.front"
    child = [s for s in spans.values() if s["name"] == "price lookup"][0]
    assert child["parentSpanId"] == front["spanId"]
    assert child["attributes"] == [{"key": "cache.hit", "value": {"stringValue": "false"}}]
    assert "tracestate" not in be.seen[-1]  # none came, none goes


def test_tracestate_goes_on_through_invoke_and_outgoing_http(lab):
    rec, be, start = lab
    gw = start()
    http = gw.http()
    status, _h, body = http.request("GET", "/front", headers={
        "traceparent": CLIENT_TP, "tracestate": STATE})
    assert status == 200, body
    seen = be.seen[-1]
    assert TP.match(seen["traceparent"]).group(1) == CLIENT_TRACE
    assert seen["tracestate"] == STATE
    # an invalid one is dropped, not passed on
    status, _h, body = http.request("GET", "/front", headers={
        "traceparent": CLIENT_TP, "tracestate": "Bad Key=1"})
    assert status == 200, body
    assert "tracestate" not in be.seen[-1]


def test_a_caller_s_unsampled_flag_is_kept(lab):
    rec, be, start = lab
    gw = start()
    # parent-based: a caller's unsampled flag is kept and nothing exported
    unsampled = "00-%s-%s-00" % ("a" * 32, CLIENT_SPAN)
    status, _h, body = gw.http().request("GET", "/plain", headers={"traceparent": unsampled})
    assert status == 200
    tp = json.loads(body)["tp"]
    assert tp.startswith("00-" + "a" * 32 + "-") and tp.endswith("-00")
    gw.http().request("GET", "/plain")  # a sampled one, to know the exporter ran
    rec.wait(lambda s: s["traceId"] != "a" * 32)
    assert not [s for s in rec.spans if s["traceId"] == "a" * 32]


def test_a_scheduled_run_is_a_trace_of_its_own(lab):
    rec, be, start = lab
    start(jobs=True)
    run = rec.wait(lambda s: s["name"] == "tick")[0]
    assert run["parentSpanId"] == "" and run["kind"] == 1
    assert attrs(run)["portico.job"] == "tick" and attrs(run)["portico.service"] == "trace.front"
    svc = rec.wait(lambda s: s["parentSpanId"] == run["spanId"])[0]
    assert svc["name"] == "service trace.front" and svc["traceId"] == run["traceId"]
    # its outgoing call is in the same trace
    out = rec.wait(lambda s: s["traceId"] == run["traceId"] and s["name"] == "http GET")[0]
    assert TP.match([h for h in be.seen if out["spanId"] in h.get("traceparent", "")][0]
                    ["traceparent"]).group(1) == run["traceId"]


def test_collector_down_requests_unaffected_drops_counted(lab):
    rec, be, start = lab
    gw = start(collector=free_port())
    http = gw.http()
    for _ in range(20):
        assert http.request("GET", "/px/crm/x")[0] == 200
    deadline = time.time() + 10
    while True:
        m = scrape(gw)
        failed = m.get(("portico_trace_spans_dropped_total", (("reason", "export_failed"),)), 0)
        if failed >= 20 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert failed >= 20 and m[("portico_trace_export_failures_total", ())] >= 1
    assert m[("portico_trace_spans_exported_total", ())] == 0


def test_a_full_queue_drops_and_counts(lab):
    rec, be, start = lab
    # a collector that never answers: the exporter waits out its time-out
    # while the queue of 4 fills
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(64)
    gw = start(collector=sink.getsockname()[1], extra_tracing="  queue_size: 4")
    http = gw.http()
    for _ in range(40):
        assert http.request("GET", "/px/crm/x")[0] == 200
    m = scrape(gw)
    assert m[("portico_trace_spans_dropped_total", (("reason", "queue_full"),))] > 0
    sink.close()


def test_a_stop_does_not_hang_on_a_collector_that_never_answers(lab):
    rec, be, start = lab
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(64)
    # 15 batches wait behind a post that times out after 5 s: were each to
    # get its own time-out, the stop would take over a minute (the fixture
    # kills it after 30 s and fails on the exit code)
    gw = start(collector=sink.getsockname()[1], timeout="5s", extra_tracing="  queue_size: 4096")
    http = gw.http()
    for _ in range(60):
        assert http.request("GET", "/plain")[0] == 200
    assert gw.proc.stop() == 0
    sink.close()


def test_tracing_off_means_no_trace_fields(tmp_path, start_gateway):
    os.makedirs(tmp_path / "services", exist_ok=True)
    (tmp_path / "services" / "plain.lua").write_text(SERVICES["plain.lua"])
    gw = start_gateway(config_head("workers: 1", log="level: info\naccess: {tmp}/access.log") +
                       "channels:\n  rest:\n    - {{name: p, url_path: /plain, methods: [GET], "
                       "service: trace.plain}}\n")
    status, _h, body = gw.http().request("GET", "/plain", headers={"traceparent": CLIENT_TP})
    assert (status, json.loads(body)) == (200, {"tp": "none"})
    deadline = time.time() + 5
    while not open(os.path.join(gw.tmp, "access.log")).read() and time.time() < deadline:
        time.sleep(0.05)
    line = json.loads(open(os.path.join(gw.tmp, "access.log")).read().splitlines()[-1])
    assert "trace_id" not in line
    assert not any(k[0].startswith("portico_trace") for k in scrape(gw))


def test_an_https_collector_is_verified_with_the_tls_block(lab, certs):
    rec, be, start = lab
    good = Receiver(tls=(os.path.join(certs, "good.pem"), os.path.join(certs, "good.key")))
    try:
        gw = start(collector=good.port, scheme="https",
                   extra_tracing="  tls: {ca_file: %s}" % os.path.join(certs, "ca.pem"))
        assert gw.http().request("GET", "/plain", headers={"traceparent": CLIENT_TP})[0] == 200
        span = good.wait(lambda s: s["kind"] == 2 and s["traceId"] == CLIENT_TRACE)[0]
        assert span["name"] == "api.plain" and span["_auth"] == "Bearer s3cret"
        assert rec.spans == []
    finally:
        good.close()


@pytest.mark.parametrize("name, with_ca", [("good", False), ("wrong-host", True)])
def test_an_https_collector_not_trusted_gets_nothing(lab, certs, name, with_ca):
    # its certificate is signed by a CA the system store does not hold, or
    # names another host: the post fails and is counted, requests go on
    rec, be, start = lab
    coll = Receiver(tls=(os.path.join(certs, name + ".pem"), os.path.join(certs, name + ".key")))
    try:
        tls = "  tls: {ca_file: %s}" % os.path.join(certs, "ca.pem") if with_ca else ""
        gw = start(collector=coll.port, scheme="https", extra_tracing=tls)
        http = gw.http()
        for _ in range(5):
            assert http.request("GET", "/plain")[0] == 200
        deadline = time.time() + 10
        while True:
            m = scrape(gw)
            if m.get(("portico_trace_export_failures_total", ()), 0) >= 1 or \
                    time.time() > deadline:
                break
            time.sleep(0.1)
        assert m[("portico_trace_export_failures_total", ())] >= 1
        assert m[("portico_trace_spans_exported_total", ())] == 0
        assert coll.spans == []
    finally:
        coll.close()


@pytest.mark.parametrize("section, message", [
    ("tracing:\n  ratio: 1\n", "tracing: endpoint is required"),
    ("tracing:\n  endpoint: ftp://c:4318/v1/traces\n", "must start with http:// or https://"),
    ("tracing:\n  endpoint: http://c:4318/v1/traces\n  tls: {verify: false}\n",
     "tracing.tls: only with an https:// endpoint"),
    ("tracing:\n  endpoint: https://c/v1/traces\n  tls: {ca_file: /nonexistent/ca.pem}\n",
     "/nonexistent/ca.pem"),
    ("tracing:\n  endpoint: https://c/v1/traces\n  tls: {verify: maybe}\n", "verify"),
    ("tracing:\n  endpoint: https://c/v1/traces\n  tls: {ca: x}\n", "unknown key 'ca'"),
    ("tracing:\n  endpoint: http://c:99999/v1/traces\n", "bad port"),
    ("tracing:\n  endpoint: http://c/x\n  ratio: 1.5\n", "tracing.ratio: a number from 0 to 1"),
    ("tracing:\n  endpoint: http://c/x\n  batch_size: 10\n  queue_size: 5\n",
     "batch_size is larger than queue_size"),
    ("tracing:\n  endpoint: http://c/x\n  headers: {\"a b\": c}\n", "not a valid header"),
    ("tracing:\n  endpoint: http://c/x\n  sample: 1\n", "unknown key 'sample'"),
    ("tracing:\n  endpoint: http://c/x\n  timeout: 0s\n", "tracing.timeout: a duration"),
])
def test_bad_tracing_sections_are_refused(tmp_path, section, message):
    import subprocess
    from amqp_support import ROOT
    path = tmp_path / "p.yaml"
    path.write_text("server:\n  listen: 127.0.0.1:%d\nlua:\n  path: %s/lua\n%s" %
                    (free_port(), ROOT, section))
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    r = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and message in r.stderr + r.stdout, r.stderr


@pytest.mark.skipif(not broker_serving(), reason="needs the test broker (scripts/rabbitmq start)")
def test_an_amqp_message_carries_the_trace(lab):
    rec, be, start = lab
    gw = start(amqp=True)
    q = "portico-test.trace"
    with AmqpClient() as amqp:
        amqp.queue_declare(q, durable=False)
        amqp.queue_purge(q)
        status, _h, body = gw.http().request("POST", "/send", body={"queue": q},
                                             headers={"traceparent": CLIENT_TP,
                                                      "tracestate": STATE})
        assert status == 200 and json.loads(body)["sent"] is True, body
        msg = amqp.wait_get(q)
        amqp.queue_delete(q)
    assert msg.props["headers"]["x"] == "y"
    assert msg.props["headers"]["tracestate"] == STATE
    m = TP.match(msg.props["headers"]["traceparent"])
    assert m and m.group(1) == CLIENT_TRACE
    pub = rec.wait(lambda s: s["spanId"] == m.group(2))[0]
    assert pub["kind"] == 4 and pub["name"] == "amqp publish"
    assert attrs(pub)["messaging.rabbitmq.destination.routing_key"] == q


@pytest.mark.skipif(not broker_serving(), reason="needs the test broker (scripts/rabbitmq start)")
def test_a_bus_request_and_an_amqp_delivery_carry_the_trace(lab):
    from test_bus import Q_FOO, X_FOO, Responder, echo_answer
    rec, be, start = lab
    with AmqpClient() as amqp:
        amqp.exchange_declare(X_FOO, "topic")
        amqp.queue_declare(Q_FOO)
        amqp.queue_bind(Q_FOO, X_FOO, "bar.baz")
        amqp.queue_purge(Q_FOO)
        amqp.queue_declare("portico-test.trace.in", durable=False)
        gw = start(amqp=True)
        assert gw.log_has("consuming queue 'portico-test.trace.in'")
        backend = Responder(Q_FOO, echo_answer)
        try:
            status, _h, body = gw.http().request("GET", "/bus/foo/bar/baz",
                                                 headers={"traceparent": CLIENT_TP,
                                                          "tracestate": STATE})
            assert status == 200, body
            backend.wait_for(1)
        finally:
            backend.stop()
        m = TP.match(backend.received[0].headers["traceparent"])
        assert m and m.group(1) == CLIENT_TRACE
        assert backend.received[0].headers["tracestate"] == STATE
        bus = rec.wait(lambda s: s["spanId"] == m.group(2))[0]
        assert bus["name"] == "bus" and bus["kind"] == 3
        server = rec.wait(lambda s: s["spanId"] == bus["parentSpanId"])[0]
        assert server["parentSpanId"] == CLIENT_SPAN
        # a delivery on an AMQP channel: its traceparent header is the parent
        other = "5" * 32
        amqp.publish("", "portico-test.trace.in", b"{}",
                     headers={"traceparent": "00-%s-%s-01" % (other, CLIENT_SPAN)})
        consumer = rec.wait(lambda s: s["traceId"] == other and s["kind"] == 5)[0]
        assert consumer["parentSpanId"] == CLIENT_SPAN
        assert attrs(consumer)["portico.service"] == "trace.plain"
        svc = rec.wait(lambda s: s["traceId"] == other and s["parentSpanId"] == consumer["spanId"])
        assert svc[0]["name"] == "service trace.plain"
        amqp.queue_delete("portico-test.trace.in")
