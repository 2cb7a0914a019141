"""Servers that run inside a test host's network namespace (see ``testhosts.py``).

Standard library only, no httptap imports: this file is started as
``ip netns exec NAME <python> tests/servers.py --files DIR ...``.

* HTTP/1.1 (keep-alive) on ``--http-port`` (80):
  - ``GET|HEAD /files/<name>``  a file from ``--files DIR``, with Content-Length (sendfile)
  - ``POST|PUT /upload``        reads the body (Content-Length or chunked), answers
                                ``{"size": N, "sha256": "<hex>"}``; with ``?hash=none``
                                only ``{"size": N}`` (sha256 caps near 800 MB/s here)
  - ``GET|HEAD /bytes/<n>``     ``pattern_bytes("bytes", n)``: n deterministic bytes
  - ``GET|HEAD /status/<code>`` answers with that status
  - ``GET /headers``            the request line and headers as JSON
* TCP echo on ``--echo-port`` (7): echoes everything; on EOF from the client it
  finishes writing, then shuts down its sending side and closes.

Both listen on ``::`` with IPV6_V6ONLY off (IPv4 and IPv6 on one socket), or on
``0.0.0.0`` where IPv6 is unavailable. Prints ``ready`` on stdout once both are
listening; exits on SIGTERM (and, with ``--exit-on-stdin-eof``, when its stdin
closes: the test process that started it has died or let go).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Iterator

MiB = 1 << 20
PAGE = 4096
IDLE_TIMEOUT = 120.0          # seconds a connection may sit idle before the server drops it
IO_CHUNK = 1 << 20
MAX_UPLOAD_LINE = 4096        # longest chunk-size or trailer line accepted
MAX_BYTES = 1 << 34           # largest /bytes/<n> served (16 GiB)

_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")


# --------------------------------------------------------------------------- content pattern

@functools.lru_cache(maxsize=8)
def _base_block(seed: str) -> bytes:
    return random.Random(f"httptap-testhost:{seed}").randbytes(MiB)


def pattern_chunks(seed: str, size: int) -> Iterator[bytes]:
    """Yield ``size`` deterministic pseudo-random bytes in chunks of at most 1 MiB.

    A random 1 MiB block (fixed by ``seed``) repeated, with every 4 KiB page
    starting with its page number (8 bytes, big-endian): no two pages are
    equal, so a lost, repeated or reordered page changes the content and its
    hash, while generating costs little more than a memory copy.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    block = _base_block(seed)
    pages_per_block = MiB // PAGE
    for k in range((size + MiB - 1) // MiB):
        buf = bytearray(block)
        first_page = k * pages_per_block
        for p in range(pages_per_block):
            struct.pack_into(">Q", buf, p * PAGE, first_page + p)
        remaining = size - k * MiB
        yield bytes(buf) if remaining >= MiB else bytes(buf[:remaining])


def pattern_bytes(seed: str, size: int) -> bytes:
    """All of ``pattern_chunks(seed, size)`` as one bytes object."""
    return b"".join(pattern_chunks(seed, size))


# --------------------------------------------------------------------------- common plumbing

def _is_disconnect(exc: BaseException | None) -> bool:
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, BrokenPipeError))


class _QuietErrors:
    """Mixin: a client that goes away is normal; anything else goes to stderr once."""

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        exc = sys.exc_info()[1]
        if _is_disconnect(exc):
            return
        print(f"servers.py: error with {client_address}: {exc!r}", file=sys.stderr, flush=True)


def _bind_family(prefer_ipv6: bool) -> tuple[socket.AddressFamily, str]:
    if prefer_ipv6 and socket.has_ipv6:
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            pass
        else:
            probe.close()
            return socket.AF_INET6, "::"
    return socket.AF_INET, "0.0.0.0"


class _DualStackMixin:
    """Binds ``::`` with IPV6_V6ONLY off; never does name lookups (no getfqdn)."""

    address_family = socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        # http.server.HTTPServer.server_bind would call socket.getfqdn(): a DNS
        # lookup, which must not happen from a test host.
        self.server_name = "testhost"
        self.server_port = self.server_address[1]


# --------------------------------------------------------------------------- HTTP

