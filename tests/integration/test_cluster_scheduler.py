"""Scheduled jobs in a cluster (docs/cluster-scheduler.md): three portico
nodes share one private redis-server; a job runs once per tick in the whole
cluster (the ticks of `every` are aligned to the epoch, one node wins each
tick's key), a long run holds the job's run key so no other node starts it
meanwhile, and when that node is killed another takes the job over within
one lease; when Redis is down, on_redis_error: skip runs nothing and run runs
the tick on every node."""
import json
import os
import signal
import textwrap
import time

from amqp_support import Http, scrape, value
from conftest import config_head
from redis_support import cluster_yaml, redis, redis_server  # noqa: F401 (fixtures)

SERVICE = """
    local service = require "portico.service"
    local cjson = require "cjson"
    local M = service.new { name = "cs.tick" }
    function M:handle()
      local p = self.request.payload
      local function mark(what)
        local f = assert(io.open(p.file, "a"))
        f:write(cjson.encode({ node = p.node, what = what, t = os.time(),
                               job = self.channel.name }), "\\n")
        f:close()
      end
      mark("start")
      if p.sleep then self:sleep(p.sleep) end
      mark("end")
    end
    return M
"""


def start_nodes(start_gateway, tmp_path, redis, jobs, n=3, lease="2s"):
    svc = tmp_path / "svc"
    (svc / "cs").mkdir(parents=True, exist_ok=True)
    (svc / "cs" / "tick.lua").write_text(textwrap.dedent(SERVICE))
    nodes = []
    for i in range(n):
        name = "node%d" % (i + 1)
        body = textwrap.indent(textwrap.dedent(jobs).replace("NODE", name), "    ")
        text = (config_head("workers: 1\ndrain_timeout: 1s", dirs=str(svc)) +
                "scheduler:\n  lease: %s\n  jobs:\n" % lease + body +
                cluster_yaml(redis.url, name))
        nodes.append(start_gateway(text, sub=name))
    return nodes


def runs(path, what="start"):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in (json.loads(l) for l in f.read().splitlines() if l)
                if r["what"] == what]


def admin_jobs(node):
    st, _, body = Http(node.admin_port).request("GET", "/scheduler")
    assert st == 200
    return {j["name"]: j for j in json.loads(body)["jobs"]}


def test_a_job_runs_once_per_tick_with_three_nodes(start_gateway, tmp_path, redis):
    out = str(tmp_path / "ticks.log")
    nodes = start_nodes(start_gateway, tmp_path, redis, """
        - {{name: tick, service: cs.tick, every: 1s, input: {{file: "%s", node: NODE}}}}
    """ % out)
    t0 = time.time()
    time.sleep(5.5)
    got = runs(out)
    ticks = [r["t"] for r in got]
    assert len(ticks) == len(set(ticks)), "a tick ran twice: %s" % got  # once per tick
    assert 4 <= len(ticks) <= int(time.time() - t0) + 1, got
    js = [admin_jobs(n)["tick"] for n in nodes]
    ok = sum(j["runs"]["ok"] for j in js)
    elsewhere = sum(j["cluster"]["elsewhere"] for j in js)
    assert ok >= len(ticks) - 1
    assert elsewhere >= 2 * (ok - 1)  # each tick the two other nodes saw it taken
    assert value(scrape(nodes[0]), "portico_scheduler_elsewhere_total", job="tick") == \
        js[0]["cluster"]["elsewhere"]
    # the tick keys: <prefix>job:<name>:<due_ms>, due a multiple of every since the epoch
    keys = [k.decode() for k in redis.cmd("KEYS", "portico:job:tick:*")]
    assert keys and all(int(k.rsplit(":", 1)[1]) % 1000 == 0 for k in keys if k[-1].isdigit())


