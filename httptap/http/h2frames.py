"""HTTP/2 frames, one direction at a time (RFC 9113 §4, §6): the connection preface,
frame headers, DATA streamed through, HEADERS/CONTINUATION blocks collected and decoded
with HPACK (``hpack``), RST_STREAM and SETTINGS read, the rest skipped. Each
:class:`FrameReader` reports to its :class:`~httptap.http.http2.Http2Observer`. Pure."""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from hpack import Decoder as HpackDecoder
from hyperframe.frame import Frame

if TYPE_CHECKING:
    from .http2 import Http2Observer, _Body

#: The client connection preface (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Largest header block (HEADERS/PUSH_PROMISE plus CONTINUATIONs, encoded) accepted.
MAX_HEADER_BLOCK = 1 << 20
#: Largest decoded header list (RFC 7541 §4.1 sizes: name + value + 32 per field): what
#: Chrome accepts. It also bounds the HttpRequest/HttpResponse messages built from a head
#: (URL and headers) well below a ring's largest record (see messages.py).
MAX_HEADER_LIST = 256 << 10
#: SETTINGS_HEADER_TABLE_SIZE before any SETTINGS (RFC 9113 §6.5.2).
DEFAULT_TABLE_SIZE = 4096

# Frame types (RFC 9113 §6) and flags.
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, \
    _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_SETTINGS_HEADER_TABLE_SIZE = 0x1

#: Frame types whose payload is collected and parsed; the rest is skipped.
_BUFFERED = frozenset({_HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _CONTINUATION})

_HEADER = struct.Struct(">BHBBL")     # length (8 + 16 bits), type, flags, stream id
_U32 = struct.Struct(">L")


class Http2Error(Exception):
    """The bytes are not HTTP/2 this observer can follow (caught inside)."""


_PREFACE_STATE, _HEAD, _PADLEN, _BODY, _PAD, _PAYLOAD, _SKIP, DONE = range(8)


