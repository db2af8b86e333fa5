"""Redis for the cluster tests: a private redis-server per test module, a
small RESP client to look at what the nodes wrote, and portico nodes that
share one Redis.

    from redis_support import redis_server, cluster_nodes, RedisServer

    def test_x(redis_server, cluster_nodes):
        a, b, c = cluster_nodes(3)              # three Gateways, one Redis
        redis_server.cmd("KEYS", "portico:*")

RedisServer(port=None, password=None, tls=None) starts redis-server on
127.0.0.1 (a free port of the tests' allocator), with no persistence (no RDB,
no AOF) and its files in a temporary folder; stop(), start() and restart()
keep the port, so the nodes find it again. tls: a dict of cert, key, ca
file paths: the server then speaks TLS only (tls-port); clients need no
certificate unless auth_clients is true (then one signed by ca; the
helper's own client, cmd(), has none and cannot talk to it)."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import textwrap
import time

import pytest

from amqp_support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    pass


class RedisServer:
    def __init__(self, port=None, password=None, tls=None, start=True):
        self.port = port or free_port()
        self.password, self.tls = password, tls
        self.dir = tempfile.mkdtemp(prefix="portico-redis-")
        self.proc = None
        if start:
            self.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d/0" % ("rediss" if self.tls else "redis", self.port)

    def args(self):
        a = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
             "--logfile", os.path.join(self.dir, "redis.log"), "--databases", "16"]
        if self.password:
            a += ["--requirepass", self.password]
        if self.tls:
            a += ["--port", "0", "--tls-port", str(self.port),
                  "--tls-cert-file", self.tls["cert"], "--tls-key-file", self.tls["key"],
                  "--tls-ca-cert-file", self.tls["ca"],
                  "--tls-auth-clients", "yes" if self.tls.get("auth_clients") else "no"]
        else:
            a += ["--port", str(self.port)]
        return a

    def start(self, timeout=10):
        if self.running():
            return
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while True:
            try:
                if self.cmd("PING") in (b"PONG", "PONG"):
                    return
            except (OSError, RedisError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %d: %s" %
                                   (self.proc.returncode, self.log()))
            if time.time() > deadline:
                raise RuntimeError("redis-server did not serve: " + self.log())
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # ---- a small RESP2 client ----

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls["ca"])
            s = ctx.wrap_socket(s, server_hostname="localhost")
        return RedisClient(s, self.password)

    def cmd(self, *args):
        """One command on a fresh connection: the reply (bytes, int, list, None)."""
        c = self.connect()
        try:
            return c.cmd(*args)
        finally:
            c.close()


class RedisClient:
    def __init__(self, sock, password=None):
        self.sock, self.buf = sock, b""
        if password:
            self.cmd("AUTH", password)

    def close(self):
        self.sock.close()

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def cmd(self, *args):
        self.send(*args)
        return self.reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._bytes(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError("unexpected reply %r" % line)


@pytest.fixture(scope="module")
def redis_server():
    """A private redis-server for the module; serving again (and emptied)
    before each user, so a test that stopped it leaves no trace."""
    r = RedisServer()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def redis(redis_server):
    redis_server.start()
    redis_server.cmd("FLUSHALL")
    return redis_server


def cluster_yaml(redis_url, node=None, heartbeat="500ms", extra=""):
    """A cluster: section (YAML text, no template fields)."""
    lines = ["cluster:", "  redis: %s" % redis_url, "  heartbeat: %s" % heartbeat]
    if node:
        lines.append("  node: %s" % node)
    lines += ["  " + l for l in textwrap.dedent(extra).splitlines() if l.strip()]
    return "\n".join(lines) + "\n"


def _escape(text):
    return text.replace("{", "{{").replace("}", "}}")


def node_config(redis_url, name, extra_yaml="", config_text=None, cluster_extra="",
                heartbeat="500ms"):
    """The Gateway template of one cluster node (conftest.BASE_CONFIG by
    default, then extra_yaml and the cluster: section)."""
    from conftest import BASE_CONFIG
    return ((config_text or BASE_CONFIG) + _escape(textwrap.dedent(extra_yaml)) +
            _escape(cluster_yaml(redis_url, name, heartbeat, cluster_extra)))


@pytest.fixture
def cluster_nodes(redis, start_gateway):
    """cluster_nodes(n, extra_yaml="", config_text=None, cluster_extra="",
    heartbeat="500ms", **opts): n portico nodes (conftest's Gateway, each in
    its own folder, node names node1..nodeN) sharing the test's Redis.
    config_text is a Gateway template (default conftest.BASE_CONFIG);
    extra_yaml (plain YAML, braces as they are) and the cluster: section are
    appended to it. Every node's {tmp} is the first node's folder ever
    started by the test, so the files are the same on all nodes (as in a
    real cluster) but for the listen addresses and node name: the same
    config checksum."""
    shared = []

    def start(n, extra_yaml="", config_text=None, cluster_extra="", heartbeat="500ms",
              names=None, **opts):
        nodes = []
        for i in range(n):
            name = names[i] if names else "node%d" % (i + 1)
            text = node_config(redis.url, name, extra_yaml, config_text, cluster_extra, heartbeat)
            if shared:
                opts.setdefault("tmp", shared[0])
            gw = start_gateway(text, sub=name, **opts)
            if not shared:
                shared.append(gw.tmp)
            nodes.append(gw)
        return nodes

    return start
