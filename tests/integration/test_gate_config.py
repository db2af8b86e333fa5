"""A config that is wrong is refused, quickly and saying where: by
`portico --check`, at startup, and by a SIGHUP reload (which keeps the
running config). And the router refuses an ambiguous request."""
import os
import signal
import subprocess
import time

import pytest

from amqp_support import ROOT

BIN = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")

LAUGHS = "".join("%s: &%s [%s]\n" % (k, k, ", ".join(["*" + p] * 10 if p else ["x"] * 10))
                 for p, k in zip([None] + list("abcdefgh"), "abcdefghi"))

# (name, config text, what stderr must say: file:line: message)
BAD = [
    ("dup_top", "server:\n  workers: 1\nserver:\n  workers: 2\n",
     "dup_top.yaml:3: duplicate key 'server' (first at line 1)"),
    ("dup_nested", "server:\n  workers: 1\n  workers: 2\n",
     "dup_nested.yaml:3: duplicate key 'workers'"),
    ("dup_path", "channels:\n  rest:\n    - {name: a, url_path: /x, service: s}\n"
     "  websocket:\n    - name: w\n      url_path: /x\n      service: s\n",
     "dup_path.yaml:6: channel 'w': url_path /x matches what channel 'a' (line 3)"),
    ("dot", "channels:\n  rest:\n    - name: a\n      url_path: /a/../b\n      service: s\n",
     "dot.yaml:4: channels.rest[0].url_path: dot segments"),
    ("dot1", "channels:\n  rest:\n    - name: a\n      url_path: /a/./b\n      service: s\n",
     "dot1.yaml:4: channels.rest[0].url_path: dot segments"),
    ("encdot", "channels:\n  amqp_bus:\n    - name: b\n      url_prefix: /b/%2e%2e/c\n",
     "encdot.yaml:4: channels.amqp_bus[0].url_prefix: no percent-encoding"),
    ("zero_timeout", "server:\n  header_timeout: 0\n",
     "zero_timeout.yaml:2: server.header_timeout: must be more than 0"),
    ("nan_header", "server:\n  max_header_bytes: nan\n",
     "nan_header.yaml:2: server.max_header_bytes: expected a size"),
    ("workers", "server:\n  workers: '+4'\n", "workers.yaml:2: server.workers"),
    ("huge_body", "server:\n  max_body_bytes: 99999999999999999999GB\n",
     "huge_body.yaml:2: server.max_body_bytes: expected a size"),
    ("no_port", "server:\n  listen: '127.0.0.1:'\n",
     "no_port.yaml:2: server.listen: the port must be from 1 to 65535"),
    ("port0", "server:\n  listen: 127.0.0.1:0\n",
     "port0.yaml:2: server.listen: the port must be from 1 to 65535"),
    ("port_big", "server:\n  listen: 127.0.0.1:65536\n",
     "port_big.yaml:2: server.listen: the port must be from 1 to 65535"),
    ("garbage_host", "server:\n  listen: 'no such/host:80'\n",
     "garbage_host.yaml:2: server.listen: 'no such/host' is not a host name or IP address"),
    ("deep", "server: " + "[" * 100000 + "]" * 100000 + "\n",
     "deep.yaml:1: YAML: nested deeper than 64 levels"),
    ("laughs", LAUGHS, "laughs.yaml:5: YAML: more than 100000 nodes"),
]


def check(path, timeout=10):
    t0 = time.monotonic()
    r = subprocess.run([BIN, "--check", "-c", str(path)], capture_output=True, text=True,
                       timeout=timeout)
    return r, time.monotonic() - t0


@pytest.mark.parametrize("name,text,expected", BAD, ids=[b[0] for b in BAD])
def test_check_refuses(tmp_path, name, text, expected):
    path = tmp_path / (name + ".yaml")
    path.write_text(text)
    r, took = check(path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr
    assert took < 5


def test_startup_refuses(tmp_path):
    path = tmp_path / "start.yaml"
    path.write_text("server:\n  listen: 127.0.0.1:1\n  header_timeout: 0\n")
    r = subprocess.run([BIN, "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "start.yaml:3: server.header_timeout: must be more than 0" in r.stderr


def test_fifo_secret_file_refused_quickly(tmp_path):
    os.mkfifo(str(tmp_path / "secret"))
    path = tmp_path / "fifo.yaml"
    path.write_text("security:\n  jwt:\n    - name: hs\n      algorithm: HS256\n"
                    "      secret_file: secret\n")
    r, took = check(path)  # a blocking open would wait for a writer forever
    assert r.returncode == 1
    assert "fifo.yaml:5: security.jwt[0].secret_file: cannot read secret: not a regular file" \
        in r.stderr
    assert took < 5


def test_fifo_public_key_refused_quickly(tmp_path):
    os.mkfifo(str(tmp_path / "key.pem"))
    path = tmp_path / "fifo.yaml"
    path.write_text("security:\n  jwt:\n    - name: rs\n      algorithm: RS256\n"
                    "      public_key: key.pem\n")
    r, took = check(path)  # PEM_read_PUBKEY on an fopen'd FIFO waited for a writer
    assert r.returncode == 1
    assert "fifo.yaml:5: security.jwt[0].public_key: cannot read key.pem: not a regular file" \
        in r.stderr
    assert took < 5


def test_symlink_loop_detected_quickly(tmp_path):
    svc = tmp_path / "svc"
    svc.mkdir()
    for name in ("a", "b", "c"):  # 3^16 directories to a scan that follows them
        os.symlink(".", str(svc / name))
    path = tmp_path / "loop.yaml"
    path.write_text("lua:\n  path: %s/lua\nservices:\n  dirs: [svc]\n" % ROOT)
    r, took = check(path)
    assert r.returncode == 1
    assert "loop.yaml:4: services.dirs: a symlink loop at" in r.stderr
    assert took < 5


@pytest.mark.parametrize("old,new,expected", [
    ("  workers: 2\n", "  workers: 2\n  workers: 3\n", "duplicate key 'workers'"),
    ("header_timeout: 10s", "header_timeout: 0", "server.header_timeout: must be more than 0"),
    ("idle_timeout: 60s", "idle_timeout: nan", "server.idle_timeout: expected a duration"),
])
def test_sighup_with_a_bad_config_keeps_the_old_one(start_gateway, old, new, expected):
    gw = start_gateway()
    gw.expect_error("config reload refused")
    client = gw.http()
    assert client.post("/api/echo", {"n": 1})[0] == 200
    with open(gw.config) as f:
        good = f.read()
    assert old in good
    with open(gw.config, "w") as f:
        f.write(good.replace(old, new, 1))
    gw.proc.proc.send_signal(signal.SIGHUP)
    assert gw.log_has("config reload refused")
    assert "portico.yaml:" in gw.log_text() and expected in gw.log_text()
    # still serving on the old config (a 0 header timeout would fail a new connection)
    status, _, body = gw.http().post("/api/echo", {"n": 2})
    assert status == 200, body
    assert client.post("/api/echo", {"n": 3})[0] == 200


def raw_status(gw, target):
    s = gw.raw()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def test_repeated_service_param_is_400(gw):
    ok = raw_status(gw, "/gateway/invoke?service=demo.echo")
    assert ok.startswith(b"HTTP/1.1 200"), ok
    for target in ("/gateway/invoke?service=demo.echo&service=customer.get",
                   "/gateway/invoke?service=demo.echo&service=demo.echo",
                   "/gateway/invoke?service=demo.echo&%73ervice=customer.get"):
        data = raw_status(gw, target)
        assert data.startswith(b"HTTP/1.1 400"), data
        assert b"more than once" in data
