"""The readers that follow one side of an HTTP/1.x connection: one small class per thing
its bytes can be (h11's ``_readers.py`` shape)::

    HeadReader ──head──▶ BODY_READERS[framing] ──body done──▶ HeadReader   (keep-alive)
                         ContentLengthReader                 ├▶ WaitReader (switch proposed)
                         ChunkedReader                       └▶ ClosedReader
                         UntilCloseReader

A reader's ``feed(data, pos, now)`` consumes what it can from ``data[pos:]`` and returns
where it stopped; when its part of the stream is over it tells its side (``h1sides``),
which picks the next reader: a body reader from the :data:`BODY_READERS` table, keyed by
the :class:`Body` framing that :func:`request_body` or :func:`response_body` chose from
the head. ``eof`` ends what the reader was reading when the peer closes.

Body readers only count bytes (and hand them to a content decoder when the message
needs one), straight from a ``memoryview``; readers that search (heads, chunk-size lines,
trailers) get ``bytes``, converted once per fed chunk by the side (``takes_views``).
Pure."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, cast

from .contentcoding import ContentDecoder
from .h1heads import (CHUNK_SIZE, MAX_CHUNK_LINE, MAX_HEAD, MAX_TRAILERS, Framing, HttpError,
                      head_end, parse_fields)

if TYPE_CHECKING:
    from .h1sides import RequestSide, Side
    from .http1 import Http1Observer

#: How much client data is buffered while an Upgrade/CONNECT awaits its response.
MAX_WAIT_BUFFER = 256 * 1024


class Switch(enum.Enum):
    """A request's proposal to leave HTTP/1.x (h11's "switch proposals"): the request
    side holds the client's bytes from the end of the request on, until the response
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


class Body(enum.Enum):
    """How a message's body is framed (RFC 9112 §6.3): the key of :data:`BODY_READERS`."""

    LENGTH = "content-length"     # so many bytes (0: no body at all)
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"   # everything until the server closes (responses only)

    # Members are singletons: hashed by identity, in C. Enum's own __hash__ is a Python
    # function (hash of the name), a call per body read from BODY_READERS.
    __hash__ = object.__hash__


def request_body(framing: Framing) -> tuple[Body, int]:
    """A request's body framing and length: chunked, or Content-Length (none: 0)."""
    if framing.te and not framing.chunked:
        raise HttpError("invalid Transfer-Encoding")  # a request's must end in chunked
    if framing.chunked:
        return Body.CHUNKED, 0
    return Body.LENGTH, framing.length or 0


def response_body(method: str, status: int, framing: Framing) -> tuple[Body, int]:
    """A final response's body framing and length; ``method`` is its request's. A
    response to HEAD, a 204 or a 304 has no body whatever its headers say; a
    Transfer-Encoding that does not end in chunked, or no length at all, reads until the
    close."""
    if method == "HEAD" or status in (204, 304) or status < 100:
        return Body.LENGTH, 0
    if framing.chunked:
        return Body.CHUNKED, 0
    if framing.te or framing.length is None:
        return Body.UNTIL_CLOSE, 0
    return Body.LENGTH, framing.length


# -- readers ----------------------------------------------------------------------------

class Reader:
    """What a side's bytes are read as, for now."""

    __slots__ = ()

    #: ``feed`` takes a ``memoryview`` (it only counts bytes); otherwise ``bytes``.
    takes_views = False

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        """Consume what can be consumed of ``data[pos:]``; where it stopped."""
        raise NotImplementedError

    def eof(self, now: float) -> None:
        """The peer closed while this reader was current."""


class HeadReader(Reader):
    """A head, collected into a bounded buffer (``MAX_HEAD``) until its empty line, then
    handed to the side (``on_head``), which picks the reader that follows it."""

    __slots__ = ("side", "buf", "scanned", "line_ok")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.buf = bytearray()          # the head so far, when it spans chunks
        self.scanned = 0                # how much of buf has been searched for the end
        self.line_ok = False            # the first line of buf has been checked

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        data = cast(bytes, data)
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
                self.side.on_head(data[pos:end], now)
                return end
        start = len(buf)
        buf += data[pos:pos + MAX_HEAD + 4 - start]
        end = head_end(buf, self.scanned - 3 if self.scanned > 3 else 0, len(buf))
        if end < 0:
            if not self.line_ok:
                self.line_ok = self.side.check_first_line(buf)
            if len(buf) > MAX_HEAD:
                raise HttpError(f"{self.side.what} head over {MAX_HEAD >> 10} KiB")
            self.scanned = len(buf)
            return pos + len(buf) - start
        head = bytes(buf[:end])
        buf.clear()
        self.scanned = 0
        self.line_ok = False
        self.side.on_head(head, now)
        return pos + end - start


