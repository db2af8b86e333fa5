"""Fixtures of the integration tier: the built binary on a free port with a
config written for the test, real sockets, and at the end a clean stop
(SIGTERM -> exit 0) with nothing at level "error" in its log unless the test
said which errors it expects (like Test::Nginx's "no error log")."""
import json
import os
import re
import socket
import textwrap
import time

import pytest

from amqp_support import ROOT, Broker, Http, Portico, broker_serving, free_port

TEST_SERVICES = {
    "test/raise.lua": """
        local service = require "portico.service"
        local M = service.new { name = "test.raise" }
        function M:handle()
          if self.request.payload and self.request.payload.fail then
            error("deliberate failure with a secret detail")
          end
          self.response.payload = { ok = true }
        end
        return M
    """,
    "test/slow.lua": """
        local service = require "portico.service"
        local M = service.new { name = "test.slow" }
        function M:handle()
          local host = require "portico.host"
          self.logger:info("slow: started")
          local t = host.now() + (self.request.payload and self.request.payload.seconds or 0.3)
          while host.now() < t do end
          self.response.payload = { slept = true }
        end
        return M
    """,
}

def config_head(server, log="level: info", dirs="{root}/services, {tmp}/services"):
    """The start of a test config, as a template Gateway fills in: server
    (listen on {port}, then the given fields), admin on {admin_port}, log
    (the given fields; None: no log section), lua.path and services.dirs.
    server and log are YAML lines without their indentation."""
    def block(name, *fields):
        lines = [l for f in fields for l in textwrap.dedent(f).splitlines() if l.strip()]
        return name + ":\n" + "".join("  " + line + "\n" for line in lines)
    return ("\n" + block("server", "listen: 127.0.0.1:{port}", server) +
            block("admin", "listen: 127.0.0.1:{admin_port}") +
            (block("log", log) if log is not None else "") +
            block("lua", "path: {root}/lua") + block("services", "dirs: [" + dirs + "]"))


BASE_CONFIG = config_head("""
    workers: 2
    max_body_bytes: 1MB
    max_header_bytes: 16KB
    header_timeout: {header_timeout}
    body_timeout: {body_timeout}
    idle_timeout: {idle_timeout}
    drain_timeout: {drain}
""", log="""
    level: info
    access: {access}
""") + """channels:
  gateway:
    - name: gateway
      url_path: /gateway/{{service}}
      methods: [GET, POST]
      gateway_service_list: [customer.get, demo.echo, test.raise, test.slow]
  rest:
    - name: api.customer.get
      url_path: /api/customer/get
      methods: [POST]
      service: customer.get
    - name: api.echo
      url_path: /api/echo
      methods: [GET, POST, PUT, DELETE, PATCH]
      service: demo.echo
"""


class Gateway:
    """A running portico for one test."""

    def __init__(self, tmp_path, config_text=None, **opts):
        self.tmp = str(tmp_path)
        self.port, self.admin_port = free_port(), free_port()
        os.makedirs(os.path.join(self.tmp, "services", "test"), exist_ok=True)
        for name, text in TEST_SERVICES.items():
            with open(os.path.join(self.tmp, "services", name), "w") as f:
                f.write(textwrap.dedent(text))
        values = dict(port=self.port, admin_port=self.admin_port, root=ROOT, tmp=self.tmp,
                      header_timeout="10s", body_timeout="10s", idle_timeout="60s",
                      access="off", drain="10s")
        values.update(opts)
        self.config = os.path.join(self.tmp, "portico.yaml")
        with open(self.config, "w") as f:
            f.write((config_text or BASE_CONFIG).format(**values))
        self.expected_errors = []
        self.proc = Portico(self.config, self.port, workdir=self.tmp)

    def http(self, **kw):
        return Http(self.port, **kw)

    def raw(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(timeout)
        return s

    def expect_error(self, pattern):
        """Declares an error-level log line this test causes on purpose."""
        self.expected_errors.append(re.compile(pattern))

    def log_text(self):
        with open(self.proc.log_path) as f:
            return f.read()

    def log_lines(self, level=None):
        """The error log as parsed JSON lines; other lines as level "raw"."""
        out = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"level": "raw", "msg": line}
            if level is None or entry.get("level") == level:
                out.append(entry)
        return out

    def errors(self):
        return [e for e in self.log_lines("error")
                if not any(p.search(e.get("msg", "")) for p in self.expected_errors)]

    def log_has(self, text, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log_text():
                return True
            time.sleep(0.05)
        return False


@pytest.fixture
def start_gateway(tmp_path):
    started = []

    def start(config_text=None, sub=None, **opts):
        path = tmp_path / sub if sub else tmp_path
        path.mkdir(parents=True, exist_ok=True)
        gw = Gateway(path, config_text, **opts)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        code = gw.proc.stop()
        assert code == 0, "portico exited with %r: %s" % (code, gw.log_text())
        assert gw.errors() == [], "unexpected errors in the log"
        assert "Sanitizer" not in gw.log_text(), gw.log_text()


@pytest.fixture(scope="module")
def broker():
    """The test broker (scripts/rabbitmq), serving again after a module that
    stopped it."""
    b = Broker()
    b.start()
    yield b
    if not broker_serving():
        b.start_app()


@pytest.fixture
def gw(start_gateway):
    return start_gateway()


def recv_all(sock, timeout=2.0):
    """Reads until the peer closes or nothing comes for timeout seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data


def read_until_close(sock, timeout=3.0):
    """Reads until the peer closes; returns (data, closed). closed is False
    when nothing came for timeout seconds and the socket was still open."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except socket.timeout:
        return data, False


def parse_responses(data):
    """Splits raw bytes into (status, headers, body) responses (Content-Length framing)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        if status == 100:
            n = 0
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


# The slow tier (PT_SLOW=1 scripts/test): tests marked slow are skipped otherwise.
def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier, run only with PT_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: PT_SLOW=1 runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def ws_frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2), for raw-socket WebSocket checks."""
    import struct
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
