"""Servers that run inside a test host's network namespace (see ``testhosts.py``).

Standard library only (plus ``h2`` for HTTP/2 when it is importable), no httptap
imports: this file is started as ``ip netns exec NAME <python> tests/servers.py
--files DIR ...``.

* HTTP/1.1 (keep-alive) on ``--http-port`` (80) and ``--http-alt-port`` (8080):
  - ``GET|HEAD /files/<name>``  a file from ``--files DIR``, with Content-Length (sendfile)
  - ``POST|PUT /upload``        reads the body (Content-Length or chunked), answers
                                ``{"size": N, "sha256": "<hex>"}``; with ``?hash=none``
                                only ``{"size": N}`` (sha256 caps near 800 MB/s here)
  - ``GET|HEAD /bytes/<n>``     ``pattern_bytes("bytes", n)``: n deterministic bytes
  - ``GET|HEAD /status/<code>`` answers with that status
  - ``GET /headers``            the request line and headers as JSON
  - ``GET|HEAD /gzip/<n>``      ``gzip_plain(n)`` (n bytes of text) sent gzip-compressed
                                with ``Content-Encoding: gzip`` and Content-Length
  - ``GET /chunked/<n>``        ``pattern_bytes("chunked", n)`` in ``chunk_sizes(n)`` chunks
                                (``Transfer-Encoding: chunked``)
  - ``GET|HEAD /etag``          ``ETAG_BODY`` with ``ETag: ETAG``; 304 if If-None-Match matches
  - ``GET|HEAD /redirect``      302 to ``?to=/path`` (default ``/status/200``)
  - ``GET /raw/<name>``         a broken answer from ``RAW_ANSWERS``, then close: not HTTP,
                                bad chunked encoding, a head over 64 KiB
  - ``GET /ws``                 WebSocket echo (RFC 6455): text/binary frames echoed
                                unmasked, ping answered with pong, close answered and closed.
                                permessage-deflate (RFC 7692) when the client offers it:
                                then whole messages are echoed, compressed; ``?deflate=off``
                                declines it, ``?deflate=fresh`` answers with both
                                ``*_no_context_takeover``, ``?window=N`` with both
                                ``*_max_window_bits=N`` (9..15)
  - ``GET|POST /git/...``       ``git http-backend`` (CGI) over ``--git-root`` (smart HTTP)
  - ``GET /simple/``, ``/simple/<project>/``, ``/packages/<wheel>``: a PEP 503 index of
                                the wheels in ``--pip-dir`` (links carry ``#sha256=``)
* HTTPS (TLS with ALPN ``h2``, ``http/1.1``) with the same app on ``--https-port`` (443)
  and ``--tls-other-port`` (8444), certificate ``server.crt`` of ``--tls-dir``; the same
  with ``wrong-name.crt`` on ``--wrong-name-port`` (8443) and ``expired.crt`` on
  ``--expired-port`` (9443). HTTP/2 (only when ``h2`` imports; else ALPN offers only
  http/1.1) serves ``/files/``, ``/bytes/``, ``/status/``, ``/headers``, ``/gzip/``,
  ``/etag``, ``POST|PUT /upload``, ``/git/`` (git negotiates h2 by default) and the
  simple index; not ``/chunked/``, ``/redirect``, ``/raw/`` or ``/ws``; ``/reset/<code>``
  answers with RST_STREAM of that error code instead of a response.
* TCP echo on ``--echo-port`` (7): echoes everything; on EOF from the client it
  finishes writing, then shuts down its sending side and closes. UDP echo on
  ``--udp-echo-port`` (7): each datagram sent back.
* DNS on UDP and TCP ``--dns-port`` (53): TXT ``hello.httptap.test.`` ->
  ``"hello from the test host"``, A ``a.httptap.test.`` -> ``--dns-a``, AAAA
  ``a.httptap.test.`` -> ``--dns-aaaa`` (TTL 300); NXDOMAIN for other names.

All listen on ``::`` with IPV6_V6ONLY off (IPv4 and IPv6 on one socket), or on
``0.0.0.0`` where IPv6 is unavailable; a port given as 0 is not served. Prints
``ready`` (followed by `` h2`` when HTTP/2 is served) on stdout once all are
listening; exits on SIGTERM (and, with ``--exit-on-stdin-eof``, when its stdin
closes: the test process that started it has died or let go).
"""

from __future__ import annotations

