"""The service toolkit: shared library modules (lua.lib_dirs) and their hot
reload under load, on_load(), the warning for a channel whose service a
reload took away, WebSocket services seeing the handshake's headers, and
`portico test` (busted) in a project outside the repository."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from amqp_support import ROOT
from conftest import BASE_CONFIG
from test_reload import Load
from test_websocket import WS_DIR, client, password_hash

BINARY = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

# test.version answers the version the library gives; shared.answer requires
# shared.base, so base.lua is a library of the service only transitively
SERVICE = """
local service = require "portico.service"
local answer = require "shared.answer"
local M = service.new { name = "test.version" }
function M:handle() self.response.payload = { version = answer.version() } end
return M
"""
ANSWER = """
local base = require "shared.base"
return { version = function() return base.version end }
"""


def write(path, text, atomic=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp" if atomic else path
    with open(tmp, "w") as f:
        f.write(text)
    if atomic:
        os.rename(tmp, path)


def write_base(tmp, version, atomic=False):
    write(os.path.join(tmp, "lib", "shared", "base.lua"),
          'return { version = "%s" }\n' % version, atomic)


def lib_gateway(start_gateway, tmp_path, extra_channels=""):
    """A gateway whose default lib dir ({tmp}/lib, beside {tmp}/services)
    holds shared.answer and shared.base; /api/version runs test.version."""
    tmp = str(tmp_path)
    write(os.path.join(tmp, "services", "test", "version.lua"), SERVICE)
    write(os.path.join(tmp, "lib", "shared", "answer.lua"), ANSWER)
    write_base(tmp, "v1")
    cfg = BASE_CONFIG.replace("gateway_service_list: [",
                              "gateway_service_list: [test.version, test.onload, ")
    cfg = cfg.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:")
    cfg = cfg.replace("  rest:\n", "  rest:\n    - name: api.version\n      url_path: /api/version\n"
                      "      methods: [POST]\n      service: test.version\n", 1)
    return start_gateway(cfg.rstrip("\n") + "\n" + extra_channels)


def version(gw):
    status, _, body = gw.http().post("/api/version", {})
    assert status == 200, body
    return json.loads(body)["version"]


def wait_version(gw, want, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        status, _, body = gw.http().post("/api/version", {})
        if status == 200 and json.loads(body)["version"] == want:
            break
        assert time.time() < deadline, "still not %s after %ss: %s" % (want, timeout, body)
        time.sleep(0.02)
    # every worker runs it: new connections land on either
    for _ in range(8):
        assert version(gw) == want


def test_service_uses_a_library_module(start_gateway, tmp_path):
    gw = lib_gateway(start_gateway, tmp_path)
    assert version(gw) == "v1"
    status, _, body = gw.http().post("/gateway/test.version", {})
    assert status == 200 and json.loads(body) == {"version": "v1"}
    # a library module is not a service
    assert gw.http().post("/gateway/shared.answer", {})[0] == 404


def test_library_edited_under_load_reloads_its_service_dropping_nothing(start_gateway, tmp_path):
    gw = lib_gateway(start_gateway, tmp_path)
    load = Load(gw, "/api/version")
    try:
        for i in range(20):
            write_base(str(tmp_path), "v2" if i % 2 == 0 else "v1", atomic=i % 3 == 0)
            time.sleep(0.2)
        write_base(str(tmp_path), "v3")
        assert gw.log_has("base.lua reloaded with the services that use it (1)")
        wait_version(gw, "v3")
    finally:
        load.stop()
    assert load.failures == []
    assert load.count > 100
    assert load.seen.get("v1", 0) > 0 and load.seen.get("v2", 0) > 0


def test_broken_library_keeps_the_old_version_and_logs(start_gateway, tmp_path):
    gw = lib_gateway(start_gateway, tmp_path)
    gw.expect_error("library .* refused")
    base = os.path.join(str(tmp_path), "lib", "shared", "base.lua")
    write_base(str(tmp_path), "v2")
    wait_version(gw, "v2")
    write(base, 'return { version = "broken"\n')
    assert gw.log_has("refused, the 1 services that use it keep their previous version")
    for _ in range(8):
        assert version(gw) == "v2"
    refused = [e for e in gw.log_lines("error") if "library" in e["msg"]]
    assert len(refused) == 1
    msg = refused[0]["msg"]
    # the service's require line, then the library's own file:line
    assert "version.lua:3: error loading module 'shared.base'" in msg
    assert base + ":2:" in msg
    # a library that throws at load time is refused the same way
    write(base, 'error("no config for the tax tables")\n')
    assert gw.log_has("no config for the tax tables")
    assert version(gw) == "v2"
    # a removed library too: the service keeps what it had
    os.remove(base)
    assert gw.log_has("module 'shared.base' not found")
    assert version(gw) == "v2"
    write_base(str(tmp_path), "v4")
    wait_version(gw, "v4")


ON_LOAD = """
local service = require "portico.service"
local host = require "portico.host"
local M = service.new { name = "test.onload" }
function M:on_load()
  self.worker = host.worker
  host.log("info", "on_load %s ran in worker " .. host.worker)
