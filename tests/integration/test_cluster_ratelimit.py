"""Cluster-wide rate limits (rate_limit scope: cluster, docs/cluster-ratelimit.md):
three portico nodes share one private redis-server on 127.0.0.1.

- a cluster limit holds across the nodes under load from several clients
  spread over them (within a stated error), where a local one would let
  three times as much through;
- batch: N stays within its documented bound, N x nodes;
- Redis stopped mid-load: fail_open falls back to the local limit,
  fail_closed answers 503 with a clear body, nothing hangs past the
  time-out, no node crashes, the outage is logged once and counted in
  /metrics, and the limits are cluster-wide again once Redis is back;
- Redis hung (SIGSTOP): every request is answered within cluster.timeout;
- bad config is refused at its line."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from amqp_support import Http, scrape, value
from conftest import config_head
from redis_support import cluster_nodes, redis, redis_server  # noqa: F401 (fixtures)

BINARY = os.environ.get("PORTICO_BIN")

# The channels every node serves (a template for conftest's Gateway: {{ }} are
# braces). The demo.echo service answers GET with a small JSON.
CHANNELS = """channels:
  rest:
    - name: limited
      url_path: /limited
      methods: [GET]
      service: demo.echo
      rate_limit: {{rate: @RATE@/s, burst: @BURST@, scope: cluster@EXTRA@}}
    - name: closed
      url_path: /closed
      methods: [GET]
      service: demo.echo
      rate_limit: {{rate: 10000/s, burst: 10000, scope: cluster, on_redis_error: fail_closed}}
    - name: open
      url_path: /open
      methods: [GET]
      service: demo.echo
      rate_limit: {{rate: 5/s, burst: 5, scope: cluster}}
