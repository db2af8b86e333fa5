"""AMQP support for the integration tests: the test broker and a small
AMQP 0-9-1 client written on the standard library only.

The broker is the private RabbitMQ node of scripts/rabbitmq (127.0.0.1:5672,
data in a temporary folder). The client does what the tests need and no
more: declare, bind, purge and delete; publish (optionally with publisher
confirms); basic.get; read a queue's message count. It is synchronous and
single-channel; any broker error raises AmqpError with the broker's text.
"""

import base64
import json
import os
import random
import re
import socket
import struct
import subprocess
import time

# The checkout: the built binary, the scripts and the tests themselves.
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(SOURCE, "scripts", "rabbitmq")
# What the tests run: a copy of the shipped files (shipped_copy), never the
# user's working services/ or configs.
SHIPPED_DIRS = ("config", "services", "lib", "lua", "spec", "README.md", ".busted")
LINKED = ("build", "build-asan", "scripts", "tests", "bench", "fuzz")


def _tracked(top):
    """The files git tracks under top (the checkout's own paths, from its
    index), or None when SOURCE is not a git checkout."""
    try:
        out = subprocess.run(["git", "-C", SOURCE, "ls-files", "-z", "--", top],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p for p in out.decode().split("\0") if p]


def shipped_copy(dst):
    """Copies the shipped services, configs, Lua library and README into dst
    (the files git tracks, as they are in the working tree; everything when
    SOURCE is not a git checkout: a tarball ships only shipped files), and
    links the build and script folders. A user's untracked work in progress
    under services/ is not copied. Returns dst."""
    import shutil
    os.makedirs(dst, exist_ok=True)
    for top in SHIPPED_DIRS:
        files = _tracked(top)
        if files is None:
            src = os.path.join(SOURCE, top)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(dst, top), dirs_exist_ok=True)
            elif os.path.exists(src):
                shutil.copy2(src, os.path.join(dst, top))
            continue
        for rel in files:
            src, out = os.path.join(SOURCE, rel), os.path.join(dst, rel)
            if os.path.isfile(src):  # a tracked file deleted in the tree stays deleted
                os.makedirs(os.path.dirname(out), exist_ok=True)
                shutil.copy2(src, out)
    for name in LINKED:
        if os.path.exists(os.path.join(SOURCE, name)) and not os.path.exists(os.path.join(dst, name)):
            os.symlink(os.path.join(SOURCE, name), os.path.join(dst, name))
    return dst


def _session_root():
    import atexit
    import shutil
    import tempfile
    root = tempfile.mkdtemp(prefix="portico-shipped-")
    atexit.register(shutil.rmtree, root, True)
    return shipped_copy(root)


# Every test's {root}: the copy, made once a run (PORTICO_TEST_ROOT names a
# tree to use instead).
ROOT = os.environ.get("PORTICO_TEST_ROOT") or _session_root()
BROKER_HOST = "127.0.0.1"
BROKER_PORT = int(os.environ.get("PORTICO_RABBITMQ_PORT", "5672"))
BROKER_URL = "amqp://guest:guest@%s:%d/" % (BROKER_HOST, BROKER_PORT)
# AMQP over TLS on the same broker (scripts/rabbitmq): its certificate is for
# localhost and 127.0.0.1, signed by the test CA in the broker's folder.
BROKER_TLS_PORT = int(os.environ.get("PORTICO_RABBITMQ_TLS_PORT", "5671"))
BROKER_DIR = os.environ.get("PORTICO_RABBITMQ_DIR") or os.path.join(
    os.environ.get("TMPDIR") or "/tmp", "portico-rabbitmq")
BROKER_TLS_DIR = os.path.join(BROKER_DIR, "tls")
BROKER_TLS_CA = os.path.join(BROKER_TLS_DIR, "ca.pem")

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE


