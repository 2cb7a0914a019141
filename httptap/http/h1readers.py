"""The two readers of an HTTP/1.x connection, one per direction: small state machines
that take a chunk at a time, find heads (``h1heads``), follow each body's framing
(Content-Length, chunked, until the close) and emit the observer's events. The request
reader tells the response reader which request each response answers (HEAD, CONNECT,
Upgrade). Pure; driven by :class:`~httptap.http.http1.Http1Observer`."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, cast

from .contentcoding import ContentDecoder
from .events import BodyData, RequestEnd, RequestHead, ResponseEnd, ResponseHead
from .h1heads import (CHUNK_LINE, HOST_IN_HEAD, MAX_CHUNK_LINE, MAX_HEAD, MAX_TRAILERS,
                      METHOD_PREFIX, REQUEST_LINE, STATUS_LINE, Framing, HttpError,
                      head_end, parse_block, parse_fields, split_first)

if TYPE_CHECKING:
    from .http1 import Http1Observer

#: How much client data is buffered while an Upgrade/CONNECT awaits its response.
MAX_WAIT_BUFFER = 256 * 1024


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CR, _CHUNK_LF, _TRAILERS, \
    _UNTIL_EOF, _WAIT, _CLOSED = range(10)


class Switch(enum.Enum):
    """A request's proposal to leave HTTP/1.x (h11's "switch proposals"): the request
    reader holds the client's bytes from the end of the request on, until the response
    accepts the proposal (the connection is another protocol from then on) or refuses it
    (HTTP goes on, with the held bytes)."""

    NONE = "none"
    UPGRADE = "upgrade"   # an Upgrade header (WebSocket, h2c, ...): accepted by a 101
    CONNECT = "connect"   # a CONNECT: accepted by a 2xx (the tunnel opens)

    @staticmethod
    def proposed(method: str, framing: Framing) -> Switch:
        if method == "CONNECT":
            return Switch.CONNECT
        return Switch.UPGRADE if framing.upgrade else Switch.NONE

    def accepted_by(self, status: int) -> bool:
        """Whether a final response with ``status`` switches the connection. A 101 does
        whatever was asked (servers send it only to an Upgrade, and a 101 has no body to
        read on with anyway)."""
        return status == 101 or (self is Switch.CONNECT and 200 <= status < 300)


class _Pending:
    """A request the response reader has still to see answered."""

    __slots__ = ("method", "seq", "switch", "close")

    def __init__(self, method: str, seq: int, switch: Switch, close: bool) -> None:
        self.method = method
        self.seq = seq
        self.switch = switch            # what the request proposed (Switch.NONE: nothing)
        self.close = close              # the client will close after this exchange


class _Reader:
    """Framing shared by both directions; subclasses parse heads."""

    what = ""                           # "request" or "response", for error messages

    def __init__(self, obs: Http1Observer) -> None:
        self.obs = obs
        self.state = _HEAD
        self.buf = bytearray()          # head, chunk-size line or trailers being collected
        self.scanned = 0                # how much of buf has been searched for the head end
        self.line_ok = False            # the first line of buf has been checked
        self.remaining = 0
        self.body_size = 0
        self.decoder: ContentDecoder | None = None
        self.trailers: list[tuple[str, str]] = []
        self.trailer_lines: list[str] = []
        self.trailer_bytes = 0
        self.close_after = False        # the connection ends after this message
        self.seq = 0
        self.capture = obs.capture_bodies

    # -- driving --------------------------------------------------------

    def feed(self, data: bytes | memoryview, now: float) -> None:
        n = len(data)
        pos = 0
        mv: memoryview | None = None
        while pos < n:
            state = self.state
            if type(data) is not bytes and state != _LENGTH and state != _UNTIL_EOF \
                    and state != _CHUNK_DATA:
                # Heads and chunk lines are searched and sliced as bytes; body bytes are
                # only counted, straight from the view.
                data, n, pos, mv = bytes(data[pos:]), n - pos, 0, None
            raw = cast(bytes, data)  # bytes in every state below that searches or slices
            if state == _LENGTH or state == _CHUNK_DATA:
                take = self.remaining if self.remaining < n - pos else n - pos
                if self.decoder is not None:
                    if mv is None:
                        mv = memoryview(data)
                    self.decoder.feed(mv[pos:pos + take])
                    if self.capture:
                        self.pass_body()
                self.body_size += take
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    if state == _LENGTH:
                        self.end_body(now, True)
                    else:
                        self.state = _CHUNK_CR
            elif state == _UNTIL_EOF:
                if self.decoder is not None:
                    if mv is None:
                        mv = memoryview(data)
                    self.decoder.feed(mv[pos:])
                    if self.capture:
                        self.pass_body()
                self.body_size += n - pos
                pos = n
            elif state == _HEAD:
                pos = self.read_head(raw, pos, now)
            elif state == _CHUNK_SIZE:
                line, pos = self.read_line(raw, pos, MAX_CHUNK_LINE, "invalid chunked encoding")
                if line is not None:
                    m = CHUNK_LINE.fullmatch(line)
                    if m is None:
                        raise HttpError("invalid chunked encoding")  # a bad chunk-size line
                    size = int(m[1], 16)
                    if size:
                        self.remaining = size
                        self.state = _CHUNK_DATA
                    else:
                        self.state = _TRAILERS
            elif state == _CHUNK_CR:
                byte = data[pos]
                pos += 1
                if byte == 13:
                    self.state = _CHUNK_LF
                elif byte == 10:
                    self.state = _CHUNK_SIZE
                else:
                    raise HttpError("invalid chunked encoding")  # no CRLF after the data
            elif state == _CHUNK_LF:
                if data[pos] != 10:
                    raise HttpError("invalid chunked encoding")  # no CRLF after the data
                pos += 1
                self.state = _CHUNK_SIZE
            elif state == _TRAILERS:
                start = pos
                line, pos = self.read_line(raw, pos, MAX_CHUNK_LINE, "invalid trailer section")
                self.trailer_bytes += pos - start
                if self.trailer_bytes > MAX_TRAILERS:
                    raise HttpError("trailer section over 64 KiB")
                if line is not None:
                    if line:
                        self.trailer_lines.append(line)
                    else:
                        self.trailers = parse_fields(self.trailer_lines, "trailer section")
                        self.end_body(now, True)
            elif state == _WAIT:
                pos = self.wait_data(raw, pos)
            else:  # _CLOSED: the connection is over as far as HTTP goes
                if self.obs.upgraded and pos < n:  # the new protocol's first bytes
                    self.obs.server_after_switch += raw[pos:]
                pos = n

    def read_line(self, data: bytes, pos: int, limit: int,
                  why: str) -> tuple[str | None, int]:
        """A line ending in LF (CR stripped), or None and everything consumed; a line
        over ``limit`` is an error named ``why``."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.buf += data[pos:]
            if len(self.buf) > limit:
                raise HttpError(why)
            return None, len(data)
        if self.buf:
            self.buf += data[pos:nl]
            raw = bytes(self.buf)
            self.buf.clear()
        else:
            raw = data[pos:nl]
        if len(raw) > limit:
            raise HttpError(why)
        line = raw.decode("latin-1")
        if line.endswith("\r"):
            line = line[:-1]
        return line, nl + 1

    def read_head(self, data: bytes, pos: int, now: float) -> int:
        buf = self.buf
        n = len(data)
        if not buf:
            # Empty lines before a message are ignored (RFC 9112 §2.2).
            while pos < n and data[pos] in b"\r\n":
                pos += 1
            if pos == n:
                return n
            # The usual case, a whole head in one read: take it without the buffer.
            end = head_end(data, pos, pos + MAX_HEAD + 4)
            if end >= 0:
                self.scanned = 0
                self.line_ok = False
                self.on_head(bytes(data[pos:end]), now)
                return end
        start = len(buf)
        buf += data[pos:pos + MAX_HEAD + 4 - start]
        end = head_end(buf, self.scanned - 3 if self.scanned > 3 else 0, len(buf))
        if end < 0:
            if not self.line_ok:
                self.check_first_line(buf)
            if len(buf) > MAX_HEAD:
                raise HttpError(f"{self.what} head over {MAX_HEAD >> 10} KiB")
            self.scanned = len(buf)
            return pos + len(buf) - start
        head = bytes(buf[:end])
        buf.clear()
        self.scanned = 0
        self.line_ok = False
        self.on_head(head, now)
        return pos + end - start

    def check_first_line(self, buf: bytearray) -> None:
        """Fail early on bytes that cannot start a message (TLS, SSH...)."""
        raise NotImplementedError

    def on_head(self, head: bytes, now: float) -> None:
        raise NotImplementedError

    def wait_data(self, data: bytes, pos: int) -> int:
        raise NotImplementedError

    # -- bodies ---------------------------------------------------------

    def start_body(self, framing: Framing, kind: int, length: int, now: float) -> None:
        """Begin a body of ``kind`` (_LENGTH, _CHUNK_SIZE or _UNTIL_EOF)."""
        obs = self.obs
        self.body_size = 0
        self.trailers = []
        self.trailer_lines = []
        self.trailer_bytes = 0
        if framing.codings and obs.decode_content:
            self.decoder = ContentDecoder(framing.codings, capture=obs.capture_bodies,
                                          max_capture=obs.max_capture)
        elif obs.capture_bodies:
            self.decoder = ContentDecoder([], capture=True, max_capture=obs.max_capture)
        else:
            self.decoder = None
        if kind == _LENGTH and length == 0:
            self.end_body(now, True)
            return
        self.remaining = length
        self.state = kind

    def pass_body(self) -> None:
        """Hand on what the decoder captured so far as a BodyData event."""
        assert self.decoder is not None
        data = self.decoder.take()
        if data:
            self.emit_body(data)

    def end_body(self, now: float, complete: bool) -> None:
        decoder = self.decoder
        truncated = False
        if decoder is not None:
            decoder.finish()
            if self.capture:
                self.pass_body()
            decoded, truncated = decoder.decoded_size, decoder.truncated
            self.decoder = None
        else:
            decoded = self.body_size
        trailers = self.trailers if self.state == _TRAILERS else []
        self.trailers = []
        self.state = _CLOSED if self.close_after else _HEAD
        self.emit_end(self.body_size, decoded, truncated, now, complete, trailers)

    def emit_body(self, data: bytes) -> None:
        raise NotImplementedError

    def emit_end(self, size: int, decoded: int, truncated: bool, now: float,
                 complete: bool, trailers: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    def eof(self, now: float) -> None:
        if self.state in (_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CR, _CHUNK_LF, _TRAILERS):
            self.trailers = []
            self.close_after = True
            self.end_body(now, False)
        elif self.state == _UNTIL_EOF:
            self.close_after = True
            self.end_body(now, True)
        self.state = _CLOSED


class _RequestReader(_Reader):
    what = "request"

    def __init__(self, obs: Http1Observer) -> None:
        super().__init__(obs)
        self.switch = Switch.NONE       # what the last request proposed
        self.waiting = bytearray()      # client bytes held while a switch is pending
        self.overflow = False
        # The request line (and fields) of a head read but not yet reported: if the
        # head fails, the request is still reported, with the error.
        self.line: re.Match[str] | None = None
        self.fields: list[tuple[str, str]] = []

    def feed(self, data: bytes | memoryview, now: float) -> None:
        try:
            super().feed(data, now)
        except HttpError as exc:
            if exc.request is None and self.line is not None:
                exc.request = self.unreported(now)
            raise

    def unreported(self, now: float) -> RequestHead:
        """The request whose head failed after its request line was read."""
        assert self.line is not None
        fields = self.fields
        if not fields and self.state == _HEAD:
            # The head never completed (too large): its Host, if already received,
            # still makes the URL.
            host = HOST_IN_HEAD.search(self.buf)
            if host is not None:
                fields = [("Host", host[1].decode("latin-1").strip(" \t"))]
        line = self.line
        return RequestHead(line[1], line[2], f"HTTP/1.{line[3]}", fields, now, seq=self.seq)

    def check_first_line(self, buf: bytearray) -> None:
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) <= 64 and METHOD_PREFIX.match(buf) is None:
                raise HttpError("request is not HTTP")
            return
        line = buf[:nl].rstrip(b"\r").decode("latin-1")
        self.line = REQUEST_LINE.fullmatch(line)
        if self.line is None:
            raise HttpError("request is not HTTP")
        self.line_ok = True

    def on_head(self, head: bytes, now: float) -> None:
        first, block = split_first(head)
        m = self.line = REQUEST_LINE.fullmatch(first)
        if m is None:
            raise HttpError("request is not HTTP")
        method, target, minor = m[1], m[2], int(m[3])
        headers = self.fields = parse_block(block, "request head")
        framing = Framing(headers)
        if framing.te and not framing.chunked:
            raise HttpError("invalid Transfer-Encoding")  # a request's must end in chunked
        self.line = None
        self.fields = []
        obs = self.obs
        seq = self.seq
        self.seq += 1
        self.switch = Switch.proposed(method, framing)
        self.close_after = framing.close or (minor == 0 and not framing.keep_alive)
        obs.events_.append(RequestHead(method, target, f"HTTP/1.{minor}", headers, now, seq=seq))
        obs.pending.append(_Pending(method, seq, self.switch, self.close_after))
        if framing.chunked:
            self.start_body(framing, _CHUNK_SIZE, 0, now)
        else:
            self.start_body(framing, _LENGTH, framing.length or 0, now)
        # Server bytes may have been waiting for this request.
        obs.response_can_go(now)

    def end_body(self, now: float, complete: bool) -> None:
        super().end_body(now, complete)
        if self.switch is not Switch.NONE and self.state == _HEAD:
            self.state = _WAIT

    def emit_body(self, data: bytes) -> None:
        self.obs.events_.append(BodyData(self.seq - 1, True, data))

    def emit_end(self, size: int, decoded: int, truncated: bool, now: float,
                 complete: bool, trailers: list[tuple[str, str]]) -> None:
        self.obs.events_.append(RequestEnd(size, now, decoded_size=decoded,
                                           seq=self.seq - 1, complete=complete,
                                           trailers=trailers, truncated=truncated))

    def wait_data(self, data: bytes, pos: int) -> int:
        room = MAX_WAIT_BUFFER - len(self.waiting)
        if len(data) - pos > room:
            self.overflow = True
        self.waiting += data[pos:pos + room]
        return len(data)

    def switch_refused(self, now: float) -> None:
        """The response to the Upgrade/CONNECT request kept HTTP: read on."""
        self.switch = Switch.NONE
        if self.state != _WAIT:
            return
        if self.overflow:
            raise HttpError("too much client data while a protocol switch was pending")
        self.state = _HEAD
        held = bytes(self.waiting)
        self.waiting.clear()
        if held:
            self.feed(held, now)


