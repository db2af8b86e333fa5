#!/usr/bin/python3
"""The backend of bench/run's bigbody scenario: a small HTTP/1.1 server,
one thread per connection, keep-alive.
  POST /sink            reads the body (Content-Length or chunked) and answers
                        {"bytes": N, "sha256": "..."} (sha256 only with ?sum=1)
  GET  /source?bytes=N  sends N bytes (with &seed=S, the pattern
                        pattern(S), else zeros), Content-Length set
  python3 backend.py PORT
"""
import hashlib
import json
import socket
import sys
import threading

CHUNK = 1 << 20


def pattern(seed, n):
    """n bytes, the same for the same seed: what the tests check against."""
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


class Conn:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def fill(self):
        d = self.sock.recv(CHUNK)
        if not d:
            raise EOFError
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        ln, _, self.buf = self.buf.partition(b"\r\n")
        return ln

    def take(self, n, h):
        """Reads n body bytes into the hash h (None: only count)."""
        while n:
            if not self.buf:
                self.fill()
            part = self.buf[:n]
            self.buf = self.buf[len(part):]
            if h:
                h.update(part)
            n -= len(part)


def serve(sock):
    c = Conn(sock)
    try:
        while True:
            start = c.line()
            if not start:
                continue
            method, target, _ = start.decode().split(" ", 2)
            hdrs = {}
            while True:
                ln = c.line()
                if not ln:
                    break
                k, _, v = ln.decode().partition(":")
                hdrs[k.strip().lower()] = v.strip()
            path, _, query = target.partition("?")
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if method == "POST" and path == "/sink":
                h = hashlib.sha256() if q.get("sum") == "1" else None
                n = 0
                if "content-length" in hdrs:
                    n = int(hdrs["content-length"])
                    c.take(n, h)
                elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(c.line().split(b";")[0], 16)
                        if size == 0:
                            while c.line():
                                pass
                            break
                        c.take(size, h)
                        n += size
                        c.line()
                body = json.dumps({"bytes": n, "sha256": h.hexdigest() if h else None}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
            elif method == "GET" and path == "/source":
                n = int(q.get("bytes", "0"))
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % n)
                block = pattern(q["seed"], CHUNK) if "seed" in q else bytes(CHUNK)
                view = memoryview(block)
                while n:
                    k = min(n, CHUNK)
                    sock.sendall(view[:k])
                    n -= k
            else:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (EOFError, OSError, ValueError):
        pass
    finally:
        sock.close()


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(64)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
