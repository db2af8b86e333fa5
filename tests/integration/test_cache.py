"""self.cache across the workers of one process: values one worker sets are
read by the other, incr is atomic across workers, LRU eviction and ttl
expiry are counted in /metrics, a reload keeps a kept cache's content and
applies its new caps, and bad values or names answer 500 with the reason
in the log."""
import json
import os
import textwrap
import threading
import time

from amqp_support import Http, scrape, value
from conftest import config_head

CACHE_SERVICE = """
    local service = require "portico.service"
    local host = require "portico.host"
    local M = service.new { name = "test.cache" }
    function M:handle()
      local p = self.request.payload or {}
      local c = p.cache and self.caches[p.cache] or self.cache
      local out = { worker = host.worker }
      if p.op == "get" then out.value = c:get(p.key)
      elseif p.op == "set" then out.ok, out.err = c:set(p.key, p.value, p.ttl)
      elseif p.op == "add" then out.ok, out.err = c:add(p.key, p.value, p.ttl)
      elseif p.op == "incr" then out.value, out.err = c:incr(p.key, p.by, p.ttl)
      elseif p.op == "delete" then out.ok = c:delete(p.key)
      elseif p.op == "fill" then
        for i = 1, p.n do c:set(p.key .. i, p.value) end
      elseif p.op == "bad_table" then c:set(p.key, { f = function() end })
      elseif p.op == "big" then out.ok, out.err = c:set(p.key, string.rep("x", p.n))
      end
      self.response.payload = out
    end
    return M
"""

CONFIG = config_head("workers: 2") + """cache:
  default: {{max_entries: 1000, max_bytes: 1MB}}
  caches:
{caches}
channels:
  rest:
    - name: cache
      url_path: /cache
      methods: [POST]
      service: test.cache
"""

CACHES = """    small: {max_entries: 5}
    tiny: {max_bytes: 2KB}
    gone: {}
"""


def start(start_gateway, tmp_path, caches=CACHES):
    (tmp_path / "services" / "test").mkdir(parents=True, exist_ok=True)
    (tmp_path / "services" / "test" / "cache.lua").write_text(textwrap.dedent(CACHE_SERVICE))
    return start_gateway(CONFIG, caches=caches)


def call(gw, conn=None, **payload):
    """One call of test.cache, on conn or a new connection (so either worker)."""
    c = conn or Http(gw.port)
    try:
        status, _, body = c.post("/cache", payload)
    finally:
        if conn is None:
            c.close()
    return status, json.loads(body)


def ok(gw, conn=None, **payload):
    status, out = call(gw, conn, **payload)
    assert status == 200, out
    return out


def test_a_value_set_by_one_worker_is_read_by_the_other(start_gateway, tmp_path):
    gw = start(start_gateway, tmp_path)
    setter = ok(gw, op="set", key="k", value={"name": "ann", "tags": ["a", "b"]})["worker"]
    readers = set()
    for _ in range(200):  # new connections: the kernel spreads them over both listeners
        out = ok(gw, op="get", key="k")
        assert out["value"] == {"name": "ann", "tags": ["a", "b"]}
        readers.add(out["worker"])
        if readers - {setter}:
            break
    assert readers - {setter}, "no read reached the other worker"
    for v in ["text", 12.5, True, False]:
        ok(gw, op="set", key="v", value=v)
        assert ok(gw, op="get", key="v")["value"] == v
    assert "value" not in ok(gw, op="get", key="absent")
    assert ok(gw, op="add", key="k", value=1)["ok"] is False
    assert ok(gw, op="add", key="new", value=1)["ok"] is True
    assert ok(gw, op="delete", key="new")["ok"] is True
    assert ok(gw, op="delete", key="new")["ok"] is False
    s = scrape(gw)
    assert value(s, "portico_cache_hits_total", cache="default") >= 5
    assert value(s, "portico_cache_misses_total", cache="default") >= 1


