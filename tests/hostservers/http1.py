"""The test hosts' HTTP/1.1 app: ``HTTPHandler`` and its endpoints (files, bytes, status,
headers, gzip, chunked, etag, redirect, raw broken answers, uploads, git, the pip index;
the WebSocket echo comes from ``websocket``). The listeners are in ``httpservers``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import ssl
import urllib.parse
from typing import TYPE_CHECKING

from hostservers.content import (
    _FILE_NAME, ETAG, ETAG_BODY, IDLE_TIMEOUT, IO_CHUNK, MAX_BYTES, MAX_CGI_BODY, MAX_GZIP,
    MAX_UPLOAD_LINE, chunk_sizes, etag_matches, gzip_plain, pattern_bytes, pattern_chunks,
)
from hostservers.websocket import WebSocketEcho

if TYPE_CHECKING:
    from hostservers.httpservers import HostHTTPServer

#: What ``GET /raw/<name>`` sends (then it closes the connection): answers no HTTP peer
#: could follow, for the observer's error names.
RAW_ANSWERS = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP\r\n\r\n",
    "bad-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    "huge-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n"
                 b"Content-Length: 0\r\n\r\n",
}


class HTTPHandler(WebSocketEcho, http.server.BaseHTTPRequestHandler):
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
