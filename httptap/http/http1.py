"""A passive, incremental HTTP/1.x decoder: watches both directions of one connection.

Role in the pipeline: the proxy stage relays the bytes of a TCP connection
between the command (client) and its upstream server unchanged, and feeds a
copy of every chunk, as it passes, to one :class:`Http1Observer`. The
observer reports each exchange as events (:class:`RequestHead`,
:class:`RequestEnd`, :class:`ResponseHead`, :class:`ResponseEnd`, and
:class:`BodyData` when bodies are captured) that the
proxy turns into messages for the sink. It never changes, holds back or
answers bytes: when it cannot follow the stream it sets ``failed`` and says
why in a :class:`ProtocolError` event (the proxy goes on relaying raw; the
exchanges still open end with that error) and after a protocol switch it
sets ``upgraded`` (the proxy stops feeding it).

This module is a pure core: bytes and ``now`` in, events out; it imports no
``os``, ``socket``, ``asyncio`` or ``time`` (a test walks its imports).

Theory of operation
-------------------
Each direction has a reader, a small state machine::

    HEAD ──head complete──▶ body framing ──body complete──▶ HEAD (keep-alive)
                            LENGTH | CHUNK_SIZE ⇄ CHUNK_DATA ─▶ TRAILERS │
                            UNTIL_EOF (responses only)                  └▶ CLOSED

Heads are collected into a bounded buffer (``MAX_HEAD``) until the empty line
and parsed in one go with a few regular expressions. Bodies are never parsed:
per fed chunk a body state does a few integer operations and slices, so a
1 GiB body costs about as many Python operations as it has chunks. Body
bytes are copied only into a :class:`~httptap.http.contentcoding.ContentDecoder`,
which exists only when the message has a ``Content-Encoding`` (to count the
decoded size the terminal line shows) or when bodies are captured. Captured
bodies leave as :class:`BodyData` events as each fed chunk is decoded, so the
observer holds no body, whatever its size.

The response reader needs the request each response answers (a response to
HEAD, or a 2xx to CONNECT, has no body whatever its headers say; a 101 or a
2xx to CONNECT switches protocols), so the request reader appends one entry
per request head to a FIFO and the response reader pops one per final
(non-1xx) response: pipelining works without extra effort. Server bytes that
arrive before the observer has seen the request they answer are buffered,
not misread. After a request that asks for a protocol switch (``Upgrade``
header, or ``CONNECT``) the request reader waits, buffering client bytes,
until the response says whether the switch happened.

Parser choice
-------------
Measured on the 2-core development machine, CPython 3.11, decoder overhead
only (body fed in 64 KiB pieces; "exchanges/s" is one small request head and
one small response head with a 5-byte body; quiet-machine run, a loaded one
gave about half of each):

===========================  ============  ===================  ============
parser                       256 MiB body  256 MiB chunked      exchanges/s
                             Content-Len.  (16 KiB / 64 KiB)
===========================  ============  ===================  ============
this module (hand-written)   ~90,000 MB/s  ~10,700 / 32,800     ~44,000
httptools 0.9 (llhttp, C)    ~34,000 MB/s  ~11,100 / 10,600     ~610,000
h11 0.16 (pure Python)       ~6,300 MB/s   ~1,100 / 2,500       ~7,500 [*]
===========================  ============  ===================  ============

[*] h11 has to be driven as a peer, so this includes its send side.

httptools is an order of magnitude faster on heads, but its API has no way
to tell the response parser that the request was HEAD (llhttp then reads
the Content-Length body and the connection desynchronises), and switching
protocols or resuming after a refused Upgrade needs a fresh parser. h11 is
correct but slow on chunked bodies and heads, and strict where a passive
observer must follow what real peers accept. A hand-written head parser
plus integer body framing handles every case here, is far above the
1 GB/s budget on bodies, parses some 90,000 heads a second on one core,
and needs no dependency.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, cast

from ..events import Event
from .contentcoding import ContentDecoder, parse_content_encoding

__all__ = [
    "HttpError", "Http1Observer", "RequestHead", "RequestEnd", "ResponseHead",
    "ResponseEnd", "BodyData", "ProtocolError", "Event", "ObserverBase", "MAX_HEAD",
    "MAX_HEADERS", "DEFAULT_MAX_CAPTURE",
]

#: Largest request or response head (request line plus headers) accepted.
MAX_HEAD = 64 * 1024
#: Most header fields in one head. Far above what real peers send (Apache refuses
#: requests with over 100), low enough that a head of tiny fields stays cheap to keep.
MAX_HEADERS = 1000
#: Largest chunk-size line (with extensions), and largest trailer section.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 64 * 1024
#: How much client data is buffered while an Upgrade/CONNECT awaits its response.
MAX_WAIT_BUFFER = 256 * 1024
#: How much of each body is captured unless told otherwise (``--max-body-size``'s default).
DEFAULT_MAX_CAPTURE = 16 << 20


class HttpError(Exception):
    """The bytes are not HTTP/1.x this observer can follow.

    Raised inside the readers only; the observer's public methods catch it,
    set ``failed``, keep the message in ``error`` and emit a :class:`ProtocolError`.
    The message names the problem as the user sees it ("request head over 64 KiB",
    "invalid chunked encoding", "response is not HTTP"). ``request`` is the head of a
    request whose line was read but whose head failed, so it can still be reported.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.request: RequestHead | None = None


