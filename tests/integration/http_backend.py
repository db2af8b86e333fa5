"""A backend of the tests' own for the proxy: an HTTP/1.1 server on asyncio,
run as its own process (python3 http_backend.py PORT) so a test can kill it
and start it again. With --cert FILE --key FILE it speaks TLS (Python's
ssl), --client-ca FILE makes it require a client certificate of that CA and
--max-tls 1.2 keeps it to TLS 1.2.

Every request is answered with JSON saying what arrived: the port, the
connection's number (keep-alive shows as the same number), method, target,
headers in order, the body's length and SHA-256 (bodies are streamed, never
kept, Content-Length or chunked alike) and the body itself when small; over
TLS also "tls": the version, whether the session was resumed and the client
certificate's subject CN (None without one).

Special paths:
  /download?size=N[&chunked=1]  N bytes of a known pattern, streamed
  /slow?delay=S                 answers after S seconds
  /status?code=C                answers with status C (204/304 with no body)
  /garbage                      a malformed answer
  /ws                           a WebSocket handshake, then text frames echoed
  /then-close                   the usual answer (keep-alive), then the connection is
                                closed (over TLS: with a close_notify)
  /then-junk?delay=S            the usual answer, then after S seconds (0: at once)
                                an answer nobody asked for ("junk!")
"""
import asyncio
import base64
import hashlib
import argparse
import json
import ssl
import sys
import urllib.parse

PATTERN = bytes(range(256)) * 256  # 64 KiB
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def pattern_bytes(n):
    """The first n bytes of the download pattern (for checks on the client side)."""
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Backend:
    def __init__(self, port):
        self.port = port
        self.connections = 0

    @staticmethod
    async def read_exactly(reader, left):
        """Yields the next `left` bytes in pieces of at most 64 KB."""
        while left:
            piece = await reader.read(min(left, 65536))
            if not piece:
                raise ConnectionError("eof in body")
            left -= len(piece)
            yield piece

    async def read_body(self, reader, headers):
        """Yields the body in pieces (Content-Length or chunked)."""
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                line = await reader.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    return
                async for piece in self.read_exactly(reader, size):
                    yield piece
                await reader.readexactly(2)
        else:
            async for piece in self.read_exactly(reader, int(headers.get("content-length", "0"))):
                yield piece

    async def handle(self, reader, writer):
        self.connections += 1
        conn_no = self.connections
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, version = line.decode("latin1").rstrip("\r\n").split(" ", 2)
                pairs = []
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b""):
                        break
                    name, _, value = h.decode("latin1").rstrip("\r\n").partition(":")
                    pairs.append([name, value.strip()])
                headers = {k.lower(): v for k, v in pairs}
                digest, length, small = hashlib.sha256(), 0, bytearray()
                async for piece in self.read_body(reader, headers):
                    digest.update(piece)
                    length += len(piece)
                    if len(small) < 65536:
                        small += piece[: 65536 - len(small)]
                path, _, query = target.partition("?")
                q = dict(urllib.parse.parse_qsl(query))
                if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                    await self.websocket(reader, writer, headers)
                    return
                if path == "/garbage":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n")
                    await writer.drain()
                    return
                if path == "/slow":
                    await asyncio.sleep(float(q.get("delay", "1")))
                if path == "/download":
                    await self.download(writer, int(q["size"]), q.get("chunked") == "1", method)
                    continue
                status = int(q.get("code", "200")) if path == "/status" else 200
                info = {
                    "port": self.port, "connection": conn_no, "method": method, "target": target,
                    "version": version, "headers": pairs, "body_len": length,
                    "body_sha256": digest.hexdigest(),
                    "body": small.decode("latin1") if length <= 65536 else None,
                }
                sslobj = writer.get_extra_info("ssl_object")
                if sslobj is not None:
                    peer = sslobj.getpeercert()
                    cn = [v for rdn in (peer or {}).get("subject", ()) for k, v in rdn
                          if k == "commonName"]
                    info["tls"] = {"version": sslobj.version(),
                                   "session_reused": sslobj.session_reused,
                                   "client_cn": cn[0] if cn else None}
                body = json.dumps(info).encode()
                head = "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" % status
                head += "X-Backend-Port: %d\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n" % self.port
                if status in (204, 304):
                    body = b""
                else:
                    head += "Content-Length: %d\r\n" % len(body)
                writer.write(head.encode() + b"\r\n" + (b"" if method == "HEAD" else body))
                await writer.drain()
                if path == "/then-close":
                    return
                if path == "/then-junk":
                    await asyncio.sleep(float(q.get("delay", "0")))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\njunk!")
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    async def download(self, writer, size, chunked, method):
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        head += "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % size
        writer.write(head.encode() + b"\r\n")
        if method == "HEAD":
            await writer.drain()
            return
        left = size
        while left:
            piece = PATTERN[: min(left, len(PATTERN))]
            left -= len(piece)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def websocket(self, reader, writer, headers):
        accept = base64.b64encode(hashlib.sha1(
            (headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        await writer.drain()
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
            if b0 & 0x0F == 8:  # close
                writer.write(b"\x88\x00")
                await writer.drain()
                return
            reply = ("echo:%d:" % self.port).encode() + data
            writer.write(bytes([0x81, len(reply)]) + reply)  # short text frames only
            await writer.drain()


async def main(port, cert=None, key=None, client_ca=None, max_tls=None):
    backend = Backend(port)
    ctx = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if max_tls == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    server = await asyncio.start_server(backend.handle, "127.0.0.1", port, reuse_address=True,
                                        ssl=ctx)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca")
    ap.add_argument("--max-tls", choices=["1.2"])
    a = ap.parse_args()
    asyncio.run(main(a.port, a.cert, a.key, a.client_ca, a.max_tls))
