"""Hot reload under load: service files rewritten, broken, deleted and
restored, and config reloads (SIGHUP and `portico reload`), with not one
failed request."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from amqp_support import ROOT
from conftest import BASE_CONFIG

VERSION = """
local service = require "portico.service"
local M = service.new {{ name = "test.version"{extra} }}
function M:handle() self.response.payload = {{ version = "{version}" }} end
return M
"""


def write_version(path, version, extra="", atomic=False):
    text = VERSION.format(version=version, extra=extra)
    if atomic:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    else:
        with open(path, "w") as f:
            f.write(text)


class Load:
    """Client threads calling one path on keep-alive connections until stopped."""

    def __init__(self, gw, path, threads=4):
        self.gw, self.path = gw, path
        self.seen, self.failures, self.count = {}, [], 0
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        client = self.gw.http(timeout=10)
        while self.running:
            try:
                status, _, body = client.post(self.path, {})
                key = json.loads(body).get("version") if status == 200 else None
                with self.lock:
                    self.count += 1
                    if status != 200:
                        self.failures.append((status, body))
                    else:
                        self.seen[key] = self.seen.get(key, 0) + 1
            except Exception as e:  # a socket error is a failure too
                with self.lock:
                    self.failures.append(("socket", repr(e)))
                client = self.gw.http(timeout=10)

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(15)
        return self


def gateway_with_version(start_gateway, tmp_path):
    cfg = BASE_CONFIG.replace("gateway_service_list: [", "gateway_service_list: [test.version, ")
    cfg = cfg.replace("services:\n  dirs:", "services:\n  watch_interval: 50ms\n  dirs:")
    path = os.path.join(str(tmp_path), "services", "test", "version.lua")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_version(path, "v1")
    return start_gateway(cfg), path


def test_service_rewritten_under_load_drops_nothing(start_gateway, tmp_path):
    gw, path = gateway_with_version(start_gateway, tmp_path)
    gw.expect_error("service file refused")
    load = Load(gw, "/gateway/test.version")
    try:
        for i in range(50):
            write_version(path, "v2" if i % 2 == 0 else "v1", atomic=i % 3 == 0)
            time.sleep(0.15)
            if i == 20:
                # a version that would answer "broken" but does not pass the checks
                write_version(path, "broken", extra=', input = { x = "no-such-type" }')
                assert gw.log_has("service file refused", timeout=5)
            if i == 30:
                # deleted and written again at once, as some editors save
                os.remove(path)
                write_version(path, "v1")
                time.sleep(0.15)
        time.sleep(0.3)
    finally:
        load.stop()
    assert load.failures == []
    assert load.count > 200
    assert load.seen.get("v1", 0) > 0 and load.seen.get("v2", 0) > 0
    assert "broken" not in load.seen
    refused = [e for e in gw.log_lines("error") if "service file refused" in e["msg"]]
    assert len(refused) == 1 and path in refused[0]["msg"]
    assert "no-such-type" in refused[0]["msg"]


def test_new_removed_and_changed_service_files(start_gateway, tmp_path):
    gw, path = gateway_with_version(start_gateway, tmp_path)
    c = gw.http()
    assert json.loads(c.post("/gateway/test.version", {})[2]) == {"version": "v1"}
    write_version(path, "v2")
    deadline = time.time() + 1.0
    while json.loads(c.post("/gateway/test.version", {})[2]).get("version") != "v2":
        assert time.time() < deadline, "the change did not take effect within a second"
        time.sleep(0.02)
    # every worker runs it: many connections all see v2
    for _ in range(8):
        assert json.loads(gw.http().post("/gateway/test.version", {})[2]) == {"version": "v2"}
    os.remove(path)
    deadline = time.time() + 1.0
    while c.post("/gateway/test.version", {})[0] != 404:
        assert time.time() < deadline, "a removed service still answered after a second"
        time.sleep(0.02)
    for _ in range(8):
        assert gw.http().post("/gateway/test.version", {})[0] == 404


def test_sighup_and_portico_reload_under_load(start_gateway, tmp_path):
    gw, path = gateway_with_version(start_gateway, tmp_path)
    gw.expect_error("config reload refused")
    binary = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "build", "portico")
    original = open(gw.config).read()
    added = original.replace("  rest:\n", "  rest:\n    - name: api.version\n"
                             "      url_path: /api/version\n      methods: [POST]\n"
                             "      service: test.version\n", 1)
    load = Load(gw, "/gateway/test.version")
    keep_alive = gw.http()
    assert keep_alive.post("/api/version", {})[0] == 404
    try:
        with open(gw.config, "w") as f:
            f.write(added)
        gw.proc.proc.send_signal(signal.SIGHUP)
        assert gw.log_has("config reloaded: generation 2")
        time.sleep(0.1)
        # the connection opened before the reload carries on with the new channel
        status, _, body = keep_alive.post("/api/version", {})
        assert status == 200 and json.loads(body) == {"version": "v1"}

        with open(gw.config, "w") as f:
            f.write(added.replace("workers: 2", "workers: [2"))
        r = subprocess.run([binary, "reload", "-c", gw.config], capture_output=True, text=True,
                           timeout=30)
        # the broken file cannot even name the admin listener: the command says so
        assert r.returncode != 0

        with open(gw.config, "w") as f:
            f.write(added.replace("service: test.version", "service: no.such.service"))
        r = subprocess.run([binary, "reload", "-c", gw.config], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1
        answer = json.loads(r.stdout)
        assert answer["accepted"] is False and "no.such.service" in answer["error"]

        gw.proc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        with open(gw.config, "w") as f:
            f.write(added.replace("name: api.version", "name: api.version2")
                    .replace("url_path: /api/version", "url_path: /api/version2"))
        r = subprocess.run([binary, "reload", "-c", gw.config], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout)["accepted"] is True
        assert keep_alive.post("/api/version2", {})[0] == 200
        assert keep_alive.post("/api/version", {})[0] == 404
    finally:
        load.stop()
    assert load.failures == []
    assert load.seen.get("v1", 0) > 0
    refused = [e for e in gw.log_lines("error") if "config reload refused" in e["msg"]]
    assert len(refused) == 2 and all("no.such.service" in e["msg"] for e in refused)


def rss_kb(pid):
    total = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total = int(line.split()[1])
    return total


@pytest.mark.skipif(os.environ.get("PT_ASAN") == "1",
                    reason="AddressSanitizer keeps freed memory in quarantine")
def test_memory_does_not_grow_with_reloads(start_gateway, tmp_path):
    gw, path = gateway_with_version(start_gateway, tmp_path)
    c = gw.http()
    binary_pid = gw.proc.proc.pid

    def reload_many(n):
        for i in range(n):
            # each admin reload re-reads the config and, the file being newer,
            # reloads the service on every worker
            write_version(path, "v%d" % (i % 2))
            s, _, _ = c.request("GET", "/gateway/test.version")
            admin = gw.http()
            admin.conn.port = gw.admin_port
            st, _, _ = admin.request("POST", "/reload")
            assert st == 200 and s == 200

    reload_many(100)  # warm up: allocator and GC reach their working size
    before = rss_kb(binary_pid)
    reload_many(300)
    after = rss_kb(binary_pid)
    # the growth allowed is far below what 300 leaked VMs or services would take
    assert after - before < 4096, (before, after)