class FrameReader:
    """Splits one direction into frames; DATA is streamed, a few types are buffered."""

    def __init__(self, obs: Http2Observer, is_client: bool) -> None:
        self.obs = obs
        self.is_client = is_client
        self.capture = obs.capture_bodies
        self.state = _PREFACE_STATE if is_client else _HEAD
        self.buf = bytearray()            # preface, partial frame header or buffered payload
        self.remaining = 0                # bytes left in the current state
        self.pad = 0                      # padding after the DATA bytes
        self.ftype = 0
        self.flags = 0
        self.sid = 0
        self.length = 0
        self.target: _Body | None = None  # where DATA bytes go (None: ignored)
        self.first_frame = True
        # Header block being assembled across CONTINUATION frames.
        self.block: bytearray | None = None
        self.block_sid = 0
        self.block_end_stream = False
        self.block_push = False
        # HPACK for the headers this side sends; its limit is the peer's SETTINGS.
        self.hpack = HpackDecoder(max_header_list_size=MAX_HEADER_LIST)
        self.acked_limit = DEFAULT_TABLE_SIZE
        self.pending_limits: deque[int | None] = deque()

    # -- driving --------------------------------------------------------

    def feed(self, data: Any, now: float) -> None:
        n = len(data)
        pos = 0
        mv: memoryview | None = None
        while pos < n:
            state = self.state
            if state == _BODY:
                left = n - pos
                take = self.remaining if self.remaining < left else left
                target = self.target
                if target is not None:
                    if target.tunnel:
                        if mv is None:
                            mv = memoryview(data)
                        self.obs.tunnel_data(target, mv[pos:pos + take], now)
                    elif target.decoder is not None:
                        if mv is None:
                            mv = memoryview(data)
                        target.decoder.feed(mv[pos:pos + take])
                        if self.capture:
                            self.obs.pass_body(target)
                    target.size += take
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.body_done(now)
            elif state == _HEAD:
                if not self.buf and n - pos >= 9:
                    hi, lo, ftype, flags, sid = _HEADER.unpack_from(data, pos)
                    pos += 9
                else:
                    take = 9 - len(self.buf)
                    self.buf += data[pos:pos + take]
                    pos += min(take, n - pos)
                    if len(self.buf) < 9:
                        continue
                    hi, lo, ftype, flags, sid = _HEADER.unpack_from(self.buf, 0)
                    self.buf.clear()
                self.start_frame((hi << 16) | lo, ftype, flags, sid & 0x7FFFFFFF, now)
            elif state == _SKIP or state == _PAD:
                left = n - pos
                take = self.remaining if self.remaining < left else left
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    if state == _PAD:
                        self.data_done(now)
                    else:
                        self.state = _HEAD
            elif state == _PAYLOAD:
                if not self.buf and n - pos >= self.remaining:
                    payload = bytes(data[pos:pos + self.remaining])
                    pos += self.remaining
                else:
                    take = self.remaining - len(self.buf)
                    self.buf += data[pos:pos + take]
                    pos += min(take, n - pos)
                    if len(self.buf) < self.remaining:
                        continue
                    payload = bytes(self.buf)
                    self.buf.clear()
                self.state = _HEAD
                self.on_payload(payload, now)
            elif state == _PADLEN:
                pad = data[pos]
                pos += 1
                if pad >= self.length:
                    raise Http2Error("DATA padding longer than the frame")
                self.start_body(self.length - 1 - pad, pad, now)
            elif state == _PREFACE_STATE:
                take = len(PREFACE) - len(self.buf)
                self.buf += data[pos:pos + take]
                pos += min(take, n - pos)
                if not PREFACE.startswith(self.buf):
                    raise Http2Error("not the HTTP/2 client preface")
                if len(self.buf) == len(PREFACE):
                    self.buf.clear()
                    self.state = _HEAD
            else:  # DONE
                return

    def eof(self) -> None:
        self.state = DONE

    # -- frames ---------------------------------------------------------

    def start_frame(self, length: int, ftype: int, flags: int, sid: int, now: float) -> None:
        if self.first_frame:
            self.first_frame = False
            if ftype != _SETTINGS or flags & _ACK:
                raise Http2Error(f"{'client' if self.is_client else 'server'} did not "
                                 "start with SETTINGS")
        if self.block is not None and ftype != _CONTINUATION:
            raise Http2Error("header block interrupted by another frame")
        self.length = length
        self.ftype = ftype
        self.flags = flags
        self.sid = sid
        if ftype == _DATA:
            if sid == 0:
                raise Http2Error("DATA frame on stream 0")
            self.target = self.obs.data_target(self.is_client, sid)
            if flags & _PADDED:
                if length == 0:
                    raise Http2Error("padded DATA frame without a pad length")
                self.state = _PADLEN
            else:
                self.start_body(length, 0, now)
        elif ftype in _BUFFERED:
            if ftype in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                held = len(self.block) if self.block is not None else 0
                if held + length > MAX_HEADER_BLOCK:
                    raise Http2Error("header block too large")
            elif length > 1 << 16:
                raise Http2Error("control frame too large")
            self.remaining = length
            self.state = _PAYLOAD
            if length == 0:
                self.state = _HEAD
                self.on_payload(b"", now)
        else:
            self.remaining = length
            self.state = _SKIP if length else _HEAD

    def start_body(self, size: int, pad: int, now: float) -> None:
        self.pad = pad
        self.remaining = size
        self.state = _BODY
        if size == 0:
            self.body_done(now)

    def body_done(self, now: float) -> None:
        if self.pad:
            self.remaining = self.pad
            self.state = _PAD
        else:
            self.data_done(now)

    def data_done(self, now: float) -> None:
        self.state = _HEAD
        if self.flags & _END_STREAM:
            self.obs.end_side(self.is_client, self.sid, now)

    def on_payload(self, payload: bytes, now: float) -> None:
        frame, _ = Frame.parse_frame_header(
            memoryview(_HEADER.pack(self.length >> 16, self.length & 0xFFFF,
                                    self.ftype, self.flags, self.sid)))
        frame.parse_body(memoryview(payload))
        ftype = self.ftype
        if ftype == _HEADERS or ftype == _PUSH_PROMISE:
            self.block = bytearray(frame.data)  # type: ignore[attr-defined]
            self.block_sid = self.sid
            self.block_end_stream = bool(self.flags & _END_STREAM) and ftype == _HEADERS
            self.block_push = ftype == _PUSH_PROMISE
            if ftype == _PUSH_PROMISE and self.is_client:
                raise Http2Error("PUSH_PROMISE from the client")
        elif ftype == _CONTINUATION:
            if self.block is None or self.sid != self.block_sid:
                raise Http2Error("CONTINUATION without a header block to continue")
            self.block += frame.data  # type: ignore[attr-defined]
        elif ftype == _SETTINGS:
            if self.flags & _ACK:
                self.settings_acked()
            else:
                limit = frame.settings.get(_SETTINGS_HEADER_TABLE_SIZE)  # type: ignore[attr-defined]
                self.obs.peer_settings(self.is_client, limit)
            return
        elif ftype == _RST_STREAM:
            self.obs.reset(self.is_client, self.sid, frame.error_code, now)  # type: ignore[attr-defined]
            return
        if self.flags & _END_HEADERS:
            assert self.block is not None
            block = bytes(self.block)
            self.block = None
            headers = list(self.hpack.decode(block, raw=True))
            if not self.block_push:
                self.obs.on_headers(self.is_client, self.block_sid, headers,
                                    self.block_end_stream, now)

    # -- HPACK table size -----------------------------------------------

    def limit_sent(self, limit: int | None) -> None:
        """The peer sent SETTINGS (``limit``: its HEADER_TABLE_SIZE, if given)."""
        self.pending_limits.append(limit)
        self.apply_limit()

    def settings_acked(self) -> None:
        """This side acknowledged the peer's oldest outstanding SETTINGS."""
        if self.pending_limits:
            limit = self.pending_limits.popleft()
            if limit is not None:
                self.acked_limit = limit
            self.apply_limit()

    def apply_limit(self) -> None:
        allowed = self.acked_limit
        for limit in self.pending_limits:
            if limit is not None and limit > allowed:
                allowed = limit
        self.hpack.max_allowed_table_size = allowed