# ---------------------------------------------------------------------------
# Events


class RequestHead(Event):
    """A request line and its headers (in received order, original case)."""

    __slots__ = ("method", "target", "version", "headers", "time", "seq")

    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[str, str]], time: float, *, seq: int = 0) -> None:
        self.method = method
        self.target = target
        self.version = version      # "HTTP/1.1"
        self.headers = headers
        self.time = time
        self.seq = seq              # 0, 1, 2...: the exchange on this connection


class BodyData(Event):
    """The next captured bytes of a body (content-decoded), in order, before the
    :class:`RequestEnd` (``request``) or :class:`ResponseEnd` of exchange ``seq``."""

    __slots__ = ("seq", "request", "data")

    def __init__(self, seq: int, request: bool, data: bytes) -> None:
        self.seq = seq
        self.request = request
        self.data = data


class RequestEnd(Event):
    """The request body is complete (``complete`` is False if the client closed first).

    ``truncated``: the captured body (the :class:`BodyData` before) is only its first
    part (``max_capture`` reached, or decoding failed after bytes were handed on)."""

    __slots__ = ("body_size", "decoded_size", "time", "seq", "complete", "trailers",
                 "truncated")

    def __init__(self, body_size: int, time: float, *,
                 decoded_size: int | None = None, seq: int = 0, complete: bool = True,
                 trailers: list[tuple[str, str]] | None = None,
                 truncated: bool = False) -> None:
        self.body_size = body_size
        self.decoded_size = body_size if decoded_size is None else decoded_size
        self.time = time
        self.seq = seq
        self.complete = complete
        self.trailers = trailers if trailers is not None else []
        self.truncated = truncated


class ResponseHead(Event):
    """A status line and its headers; ``informational`` for 1xx other than 101."""

    __slots__ = ("status", "reason", "version", "headers", "time", "seq", "informational")

    def __init__(self, status: int, reason: str, version: str,
                 headers: list[tuple[str, str]], time: float, *, seq: int = 0,
                 informational: bool | None = None) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.time = time
        self.seq = seq
        self.informational = (100 <= status < 200 and status != 101
                              if informational is None else informational)


class ProtocolError(Event):
    """The observer stopped following the connection (it is ``failed`` from now on).

    ``error`` names why. ``request`` is a request whose head could not be completed
    (too large, too many headers, bad framing) but whose request line was read: it was
    not reported as a :class:`RequestHead`, and is reported with the error instead.
    Every exchange still open on the connection ends with this error: its response
    will never be decoded.
    """

    __slots__ = ("error", "time", "request")

    def __init__(self, error: str, time: float, request: RequestHead | None = None) -> None:
        self.error = error
        self.time = time
        self.request = request


class ResponseEnd(Event):
    """The response body is complete.

    ``body_size`` counts bytes on the wire after de-chunking; ``decoded_size``
    after content decoding (equal to ``body_size`` for identity or when
    decoding failed). When bodies are captured the body came before as
    :class:`BodyData` events (up to ``max_capture`` bytes) and ``truncated``
    says it went on beyond them. ``complete`` is False when the server closed
    before the framing said the body was done.
    """

    __slots__ = ("body_size", "decoded_size", "time", "seq", "complete", "trailers",
                 "truncated")

    def __init__(self, body_size: int, decoded_size: int, time: float, *,
                 seq: int = 0, complete: bool = True,
                 trailers: list[tuple[str, str]] | None = None,
                 truncated: bool = False) -> None:
        self.body_size = body_size
        self.decoded_size = decoded_size
        self.time = time
        self.seq = seq
        self.complete = complete
        self.trailers = trailers if trailers is not None else []
        self.truncated = truncated