class ResponseHeadReader(HeadReader):
    """A response head; server bytes that come before the request they answer has been
    seen are held (checked, bounded) until it comes (:meth:`ResponseSide.resume`)."""

    __slots__ = ()

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        if self.side.obs.pending:
            return super().feed(data, pos, now)
        self.buf += data[pos:]
        if not self.line_ok:
            self.line_ok = self.side.check_first_line(self.buf)
        if len(self.buf) > MAX_HEAD:
            raise HttpError("server sent too much before any request")
        return len(data)


class BodyReader(Reader):
    """What every body reader shares: the byte count, the content decoder (only when the
    message has a Content-Encoding or bodies are captured) and the end of the body."""

    __slots__ = ("side", "decoder", "size")

    def __init__(self, side: Side, decoder: ContentDecoder | None, length: int = 0) -> None:
        self.side = side
        self.decoder = decoder
        self.size = 0                   # body bytes on the wire so far

    def decode(self, data: bytes | memoryview, pos: int, end: int) -> None:
        """Feed ``data[pos:end]`` to the decoder, and hand on what it captured."""
        decoder = self.decoder
        assert decoder is not None
        decoder.feed(memoryview(data)[pos:end])
        if self.side.capture:
            captured = decoder.take()
            if captured:
                self.side.emit_body(captured)

    def finish(self, now: float, complete: bool,
               trailers: list[tuple[str, str]] | None = None) -> None:
        """The body is over (``complete``: as its framing said); the side goes on."""
        decoder = self.decoder
        truncated = False
        if decoder is not None:
            decoder.finish()
            if self.side.capture:
                captured = decoder.take()
                if captured:
                    self.side.emit_body(captured)
            decoded, truncated = decoder.decoded_size, decoder.truncated
            self.decoder = None
        else:
            decoded = self.size
        self.side.body_done(self.size, decoded, truncated, now, complete, trailers or [])

    def eof(self, now: float) -> None:
        """The close cuts the body short (an until-close body overrides this)."""
        self.side.close_after = True
        self.finish(now, False)


class ContentLengthReader(BodyReader):
    """A body of a known number of bytes."""

    __slots__ = ("remaining",)
    takes_views = True

    def __init__(self, side: Side, decoder: ContentDecoder | None, length: int = 0) -> None:
        # (BodyReader's fields set here, not through super(): one reader per message.)
        self.side = side
        self.decoder = decoder
        self.size = 0
        self.remaining = length

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        left = len(data) - pos
        take = self.remaining if self.remaining < left else left
        if self.decoder is not None:
            self.decode(data, pos, pos + take)
        self.size += take
        self.remaining -= take
        if self.remaining == 0:
            self.finish(now, True)
        return pos + take


class UntilCloseReader(BodyReader):
    """A response body that ends when the server closes the connection."""

    __slots__ = ()
    takes_views = True

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        if self.decoder is not None:
            self.decode(data, pos, len(data))
        self.size += len(data) - pos
        return len(data)

    def eof(self, now: float) -> None:
        self.side.close_after = True
        self.finish(now, True)


# ChunkedReader's steps.
_SIZE, _DATA, _CR, _LF, _TRAILERS = range(5)


