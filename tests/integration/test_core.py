"""The host core over real sockets: channels, services, errors, HTTP/1.1."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

from amqp_support import ROOT
from conftest import parse_responses, read_until_close, recv_all

CUSTOMER = {"name": "John Doe", "email": "john.doe@example.com", "tier": "gold"}


def body_json(data):
    return json.loads(data.decode())


def assert_error(status, headers, body, want):
    """A JSON error answer: the status, the same status in the body, and the
    body's cid equal to the x-correlation-id header."""
    assert status == want, (status, body)
    assert headers["content-type"] == "application/json"
    err = body_json(body)["error"]
    assert err["status"] == want
    assert err["cid"] and err["cid"] == headers["x-correlation-id"]
    return err


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


def test_every_answer_has_a_correlation_id(gw):
    c = gw.http()
    cases = [("POST", "/gateway/customer.get", {"customer_id": 123}, 200),
             ("POST", "/gateway/customer.get", "{", 400),
             ("POST", "/gateway/customer.get-details", {"customer_id": 123}, 403),
             ("POST", "/gateway/nope", {}, 404),
             ("POST", "/no/such/path", {}, 404),
             ("DELETE", "/gateway/customer.get", None, 405)]
    seen = set()
    for method, path, body, want in cases:
        s, h, b = c.request(method, path, body)
        assert s == want, (method, path, b)
        assert len(h["x-correlation-id"]) >= 8, (method, path)
        seen.add(h["x-correlation-id"])
        # a sane cid sent by the caller comes back, on errors too
        s, h, b = c.request(method, path, body, {"x-correlation-id": "req-%d-%s" % (want, method)})
        assert s == want and h["x-correlation-id"] == "req-%d-%s" % (want, method)
        if want != 200:
            assert body_json(b)["error"]["cid"] == "req-%d-%s" % (want, method)
    assert len(seen) == len(cases), "made correlation ids repeat: %r" % seen
    # answers the HTTP layer makes on its own (parse error, limits) carry one as well
    for raw, want in ((b"GARBAGE\r\n\r\n", 400),
                      (b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 +
                       b"\r\n\r\n", 431),
                      (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n",
                       413)):
        s = gw.raw()
        s.sendall(raw)
        (status, h, b), = parse_responses(read_until_close(s)[0])
        assert_error(status, h, b, want)


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
        err = assert_error(s, h, b, 500)
        cid = err["cid"]
        assert "secret" not in b.decode() and "traceback" not in b.decode()
        s, _, b = c.post("/gateway/test.raise", {})
        assert s == 200 and body_json(b) == {"ok": True}
    logged = [e for e in gw.log_lines("error") if "deliberate failure" in e["msg"]]
    assert len(logged) == 4 and all("traceback" in e["msg"] for e in logged)
    assert logged[-1]["cid"] == cid  # the log line names the failed request


def test_gateway_allowlist_unknown_and_methods(gw):
    c = gw.http()
    s, h, b = c.post("/gateway/no.such.service", {})
    assert "unknown service" in assert_error(s, h, b, 404)["message"]
    s, h, b = c.post("/gateway/customer.get-details", {"customer_id": 123})
    assert "allowlist" in assert_error(s, h, b, 403)["message"]
    s, h, b = c.post("/gateway/invoke?service=customer.get-details", {"customer_id": 123})
    assert_error(s, h, b, 403)
    s, h, b = c.post("/gateway/invoke?service=no.such.service", {})
    assert_error(s, h, b, 404)
    s, h, b = c.request("DELETE", "/gateway/customer.get")
    assert_error(s, h, b, 405)
    assert sorted(m.strip() for m in h["allow"].split(",")) == ["GET", "HEAD", "POST"]
    s, h, b = c.request("GET", "/api/customer/get")
    assert_error(s, h, b, 405)
    assert [m.strip() for m in h["allow"].split(",")] == ["POST"]
    s, h, b = c.post("/no/such/path", {})
    assert_error(s, h, b, 404)
    s, h, b = c.post("/gateway", {})
    assert_error(s, h, b, 404)
    # GET is a method of the gateway channel too: the input comes from the body
    s, _, b = c.request("GET", "/gateway/customer.get", {"customer_id": 456})
    assert s == 200 and body_json(b)["name"] == "Jane Roe"


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
    assert got["headers"]["host"] == "127.0.0.1:%d" % gw.port
    assert got.get("username") is None


def test_demo_echo_over_the_gateway_channel(gw):
    s, _, b = gw.http().request("GET", "/gateway/demo.echo?a=1", None,
                                {"X-Repeat": "one", "x-portico-tenant": "acme"})
    assert s == 200
    got = body_json(b)
    assert got["channel"] == {"name": "gateway", "type": "gateway"}
    assert got["method"] == "GET" and got["path"] == "/gateway/demo.echo"
    assert got["query"] == {"a": "1"}
    assert got["headers"]["x-repeat"] == "one" and got["headers"]["x-portico-tenant"] == "acme"
    assert got.get("username") is None
    assert got.get("payload") is None


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


def test_expect_100_continue_over_the_limit_is_413_without_100(gw):
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n"
              b"Expect: 100-continue\r\n\r\n")
    data, closed = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert closed


