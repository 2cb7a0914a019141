"""The two sides of an HTTP/1.x connection, one per direction: each hands its bytes to
its current reader (``h1readers``), parses the heads the head reader finds (``h1heads``),
picks the reader that follows each one, and emits the observer's events. The request
side tells the response side which request each response answers (HEAD, CONNECT,
Upgrade), and holds the client's bytes while a protocol switch is pending. Pure; driven
by :class:`~httptap.http.http1.Http1Observer`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .contentcoding import ContentDecoder
from .events import BodyData, RequestEnd, RequestHead, ResponseEnd, ResponseHead
from .h1heads import (HOST_IN_HEAD, METHOD_PREFIX, REQUEST_LINE, STATUS_LINE, Framing,
                      HttpError, parse_block, split_first)
from .h1readers import (BODY_READERS, Body, ClosedReader, HeadReader, Reader,
                        ResponseHeadReader, Switch, WaitReader, request_body, response_body)

if TYPE_CHECKING:
    from .http1 import Http1Observer


class _Pending:
    """A request the response side has still to see answered."""

    __slots__ = ("method", "seq", "switch", "close")

    def __init__(self, method: str, seq: int, switch: Switch, close: bool) -> None:
        self.method = method
        self.seq = seq
        self.switch = switch            # what the request proposed (Switch.NONE: nothing)
        self.close = close              # the client will close after this exchange


class Side:
    """One direction: its current reader, and what its messages share."""

    what = ""                           # "request" or "response", for error messages

    def __init__(self, obs: Http1Observer, head: HeadReader | None = None) -> None:
        self.obs = obs
        self.capture = obs.capture_bodies
        self.head = head or HeadReader(self)
        self.closed = ClosedReader(obs)
        self.reader: Reader = self.head
        self.close_after = False        # the connection ends after this message

    def feed(self, data: bytes | memoryview, now: float) -> None:
        n = len(data)
        pos = 0
        while pos < n:
            reader = self.reader
            if type(data) is not bytes and not reader.takes_views:
                # Heads and chunk lines are searched and sliced as bytes; body bytes are
                # only counted, straight from the view.
                data, n, pos = bytes(data[pos:]), n - pos, 0
            pos = reader.feed(data, pos, now)

    def eof(self, now: float) -> None:
        self.reader.eof(now)
        self.reader = self.closed

    def check_first_line(self, buf: bytearray) -> bool:
        """Fail early on bytes that cannot start a message (TLS, SSH...); whether the
        whole first line is in and was checked."""
        raise NotImplementedError

    def on_head(self, head: bytes, now: float) -> None:
        raise NotImplementedError

    def start_body(self, framing: Framing, kind: Body, length: int, now: float) -> None:
        """Read a body framed as ``kind`` next."""
        obs = self.obs
        if framing.codings and obs.decode_content:
            decoder: ContentDecoder | None = ContentDecoder(
                framing.codings, capture=obs.capture_bodies, max_capture=obs.max_capture)
        elif obs.capture_bodies:
            decoder = ContentDecoder([], capture=True, max_capture=obs.max_capture)
        else:
            decoder = None
        if kind is Body.LENGTH and length == 0:
            if decoder is None:         # most requests: no reader needed
                self.body_done(0, 0, False, now, True, [])
            else:
                BODY_READERS[kind](self, decoder, 0).finish(now, True)
            return
        self.reader = BODY_READERS[kind](self, decoder, length)

    def body_done(self, size: int, decoded: int, truncated: bool, now: float,
                  complete: bool, trailers: list[tuple[str, str]]) -> None:
        """The body reader is done: what comes next, then the message's end."""
        self.reader = self.closed if self.close_after else self.head
        self.emit_end(size, decoded, truncated, now, complete, trailers)

    def emit_body(self, data: bytes) -> None:
        raise NotImplementedError

    def emit_end(self, size: int, decoded: int, truncated: bool, now: float,
                 complete: bool, trailers: list[tuple[str, str]]) -> None:
        raise NotImplementedError


