"""Cluster core (docs/cluster.md): the cluster: section, the nodes' Redis
connections, the node registry, GET /cluster and `portico cluster status`,
and what a node does while Redis is down. Every test has its own private
redis-server (redis_support.py) and real portico nodes."""
import json
import os
import socket
import subprocess
import time

import pytest

from amqp_support import ROOT, SOURCE, Http, free_port, scrape, value
from conftest import BASE_CONFIG
from redis_support import RedisServer, cluster_nodes, cluster_yaml, redis, redis_server  # noqa: F401

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


def connections_to(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        rem, st = f[2], f[3]
        if st == "01" and rem.endswith(":%04X" % port) and rem.startswith("0100007F"):
            n += 1
    return n


def test_node_without_cluster_makes_no_redis_connection(redis, start_gateway):
    gw = start_gateway()
    before = redis.cmd("INFO", "clients")
    status, _, body = gw.http().request("GET", "/api/echo?x=1")
    assert status == 200
    time.sleep(0.3)
    clients = int([l for l in before.decode().split("\r\n") if l.startswith("connected_clients:")]
                  [0].split(":")[1])
    assert clients <= 1  # our INFO's own
    samples = scrape(gw)
    assert not [k for k in samples if k[0].startswith("portico_redis_")]


def test_nodes_serve_with_redis(cluster_nodes):
    nodes = cluster_nodes(2)
    for gw in nodes:
        status, _, _ = gw.http().request("GET", "/api/echo?x=1")
        assert status == 200
        samples = scrape(gw)
        assert ("portico_redis_up", ()) in samples