class HostHTTPServer(_QuietErrors, _DualStackMixin, http.server.ThreadingHTTPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int], files_dir: str):
        self.address_family = family
        self.files_dir = os.path.realpath(files_dir)
        super().__init__(address, HTTPHandler)


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httptap-testhost/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: HostHTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002, ANN002
        pass

    # -- helpers

    def _send_body(self, code: int, body: bytes, content_type: str = "application/octet-stream",
                   head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _send_json(self, code: int, obj: object, head: bool = False) -> None:
        self._send_body(code, json.dumps(obj).encode() + b"\n", "application/json", head)

    def _not_found(self, head: bool = False) -> None:
        self._send_json(404, {"error": "not found", "path": self.path}, head)

    # -- GET / HEAD

    def do_GET(self) -> None:
        self._get(head=False)

    def do_HEAD(self) -> None:
        self._get(head=True)

    def _get(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "files":
            self._get_file(parts[2], head)
        elif len(parts) == 3 and parts[1] == "bytes" and parts[2].isdigit():
            self._get_bytes(int(parts[2]), head)
        elif len(parts) == 3 and parts[1] == "status" and parts[2].isdigit():
            self._get_status(int(parts[2]), head)
        elif path == "/headers":
            self._send_json(200, {"method": self.command, "path": self.path,
                                  "version": self.request_version,
                                  "headers": [[k, v] for k, v in self.headers.items()]}, head)
        else:
            self._not_found(head)

    def _get_file(self, name: str, head: bool) -> None:
        if not _FILE_NAME.match(name):
            self._not_found(head)
            return
        full = os.path.join(self.server.files_dir, name)
        try:
            f = open(full, "rb")  # noqa: SIM115
        except OSError:
            self._not_found(head)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()          # headers are written here (wfile is unbuffered)
            if not head and size:
                sent = self.connection.sendfile(f, 0, size)
                if sent != size:
                    self.close_connection = True

    def _get_bytes(self, n: int, head: bool) -> None:
        if n > MAX_BYTES:
            self._send_json(400, {"error": f"at most {MAX_BYTES} bytes"}, head)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if not head:
            for chunk in pattern_chunks("bytes", n):
                self.wfile.write(chunk)

    def _get_status(self, code: int, head: bool) -> None:
        if not 200 <= code <= 599:
            self._send_json(400, {"error": "status must be 200..599"}, head)
            return
        if code in (204, 304):
            self.send_response(code)
            self.end_headers()
            return
        self._send_json(code, {"status": code}, head)

    # -- POST / PUT

    def do_POST(self) -> None:
        self._upload()

    def do_PUT(self) -> None:
        self._upload()

    def _upload(self) -> None:
        path, _, query = self.path.partition("?")
        if path != "/upload":
            self._discard_body(hashing=False)
            self._not_found()
            return
        hashing = "hash=none" not in query.split("&")
        try:
            size, digest = self._read_body(hashing)
        except ValueError as exc:
            self.close_connection = True
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, {"size": size, "sha256": digest} if hashing else {"size": size})

    def _discard_body(self, hashing: bool) -> None:
        try:
            self._read_body(hashing)
        except ValueError:
            self.close_connection = True

    def _read_body(self, hashing: bool = True) -> tuple[int, str]:
        """Read the request body; return its size and sha256 ("" if not ``hashing``).

        Raises ValueError on bad framing or a body cut short.
        """
        h = hashlib.sha256() if hashing else None
        buf = memoryview(bytearray(IO_CHUNK))
        size = 0
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline(MAX_UPLOAD_LINE)
                if not line.endswith(b"\n"):
                    raise ValueError("bad chunk-size line")
                try:
                    length = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("bad chunk size") from None
                if length == 0:
                    break
                size += self._read_exact(length, h, buf)
                if self.rfile.readline(MAX_UPLOAD_LINE).strip():
                    raise ValueError("chunk not followed by CRLF")
            for _ in range(1000):          # trailers, up to the empty line
                line = self.rfile.readline(MAX_UPLOAD_LINE)
                if not line.endswith(b"\n"):
                    raise ValueError("truncated trailers")
                if not line.strip():
                    break
            else:
                raise ValueError("too many trailer lines")
        else:
            length = self.headers.get("Content-Length")
            if length is not None:
                if not length.strip().isdigit():
                    raise ValueError("bad Content-Length")
                size = self._read_exact(int(length), h, buf)
        return size, h.hexdigest() if h is not None else ""

    def _read_exact(self, n: int, h: "hashlib._Hash | None", buf: memoryview) -> int:
        remaining = n
        while remaining:
            got = self.rfile.readinto(buf[:min(remaining, len(buf))])
            if not got:
                raise ValueError("body ended early")
            if h is not None:
                h.update(buf[:got])
            remaining -= got
        return n


# --------------------------------------------------------------------------- echo

class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT)
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        while True:
            n = sock.recv_into(buf)
            if n == 0:                    # client half-closed: all it sent is echoed
                break
            sock.sendall(view[:n])
        sock.shutdown(socket.SHUT_WR)     # (socketserver closes the socket afterwards)


class EchoServer(_QuietErrors, _DualStackMixin, socketserver.ThreadingTCPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int]):
        self.address_family = family
        super().__init__(address, EchoHandler)


# --------------------------------------------------------------------------- main

def _exit_on_stdin_eof() -> None:
    """Exit once stdin reaches end of file: the process that started us holds the pipe's
    other end, so this happens when it closes it or dies, however it dies."""
    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", required=True, help="directory of files served as /files/<name>")
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--ipv4-only", action="store_true")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="exit when stdin is closed (the parent holds a pipe to it)")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if args.exit_on_stdin_eof:
        _exit_on_stdin_eof()

    family, any_addr = _bind_family(not args.ipv4_only)
    servers: list[socketserver.TCPServer] = [
        HostHTTPServer(family, (any_addr, args.http_port), args.files),
        EchoServer(family, (any_addr, args.echo_port)),
    ]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                         name=type(srv).__name__, daemon=True).start()
    print("ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