def test_head_has_headers_and_no_body(gw):
    s = gw.raw()
    s.sendall(b"HEAD /api/echo HTTP/1.1\r\nHost: t\r\n\r\nGET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    data = recv_all(s, 1)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in head and b"Content-Length: 0" not in head
    assert b"X-Correlation-Id: " in head and b"Content-Type: application/json" in head
    assert rest.startswith(b"HTTP/1.1 200"), "the HEAD answer carried a body"


def test_body_over_the_limit_is_413_and_the_server_stays_up(gw):
    s = gw.raw()
    big = b"x" * (2 * 1024 * 1024)
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big))
    try:
        s.sendall(big)
    except OSError:
        pass
    data, closed = read_until_close(s)
    (status, h, b), = parse_responses(data)
    assert_error(status, h, b, 413)
    assert h["connection"] == "close" and closed
    # chunked, with no Content-Length to refuse up front
    s = gw.raw()
    s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(40):
            s.sendall(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
    except OSError:
        pass
    data, closed = read_until_close(s)
    assert parse_responses(data)[0][0] == 413 and closed
    s, _, b = gw.http().post("/api/customer/get", {"customer_id": 123})
    assert s == 200 and body_json(b) == CUSTOMER
    # exactly at the limit is fine
    body = json.dumps({"pad": "z" * (1024 * 1024 - 11)})
    assert len(body) == 1024 * 1024
    s, _, b = gw.http().post("/api/echo", body)
    assert s == 200 and len(body_json(b)["payload"]["pad"]) == 1024 * 1024 - 11


def test_headers_over_the_limit_are_431(gw):
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    data, closed = read_until_close(s)
    (status, h, b), = parse_responses(data)
    assert_error(status, h, b, 431)
    assert h["connection"] == "close" and closed
    # many small headers count too
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n" +
              b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(400)) + b"\r\n")
    data, closed = read_until_close(s)
    assert parse_responses(data)[0][0] == 431 and closed
    # headers under the limit are fine
    s, _, b = gw.http().request("GET", "/api/echo", None, {"X-Big": "a" * 8000})
    assert s == 200 and body_json(b)["headers"]["x-big"] == "a" * 8000


def test_malformed_http_is_400_and_close(gw):
    for raw in (b"GARBAGE\r\n\r\n",
                b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /api/echo HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
                b"GET /api/echo HTTP/1.x\r\n\r\n",
                b"POST /api/echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"):
        s = gw.raw()
        s.sendall(raw)
        data, closed = read_until_close(s)
        res = parse_responses(data)
        assert len(res) == 1 and res[0][0] == 400, (raw, data)
        assert_error(*res[0], 400)
        assert res[0][1]["connection"] == "close" and closed, raw
    assert gw.http().post("/api/echo", {})[0] == 200


def test_slow_headers_get_408_then_close(start_gateway):
    gw = start_gateway(header_timeout="1s")
    s = gw.raw()
    t0 = time.time()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n")
    data, closed = read_until_close(s, 5)
    took = time.time() - t0
    (status, h, b), = parse_responses(data)
    assert_error(status, h, b, 408)
    assert closed and 0.8 < took < 4, took
    assert gw.http().post("/api/echo", {})[0] == 200


def test_idle_keep_alive_connection_is_closed(start_gateway):
    gw = start_gateway(idle_timeout="1s")
    s = gw.raw()
    s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    t0 = time.time()
    data, closed = read_until_close(s, 5)
    assert [r[0] for r in parse_responses(data)] == [200]
    assert closed and 0.8 < time.time() - t0 < 4, "the idle connection was not closed"


def test_sigterm_drains_in_flight_requests(start_gateway):
    gw = start_gateway()
    result = {}

    def call():
        result["r"] = gw.http().post("/gateway/test.slow", {"seconds": 0.5})

    t = threading.Thread(target=call)
    t.start()
    assert gw.log_has("slow: started"), "the slow request never reached its handler"
    t0 = time.time()
    gw.proc.proc.send_signal(signal.SIGTERM)
    t.join(5)
    s, _, b = result["r"]
    assert s == 200 and body_json(b) == {"slept": True}
    assert gw.proc.proc.wait(5) == 0
    assert time.time() - t0 < 3, "exit waited for more than the request in flight"


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

    bad_type = tmp_path / "type.yaml"
    bad_type.write_text("server:\n  listen: 127.0.0.1:1\n  header_timeout: soon\n")
    r = run("--check", "-c", str(bad_type))
    assert r.returncode == 1 and "type.yaml:3: server.header_timeout" in r.stderr

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


def test_connection_limit(start_gateway):
    from conftest import BASE_CONFIG
    cfg = BASE_CONFIG.replace("workers: 2", "workers: 1\n  max_connections: 2")
    gw = start_gateway(cfg)
    time.sleep(0.3)  # the fixture's readiness probe connection must be gone first
    a, b = gw.raw(), gw.raw()
    for s in (a, b):
        s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    c = gw.raw()
    c.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_until_close(c, 3) == (b"", True), "a third connection was served past the limit"
    a.close()
    time.sleep(0.2)
    d = gw.raw()
    d.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert d.recv(100).startswith(b"HTTP/1.1 200")
    assert any("connection refused" in e["msg"] for e in gw.log_lines("warn"))
