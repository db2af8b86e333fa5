"""The scheduler: jobs of scheduler: in the config run once per tick for the
whole process (not once per worker), never overlap themselves, are cancelled
past their timeout, show on the admin listener (GET /scheduler) and in
/metrics, follow a reload, and a job naming a service that is not loaded is
refused with file:line."""
import datetime
import json
import os
import signal
import subprocess
import textwrap
import time

from amqp_support import ROOT, Http, scrape, value
from conftest import config_head

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

SERVICES = {
    # one line per run: the run's cid, worker, channel type and name, input
    "sched/tick.lua": """
        local service = require "portico.service"
        local host = require "portico.host"
        local cjson = require "cjson"
        local M = service.new { name = "sched.tick" }
        function M:handle()
          local p = self.request.payload
          local f = assert(io.open(p.file, "a"))
          f:write(cjson.encode({ cid = self.cid, worker = host.worker, type = self.channel.type,
                                 job = self.channel.name, user = self.channel.security.username,
                                 tag = p.tag }), "\\n")
          f:close()
          self.response.payload = { ok = true }
        end
        return M
    """,
    # "start" and "end" lines around a sleep: runs of one job must not interleave
    "sched/slow.lua": """
        local service = require "portico.service"
        local M = service.new { name = "sched.slow" }
        function M:handle()
          local p = self.request.payload
          local function mark(what)
            local f = assert(io.open(p.file, "a"))
            f:write(what, " ", self.cid, "\\n")
            f:close()
          end
          mark("start")
          self:sleep(p.seconds)
          mark("end")
        end
        return M
    """,
    # catches the cancelled sleep and tries again: the run's later waits are refused
    "sched/stubborn.lua": """
        local service = require "portico.service"
        local M = service.new { name = "sched.stubborn" }
        function M:handle()
          local ok1, e1 = pcall(self.sleep, self, 3000)
          local ok2, e2 = pcall(self.sleep, self, 3000)
          local f = assert(io.open(self.request.payload.file, "a"))
          f:write(tostring(ok1), " ", tostring(e1), " | ", tostring(ok2), " ", tostring(e2), "\\n")
          f:close()
        end
        return M
    """,
    "sched/fails.lua": """
        local service = require "portico.service"
        local M = service.new { name = "sched.fails" }
        function M:handle() self:error(409, "the job says no") end
        return M
    """,
}


def write_services(tmp_path):
    for name, text in SERVICES.items():
        path = tmp_path / "services" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def config(jobs, workers=2):
    """A config with the test services and jobs (YAML lines of the jobs list;
    braces doubled, as the text is a format template)."""
    return config_head("workers: %d\ndrain_timeout: 5s" % workers) + \
        "scheduler:\n  jobs:\n" + textwrap.indent(textwrap.dedent(jobs), "    ")


def jobs(gw):
    c = Http(gw.admin_port)
    status, headers, body = c.request("GET", "/scheduler")
    c.close()
    assert status == 200 and headers["content-type"].startswith("application/json")
    return {j["name"]: j for j in json.loads(body)["jobs"]}


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in f.read().splitlines() if l]