end
function M:handle() self.response.payload = { worker = self.worker } end
return M
"""


def test_on_load_runs_in_every_worker_and_its_error_fails_the_load(start_gateway, tmp_path):
    path = os.path.join(str(tmp_path), "services", "test", "onload.lua")
    write(path, ON_LOAD % "v1")
    gw = lib_gateway(start_gateway, tmp_path)
    gw.expect_error("service file refused")
    for w in (1, 2):  # workers: 2
        assert gw.log_has("on_load v1 ran in worker %d" % w)
    seen = set()
    deadline = time.time() + 5
    while seen != {1, 2} and time.time() < deadline:
        status, _, body = gw.http().post("/gateway/test.onload", {})
        assert status == 200
        seen.add(json.loads(body)["worker"])
    assert seen == {1, 2}
    # a reload runs it again, in each worker
    write(path, ON_LOAD % "v2")
    for w in (1, 2):
        assert gw.log_has("on_load v2 ran in worker %d" % w)
    # an error in on_load refuses the file like a syntax error; v2 serves on
    write(path, ON_LOAD.replace("self.worker = host.worker",
                                'error("cannot reach the rates table")') % "v3")
    assert gw.log_has("service file refused")
    refused = [e["msg"] for e in gw.log_lines("error") if "service file refused" in e["msg"]]
    assert len(refused) == 1 and path + ":6: cannot reach the rates table" in refused[0]
    assert "on_load v3" not in gw.log_text()
    assert gw.http().post("/gateway/test.onload", {})[0] == 200


def test_on_load_error_is_reported_by_check_and_at_start(tmp_path):
    tmp = str(tmp_path)
    svc = os.path.join(tmp, "services", "bad.lua")
    write(svc, 'local service = require "portico.service"\n'
               'local M = service.new { name = "t.bad" }\n'
               'function M:handle() end\n'
               'function M:on_load()\n  error("no database")\nend\n'
               'return M\n')
    cfg = os.path.join(tmp, "portico.yaml")
    write(cfg, "server: {listen: 127.0.0.1:1}\nlua: {path: %s/lua}\nservices: {dirs: [services]}\n"
          % ROOT)
    r = subprocess.run([BINARY, "--check", "-c", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "%s:5: no database" % svc in r.stderr
    r = subprocess.run([BINARY, "-c", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "%s:5: no database" % svc in r.stderr
    # on_load runs under the load's time budget
    write(svc, 'local service = require "portico.service"\n'
               'local M = service.new { name = "t.bad" }\n'
               'function M:handle() end\n'
               'function M:on_load()\n  while true do end\nend\n'
               'return M\n')
    write(cfg, "server: {listen: 127.0.0.1:1}\nlua: {path: %s/lua, load_timeout: 100ms}\n"
          "services: {dirs: [services]}\n" % ROOT)
    r = subprocess.run([BINARY, "--check", "-c", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "%s:5: still running after 100 ms of loading" % svc in r.stderr, r.stderr


def test_reload_that_removes_a_channels_service_warns_naming_the_channel(start_gateway,
                                                                         tmp_path):
    gw = lib_gateway(start_gateway, tmp_path)
    path = os.path.join(str(tmp_path), "services", "test", "version.lua")
    os.remove(path)
    assert gw.log_has("service file removed")
    warn = [e["msg"] for e in gw.log_lines("warn") if "no longer loaded" in e["msg"]]
    assert len(warn) == 1
    assert "channel 'api.version' runs service 'test.version'" in warn[0]
    assert path + " was removed" in warn[0]
    assert gw.http().post("/api/version", {})[0] == 404
    # back, then renamed inside the file: the same warning, with why
    write(path, SERVICE)
    wait_version(gw, "v1")
    write(path, SERVICE.replace('"test.version"', '"test.other"'))
    assert gw.log_has(path + " now names another service")
    warn = [e["msg"] for e in gw.log_lines("warn") if "no longer loaded" in e["msg"]]
    assert len(warn) == 2 and "channel 'api.version'" in warn[1]
    assert gw.http().post("/api/version", {})[0] == 404


WS_CHANNELS = """
  websocket:
    - name: ws.headers
      url_path: /ws-headers
      service: test.headers
    - name: ws.secure
      url_path: /ws-secure
      service: test.headers
      security: ws.users