class RequestSide(Side):
    what = "request"

    def __init__(self, obs: Http1Observer) -> None:
        super().__init__(obs)
        self.seq = 0
        self.switch = Switch.NONE       # what the last request proposed
        self.waiting = bytearray()      # client bytes held while a switch is pending
        self.overflow = False
        self.wait = WaitReader(self)
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
        if not fields and self.reader is self.head:
            # The head never completed (too large): its Host, if already received,
            # still makes the URL.
            host = HOST_IN_HEAD.search(self.head.buf)
            if host is not None:
                fields = [("Host", host[1].decode("latin-1").strip(" \t"))]
        line = self.line
        return RequestHead(line[1], line[2], f"HTTP/1.{line[3]}", fields, now, seq=self.seq)

    def check_first_line(self, buf: bytearray) -> bool:
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) <= 64 and METHOD_PREFIX.match(buf) is None:
                raise HttpError("request is not HTTP")
            return False
        line = buf[:nl].rstrip(b"\r").decode("latin-1")
        self.line = REQUEST_LINE.fullmatch(line)
        if self.line is None:
            raise HttpError("request is not HTTP")
        return True

    def on_head(self, head: bytes, now: float) -> None:
        first, block = split_first(head)
        m = self.line = REQUEST_LINE.fullmatch(first)
        if m is None:
            raise HttpError("request is not HTTP")
        method, target, minor = m[1], m[2], int(m[3])
        headers = self.fields = parse_block(block, "request head")
        framing = Framing(headers)
        kind, length = request_body(framing)
        self.line = None
        self.fields = []
        obs = self.obs
        seq = self.seq
        self.seq += 1
        self.switch = Switch.proposed(method, framing)
        self.close_after = framing.close or (minor == 0 and not framing.keep_alive)
        obs.events_.append(RequestHead(method, target, f"HTTP/1.{minor}", headers, now, seq=seq))
        obs.pending.append(_Pending(method, seq, self.switch, self.close_after))
        self.start_body(framing, kind, length, now)
        # Server bytes may have been waiting for this request.
        obs.response_can_go(now)

    def body_done(self, size: int, decoded: int, truncated: bool, now: float,
                  complete: bool, trailers: list[tuple[str, str]]) -> None:
        super().body_done(size, decoded, truncated, now, complete, trailers)
        if self.switch is not Switch.NONE and self.reader is self.head:
            self.reader = self.wait

    def emit_body(self, data: bytes) -> None:
        self.obs.events_.append(BodyData(self.seq - 1, True, data))

    def emit_end(self, size: int, decoded: int, truncated: bool, now: float,
                 complete: bool, trailers: list[tuple[str, str]]) -> None:
        self.obs.events_.append(RequestEnd(size, now, decoded_size=decoded,
                                           seq=self.seq - 1, complete=complete,
                                           trailers=trailers, truncated=truncated))

    def switch_refused(self, now: float) -> None:
        """The response to the Upgrade/CONNECT request kept HTTP: read on."""
        self.switch = Switch.NONE
        if self.reader is not self.wait:
            return
        if self.overflow:
            raise HttpError("too much client data while a protocol switch was pending")
        self.reader = self.head
        held = bytes(self.waiting)
        self.waiting.clear()
        if held:
            self.feed(held, now)


class ResponseSide(Side):
    what = "response"

    def __init__(self, obs: Http1Observer) -> None:
        super().__init__(obs, ResponseHeadReader(self))
        self.current: _Pending | None = None

    def check_first_line(self, buf: bytearray) -> bool:
        nl = buf.find(b"\n")
        if nl < 0:
            k = min(len(buf), 5)
            if buf[:k] != b"HTTP/"[:k]:
                raise HttpError("response is not HTTP")
            return False
        line = buf[:nl].rstrip(b"\r").decode("latin-1")
        if STATUS_LINE.fullmatch(line) is None:
            raise HttpError("response is not HTTP")
        return True

    def resume(self, now: float) -> None:
        """A request came: read the server bytes held for it, if any."""
        head = self.head
        if self.reader is head and head.buf and self.obs.pending:
            held = bytes(head.buf)
            head.buf.clear()
            head.scanned = 0
            head.line_ok = False
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
            self.start_body(framing, Body.LENGTH, 0, now)
            obs.switched()
            return
        kind, length = response_body(request.method, status, framing)
        self.close_after = (kind is Body.UNTIL_CLOSE or framing.close
                            or (minor == 0 and not framing.keep_alive) or request.close)
        self.start_body(framing, kind, length, now)
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
