"""Caches with `backend: redis` (docs/cluster-cache.md): three portico
nodes share one private redis-server; a value set on one node is read on
another, incr and add are atomic under concurrent clients on all three, a
near cache serves a stale value for at most its ttl, Redis down gives the
service a clear error within the time-out (counted in
portico_cache_failures_total) and recovery follows when it returns, a value
over max_value is refused, and a reload during a pending call frees nothing
that call uses."""
import json
import os
import subprocess
import textwrap
import threading
import time

from amqp_support import ROOT, Http, scrape, value
from conftest import config_head
from redis_support import redis, redis_server  # noqa: F401 (fixtures)

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

SERVICE = """
    local service = require "portico.service"
    local M = service.new { name = "cc.op" }
    function M:handle()
      local p = self.request.payload or {}
      local c = self.caches[p.cache or "shared"]
      local out = {}
      local t0 = require("portico.host").now()
      if p.op == "get" then out.value, out.err = c:get(p.key)
      elseif p.op == "set" then out.ok, out.err = c:set(p.key, p.value, p.ttl)
      elseif p.op == "add" then out.ok, out.err = c:add(p.key, p.value, p.ttl)
      elseif p.op == "incr" then
        for _ = 1, p.n or 1 do
          out.value, out.err = c:incr(p.key, p.by, p.ttl)
          if out.err then break end
        end
      elseif p.op == "delete" then out.ok, out.err = c:delete(p.key)
      elseif p.op == "expire" then out.ok, out.err = c:expire(p.key, p.ttl)
      elseif p.op == "big" then out.ok, out.err = c:set(p.key, string.rep("x", p.n))
      end
      out.took = require("portico.host").now() - t0
      self.response.payload = out
    end
    return M
"""

CACHES = """cache:
  caches:
    shared:
      backend: redis
      ttl: 10m
      max_value: 4KB
    near:
      backend: redis
      near_cache:
        ttl: 1s
        max_entries: 100
    local: {{max_entries: 10}}
"""

CHANNELS = """channels:
  rest:
    - name: cc
      url_path: /cc
      methods: [POST]
      service: cc.op
"""


def node_config(redis_port, workers=1, timeout="1s", caches=CACHES):
    return (config_head("workers: %d" % workers, dirs="{svc}") +
            "cluster:\n  redis: redis://127.0.0.1:%d/0\n  timeout: %s\n  key_prefix: \"cc:\"\n"
            % (redis_port, timeout) + caches + CHANNELS)


def services(tmp_path):
    d = tmp_path / "svc"
    (d / "cc").mkdir(parents=True, exist_ok=True)
    (d / "cc" / "op.lua").write_text(textwrap.dedent(SERVICE))
    return str(d)


def start_nodes(start_gateway, tmp_path, redis, n=3, **kw):
    svc = services(tmp_path)
    return [start_gateway(node_config(redis.port, **kw), sub="n%d" % i, svc=svc)
            for i in range(n)]


def op(node, **body):
    st, _, data = Http(node.port, timeout=10).post("/cc", body)
    assert st == 200, data
    return json.loads(data)


def test_value_set_on_one_node_is_read_on_another(start_gateway, tmp_path, redis):
    a, b, c = start_nodes(start_gateway, tmp_path, redis)
    for key, v in (("s", "hello"), ("t", {"user": "ann", "n": [1, 2]}), ("n", 42.5),
                   ("f", False)):
        assert op(a, op="set", key=key, value=v)["ok"] is True
        assert op(b, op="get", key=key)["value"] == v
        assert op(c, op="get", key=key)["value"] == v
    # the keys are the cluster's prefix + cache name: another tool sees them
    assert redis.cmd("GET", "cc:cache:shared:s") == b"shello"
    ttl = redis.cmd("PTTL", "cc:cache:shared:s")
    assert 590000 < ttl <= 600000  # the cache's ttl: 10m
    assert op(b, op="delete", key="s")["ok"] is True
    assert "value" not in op(c, op="get", key="s")
    assert op(a, op="delete", key="s")["ok"] is False
    assert op(c, op="expire", key="n", ttl=60)["ok"] is True
    assert 0 < redis.cmd("PTTL", "cc:cache:shared:n") <= 60000
    # incr of a value that is not a number is the caller's mistake: 500, the reason logged
    a.expect_error("is not a number")
    st, _, _ = Http(a.port).post("/cc", {"op": "incr", "key": "t"})
    assert st == 500
    assert a.log_has("is not a number")


def test_incr_and_add_are_atomic_across_three_nodes(start_gateway, tmp_path, redis):
    nodes = start_nodes(start_gateway, tmp_path, redis, workers=2)
    errors, wins = [], []

    def client(i):
        try:
            node = nodes[i % 3]
            for _ in range(10):
                out = op(node, op="incr", key="hits", n=10)
                assert out.get("err") is None, out
            for k in range(20):
                if op(nodes[(i + k) % 3], op="add", key="lock%d" % k, value=i)["ok"]:
                    wins.append(k)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert op(nodes[0], op="get", key="hits")["value"] == 9 * 10 * 10
    assert sorted(wins) == list(range(20))  # each key added by exactly one client
    # an absent key that incr makes gets the ttl; an existing one keeps its own
    assert op(nodes[1], op="incr", key="fresh", by=2, ttl=30)["value"] == 2
    assert 0 < redis.cmd("PTTL", "cc:cache:shared:fresh") <= 30000
    assert op(nodes[2], op="incr", key="fresh", by=0.5, ttl=500)["value"] == 2.5
    assert redis.cmd("PTTL", "cc:cache:shared:fresh") <= 30000


