"""Large bodies through the http_proxy channel (issue 22), beside
test_proxy's 512 MB one-after-the-other run: a chunked upload and a download
at the same time on one worker, and a client that stops reading mid-download,
with the bytes checked by SHA-256 at the far end and portico's memory
watched all along. The target is http_backend.py (tests/integration)."""
import hashlib
import os
import socket
import threading
import time

from http_backend import pattern_bytes
from test_proxy import backends, digest_stream, proxy, read_response, seen  # noqa: F401

MB = 1024 * 1024
ASAN = os.environ.get("PT_ASAN") == "1"
SIZE = (32 if ASAN else 256) * MB


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def expected_download(size):
    return hashlib.sha256(pattern_bytes(64 * 1024) * (size // (64 * 1024))).hexdigest()


def chunked_upload(gw, size, out):
    """PUTs size bytes in 1 MB chunks (no Content-Length); out gets the
    target's view of the body and the sha256 sent."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    s.sendall(b"PUT /svc/one/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    block = os.urandom(MB)
    d = hashlib.sha256()
    for _ in range(size // MB):
        s.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
        d.update(block)
    s.sendall(b"0\r\n\r\n")
    resp = read_response(s)
    s.close()
    out.update(status=resp["status"], seen=seen(resp["body"]), sent=d.hexdigest())


def test_a_chunked_upload_and_a_download_at_once_stream_with_flat_memory(proxy):
    gw = proxy()
    pid = gw.proc.proc.pid
    idle = rss_kb(pid)
    up = {}
    t = threading.Thread(target=chunked_upload, args=(gw, SIZE, up))
    t.start()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    s.sendall(b"GET /svc/one/download?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert digest_stream(s, rest, head, SIZE) == expected_download(SIZE)
    s.close()
    t.join(120)
    assert up["status"] == 200, up
    assert up["seen"]["body_len"] == SIZE
    assert up["seen"]["body_sha256"] == up["sent"]
    if not ASAN:
        # both bodies went through buffers of a fixed size: 512 MB moved,
        # a few MB of growth at most
        grown = rss_kb(pid, "VmHWM") - idle
        assert grown < 24 * 1024, "portico's peak RSS grew by %d kB" % grown


def test_a_client_that_stops_reading_holds_the_target_not_portico(proxy):
    """Back-pressure: while the client reads nothing, portico stops reading the
    target instead of buffering its body; once the client reads again, every
    byte arrives."""
    gw = proxy()
    pid = gw.proc.proc.pid
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(b"GET /svc/one/download?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    before = rss_kb(pid)
    time.sleep(1.5)                      # the target could send it all meanwhile
    held = rss_kb(pid)
    if not ASAN:
        assert held - before < 16 * 1024, "RSS grew %d kB while the client read nothing" % (
            held - before)
    assert digest_stream(s, rest, head, SIZE) == expected_download(SIZE)
    s.close()