def test_incr_is_atomic_across_workers(start_gateway, tmp_path):
    gw = start(start_gateway, tmp_path)
    threads, per_thread = 8, 25
    workers, errors, lock = set(), [], threading.Lock()

    def run():
        for _ in range(per_thread):
            try:
                out = ok(gw, op="incr", key="n")  # a new connection each time
                with lock:
                    workers.add(out["worker"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert workers == {1, 2}
    assert ok(gw, op="get", key="n")["value"] == threads * per_thread
    assert ok(gw, op="incr", key="n", by=-0.5)["value"] == threads * per_thread - 0.5


def test_eviction_expiry_and_sizes_are_counted(start_gateway, tmp_path):
    gw = start(start_gateway, tmp_path)
    ok(gw, op="fill", cache="small", key="k", n=20, value="v")
    s = scrape(gw)
    assert value(s, "portico_cache_entries", cache="small") == 5
    assert value(s, "portico_cache_evictions_total", cache="small") == 15
    assert value(s, "portico_cache_sets_total", cache="small") == 20
    assert value(s, "portico_cache_max_entries", cache="small") == 5
    # least recently used go first: the last five stay
    assert "value" not in ok(gw, op="get", cache="small", key="k15")
    assert ok(gw, op="get", cache="small", key="k16")["value"] == "v"
    # bytes: each entry is key + value + 96
    ok(gw, op="fill", cache="tiny", key="b", n=30, value="x" * 100)
    s = scrape(gw)
    assert value(s, "portico_cache_bytes", cache="tiny") <= 2048
    assert value(s, "portico_cache_evictions_total", cache="tiny") > 0
    assert value(s, "portico_cache_bytes", cache="tiny") == \
        value(s, "portico_cache_entries", cache="tiny") * (3 + 100 + 96)  # b21..b30 stay
    # an entry larger than the whole cache is refused, not raised
    out = ok(gw, op="big", cache="tiny", key="huge", n=4096)
    assert "ok" not in out and "larger than the cache's max_bytes" in out["err"]
    # ttl: gone once it passed, and counted as expired
    ok(gw, op="set", key="short", value=1, ttl=0.2)
    time.sleep(0.6)
    assert "value" not in ok(gw, op="get", key="short")
    assert value(scrape(gw), "portico_cache_expired_total", cache="default") == 1


def test_reload_keeps_content_and_applies_new_caps(start_gateway, tmp_path):
    gw = start(start_gateway, tmp_path)
    ok(gw, op="set", key="kept", value="yes")
    ok(gw, op="fill", cache="small", key="k", n=5, value="v")
    ok(gw, op="set", cache="gone", key="x", value=1)
    with open(gw.config) as f:
        text = f.read()
    with open(gw.config, "w") as f:
        f.write(text.replace("small: {max_entries: 5}", "small: {max_entries: 2}")
                .replace("    gone: {}\n", "    added: {ttl: 1m}\n"))
    admin = Http(gw.admin_port)
    st, _, body = admin.request("POST", "/reload")
    assert st == 200, body
    assert gw.log_has("config reloaded: generation 2")
    for _ in range(10):
        assert ok(gw, op="get", key="kept")["value"] == "yes"
    # gone goes once both workers have let generation 1 go (they take 2 on their own loops)
    deadline = time.time() + 10
    while ("portico_cache_entries", (("cache", "gone"),)) in scrape(gw):
        assert time.time() < deadline, "cache 'gone' outlived generation 1"
        time.sleep(0.05)
    s = scrape(gw)
    assert value(s, "portico_cache_entries", cache="small") == 2
    assert value(s, "portico_cache_evictions_total", cache="small") == 3
    assert ok(gw, op="get", cache="small", key="k5")["value"] == "v"
    assert ("portico_cache_entries", (("cache", "added"),)) in s
    ok(gw, op="set", cache="added", key="a", value=1)
    gw.expect_error("no cache named 'gone'")
    status, out = call(gw, op="get", cache="gone", key="x")
    assert status == 500
    # "self.caches: no cache named..." on a worker that never used it, "cache 'gone' get:
    # no cache named..." on one that did (self.caches keeps what it looked up)
    assert gw.log_has("no cache named 'gone' (cache.caches in the config)")


def test_bad_values_answer_500_with_the_reason_logged(start_gateway, tmp_path):
    gw = start(start_gateway, tmp_path)
    gw.expect_error("handler raised")
    status, out = call(gw, op="bad_table", key="t")
    assert status == 500 and "internal error" in out["error"]["message"]
    assert gw.log_has("cache 'default' set: the table cannot be encoded as JSON")
    ok(gw, op="set", key="s", value="text")
    status, _ = call(gw, op="incr", key="s")
    assert status == 500
    assert gw.log_has("cache 'default' incr: the value under key \\\"s\\\" is not a number")
    status, _ = call(gw, op="get", key="")
    assert status == 500
    assert gw.log_has("cache 'default' get: the key must be a string of 1 to 1024 bytes, got 0 bytes")
    status, _ = call(gw, op="get", key="x" * 1025)
    assert status == 500
    status, _ = call(gw, op="set", key="k", value=1, ttl=-1)
    assert status == 500
    assert gw.log_has("ttl must be a number of seconds from 0 to 31536000, got -1")
    status, _ = call(gw, op="get", cache="nope", key="k")
    assert status == 500
    assert gw.log_has("self.caches: no cache named 'nope'")
    assert ok(gw, op="get", key="s")["value"] == "text"  # nothing was stored by the failures


def test_config_errors_name_the_line(start_gateway, tmp_path):
    import subprocess
    from amqp_support import ROOT
    binary = os.environ.get("PORTICO_BIN", os.path.join(ROOT, "build", "portico"))
    cases = [
        ("    small: {max_entries: 0}\n", "cache.caches.small.max_entries: expected a count"),
        ("    small: {max_bytes: 10}\n", "cache.caches.small.max_bytes: expected a size from 1KB"),
        ("    small: {ttl: soon}\n", "cache.caches.small.ttl: expected a duration"),
        ("    small: {size: 1}\n", "unknown key 'size'"),
        ("    default: {}\n", "'default' is set under cache.default"),
        ("    bad/name: {}\n", "a name must be 1 to 64 of"),
    ]
    (tmp_path / "services").mkdir(exist_ok=True)
    for caches, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(CONFIG.format(port=1, admin_port=2, root=ROOT, tmp=str(tmp_path),
                                      caches=caches))
        r = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True, text=True)
        assert r.returncode != 0 and message in r.stderr, (caches, r.stderr)
        assert "bad.yaml:" in r.stderr


def test_a_cache_call_outside_a_worker_is_refused_with_the_reason(tmp_path):
    """Service files are checked on the main thread first, where no cache is
    reached: a file that uses one while it loads is refused, saying so."""
    import subprocess
    from amqp_support import ROOT
    binary = os.environ.get("PORTICO_BIN", os.path.join(ROOT, "build", "portico"))
    (tmp_path / "services" / "test").mkdir(parents=True)
    (tmp_path / "services" / "test" / "cache.lua").write_text(textwrap.dedent("""
        local service = require "portico.service"
        local warm = require("portico.cache").new().default:get("warm")
        return service.new { name = "test.cache" }
    """))
    path = tmp_path / "portico.yaml"
    path.write_text(CONFIG.format(port=1, admin_port=2, root=ROOT, tmp=str(tmp_path),
                                  caches="    s: {}\n"))
    r = subprocess.run([binary, "--check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "cache.lua:3: cache 'default' get: caches are reached from a worker only" in r.stderr, \
        r.stderr
