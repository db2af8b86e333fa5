"""The Lua gate: request bodies are JSON by RFC 8259 and nothing more, every
JSON answer is UTF-8, and a service file can never take the gateway down
(a loop at load time is refused after lua.load_timeout, os.exit and the other
process-level calls raise)."""
import json
import os
import re
import signal
import subprocess
import textwrap
import time

import pytest

from amqp_support import ROOT, Http
from conftest import config_head
from test_amqp import Q_DEAD, Q_IN, Q_REPLIES, amqp, lab  # noqa: F401 (fixtures)

SERVICES = {
    "gate/answers.lua": r"""
        -- answers what the test asks for in the body's "kind"
        local service = require "portico.service"
        local M = service.new { name = "gate.answers" }
        function M:handle()
          local kind = (self.request.payload or {}).kind
          if kind == "latin1" then
            self.response.payload = { name = "caf\233" }          -- not UTF-8
          elseif kind == "surrogate" then
            self.response.payload = { name = "\237\160\128" }     -- U+D800 in UTF-8 form
          elseif kind == "nan" then
            self.response.payload = { x = 0 / 0 }
          elseif kind == "inf" then
            self.response.payload = { x = math.huge }
          elseif kind == "error" then
            self:error(422, "no customer named caf\233")
          elseif kind == "exit" then
            os.exit(3)
          elseif kind == "execute" then
            os.execute("true")
          elseif kind == "popen" then
            io.popen("true")
          else
            self.response.payload = { ok = true }
          end
        end
        return M
    """,
}

GATE_CONFIG = config_head("workers: 2", dirs="{root}/services, {tmp}/services") + """channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [demo.echo, gate.answers, test.version]
"""