class _ResponseReader(_Reader):
    what = "response"

    def __init__(self, obs: Http1Observer) -> None:
        super().__init__(obs)
        self.current: _Pending | None = None

    def check_first_line(self, buf: bytearray) -> None:
        nl = buf.find(b"\n")
        if nl < 0:
            k = min(len(buf), 5)
            if buf[:k] != b"HTTP/"[:k]:
                raise HttpError("response is not HTTP")
            return
        line = buf[:nl].rstrip(b"\r").decode("latin-1")
        if STATUS_LINE.fullmatch(line) is None:
            raise HttpError("response is not HTTP")
        self.line_ok = True

    def read_head(self, data: bytes, pos: int, now: float) -> int:
        if self.obs.pending:
            return super().read_head(data, pos, now)
        # No request to match yet: hold the bytes (checked, bounded) until one comes.
        self.buf += data[pos:]
        if not self.line_ok:
            self.check_first_line(self.buf)
        if len(self.buf) > MAX_HEAD:
            raise HttpError("server sent too much before any request")
        return len(data)

    def resume(self, now: float) -> None:
        if self.state == _HEAD and self.buf and self.obs.pending:
            held = bytes(self.buf)
            self.buf.clear()
            self.scanned = 0
            self.line_ok = False
            self.feed(held, now)

    def on_head(self, head: bytes, now: float) -> None:
        first, block = split_first(head)
        m = STATUS_LINE.fullmatch(first)
        if m is None:
            raise HttpError("response is not HTTP")
        headers = parse_block(block, "response head")
        minor, status, reason = int(m[1]), int(m[2]), m[3] or ""
        obs = self.obs
        request = obs.pending[0]
        version = f"HTTP/1.{minor}"
        if 100 <= status < 200 and status != 101:
            obs.events_.append(ResponseHead(status, reason, version, headers, now,
                                            seq=request.seq, informational=True))
            return                      # the final response is still to come
        obs.pending.popleft()
        self.current = request
        framing = Framing(headers)
        obs.events_.append(ResponseHead(status, reason, version, headers, now,
                                        seq=request.seq, informational=False))
        if request.switch.accepted_by(status):
            self.close_after = True
            self.start_body(framing, _LENGTH, 0, now)
            obs.switched()
            return
        self.close_after = (framing.close or (minor == 0 and not framing.keep_alive)
                            or request.close)
        if request.method == "HEAD" or status in (204, 304) or status < 100:
            self.start_body(framing, _LENGTH, 0, now)
        elif framing.chunked:
            self.start_body(framing, _CHUNK_SIZE, 0, now)
        elif framing.te:
            self.close_after = True
            self.start_body(framing, _UNTIL_EOF, 0, now)
        elif framing.length is not None:
            self.start_body(framing, _LENGTH, framing.length, now)
        else:
            self.close_after = True
            self.start_body(framing, _UNTIL_EOF, 0, now)
        if request.switch is not Switch.NONE:
            obs.switch_refused(now)

    def emit_body(self, data: bytes) -> None:
        seq = self.current.seq if self.current is not None else 0
        self.obs.events_.append(BodyData(seq, False, data))

    def emit_end(self, size: int, decoded: int, truncated: bool, now: float,
                 complete: bool, trailers: list[tuple[str, str]]) -> None:
        seq = self.current.seq if self.current is not None else 0
        self.obs.events_.append(ResponseEnd(size, decoded, now, seq=seq,
                                            complete=complete, trailers=trailers,
                                            truncated=truncated))

    def wait_data(self, data: bytes, pos: int) -> int:
        return len(data)

