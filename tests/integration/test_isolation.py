"""The integration tests run on a copy of the shipped files (amqp_support's
ROOT, made by shipped_copy), never on the user's working tree: a broken work
in progress under services/ must not fail the suite, and a changed port in
config/portico.yaml must not either (the tests set ports by where a listen
line sits, from the free-port allocator)."""
import os
import subprocess
import sys
import uuid

from amqp_support import ROOT, SOURCE, Http, Portico, derive_config, free_port, listen_lines, \
    shipped_copy, with_ports

BROKEN = "local service = require 'portico.service'\nreturn service.new { name = \n"


def test_root_is_a_copy_not_the_checkout():
    assert os.path.realpath(ROOT) != os.path.realpath(SOURCE)
    assert os.path.isfile(os.path.join(ROOT, "services", "customer", "get.lua")) or \
        any(f.endswith(".lua") for _, _, fs in os.walk(os.path.join(ROOT, "services")) for f in fs)
    assert os.path.isfile(os.path.join(ROOT, "config", "portico.yaml"))
    assert not os.path.islink(os.path.join(ROOT, "services"))


def test_work_in_progress_under_services_does_not_reach_the_tests(tmp_path):
    wip = os.path.join(SOURCE, "services", "wip-%s.lua" % uuid.uuid4().hex[:8])
    with open(wip, "w") as f:
        f.write(BROKEN)
    try:
        copy = shipped_copy(str(tmp_path / "root"))
        assert not os.path.exists(os.path.join(copy, "services", os.path.basename(wip)))
        port, admin = free_port(), free_port()
        cfg = derive_config(os.path.join(copy, "config", "portico.yaml"), str(tmp_path), port,
                            admin)
        p = Portico(cfg, port, workdir=str(tmp_path))
        try:
            s, _, body = Http(port, auth=("john.doe", "secret")).post("/api/echo", {"a": 1})
            assert s == 200, body
        finally:
            assert p.stop() == 0
        # and a test of the suite, run as scripts/test runs it, passes
        env = dict(os.environ)
        env.pop("PORTICO_TEST_ROOT", None)
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            os.path.join(SOURCE, "tests", "integration", "test_core.py"),
                            "-k", "test_customer_get"],
                           cwd=SOURCE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        assert r.returncode == 0 and " passed" in r.stdout, r.stdout
    finally:
        os.unlink(wip)


def test_ports_follow_the_place_of_a_listen_line_not_its_number():
    text = ("server:\n  listen: 127.0.0.1:9999   # moved\n  tls:\n    listen: 0.0.0.0:8443\n"
            "admin:\n  listen: 127.0.0.1:11223\n")
    assert [p for _, p in listen_lines(text)] == ["server", "server.tls", "admin"]
    out = with_ports(text, {"server": 20001, "admin": 20002, "server.tls": 20003})
    assert "listen: 127.0.0.1:20001   # moved" in out
    assert "listen: 0.0.0.0:20003" in out and "listen: 127.0.0.1:20002" in out


def test_unit_tests_do_not_read_the_users_configs(tmp_path):
    """The C unit tests that load a whole config load fixtures of their own:
    a user who moves config/portico.yaml or config/wasp.yaml to other ports
    still has a green ctest."""
    build = os.path.join(SOURCE, "build")
    tests = [t for t in ("test_config", "test_config_dispatch")
             if os.access(os.path.join(build, t), os.X_OK)]
    if not tests:
        import pytest
        pytest.skip("no unit test binaries in build/")
    copy = shipped_copy(str(tmp_path / "root"))
    for name in ("portico.yaml", "wasp.yaml"):
        path = os.path.join(copy, "config", name)
        text = open(path).read()
        with open(path, "w") as f:
            f.write(with_ports(text, {"server": 18999, "admin": 18998}).replace(
                "127.0.0.1:18082", "127.0.0.1:28082"))
    for t in tests:
        r = subprocess.run([os.path.join(build, t)], cwd=copy, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        assert r.returncode == 0, "%s in a tree with other ports: %s" % (t, r.stdout)