"""

HEADERS_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "test.headers" }
function M:handle()
  local h = self.request.http.headers
  self.response.payload = { tenant = h["x-tenant"], both = h["x-both"],
                            auth = h["authorization"] or false, host = h["host"] }
end
return M
"""


@pytest.fixture(scope="module")
def ws_package():
    if not os.path.isdir(os.path.join(WS_DIR, "node_modules", "ws")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WS_DIR, check=True,
                       capture_output=True, timeout=300)


def test_websocket_service_sees_the_handshake_headers(start_gateway, tmp_path, ws_package):
    write(os.path.join(str(tmp_path), "services", "test", "headers.lua"), HEADERS_SERVICE)
    security = ("security:\n  basic_auth:\n    - name: ws.users\n      users:\n"
                "        - username: john.doe\n          password_hash: \"%s\"\n"
                % password_hash("secret"))
    cfg = BASE_CONFIG.replace("channels:\n", security + "channels:\n", 1)
    gw = start_gateway(cfg.rstrip("\n") + "\n" + WS_CHANNELS)
    res = client(gw, path="/ws-headers", headers={"X-Tenant": "acme", "X-Both": "a"},
                 send=[json.dumps({"n": 1}), json.dumps({"n": 2})], expect=2)
    replies = [json.loads(m) for m in res["messages"][0]]
    assert len(replies) == 2
    for r in replies:  # every message of the socket sees them
        assert r == {"tenant": "acme", "both": "a", "auth": False,
                     "host": "127.0.0.1:%d" % gw.port}
    # the credential that let the socket in stays in the host, as for REST
    res = client(gw, path="/ws-secure", headers={"Authorization": "Basic am9obi5kb2U6c2VjcmV0",
                                                 "X-Tenant": "beta"},
                 send=[json.dumps({})], expect=1)
    reply = json.loads(res["messages"][0][0])
    assert reply["tenant"] == "beta" and reply["auth"] is False


SPEC = """
local testing = require "portico.testing"
local money = require "money"

describe("a project's own service", function()
  it("uses its library, in busted as in the gateway", function()
    assert.equal("12.50 EUR", money.format(1250))
    local res = testing.call("services/price.lua", { input = { cents = 1250 } })
    assert.equal(200, res.status)
    assert.same({ price = "12.50 EUR" }, res.payload)
  end)
end)
"""

PRICE = """
local service = require "portico.service"
local money = require "money"
local M = service.new { name = "shop.price", input = { cents = "integer" } }
function M:handle() self.response.payload = { price = money.format(self.request.input.cents) } end
return M
"""

MONEY = """
local M = {}
function M.format(cents) return string.format("%d.%02d EUR", cents // 100, cents % 100) end
return M
""".replace("cents // 100", "math.floor(cents / 100)")


