"""What a new user ran into (issue 19), each shown fixed: a refused
`portico reload` is logged and counted by the running server; the
restart-only warning names the setting that changed, against what runs; a
brand-new broken service file is not said to have a previous version; the
start line counts "1 worker"; the admin listener's reason phrases are
RFC 9110's."""
import json
import os
import socket
import subprocess
import time

from amqp_support import SOURCE, scrape, value
from conftest import BASE_CONFIG

BINARY = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")


def reload_cli(gw):
    return subprocess.run([BINARY, "reload", "-c", gw.config], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)


def rewrite(gw, old, new):
    text = open(gw.config).read()
    assert old in text, old
    with open(gw.config, "w") as f:
        f.write(text.replace(old, new, 1))


def test_start_line_says_1_worker(start_gateway):
    gw = start_gateway(BASE_CONFIG.replace("workers: 2", "workers: 1"))
    assert gw.log_has("with 1 worker, ")
    assert "1 workers" not in gw.log_text()
    gw2 = start_gateway(sub="two")
    assert gw2.log_has("with 2 workers, ")


def test_refused_cli_reload_is_logged_and_counted_by_the_server(gw):
    gw.expect_error("config reload refused")
    before = value(scrape(gw), "portico_reload_failures_total")
    # valid YAML with a readable admin.listen, but a config the server refuses
    rewrite(gw, "service: demo.echo", "service: no.such.service")
    r = reload_cli(gw)
    assert r.returncode == 1, r.stderr
    answer = json.loads(r.stdout)
    assert answer["accepted"] is False and "no.such.service" in answer["error"]
    assert gw.log_has("config reload refused")
    assert value(scrape(gw), "portico_reload_failures_total") == before + 1
    # a refusal the CLI's own loader sees (an unknown key) goes to the server too
    rewrite(gw, "service: no.such.service", "service: demo.echo\n      colour: blue")
    r = reload_cli(gw)
    assert r.returncode == 1
    assert "unknown key 'colour'" in json.loads(r.stdout)["error"]
    assert value(scrape(gw), "portico_reload_failures_total") == before + 2
    refused = [e["msg"] for e in gw.log_lines("error") if "config reload refused" in e["msg"]]
    assert len(refused) == 2 and "colour" in refused[1], refused


def test_restart_only_warning_names_the_setting_against_what_runs(gw):
    rewrite(gw, "workers: 2", "workers: 3")
    assert reload_cli(gw).returncode == 0
    assert gw.log_has("config reloaded: generation 2")
    warns = [e["msg"] for e in gw.log_lines("warn") if "after a restart" in e["msg"]]
    assert len(warns) == 1 and "server.workers (running: 2, new: 3)" in warns[0], warns
    assert "server.listen" not in warns[0] and "lua.path" not in warns[0]
    # back to what runs: nothing to warn about, though the last reload had 3
    rewrite(gw, "workers: 3", "workers: 2")
    assert reload_cli(gw).returncode == 0
    assert gw.log_has("config reloaded: generation 3")
    warns = [e["msg"] for e in gw.log_lines("warn") if "after a restart" in e["msg"]]
    assert len(warns) == 1, warns
    rewrite(gw, "access: off", "access: stdout")
    assert reload_cli(gw).returncode == 0
    assert gw.log_has("config reloaded: generation 4")
    warns = [e["msg"] for e in gw.log_lines("warn") if "after a restart" in e["msg"]]
    assert len(warns) == 2 and "log.access (running: off, new: stdout)" in warns[1], warns


def test_a_new_broken_file_has_no_previous_version(start_gateway, tmp_path):
    gw = start_gateway(BASE_CONFIG.replace("services:\n  dirs:",
                                           "services:\n  watch_interval: 50ms\n  dirs:"))
    gw.expect_error("service file refused")
    path = os.path.join(gw.tmp, "services", "test", "brand_new.lua")
    with open(path, "w") as f:
        f.write("return {")
    assert gw.log_has("service file refused, not loaded (no previous version)")
    assert "previous version keeps serving" not in gw.log_text()
    # an existing file that breaks still has its previous version serving
    with open(os.path.join(gw.tmp, "services", "test", "raise.lua"), "a") as f:
        f.write("\nthis is not lua\n")
    assert gw.log_has("the previous version keeps serving")
    assert gw.http().post("/gateway/test.raise", {})[0] == 200


def raw_status_line(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_admin_reason_phrases_are_the_standard_ones(gw):
    port = gw.admin_port
    get = lambda path: ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    assert raw_status_line(port, get("/healthz")) == "HTTP/1.1 200 OK"
    assert raw_status_line(port, get("/nope")) == "HTTP/1.1 404 Not Found"
    assert raw_status_line(port, get("/reload")) == "HTTP/1.1 405 Method Not Allowed"
    assert raw_status_line(port, b"BAD\r\n\r\n") == "HTTP/1.1 400 Bad Request"
    gw.expect_error("config reload refused")
    rewrite(gw, "service: demo.echo", "service: no.such.service")
    line = raw_status_line(port, b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert line == "HTTP/1.1 422 Unprocessable Content"
