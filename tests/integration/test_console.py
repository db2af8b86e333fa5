"""The admin console (docs/console.md): the page in headless Chromium (Debian's
chromium, driven over the DevTools protocol by console/drive.js), its JSON
endpoints, its credentials (admin.users) and the CSRF checks of POST."""
import base64
import json
import os
import socket
import subprocess
import shutil

import pytest

from amqp_support import ROOT, Http, free_port
from test_websocket import ws_package  # noqa: F401 (npm ci of tests/integration/ws)

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
DRIVER = os.path.join(os.path.dirname(__file__), "console", "drive.js")
ADMIN = ("ops", "console-pass")
JOHN = ("john", "john-pass")

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  workers: 2
admin:
  listen: 127.0.0.1:{admin_port}
  users:
    - username: ops
      password_hash: "{admin_hash}"
log:
  level: info
lua:
  path: {root}/lua
services:
  dirs: [{root}/services, {tmp}/services]
security:
  basic_auth:
    - name: api.users
      realm: portico
      users:
        - username: john
          password_hash: "{john_hash}"
outgoing:
  amqp:
    - name: orders-out
      url: amqp://guest:guest@127.0.0.1:{amqp_port}/
channels:
  rest:
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST]
      service: demo.echo
      security: api.users
      rate_limit: {{rate: 100/s, burst: 50}}
    - name: api.raise
      url_path: /api/raise
      methods: [POST]
      service: test.raise
  websocket:
    - name: ws
      url_path: /ws
      service: demo.echo
  http_proxy:
    - name: svc
      url_prefix: /svc
      connect_timeout: 1s
      services:
        down:
          targets: [http://127.0.0.1:{dead_port}]
scheduler:
  jobs:
    - name: hourly-echo
      service: demo.echo
      every: 1h
"""


def hash_of(secret):
    r = subprocess.run([BIN, "hash-password"], input=secret.encode(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


@pytest.fixture(scope="module")
def hashes():
    return {"admin_hash": hash_of(ADMIN[1]), "john_hash": hash_of(JOHN[1])}


@pytest.fixture
def cgw(start_gateway, hashes):
    gw = start_gateway(CONFIG, dead_port=free_port(), amqp_port=free_port(), **hashes)
    # on purpose: the broker of outgoing.amqp is not there, test.raise fails,
    # the proxied target is down
    gw.expect_error(r"(?i)amqp|broker|connect")
    gw.expect_error(r"deliberate failure")
    gw.expect_error(r"(?i)target|upstream|refused")
    return gw


def admin(gw, auth=ADMIN):
    return Http(gw.admin_port, auth=auth)


SAMPLE_OPENAPI = {
    "openapi": "3.1.0", "info": {"title": "sample", "version": "1"},
    "paths": {"/api/echo": {"post": {
        "summary": "Echo", "operationId": "demo.echo", "security": [{"api.users": []}],
        "parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"}}],
        "requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/EchoIn"}}}},
        "responses": {
            "200": {"description": "echoed", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"payload": {"type": "object"}}}}}},
            "401": {"description": "no credentials", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}}}}},
    "components": {"schemas": {
        "EchoIn": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 10},
            "tags": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "note": {"type": ["string", "null"]}}},
        "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "status": {"type": "integer"}, "message": {"type": "string"}}}}}}},
}


def browse(gw, tmp_path, auth=ADMIN, try_req=None):
    assert shutil.which("chromium"), "chromium is installed by scripts/install-deps"
    env = dict(os.environ, PT_OPENAPI=json.dumps(SAMPLE_OPENAPI))
    if try_req:
        env["PT_TRY"] = json.dumps(try_req)
    args = ["node", DRIVER, "http://127.0.0.1:%d/" % gw.admin_port, str(tmp_path)]
    if auth:
        args.append("%s:%s" % auth)
    r = subprocess.run(args, capture_output=True, text=True, timeout=100, env=env)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    assert r.returncode == 0, (r.stdout, r.stderr)
    return out


def known_requests(gw):
    """3 answered echoes, 2 failures of test.raise, 1 request to a dead target."""
    c = gw.http(auth=JOHN)
    for i in range(3):
        st, _, _ = c.post("/api/echo", {"n": i})
        assert st == 200
    for _ in range(2):
        st, _, _ = c.post("/api/raise", {"fail": True})
        assert st == 500
    st, _, _ = c.request("GET", "/svc/down/x")
    assert st == 502
    c.close()


def open_websocket(gw):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def rows(text, first):
    """The tab-separated table rows of a section's text whose first cell is first."""
    return [line.split("\t") for line in text.splitlines() if line.split("\t")[0] == first]


def test_console_in_chromium_shows_the_config_and_traffic_and_reloads(cgw, tmp_path):
    known_requests(cgw)
    ws = open_websocket(cgw)
    try:
        out = browse(cgw, tmp_path, try_req={
            "method": "POST", "path": "/api/echo", "body": '{"from":"explorer"}',
            "headers": {"Content-Type": "application/json",
                        "Authorization": "Basic " + base64.b64encode(b"john:john-pass").decode()}})
    finally:
        ws.close()
    assert out["status"] == 200
    s = out["before"]
    assert "generation 1" in s["summary"] and "2 workers" in s["summary"]
    assert "127.0.0.1:%d" % cgw.port in s["summary"]
    # channels with their security and limits
    echo = rows(s["channels"], "api.echo")[0]
    assert echo[1:5] == ["rest", "/api/echo", "GET HEAD POST", "demo.echo"], echo
    assert echo[5] == "api.users (basic_auth)" and echo[6].startswith("100/s, burst 50"), echo
    assert rows(s["channels"], "api.raise")[0][5] == "open"
    assert rows(s["channels"], "svc")[0][1] == "http_proxy"
    # services: file, version, load time; no error
    echo_svc = rows(s["services"], "demo.echo")[0]
    assert echo_svc[1] == os.path.join(ROOT, "services", "demo", "echo.lua")
    assert len(echo_svc[2]) == 16 and echo_svc[3].endswith("Z") and echo_svc[4] == "–"
    assert rows(s["services"], "test.raise")[0][1].endswith("test/raise.lua")
    # traffic from the same counters as /metrics
    t = s["traffic"]
    ch = {line.split("\t")[0]: line.split("\t") for line in t.splitlines()}
    assert ch["api.echo"][2:5] == ["3", "0", "0.0 %"], t
    assert ch["api.raise"][2:5] == ["2", "2", "100.0 %"], t
    assert ch["demo.echo"][2] == "3" and ch["test.raise"][3] == "2", t
    assert ch["api.echo"][5].endswith(" ms") and ch["api.echo"][6].endswith(" ms"), t
    # upstream targets with their health
    down = rows(s["upstreams"], "down")[0]
    assert down[2:] == ["failing", "0", "1"] or down[2:] == ["failing", "0", "2"], down
    # AMQP: the configured connection, not up (no broker on that port)
    amqp = rows(s["amqp"], "outgoing")[0]
    assert amqp[1] == "orders-out" and "127.0.0.1" in amqp[2] and "guest:" not in amqp[2]
    assert amqp[3] in ("0", "not started"), amqp
    # WebSocket: the one the test holds open
    assert "1 open now" in s["websockets"], s["websockets"]
    # scheduled jobs
    job = rows(s["scheduler"], "hourly-echo")[0]
    assert job[1] == "demo.echo" and "1h" in job[2] and job[3].startswith("next "), job
    # the reload button: an accepted admin reload is the newest entry
    assert "no reload since the start" in s["reloads"]
    assert out["reloadResult"] == "accepted: generation 2"
    first = out["firstReload"].split("\t")
    assert first[1:5] == ["admin", "config", "accepted", "2"], first
    # the explorer: the description when /openapi.json exists, else the notice
    st, _, _ = admin(cgw).request("GET", "/openapi.json")
    if st == 404:
        assert out["explorer"]["status"].startswith("no API description")
    else:
        assert out["explorer"]["operations"] > 0 and "/api/echo" in out["explorer"]["text"]
    # the renderer itself, on a known OpenAPI 3.1 document
    r = out["rendered"]
    assert r["operations"] == 1 and "OpenAPI 3.1.0" in r["status"], r
    text = r["text"]
    for piece in ["POST", "/api/echo", "Echo", "api.users", "verbose (query): boolean",
                  "name: string (maxLength 10)", "tags?: array of integer (minimum 0)",
                  "note?: string | null", "Response 200", "Response 401", "message?: string"]:
        assert piece in text, (piece, text)
    # the request sent from the explorer went through the public listener
    assert out["tried"].startswith("HTTP 200"), out["tried"]
    assert '"from":"explorer"' in out["tried"].replace(" ", "")
    assert '"username": "john"' in out["tried"]  # pretty-printed JSON
    assert out["violations"] == [], out["violations"]
    assert os.path.getsize(out["shot"]) > 10000


def test_console_refuses_without_admin_credentials(cgw, tmp_path):
    out = browse(cgw, tmp_path, auth=None)
    assert out["status"] == 401 and "portico console" not in out["title"]
    assert "Channels" not in out["text"]  # Chromium shows its sign-in prompt, no console
    for path in ["/", "/console/console.js", "/console/api/state", "/console/api/stats",
                 "/console/api/try", "/scheduler"]:
        st, h, body = admin(cgw, auth=None).request("GET", path)
        assert st == 401, path
        assert h["www-authenticate"].startswith("Basic realm=\"portico admin\"")
        assert json.loads(body)["error"]["message"] == "admin credentials required"
    # wrong ones (each an argon2id run: fewer than PT_ADMIN_AUTH_PER_SEC, or 429)
    st, _, body = admin(cgw, auth=("ops", "wrong")).request("GET", "/console/api/state")
    assert st == 401 and b"wrong admin credentials" in body
    st, _, body = admin(cgw, auth=("nobody", "x")).request("GET", "/")
    assert st == 401 and b"wrong admin credentials" in body
    st, _, body = admin(cgw, auth=None).request("GET", "/", headers={"Authorization": "Bearer x"})
    assert st == 401 and b"must be HTTP basic" in body
    st, _, body = admin(cgw, auth=None).request("GET", "/", headers={"Authorization": "Basic !!!"})
    assert st == 401 and b"malformed basic credentials" in body
    st, _, _ = admin(cgw, auth=None).request("POST", "/reload",
                                             headers={"X-Portico-Console": "1"})
    assert st == 401
    # a header the gate reads, twice: refused before any check
    tok = base64.b64encode(("%s:%s" % ADMIN).encode()).decode()
    s = socket.create_connection(("127.0.0.1", cgw.admin_port), timeout=5)
    s.sendall(("GET /console/api/state HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"
               "Authorization: Basic %s\r\n\r\n" % (tok, tok)).encode())
    answer = b""
    while True:
        data = s.recv(4096)
        if not data:
            break
        answer += data
    s.close()
    assert answer.startswith(b"HTTP/1.1 400") and b"came twice" in answer, answer
    # the probes stay open (admin.open_probes defaults to true)
    for path in ["/healthz", "/readyz", "/metrics"]:
        st, _, _ = admin(cgw, auth=None).request("GET", path)
        assert st == 200, path


def test_closed_probes_need_credentials(start_gateway, hashes):
    gw = start_gateway(CONFIG.replace("  users:\n", "  open_probes: false\n  users:\n", 1),
                       dead_port=free_port(), amqp_port=free_port(), **hashes)
    gw.expect_error(r"(?i)amqp|broker|connect")
    for path in ["/healthz", "/readyz", "/metrics"]:
        st, _, _ = admin(gw, auth=None).request("GET", path)
        assert st == 401, path
        st, _, _ = admin(gw).request("GET", path)
        assert st == 200, path


def test_console_json_endpoints(cgw):
    known_requests(cgw)
    c = admin(cgw)
    st, h, body = c.request("GET", "/console/api/state")
    assert st == 200 and h["cache-control"] == "no-store"
    state = json.loads(body)
    names = {ch["name"]: ch for ch in state["channels"]}
    assert names["api.echo"]["security"] == {"name": "api.users", "kind": "basic_auth"}
    assert names["api.echo"]["rate_limit"] == {"rate": 100, "burst": 50, "per_user": False}
    assert state["upstreams"][0]["targets"][0].startswith("127.0.0.1:")
    assert state["amqp"][0]["broker"].startswith("amqp://guest@127.0.0.1:")  # no password
    st, _, body = admin(cgw).request("GET", "/console/api/stats")
    stats = json.loads(body)
    series = {(r["channel"], r["status"]): r for r in stats["requests"]}
    assert series[("api.echo", 200)]["count"] == 3 and series[("api.raise", 500)]["count"] == 2
    assert sum(series[("api.echo", 200)]["buckets"]) == 3
    assert len(stats["bounds_us"]) == len(series[("api.echo", 200)]["buckets"])
    assert any(t["upstream"] == "down" and not t["ok"] for t in stats["targets"])
    # the same figure as /metrics
    st, _, text = admin(cgw).request("GET", "/metrics")
    assert ('portico_requests_total{channel="api.echo",service="demo.echo",status="200"} 3'
            in text.decode())
    # the files: a strict CSP, and nothing but the console's own files
    st, h, body = admin(cgw).request("GET", "/")
    assert st == 200 and h["content-type"].startswith("text/html")
    assert "default-src 'none'" in h["content-security-policy"]
    assert "script-src 'self'" in h["content-security-policy"]
    assert b"<script>" not in body and b"http://" not in body and b"https://" not in body
    for path in ["/console/nope.js", "/console/../pt_admin.c", "/console/api/nope"]:
        st, _, _ = admin(cgw).request("GET", path)
        assert st == 404, path
    st, _, _ = admin(cgw).request("POST", "/console/api/state", headers={"X-Portico-Console": "1"})
    assert st == 405


def test_services_show_a_refused_file_then_its_fix(start_gateway, hashes):
    gw = start_gateway(CONFIG.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:"),
                       dead_port=free_port(), amqp_port=free_port(), **hashes)
    gw.expect_error(r"(?i)amqp|broker|connect")
    gw.expect_error("service file refused")
    path = os.path.join(gw.tmp, "services", "test", "raise.lua")

    def record():
        st, _, body = admin(gw).request("GET", "/console/api/state")
        state = json.loads(body)
        return [f for f in state["services"] if f["file"] == path][0], state["reloads"]

    first, _ = record()
    assert first["service"] == "test.raise" and first["error"] is None
    with open(path, "a") as f:
        f.write("\nthis is not lua\n")
    assert gw.log_has("service file refused", timeout=10)
    broken, reloads = record()
    assert broken["hash"] == first["hash"] and broken["loaded_ms"] == first["loaded_ms"]
    assert "raise.lua" in broken["error"] and broken["error_ms"] >= first["loaded_ms"]
    assert reloads[0]["source"] == "file" and reloads[0]["what"] == path
    assert reloads[0]["accepted"] is False and reloads[0]["error"]
    with open(path, "w") as f:
        f.write('local M = require("portico.service").new { name = "test.raise" }\n'
                'function M:handle() self.response.payload = {fixed = true} end\nreturn M\n')
    assert gw.log_has("service file loaded: " + path, timeout=10)
    fixed, reloads = record()
    assert fixed["error"] is None and fixed["hash"] != first["hash"]
    assert fixed["loaded_ms"] >= first["loaded_ms"]
    assert reloads[0]["accepted"] is True and reloads[0]["what"] == path


def test_reload_csrf_checks(cgw):
    c = lambda: admin(cgw)  # noqa: E731 (one request a connection)
    st, _, body = c().request("POST", "/reload")
    assert st == 403 and b"X-Portico-Console: 1" in body
    st, _, body = c().request("POST", "/reload", headers={
        "X-Portico-Console": "1", "Origin": "http://evil.example"})
    assert st == 403 and b"cross-origin" in body
    st, _, body = c().request("POST", "/reload", headers={
        "X-Portico-Console": "1", "Sec-Fetch-Site": "cross-site"})
    assert st == 403 and b"cross-site" in body
    st, _, body = c().request("POST", "/reload", headers={
        "X-Portico-Console": "1", "Origin": "http://127.0.0.1:%d" % cgw.admin_port,
        "Sec-Fetch-Site": "same-origin"})
    assert st == 200 and json.loads(body) == {"accepted": True, "generation": 2}
    # refused reloads are kept too, with why
    with open(cgw.config, "a") as f:
        f.write("bogus_key: 1\n")
    st, _, body = c().request("POST", "/reload", headers={"X-Portico-Console": "1"})
    assert st == 422
    cgw.expect_error("config reload refused")
    st, _, body = c().request("GET", "/console/api/state")
    reloads = json.loads(body)["reloads"]
    assert [r["accepted"] for r in reloads] == [False, True]
    assert reloads[0]["source"] == "admin" and "bogus_key" in reloads[0]["error"]


def test_portico_reload_command_with_admin_users(cgw):
    env = dict(os.environ)
    env.pop("PORTICO_ADMIN_AUTH", None)
    r = subprocess.run([BIN, "reload", "-c", cgw.config], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 1 and "admin credentials required" in r.stdout, (r.stdout, r.stderr)
    env["PORTICO_ADMIN_AUTH"] = "%s:%s" % ADMIN
    r = subprocess.run([BIN, "reload", "-c", cgw.config], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 0 and '"accepted":true' in r.stdout, (r.stdout, r.stderr)


def test_explorer_sends_only_to_the_public_listener(cgw):
    def try_(req, csrf=True):
        return admin(cgw).request("POST", "/console/api/try", body=json.dumps(req), headers=dict(
            {"Content-Type": "application/json"}, **({"X-Portico-Console": "1"} if csrf else {})))
    st, _, body = try_({"method": "GET", "path": "/api/echo"})
    answer = json.loads(body)
    assert st == 200 and answer["status"] == 401  # the channel's own security applies
    assert answer["headers"]["www-authenticate"].startswith("Basic realm=\"portico\"")
    for req, why in [
            ({"method": "GET", "path": "http://example.com/"}, b"starting with '/'"),
            ({"method": "GET", "path": "//example.com/x", "headers": {"Host": "example.com"}},
             b"sets itself"),
            ({"method": "CONNECT", "path": "/"}, b"method"),
            ({"method": "GET", "path": "/a b"}, b"visible ASCII"),
            ({"method": "GET", "path": "/", "headers": {"X-A": "1\r\nX-B: 2"}}, b"control byte"),
            ({"method": "GET", "path": "/", "headers": {"Bad Name": "1"}}, b"no token"),
            ({"method": "GET", "path": "/", "body": 5}, b"body"),
            ([1, 2], b"JSON object")]:
        st, _, body = try_(req)
        assert st == 400 and why in body, (req, body)
    st, _, body = try_({"method": "GET", "path": "/api/echo"}, csrf=False)
    assert st == 403
    st, _, _ = admin(cgw, auth=None).request("POST", "/console/api/try", body="{}",
                                              headers={"X-Portico-Console": "1"})
    assert st == 401


def test_admin_users_config_errors(tmp_path):
    cases = [
        ("users: {ops: x}", "admin.users: expected a list"),
        ("users: [{username: ops}]", "username and password_hash are required"),
        ("users: [{username: ops, password_hash: plain}]", "expected an argon2id hash"),
        ("users: [{username: 'a:b', password_hash: '$argon2id$x'}]", "without ':'"),
        ("users: [{username: ops, password_hash: '$argon2id$x'}, "
         "{username: ops, password_hash: '$argon2id$y'}]", "listed twice"),
        ("users: [{username: ops, password_hash: '$argon2id$x', role: admin}]", "unknown key"),
        ("open_probes: maybe", "admin.open_probes"),
    ]
    for text, message in cases:
        cfg = tmp_path / "p.yaml"
        cfg.write_text("server:\n  listen: 127.0.0.1:1\nadmin:\n  listen: 127.0.0.1:2\n  %s\n"
                       "lua:\n  path: %s/lua\nservices:\n  dirs: [%s/services]\n"
                       % (text, ROOT, ROOT))
        r = subprocess.run([BIN, "--check", "-c", str(cfg)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0 and message in r.stderr, (text, r.stderr)
        assert "p.yaml:5" in r.stderr or "p.yaml:" in r.stderr