def parse_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_once_per_tick_across_two_workers(start_gateway, tmp_path):
    write_services(tmp_path)
    out = str(tmp_path / "ticks.log")
    gw = start_gateway(config("""
        - {{name: ticker, service: sched.tick, every: 1s, input: {{file: "%s", tag: t1}}}}
    """ % out))
    t0 = time.time()
    wait_for(lambda: len(lines(out)) >= 4, what="4 runs")
    j = wait_for(lambda: (lambda j: j if j["runs"]["ok"] >= 4 and not j["running"] else None)(
        jobs(gw)["ticker"]), what="4 runs in the admin")
    elapsed = time.time() - t0
    runs = [json.loads(l) for l in lines(out)]
    ok = j["runs"]["ok"]
    # every run the scheduler counted wrote exactly one line, and no worker ran
    # a schedule of its own: one run per tick, not one per worker
    assert len(runs) in (ok, ok + 1)  # one may have started since the admin answered
    assert len(runs) <= elapsed / 1.0 + 2
    assert len({r["cid"] for r in runs}) == len(runs)
    # round-robin over the two workers
    workers = [r["worker"] for r in runs]
    assert set(workers) == {1, 2}
    assert all(a != b for a, b in zip(workers, workers[1:])), workers
    # the service sees a scheduler channel named after the job, with no user
    assert all(r["type"] == "scheduler" and r["job"] == "ticker" and r.get("user") is None
               and r["tag"] == "t1" for r in runs)
    assert j["service"] == "sched.tick" and j["schedule"] == "every 1s"
    assert j["enabled"] is True and j["overlap"] is False and j["timeout_ms"] == 60000
    assert j["skipped"] == 0 and j["runs"]["error"] == 0 and j["runs"]["timeout"] == 0
    last = j["last_run"]
    assert last["result"] == "ok" and last["error"] is None and last["duration_ms"] >= 0
    assert parse_time(j["next_run"]) > parse_time(last["started"])
    samples = scrape(gw)
    assert value(samples, "portico_scheduler_runs_total", job="ticker", result="ok") >= ok
    assert value(samples, "portico_scheduler_skipped_total", job="ticker") == 0
    assert value(samples, "portico_scheduler_run_duration_seconds_count", job="ticker") >= ok
    assert value(samples, "portico_scheduler_run_duration_seconds_bucket", job="ticker",
                 le="+Inf") >= ok


def test_a_job_never_overlaps_itself(start_gateway, tmp_path):
    write_services(tmp_path)
    out = str(tmp_path / "slow.log")
    gw = start_gateway(config("""
        - {{name: slow, service: sched.slow, every: 200ms, input: {{file: "%s", seconds: 0.7}}}}
    """ % out))
    j = wait_for(lambda: (lambda j: j if j["runs"]["ok"] >= 3 and j["skipped"] >= 3 else None)(
        jobs(gw)["slow"]), what="3 runs and 3 skipped ticks")
    marks = [l.split() for l in lines(out)]
    # start, end, start, end...: never two runs at once
    depth = 0
    for what, cid in marks:
        depth += 1 if what == "start" else -1
        assert depth in (0, 1), marks
    assert j["running"] in (0, 1)
    samples = scrape(gw)
    assert value(samples, "portico_scheduler_skipped_total", job="slow") >= 3
    assert gw.log_has("scheduler: job 'slow' skipped a tick: its last run is still going")


def test_overlap_true_lets_runs_overlap(start_gateway, tmp_path):
    write_services(tmp_path)
    out = str(tmp_path / "slow.log")
    gw = start_gateway(config("""
        - {{name: slow, service: sched.slow, every: 200ms, overlap: true,
           input: {{file: "%s", seconds: 0.7}}}}
    """ % out))
    def overlapped():
        depth, most = 0, 0
        for what, _ in (l.split() for l in lines(out)):
            depth += 1 if what == "start" else -1
            most = max(most, depth)
        return most >= 2
    wait_for(overlapped, what="two runs at once")
    assert jobs(gw)["slow"]["skipped"] == 0


def test_a_run_past_its_timeout_is_cancelled(start_gateway, tmp_path):
    write_services(tmp_path)
    out, out2 = str(tmp_path / "slow.log"), str(tmp_path / "stubborn.log")
    gw = start_gateway(config("""
        - {{name: stuck, service: sched.slow, every: 1s, timeout: 300ms,
           input: {{file: "%s", seconds: 3000}}}}
        - {{name: refuses, service: sched.fails, every: 1s}}
        - {{name: stubborn, service: sched.stubborn, every: 1s, timeout: 200ms,
           input: {{file: "%s"}}}}
    """ % (out, out2)))
    gw.expect_error("sleep: the sleep was cancelled")
    j = wait_for(lambda: (lambda j: j if j["runs"]["timeout"] >= 1 else None)(
        jobs(gw)["stuck"]), what="a timeout")
    last = j["last_run"]
    assert last["result"] == "timeout"
    assert "timed out after 300 ms" in last["error"]
    assert last["duration_ms"] < 3000 * 1000
    # the service's sleep ended early and the run ended: it never wrote "end"
    assert [l.split()[0] for l in lines(out)].count("end") == 0
    assert gw.log_has("scheduler: job 'stuck' ran past its timeout of 300 ms: cancelled")
    r = wait_for(lambda: (lambda j: j if j["runs"]["error"] >= 1 else None)(
        jobs(gw)["refuses"]), what="an error")
    assert r["last_run"]["result"] == "error"
    assert r["last_run"]["error"] == "409: the job says no"
    st = wait_for(lambda: (lambda j: j if j["runs"]["timeout"] >= 1 else None)(
        jobs(gw)["stubborn"]), what="the stubborn job's timeout")
    assert st["last_run"]["result"] == "timeout"
    first = lines(out2)[0]
    assert first.startswith("false ") and " | false " in first
    assert "sleep: the sleep was cancelled" in first.split(" | ")[0]
    assert "sleep: the run was cancelled" in first.split(" | ")[1]
    samples = scrape(gw)
    assert value(samples, "portico_scheduler_runs_total", job="stuck", result="timeout") >= 1
    assert value(samples, "portico_scheduler_runs_total", job="refuses", result="error") >= 1


