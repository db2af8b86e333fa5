"""The audit log: one JSON line per request on an audited channel, with the
cid, trace id, user, status, headers and bodies; secrets hidden by header
name (some always) and by JSON path; bodies cut at audit.max_body; a slow
or failing sink drops and counts, never holding a request up."""
import json
import os
import threading
import time

import pytest

from amqp_support import Http, scrape, value
from conftest import config_head


def config(audit):
    return config_head("workers: 2") + audit + """
security:
  api_key:
    - name: keys
      header: x-api-key
      keys:
        - username: acme
          key_env: PT_TEST_AUDIT_KEY
channels:
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: demo.echo
      security: keys
    - name: api.quiet
      url_path: /api/quiet
      methods: [POST]
      service: demo.echo
"""


AUDIT = """audit:
  channels: [api.echo]
  file: {audit_file}
  max_body: {max_body}
  max_queue: {max_queue}
  redact_json: ["$.card.number", "$..pin", "$.profile.ssn"]
  redact_headers: [x-internal-ref]
"""

KEY = "k-" + "a" * 30
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def start(start_gateway, monkeypatch, audit_file, max_body="4KB", max_queue="1MB"):
    monkeypatch.setenv("PT_TEST_AUDIT_KEY", KEY)
    return start_gateway(config(AUDIT), audit_file=audit_file, max_body=max_body,
                         max_queue=max_queue)


def read_lines(path, n, timeout=5):
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = open(path).read() if os.path.exists(path) else ""
        if len(text.splitlines()) >= n:
            break
        time.sleep(0.05)
    return [json.loads(l) for l in text.splitlines()]


def test_lines_hide_secrets(start_gateway, monkeypatch, tmp_path):
    path = str(tmp_path / "audit.log")
    gw = start(start_gateway, monkeypatch, path)
    c = Http(gw.port)
    body = {"card": {"number": "4111-SECRET-CARD", "holder": "Ann"},
            "profile": {"ssn": "SECRET-SSN", "name": "Ann"},
            "items": [{"pin": "SECRET-PIN1"}, {"deep": {"pin": "SECRET-PIN2"}}],
            "password": "SECRET-PASSWORD", "nested": {"token": "SECRET-TOKEN"},
            "card_number": "not-a-secret"}
    s, h, _ = c.post("/api/echo?x=1&token=SECRET-QUERY", body, {
        "x-api-key": KEY, "Authorization": "Bearer SECRET-AUTH", "Cookie": "sid=SECRET-COOKIE",
        "Proxy-Authorization": "Basic SECRET-PROXY", "X-Internal-Ref": "SECRET-REF",
        "X-Session-Token": "SECRET-HDR-TOKEN", "X-Plain": "visible",
        "traceparent": "00-%s-00f067aa0ba902b7-01" % TRACE})
    assert s == 200
    assert c.post("/api/quiet", {"password": "not audited"})[0] == 200  # not an audited channel
    assert c.post("/api/echo", {"a": 1})[0] == 401  # refused: audited too
    (one, two) = read_lines(path, 2)
    text = open(path).read()
    resp_text = one["response"]["body"]
    # root paths do not reach the echo's copy under payload: only those two stay
    assert "SECRET" not in resp_text.replace("4111-SECRET-CARD", "").replace("SECRET-SSN", "")
    assert "SECRET" not in text.replace(json.dumps(resp_text)[1:-1], ""), text
    assert one["cid"] == h["x-correlation-id"] and one["trace_id"] == TRACE
    assert one["channel"] == "api.echo" and one["service"] == "demo.echo"
    assert one["username"] == "acme" and one["status"] == 200 and one["method"] == "POST"
    assert one["path"] == "/api/echo" and one["query"] == "x=1&token=[REDACTED]"
    hs = one["request_headers"]
    for name in ("x-api-key", "authorization", "cookie", "proxy-authorization",
                 "x-internal-ref", "x-session-token"):
        assert hs[name] == "[REDACTED]", name
    assert hs["x-plain"] == "visible"
    req = json.loads(one["request"]["body"])
    assert req["card"] == {"number": "[REDACTED]", "holder": "Ann"}
    assert req["profile"] == {"ssn": "[REDACTED]", "name": "Ann"}
    assert req["items"] == [{"pin": "[REDACTED]"}, {"deep": {"pin": "[REDACTED]"}}]
    assert req["password"] == "[REDACTED]" and req["nested"]["token"] == "[REDACTED]"
    assert req["card_number"] == "not-a-secret"
    assert one["request"]["truncated"] is False
    resp = json.loads(one["response"]["body"])
    # the paths are from the root of each body: the echo's copy is under payload
    assert resp["payload"]["profile"]["name"] == "Ann"
    assert resp["payload"]["items"][1]["deep"]["pin"] == "[REDACTED]"  # $..pin
    # a key named like a secret header is hidden in a body too
    for name in ("authorization", "cookie", "proxy-authorization", "x-internal-ref",
                 "x-session-token"):
        assert resp["headers"][name] == "[REDACTED]", name
    assert resp["headers"]["x-plain"] == "visible"
    assert one["response_content_type"].startswith("application/json")
    assert two["status"] == 401 and two["username"] is None and two["trace_id"] is None


