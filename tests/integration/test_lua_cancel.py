"""The yield protocol's cancel at the worker's drain time-out (host/pt_lua.h):
a service waiting in a primitive answers when drain_timeout passes, its call
returning "cancelled", and the gateway then stops without waiting for the
backend: an outgoing HTTP call to a slow backend, and an AMQP publish whose
confirm does not come."""
import json
import os
import socket
import textwrap
import threading
import time

from amqp_support import BROKER_HOST, BROKER_PORT, AmqpClient, Http, Portico, free_port
from test_outgoing_http import CONFIG, HTTP_SERVICE, Backend, call


def test_a_call_waiting_past_the_drain_timeout_is_cancelled(start_gateway, tmp_path):
    backend = Backend()
    try:
        os.makedirs(tmp_path / "services" / "http", exist_ok=True)
        with open(tmp_path / "services" / "http" / "call.lua", "w") as f:
            f.write(textwrap.dedent(HTTP_SERVICE))
        gw = start_gateway(CONFIG.replace("drain_timeout: 10s", "drain_timeout: 1s"),
                           targets="http://127.0.0.1:%d" % backend.port, timeout="30s",
                           workers=1)
        out = {}
        th = threading.Thread(target=lambda: out.update(r=call(gw, {"path": "/slow?delay=8"})))
        th.start()
        assert backend.slow_started.wait(5)
        t0 = time.time()
        assert gw.proc.stop() == 0
        took = time.time() - t0
        th.join(5)
        assert 0.8 < took < 5, "stopped after %.1fs with a 1s drain_timeout" % took
        status, _, body = out["r"]
        assert status == 200, body
        assert "cancelled" in body["err"], body
        assert not backend.slow_done.is_set()
    finally:
        backend.close()


# ---- AMQP: a publish waiting for its confirm ---------------------------------

Q_CANCEL = "portico-test.cancel"

SEND_SERVICE = """
local service = require "portico.service"
local M = service.new { name = "t.send" }
function M:handle()
  local ok, err = self.out.amqp:send("hello", "Frozen", "", "portico-test.cancel")
  self.response.payload = { sent = ok == true, error = err }
end
return M
"""


class FreezingProxy:
    """A TCP relay to the broker whose broker-to-gateway direction can be
    held (frozen): what the gateway sends still reaches the broker, but no
    confirm comes back until it thaws."""

    def __init__(self):
        self.thawed = threading.Event()
        self.thawed.set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            broker = socket.create_connection((BROKER_HOST, BROKER_PORT))
            threading.Thread(target=self._pump, args=(client, broker, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, True), daemon=True).start()

    def _pump(self, src, dst, hold):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if hold:
                    self.thawed.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.thawed.set()
        self.sock.close()


def test_a_publish_waiting_for_its_confirm_past_the_drain_timeout_is_cancelled(tmp_path):
    with AmqpClient() as c:
        c.queue_declare(Q_CANCEL)
        c.queue_purge(Q_CANCEL)
    proxy = FreezingProxy()
    gw = None
    try:
        services = tmp_path / "services"
        services.mkdir()
        (services / "send.lua").write_text(SEND_SERVICE)
        port, admin = free_port(), free_port()
        cfg = tmp_path / "cancel.yaml"
        cfg.write_text(textwrap.dedent("""\
            server:
              listen: 127.0.0.1:%(port)d
              workers: 1
              drain_timeout: 1s
            admin:
              listen: 127.0.0.1:%(admin)d
            services:
              dirs: [%(services)s]
            outgoing:
              amqp:
                - name: Frozen
                  url: amqp://guest:guest@127.0.0.1:%(proxy)d/
                  heartbeat: 60s
                  timeout: 30s
            channels:
              rest:
                - name: send
                  url_path: /t/send
                  methods: [POST]
                  service: t.send
            """) % {"port": port, "admin": admin, "services": services, "proxy": proxy.port})
        gw = Portico(str(cfg), port)
        deadline = time.time() + 10
        while True:  # the connection is up once a publish is confirmed
            status, _, body = Http(gw.port).post("/t/send", {})
            if json.loads(body)["sent"]:
                break
            assert time.time() < deadline, body
            time.sleep(0.1)
        proxy.thawed.clear()
        out = {}
        th = threading.Thread(target=lambda: out.update(r=Http(gw.port).post("/t/send", {})))
        th.start()
        time.sleep(0.5)  # the publish is out; its confirm is held
        assert "r" not in out
        t0 = time.time()
        gw.proc.send_signal(15)
        th.join(5)
        took = time.time() - t0
        assert "r" in out, "no answer %.1fs after SIGTERM with a 1s drain_timeout" % took
        assert 0.8 < took < 4, took
        status, _, body = out["r"]
        assert status == 200, body
        assert json.loads(body) == {"sent": False, "error": "cancelled"}, body
        proxy.thawed.set()  # the late confirm must be harmless
        code = gw.stop()
        with open(gw.log_path) as f:
            log = f.read()
        gw = None
        assert code == 0, log
        assert "Sanitizer" not in log, log
        assert '"level":"error"' not in log.replace(" ", ""), log
    finally:
        proxy.close()
        if gw:
            gw.stop()