def test_portico_test_runs_busted_in_a_project_outside_the_repo():
    project = tempfile.mkdtemp(prefix="portico-project-")
    try:
        write(os.path.join(project, "services", "price.lua"), PRICE)
        write(os.path.join(project, "lib", "money.lua"), MONEY)
        write(os.path.join(project, "spec", "price_spec.lua"), SPEC)
        env = dict(os.environ)
        env.pop("LUA_PATH", None)
        # no config: portico's own library and ./lib
        r = subprocess.run([BINARY, "test"], cwd=project, capture_output=True, text=True,
                           timeout=120, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 success / 0 failures / 0 errors" in r.stdout
        # with the project's config: its lua.lib_dirs
        os.rename(os.path.join(project, "lib"), os.path.join(project, "shared"))
        write(os.path.join(project, "portico.yaml"),
              "lua:\n  lib_dirs: [shared]\nservices:\n  dirs: [services]\n")
        r = subprocess.run([BINARY, "test", "-c", "portico.yaml", "-o", "plainTerminal"],
                           cwd=project, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 success / 0 failures / 0 errors" in r.stdout
        # without it the library is not found, and busted says so
        r = subprocess.run([BINARY, "test"], cwd=project, capture_output=True, text=True,
                           timeout=120, env=env)
        assert r.returncode != 0 and "module 'money' not found" in r.stdout + r.stderr
        # a broken config is refused with its file:line
        write(os.path.join(project, "portico.yaml"), "lua:\n  lib_dirs: shared\n")
        r = subprocess.run([BINARY, "test", "-c", "portico.yaml"], cwd=project,
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 1 and "portico.yaml:2" in r.stderr
        assert "lua.lib_dirs: expected a list" in r.stderr
    finally:
        shutil.rmtree(project)


def test_lib_dirs_config_errors(tmp_path):
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "services"))
    cfg = os.path.join(tmp, "portico.yaml")
    for text, message in [
        ("lua: {lib_dirs: lib}\n", "lua.lib_dirs: expected a list"),
        ("lua: {lib_dirs: ['a;b']}\n", "'a;b' is empty or holds ';' or '?'"),
        ("lua: {lib_dirs: ['']}\n", "'' is empty or holds ';' or '?'"),
        ("lua: {lib_dirs: [x], lib_dir: [y]}\n", "lib_dir"),
    ]:
        write(cfg, "server: {listen: 127.0.0.1:1}\nservices: {dirs: [services]}\n" + text)
        r = subprocess.run([BINARY, "--check", "-c", cfg], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and message in r.stderr, (text, r.stderr)
        assert cfg + ":3" in r.stderr, r.stderr
    # a lib dir that is not there is fine (made nowhere by default)
    write(cfg, "server: {listen: 127.0.0.1:1}\nservices: {dirs: [services]}\n"
               "lua: {lib_dirs: [no-such-dir]}\n")
    r = subprocess.run([BINARY, "--check", "-c", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


SPIN_LIB = """
local M = {}
function M.spin()
  local n = 0
  while true do n = n + 1 end
end
return M
"""

SPIN_SERVICE = """
local service = require "portico.service"
local spin = require "busy.spin"
local M = service.new { name = "test.spin" }
function M:handle() spin.spin() end
return M
"""


def test_library_code_is_under_the_request_budget(start_gateway, tmp_path):
    # a loop in a library must stop like one in a service: the JIT compiles
    # neither, or the budget's hook would never run in it
    tmp = str(tmp_path)
    write(os.path.join(tmp, "lib", "busy", "spin.lua"), SPIN_LIB)
    write(os.path.join(tmp, "services", "test", "spin.lua"), SPIN_SERVICE)
    cfg = BASE_CONFIG.replace("gateway_service_list: [", "gateway_service_list: [test.spin, ")
    cfg = cfg.replace("lua:\n  path: {root}/lua\n",
                      "lua:\n  path: {root}/lua\n  request_timeout: 300ms\n")
    gw = start_gateway(cfg)
    gw.expect_error("ran for more than 300 ms without waiting")
    status, _, body = gw.http(timeout=20).post("/gateway/test.spin", {})
    assert status == 500, body
    assert gw.log_has("spin.lua:5: the request ran for more than 300 ms without waiting")
    assert gw.http().post("/gateway/demo.echo", {})[0] == 200
