"""Async work: self:sleep yields the request (a sleeper does not hold up the
worker), self:invoke_async runs a service without waiting (its errors are
logged with the caller's cid), self:defer runs after the response has been
sent, and a worker that stops with async work pending drains cleanly."""
import json
import os
import signal
import textwrap
import threading
import time

from amqp_support import ROOT, Http
from conftest import config_head

SERVICES = {
    # sleeps in short naps until the file named in the payload exists
    "async/sleeper.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.sleeper" }
        local function exists(p) local f = io.open(p) if f then f:close() return true end end
        function M:handle()
          local p = self.request.payload
          local f = assert(io.open(p.started, "w")); f:close()
          local naps = 0
          while not exists(p.wake) do
            self:sleep(0.02)
            naps = naps + 1
          end
          self.response.payload = { slept = true, naps = naps }
        end
        return M
    """,
    "async/fast.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.fast" }
        function M:handle() self.response.payload = { fast = true } end
        return M
    """,
    "async/fails.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.fails" }
        function M:handle() error("the async target broke") end
        return M
    """,
    "async/parent.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.parent" }
        function M:handle()
          local p = self.request.payload or {}
          local ok, err = self:invoke_async(p.target or "async.fails", p.input or {})
          self.response.payload = { ok = ok, err = err }
        end
        return M
    """,
    # starts n async runs of async.fast; answers how many were accepted
    "async/many.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.many" }
        function M:handle()
          local accepted, refused
          for i = 1, self.request.payload.n do
            local ok, err = self:invoke_async("async.fast")
            if ok then accepted = (accepted or 0) + 1 else refused = err break end
          end
          self.response.payload = { accepted = accepted, refused = refused }
        end
        return M
    """,
    # sleeps inside a coroutine of its own, which the yield protocol refuses
    "async/cosleep.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.cosleep" }
        function M:handle()
          local ok, err = coroutine.resume(coroutine.create(function() self:sleep(0.01) end))
          self.response.payload = { ok = ok, err = err }
        end
        return M
    """,
    # answers, then (deferred) waits for the file "go" and writes "done"
    "async/deferrer.lua": """
        local service = require "portico.service"
        local M = service.new { name = "async.deferrer" }
        local function exists(p) local f = io.open(p) if f then f:close() return true end end
        function M:handle()
          local p = self.request.payload
          self:defer(function()
            while not exists(p.go) do self:sleep(0.02) end
            local f = assert(io.open(p.done, "w"))
            f:write(self.cid)
            f:close()
            error("deferred and then broke")
          end)
          self.response.payload = { answered = true }
        end
        return M
    """,
}

CONFIG = config_head("workers: 1\ndrain_timeout: {drain}") + """channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [POST]
      gateway_service_list: [async.sleeper, async.fast, async.parent, async.many, async.deferrer,
                             async.cosleep]
"""


def gateway(start_gateway, tmp_path, drain="10s"):
    for name, text in SERVICES.items():
        path = tmp_path / "services" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return start_gateway(CONFIG, drain=drain)


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def test_a_sleeper_does_not_hold_up_100_fast_requests(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path)
    started, wake = str(tmp_path / "started"), str(tmp_path / "wake")
    result = {}

    def sleeper():
        c = gw.http()
        result["answer"] = c.post("/gateway/async.sleeper", {"started": started, "wake": wake})
        result["at"] = time.monotonic()
        c.close()

    t = threading.Thread(target=sleeper)
    t.start()
    wait_for(lambda: os.path.exists(started), what="the sleeper to start")
    c = gw.http()
    for _ in range(100):
        status, _, body = c.post("/gateway/async.fast", {})
        assert status == 200 and json.loads(body) == {"fast": True}
    fast_done = time.monotonic()
    c.close()
    # one worker: had the sleep blocked it, no fast request could have answered
    assert "answer" not in result
    open(wake, "w").close()
    t.join(30)
    status, _, body = result["answer"]
    assert status == 200
    assert json.loads(body)["slept"] is True
    assert result["at"] > fast_done


