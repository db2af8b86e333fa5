"""Metrics on the admin listener, health endpoints and the JSON access log."""
import json
import os
import signal
import time

from amqp_support import Http, scrape, value

def test_metrics_change_by_the_right_amounts(gw):
    before = scrape(gw)
    c = gw.http()
    for _ in range(7):
        assert c.post("/gateway/customer.get", {"customer_id": 123})[0] == 200
    for _ in range(3):
        assert c.post("/gateway/customer.get", {"customer_id": "x"})[0] == 400
    assert c.post("/api/echo", {})[0] == 200
    after = scrape(gw)
    ok = dict(channel="gateway", service="customer.get", status="200")
    bad = dict(channel="gateway", service="customer.get", status="400")
    assert value(after, "portico_requests_total", **ok) - \
        value(before, "portico_requests_total", **ok) == 7
    assert value(after, "portico_requests_total", **bad) - \
        value(before, "portico_requests_total", **bad) == 3
    count = value(after, "portico_request_duration_seconds_count",
                  channel="gateway", service="customer.get")
    inf = value(after, "portico_request_duration_seconds_bucket",
                channel="gateway", service="customer.get", le="+Inf")
    assert count == inf == value(before, "portico_request_duration_seconds_count",
                                 channel="gateway", service="customer.get") + 10
    # buckets are cumulative
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "portico_request_duration_seconds_bucket"
                     and dict(k[1]).get("service") == "customer.get"
                     and dict(k[1])["le"] != "+Inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert value(after, "portico_connections_open") >= 1
    assert value(after, "portico_workers") == 2


def test_reloads_are_counted(gw):
    before = scrape(gw)
    admin = Http(gw.admin_port)
    assert admin.request("POST", "/reload")[0] == 200
    after = scrape(gw)
    assert value(after, "portico_reloads_total") == value(before, "portico_reloads_total") + 1
    assert value(after, "portico_config_generation") == 2


def test_health_and_readiness(gw):
    admin = Http(gw.admin_port)
    s, _, b = admin.request("GET", "/healthz")
    assert s == 200 and json.loads(b) == {"status": "ok"}
    s, _, b = admin.request("GET", "/readyz")
    assert s == 200 and json.loads(b)["ready"] is True
    assert Http(gw.admin_port).request("GET", "/nope")[0] == 404
    assert Http(gw.admin_port).request("POST", "/metrics")[0] == 405
    # the admin paths are not on the public port
    assert gw.http().request("GET", "/metrics")[0] == 404


def test_access_log_one_line_per_request_no_secrets(start_gateway, tmp_path):
    log = tmp_path / "access.log"
    gw = start_gateway(access=str(log))
    c = gw.http()
    sent = [
        ("POST", "/gateway/customer.get?token=s3cr3t-query", {"customer_id": 123}, 200),
        ("POST", "/gateway/customer.get", {"customer_id": "x"}, 400),
        ("GET", "/no/such/path", None, 404),
        ("POST", "/api/echo", {"password": "hunter2"}, 200),
    ]
    cids = []
    for method, path, body, want in sent:
        s, h, _ = c.request(method, path, body, {"Authorization": "Basic am9objpodW50ZXIy"})
        assert s == want
        cids.append(h["x-correlation-id"])
    deadline = time.time() + 3
    while time.time() < deadline and len(log.read_text().splitlines()) < len(sent):
        time.sleep(0.05)
    text = log.read_text()
    lines = [json.loads(l) for l in text.splitlines()]
    assert len(lines) == len(sent)
    for line, (method, path, _, status), cid in zip(lines, sent, cids):
        assert set(line) == {"time", "cid", "channel", "service", "method", "path", "status",
                             "bytes", "duration_ms", "username", "client", "peer", "xff",
                             "user_agent", "query", "upstream", "upstream_ms"}
        assert line["cid"] == cid and line["method"] == method and line["status"] == status
        assert line["path"] == path.split("?")[0]
        assert isinstance(line["duration_ms"], float) and line["bytes"] > 0
    assert lines[0]["channel"] == "gateway" and lines[0]["service"] == "customer.get"
    assert lines[2]["channel"] is None
    for secret in ("s3cr3t", "hunter2", "am9objpodW50ZXIy", "Authorization"):
        assert secret not in text

    # rotation: move the file away, SIGUSR1, the next line goes to a new file
    os.rename(str(log), str(log) + ".1")
    gw.proc.proc.send_signal(signal.SIGUSR1)
    assert gw.log_has("access log reopened")
    assert c.post("/api/echo", {})[0] == 200
    deadline = time.time() + 3
    while time.time() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    assert len(log.read_text().splitlines()) == 1
    assert len(open(str(log) + ".1").read().splitlines()) == len(sent)