VERSION = """
local service = require "portico.service"
local M = service.new { name = "test.version" }
function M:handle() self.response.payload = { version = "%s" } end
%s
return M
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(textwrap.dedent(text))
    os.rename(tmp, path)


def gate(start_gateway, tmp_path, load_timeout=None, watch=False):
    for name, text in SERVICES.items():
        write(os.path.join(str(tmp_path), "services", name), text)
    cfg = GATE_CONFIG
    if load_timeout:
        cfg = cfg.replace("lua:\n  path: {root}/lua\n",
                          "lua:\n  path: {root}/lua\n  load_timeout: %s\n" % load_timeout)
    if watch:
        cfg = cfg.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:")
    return start_gateway(cfg)


def line_of(text, service="gate/answers.lua"):
    """The line of the first line holding text in one of SERVICES."""
    lines = textwrap.dedent(SERVICES[service]).splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def post(gw, path, body):
    client = Http(gw.port, timeout=10)
    try:
        status, headers, data = client.post(path, body, {"Content-Type": "application/json"})
    finally:
        client.close()
    return status, headers, data


def check(*args, timeout=20):
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    t0 = time.time()
    r = subprocess.run([binary, "--check"] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return r, time.time() - t0


# ---- request bodies ----

REFUSED = [
    (b"NaN", "NaN and Infinity are not JSON at byte 1"),
    (b"Infinity", "NaN and Infinity are not JSON at byte 1"),
    (b'{"a": -Infinity}', "invalid number at byte 7"),
    (b'{"a": NaN}', "NaN and Infinity are not JSON at byte 7"),
    (b"0x7B", "invalid number at byte 1"),
    (b"[0123]", "invalid number (leading zero) at byte 2"),
    (b"[-01]", "invalid number (leading zero) at byte 2"),
    (b"[+1]", "invalid number at byte 2"),
    (b"[1.]", "invalid number (no digit after '.') at byte 2"),
    (b"[.5]", "invalid number at byte 2"),
    (b"[-.5]", "invalid number at byte 2"),
    (b"[1e]", "invalid number (no digit in exponent) at byte 2"),
    (b"[1e+]", "invalid number (no digit in exponent) at byte 2"),
    (b'{"n": 1e400}', "number out of range at byte 7"),
    (b"[-1.8e308]", "number out of range at byte 2"),
    (b"[" * 10000, "nesting of arrays and objects too deep at byte 1001"),
    (b'{"a": 1} x', "unexpected data after the JSON value at byte 10"),
    (b'{"a": 1}\x00{"b": 2}', "unexpected data after the JSON value at byte 9"),
    (b'{"a": 1}{"b": 2}', "unexpected data after the JSON value at byte 9"),
    (b"[1,]", "expected a JSON value at byte 4"),
    (b'{"a":1,}', "expected a string as object key at byte 8"),
    (b"{'a': 1}", "expected a string as object key at byte 2"),
    (b'"a\tb"', "unescaped control character in a string at byte 3"),
    (b'"a\nb"', "unescaped control character in a string at byte 3"),
    (b'"a\x00b"', "unescaped control character in a string at byte 3"),
    (b'"caf\xe9"', "invalid UTF-8 in a string at byte 5"),
    (b'"\xc0\xaf"', "invalid UTF-8 in a string at byte 2"),           # overlong '/'
    (b'"\xe0\x80\xaf"', "invalid UTF-8 in a string at byte 2"),       # overlong, 3 bytes
    (b'"\xed\xa0\x80"', "invalid UTF-8 in a string at byte 2"),       # U+D800 encoded
    (b'"\xf4\x90\x80\x80"', "invalid UTF-8 in a string at byte 2"),   # above U+10FFFF
    (b'"\xf0\x9f\x98"', "invalid UTF-8 in a string at byte 2"),       # cut short
    (b'"\\ud800"', "unpaired UTF-16 surrogate in a \\u escape at byte 2"),
    (b'"\\ude00\\ud83d"', "unpaired UTF-16 surrogate in a \\u escape at byte 2"),
    (b'"\\ud83d x"', "unpaired UTF-16 surrogate in a \\u escape at byte 2"),
    (b'"\\x41"', "invalid escape in a string at byte 2"),
    (b'"\\u12G4"', "invalid \\u escape in a string at byte 2"),
    (b"[tru]", "invalid literal"),
    (b"   ", "unexpected end of input at byte 4"),
    (b'{"a": "unterminated', "unterminated string"),
]


def test_bodies_that_are_not_rfc8259_json_get_400(start_gateway, tmp_path):
    gw = gate(start_gateway, tmp_path)
    wrong = []
    for body, message in REFUSED:
        status, headers, data = post(gw, "/gateway/demo.echo", body)
        try:
            err = json.loads(data.decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            err = {}
        if status != 400 or err.get("status") != 400 or \
                message not in err.get("message", "") or \
                not err.get("message", "").startswith("invalid JSON: "):
            wrong.append((body[:40], status, data[:200]))
    assert wrong == []
    # the same gate on a REST channel and for /gateway/invoke?service=
    status, _, data = post(gw, "/gateway/invoke?service=demo.echo", b"[1.]")
    assert status == 400 and b"no digit after" in data


ACCEPTED = [
    (b"-0", -0.0),
    (b"[1E+2, 1e-2, 0.5e-3, 10E2]", [100, 0.01, 0.0005, 1000]),
    (b"[9007199254740991, -9007199254740991]", None),
    (b"[1e-400, 1.7976931348623157e308, -1.7976931348623157e308]", None),
    (b'"\\ud83d\\ude00"', "\U0001F600"),
    ('"caf\u00e9 \u20ac \U0001F600 \u007f"'.encode(), "caf\u00e9 \u20ac \U0001F600 \u007f"),
    (b'"\\u0000\\"\\\\\\/\\b\\f\\n\\r\\t"', "\x00\"\\/\b\f\n\r\t"),
    (b" \t\r\n{ \"a\" : [ true , false , null ] } \n", {"a": [True, False, None]}),
    (b"[" * 999 + b"]" * 999, None),
    (b'{"a":' * 500 + b"1" + b"}" * 500, None),
]


def test_valid_edge_cases_still_pass(start_gateway, tmp_path):
    """Guards that the gate refuses nothing RFC 8259 allows."""
    gw = gate(start_gateway, tmp_path)
    for body, expected in ACCEPTED:
        status, _, data = post(gw, "/gateway/demo.echo", body)
        assert status == 200, (body[:40], data[:200])
        if expected is not None:
            assert json.loads(data.decode("utf-8"))["payload"] == expected, body


def test_amqp_channel_deliveries_get_the_same_gate(lab, amqp):
    """An AMQP channel's body goes through the same runtime.dispatch: a body that
    is not JSON is refused (dead-lettered) as a 400 is, a good one answered."""
    bodies = [b'{"n": 21.}', b'{"n": 0x15}', b'{"n": 21, "s": "caf\xe9"}', b'{"n": 21} x',
              b'{"n": 21, "x": 1e400}']
    for body in bodies:
        assert amqp.publish("", Q_IN, body, content_type="application/json")
    assert amqp.wait_count(Q_DEAD, len(bodies)) == len(bodies), lab.errors()
    assert sorted(m.body for m in amqp.drain(Q_DEAD)) == sorted(bodies)
    assert amqp.publish("", Q_IN, b'{"n": 21e0}', correlation_id="ok", reply_to=Q_REPLIES)
    reply = amqp.wait_get(Q_REPLIES)
    assert reply is not None and reply.json()["doubled"] == 42, lab.errors()


# ---- answers ----

def test_every_json_answer_is_utf8(start_gateway, tmp_path):
    gw = gate(start_gateway, tmp_path)
    gw.expect_error("cannot encode the response as JSON")
    for kind in ("latin1", "surrogate", "nan", "inf"):
        status, headers, data = post(gw, "/gateway/gate.answers", {"kind": kind})
        body = json.loads(data.decode("utf-8"))
        assert status == 500 and body["error"]["message"] == "internal error in service " \
            "gate.answers", (kind, data)
    lines = [e["msg"] for e in gw.log_lines("error")]
    assert sum("a string in the payload is not UTF-8" in m for m in lines) == 2, lines
    assert any('not UTF-8 (byte 13 of its JSON, near {"name":"caf\\xE9"})' in m
               for m in lines), lines
    assert sum("must not be NaN or Inf" in m for m in lines) == 2, lines
    # an error message a service made of bad bytes still reaches the client, as U+FFFD
    status, _, data = post(gw, "/gateway/gate.answers", {"kind": "error"})
    assert status == 422
    assert json.loads(data.decode("utf-8"))["error"]["message"] == "no customer named caf\ufffd"
    # and the gateway answers as before
    assert post(gw, "/gateway/gate.answers", {})[0] == 200


def test_process_level_calls_raise_at_request_time(start_gateway, tmp_path):
    gw = gate(start_gateway, tmp_path)
    gw.expect_error("handler raised")
    for kind, name in (("exit", "os.exit"), ("execute", "os.execute"), ("popen", "io.popen")):
        status, _, data = post(gw, "/gateway/gate.answers", {"kind": kind})
        assert status == 500, (kind, data)
        assert gw.log_has("answers.lua:%d: %s is not available to services" % (
            line_of(name + "("), name))
    assert post(gw, "/gateway/gate.answers", {})[0] == 200


# ---- service files that would take the gateway down ----

LOOPING = """\
local service = require "portico.service"
local M = service.new { name = "test.loop" }
local n = 0
while true do
  n = n + 1