def test_bodies_cut_at_the_bound(start_gateway, monkeypatch, tmp_path):
    path = str(tmp_path / "audit.log")
    gw = start(start_gateway, monkeypatch, path, max_body="64")
    c = Http(gw.port)
    text = "é" * 500  # two bytes each: the cut must not split one
    assert c.post("/api/echo", text.encode(), {"x-api-key": KEY,
                                                "Content-Type": "text/plain"})[0] in (200, 400, 415)
    (line,) = read_lines(path, 1)
    assert line["request"]["truncated"] is True and line["request"]["bytes"] == 1000
    assert len(line["request"]["body"].encode()) <= 64
    assert line["request"]["body"] == "é" * 32
    assert line["response"]["truncated"] is True


def test_bad_traceparent_is_no_trace_id(start_gateway, monkeypatch, tmp_path):
    path = str(tmp_path / "audit.log")
    gw = start(start_gateway, monkeypatch, path)
    c = Http(gw.port)
    bad = ["00-%s-0000000000000000-01" % TRACE, "00-%s-00f067aa0ba902b7-01" % ("0" * 32),
           "ff-%s-00f067aa0ba902b7-01" % TRACE, "00-%s-00f067aa0ba902b7-01" % TRACE.upper(),
           "00-%s-00f067aa0ba902b7-01-extra" % TRACE, "garbage"]
    for tp in bad:
        assert c.post("/api/echo", {}, {"x-api-key": KEY, "traceparent": tp})[0] == 200
    lines = read_lines(path, len(bad))
    assert [l["trace_id"] for l in lines] == [None] * len(bad)


def test_slow_sink_drops_and_counts(start_gateway, monkeypatch, tmp_path):
    # a FIFO nobody reads yet: the writer waits on it, the queue (4 KB) fills
    fifo = str(tmp_path / "audit.fifo")
    os.mkfifo(fifo)
    gw = start(start_gateway, monkeypatch, fifo, max_queue="4KB")
    c = Http(gw.port)
    for i in range(200):  # every request is answered while the sink is stuck
        assert c.post("/api/echo", {"i": i}, {"x-api-key": KEY})[0] == 200
    m = scrape(gw)
    dropped = value(m, "portico_audit_lines_total", result="dropped")
    assert dropped > 100
    got = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo).read().splitlines()))
    reader.daemon = True
    reader.start()
    deadline = time.time() + 5
    while time.time() < deadline:
        m = scrape(gw)
        if value(m, "portico_audit_lines_total", result="written") + dropped >= 200:
            break
        time.sleep(0.05)
    written = value(m, "portico_audit_lines_total", result="written")
    assert written >= 1 and written + dropped == 200


def test_failing_sink_counts(start_gateway, monkeypatch):
    gw = start(start_gateway, monkeypatch, "/dev/full")
    c = Http(gw.port)
    for i in range(5):
        assert c.post("/api/echo", {"i": i}, {"x-api-key": KEY})[0] == 200
    deadline = time.time() + 5
    while time.time() < deadline:
        if value(scrape(gw), "portico_audit_lines_total", result="failed") == 5:
            break
        time.sleep(0.05)
    assert value(scrape(gw), "portico_audit_lines_total", result="failed") == 5


