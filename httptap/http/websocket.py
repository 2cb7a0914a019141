"""A passive WebSocket decoder (RFC 6455, permessage-deflate RFC 7692): both directions.

Role in the pipeline: after an HTTP/1.1 ``101`` that accepted ``Upgrade: websocket``, the
per-flow core (``flow.core.FlowCore``) keeps relaying the connection's bytes untouched and
feeds a copy of each chunk to one :class:`WebSocketObserver`, which reports one
:class:`WsEvent` per message (text, binary, close). Like ``http1`` it never changes, holds
back or answers bytes; when a peer breaks the protocol it sets ``failed`` and ``error``
and ignores everything after (the flow goes on, relayed raw).

This module is a pure core: bytes and ``now`` in, events out; no ``os``, ``socket``,
``asyncio`` or ``time`` (tests/test_pure_cores.py walks its imports).

Theory of operation
-------------------
Each direction has a :class:`_Reader`, a small state machine over frames (RFC 6455 §5.2)::

    HEAD ──header complete──▶ PAYLOAD ──payload read──▶ HEAD
     (2 to 14 bytes, kept in a small buffer)

A data frame (text, binary) starts a message; continuation frames extend it until FIN.
Control frames (close, ping, pong) are at most 125 bytes, never fragmented, and may come
between the fragments of a message: they are collected apart from the message. Pings and
pongs are counted, not reported; a close is reported with its code and reason.

Memory is bounded whatever a peer sends: of each message only the first ``max_kept``
bytes are kept (the rest is counted: ``size``, ``truncated``), and payload bytes beyond
that are not even unmasked, unless they are compressed. A compressed message
(permessage-deflate: RSV1 on its first frame) is unmasked and inflated in pieces of at
most ``INFLATE_STEP`` bytes: with context takeover, the inflater's window must see every
byte of every message, the ones we do not keep too.

permessage-deflate: the parameters come from the 101's ``Sec-WebSocket-Extensions``
(:func:`parse_deflate`). Inflating uses a 2^15 window whatever ``*_max_window_bits`` says
(a larger window decodes a stream made with a smaller one); ``*_no_context_takeover``
gives each message of that side a fresh inflater. A sender may end a message with a
final block (RFC 7692 §7.2.3.3); then the next message starts a fresh stream too.

What breaks the protocol (the observer gives up): a client frame without a mask or a
server frame with one (§5.1), RSV bits not negotiated, a reserved opcode, a fragmented or
oversized control frame, a continuation without a message or a new message inside one,
a 64-bit length with its top bit set, a one-byte close payload, deflate data that does
not inflate, and data after a close frame.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OPCODE_NAMES = {OP_TEXT: "text", OP_BINARY: "binary", OP_CLOSE: "close", OP_PING: "ping",
                OP_PONG: "pong"}

#: Bytes of one message kept for the sinks (the rest is counted). 64 KiB keeps every
#: ``WsMessage`` far below a ring's largest record.
MAX_KEPT = 64 << 10
#: Largest piece inflated at once: what a compressed message costs in memory, at most.
INFLATE_STEP = 64 << 10
MAX_CONTROL = 125            # RFC 6455 §5.5
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # stripped by the sender at each message end (RFC 7692 §7.2.1)


class WebSocketError(Exception):
    """The bytes are not a WebSocket conversation this observer can follow."""


@dataclass(slots=True)
class WsEvent:
    """One message: ``opcode`` is OP_TEXT, OP_BINARY or OP_CLOSE; ``size`` its whole
    payload (after inflating); ``data`` its first ``max_kept`` bytes when data is kept (a
    close's code and reason are always read); ``time`` when its last byte was seen."""
    from_client: bool
    time: float
    opcode: int
    size: int
    data: bytes | None
    truncated: bool = False
    compressed: bool = False
    close_code: int = 0          # 0: the close frame carried no code
    close_reason: str = ""


@dataclass(slots=True, frozen=True)
class Deflate:
    """The permessage-deflate parameters the server accepted (RFC 7692 §7.1)."""
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: int = 15
    server_max_window_bits: int = 15


def parse_deflate(extensions: list[str]) -> Deflate | None:
    """The permessage-deflate parameters in the 101's ``Sec-WebSocket-Extensions`` values,
    or None when it was not accepted. Raises :class:`WebSocketError` for an extension the
    observer cannot follow (another one using RSV bits, or bad parameters): the flow is
    then relayed without decoding."""
    found: Deflate | None = None
    for value in extensions:
        for item in value.split(","):
            name, *params = [p.strip() for p in item.split(";")]
            if not name:
                continue
            if name.lower() != "permessage-deflate":
                raise WebSocketError(f"unknown WebSocket extension {name[:40]!r}")
            if found is not None:
                raise WebSocketError("permessage-deflate accepted twice")
            found = _deflate_params(params)
    return found


def _deflate_params(params: list[str]) -> Deflate:
    flags: dict[str, bool] = {}
    bits: dict[str, int] = {}
    for param in params:
        key, sep, value = param.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key in ("client_no_context_takeover", "server_no_context_takeover") and not sep:
            flags[key] = True
        elif key in ("client_max_window_bits", "server_max_window_bits"):
            if not sep:
                continue  # an offer without a value; in an answer it means 15
            if not value.isdigit() or not 8 <= int(value) <= 15:
                raise WebSocketError(f"bad {key}={value[:10]!r}")
            bits[key] = int(value)
        else:
            raise WebSocketError(f"unknown permessage-deflate parameter {key[:40]!r}")
    return Deflate(client_no_context_takeover=flags.get("client_no_context_takeover", False),
                   server_no_context_takeover=flags.get("server_no_context_takeover", False),
                   client_max_window_bits=bits.get("client_max_window_bits", 15),
                   server_max_window_bits=bits.get("server_max_window_bits", 15))


def unmask(data: bytes | memoryview, key: bytes, offset: int) -> bytes:
    """``data`` XOR the 4-byte ``key``, starting ``offset`` bytes into the key's cycle."""
    n = len(data)
    if not n:
        return b""
    start = offset & 3
    rotated = key[start:] + key[:start]
    pad = (rotated * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


_HEAD, _PAYLOAD, _CLOSED = range(3)
_EXTENDED = {126: 2, 127: 8}  # bytes of extended payload length after these 7-bit lengths


class _Reader:
    """One direction's frames and the message being read."""

    def __init__(self, obs: WebSocketObserver, from_client: bool, no_takeover: bool) -> None:
        self.obs = obs
        self.from_client = from_client
        self.no_takeover = no_takeover
        self.state = _HEAD
        self.head = bytearray()
        # the frame being read
        self.opcode = 0
        self.fin = False
        self.mask = b""
        self.remaining = 0
        self.offset = 0          # payload bytes of this frame already read (for the mask)
        self.control = bytearray()
        # the message being read (a data frame started it; None: between messages)
        self.message: int | None = None
        self.compressed = False
        self.size = 0
        self.kept = bytearray()
        self.truncated = False
        self.inflater: zlib._Decompress | None = None
        self.pings = 0
        self.pongs = 0
        self.messages = 0

    def feed(self, data: bytes | memoryview, now: float) -> None:
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n:
            if self.state == _HEAD:
                pos = self._read_head(view, pos)
                if self.state == _PAYLOAD and self.remaining == 0:
                    self._frame_done(now)
            elif self.state == _PAYLOAD:
                take = min(self.remaining, n - pos)
                self._payload(view[pos:pos + take])
                pos += take
                self.remaining -= take
                self.offset += take
                if self.remaining == 0:
                    self._frame_done(now)
            else:
                raise WebSocketError("data after a close frame")

    # -- frame header (RFC 6455 §5.2) -------------------------------------------------------

    def _read_head(self, view: memoryview, pos: int) -> int:
        head = self.head
        need = 2
        while True:
            take = min(need - len(head), len(view) - pos)
            if take > 0:
                head += view[pos:pos + take]
                pos += take
            if len(head) < need:
                return pos  # the rest of the header comes with the next chunk
            if need == 2:
                need = 2 + _EXTENDED.get(head[1] & 0x7F, 0) + (4 if head[1] & 0x80 else 0)
                if need > 2:
                    continue
            break
        self._start_frame(bytes(head))
        head.clear()
        return pos

    def _start_frame(self, head: bytes) -> None:
        b0, b1 = head[0], head[1]
        fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
        masked, length = bool(b1 & 0x80), b1 & 0x7F
        pos = 2
        if length == 126:
            length = int.from_bytes(head[2:4], "big")
            pos = 4
        elif length == 127:
            length = int.from_bytes(head[2:10], "big")
            pos = 10
            if length >> 63:
                raise WebSocketError("frame length with its top bit set")
        if masked != self.from_client:
            raise WebSocketError("a client frame without a mask" if self.from_client
                                 else "a server frame with a mask")
        self.mask = head[pos:pos + 4] if masked else b""
        if opcode not in OPCODE_NAMES and opcode != OP_CONTINUATION:
            raise WebSocketError(f"reserved opcode {opcode:#x}")
        deflate = self.obs.deflate is not None
        if rsv & 0x30 or (rsv & 0x40 and not (deflate and opcode in (OP_TEXT, OP_BINARY))):
            raise WebSocketError("RSV bits that no extension negotiated")
        if opcode >= OP_CLOSE:
            if not fin or length > MAX_CONTROL:
                raise WebSocketError("a fragmented or oversized control frame")
        elif opcode == OP_CONTINUATION:
            if self.message is None:
                raise WebSocketError("a continuation frame outside a message")
        else:
            if self.message is not None:
                raise WebSocketError("a new message before the last one ended")
            self._start_message(opcode, bool(rsv & 0x40))
        self.opcode, self.fin = opcode, fin
        self.remaining, self.offset = length, 0
        self.state = _PAYLOAD

    # -- payload ----------------------------------------------------------------------------

    def _start_message(self, opcode: int, compressed: bool) -> None:
        self.message = opcode
        self.compressed = compressed
        self.size = 0
        self.truncated = False
        if compressed and (self.inflater is None or self.no_takeover or self.inflater.eof):
            self.inflater = zlib.decompressobj(-15)

    def _payload(self, part: memoryview) -> None:
        if self.opcode >= OP_CLOSE:
            self.control += self._unmasked(part)
        elif self.compressed:
            self._inflate(self._unmasked(part))
        else:
            room = self._room()
            if room > 0:
                self.kept += self._unmasked(part[:room])
            self.size += len(part)

    def _room(self) -> int:
        obs = self.obs
        if not obs.keep_data:
            return 0
        return obs.max_kept - len(self.kept)

    def _unmasked(self, part: memoryview) -> bytes:
        if not self.mask:
            return bytes(part)
        return unmask(part, self.mask, self.offset)

    def _inflate(self, data: bytes) -> None:
        inflater = self.inflater
        assert inflater is not None
        while data:
            if inflater.eof:  # a final block ended the stream: nothing may follow it
                raise WebSocketError("deflate data after the end of the stream")
            try:
                out = inflater.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise WebSocketError(f"permessage-deflate data does not inflate: {exc}") from None
            self.size += len(out)
            room = self._room()
            if room > 0:
                self.kept += out[:room]
            data = inflater.unconsumed_tail

    def _frame_done(self, now: float) -> None:
        self.state = _HEAD
        opcode = self.opcode
        if opcode >= OP_CLOSE:
            payload, self.control = bytes(self.control), bytearray()
            if opcode == OP_PING:
                self.pings += 1
            elif opcode == OP_PONG:
                self.pongs += 1
            else:
                self._close(payload, now)
            return
        if not self.fin:
            return
        if self.compressed:
            inflater = self.inflater
            assert inflater is not None
            if not inflater.eof:
                self._inflate(_DEFLATE_TAIL)
        self.truncated = self.size > len(self.kept) and self.obs.keep_data
        self.messages += 1
        kept, self.kept = bytes(self.kept), bytearray()
        assert self.message is not None
        self.obs.events_.append(WsEvent(
            self.from_client, now, self.message, self.size,
            kept if self.obs.keep_data else None, self.truncated, self.compressed))
        self.message = None

    def _close(self, payload: bytes, now: float) -> None:
        if len(payload) == 1:
            raise WebSocketError("a close frame with a one-byte payload")
        code = int.from_bytes(payload[:2], "big") if payload else 0
        reason = payload[2:].decode("utf-8", "replace")
        self.state = _CLOSED
        self.obs.events_.append(WsEvent(
            self.from_client, now, OP_CLOSE, len(payload),
            payload if self.obs.keep_data else None, close_code=code, close_reason=reason))


class WebSocketObserver:
    """Decode both directions of one WebSocket connection, passively.

    Feed each chunk the client sent to :meth:`client_data` and each the server sent to
    :meth:`server_data`, in order, with the time; then drain :meth:`events`. No method
    raises on bad input: the observer sets ``failed`` and ``error`` and ignores the rest.
    ``deflate``: the accepted permessage-deflate parameters (:func:`parse_deflate`), or
    None. ``keep_data``: keep up to ``max_kept`` bytes of each message."""

    def __init__(self, deflate: Deflate | None = None, *, keep_data: bool = False,
                 max_kept: int = MAX_KEPT) -> None:
        self.deflate = deflate
        self.keep_data = keep_data
        self.max_kept = max_kept
        self.failed = False
        self.error: str | None = None
        self.events_: list[WsEvent] = []
        self.client = _Reader(self, True, bool(deflate and deflate.client_no_context_takeover))
        self.server = _Reader(self, False, bool(deflate and deflate.server_no_context_takeover))

    def events(self) -> list[WsEvent]:
        """Drain the messages completed so far, in the order they completed."""
        out = self.events_
        self.events_ = []
        return out

    def client_data(self, data: bytes | memoryview, now: float) -> None:
        self._feed(self.client, data, now)

    def server_data(self, data: bytes | memoryview, now: float) -> None:
        """A memoryview need only live for the call: what is kept is copied."""
        self._feed(self.server, data, now)

    def _feed(self, reader: _Reader, data: bytes | memoryview, now: float) -> None:
        if self.failed or not data:
            return
        try:
            reader.feed(data, now)
        except WebSocketError as exc:
            self.failed = True
            self.error = str(exc)