import argparse
import base64
import functools
import gzip
import hashlib
import html
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import zlib
import urllib.parse
from collections.abc import Iterator

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    HAS_H2 = True
except ImportError:
    HAS_H2 = False
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # what an HTTP/2 client sends first

#: What ``GET /raw/<name>`` sends (then it closes the connection): answers no HTTP peer
#: could follow, for the observer's error names.
RAW_ANSWERS = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP\r\n\r\n",
    "bad-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    "huge-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n"
                 b"Content-Length: 0\r\n\r\n",
}

MiB = 1 << 20
PAGE = 4096
IDLE_TIMEOUT = 120.0          # seconds a connection may sit idle before the server drops it
HANDSHAKE_TIMEOUT = 10.0      # seconds for a TLS handshake
CGI_TIMEOUT = 60.0            # seconds for one `git http-backend` run
IO_CHUNK = 1 << 20
MAX_UPLOAD_LINE = 4096        # longest chunk-size or trailer line accepted
MAX_BYTES = 1 << 34           # largest /bytes/<n> served (16 GiB)
MAX_GZIP = 64 * MiB           # largest /gzip/<n> and /chunked/<n>
MAX_CGI_BODY = 64 * MiB       # largest request body passed to git http-backend
MAX_WS_FRAME = 16 * MiB       # largest WebSocket frame echoed

ETAG = '"httptap-etag-1"'
ETAG_BODY = b"this body has an ETag\n"
GZIP_LINE = b"httptap test host: a line of text that compresses well\n"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DNS_TXT_NAME = "hello.httptap.test"
DNS_TXT = b"hello from the test host"
DNS_A_NAME = "a.httptap.test"
DNS_TTL = 300

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