end
return M
"""

CATCHING = """\
local service = require "portico.service"
local M = service.new { name = "test.loop" }
while true do pcall(function() while true do end end) end
return M
"""


def check_config(tmp_path, name, text, extra=""):
    d = tmp_path / ("svc-" + name)
    d.mkdir()
    (d / (name + ".lua")).write_text(text)
    cfg = tmp_path / (name + ".yaml")
    cfg.write_text("lua:\n  path: %s/lua\n%sservices:\n  dirs: [%s]\n" % (ROOT, extra, d))
    return str(cfg)


def test_check_refuses_a_file_that_loops_at_load_time(tmp_path):
    r, took = check("-c", check_config(tmp_path, "loop", LOOPING))
    assert r.returncode == 1 and took < 5, (r.stderr, took)
    # the line the loop was at: its test (4) or its body (5)
    assert re.search(r"loop\.lua:[45]: still running after 1000 ms of loading", r.stderr), r.stderr
    # a loop that catches the budget's error goes no further; the budget is lua.load_timeout
    r, took = check("-c", check_config(tmp_path, "catching", CATCHING,
                                       "  load_timeout: 200ms\n"))
    assert r.returncode == 1 and took < 3, (r.stderr, took)
    assert "catching.lua:3: still running after 200 ms of loading" in r.stderr, r.stderr


@pytest.mark.parametrize("name,body,expected", [
    ("unhook", "debug.sethook()\nwhile true do end\n", "debug.sethook is not available"),
    ("jit", "jit.on()\nlocal x = 0\nwhile true do x = x + 1 end\n", "jit.on is not available"),
    ("ffi", 'require("ffi").cdef "void exit(int);"\n', 'require "ffi" is not available'),
])
def test_check_refuses_a_file_that_would_lift_the_budget(tmp_path, name, body, expected):
    """The budget is a count hook over interpreted code: a file that clears the
    hook, compiles its loop or calls C through the FFI would run past it."""
    text = 'local service = require "portico.service"\n' + body
    r, took = check("-c", check_config(tmp_path, name, text))
    assert r.returncode == 1 and took < 5, (r.stderr, took)
    assert "%s.lua:2: %s" % (name, expected) in r.stderr, r.stderr


def test_check_refuses_os_exit_in_a_service_file(tmp_path):
    text = 'local service = require "portico.service"\nos.exit(0)\n'
    r, took = check("-c", check_config(tmp_path, "exits", text))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "exits.lua:2: os.exit is not available to services" in r.stderr


def test_a_looping_or_exiting_file_is_refused_on_reload_and_the_old_one_serves(start_gateway,
                                                                              tmp_path):
    path = os.path.join(str(tmp_path), "services", "test", "version.lua")
    write(path, VERSION % ("v1", ""))
    gw = gate(start_gateway, tmp_path, watch=True)
    gw.expect_error("service file refused")
    assert json.loads(post(gw, "/gateway/test.version", {})[2])["version"] == "v1"

    write(path, VERSION % ("v2", "while true do end"))
    assert gw.log_has("still running after 1000 ms of loading", timeout=10)
    refused = [e["msg"] for e in gw.log_lines("error") if "service file refused" in e["msg"]]
    assert len(refused) == 1 and path + ":5: still running" in refused[0], refused
    assert json.loads(post(gw, "/gateway/test.version", {})[2])["version"] == "v1"
    admin = Http(gw.admin_port, timeout=5)
    assert admin.request("GET", "/healthz")[0] == 200  # the main thread is free again
    admin.close()

    write(path, VERSION % ("v3", "os.exit(0)"))
    assert gw.log_has("os.exit is not available to services", timeout=10)
    assert gw.proc.proc.poll() is None
    assert json.loads(post(gw, "/gateway/test.version", {})[2])["version"] == "v1"

    write(path, VERSION % ("v4", ""))
    deadline = time.time() + 10
    while json.loads(post(gw, "/gateway/test.version", {})[2])["version"] != "v4":
        assert time.time() < deadline
        time.sleep(0.05)


def test_sigterm_while_a_looping_file_is_being_loaded(start_gateway, tmp_path):
    path = os.path.join(str(tmp_path), "services", "test", "version.lua")
    write(path, VERSION % ("v1", ""))
    gw = gate(start_gateway, tmp_path, watch=True)
    gw.expect_error("service file refused")
    write(path, VERSION % ("v2", "while true do end"))
    time.sleep(0.4)  # the main thread is inside the load now (settled after 100 ms)
    t0 = time.time()
    gw.proc.proc.send_signal(signal.SIGTERM)
    assert gw.proc.proc.wait(10) == 0
    assert time.time() - t0 < 5
    assert "still running after 1000 ms of loading" in gw.log_text()


# ---- a handler that never waits ----

SPINNING = r"""
    local service = require "portico.service"
    local host = require "portico.host"
    local M = service.new { name = "gate.spin" }
    function M:handle()
      local kind = (self.request.payload or {}).kind
      if kind == "pure" then
        local n = 0
        while true do n = n + 1 end
      elseif kind == "catching" then
        while true do pcall(function() while true do host.now() end end) end
      elseif kind == "short" then
        local t = host.now() + 0.05
        while host.now() < t do end
      end
      self.response.payload = { ok = true }
    end
    return M
