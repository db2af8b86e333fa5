"""The host core over real sockets: channels, services, errors, HTTP/1.1."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

from amqp_support import ROOT
from conftest import parse_responses, recv_all

CUSTOMER = {"name": "John Doe", "email": "john.doe@example.com", "tier": "gold"}


def body_json(data):
    return json.loads(data.decode())


def test_customer_get_same_answer_on_every_path(gw):
    c = gw.http()
    h = {"x-portico-tenant": "acme"}
    s1, h1, b1 = c.post("/gateway/customer.get", {"customer_id": 123}, h)
    s2, _, b2 = c.post("/gateway/invoke?service=customer.get", {"customer_id": 123}, h)
    s3, _, b3 = c.post("/api/customer/get", {"customer_id": 123}, h)
    assert (s1, s2, s3) == (200, 200, 200)
    assert body_json(b1) == CUSTOMER
    assert b1 == b2 == b3
    assert h1["content-type"] == "application/json"


def test_correlation_id_echoed_or_made(gw):
    c = gw.http()
    _, h, _ = c.post("/api/echo", {}, {"x-correlation-id": "my-cid-1"})
    assert h["x-correlation-id"] == "my-cid-1"
    _, h2, b = c.post("/api/echo", {})
    assert len(h2["x-correlation-id"]) == 24 and h2["x-correlation-id"] != "my-cid-1"
    assert body_json(b)["cid"] == h2["x-correlation-id"]
    # an insane one (spaces) is replaced, never reflected
    _, h3, _ = c.post("/api/echo", {}, {"x-correlation-id": "a b<script>"})
    assert h3["x-correlation-id"] != "a b<script>"


def test_bad_json_is_400_with_cid(gw):
    s, h, b = gw.http().post("/gateway/customer.get", "{not json")
    assert s == 400
    err = body_json(b)["error"]
    assert err["status"] == 400 and err["message"].startswith("invalid JSON")
    assert err["cid"] == h["x-correlation-id"]


def test_schema_failure_names_the_field(gw):
    c = gw.http()
    s, _, b = c.post("/gateway/customer.get", {"customer_id": "abc"})
    assert s == 400
    assert body_json(b)["error"]["message"] == \
        "invalid input: customer_id: expected integer, got string"
    s, _, b = c.post("/gateway/customer.get", {})
    assert s == 400
    assert body_json(b)["error"]["message"] == "invalid input: customer_id: missing"


def test_unknown_customer_is_404(gw):
    s, _, b = gw.http().post("/api/customer/get", {"customer_id": 999})
    assert s == 404 and body_json(b)["error"]["message"] == "customer 999 not found"


def test_raising_handler_is_500_and_the_worker_keeps_serving(gw):
    gw.expect_error("deliberate failure")
    c = gw.http()
    for _ in range(4):  # both workers, same keep-alive connection
        s, h, b = c.post("/gateway/test.raise", {"fail": True})
        assert s == 500
        err = body_json(b)["error"]
        assert err["cid"] == h["x-correlation-id"]
        assert "secret" not in b.decode() and "traceback" not in b.decode()
        s, _, b = c.post("/gateway/test.raise", {})
        assert s == 200 and body_json(b) == {"ok": True}
    logged = [e for e in gw.log_lines("error") if "deliberate failure" in e["msg"]]
    assert len(logged) == 4 and all("traceback" in e["msg"] for e in logged)
    assert logged[0]["cid"]


def test_gateway_allowlist_unknown_and_methods(gw):
    c = gw.http()
    s, _, b = c.post("/gateway/no.such.service", {})
    assert s == 404 and "unknown service" in body_json(b)["error"]["message"]
    s, _, b = c.post("/gateway/customer.get-details", {"customer_id": 123})
    assert s == 403 and "allowlist" in body_json(b)["error"]["message"]
    s, _, b = c.post("/gateway/invoke?service=customer.get-details", {"customer_id": 123})
    assert s == 403
    s, h, _ = c.request("DELETE", "/gateway/customer.get")
    assert s == 405 and "POST" in h["allow"]
    s, _, _ = c.request("GET", "/api/customer/get")
    assert s == 405
    s, _, _ = c.post("/no/such/path", {})
    assert s == 404


def test_allowlist_holds_under_encodings(gw):
    c = gw.http()
    cases = {
        "/gateway/customer.get-details": 403,
        "/gateway/customer%2Eget-details": 403,
        "/gateway/Customer.get": 404,
        "/gateway/customer.get.x": 404,
        "/gateway/customer.get%2F..%2Fadmin": 400,
        "/gateway/customer.get/../admin": 400,
        "/gateway/..": 400,
        "/gateway/%2E%2E": 400,
        "/gateway/a%00b": 400,
        "/gateway/invoke?service=customer.get%2Fx": 400,
        "/gateway/invoke?service=customer.get-details": 403,
    }
    for path, want in cases.items():
        s, _, _ = c.post(path, {"customer_id": 123})
        assert s == want, path


def test_demo_echo_reports_what_it_got(gw):
    s, _, b = gw.http().request("PUT", "/api/echo?x=1&y=a+b", {"hello": "world"},
                                {"X-Custom": "Value"})
    assert s == 200
    got = body_json(b)
    assert got["payload"] == {"hello": "world"}
    assert got["channel"] == {"name": "api.echo", "type": "rest"}
    assert got["method"] == "PUT" and got["path"] == "/api/echo"
    assert got["query"] == {"x": "1", "y": "a b"}
    assert got["headers"]["x-custom"] == "Value"
    assert got.get("username") is None


def test_keep_alive_many_requests_one_socket(gw):
    s = gw.raw()
    for i in range(20):
        body = json.dumps({"i": i}).encode()
        s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        data = b""
        while b"\r\n\r\n" not in data or len(parse_responses(data)) < 1 or \
                len(parse_responses(data)[0][2]) < int(parse_responses(data)[0][1]["content-length"]):
            data += s.recv(65536)
        (status, _, rb), = parse_responses(data)
        assert status == 200 and body_json(rb)["payload"] == {"i": i}
    s.close()


def test_pipelined_requests_answered_in_order(gw):
    s = gw.raw()
    reqs = b""
    for i in range(10):
        body = json.dumps({"n": i}).encode()
        reqs += (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    s.sendall(reqs)
    data = b""
    deadline = time.time() + 5
    while len(parse_responses(data)) < 10 and time.time() < deadline:
        data += s.recv(65536)
    res = parse_responses(data)
    assert [r[0] for r in res] == [200] * 10
    assert [body_json(r[2])["payload"]["n"] for r in res] == list(range(10))
    s.close()


def test_chunked_request_body(gw):
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"6\r\n{\"a\": \r\n4\r\n\"b\"}\r\n0\r\n\r\n")
    (status, _, b), = parse_responses(recv_all(s, 1))
    assert status == 200 and body_json(b)["payload"] == {"a": "b"}


def test_expect_100_continue(gw):
    s = gw.raw()
    body = b'{"customer_id": 123}'
    s.sendall(b"POST /api/customer/get HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(body))
    first = s.recv(100)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body)
    (status, _, b), = parse_responses(recv_all(s, 1))
    assert status == 200 and body_json(b) == CUSTOMER


def test_head_has_headers_and_no_body(gw):
    s = gw.raw()
    s.sendall(b"HEAD /api/echo HTTP/1.1\r\nHost: t\r\n\r\nGET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    data = recv_all(s, 1)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in head and b"Content-Length: 0" not in head
    assert rest.startswith(b"HTTP/1.1 200"), "the HEAD answer carried a body"


def test_body_over_the_limit_is_413_and_the_server_stays_up(gw):
    s = gw.raw()
    big = b"x" * (2 * 1024 * 1024)
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big))
    try:
        s.sendall(big)
    except OSError:
        pass
    (status, h, b), = parse_responses(recv_all(s, 1))[:1]
    assert status == 413 and h["connection"] == "close"
    assert body_json(b)["error"]["status"] == 413
    # chunked, with no Content-Length to refuse up front
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(40):
            s.sendall(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
    except OSError:
        pass
    assert parse_responses(recv_all(s, 1))[0][0] == 413
    assert gw.http().post("/api/customer/get", {"customer_id": 123})[0] == 200


def test_headers_over_the_limit_are_431(gw):
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert parse_responses(recv_all(s, 1))[0][0] == 431
    assert gw.http().post("/api/echo", {})[0] == 200


def test_malformed_http_is_400_and_close(gw):
    for raw in (b"GARBAGE\r\n\r\n",
                b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
                b"GET /api/echo HTTP/9.9\r\n\r\n",
                b"POST /api/echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"):
        s = gw.raw()
        s.sendall(raw)
        data = recv_all(s, 1)
        res = parse_responses(data)
        assert res and res[0][0] == 400, (raw, data)
        assert res[0][1]["connection"] == "close"
        assert body_json(res[0][2])["error"]["status"] == 400
    assert gw.http().post("/api/echo", {})[0] == 200


def test_slow_headers_get_408_then_close(start_gateway):
    gw = start_gateway(header_timeout="1s")
    s = gw.raw()
    t0 = time.time()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n")
    data = recv_all(s, 5)
    took = time.time() - t0
    assert parse_responses(data)[0][0] == 408
    assert 0.8 < took < 4
    assert gw.http().post("/api/echo", {})[0] == 200


def test_idle_keep_alive_connection_is_closed(start_gateway):
    gw = start_gateway(idle_timeout="1s")
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    t0 = time.time()
    data = recv_all(s, 5)
    assert parse_responses(data)[0][0] == 200
    assert 0.8 < time.time() - t0 < 4, "the idle connection was not closed by the server"


def test_sigterm_drains_in_flight_requests(start_gateway):
    gw = start_gateway()
    result = {}

    def call():
        result["r"] = gw.http().post("/gateway/test.slow", {"seconds": 0.5})

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.15)
    gw.proc.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert result["r"][0] == 200
    assert gw.proc.proc.wait(5) == 0


def test_check_help_version(tmp_path):
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    run = lambda *a: subprocess.run([binary, *a], capture_output=True, text=True, timeout=30)
    r = run("--help")
    assert r.returncode == 0 and "usage: portico" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("portico ")
    r = run("--check", "-c", os.path.join(ROOT, "config", "portico.yaml"))
    assert r.returncode == 0, r.stderr

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("server:\n  listen: [oops\n")
    r = run("--check", "-c", str(bad_yaml))
    assert r.returncode == 1 and "bad.yaml:3: YAML error" in r.stderr

    bad_key = tmp_path / "key.yaml"
    bad_key.write_text("server:\n  listen: 127.0.0.1:1\n  wokers: 2\n")
    r = run("--check", "-c", str(bad_key))
    assert r.returncode == 1 and "key.yaml:3: server: unknown key 'wokers'" in r.stderr

    svc_dir = tmp_path / "svc"
    svc_dir.mkdir()
    (svc_dir / "broken.lua").write_text("local x = \nreturn {")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lua:\n  path: %s/lua\nservices:\n  dirs: [svc]\n" % ROOT)
    r = run("--check", "-c", str(broken))
    assert r.returncode == 1 and "broken.lua:2:" in r.stderr

    missing = tmp_path / "missing.yaml"
    missing.write_text("lua:\n  path: %s/lua\nservices:\n  dirs: [%s/services]\n"
                       "channels:\n  rest:\n    - name: x\n      url_path: /x\n"
                       "      service: no.such\n" % (ROOT, ROOT))
    r = run("--check", "-c", str(missing))
    assert r.returncode == 1 and "missing.yaml:7: channel 'x' runs service 'no.such'" in r.stderr


def test_curl_as_a_client(gw):
    curl = shutil.which("curl")
    assert curl, "curl is installed by scripts/install-deps"
    r = subprocess.run([curl, "-s", "-i", "-H", "x-portico-tenant: acme", "--data-binary",
                        '{"customer_id": 123}', "http://127.0.0.1:%d/gateway/customer.get"
                        % gw.port], capture_output=True, timeout=10)
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "X-Correlation-Id:" in head
    assert json.loads(body) == CUSTOMER