class AmqpError(Exception):
    """The broker closed the channel or connection, or the socket failed."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


# ---- the test broker -------------------------------------------------------


def rabbitmq(*args, check=True, timeout=180):
    """Runs scripts/rabbitmq ARGS; returns its stdout."""
    proc = subprocess.run([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError("scripts/rabbitmq %s failed (%d): %s" %
                           (" ".join(args), proc.returncode, proc.stderr.strip()))
    return proc.stdout


def broker_serving():
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=1):
            return True
    except OSError:
        return False


class Broker:
    """The test broker: start/stop the RabbitMQ application inside the node."""

    url = BROKER_URL

    def start(self):
        rabbitmq("start")

    def stop_app(self):
        rabbitmq("stop-app")
        deadline = time.time() + 30
        while broker_serving():
            if time.time() > deadline:
                raise RuntimeError("the broker still serves after stop-app")
            time.sleep(0.1)

    def start_app(self):
        rabbitmq("start-app")

    def client(self):
        return AmqpClient()


# ---- wire encoding ---------------------------------------------------------


def _shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 255:
        raise ValueError("shortstr too long")
    return struct.pack("B", len(b)) + b


def _longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def _value(v):
    if isinstance(v, bool):
        return b"t" + struct.pack("B", 1 if v else 0)
    if isinstance(v, int):
        return b"l" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, (str, bytes)):
        return b"S" + _longstr(v)
    if isinstance(v, dict):
        return b"F" + _table(v)
    if isinstance(v, (list, tuple)):
        inner = b"".join(_value(x) for x in v)
        return b"A" + struct.pack(">I", len(inner)) + inner
    if v is None:
        return b"V"
    raise TypeError("cannot encode %r in an AMQP table" % (v,))


def _table(d):
    inner = b"".join(_shortstr(k) + _value(v) for k, v in (d or {}).items())
    return struct.pack(">I", len(inner)) + inner


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def octet(self):
        return self.unpack("B")[0]

    def short(self):
        return self.unpack(">H")[0]

    def long(self):
        return self.unpack(">I")[0]

    def longlong(self):
        return self.unpack(">Q")[0]

    def shortstr(self):
        return self.take(self.octet()).decode("utf-8", "replace")

    def longstr(self):
        return self.take(self.long())

    def value(self):
        kind = self.take(1)
        if kind == b"t":
            return bool(self.octet())
        if kind == b"b":
            return self.unpack(">b")[0]
        if kind == b"B":
            return self.octet()
        if kind in (b"s", b"U"):
            return self.unpack(">h")[0]
        if kind == b"u":
            return self.short()
        if kind == b"I":
            return self.unpack(">i")[0]
        if kind == b"i":
            return self.long()
        if kind in (b"l", b"L"):
            return self.unpack(">q")[0]
        if kind == b"f":
            return self.unpack(">f")[0]
        if kind == b"d":
            return self.unpack(">d")[0]
        if kind == b"D":
            scale = self.octet()
            return self.unpack(">i")[0] / (10 ** scale)
        if kind == b"S":
            return self.longstr().decode("utf-8", "replace")
        if kind == b"x":
            return self.longstr()
        if kind == b"T":
            return self.longlong()
        if kind == b"F":
            return self.table()
        if kind == b"A":
            end = self.pos + 4 + self.long()
            items = []
            while self.pos < end:
                items.append(self.value())
            return items
        if kind == b"V":
            return None
        raise AmqpError("unknown field kind %r" % kind)

    def table(self):
        end = self.pos + 4 + self.long()
        out = {}
        while self.pos < end:
            key = self.shortstr()
            out[key] = self.value()
        return out


# Basic properties, in flag order (bit 15 first).
_PROPS = [
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "longlong"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr"),
]


def _encode_props(props):
    flags, out = 0, b""
    for i, (name, kind) in enumerate(_PROPS):
        if props.get(name) is None:
            continue
        flags |= 1 << (15 - i)
        v = props[name]
        out += {"shortstr": _shortstr, "table": _table,
                "octet": lambda x: struct.pack("B", x),
                "longlong": lambda x: struct.pack(">Q", x)}[kind](v)
    return struct.pack(">H", flags) + out


def _decode_props(r):
    flags = r.short()
    props = {}
    for i, (name, kind) in enumerate(_PROPS):
        if flags & (1 << (15 - i)):
            props[name] = getattr(r, kind)()
    return props


class Message:
    def __init__(self, body, props, exchange="", routing_key="", redelivered=False):
        self.body, self.props = body, props
        self.exchange, self.routing_key, self.redelivered = exchange, routing_key, redelivered

    def json(self):
        return json.loads(self.body)

    @property
    def headers(self):
        return self.props.get("headers") or {}

    def __repr__(self):
        return "Message(%r, %r)" % (self.body[:200], self.props)


# ---- the client ------------------------------------------------------------


class AmqpClient:
    """One connection, one channel, synchronous. Use as a context manager."""

    def __init__(self, host=BROKER_HOST, port=BROKER_PORT, user="guest", password="guest",
                 vhost="/", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.confirming = False
        self.next_tag = 0
        self.returns = []
        self.frame_max = 131072
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(0, 10, 10)  # Connection.Start
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        self._method(0, 10, 11, _table({"product": "portico-tests"}) + _shortstr("PLAIN") +
                     _longstr(response) + _shortstr("en_US"))
        tune = self._expect(0, 10, 30)
        channel_max, frame_max, _hb = tune.short(), tune.long(), tune.short()
        self.frame_max = min(frame_max or 131072, 131072)
        self._method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, 0))
        self._method(0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")
        self._expect(0, 10, 41)
        self._open_channel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._method(0, 10, 50, struct.pack(">H", 200) + _shortstr("bye") +
                         struct.pack(">HH", 0, 0))
            self._expect(0, 10, 51)
        except (OSError, AmqpError):
            pass
        self.sock.close()

    # -- frames

    def _recv_frame(self):
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    if self.buf[7 + size] != FRAME_END:
                        raise AmqpError("bad frame end")
                    self.buf = self.buf[8 + size:]
                    if ftype == FRAME_HEARTBEAT:
                        continue
                    return ftype, channel, payload
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise AmqpError("the broker closed the socket")
            self.buf += chunk

    def _send_frame(self, ftype, channel, payload):
        self.sock.sendall(struct.pack(">BHI", ftype, channel, len(payload)) + payload +
                          bytes([FRAME_END]))

    def _method(self, channel, cls, mth, args=b""):
        self._send_frame(FRAME_METHOD, channel, struct.pack(">HH", cls, mth) + args)

    def _next_method(self):
        """The next method frame, after handling asynchronous ones."""
        while True:
            ftype, channel, payload = self._recv_frame()
            if ftype != FRAME_METHOD:
                continue
            r = _Reader(payload)
            cls, mth = r.short(), r.short()
            if (cls, mth) == (20, 40) or (cls, mth) == (10, 50):
                code, text = r.short(), r.shortstr()
                if (cls, mth) == (20, 40):
                    self._method(channel, 20, 41)
                    self._open_channel()
                else:
                    self._method(0, 10, 51)
                raise AmqpError("%d %s" % (code, text), code)
            if (cls, mth) == (60, 50):  # Basic.Return: keep it, with its content
                code, text = r.short(), r.shortstr()
                exchange, rk = r.shortstr(), r.shortstr()
                msg = self._read_content(exchange, rk)
                self.returns.append((code, text, msg))
                continue
            return cls, mth, r

    def _expect(self, channel, cls, mth):
        got_cls, got_mth, r = self._next_method()
        if (got_cls, got_mth) != (cls, mth):
            raise AmqpError("expected method %d.%d, got %d.%d" % (cls, mth, got_cls, got_mth))
        return r

    def _read_content(self, exchange="", rk="", redelivered=False):
        ftype, _ch, payload = self._recv_frame()
        if ftype != FRAME_HEADER:
            raise AmqpError("expected a content header")
        r = _Reader(payload)
        r.short()  # class
        r.short()  # weight
        size = r.longlong()
        props = _decode_props(r)
        body = b""
        while len(body) < size:
            ftype, _ch, payload = self._recv_frame()
            if ftype != FRAME_BODY:
                raise AmqpError("expected a content body")
            body += payload
        return Message(body, props, exchange, rk, redelivered)

    def _open_channel(self):
        self._method(1, 20, 10, _shortstr(""))
        self._expect(1, 20, 11)
        if self.confirming:
            self.confirming = False
            self.confirm_select()

    # -- operations

    def exchange_declare(self, name, kind="topic", durable=True):
        self._method(1, 40, 10, struct.pack(">H", 0) + _shortstr(name) + _shortstr(kind) +
                     bytes([0b10 if durable else 0]) + _table({}))
        self._expect(1, 40, 11)

    def exchange_delete(self, name):
        self._method(1, 40, 20, struct.pack(">H", 0) + _shortstr(name) + b"\x00")
        self._expect(1, 40, 21)

    def queue_declare(self, name, durable=True, arguments=None, passive=False):
        """Returns the queue's message count."""
        bits = (1 if passive else 0) | (0b10 if durable else 0)
        self._method(1, 50, 10, struct.pack(">H", 0) + _shortstr(name) + bytes([bits]) +
                     _table(arguments or {}))
        r = self._expect(1, 50, 11)
        r.shortstr()
        return r.long()

    def queue_count(self, name):
        return self.queue_declare(name, passive=True)

    def queue_bind(self, queue, exchange, routing_key):
        self._method(1, 50, 20, struct.pack(">H", 0) + _shortstr(queue) + _shortstr(exchange) +
                     _shortstr(routing_key) + b"\x00" + _table({}))
        self._expect(1, 50, 21)

    def queue_purge(self, name):
        self._method(1, 50, 30, struct.pack(">H", 0) + _shortstr(name) + b"\x00")
        self._expect(1, 50, 31)

    def queue_delete(self, name):
        self._method(1, 50, 40, struct.pack(">H", 0) + _shortstr(name) + b"\x00")
        self._expect(1, 50, 41)

    def confirm_select(self):
        self._method(1, 85, 10, b"\x00")
        self._expect(1, 85, 11)
        self.confirming = True
        self.next_tag = 0

    def publish(self, exchange, routing_key, body, mandatory=False, **props):
        """Publishes; with confirm_select() on, waits for the broker's ack and
        returns True (ack) or False (nack)."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            props.setdefault("content_type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        self._method(1, 60, 40, struct.pack(">H", 0) + _shortstr(exchange) +
                     _shortstr(routing_key) + bytes([1 if mandatory else 0]))
        header = struct.pack(">HHQ", 60, 0, len(body)) + _encode_props(props)
        self._send_frame(FRAME_HEADER, 1, header)
        step = self.frame_max - 8
        for i in range(0, len(body), step):
            self._send_frame(FRAME_BODY, 1, body[i:i + step])
        if not self.confirming:
            return True
        self.next_tag += 1
        tag = self.next_tag
        while True:
            cls, mth, r = self._next_method()
            if (cls, mth) in ((60, 80), (60, 120)):
                got, multiple = r.longlong(), r.octet() & 1
                if got == tag or (multiple and got >= tag):
                    return (cls, mth) == (60, 80)

    def get(self, queue, ack=True):
        """One message (acknowledged unless ack=False), or None."""
        self._method(1, 60, 70, struct.pack(">H", 0) + _shortstr(queue) +
                     bytes([1 if ack else 0]))
        cls, mth, r = self._next_method()
        if (cls, mth) == (60, 72):
            return None
        if (cls, mth) != (60, 71):
            raise AmqpError("expected Get-Ok, got %d.%d" % (cls, mth))
        r.longlong()
        redelivered = bool(r.octet() & 1)
        exchange, rk = r.shortstr(), r.shortstr()
        return self._read_content(exchange, rk, redelivered)

    def drain(self, queue, limit=None):
        """Every message now in the queue (acknowledged), in order."""
        out = []
        while limit is None or len(out) < limit:
            m = self.get(queue)
            if m is None:
                break
            out.append(m)
        return out

    def wait_get(self, queue, timeout=10.0):
        """The next message of queue, waiting up to timeout; None when none came."""
        deadline = time.time() + timeout
        while True:
            m = self.get(queue)
            if m is not None or time.time() > deadline:
                return m
            time.sleep(0.05)

    def wait_count(self, queue, count, timeout=10.0):
        """Waits until queue holds count messages; returns the last count seen."""
        deadline = time.time() + timeout
        while True:
            n = self.queue_count(queue)
            if n == count or time.time() > deadline:
                return n
            time.sleep(0.05)


# ---- portico under test ----------------------------------------------------


def send_service(name, outconn):
    """A service called name that sends its payload's data through
    self.out.amqp (outconn unless the payload names one, then exchange,
    routing_key and props from the payload) and answers {sent = true}, or
    503 with {sent = false, error = err}."""
    return """