def test_cron_and_at_show_their_next_run(start_gateway, tmp_path):
    write_services(tmp_path)
    gw = start_gateway(config("""
        - {{name: nightly, service: sched.fails, cron: "0 2 * * *", timeout: 5m}}
        - {{name: minutely, service: sched.fails, cron: "*/1 * * * *"}}
        - {{name: once, service: sched.fails, at: "2099-12-24T18:00:00Z"}}
        - {{name: past, service: sched.fails, at: "2001-01-01T00:00:00Z"}}
        - {{name: off, service: sched.fails, every: 1s, enabled: false}}
    """))
    js = jobs(gw)
    nightly = parse_time(js["nightly"]["next_run"])
    assert (nightly.hour, nightly.minute, nightly.second) == (2, 0, 0)
    assert nightly - datetime.datetime.utcnow() <= datetime.timedelta(days=1)
    assert js["nightly"]["timeout_ms"] == 300000
    assert js["nightly"]["schedule"] == "cron 0 2 * * *"
    assert parse_time(js["minutely"]["next_run"]).second == 0
    assert js["once"]["next_run"] == "2099-12-24T18:00:00.000Z"
    assert js["past"]["next_run"] is None
    assert js["off"]["next_run"] is None and js["off"]["enabled"] is False
    assert all(j["last_run"] is None for j in js.values())


def test_reload_adds_keeps_and_removes_jobs(start_gateway, tmp_path):
    write_services(tmp_path)
    a, b, k = (str(tmp_path / n) for n in ("a.log", "b.log", "keep.log"))
    gw = start_gateway(config("""
        - {{name: job-a, service: sched.tick, every: 300ms, input: {{file: "%s"}}}}
        - {{name: keep, service: sched.tick, every: 300ms, input: {{file: "%s"}}}}
    """ % (a, k)))
    before = wait_for(lambda: (lambda j: j if j["keep"]["runs"]["ok"] >= 3 else None)(jobs(gw)),
                      what="runs before the reload")
    with open(gw.config, "w") as f:
        f.write(config("""
        - {{name: keep, service: sched.tick, every: 300ms, input: {{file: "%s"}}}}
        - {{name: job-b, service: sched.tick, every: 300ms, input: {{file: "%s"}}}}
        """ % (k, b)).format(port=gw.port, admin_port=gw.admin_port, root=ROOT, tmp=gw.tmp))
    c = Http(gw.admin_port)
    status, _, body = c.request("POST", "/reload")
    assert status == 200, body
    js = jobs(gw)
    assert set(js) == {"keep", "job-b"}
    # the kept job kept its counts
    assert js["keep"]["runs"]["ok"] >= before["keep"]["runs"]["ok"]
    wait_for(lambda: len(lines(b)) >= 2, what="the new job's runs")
    n_a = len(lines(a))
    n_keep = len(lines(k))
    wait_for(lambda: len(lines(b)) >= 5 and len(lines(k)) >= n_keep + 3, what="more runs")
    assert len(lines(a)) <= n_a + 1  # a run in flight at the reload may still land
    assert gw.log_has("scheduler: job 'job-a' removed")

    # a reload naming a service that is not loaded is refused, with file:line
    gw.expect_error("config reload refused")
    with open(gw.config, "a") as f:
        f.write("    - {name: ghost, service: no.such, every: 1s}\n")
    n_lines = len(open(gw.config).read().splitlines())
    status, _, body = c.request("POST", "/reload")
    assert status == 422
    err = json.loads(body)["error"]
    assert "%s:%d: scheduler job 'ghost' runs service 'no.such', which is not loaded" % (
        gw.config, n_lines) in err
    assert set(jobs(gw)) == {"keep", "job-b"}
    c.close()