def test_near_cache_staleness_is_bounded_by_its_ttl(start_gateway, tmp_path, redis):
    a, b = start_nodes(start_gateway, tmp_path, redis, n=2)
    assert op(a, op="set", cache="near", key="k", value="v1")["ok"] is True
    assert op(b, op="get", cache="near", key="k")["value"] == "v1"  # b keeps a copy for 1s
    t0 = time.time()
    assert op(a, op="set", cache="near", key="k", value="v2")["ok"] is True
    assert op(a, op="get", cache="near", key="k")["value"] == "v2"  # a's own write: at once
    seen = op(b, op="get", cache="near", key="k")["value"]
    assert seen == "v1" or time.time() - t0 >= 1.0  # the near copy, within its ttl
    while op(b, op="get", cache="near", key="k")["value"] != "v2":
        assert time.time() - t0 < 1.5, "b served its near copy past the near_cache ttl"
        time.sleep(0.05)
    # a near hit is a hit without a round trip, counted like the others
    s = scrape(b)
    assert value(s, "portico_cache_hits_total", cache="near") >= 2
    assert value(s, "portico_cache_entries", cache="near") == 1


def test_redis_down_is_a_clear_error_in_time_and_counted(start_gateway, tmp_path, redis):
    (a,) = start_nodes(start_gateway, tmp_path, redis, n=1, timeout="500ms")
    assert op(a, op="set", key="k", value="v")["ok"] is True
    redis.stop()
    t0 = time.time()
    out = op(a, op="get", key="k")
    assert time.time() - t0 < 2.0  # no hang past the time-out
    assert "value" not in out
    assert out["err"].startswith("cache 'shared' get: Redis: "), out
    out = op(a, op="incr", key="n")
    assert out["err"].startswith("cache 'shared' incr: Redis: "), out
    assert value(scrape(a), "portico_cache_failures_total", cache="shared") >= 2
    assert a.log_has("cache 'shared': Redis: ")
    redis.start()
    deadline = time.time() + 10
    while True:
        out = op(a, op="set", key="k", value="back")
        if out.get("ok"):
            break
        assert time.time() < deadline, out
        time.sleep(0.2)
    assert op(a, op="get", key="k")["value"] == "back"


def test_a_value_over_max_value_is_refused(start_gateway, tmp_path, redis):
    (a,) = start_nodes(start_gateway, tmp_path, redis, n=1)
    out = op(a, op="big", key="b", n=5000)
    assert out.get("ok") is None
    assert "5000 bytes, more than the cache's max_value (4096)" in out["err"], out
    assert redis.cmd("EXISTS", "cc:cache:shared:b") == 0
    assert op(a, op="big", key="b", n=4000)["ok"] is True


def test_reload_during_a_pending_call(start_gateway, tmp_path, redis):
    (a,) = start_nodes(start_gateway, tmp_path, redis, n=1, timeout="5s")
    assert op(a, op="set", key="k", value="kept")["ok"] is True
    redis.cmd("CLIENT", "PAUSE", "1500")  # commands wait, they do not fail
    holder = {}
    t = threading.Thread(target=lambda: holder.update(out=op(a, op="get", key="k")))
    t.start()
    time.sleep(0.3)
    # the new generation drops the cache the call waits on, and gives "near" a
    # new near cache (another object under the same name)
    with open(a.config) as f:
        text = f.read()
    new = text.replace("    shared:\n      backend: redis\n      ttl: 10m\n"
                       "      max_value: 4KB\n", "").replace("ttl: 1s", "ttl: 2s")
    assert new.count("backend: redis") == 1 and "ttl: 2s" in new
    with open(a.config, "w") as f:
        f.write(new)
    st, _, body = Http(a.admin_port).request("POST", "/reload")
    assert st == 200, body
    assert a.log_has("config reloaded: generation 2")
    t.join(10)
    assert holder["out"]["value"] == "kept"
    assert holder["out"]["took"] >= 0.5
    a.expect_error("no cache named 'shared'")
    st, _, _ = Http(a.port).post("/cc", {"op": "get", "key": "k"})
    assert st == 500  # the cache is gone from the new generation
    assert op(a, op="set", cache="near", key="x", value=1)["ok"] is True
    assert op(a, op="get", cache="near", key="x")["value"] == 1
    s = scrape(a)  # one series per name: the replaced cache is not shown
    assert value(s, "portico_cache_sets_total", cache="near") == 1
    assert value(s, "portico_cache_entries", cache="near") == 1


def check(tmp_path, caches, cluster=True):
    path = tmp_path / "bad.yaml"
    text = "channels: {}\n" + textwrap.dedent(caches)
    if cluster:
        text = "cluster:\n  redis: redis://127.0.0.1:1/0\n" + text
    path.write_text(text)
    r = subprocess.run([BIN, "--check", "-c", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    return r.stderr


def test_bad_redis_cache_configs_are_refused_at_their_line(tmp_path):
    err = check(tmp_path, """
        cache:
          caches:
            s: {backend: redis}
    """, cluster=False)
    assert "bad.yaml:5: cache.caches.s.backend: redis needs a cluster: section" in err, err
    err = check(tmp_path, """
        cache:
          caches:
            s: {backend: redis, max_entries: 5}
    """)
    assert "bad.yaml:7:" in err and "max_entries" in err, err
    err = check(tmp_path, """
        cache:
          caches:
            s:
              backend: redis
              near_cache: {max_entries: 5}
    """)
    assert "bad.yaml:9: cache.caches.s.near_cache.ttl: expected" in err, err
    err = check(tmp_path, """
        cache:
          caches:
            s: {backend: disk}
    """)
    assert "cache.caches.s.backend: expected memory or redis" in err, err