"""


NODE_CONFIG = config_head("workers: 2", log="level: info") + CHANNELS


def start_nodes(cluster_nodes, n=3, rate=20, burst=20, extra="", timeout="500ms"):
    text = (NODE_CONFIG.replace("@RATE@", str(rate)).replace("@BURST@", str(burst))
            .replace("@EXTRA@", (", " + extra) if extra else ""))
    # no expect_error: an outage is a warning once, the 503s of fail_closed
    # log no error line each (the fixture fails on any error line)
    return cluster_nodes(n, config_text=text, cluster_extra="timeout: %s" % timeout)


def hammer(ports, path, seconds, clients_per_port=2):
    """GETs path as fast as possible from clients_per_port keep-alive clients
    per node for `seconds`; returns (statuses, longest answer in s, span in s)."""
    counts, longest, lock = {}, [0.0], threading.Lock()
    t_start = time.monotonic()
    stop = t_start + seconds
    first, last = [None], [0.0]

    def run(port):
        c = Http(port, timeout=10)
        try:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                st, _, _ = c.request("GET", path)
                dt = time.monotonic() - t0
                with lock:
                    counts[st] = counts.get(st, 0) + 1
                    longest[0] = max(longest[0], dt)
                    if first[0] is None:
                        first[0] = t0
                    last[0] = max(last[0], time.monotonic())
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in ports
               for _ in range(clients_per_port)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, longest[0], last[0] - (first[0] or t_start)


def test_cluster_limit_holds_across_three_nodes(cluster_nodes, redis):
    rate, burst, seconds = 20, 20, 4
    nodes = start_nodes(cluster_nodes, rate=rate, burst=burst)
    counts, longest, span = hammer([gw.port for gw in nodes], "/limited", seconds)
    allowed = counts.get(200, 0)
    expected = burst + rate * span
    # GCRA in Redis, one script per decision: exact but for the span's edges
    assert 0.9 * expected - 2 <= allowed <= expected + 2, (counts, span)
    assert set(counts) <= {200, 429}, counts
    # every node let some through: the load was spread, the bucket shared
    per_node = []
    for gw in nodes:
        s = scrape(gw)
        per_node.append(value(s, "portico_requests_total", channel="limited",
                              service="demo.echo", status="200"))
        assert value(s, "portico_ratelimit_cluster_decisions_total", result="allowed") > 0
        assert value(s, "portico_ratelimit_redis_errors_total") == 0
    assert sum(per_node) == allowed and min(per_node) > 0, per_node
    # one key in Redis for the channel's bucket
    assert redis.cmd("EXISTS", "portico:rl:7:limited") == 1


def test_refusal_has_retry_after(cluster_nodes, redis):
    nodes = start_nodes(cluster_nodes, n=1, rate=1, burst=2)
    c = Http(nodes[0].port)
    assert [c.request("GET", "/limited")[0] for _ in range(2)] == [200, 200]
    st, headers, body = c.request("GET", "/limited")
    assert st == 429, body
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["message"] == "rate limit exceeded"
    c.close()


def test_script_flushed_runs_again_with_eval(cluster_nodes, redis):
    # EVALSHA, and EVAL once when Redis has forgotten the script (a restart,
    # SCRIPT FLUSH): the bucket goes on where it was
    nodes = start_nodes(cluster_nodes, n=1, rate=1, burst=3)
    c = Http(nodes[0].port)
    assert [c.request("GET", "/limited")[0] for _ in range(2)] == [200, 200]
    redis.cmd("SCRIPT", "FLUSH")
    assert [c.request("GET", "/limited")[0] for _ in range(2)] == [200, 429]
    c.close()
    assert value(scrape(nodes[0]), "portico_ratelimit_redis_errors_total") == 0


def test_batch_error_bound(cluster_nodes, redis):
    rate, burst, batch, seconds = 20, 20, 10, 4
    nodes = start_nodes(cluster_nodes, rate=rate, burst=burst,
                        extra="batch: %d" % batch)
    counts, _, span = hammer([gw.port for gw in nodes], "/limited", seconds)
    allowed = counts.get(200, 0)
    expected = burst + rate * span
    # documented bound: at most N x nodes above the limit; unspent tokens
    # (dropped after 1 s) make it at worst a little lower
    assert allowed <= expected + batch * len(nodes) + 2, (counts, span)
    assert allowed >= 0.75 * expected, (counts, span)
    batched = sum(value(scrape(gw), "portico_ratelimit_cluster_decisions_total",
                        result="allowed_batch") for gw in nodes)
    assert batched > 0


def outage_lines(gw):
    return [l for l in gw.log_lines("warn") if "Redis unreachable" in l.get("msg", "")]


def test_redis_stopped_mid_load_then_back(cluster_nodes, redis):
    nodes = start_nodes(cluster_nodes, rate=1000, burst=1000)
    ports = [gw.port for gw in nodes]
    result = {}

    def load():
        result["open"] = hammer(ports, "/open", 3, clients_per_port=1)

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.0)
    redis.stop()                       # mid-load
    t.join()
    counts, longest, _ = result["open"]
    assert set(counts) <= {200, 429}, counts
    assert longest < 1.5, longest      # timeout 500ms: nothing hangs

    # fail_open: the node's local limit of 5/s, burst 5 applies now
    c = Http(nodes[0].port)
    time.sleep(1.1)
    sts = [c.request("GET", "/open")[0] for _ in range(12)]
    assert sts.count(200) in (5, 6) and sts.count(429) >= 6, sts
    # fail_closed: 503 with a body that says why
    t0 = time.monotonic()
    st, headers, body = c.request("GET", "/closed")
    assert time.monotonic() - t0 < 1.0
    assert st == 503, body
    msg = json.loads(body)["error"]["message"]
    assert "rate limit unavailable" in msg and "Redis" in msg and "fail_closed" in msg
    assert headers.get("retry-after") == "1"
    c.close()

    for gw in nodes:
        assert len(outage_lines(gw)) == 1, outage_lines(gw)   # once per outage
        s = scrape(gw)
        assert value(s, "portico_ratelimit_redis_errors_total") > 0
        assert value(s, "portico_ratelimit_redis_outages_total") == 1
        assert value(s, "portico_ratelimit_cluster_decisions_total", result="unavailable") \
            >= (1 if gw is nodes[0] else 0)

    redis.start()                      # back: recovery on its own
    back = time.monotonic()
    deadline = time.monotonic() + 10
    for gw in nodes:                   # each node reconnects on its own backoff (<= 2 s)
        while True:
            c = Http(gw.port)
            st = c.request("GET", "/closed")[0]
            c.close()
            if st == 200:
                break
            assert time.monotonic() < deadline, "no recovery after Redis came back"
            time.sleep(0.2)
        assert gw.log_has("Redis reachable again")
    # cluster-wide again (every worker's connection is back within its
    # backoff, 2 s at most): 5 for the three nodes together, not 5 each
    time.sleep(max(1.1, back + 2.5 - time.monotonic()))
    sts = []
    for gw in nodes:
        c = Http(gw.port)
        sts += [c.request("GET", "/open")[0] for _ in range(5)]
        c.close()
    assert sts.count(200) <= 6, sts
    for gw in nodes:
        assert len(outage_lines(gw)) == 1


def test_redis_hung_requests_answered_within_timeout(cluster_nodes, redis):
    nodes = start_nodes(cluster_nodes, n=1, rate=1000, burst=1000, timeout="300ms")
    c = Http(nodes[0].port)
    assert c.request("GET", "/closed")[0] == 200
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        st, _, body = c.request("GET", "/closed")
        took = time.monotonic() - t0
        assert st == 503, body
        assert took < 1.0, took
        t0 = time.monotonic()
        st, _, _ = c.request("GET", "/open")
        assert st == 200 and time.monotonic() - t0 < 1.0
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while c.request("GET", "/closed")[0] != 200:
        assert time.monotonic() < deadline, "no recovery after Redis woke up"
        time.sleep(0.2)
    c.close()
    assert len(outage_lines(nodes[0])) == 1


def test_reload_while_a_decision_waits(cluster_nodes, redis):
    # the request holds its config generation across the wait; a reload
    # meanwhile sends it on with the new generation's channel of that name
    nodes = start_nodes(cluster_nodes, n=1, rate=1000, burst=1000, timeout="3s")
    gw = nodes[0]
    c = Http(gw.port)
    assert c.request("GET", "/limited")[0] == 200
    out = {}
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        def call():
            out["status"] = Http(gw.port).request("GET", "/limited")[0]
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)                  # it waits for Redis now
        with open(gw.config) as f:
            text = f.read()
        with open(gw.config, "w") as f:
            f.write(text.replace("rate: 1000/s, burst: 1000", "rate: 2000/s, burst: 2000"))
        gw.proc.proc.send_signal(signal.SIGHUP)
        assert gw.log_has("config reloaded: generation 2")
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    t.join(10)
    assert out.get("status") == 200, out
    assert c.request("GET", "/limited")[0] == 200
    c.close()


BAD = [
    ("{rate: 10, scope: cluster}", False,
     ":%d: channels.rest[0].rate_limit.scope: cluster needs a cluster: section"),
    ("{rate: 10, scope: everywhere}", True,
     ":%d: channels.rest[0].rate_limit.scope: expected local or cluster"),
    ("{rate: 10, scope: cluster, on_redis_error: retry}", True,
     ":%d: channels.rest[0].rate_limit.on_redis_error: expected fail_open or fail_closed"),
    ("{rate: 10, batch: 5}", True, ":%d: channels.rest[0].rate_limit.batch: only with scope"),
    ("{rate: 10, burst: 10, scope: cluster, batch: 11}", True,
     ":%d: channels.rest[0].rate_limit.batch: at most burst (10)"),
]


@pytest.mark.parametrize("limit,with_cluster,message", BAD)
def test_bad_config_refused_at_its_line(tmp_path, limit, with_cluster, message):
    text = ("cluster:\n  redis: redis://127.0.0.1:6379/0\n" if with_cluster else "") + (
        "channels:\n  rest:\n    - name: a\n      url_path: /a\n      service: demo.echo\n"
        "      rate_limit: %s\n" % limit)
    line = text.count("\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    binary = BINARY or os.path.join(os.path.dirname(__file__), "..", "..", "build", "portico")
    r = subprocess.run([binary, "--check", "-c", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode != 0
    assert message % line in r.stdout, r.stdout