def test_invoke_async_errors_are_logged_with_the_parent_cid(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path)
    gw.expect_error("async run of 'async.fails'")
    c = gw.http()
    status, headers, body = c.post("/gateway/async.parent", {},
                                   headers={"x-correlation-id": "parent-cid-42"})
    assert status == 200 and json.loads(body) == {"ok": True}
    assert headers["x-correlation-id"] == "parent-cid-42"
    wait_for(lambda: any("async run of 'async.fails'" in e["msg"]
                         for e in gw.log_lines("error")), what="the async error")
    e = [e for e in gw.log_lines("error") if "async run of 'async.fails'" in e["msg"]][0]
    assert e["cid"] == "parent-cid-42"
    assert "(invoke_async from 'async.parent') failed" in e["msg"]
    assert "the async target broke" in e["msg"]
    # an unknown target raises in the caller: a 500, logged with its cid
    gw.expect_error("invoke_async: no service named 'no.such'")
    status, _, body = c.post("/gateway/async.parent", {"target": "no.such"},
                             headers={"x-correlation-id": "parent-cid-43"})
    assert status == 500
    assert json.loads(body)["error"]["cid"] == "parent-cid-43"
    c.close()


def test_invoke_async_is_bounded_per_worker(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path)
    c = gw.http()
    status, _, body = c.post("/gateway/async.many", {"n": 1500})
    assert status == 200
    out = json.loads(body)
    assert out["accepted"] == 1000
    assert "1000 async runs queued or running (the limit)" in out["refused"]
    # they all ran: the next request gets the whole budget again
    wait_for(lambda: json.loads(c.post("/gateway/async.many", {"n": 10})[2]).get("accepted") == 10,
             what="the async runs to end")
    c.close()


def test_defer_runs_after_the_response_was_sent(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path)
    gw.expect_error("a deferred function raised: .*deferred and then broke")
    go, done = str(tmp_path / "go"), str(tmp_path / "done")
    c = gw.http()
    status, _, body = c.post("/gateway/async.deferrer", {"go": go, "done": done},
                             headers={"x-correlation-id": "defer-cid-7"})
    # the answer is in while the deferred function still waits for "go"
    assert status == 200 and json.loads(body) == {"answered": True}
    assert not os.path.exists(done)
    open(go, "w").close()
    wait_for(lambda: os.path.exists(done), what="the deferred function")
    with open(done) as f:
        assert f.read() == "defer-cid-7"
    wait_for(lambda: any("a deferred function raised" in e["msg"] and e.get("cid") == "defer-cid-7"
                         for e in gw.log_lines("error")), what="the deferred error in the log")
    c.close()


def test_a_worker_stops_cleanly_with_async_work_pending(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path, drain="1s")
    gw.expect_error("async run of 'async.sleeper'.*sleep: the sleep was cancelled")
    started = str(tmp_path / "started")
    c = gw.http()
    for _ in range(3):  # three async sleepers that would never wake
        status, _, body = c.post("/gateway/async.parent", {
            "target": "async.sleeper",
            "input": {"started": started, "wake": str(tmp_path / "never")}})
        assert status == 200 and json.loads(body)["ok"] is True
    wait_for(lambda: os.path.exists(started), what="an async sleeper to start")
    c.close()
    # the fixture's stop: SIGTERM, the drain time-out cancels the sleeps, exit 0
    assert gw.proc.stop() == 0
    log = gw.log_text()
    assert "drain time-out" in log
    assert "Sanitizer" not in log


def test_sleep_outside_the_request_coroutine_is_refused(start_gateway, tmp_path):
    gw = gateway(start_gateway, tmp_path)
    c = gw.http()
    status, _, body = c.post("/gateway/async.cosleep", {})
    assert status == 200
    out = json.loads(body)
    assert out["ok"] is False
    assert "sleep: sleep works only while handling a request, in its own coroutine" in out["err"]
    c.close()