@pytest.mark.parametrize("audit, message", [
    ("audit:\n  channels: [api.echo]\n", "no sink is named"),
    ("audit:\n  channels: [api.ecko]\n  file: audit.log\n", "no channel is called 'api.ecko'"),
    ("audit:\n  channels: [api.echo]\n  file: /x\n  redact_json: [\"card.number\"]\n",
     "is not a JSON path"),
    ("audit:\n  channels: [api.echo]\n  file: /x\n  redact_json: [\"$..a.b\"]\n",
     "is not a JSON path"),
    ("audit:\n  channels: [api.echo]\n  file: /x\n  max_body: 2GB\n", "audit.max_body"),
    ("audit:\n  channels: [api.echo]\n  file: /x\n  sink: kafka\n", "unknown key 'sink'"),
    ("audit:\n  channels: [api.echo]\n  file: /no/such/dir/audit.log\n", "cannot open audit log"),
])
def test_bad_audit_config_is_refused(start_gateway, monkeypatch, audit, message):
    monkeypatch.setenv("PT_TEST_AUDIT_KEY", KEY)
    with pytest.raises(RuntimeError, match=message):
        start_gateway(config(audit.replace("{", "{{").replace("}", "}}")))


def test_amqp_sink(start_gateway, monkeypatch, broker):
    """The audit log's AMQP sink publishes to the test broker."""
    from amqp_support import BROKER_URL, AmqpClient
    monkeypatch.setenv("PT_TEST_AUDIT_KEY", KEY)
    with AmqpClient() as a:
        a.exchange_declare("pt.audit.test", "topic", durable=False)
        a.queue_declare("pt.audit.test.q", durable=False)
        a.queue_purge("pt.audit.test.q")
        a.queue_bind("pt.audit.test.q", "pt.audit.test", "portico.#")
        audit = ("audit:\n  channels: [api.echo]\n  amqp: {outgoing: audit, exchange: "
                 "pt.audit.test, routing_key: portico.audit}\n  redact_json: [\"$..card\"]\n"
                 "outgoing:\n  amqp:\n    - name: audit\n      url: %s\n" % BROKER_URL)
        gw = start_gateway(config(audit.replace("{", "{{").replace("}", "}}")))
        deadline = time.time() + 10
        while time.time() < deadline and not value(scrape(gw), "portico_amqp_connections_up",
                                                    kind="outgoing", name="audit"):
            time.sleep(0.1)
        c = Http(gw.port)
        for i in range(3):
            assert c.post("/api/echo", {"i": i, "card": "SECRET"},
                          {"x-api-key": KEY, "Authorization": "Bearer SECRET"})[0] == 200
        deadline = time.time() + 10
        while time.time() < deadline and value(scrape(gw), "portico_audit_lines_total",
                                               result="written") < 3:
            time.sleep(0.1)
        assert value(scrape(gw), "portico_audit_lines_total", result="written") == 3
        msgs = a.drain("pt.audit.test.q")
        assert len(msgs) == 3
        lines = [json.loads(m.body) for m in msgs]
        assert [json.loads(l["request"]["body"])["i"] for l in lines] == [0, 1, 2]
        assert all(b"SECRET" not in m.body for m in msgs)
        assert msgs[0].props.get("content_type") == "application/json"
        a.queue_delete("pt.audit.test.q")
        a.exchange_delete("pt.audit.test")


def test_amqp_sink_needs_a_known_pool(start_gateway, monkeypatch):
    monkeypatch.setenv("PT_TEST_AUDIT_KEY", KEY)
    audit = "audit:\n  channels: [api.echo]\n  amqp: {outgoing: nope, exchange: x}\n"
    with pytest.raises(RuntimeError, match="no outgoing.amqp connection is called 'nope'"):
        start_gateway(config(audit.replace("{", "{{").replace("}", "}}")))


def test_audited_channels_follow_a_reload(start_gateway, monkeypatch, tmp_path):
    path = str(tmp_path / "audit.log")
    gw = start(start_gateway, monkeypatch, path)
    c = Http(gw.port)
    assert c.post("/api/quiet", {"n": 1})[0] == 200  # not audited yet
    text = open(gw.config).read()
    with open(gw.config, "w") as f:
        f.write(text.replace("channels: [api.echo]", "channels: [api.quiet]"))
    assert Http(gw.admin_port).request("POST", "/reload")[0] == 200
    assert c.post("/api/quiet", {"n": 2})[0] == 200
    assert c.post("/api/echo", {"n": 3}, {"x-api-key": KEY})[0] == 200
    assert c.post("/api/quiet", {"n": 4})[0] == 200  # one connection: lines in order
    lines = read_lines(path, 2)
    assert [(l["channel"], json.loads(l["request"]["body"])["n"]) for l in lines] == \
        [("api.quiet", 2), ("api.quiet", 4)]
    # the sink is fixed at the start: a new file is named, the running one stays
    with open(gw.config, "w") as f:
        f.write(text.replace(path, path + ".new"))
    assert Http(gw.admin_port).request("POST", "/reload")[0] == 200
    assert gw.log_has("take effect after a restart")