def test_sighup_reload_changes_a_schedule(start_gateway, tmp_path):
    write_services(tmp_path)
    gw = start_gateway(config("""
        - {{name: j, service: sched.fails, every: 1h}}
    """))
    assert jobs(gw)["j"]["schedule"] == "every 1h"
    with open(gw.config, "w") as f:
        f.write(config("""
        - {{name: j, service: sched.fails, cron: "30 4 * * *"}}
        """).format(port=gw.port, admin_port=gw.admin_port, root=ROOT, tmp=gw.tmp))
    gw.proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: jobs(gw)["j"]["schedule"] == "cron 30 4 * * *", what="the new schedule")
    nxt = parse_time(jobs(gw)["j"]["next_run"])
    assert (nxt.hour, nxt.minute) == (4, 30)


BAD = [
    ("unknown-service", "- {name: x, service: no.such, every: 1s}",
     "scheduler job 'x' runs service 'no.such', which is not loaded"),
    ("bad-cron", '- {name: x, service: sched.fails, cron: "61 * * * *"}',
     "scheduler job 'x': cron \"61 * * * *\": the minute field '61' is not valid"),
    ("cron-fields", '- {name: x, service: sched.fails, cron: "* * * *"}',
     "expected 5 fields"),
    ("never", '- {name: x, service: sched.fails, cron: "0 0 30 2 *"}',
     "the expression matches no date"),
    ("two-schedules", "- {name: x, service: sched.fails, every: 1s, at: \"2030-01-01T00:00:00Z\"}",
     "give exactly one of every, cron and at"),
    ("no-schedule", "- {name: x, service: sched.fails}", "give exactly one of every, cron and at"),
    ("bad-at", '- {name: x, service: sched.fails, at: "2030-02-30T00:00:00Z"}',
     "at: expected an RFC 3339 time"),
    ("short-every", "- {name: x, service: sched.fails, every: 10ms}",
     "every: expected a duration from 100ms"),
    ("bad-timeout", "- {name: x, service: sched.fails, every: 1s, timeout: 0}",
     "timeout: expected a duration from 1ms to 24h"),
    ("unknown-key", "- {name: x, service: sched.fails, every: 1s, retries: 3}",
     "unknown key 'retries'"),
    ("dup", "- {name: x, service: sched.fails, every: 1s}\n    - {name: x, service: sched.fails, every: 2s}",
     "scheduler job 'x' is defined twice"),
    ("bad-name", "- {name: 'a b', service: sched.fails, every: 1s}", "name must be 1 to 64"),
    ("input-list", "- {name: x, service: sched.fails, every: 1s, input: [1]}",
     "input: expected a mapping"),
]


def test_bad_jobs_are_refused_with_file_and_line(tmp_path):
    write_services(tmp_path)
    for name, job, expected in BAD:
        text = config_head("workers: 1").format(port=1, admin_port=2, root=ROOT, tmp=tmp_path)
        text += "scheduler:\n  jobs:\n    " + job + "\n"
        path = tmp_path / (name + ".yaml")
        path.write_text(text)
        line = len(text.splitlines()) if name != "dup" else len(text.splitlines())
        r = subprocess.run([BIN, "--check", "-c", str(path)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert expected in r.stderr, (name, r.stderr)
        assert "%s:%d:" % (path, line) in r.stderr, (name, r.stderr)
    # and a start with one is refused the same way
    r = subprocess.run([BIN, "-c", str(tmp_path / "unknown-service.yaml")], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0
    assert "which is not loaded" in r.stderr
