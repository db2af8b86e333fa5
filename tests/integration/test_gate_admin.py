"""The admin listener under hostile peers: it shares the main thread with
reloads and signals, so an idle or endless connection is closed, and idle
connections holding every place cannot keep a health check out."""
import socket
import time

from amqp_support import Http
from conftest import read_until_close


def admin_raw(gw):
    s = socket.create_connection(("127.0.0.1", gw.admin_port))
    s.settimeout(10)
    return s


def healthy(gw):
    admin = Http(gw.admin_port, timeout=3)
    try:
        return admin.request("GET", "/healthz")[0] == 200
    finally:
        admin.close()


def test_an_idle_admin_connection_is_closed_after_its_deadline(gw):
    s = admin_raw(gw)
    t0 = time.time()
    data, closed = read_until_close(s, 10)
    took = time.time() - t0
    assert closed and data == b"", data
    assert 3.5 < took < 8, took  # 5 s from the accept, swept once a second
    assert healthy(gw)


def test_idle_connections_cannot_keep_a_health_check_out(gw):
    idle = [admin_raw(gw) for _ in range(48)]  # more than the 32 places
    try:
        for _ in range(3):
            assert healthy(gw)
    finally:
        for s in idle:
            s.close()


def test_an_endless_admin_request_is_cut_off(gw):
    """Headers without end are cut off past 64 KB, long before the 5 s
    deadline would end them: the peer sees the close at once and no answer."""
    s = admin_raw(gw)
    t0 = time.time()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    try:
        for _ in range(256):  # 256 KB of header lines, four times the bound
            s.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    except OSError:
        pass  # the close came while we were still sending
    try:
        data, closed = read_until_close(s, 3)
    except ConnectionResetError:
        data, closed = b"", True
    took = time.time() - t0
    s.close()
    assert closed and not data.startswith(b"HTTP/"), data[:100]
    assert took < 3, took  # the byte bound, not the deadline
    assert healthy(gw)
