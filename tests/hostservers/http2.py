"""The test hosts' HTTP/2 server: ``H2Session`` runs one connection (over TLS with ALPN
``h2``, or h2c with prior knowledge) with the ``h2`` library, when it imports
(``HAS_H2``); it serves a subset of the HTTP/1.1 app's endpoints (see ``servers.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import ssl
from collections.abc import Iterator

from hostservers.content import (
    _FILE_NAME, ETAG, ETAG_BODY, IO_CHUNK, MAX_BYTES, MAX_CGI_BODY, MAX_GZIP, MiB,
    etag_matches, gzip_plain, pattern_chunks,
)
from hostservers.gitpip import Site
from hostservers.http1 import HTTPHandler

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