class ChunkedReader(BodyReader):
    """A chunked body (RFC 9112 §7.1): chunk-size lines, chunk data, trailers. Takes a
    view while inside chunk data (only counted), bytes for everything it searches."""

    __slots__ = ("step", "remaining", "buf", "trailer_lines", "trailer_bytes", "takes_views")

    def __init__(self, side: Side, decoder: ContentDecoder | None, length: int = 0) -> None:
        super().__init__(side, decoder)
        self.step = _SIZE
        self.takes_views = False
        self.remaining = 0              # of the current chunk's data
        self.buf = bytearray()          # a chunk-size or trailer line that spans chunks
        self.trailer_lines: list[str] = []
        self.trailer_bytes = 0

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        n = len(data)
        while pos < n:
            step = self.step
            if step == _DATA:
                take = self.remaining if self.remaining < n - pos else n - pos
                if self.decoder is not None:
                    self.decode(data, pos, pos + take)
                self.size += take
                self.remaining -= take
                pos += take
                if self.remaining:
                    return pos
                self.step = _CR
                self.takes_views = False
                if type(data) is not bytes:
                    return pos          # the side hands the rest on as bytes
            elif step == _SIZE:
                line, pos = self.read_line(data, pos, "invalid chunked encoding")
                if line is None:
                    return pos
                m = CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise HttpError("invalid chunked encoding")  # a bad chunk-size line
                size = int(m[1], 16)
                if size:
                    self.remaining = size
                    self.step = _DATA
                    self.takes_views = True
                else:
                    self.step = _TRAILERS
            elif step == _CR:
                if cast(bytes, data).startswith(b"\r\n", pos):   # the usual CRLF at once
                    pos += 2
                    self.step = _SIZE
                    continue
                byte = data[pos]
                pos += 1
                if byte == 13:
                    self.step = _LF
                elif byte == 10:
                    self.step = _SIZE
                else:
                    raise HttpError("invalid chunked encoding")  # no CRLF after the data
            elif step == _LF:
                if data[pos] != 10:
                    raise HttpError("invalid chunked encoding")  # no CRLF after the data
                pos += 1
                self.step = _SIZE
            else:  # _TRAILERS
                start = pos
                line, pos = self.read_line(data, pos, "invalid trailer section")
                self.trailer_bytes += pos - start
                if self.trailer_bytes > MAX_TRAILERS:
                    raise HttpError("trailer section over 64 KiB")
                if line is None:
                    return pos
                if line:
                    self.trailer_lines.append(line.decode("latin-1"))
                else:
                    self.finish(now, True, parse_fields(self.trailer_lines, "trailer section"))
                    return pos
        return pos

    def read_line(self, data: bytes | memoryview, pos: int,
                  why: str) -> tuple[bytes | None, int]:
        """A line ending in LF (CR stripped), or None and everything consumed; a line
        over ``MAX_CHUNK_LINE`` is an error named ``why``."""
        data = cast(bytes, data)
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.buf += data[pos:]
            if len(self.buf) > MAX_CHUNK_LINE:
                raise HttpError(why)
            return None, len(data)
        if self.buf:
            self.buf += data[pos:nl]
            raw = bytes(self.buf)
            self.buf.clear()
        else:
            raw = data[pos:nl]
        if len(raw) > MAX_CHUNK_LINE:
            raise HttpError(why)
        return raw[:-1] if raw.endswith(b"\r") else raw, nl + 1


#: The body reader for each framing.
BODY_READERS: dict[Body, type[ContentLengthReader | ChunkedReader | UntilCloseReader]] = {
    Body.LENGTH: ContentLengthReader,
    Body.CHUNKED: ChunkedReader,
    Body.UNTIL_CLOSE: UntilCloseReader,
}


class WaitReader(Reader):
    """Client bytes after a request that proposed a protocol switch, held (up to
    ``MAX_WAIT_BUFFER``) until the response says whether the switch happened."""

    __slots__ = ("side",)

    def __init__(self, side: RequestSide) -> None:
        self.side = side

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        side = self.side
        room = MAX_WAIT_BUFFER - len(side.waiting)
        if len(data) - pos > room:
            side.overflow = True
        side.waiting += data[pos:pos + room]
        return len(data)


class ClosedReader(Reader):
    """The connection is over as far as HTTP goes: bytes are ignored, except the new
    protocol's first bytes after a switch, which are kept for whoever decodes it."""

    __slots__ = ("obs",)

    def __init__(self, obs: Http1Observer) -> None:
        self.obs = obs

    def feed(self, data: bytes | memoryview, pos: int, now: float) -> int:
        if self.obs.upgraded:
            self.obs.server_after_switch += data[pos:]
        return len(data)