local service = require "portico.service"
local M = service.new { name = "%s" }
function M:handle()
  local p = self.request.payload
  local ok, err = self.out.amqp:send(p.data, p.outconn or "%s", p.exchange,
                                     p.routing_key, p.props)
  if ok then
    self.response.payload = { sent = true }
  else
    self.response.status = 503
    self.response.payload = { sent = false, error = err }
  end
end
return M
""" % (name, outconn)


_taken = set()


def free_port():
    """A port below the kernel's ephemeral range (so no outgoing connection of
    the tests can be holding it by the time the server binds) that nothing
    listens on now, and never the same one twice in a run."""
    low = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = min(low, int(f.read().split()[0]) - 5000)
    except (OSError, ValueError):
        pass
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(max(1024, low - 10000), low)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def listen_lines(text):
    """[(line index, YAML path)] of every `listen: host:port` line of a config
    text, the path being where it sits ("server", "admin", "server.tls")."""
    out, stack = [], []
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if key == "listen" and re.match(r"^\s*\S+:\d+\s*(#.*)?$", m.group(3)):
            out.append((i, ".".join(k for _, k in stack)))
        stack.append((indent, key))
    return out


def with_ports(text, ports):
    """text with the port of each listen line whose YAML path is a key of
    ports ({"server": 20001, "admin": 20002, "server.tls": 20003}) set to
    that port, whatever the file had."""
    lines = text.splitlines(True)
    for i, path in listen_lines(text):
        if path in ports:
            lines[i] = re.sub(r"(listen:\s*[^\s:#]+:)\d+", lambda m: m.group(1) + str(ports[path]),
                              lines[i], count=1)
    return "".join(lines)


def derive_config(src, dst_dir, listen_port, admin_port=None, tls_port=None):
    """Copies the config file src into dst_dir with its own ports (set by the
    listen lines' places in the file, not by their numbers) and with relative
    paths made absolute (they are relative to src's directory). Returns the
    new path."""
    base = os.path.dirname(os.path.abspath(src))
    ports = {"server": listen_port}
    if admin_port:
        ports["admin"] = admin_port
    if tls_port:
        ports["server.tls"] = tls_port
    text = with_ports(open(src).read(), ports)

    def absolute(m):
        return m.group(1) + os.path.normpath(os.path.join(base, m.group(2)))
    text = re.sub(r"(\[\s*|,\s*|:\s+)(\.\./[^\],\s#}]+|\./[^\],\s#}]+)", absolute, text)
    dst = os.path.join(dst_dir, os.path.basename(src))
    with open(dst, "w") as f:
        f.write(text)
    return dst


class Portico:
    """The built binary on a config, its error log in a file."""

    def __init__(self, config, port, env=None, workdir=None):
        self.config, self.port = config, port
        self.log_path = os.path.join(workdir or os.path.dirname(config), "portico.err")
        binary = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")
        self.env = dict(os.environ, **(env or {}))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "-c", config], stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=self.env)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("portico exited with %d: %s" % (self.proc.returncode,
                                                                   self.errors()))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("portico did not listen: " + self.errors())
                time.sleep(0.05)

    def errors(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self, level=None):
        out = []
        for line in self.errors().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                out.append({"level": "raw", "msg": line})
                continue
            if level is None or entry.get("level") == level:
                out.append(entry)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Http:
    """A keep-alive HTTP/1.1 client for one thread."""

    def __init__(self, port, auth=None, timeout=30):
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {}
        if auth:
            token = base64.b64encode(("%s:%s" % auth).encode()).decode()
            self.headers["Authorization"] = "Basic " + token

    def request(self, method, path, body=None, headers=None):
        h = dict(self.headers, **(headers or {}))
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def post(self, path, body=None, headers=None):
        return self.request("POST", path, body, headers)

    def close(self):
        self.conn.close()


# ---- metrics -----------------------------------------------------------------

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(gw):
    """Parses the Prometheus text format strictly; returns {(name, labels): value}."""
    c = Http(gw.admin_port)
    status, headers, body = c.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples, typed = {}, {}
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            typed[name] = kind
            continue
        m = LINE.match(line)
        assert m, "not Prometheus text: %r" % line
        name, labels = m.group(1), tuple(sorted(LABEL.findall(m.group(3) or "")))
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, "sample without # TYPE: %s" % name
        assert (name, labels) not in samples, "duplicate sample %s %s" % (name, labels)
        samples[(name, labels)] = float(m.group(4))
    return samples


def value(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)