def gzip_plain(n: int) -> bytes:
    """What ``GET /gzip/<n>`` decodes to: n bytes of repeated ``GZIP_LINE`` text."""
    return (GZIP_LINE * (n // len(GZIP_LINE) + 1))[:n]


def chunk_sizes(n: int) -> list[int]:
    """The sizes of the chunks ``GET /chunked/<n>`` sends: about four, at most 64 KiB each."""
    step = max(1, min(64 * 1024, -(-n // 4)))
    return [min(step, n - i) for i in range(0, n, step)]


# --------------------------------------------------------------------------- common plumbing

def _is_disconnect(exc: BaseException | None) -> bool:
    """A client that went away, timed out, or failed a TLS handshake (wrong-name tests)."""
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, BrokenPipeError,
                            ssl.SSLError))


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

def etag_matches(if_none_match: str) -> bool:
    """Whether an If-None-Match header value matches ``ETAG``."""
    return ETAG in [t.strip() for t in if_none_match.split(",")] or if_none_match.strip() == "*"


class Site:
    """What the HTTP app serves: files, git repositories, wheels (directories may be None)."""

    def __init__(self, files_dir: str, git_root: str | None = None,
                 pip_dir: str | None = None) -> None:
        self.files_dir = os.path.realpath(files_dir)
        self.git_root = os.path.realpath(git_root) if git_root else None
        self.pip_dir = os.path.realpath(pip_dir) if pip_dir else None
        # project (PEP 503 normalized) -> [(wheel file name, sha256 hex)]
        self.wheels: dict[str, list[tuple[str, str]]] = {}
        if self.pip_dir:
            for name in sorted(os.listdir(self.pip_dir)):
                if not name.endswith(".whl") or not _FILE_NAME.match(name):
                    continue
                with open(os.path.join(self.pip_dir, name), "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                project = re.sub(r"[-_.]+", "-", name.split("-", 1)[0]).lower()
                self.wheels.setdefault(project, []).append((name, digest))

    def wheel_path(self, name: str) -> str | None:
        """The path of wheel ``name`` if the index holds it."""
        if self.pip_dir and any(name == w for ws in self.wheels.values() for w, _ in ws):
            return os.path.join(self.pip_dir, name)
        return None

    def pip_page(self, parts: list[str]) -> bytes | None:
        """The PEP 503 page of path ``/simple/...`` split at "/", or None (not found)."""
        rest = [p for p in parts[2:] if p]
        if not rest:
            links = [f'<a href="{p}/">{p}</a><br>' for p in sorted(self.wheels)]
            title = "Simple index"
        elif len(rest) == 1 and re.sub(r"[-_.]+", "-", rest[0]).lower() in self.wheels:
            project = re.sub(r"[-_.]+", "-", rest[0]).lower()
            links = [f'<a href="/packages/{html.escape(w)}#sha256={d}">{html.escape(w)}</a><br>'
                     for w, d in self.wheels[project]]
            title = f"Links for {project}"
        else:
            return None
        return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"1.0\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n"
                + "\n".join(links) + "\n</body></html>\n").encode()

    def git_cgi(self, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes | None, remote: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run ``git http-backend`` for ``target`` (``/git/...``): status, headers, body."""
        def error(code: int, obj: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
            return code, [("Content-Type", "application/json")], json.dumps(obj).encode()

        path, _, query = target.partition("?")
        path_info = urllib.parse.unquote(path[len("/git"):])
        if not self.git_root or ".." in path_info.split("/") or not path_info.startswith("/"):
            return error(404, {"error": "not found", "path": path})
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.git_root,
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": self.git_root, "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": method, "PATH_INFO": path_info, "QUERY_STRING": query,
            "REMOTE_ADDR": remote, "CONTENT_TYPE": "",
        }
        if body is not None:
            env["CONTENT_LENGTH"] = str(len(body))
        for k, v in headers:
            key = k.lower()
            if key == "content-type":
                env["CONTENT_TYPE"] = v
            elif key not in ("content-length", "transfer-encoding") and not key.startswith(":"):
                env["HTTP_" + k.upper().replace("-", "_")] = v
        try:
            proc = subprocess.run(["git", "http-backend"], input=body or b"", env=env,
                                  capture_output=True, timeout=CGI_TIMEOUT, cwd=self.git_root)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return error(500, {"error": f"git http-backend: {exc}"})
        m = re.search(rb"\r?\n\r?\n", proc.stdout)
        if m is None:
            return error(502, {"error": "git http-backend gave no headers",
                               "stderr": proc.stderr[-1000:].decode(errors="replace")})
        status, out = 200, []
        for line in proc.stdout[:m.start()].decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name.strip() and name.strip().lower() != "content-length":
                out.append((name.strip(), value.strip()))      # (the caller sets the length)
        return status, out, proc.stdout[m.end():]


class HostHTTPServer(_QuietErrors, _DualStackMixin, http.server.ThreadingHTTPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int],
                 site: Site | str):
        self.address_family = family
        self.site = site if isinstance(site, Site) else Site(site)
        self.files_dir = self.site.files_dir
        super().__init__(address, HTTPHandler)

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001
        # HTTP/2 with prior knowledge (h2c, `curl --http2-prior-knowledge`): the client
        # starts with the connection preface instead of a request line.
        if HAS_H2 and not isinstance(request, ssl.SSLSocket):
            request.settimeout(IDLE_TIMEOUT)
            try:
                first = request.recv(len(H2_PREFACE), socket.MSG_PEEK | socket.MSG_WAITALL)
            except OSError:
                first = b""
            if first == H2_PREFACE:
                H2Session(request, self.site).run()
                return
        super().finish_request(request, client_address)


class HostHTTPSServer(HostHTTPServer):
    """The same app over TLS; ALPN ``h2`` hands the connection to ``H2Session``."""

    def __init__(self, family: socket.AddressFamily, address: tuple[str, int],
                 site: Site, context: ssl.SSLContext):
        self.context = context
        super().__init__(family, address, site)

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001
        request.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.context.wrap_socket(request, server_side=True)   # takes over the fd
        try:
            tls.settimeout(IDLE_TIMEOUT)
            if tls.selected_alpn_protocol() == "h2":
                H2Session(tls, self.site).run()
            else:
                self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def tls_context(cert: str, key: str, h2: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if h2 else ["http/1.1"])
    return ctx


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httptap-testhost/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: HostHTTPServer
    _keep: bytearray | None = None

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
        path, _, query = self.path.partition("?")
        parts = path.split("/")
        if parts[1:2] == ["git"]:
            self._git(None)
        elif len(parts) == 3 and parts[1] == "files":
            self._get_file(parts[2], head)
        elif len(parts) == 3 and parts[1] == "gzip" and parts[2].isdigit():
            self._get_gzip(int(parts[2]), head)
        elif len(parts) == 3 and parts[1] == "chunked" and parts[2].isdigit():
            self._get_chunked(int(parts[2]), head)
        elif path == "/etag":
            self._get_etag(head)
        elif path == "/redirect":
            to = urllib.parse.parse_qs(query).get("to", ["/status/200"])[0]
            if not to.startswith("/") or to.startswith("//"):
                to = "/status/200"
            self.send_response(302)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/ws":
            self._websocket(urllib.parse.parse_qs(query))
        elif len(parts) == 3 and parts[1] == "raw" and parts[2] in RAW_ANSWERS:
            self.wfile.write(RAW_ANSWERS[parts[2]])
            self.wfile.flush()
            self.close_connection = True
        elif parts[1:2] == ["simple"] or (len(parts) == 3 and parts[1] == "packages"):
            self._pip_index(parts, head)
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
        self._get_file_from(self.server.site.files_dir, name, head)

    def _get_file_from(self, directory: str, name: str, head: bool) -> None:
        if not _FILE_NAME.match(name):
            self._not_found(head)
            return
        full = os.path.join(directory, name)
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
                if isinstance(self.connection, ssl.SSLSocket):
                    # (SSLSocket.sendfile falls back to 8 KiB writes: ~300 MB/s)
                    buf = memoryview(bytearray(IO_CHUNK))
                    sent = 0
                    while sent < size and (got := f.readinto(buf)):
                        self.connection.sendall(buf[:got])
                        sent += got
                else:
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

    def _get_gzip(self, n: int, head: bool) -> None:
        if n > MAX_GZIP:
            self._send_json(400, {"error": f"at most {MAX_GZIP} bytes"}, head)
            return
        body = gzip.compress(gzip_plain(n), compresslevel=6, mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _get_chunked(self, n: int, head: bool) -> None:
        if n > MAX_GZIP:
            self._send_json(400, {"error": f"at most {MAX_GZIP} bytes"}, head)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        body = memoryview(pattern_bytes("chunked", n))
        pos = 0
        for size in chunk_sizes(n):
            self.wfile.write(b"%x\r\n" % size + body[pos:pos + size] + b"\r\n")
            pos += size
        self.wfile.write(b"0\r\n\r\n")

    def _get_etag(self, head: bool) -> None:
        if etag_matches(self.headers.get("If-None-Match", "")):
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", ETAG)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(ETAG_BODY)))
        self.end_headers()
        if not head:
            self.wfile.write(ETAG_BODY)

    # -- WebSocket echo (RFC 6455)

    def _websocket(self, query: dict[str, list[str]]) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "").strip()
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key or \
                "upgrade" not in self.headers.get("Connection", "").lower():
            self._send_json(426, {"error": "WebSocket upgrade expected"})
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        offered = self.headers.get("Sec-WebSocket-Extensions", "")
        mode = query.get("deflate", [""])[0]
        window = query.get("window", [""])[0]
        deflate = "permessage-deflate" in offered.lower() and mode != "off"
        answer = "permessage-deflate"
        if mode == "fresh":
            answer += "; server_no_context_takeover; client_no_context_takeover"
        bits = 15
        if window.isdigit() and 9 <= int(window) <= 15 and "client_max_window_bits" in offered:
            bits = int(window)
            answer += f"; server_max_window_bits={bits}; client_max_window_bits={bits}"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if deflate:
            self.send_header("Sec-WebSocket-Extensions", answer)
        self.end_headers()
        self.close_connection = True
        if deflate:
            self._websocket_deflate(fresh=mode == "fresh", bits=bits)
            return
        while True:
            frame = self._ws_read_frame()
            if frame is None:
                return
            fin, opcode, payload, _ = frame
            if opcode == 0x8:                          # close: answer with its status, close
                self._ws_send(True, 0x8, payload[:2])
                return
            if opcode == 0x9:                          # ping
                self._ws_send(True, 0xA, payload)
            elif opcode in (0x0, 0x1, 0x2):            # continuation, text, binary: echo
                self._ws_send(fin, opcode, payload)

    def _websocket_deflate(self, fresh: bool, bits: int) -> None:
        """The echo with permessage-deflate: whole messages, inflated, then echoed in one
        compressed frame (a fresh compressor each time when ``fresh``)."""
        inflater = zlib.decompressobj(-15)
        deflater = zlib.compressobj(wbits=-bits)
        message: list[bytes] = []
        opcode = 0
        compressed = False
        while True:
            frame = self._ws_read_frame()
            if frame is None:
                return
            fin, op, payload, rsv1 = frame
            if op == 0x8:
                self._ws_send(True, 0x8, payload[:2])
                return
            if op == 0x9:
                self._ws_send(True, 0xA, payload)
                continue
            if op in (0x1, 0x2):
                opcode, compressed, message = op, rsv1, []
            message.append(payload)
            if not fin or len(b"".join(message)) > MAX_WS_FRAME:
                continue
            data = b"".join(message)
            if compressed:
                if fresh or inflater.eof:
                    inflater = zlib.decompressobj(-15)
                data = inflater.decompress(data + b"\x00\x00\xff\xff", MAX_WS_FRAME)
            if fresh:
                deflater = zlib.compressobj(wbits=-bits)
            out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
            self._ws_send(True, opcode, out[:-4], rsv1=True)

    def _ws_read_frame(self) -> tuple[bool, int, bytes, bool] | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        masked, length = bool(head[1] & 0x80), head[1] & 0x7F
        if length >= 126:
            want = 2 if length == 126 else 8
            ext = self.rfile.read(want)
            if len(ext) != want:
                return None
            length = int.from_bytes(ext, "big")
        if length > MAX_WS_FRAME:
            return None
        mask = self.rfile.read(4) if masked else b""
        payload = self.rfile.read(length)
        if len(payload) < length:
            return None
        if masked:
            key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
            payload = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") \
                if length else b""
        return fin, opcode, payload, bool(head[0] & 0x40)

    def _ws_send(self, fin: bool, opcode: int, payload: bytes, rsv1: bool = False) -> None:
        n = len(payload)
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        if n < 126:
            head = struct.pack(">BB", first, n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", first, 126, n)
        else:
            head = struct.pack(">BBQ", first, 127, n)
        self.wfile.write(head + payload)

    # -- git http-backend (CGI)

    def _git(self, body: bytes | None) -> None:
        status, headers, payload = self.server.site.git_cgi(
            self.command, self.path, list(self.headers.items()), body,
            str(self.client_address[0]))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # -- PEP 503 simple index

    def _pip_index(self, parts: list[str], head: bool) -> None:
        site = self.server.site
        if parts[1] == "packages":
            wheel = site.wheel_path(parts[2])
            if wheel:
                self._get_file_from(os.path.dirname(wheel), parts[2], head)
            else:
                self._not_found(head)
            return
        page = site.pip_page(parts)
        if page is None:
            self._not_found(head)
        else:
            self._send_body(200, page, "text/html; charset=utf-8", head)

    # -- POST / PUT

    def do_POST(self) -> None:
        if self.path.startswith("/git/"):
            try:
                body = bytearray()
                self._read_body(False, keep=body)
            except ValueError as exc:
                self.close_connection = True
                self._send_json(400, {"error": str(exc)})
                return
            self._git(bytes(body))
            return
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

    def _read_body(self, hashing: bool = True,
                   keep: bytearray | None = None) -> tuple[int, str]:
        """Read the request body; return its size and sha256 ("" if not ``hashing``).

        With ``keep``, the body is also appended to it (up to ``MAX_CGI_BODY``).
        Raises ValueError on bad framing or a body cut short.
        """
        self._keep = keep
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
            if self._keep is not None:
                if len(self._keep) + got > MAX_CGI_BODY:
                    raise ValueError(f"body larger than {MAX_CGI_BODY} bytes")
                self._keep += buf[:got]
            remaining -= got
        return n


# --------------------------------------------------------------------------- HTTP/2

class H2Session:
    """One HTTP/2 connection (h2 library) over a connected TLS socket, run in its thread.

    Responses are sent as flow control allows; while every stream waits for
    WINDOW_UPDATE the loop reads from the socket. Uploads are acknowledged at once.
    """

    def __init__(self, sock: ssl.SSLSocket, site: Site) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.sock, self.site = sock, site
        self.requests: dict[int, dict[str, str]] = {}
        self.uploads: dict[int, tuple[hashlib._Hash | None, list[int]]] = {}
        self.outgoing: dict[int, tuple[Iterator[bytes], list[memoryview]]] = {}
        self.bodies: dict[int, bytearray] = {}       # request bodies kept (for /git/)
        self.done = False

    def run(self) -> None:
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 * MiB})
        self.conn.increment_flow_control_window(64 * MiB)
        self._flush()
        try:
            while not self.done:
                self._pump()
                data = self.sock.recv(256 * 1024)
                if not data:
                    return
                for event in self.conn.receive_data(data):
                    self._event(event)
                self._flush()
        except h2.exceptions.ProtocolError:
            self._flush()
        finally:
            for body, _ in self.outgoing.values():
                getattr(body, "close", lambda: None)()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _event(self, event: object) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.requests[event.stream_id] = dict(event.headers)
            headers = self.requests[event.stream_id]
            if headers.get(":method") in ("POST", "PUT"):
                if headers.get(":path", "").startswith("/git/"):
                    self.bodies[event.stream_id] = bytearray()
                hashing = "hash=none" not in headers.get(":path", "").partition("?")[2]
                self.uploads[event.stream_id] = (hashlib.sha256() if hashing else None, [0])
        elif isinstance(event, h2.events.DataReceived):
            upload = self.uploads.get(event.stream_id)
            if upload is not None:
                if upload[0] is not None:
                    upload[0].update(event.data)
                upload[1][0] += len(event.data)
                kept = self.bodies.get(event.stream_id)
                if kept is not None and len(kept) < MAX_CGI_BODY:
                    kept += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._respond(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.requests.pop(event.stream_id, None)
            self.uploads.pop(event.stream_id, None)
            self.bodies.pop(event.stream_id, None)
            body = self.outgoing.pop(event.stream_id, None)
            if body is not None:
                getattr(body[0], "close", lambda: None)()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.done = True

    def _respond(self, sid: int) -> None:
        headers = self.requests.pop(sid, {})
        method, path = headers.get(":method", "GET"), headers.get(":path", "/")
        code = path[len("/reset/"):]
        if path.startswith("/reset/") and code.isdigit():
            self.conn.reset_stream(sid, int(code))
            return
        status, ctype, length, body, extra = self._route(sid, method, path, headers)
        out = [(":status", str(status)), ("server", HTTPHandler.server_version),
               ("content-type", ctype), ("content-length", str(length)), *extra]
        if method == "HEAD" or length == 0:
            self.conn.send_headers(sid, out, end_stream=True)
            getattr(body, "close", lambda: None)()
        else:
            self.conn.send_headers(sid, out)
            self.outgoing[sid] = (body, [])

    def _route(self, sid: int, method: str, path: str, headers: dict[str, str]
               ) -> tuple[int, str, int, Iterator[bytes], list[tuple[str, str]]]:
        def js(code: int, obj: object) -> tuple[int, str, int, Iterator[bytes], list]:
            data = json.dumps(obj).encode() + b"\n"
            return code, "application/json", len(data), iter([data]), []

        target, path = path, path.partition("?")[0]
        parts = path.split("/")
        if parts[1:2] == ["git"]:
            body = self.bodies.pop(sid, None)
            self.uploads.pop(sid, None)
            status, out, payload = self.site.git_cgi(
                method, target, list(headers.items()), None if body is None else bytes(body),
                str(self.sock.getpeername()[0]))
            ctype = next((v for k, v in out if k.lower() == "content-type"), "text/plain")
            out = [(k.lower(), v) for k, v in out if k.lower() != "content-type"]
            return status, ctype, len(payload), iter([payload]), out
        if parts[1:2] == ["simple"]:
            page = self.site.pip_page(parts)
            if page is not None:
                return 200, "text/html; charset=utf-8", len(page), iter([page]), []
        if len(parts) == 3 and parts[1] == "packages" and self.site.wheel_path(parts[2]):
            with open(self.site.wheel_path(parts[2]) or "", "rb") as f:
                data = f.read()
            return 200, "application/octet-stream", len(data), iter([data]), []
        if path == "/etag":
            if etag_matches(headers.get("if-none-match", "")):
                return 304, "text/plain", 0, iter([]), [("etag", ETAG)]
            return 200, "text/plain", len(ETAG_BODY), iter([ETAG_BODY]), [("etag", ETAG)]
        if method in ("POST", "PUT"):
            h, size = self.uploads.pop(sid, (None, [0]))
            if path != "/upload":
                return js(404, {"error": "not found", "path": path})
            return js(200, {"size": size[0], "sha256": h.hexdigest()} if h else
                      {"size": size[0]})
        if len(parts) == 3 and parts[1] == "files" and _FILE_NAME.match(parts[2]):
            try:
                f = open(os.path.join(self.site.files_dir, parts[2]), "rb")  # noqa: SIM115
            except OSError:
                return js(404, {"error": "not found", "path": path})
            size = os.fstat(f.fileno()).st_size

            def read() -> Iterator[bytes]:
                with f:
                    while chunk := f.read(IO_CHUNK):
                        yield chunk
            return 200, "application/octet-stream", size, read(), []
        if len(parts) == 3 and parts[1] == "bytes" and parts[2].isdigit() and \
                int(parts[2]) <= MAX_BYTES:
            n = int(parts[2])
            return 200, "application/octet-stream", n, pattern_chunks("bytes", n), []
        if len(parts) == 3 and parts[1] == "gzip" and parts[2].isdigit() and \
                int(parts[2]) <= MAX_GZIP:
            data = gzip.compress(gzip_plain(int(parts[2])), compresslevel=6, mtime=0)
            return 200, "text/plain", len(data), iter([data]), [("content-encoding", "gzip")]
        if len(parts) == 3 and parts[1] == "status" and parts[2].isdigit() and \
                200 <= int(parts[2]) <= 599:
            code = int(parts[2])
            if code in (204, 304):
                return code, "application/json", 0, iter([]), []
            return js(code, {"status": code})
        if path == "/headers":
            return js(200, {"method": method, "path": headers.get(":path"), "version": "HTTP/2",
                            "headers": [[k, v] for k, v in headers.items()]})
        return js(404, {"error": "not found", "path": path})

    def _pump(self) -> None:
        """Send response data while some stream has both data and flow-control window."""
        progress, frames = True, 0
        while progress and self.outgoing:
            progress = False
            for sid in list(self.outgoing):
                body, pending = self.outgoing[sid]
                window = min(self.conn.local_flow_control_window(sid),
                             self.conn.max_outbound_frame_size)
                if window <= 0:
                    continue
                if not pending:
                    chunk = next(body, None)
                    if chunk is None:
                        self.conn.end_stream(sid)
                        del self.outgoing[sid]
                        progress = True
                        continue
                    pending.append(memoryview(chunk))
                piece = pending[0][:window]
                pending[0] = pending[0][window:]
                if not pending[0]:
                    pending.clear()
                self.conn.send_data(sid, piece.tobytes())
                progress = True
                frames += 1
                if frames % 64 == 0:                   # ~1 MiB per write with 16 KiB frames
                    self._flush()
        self._flush()


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


# --------------------------------------------------------------------------- UDP echo

def _udp_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def serve_udp(sock: socket.socket, answer) -> None:  # noqa: ANN001
    """Answer each datagram with ``answer(data)`` (None: no reply), forever."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)
        except OSError:
            continue


# --------------------------------------------------------------------------- DNS

class DNSZone:
    """A tiny authoritative responder: a few fixed records, NXDOMAIN for other names.

    ``answer(query)`` takes one DNS message and returns the response (or None
    for something not worth answering: too short, or itself a response).
    """

    TYPES = {"A": 1, "TXT": 16, "AAAA": 28}

    def __init__(self, a: str | None = None, aaaa: str | None = None) -> None:
        self.records: dict[str, list[tuple[int, bytes]]] = {
            DNS_TXT_NAME: [(16, bytes([len(DNS_TXT)]) + DNS_TXT)],
            DNS_A_NAME: [],
        }
        if a:
            self.records[DNS_A_NAME].append((1, socket.inet_pton(socket.AF_INET, a)))
        if aaaa:
            self.records[DNS_A_NAME].append((28, socket.inet_pton(socket.AF_INET6, aaaa)))

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack(">HHH", query[:6])
        if flags & 0x8000:
            return None
        opcode = (flags >> 11) & 0xF
        base = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100)     # QR, AA, RD copied

        def bare(rcode: int) -> bytes:
            return struct.pack(">HHHHHH", qid, base | rcode, 0, 0, 0, 0)

        if opcode != 0:
            return bare(4)                                             # NOTIMP
        if qdcount != 1:
            return bare(1)                                             # FORMERR
        labels, pos = [], 12
        while True:
            if pos >= len(query):
                return bare(1)
            n = query[pos]
            if n == 0:
                pos += 1
                break
            if n & 0xC0 or pos + 1 + n > len(query):                   # no pointers in queries
                return bare(1)
            labels.append(query[pos + 1:pos + 1 + n])
            pos += 1 + n
        if pos + 4 > len(query) or pos - 12 > 255:
            return bare(1)
        qtype, qclass = struct.unpack(">HH", query[pos:pos + 4])
        question = query[12:pos + 4]
        name = b".".join(labels).decode("ascii", "replace").lower()
        records = self.records.get(name) if qclass in (1, 255) else None
        if records is None:
            return struct.pack(">HHHHHH", qid, base | 3, 1, 0, 0, 0) + question
        answers = [(t, rdata) for t, rdata in records if qtype in (t, 255)]
        out = struct.pack(">HHHHHH", qid, base, 1, len(answers), 0, 0) + question
        for t, rdata in answers:
            out += struct.pack(">HHHIH", 0xC00C, t, 1, DNS_TTL, len(rdata)) + rdata
        return out


class DNSTCPHandler(socketserver.BaseRequestHandler):
    """DNS over TCP: two-byte length prefix, any number of queries per connection."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30.0)
        rfile = sock.makefile("rb")
        while True:
            prefix = rfile.read(2)
            if len(prefix) < 2:
                return
            (length,) = struct.unpack(">H", prefix)
            query = rfile.read(length)
            if len(query) < length:
                return
            reply = self.server.zone.answer(query)  # type: ignore[attr-defined]
            if reply is None:
                return
            sock.sendall(struct.pack(">H", len(reply)) + reply)


class DNSTCPServer(_QuietErrors, _DualStackMixin, socketserver.ThreadingTCPServer):
    def __init__(self, family: socket.AddressFamily, address: tuple[str, int], zone: DNSZone):
        self.address_family = family
        self.zone = zone
        super().__init__(address, DNSTCPHandler)


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
    ap.add_argument("--http-alt-port", type=int, default=0)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--udp-echo-port", type=int, default=0)
    ap.add_argument("--tls-dir", help="server.{crt,key}, wrong-name.{crt,key}, expired.{crt,key}")
    ap.add_argument("--https-port", type=int, default=0)
    ap.add_argument("--tls-other-port", type=int, default=0)
    ap.add_argument("--wrong-name-port", type=int, default=0)
    ap.add_argument("--expired-port", type=int, default=0)
    ap.add_argument("--git-root", help="directory of bare repositories served under /git/")
    ap.add_argument("--pip-dir", help="directory of wheels served as a simple index")
    ap.add_argument("--dns-port", type=int, default=0)
    ap.add_argument("--dns-a", help="address of the A record of a.httptap.test")
    ap.add_argument("--dns-aaaa", help="address of the AAAA record of a.httptap.test")
    ap.add_argument("--ipv4-only", action="store_true")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="exit when stdin is closed (the parent holds a pipe to it)")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if args.exit_on_stdin_eof:
        _exit_on_stdin_eof()

    family, any_addr = _bind_family(not args.ipv4_only)
    site = Site(args.files, args.git_root, args.pip_dir)
    servers: list[socketserver.TCPServer] = [
        HostHTTPServer(family, (any_addr, args.http_port), site),
        EchoServer(family, (any_addr, args.echo_port)),
    ]
    if args.http_alt_port:
        servers.append(HostHTTPServer(family, (any_addr, args.http_alt_port), site))
    serving_h2 = False
    if args.tls_dir:
        def cert(stem: str) -> ssl.SSLContext:
            return tls_context(os.path.join(args.tls_dir, f"{stem}.crt"),
                               os.path.join(args.tls_dir, f"{stem}.key"), HAS_H2)
        for port, stem in ((args.https_port, "server"), (args.tls_other_port, "server"),
                           (args.wrong_name_port, "wrong-name"), (args.expired_port, "expired")):
            if port:
                servers.append(HostHTTPSServer(family, (any_addr, port), site, cert(stem)))
                serving_h2 = HAS_H2
    if args.dns_port:
        zone = DNSZone(args.dns_a, args.dns_aaaa)
        servers.append(DNSTCPServer(family, (any_addr, args.dns_port), zone))
        udp = _udp_socket(family, (any_addr, args.dns_port))
        threading.Thread(target=serve_udp, args=(udp, zone.answer), name="dns-udp",
                         daemon=True).start()
    if args.udp_echo_port:
        udp = _udp_socket(family, (any_addr, args.udp_echo_port))
        threading.Thread(target=serve_udp, args=(udp, lambda data: data), name="udp-echo",
                         daemon=True).start()
    for srv in servers:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                         name=type(srv).__name__, daemon=True).start()
    print("ready h2" if serving_h2 else "ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