"""


def test_a_request_that_runs_past_lua_request_timeout_is_stopped(start_gateway, tmp_path):
    write(os.path.join(str(tmp_path), "services", "gate", "spin.lua"), SPINNING)
    cfg = GATE_CONFIG.replace("gate.answers, ", "gate.answers, gate.spin, ").replace(
        "workers: 2", "workers: 1").replace(
        "lua:\n  path: {root}/lua\n", "lua:\n  path: {root}/lua\n  request_timeout: 300ms\n")
    gw = start_gateway(cfg)
    gw.expect_error("ran for more than 300 ms without waiting")
    t0 = time.time()
    status, _, data = post(gw, "/gateway/gate.spin", {"kind": "pure"})
    assert status == 500 and time.time() - t0 < 3, data
    assert json.loads(data)["error"]["message"] == "internal error in service gate.spin"
    assert gw.log_has("spin.lua:9: the request ran for more than 300 ms without waiting "
                      "(lua.request_timeout): stopped")
    # a service that catches the error is stopped all the same
    status, _, data = post(gw, "/gateway/gate.spin", {"kind": "catching"})
    assert status == 500 and time.time() - t0 < 6, data
    # the one worker serves again, and what stays within the budget is left alone
    assert post(gw, "/gateway/gate.spin", {"kind": "short"})[0] == 200
    assert post(gw, "/gateway/demo.echo", {"x": 1})[0] == 200


def test_the_budgets_are_checked_in_the_config(tmp_path):
    for key, value, message in (("load_timeout", "5ms", "lua.load_timeout: from 10ms to 1m"),
                                ("load_timeout", "2m", "lua.load_timeout: from 10ms to 1m"),
                                ("request_timeout", "2h", "lua.request_timeout: from 0ms to 1h"),
                                ("request_timeout", "soon", "lua.request_timeout: expected a "
                                                            "duration")):
        cfg = tmp_path / ("%s-%s.yaml" % (key, value))
        cfg.write_text("lua:\n  path: %s/lua\n  %s: %s\nservices:\n  dirs: [%s/services]\n" % (
            ROOT, key, value, ROOT))
        r, _ = check("-c", str(cfg))
        assert r.returncode == 1 and message in r.stderr, (key, value, r.stderr)
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("lua:\n  path: %s/lua\n  load_timeout: 250ms\n  request_timeout: 5s\n"
                   "services:\n  dirs: [%s/services]\n" % (ROOT, ROOT))
    r, _ = check("-c", str(cfg))
    assert r.returncode == 0, r.stderr