# ---------------------------------------------------------------------------
# Head parsing

_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"


def _head_end(data: bytes | bytearray, start: int, end: int) -> int:
    """Where the first empty line (``\r?\n\r?\n``) within ``data[start:end]`` ends, or -1.

    Two ``find`` calls (memchr speed) instead of a regex search, which stepped through
    every byte of the head in Python's regex engine: 9% of the proxy's time on keep-alive
    traffic. Every match of the pattern contains ``\n\r\n`` or ``\n\n``, so the first
    one ends at the earlier of their first occurrences' ends."""
    crlf = data.find(b"\n\r\n", start, end)
    lf = data.find(b"\n\n", start, end if crlf < 0 else crlf + 2)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1
_REQUEST_LINE = re.compile(rf"([{_TCHAR}]{{1,32}}) +([^\x00-\x20\x7f]+) +HTTP/1\.([0-9])")
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) +([0-9]{3})(?:[ \t]+(.*?))?[ \t]*")
_HEADER_LINE = re.compile(rf"([{_TCHAR}]+)[ \t]*:[ \t]*(.*?)[ \t]*")
_METHOD_PREFIX = re.compile(rb"[" + _TCHAR.encode() + rb"]{0,32}(?: |$)")
_CHUNK_LINE = re.compile(r"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?")
_DIGITS = re.compile(r"[0-9]{1,19}")
_HOST_IN_HEAD = re.compile(rb"\nhost[ \t]*:([^\r\n]*)\r?\n", re.IGNORECASE)


def _parse_fields(lines: list[str], what: str) -> list[tuple[str, str]]:
    """Header (or trailer) lines, already split and without line ends; ``what`` names
    the section in errors ("request head", "trailer section")."""
    fields: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # obs-fold (RFC 9112 §5.2): a continuation of the previous value.
            if not fields:
                raise HttpError(f"invalid {what}")  # a continuation line first
            name, value = fields[-1]
            more = line.strip(" \t")
            fields[-1] = (name, f"{value} {more}" if value else more)
            continue
        m = _HEADER_LINE.fullmatch(line)
        if m is None:
            raise HttpError(f"invalid {what}")
        fields.append((m[1], m[2]))
    return fields


# The whole header block checked at once: most heads are well formed (keep-alive traffic
# parses a head per request and per response). Anything else (obs-fold, stray CRs, bad
# lines) takes the line-by-line path.
_FIELDS_BLOCK = re.compile(rf"(?:[{_TCHAR}]+[ \t]*:[^\r\n]*\r?\n)*")


def _split_first(head: bytes) -> tuple[str, str]:
    """A head's first line and its header block (without the empty line)."""
    text = head.decode("latin-1")
    eol = text.find("\n")
    first = text[:eol - 1] if eol > 0 and text[eol - 1] == "\r" else text[:eol]
    block = text[eol + 1:]
    return first, block[:-2] if block.endswith("\r\n") else block[:-1]


def _parse_block(block: str, what: str) -> list[tuple[str, str]]:
    """A head's header fields; ``what`` ("request head", "response head") names it in errors."""
    if _FIELDS_BLOCK.fullmatch(block):
        # Well formed: every line is "token [ws] : value \r?\n" and values hold no CR, so
        # splitting on LF and stripping is exact (a loop over str.partition beats a
        # capturing regex here: 1.5 vs 4-11 us for a typical nginx response head).
        fields = []
        for line in block.split("\n")[:-1]:
            name, _, value = line.partition(":")
            fields.append((name.rstrip(" \t"), value.strip(" \t\r")))
    else:
        lines = block.split("\n")
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        fields = _parse_fields(lines, what)
    return fields


