"""portico installed like real software (docs/install.md): the install tree of
`cmake --install`, moved elsewhere and run from /; the Lua library found
beside the binary, an explicit lua.path winning, the error naming every place
looked at; sd_notify to a service manager; the systemd unit; and (slow tier,
PT_SLOW=1) the Debian package built, installed with dpkg -i, checked and run.
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from amqp_support import ROOT, SOURCE, free_port

BIN = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")
BUILD = os.path.dirname(os.path.abspath(BIN))
ECHO_AUTH = "Basic " + base64.b64encode(b"john.doe:secret").decode()


def with_free_ports(text):
    """The config text with each 127.0.0.1 listen address on a free port."""
    ports = []

    def repl(m):
        ports.append(free_port())
        return "%s127.0.0.1:%d" % (m.group(1), ports[-1])

    out = re.sub(r"(?m)^(\s*listen:\s*)127\.0\.0\.1:\d+", repl, text)
    assert ports, "no listen address in the config"
    return out, ports


def start(argv, port, cwd="/", env=None, user=None):
    """Starts argv in cwd, waits until 127.0.0.1:port accepts; the process."""
    ids = {"user": user, "group": user, "extra_groups": []} if user else {}
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})), text=True, **ids)
    deadline = time.time() + 20
    while True:
        if proc.poll() is not None:
            raise AssertionError("%s exited with %d: %s" % (argv, proc.returncode,
                                                           proc.stderr.read()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise AssertionError("%s did not listen: %s" % (argv, proc.communicate()[1]))
            time.sleep(0.05)


def stop(proc):
    """SIGTERM, then the exit status and the error log."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def call_echo(port):
    """POST /api/echo (demo.echo, a shipped service) as john.doe."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/echo?x=1", body=b'{"hello": "world"}',
                 headers={"Authorization": ECHO_AUTH, "Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, json.loads(body)


def own_config(tmp_path, extra=""):
    """A config of this file's own: demo.echo on /api/echo, open to anyone,
    free ports; (its path, its text, the public port)."""
    port, admin = free_port(), free_port()
    text = ("server: {listen: 127.0.0.1:%d, workers: 1}\nadmin: {listen: 127.0.0.1:%d}\n"
            "log:\n  level: info\n%sservices: {dirs: [%s/services]}\nchannels:\n  rest:\n"
            "    - {name: echo, url_path: /api/echo, methods: [POST], service: demo.echo,"
            " data_format: json}\n" % (port, admin, extra, ROOT))
    cfg = tmp_path / "portico.yaml"
    cfg.write_text(text)
    return cfg, text, port


def run(argv, cwd="/", **kw):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`cmake --install` of the build into a temp prefix, then moved elsewhere."""
    base = tmp_path_factory.mktemp("install")
    first, moved = base / "first", base / "elsewhere" / "portico"
    r = run(["cmake", "--install", BUILD, "--prefix", str(first)])
    assert r.returncode == 0, r.stderr
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    return moved


def test_install_tree_layout(installed):
    p = installed
    assert os.access(p / "bin" / "portico", os.X_OK)
    assert (p / "share/portico/lua/portico/runtime.lua").is_file()
    assert (p / "share/portico/services/demo/echo.lua").is_file()
    for name in ("portico.yaml", "api-gateway.yaml", "wasp.yaml", "tls.yaml"):
        assert (p / "share/portico/config" / name).is_file(), name
    # the default config names the services of the prefix it was installed to
    etc = (p / "etc/portico/portico.yaml").read_text()
    assert re.search(r"dirs: \[/\S+/first/share/portico/services\]", etc), etc


def test_moved_install_tree_runs_from_root(installed):
    """The tree finds its Lua library beside the binary wherever it is."""
    binary = str(installed / "bin" / "portico")
    shipped = installed / "share/portico/config/portico.yaml"
    r = run([binary, "--check", "-c", str(shipped)])
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stdout
    # a copy of the shipped config beside it (its ../services), on free ports
    text, ports = with_free_ports(shipped.read_text())
    cfg = installed / "share/portico/config/test-install.yaml"
    cfg.write_text(text)
    proc = start([binary, "-c", str(cfg)], ports[0])
    try:
        status, body = call_echo(ports[0])
        assert status == 200, body
        assert body["payload"] == {"hello": "world"} and body["username"] == "john.doe", body
    finally:
        rc, err = stop(proc)
    assert rc == 0, err


