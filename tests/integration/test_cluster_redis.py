"""Cluster core (docs/cluster.md): the cluster: section, the nodes' Redis
connections, the node registry, GET /cluster and `portico cluster status`,
and what a node does while Redis is down. Every test has its own private
redis-server (redis_support.py) and real portico nodes."""
import json
import re
import os
import socket
import subprocess
import time

import pytest

from amqp_support import ROOT, SOURCE, Http, free_port, scrape, value
from conftest import BASE_CONFIG, Gateway
from redis_support import (RedisServer, cluster_nodes, cluster_yaml, node_config,  # noqa: F401
                           redis, redis_server)

BIN = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")


def check(tmp_path, text, env=None):
    path = tmp_path / "portico.yaml"
    path.write_text(text)
    return subprocess.run([BIN, "--check", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, **(env or {})))


MINIMAL = """
server:
  listen: 127.0.0.1:18080
lua:
  path: %s/lua
""" % ROOT


def line_of(text, needle):
    return text.splitlines().index(needle) + 1


@pytest.mark.parametrize("name,section,needle,expected", [
    ("bad_url", "cluster:\n  redis: http://127.0.0.1:6379\n", "  redis: http://127.0.0.1:6379",
     "cluster.redis: expected redis://host:port/db or rediss://"),
    ("password_in_url", "cluster:\n  redis: redis://:pw@127.0.0.1/0\n",
     "  redis: redis://:pw@127.0.0.1/0", "password_env"),
    ("bad_db", "cluster:\n  redis: redis://127.0.0.1/x\n", "  redis: redis://127.0.0.1/x",
     "database number"),
    ("unknown_key", "cluster:\n  redis: redis://127.0.0.1/0\n  nodes: 3\n", "  nodes: 3",
     "cluster: unknown key 'nodes'"),
    ("missing_env", "cluster:\n  password_env: PT_TEST_NO_SUCH_VAR\n",
     "  password_env: PT_TEST_NO_SUCH_VAR", "PT_TEST_NO_SUCH_VAR is not set"),
    ("bad_timeout", "cluster:\n  timeout: forever\n", "  timeout: forever", "cluster.timeout"),
    ("tls_without_rediss", "cluster:\n  tls: {verify: false}\n", "  tls: {verify: false}",
     "need a rediss:// URL"),
    ("bad_node", "cluster:\n  node: 'a b'\n", "  node: 'a b'", "cluster.node"),
])
def test_bad_cluster_config_refused_at_its_line(tmp_path, name, section, needle, expected):
    text = MINIMAL + section
    r = check(tmp_path, text)
    assert r.returncode != 0, r.stdout
    where = "portico.yaml:%d:" % line_of(text, needle)
    assert where in r.stderr and expected in r.stderr, r.stderr


def test_password_env_set_is_accepted(tmp_path):
    text = MINIMAL + "cluster:\n  password_env: PT_TEST_REDIS_PW\n"
    r = check(tmp_path, text, env={"PT_TEST_REDIS_PW": "s3cret"})
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout + r.stderr