class _Framing:
    """What a head's headers say about its body and connection."""

    __slots__ = ("length", "chunked", "te", "close", "keep_alive", "upgrade", "codings")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.length: int | None = None
        self.chunked = False
        self.te = False                 # Transfer-Encoding present
        self.close = False
        self.keep_alive = False
        self.upgrade = False
        codings: list[str] = []
        te_codings: list[str] = []
        if len(headers) > MAX_HEADERS:
            raise HttpError("too many headers")
        for name, value in headers:
            key = name.lower()
            if key == "content-length":
                for item in value.split(","):
                    item = item.strip(" \t")
                    if not _DIGITS.fullmatch(item):
                        raise HttpError("invalid Content-Length")
                    n = int(item)
                    if self.length is not None and self.length != n:
                        raise HttpError("invalid Content-Length")  # conflicting values
                    self.length = n
            elif key == "transfer-encoding":
                self.te = True
                te_codings.extend(c.strip(" \t").lower() for c in value.split(",")
                                  if c.strip(" \t"))
            elif key == "connection":
                for token in value.split(","):
                    token = token.strip(" \t").lower()
                    if token == "close":
                        self.close = True
                    elif token == "keep-alive":
                        self.keep_alive = True
            elif key == "upgrade":
                self.upgrade = True
            elif key == "content-encoding":
                codings.append(value)
        if self.te:
            self.chunked = bool(te_codings) and te_codings[-1] == "chunked"
            self.length = None          # RFC 9112 §6.3: Transfer-Encoding wins
        self.codings = parse_content_encoding(codings)


# ---------------------------------------------------------------------------
# Readers

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CR, _CHUNK_LF, _TRAILERS, \
    _UNTIL_EOF, _WAIT, _CLOSED = range(10)


class _Pending:
    """A request the response reader has still to see answered."""

    __slots__ = ("method", "seq", "switch", "close")

    def __init__(self, method: str, seq: int, switch: bool, close: bool) -> None:
        self.method = method
        self.seq = seq
        self.switch = switch            # asked for Upgrade, or CONNECT
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
                    m = _CHUNK_LINE.fullmatch(line)
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
                        self.trailers = _parse_fields(self.trailer_lines, "trailer section")
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
            end = _head_end(data, pos, pos + MAX_HEAD + 4)
            if end >= 0:
                self.scanned = 0
                self.line_ok = False
                self.on_head(bytes(data[pos:end]), now)
                return end
        start = len(buf)
        buf += data[pos:pos + MAX_HEAD + 4 - start]
        end = _head_end(buf, self.scanned - 3 if self.scanned > 3 else 0, len(buf))
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

    def start_body(self, framing: _Framing, kind: int, length: int, now: float) -> None:
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
        self.switch = False             # this request asked to switch protocols
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
            host = _HOST_IN_HEAD.search(self.buf)
            if host is not None:
                fields = [("Host", host[1].decode("latin-1").strip(" \t"))]
        line = self.line
        return RequestHead(line[1], line[2], f"HTTP/1.{line[3]}", fields, now, seq=self.seq)

    def check_first_line(self, buf: bytearray) -> None:
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) <= 64 and _METHOD_PREFIX.match(buf) is None:
                raise HttpError("request is not HTTP")
            return
        line = buf[:nl].rstrip(b"\r").decode("latin-1")
        self.line = _REQUEST_LINE.fullmatch(line)
        if self.line is None:
            raise HttpError("request is not HTTP")
        self.line_ok = True

    def on_head(self, head: bytes, now: float) -> None:
        first, block = _split_first(head)
        m = self.line = _REQUEST_LINE.fullmatch(first)
        if m is None:
            raise HttpError("request is not HTTP")
        method, target, minor = m[1], m[2], int(m[3])
        headers = self.fields = _parse_block(block, "request head")
        framing = _Framing(headers)
        if framing.te and not framing.chunked:
            raise HttpError("invalid Transfer-Encoding")  # a request's must end in chunked
        self.line = None
        self.fields = []
        obs = self.obs
        seq = self.seq
        self.seq += 1
        self.switch = framing.upgrade or method == "CONNECT"
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
        if self.switch and self.state == _HEAD:
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
        self.switch = False
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
        if _STATUS_LINE.fullmatch(line) is None:
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
        first, block = _split_first(head)
        m = _STATUS_LINE.fullmatch(first)
        if m is None:
            raise HttpError("response is not HTTP")
        headers = _parse_block(block, "response head")
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
        framing = _Framing(headers)
        obs.events_.append(ResponseHead(status, reason, version, headers, now,
                                        seq=request.seq, informational=False))
        connect_ok = request.method == "CONNECT" and 200 <= status < 300
        if status == 101 or connect_ok:
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
        if request.switch:
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