def test_copied_binary_without_library_names_every_place_looked(tmp_path):
    lonely = tmp_path / "opt" / "bin"
    lonely.mkdir(parents=True)
    shutil.copy(BIN, lonely / "portico")
    cfg = tmp_path / "p.yaml"
    cfg.write_text("server: {listen: 127.0.0.1:%d}\nservices: {dirs: []}\n" % free_port())
    r = run([str(lonely / "portico"), "--check", "-c", str(cfg)])
    prefix_lib = re.search(r"nor in (\S+) \(the install prefix\)", r.stderr)
    if prefix_lib and os.path.isfile(os.path.join(prefix_lib.group(1), "portico/runtime.lua")):
        pytest.skip("portico is installed under its build prefix on this machine")
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(lonely) + "/../share/portico/lua (beside the binary)" in r.stderr, r.stderr
    assert prefix_lib, r.stderr
    assert "the config sets no lua.path" in r.stderr, r.stderr
    # with lua.path set it runs
    cfg.write_text(cfg.read_text() + "lua: {path: %s}\n" % os.path.join(ROOT, "lua"))
    r = run([str(lonely / "portico"), "--check", "-c", str(cfg)])
    assert r.returncode == 0, r.stderr


def test_default_config_is_the_installed_one_outside_a_checkout(tmp_path):
    """No -c, run from /: the config of the install tree beside the binary."""
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", BUILD, "--prefix", str(prefix)])
    assert r.returncode == 0, r.stderr
    r = run([str(prefix / "bin" / "portico"), "--check"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("portico: %s/bin/../etc/portico/portico.yaml is valid" % prefix), \
        r.stdout


def test_no_config_anywhere_names_the_places_looked(tmp_path):
    r = run([BIN, "--check"], cwd=str(tmp_path))
    installed = re.search(r", (\S+) \(the install's\) exists", r.stderr)
    if r.returncode == 0 or (installed and os.path.exists(installed.group(1))):
        pytest.skip("an installed config exists on this machine")
    assert r.returncode == 1, r.stdout
    assert "no config: none of config/portico.yaml (in this directory), %s/../etc/portico/" \
        "portico.yaml (beside the binary), " % BUILD in r.stderr, r.stderr
    assert installed and "name one with -c FILE" in r.stderr, r.stderr


def test_explicit_lua_path_wins_over_the_library_beside_the_binary(installed, tmp_path):
    empty = tmp_path / "no-library"
    empty.mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text("server: {listen: 127.0.0.1:%d}\nservices: {dirs: []}\nlua: {path: %s}\n"
                   % (free_port(), empty))
    r = run([str(installed / "bin" / "portico"), "--check", "-c", str(cfg)])
    assert r.returncode == 1, r.stdout
    # refused at its line, naming the library the search would have used
    assert "p.yaml:3: lua.path: %s holds no portico/runtime.lua" % empty in r.stderr, r.stderr
    assert "without lua.path the one found is used: %s" % os.path.realpath(
        str(installed / "share" / "portico" / "lua")) in r.stderr, r.stderr


def test_sd_notify_ready_reloading_stopping(tmp_path):
    """A service manager's notify socket sees READY=1, RELOADING=1 with
    MONOTONIC_USEC then READY=1 around each reload (refused ones too), and
    STOPPING=1 on SIGTERM."""
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    cfg, text, port = own_config(tmp_path)

    def message():
        data = sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    proc = start([BIN, "-c", str(cfg)], port, env={"NOTIFY_SOCKET": sock_path})
    try:
        m = message()
        assert m.get("READY") == "1", m
        # a reload asked through the admin listener (what ExecReload runs)
        r = run([BIN, "reload", "-c", str(cfg)])
        assert r.returncode == 0, r.stdout + r.stderr
        m = message()
        assert m.get("RELOADING") == "1", m
        assert int(m["MONOTONIC_USEC"]) > 0, m
        now_us = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        assert int(m["MONOTONIC_USEC"]) <= now_us, m
        m = message()
        assert m.get("READY") == "1" and "reloaded" in m.get("STATUS", ""), m
        # a refused reload (SIGHUP with a broken file) ends in READY=1 too
        cfg.write_text(text + "\nserver: {listen: nonsense}\n")
        proc.send_signal(signal.SIGHUP)
        m = message()
        assert m.get("RELOADING") == "1", m
        m = message()
        assert m.get("READY") == "1" and "refused" in m.get("STATUS", ""), m
        # `portico reload` (ExecReload) fails when the server refuses the
        # reload (a file that parses, with a channel whose service is missing)
        cfg.write_text(text.replace("service: demo.echo", "service: no.such"))
        assert "no.such" in cfg.read_text()
        r = run([BIN, "reload", "-c", str(cfg)])
        assert r.returncode == 1, r.stdout + r.stderr
        assert '"accepted":false' in r.stdout and "no.such" in r.stdout, r.stdout
        m = message()
        assert m.get("RELOADING") == "1", m
        m = message()
        assert m.get("READY") == "1" and "refused" in m.get("STATUS", ""), m
    finally:
        rc, err = stop(proc)
    assert rc == 0, err
    m = message()
    assert m.get("STOPPING") == "1", m
    sock.close()


UNIT = os.path.join(SOURCE, "debian", "portico.service")


def test_unit_file_verifies(tmp_path):
    """systemd-analyze verify on the unit, its binary the built one."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze on this machine")
    with open(UNIT) as f:
        unit = f.read()
    for key in ("Type=notify", "ExecReload=/usr/bin/portico reload", "NoNewPrivileges=yes",
                "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                "CapabilityBoundingSet=\n", "User=portico"):
        assert key in unit, key
    (tmp_path / "portico.service").write_text(unit.replace("/usr/bin/portico", BIN))
    r = run(["systemd-analyze", "verify", str(tmp_path / "portico.service")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout + r.stderr == "", r.stdout + r.stderr


def test_sigusr1_reopens_the_access_log_logrotate_moved(tmp_path):
    """What the logrotate rule does: move the file, SIGUSR1, a new file."""
    with open(os.path.join(SOURCE, "debian", "portico.logrotate")) as f:
        rule = f.read()
    assert "/var/log/portico/*.log" in rule and "--signal=USR1" in rule, rule
    log = tmp_path / "access.log"
    cfg, _, port = own_config(tmp_path, extra="  access: %s\n" % log)
    ports = [port]
    proc = start([BIN, "-c", str(cfg)], port)
    try:
        assert call_echo(ports[0])[0] == 200
        deadline = time.time() + 10
        while "/api/echo" not in (log.read_text() if log.exists() else ""):
            assert time.time() < deadline, "no access-log line"
            time.sleep(0.05)
        os.rename(log, str(log) + ".1")
        proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 10
        while True:
            assert call_echo(ports[0])[0] == 200
            if log.exists() and "/api/echo" in log.read_text():
                break
            assert time.time() < deadline, "the access log was not reopened"
            time.sleep(0.1)
    finally:
        rc, err = stop(proc)
    assert rc == 0, err
    assert "SIGUSR1: access log reopened" in err, err


# ---- slow tier: the Debian package ----

def _installed_version():
    r = run(["dpkg-query", "-W", "-f=${Status} ${Version}", "portico"])
    return r.stdout if r.returncode == 0 and "install ok installed" in r.stdout else None


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """scripts/package, then dpkg -i on this machine (root only)."""
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root (CI runs as root on a fresh Debian 12)")
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([os.path.join(SOURCE, "scripts", "package"), str(out)], cwd=SOURCE,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    deb = r.stdout.strip().splitlines()[-1]
    assert deb.endswith(".deb") and os.path.isfile(deb), r.stdout
    was_installed = _installed_version()
    r = run(["dpkg", "-i", deb])
    assert r.returncode == 0, r.stdout + r.stderr
    yield {"deb": deb}
    if not was_installed:
        run(["dpkg", "--purge", "portico"])


@pytest.mark.slow
def test_package_metadata(package):
    deb = package["deb"]
    fields = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
    # from dpkg-shlibdeps: the libraries the binary links
    for lib in ("libuv1", "libluajit", "libssl3", "libsystemd0", "libyaml-0-2", "adduser"):
        assert lib in fields, fields
    ctl = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert "/etc/portico/portico.yaml" in ctl and "/etc/logrotate.d/portico" in ctl, ctl
    r = run(["lintian", "--fail-on", "error", deb])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"(?m)^E: ", r.stdout), r.stdout


@pytest.mark.slow
def test_package_installed_checks_and_runs(package, tmp_path):
    assert run(["getent", "passwd", "portico"]).returncode == 0, "no portico system user"
    assert os.path.isfile("/lib/systemd/system/portico.service")
    etc = "/etc/portico/portico.yaml"
    with open(etc) as f:
        text = f.read()
    assert "dirs: [/usr/share/portico/services]" in text, text
    r = run(["/usr/bin/portico", "--check", "-c", etc])
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stdout
    # without -c, from /: /etc/portico/portico.yaml
    r = run(["/usr/bin/portico", "--check"])
    assert r.returncode == 0 and r.stdout.startswith("portico: %s is valid" % etc), r.stderr
    # the installed binary from /, as the portico user, on a copy of the
    # installed config with free ports
    text, ports = with_free_ports(text)
    # where the portico user can read it (pytest's tmp_path is root's, 0700)
    shared = tempfile.mkdtemp(prefix="portico-install-")
    os.chmod(shared, 0o755)
    cfg = os.path.join(shared, "portico.yaml")
    with open(cfg, "w") as f:
        f.write(text)
    os.chmod(cfg, 0o644)
    proc = start(["/usr/bin/portico", "-c", cfg], ports[0], user="portico")
    try:
        status, body = call_echo(ports[0])
        assert status == 200, body
        assert body["payload"] == {"hello": "world"} and body["username"] == "john.doe", body
    finally:
        rc, err = stop(proc)
        shutil.rmtree(shared)
    assert rc == 0, err
    if shutil.which("systemd-analyze"):
        r = run(["systemd-analyze", "verify", "/lib/systemd/system/portico.service"])
        assert r.returncode == 0, r.stdout + r.stderr