def test_the_job_moves_when_its_node_is_killed(start_gateway, tmp_path, redis):
    out = str(tmp_path / "long.log")
    nodes = start_nodes(start_gateway, tmp_path, redis, """
        - {{name: long, service: cs.tick, every: 1s, timeout: 20s,
           input: {{file: "%s", node: NODE, sleep: 8}}}}
    """ % out)
    for n in nodes:
        n.expect_error("the sleep was cancelled")  # the stop at the end cuts the 8s run short
    deadline = time.time() + 5
    while not runs(out):
        assert time.time() < deadline, "no run started"
        time.sleep(0.05)
    time.sleep(1.5)  # two ticks more: the run key keeps the other nodes off
    first = runs(out)
    assert len(first) == 1, first
    owner = first[0]["node"]
    assert redis.cmd("GET", "portico:job:long:run").decode().startswith(owner + "/")
    victim = nodes[int(owner[-1]) - 1]
    victim.proc.proc.send_signal(signal.SIGKILL)
    victim.proc.proc.wait()
    killed = time.time()
    victim.proc.stop = lambda: (victim.proc.log.close(), 0)[1]  # killed on purpose
    while len(runs(out)) < 2:
        assert time.time() - killed < 2 + 1 + 1, "not taken over within a lease (2s) and a tick"
        time.sleep(0.05)
    second = runs(out)[1]
    assert second["node"] != owner
    assert time.time() - killed > 0.5  # it waited for the dead node's lease to expire
    # the ticks while the dead node's run key held: the node that won each skipped it
    assert sum(admin_jobs(n)["long"]["skipped"] for n in nodes if n is not victim) >= 1


def test_on_redis_error_skip_and_run(start_gateway, tmp_path, redis):
    skip, run = str(tmp_path / "skip.log"), str(tmp_path / "run.log")
    nodes = start_nodes(start_gateway, tmp_path, redis, """
        - {{name: careful, service: cs.tick, every: 1s, input: {{file: "%s", node: NODE}}}}
        - {{name: eager, service: cs.tick, every: 1s, on_redis_error: run,
           input: {{file: "%s", node: NODE}}}}
    """ % (skip, run), n=2)
    time.sleep(2.2)
    before_skip, before_run = len(runs(skip)), len(runs(run))
    assert before_skip >= 1 and before_run >= 1
    redis.stop()
    t0 = time.time()
    time.sleep(3.2)
    down_skip = [r for r in runs(skip)[before_skip:] if r["t"] >= t0 + 0.5]
    down_run = [r for r in runs(run)[before_run:] if r["t"] >= t0 + 1]
    assert down_skip == []  # nobody runs a tick it could not claim
    assert {r["node"] for r in down_run} == {"node1", "node2"}  # every node runs it
    for n in nodes:
        j = admin_jobs(n)
        assert j["careful"]["cluster"]["redis_errors"] >= 2
        assert j["careful"]["skipped"] >= 2
    assert nodes[0].log_has("is skipped (on_redis_error: skip)") or \
        nodes[0].log_has("could not be claimed in Redis: skipped")
    redis.start()
    n_skip = len(runs(skip))
    deadline = time.time() + 8
    while len(runs(skip)) < n_skip + 2:
        assert time.time() < deadline, "the job did not come back with Redis"
        time.sleep(0.1)
    back = runs(skip)[n_skip:]
    assert len({r["t"] for r in back}) == len(back)  # once per tick again


def test_bad_scheduler_cluster_keys_are_refused(tmp_path):
    import subprocess
    from amqp_support import ROOT
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    path = tmp_path / "bad.yaml"
    path.write_text("scheduler:\n  lease: 10ms\n")
    r = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode != 0 and "bad.yaml:2: scheduler.lease: expected a duration" in r.stderr
    path.write_text("scheduler:\n  jobs:\n    - {name: j, service: a.b, every: 1s,\n"
                    "       on_redis_error: maybe}\n")
    r = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "bad.yaml:4: scheduler job 'j': on_redis_error: expected skip" in r.stderr, r.stderr
