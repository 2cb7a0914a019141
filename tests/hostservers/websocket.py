"""The test hosts' WebSocket echo (RFC 6455, ``GET /ws``), with permessage-deflate
(RFC 7692): a mixin of the HTTP/1.1 handler (``http1.HTTPHandler``), which routes the
upgrade request here.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from hostservers.content import MAX_WS_FRAME, WS_GUID

# For the type checker the mixin is a request handler; at run time it adds only methods.
if TYPE_CHECKING:
    _Handler = http.server.BaseHTTPRequestHandler
else:
    _Handler = object


class WebSocketEcho(_Handler):
    """Mixin for ``http.server.BaseHTTPRequestHandler``: answers the upgrade, then echoes."""

    _send_json: Callable[..., None]          # (from ``http1.HTTPHandler``)

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