def established(pid):
    """The remote ports of pid's established TCP connections (its socket
    inodes matched in /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and f[9] in inodes:
                ports.append(int(f[2].rsplit(":", 1)[1], 16))
    return ports


def test_node_without_cluster_makes_no_redis_connection(redis, start_gateway):
    gw = start_gateway()
    c = gw.http()
    status, _, body = c.request("GET", "/api/echo?x=1")
    assert status == 200
    c.close()
    time.sleep(0.3)
    assert established(gw.proc.proc.pid) == []  # no Redis, nor anything else
    samples = scrape(gw)
    assert not [k for k in samples if k[0].startswith("portico_redis_")]
    assert "redis" not in gw.log_text()


def test_nodes_serve_with_redis(cluster_nodes, redis, start_gateway):
    gw, = cluster_nodes(1)
    status, _, _ = gw.http().request("GET", "/api/echo?x=1")
    assert status == 200
    assert ("portico_redis_up", ()) in scrape(gw)
    # the registry's connection on the main loop, and only it: workers connect on first use
    assert wait_for(lambda: established(gw.proc.proc.pid).count(redis.port) == 1)
    time.sleep(0.3)
    assert established(gw.proc.proc.pid).count(redis.port) == 1
    # no node name: <hostname>:<port>
    other = start_gateway(BASE_CONFIG + cluster_yaml(redis.url), sub="unnamed")
    view = wait_for(lambda: (lambda v: v if len(v["nodes"]) == 2 else None)(cluster_view(other)))
    assert view["node"] == "%s:%d" % (socket.gethostname(), other.port)


# ---- the registry ------------------------------------------------------------

def cluster_view(gw):
    status, _, body = Http(gw.admin_port).request("GET", "/cluster")
    assert status == 200, body
    return json.loads(body)


def wait_for(fn, timeout=10, interval=0.1):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(interval)


def names(view):
    return sorted(n["name"] for n in view["nodes"])


def status_cli(gw, *args):
    return subprocess.run([BIN, "cluster", "status", "-c", gw.config, *args],
                          capture_output=True, text=True, timeout=30)


def test_three_nodes_see_each_other(cluster_nodes, redis):
    nodes = cluster_nodes(3)
    for gw in nodes:
        view = wait_for(lambda: (lambda v: v if len(v["nodes"]) == 3 else None)(
            cluster_view(gw)))
        assert view, cluster_view(gw)
        assert names(view) == ["node1", "node2", "node3"]
        assert view["configs_differ"] is False
        assert view["redis_up"] is True
        me = [n for n in view["nodes"] if n["self"]]
        assert [n["name"] for n in me] == [view["node"]]
        for n in view["nodes"]:
            assert n["config_differs"] is False
            assert n["version"] and len(n["checksum"]) == 64
            assert n["address"].startswith("127.0.0.1:")
            assert n["started_at"].endswith("Z")
    # the same checksum although each listens elsewhere and has its own name
    sums = {n["checksum"] for n in cluster_view(nodes[0])["nodes"]}
    assert len(sums) == 1
    # the record in Redis: a TTL of three heartbeats (500ms)
    ttl = redis.cmd("PTTL", "portico:node:node2")
    assert 0 < ttl <= 1500
    # portico cluster status: through the admin endpoint, and from Redis itself
    for args in ((), ("--redis",)):
        r = status_cli(nodes[1], *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "3 nodes, one config" in r.stdout, r.stdout
        for name in ("node1", "node2", "node3"):
            assert name in r.stdout
        assert "(this node)" in [l for l in r.stdout.splitlines() if l.startswith("node2")][0]
    r = status_cli(nodes[0], "--json")
    assert r.returncode == 0
    assert names(json.loads(r.stdout)) == ["node1", "node2", "node3"]
    # GET /cluster lists nodes seen recently only: a second node set cleans up
    assert redis.cmd("ZCARD", "portico:nodes") == 3


def test_a_node_with_another_config_is_flagged(cluster_nodes, redis):
    nodes = cluster_nodes(2)
    odd = cluster_nodes(1, names=["odd"], extra_yaml="""
        cache:
          default: {max_entries: 500}
        """)[0]
    view = wait_for(lambda: (lambda v: v if len(v["nodes"]) == 3 else None)(
        cluster_view(nodes[0])))
    assert view, cluster_view(nodes[0])
    assert view["configs_differ"] is True
    flagged = {n["name"]: n["config_differs"] for n in view["nodes"]}
    assert flagged == {"node1": False, "node2": False, "odd": True}
    # the odd node sees itself in the minority too
    view = cluster_view(odd)
    assert {n["name"]: n["config_differs"] for n in view["nodes"]}["odd"] is True
    r = status_cli(odd)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "configs differ" in r.stdout
    assert "CONFIG DIFFERS" in [l for l in r.stdout.splitlines() if l.startswith("odd")][0]
    r = status_cli(nodes[0], "--redis")
    assert r.returncode == 1


def test_a_stopped_node_disappears(cluster_nodes, redis, tmp_path):
    a, b = cluster_nodes(2)
    c = Gateway(tmp_path / "killed", node_config(redis.url, "node3"), tmp=a.tmp)
    assert wait_for(lambda: len(cluster_view(a)["nodes"]) == 3)
    # a clean stop deletes the record at once
    assert b.proc.stop() == 0
    assert wait_for(lambda: names(cluster_view(a)) == ["node1", "node3"], timeout=3)
    # a killed node's record expires within three heartbeats (1.5 s)
    c.proc.proc.kill()
    c.proc.proc.wait()
    t0 = time.time()
    assert wait_for(lambda: names(cluster_view(a)) == ["node1"], timeout=5)
    assert time.time() - t0 < 2.5  # TTL + one heartbeat to see it


def test_cluster_endpoint_without_cluster_section(start_gateway):
    gw = start_gateway()
    status, _, body = Http(gw.admin_port).request("GET", "/cluster")
    assert status == 404
    assert b"no cluster: section" in body
    r = subprocess.run([BIN, "cluster", "status", "-c", gw.config], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "no cluster: section" in r.stderr


# ---- Redis down ----------------------------------------------------------------

def test_redis_down_keeps_serving_counts_and_reconnects(cluster_nodes, redis):
    gw, = cluster_nodes(1)
    assert wait_for(lambda: cluster_view(gw)["redis_up"] and cluster_view(gw)["nodes"])
    before = scrape(gw)
    assert value(before, "portico_redis_up") == 1
    assert value(before, "portico_redis_commands_total") > 0
    assert value(before, "portico_redis_roundtrip_seconds_count") > 0
    redis.stop()
    t0 = time.time()
    c = gw.http()
    for _ in range(20):  # serving on, at its usual pace
        status, _, _ = c.request("GET", "/api/echo?x=1")
        assert status == 200
    assert time.time() - t0 < 2
    assert wait_for(lambda: cluster_view(gw)["redis_up"] is False, timeout=3)
    view = cluster_view(gw)
    assert names(view) == ["node1"]  # the last view, still shown
    assert wait_for(lambda: value(scrape(gw), "portico_redis_failures_total", reason="down") > 0,
                    timeout=5)
    s = scrape(gw)
    assert value(s, "portico_redis_up") == 0
    assert value(s, "portico_redis_failures_total", reason="lost") + \
        value(s, "portico_redis_failures_total", reason="connect") > 0
    assert gw.log_has("commands fail at once until it is back")
    r = status_cli(gw, "--redis")
    assert r.returncode == 2 and "cannot read the registry" in r.stderr
    redis.start()
    assert wait_for(lambda: value(scrape(gw), "portico_redis_up") == 1, timeout=5)
    redis.cmd("FLUSHALL")  # a Redis that came back empty: the node registers again
    assert wait_for(lambda: redis.cmd("EXISTS", "portico:node:node1") == 1, timeout=3)
    assert wait_for(lambda: cluster_view(gw)["redis_up"] is True, timeout=3)
    assert gw.log_has("connected again")
    assert [e for e in gw.log_lines() if e.get("level") == "error"] == []


# ---- AUTH, SELECT, TLS ---------------------------------------------------------

def test_auth_from_password_env_and_select_from_the_url(tmp_path, monkeypatch, start_gateway):
    r = RedisServer(password="pw-" + os.urandom(6).hex())
    try:
        monkeypatch.setenv("PT_TEST_REDIS_PASSWORD", r.password)
        url = "redis://127.0.0.1:%d/5" % r.port
        gw = start_gateway(node_config(url, "authed", cluster_extra="""
            password_env: PT_TEST_REDIS_PASSWORD
            key_prefix: "t1:"
            """))
        c = r.connect()
        c.cmd("SELECT", "5")
        assert wait_for(lambda: c.cmd("EXISTS", "t1:node:authed") == 1, timeout=5)
        c.cmd("SELECT", "0")
        assert c.cmd("EXISTS", "t1:node:authed") == 0
        c.close()
        assert r.password not in gw.log_text()
        assert cluster_view(gw)["redis_up"] is True
    finally:
        r.close()


def test_wrong_password_is_logged_and_counted(tmp_path, monkeypatch, start_gateway):
    r = RedisServer(password="right")
    try:
        monkeypatch.setenv("PT_TEST_REDIS_PASSWORD", "wrong")
        gw = start_gateway(node_config(r.url, "denied",
                                       cluster_extra="password_env: PT_TEST_REDIS_PASSWORD"))
        assert gw.log_has("refused the connection's set-up")
        assert wait_for(lambda: value(scrape(gw), "portico_redis_failures_total", reason="auth") > 0,
                        timeout=5)
        status, _, _ = gw.http().request("GET", "/api/echo?x=1")
        assert status == 200
        assert "wrong" not in gw.log_text()
    finally:
        r.close()


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory):
    from test_tls import make_ca, make_cert
    d = tmp_path_factory.mktemp("redis-tls")
    ca = make_ca(d)
    cert, key = make_cert(d, ca, "redis", dns=["localhost"], ips=["127.0.0.1"])
    other = make_ca(d, "other")
    return {"ca": ca[0], "cert": cert, "key": key, "other_ca": other[0]}


def test_rediss_with_a_ca_file(tls_certs, start_gateway, tmp_path):
    r = RedisServer(tls=tls_certs)
    try:
        gw = start_gateway(node_config(r.url, "secure", cluster_extra="""
            tls: {ca_file: %s}
            """ % tls_certs["ca"]))
        assert wait_for(lambda: r.cmd("EXISTS", "portico:node:secure") == 1, timeout=5)
        assert cluster_view(gw)["redis_up"] is True
        # a CA that did not sign Redis's certificate: refused, counted, serving on
        bad = start_gateway(node_config(r.url, "doubtful", cluster_extra="""
            tls: {ca_file: %s}
            """ % tls_certs["other_ca"]), sub="bad")
        assert wait_for(lambda: value(scrape(bad), "portico_redis_failures_total",
                                      reason="lost") + value(scrape(bad),
                                      "portico_redis_failures_total", reason="connect") > 0,
                        timeout=5)
        assert r.cmd("EXISTS", "portico:node:doubtful") == 0
        assert value(scrape(bad), "portico_redis_up") == 0
        status, _, _ = bad.http().request("GET", "/api/echo?x=1")
        assert status == 200
    finally:
        r.close()


def test_a_reload_publishes_the_new_checksum(cluster_nodes, redis):
    a, b = cluster_nodes(2)
    assert wait_for(lambda: len(cluster_view(a)["nodes"]) == 2)
    assert cluster_view(a)["configs_differ"] is False
    with open(b.config, "a") as f:
        f.write("cache:\n  default: {max_entries: 777}\n")
    status, _, body = Http(b.admin_port).request("POST", "/reload")
    assert status == 200, body
    assert wait_for(lambda: cluster_view(a)["configs_differ"], timeout=3)
    view = cluster_view(b)
    assert view["configs_differ"] is True
    assert {n["name"] for n in view["nodes"] if n["config_differs"]} in ({"node1"}, {"node2"})


def test_a_stop_while_redis_is_down_or_hung_is_quick(cluster_nodes, redis):
    a, b = cluster_nodes(2)
    assert wait_for(lambda: len(cluster_view(a)["nodes"]) == 2)
    redis.stop()
    assert wait_for(lambda: cluster_view(a)["redis_up"] is False, timeout=3)
    t0 = time.time()
    assert a.proc.stop() == 0
    assert time.time() - t0 < 3
    redis.start()
    assert wait_for(lambda: cluster_view(b)["redis_up"] is True, timeout=5)
    # a Redis that accepts but does not answer: the stop's DEL waits one timeout (1s)
    redis.cmd("CLIENT", "PAUSE", "2000", "ALL")
    t0 = time.time()
    assert b.proc.stop() == 0
    assert time.time() - t0 < 3.5


def test_a_reload_that_changes_cluster_warns_it_needs_a_restart(cluster_nodes, redis):
    gw, = cluster_nodes(1)
    text = open(gw.config).read().replace("heartbeat: 500ms", "heartbeat: 700ms")
    with open(gw.config, "w") as f:
        f.write(text)
    status, _, body = Http(gw.admin_port).request("POST", "/reload")
    assert status == 200, body
    assert gw.log_has("the cluster: section changed: it takes effect after a restart")


def make_client_cert(d, ca, name):
    from test_tls import openssl
    d = str(d)
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    cert, ext = os.path.join(d, name + ".pem"), os.path.join(d, name + ".ext")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=" + name, "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", "7",
            "-days", "30", "-extfile", ext, "-out", cert)
    return cert, key


def test_rediss_with_a_client_certificate(tmp_path, start_gateway):
    from test_tls import make_ca, make_cert
    ca = make_ca(tmp_path / "pki")
    cert, key = make_cert(tmp_path / "pki", ca, "redis", dns=["localhost"], ips=["127.0.0.1"])
    ccert, ckey = make_client_cert(tmp_path / "pki", ca, "portico-node")
    r = RedisServer(tls={"ca": ca[0], "cert": cert, "key": key, "auth_clients": True},
                    start=False)
    r.proc = subprocess.Popen(r.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _listening(r.port), timeout=10)
        gw = start_gateway(node_config(r.url, "mtls", cluster_extra="""
            tls: {ca_file: %s, cert: %s, key: %s}
            """ % (ca[0], ccert, ckey)))
        assert wait_for(lambda: cluster_view(gw)["redis_up"] is True, timeout=5)
        assert names(wait_for(lambda: (lambda v: v if v["nodes"] else None)(cluster_view(gw)))) \
            == ["mtls"]
        anon = start_gateway(node_config(r.url, "anonymous", cluster_extra="""
            tls: {ca_file: %s}
            """ % ca[0]), sub="anon")
        assert wait_for(lambda: value(scrape(anon), "portico_redis_failures_total",
                                      reason="connect") > 0, timeout=5)
        assert cluster_view(anon)["redis_up"] is False
        assert [n["name"] for n in cluster_view(gw)["nodes"]] == ["mtls"]
    finally:
        r.stop()
        r.close()


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_cluster_endpoint_behind_admin_users(redis, start_gateway):
    import base64
    h = subprocess.run([BIN, "hash-password"], input=b"ops-pass", capture_output=True, timeout=60)
    assert h.returncode == 0, h.stderr
    text = node_config(redis.url, "gated").replace(
        "admin:\n  listen: 127.0.0.1:{admin_port}\n",
        "admin:\n  listen: 127.0.0.1:{admin_port}\n  users:\n    - username: ops\n"
        "      password_hash: \"%s\"\n" % h.stdout.decode().strip().replace("{", "{{")
        .replace("}", "}}"))
    assert "users:" in text
    gw = start_gateway(text)
    status, _, _ = Http(gw.admin_port).request("GET", "/cluster")
    assert status == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-pass").decode(),
            "X-Portico-Console": "1"}
    assert wait_for(lambda: json.loads(Http(gw.admin_port).request(
        "GET", "/cluster", headers=auth)[2])["nodes"], timeout=5)
    env = dict(os.environ, PORTICO_ADMIN_AUTH="ops:ops-pass")
    r = subprocess.run([BIN, "cluster", "status", "-c", gw.config], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0 and "(admin 127.0.0.1:" in r.stdout, r.stdout + r.stderr
    env.pop("PORTICO_ADMIN_AUTH")
    r = subprocess.run([BIN, "cluster", "status", "-c", gw.config], capture_output=True,
                       text=True, timeout=30, env=env)
    # no credentials: said so, and the registry is read in Redis instead
    assert r.returncode == 0 and "answered 401" in r.stderr and "(redis)" in r.stdout, \
        r.stdout + r.stderr