# ---------------------------------------------------------------------------
# The observer


class ObserverBase:
    """What the HTTP/1 and HTTP/2 observers share: their settings, the failure state the
    proxy reads (``failed``, ``error``, ``upgraded``) and the queue of events."""

    def __init__(self, *, capture_bodies: bool = False,
                 max_capture: int = DEFAULT_MAX_CAPTURE, decode_content: bool = True) -> None:
        self.capture_bodies = capture_bodies
        self.max_capture = max_capture
        self.decode_content = decode_content
        self.upgraded = False
        self.failed = False
        self.error: str | None = None
        self.events_: list[Event] = []

    def events(self) -> list[Event]:
        """Drain the events produced so far, in order."""
        out = self.events_
        self.events_ = []
        return out

    def _fail(self, why: str, now: float, request: RequestHead | None = None) -> None:
        """Stop following the connection, and say why in a :class:`ProtocolError`."""
        self.failed = True
        self.error = why
        self.events_.append(ProtocolError(why, now, request))


class Http1Observer(ObserverBase):
    """Decode both directions of one HTTP/1.x connection, passively.

    Feed every chunk the client sent to :meth:`client_data` and every chunk
    the server sent to :meth:`server_data`, in the order the proxy saw them,
    with the time; then drain :meth:`events`. None of these methods raises
    on bad input: the observer sets ``failed`` (and ``error``) and ignores
    everything after. After ``upgraded`` becomes True (a 101, or a 2xx to
    CONNECT) the proxy should stop feeding: anything fed is ignored.

    ``capture_bodies`` hands on up to ``max_capture`` bytes of each body
    (content-decoded) as :class:`BodyData` events, as they arrive.
    ``decode_content=False`` skips content decoding (``decoded_size`` is then
    the wire size).
    """

    def __init__(self, *, capture_bodies: bool = False,
                 max_capture: int = DEFAULT_MAX_CAPTURE, decode_content: bool = True) -> None:
        super().__init__(capture_bodies=capture_bodies, max_capture=max_capture,
                         decode_content=decode_content)
        self.pending: deque[_Pending] = deque()
        self._req = _RequestReader(self)
        self._resp = _ResponseReader(self)
        self.server_after_switch = b""  # what followed the 101 head in its chunk

    # -- the proxy's side -----------------------------------------------

    def client_data(self, data: bytes, now: float) -> None:
        """Bytes the client sent (any chunking)."""
        if self.failed or self.upgraded or not data:
            return
        self._run(self._req.feed, bytes(data) if isinstance(data, memoryview) else data, now)

    def server_data(self, data: bytes | memoryview, now: float) -> None:
        """Bytes the server sent (any chunking). A memoryview need only live for the call:
        body bytes are counted from it, anything kept is copied."""
        if self.failed or self.upgraded or not data:
            return
        self._run(self._resp.feed, data, now)

    def client_eof(self, now: float) -> None:
        """The client closed (or half-closed) its side."""
        if not (self.failed or self.upgraded):
            self._run(lambda _d, t: self._req.eof(t), b"", now)

    def server_eof(self, now: float) -> None:
        """The server closed its side: ends a read-until-close response body."""
        if not (self.failed or self.upgraded):
            self._run(lambda _d, t: self._resp.eof(t), b"", now)

    def _run(self, fn: Any, data: bytes | memoryview, now: float) -> None:
        try:
            fn(data, now)
        except HttpError as exc:
            self._fail(str(exc), now, exc.request)
            # A body cut short by the error is still reported, as far as it was read
            # (incomplete: the reporter gives it the error's name).
            self._req.eof(now)
            self._resp.eof(now)

    # -- between the readers --------------------------------------------

    def response_can_go(self, now: float) -> None:
        self._resp.resume(now)

    def switched(self) -> None:
        self.upgraded = True

    def switched_bytes(self) -> tuple[bytes | None, bytes]:
        """After ``upgraded``: the new protocol's first bytes each way, which the observer
        read but did not decode. The client's are those it sent while the switch was
        pending (None: more than ``MAX_WAIT_BUFFER``, some were not kept); the server's
        are those that came after the switching response's head in the same chunk."""
        req = self._req
        client = None if req.overflow else bytes(req.waiting)
        return client, self.server_after_switch

    def switch_refused(self, now: float) -> None:
        self._req.switch_refused(now)
