"""Every message that crosses a process boundary, and the one codec for them.

The stages talk only through rings (``httptap.plumbing.ring``) and only in these types: msgspec
Structs in one tagged union, encoded as msgpack. A message carries ids, numbers, strings
and bytes, never Python objects. Messages are grouped by the direction they travel:

    tun  -> tcp     Packets
    tcp  -> tun     Packets
    tcp  -> proxy   FlowOpened, FlowData, FlowEof, FlowReset, FlowAcked, DatagramIn
    proxy-> tcp     FlowAccept, FlowRefuse, FlowData, FlowEof, FlowReset, FlowAcked, DatagramOut
    proxy-> sink    HttpRequest, HttpResponseHead, BodyChunk, HttpResponse, HttpExchange,
                    TcpSummary,
                    DnsExchange, Notice,
                    WsMessage, WsEnd
    supervisor -> sink   StatsSnapshot (with --stats-interval)
    any  -> next    Drain  (the upstream stage is finished; pass it on once empty)

No message can exceed a ring's largest record (a quarter of its capacity: 1 MiB with
the supervisor's 4 MiB rings) whatever the traffic: a body travels as a sequence of
``BodyChunk`` messages of at most :data:`BODY_CHUNK` bytes, never inside one message.

``flow`` ids are chosen by the tcp shard that saw the connection open; they are unique
within that shard, and a shard talks to exactly one proxy shard, so no id is ever shared.
"""

from __future__ import annotations

from typing import Union

import struct

import msgspec


class Msg(msgspec.Struct, tag=True, array_like=True, omit_defaults=True):
    """Base of every message; the tag is the class name."""


# --- tun <-> tcp ----------------------------------------------------------------------

class Packets(Msg):
    """A batch of IP packets, each without any virtio-net header on the tun->tcp side and
    with one (when the device was opened with IFF_VNET_HDR) on the tcp->tun side."""
    packets: list[bytes]


# --- tcp <-> proxy: one TCP (or UDP) flow ------------------------------------------------

class FlowOpened(Msg):
    """The command sent a SYN (or the first datagram of a UDP flow): connect upstream.

    Addresses are text (``"10.1.1.100"``, ``"fd00::1"``) as the proxy hands them to
    the socket API."""
    flow: int
    src: str
    sport: int
    dst: str
    dport: int
    transport: str = "tcp"


class FlowAccept(Msg):
    """The upstream connection succeeded: complete the command's handshake."""
    flow: int


class FlowRefuse(Msg):
    """The upstream connection failed: answer the command with a RST (refused/unreachable)
    or with silence (``reset=False``: let the command time out)."""
    flow: int
    reason: str
    reset: bool = True


class FlowData(Msg):
    """Stream bytes, in order, in the direction of the ring that carries them."""
    flow: int
    data: bytes


class FlowEof(Msg):
    """The sender half-closed: a FIN from the command, or EOF from upstream."""
    flow: int


class FlowReset(Msg):
    """The connection was reset (RST from the command, or reset/failed upstream)."""
    flow: int
    reason: str = ""


class FlowAcked(Msg):
    """Flow-control credit: the receiver has passed on ``count`` more bytes of this flow
    (proxy: written to the upstream socket; tcp: acknowledged by the command)."""
    flow: int
    count: int


# FlowAcked credit goes back in steps of at least this much, both ways: a keep-alive
# exchange then costs one message each way instead of two. The windows it feeds (the
# proxy's 8 MiB in flight, the tcp stage's 4 MiB receive buffer) dwarf it.
CREDIT_STEP = 64 << 10


class FlowClosed(Msg):
    """The flow is over at the tcp shard: both sides closed (the shard may still hold its
    end in TIME_WAIT, which concerns no one else) or it was reset. When the command's FIN
    and the end come together, this alone says both: no ``FlowEof`` goes before it."""
    flow: int


class DatagramIn(Msg):
    """A UDP datagram from the command."""
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes


class DatagramOut(Msg):
    """A UDP datagram to the command (``src`` is the address it appears to come from)."""
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes


# --- proxy -> sink: what the user sees --------------------------------------------------

class HttpRequest(Msg):
    """A request head has been read (the body may still be streaming)."""
    exchange: int
    time: float
    method: str
    url: str
    version: str
    headers: list[tuple[str, str]]
    client: str
    server: str
    tls_sni: str = ""
    tls_alpn: str = ""


#: Largest ``BodyChunk.data``: far below a ring's largest record with the rest of the
#: message, and small enough that a chunk costs little to hold or copy.
BODY_CHUNK = 256 * 1024


class BodyChunk(Msg):
    """The next piece of a captured body (content-decoded), sent as the body streams and
    before the ``HttpResponse`` that closes ``exchange``; the sink joins the pieces of
    each side in order. Only the first ``--max-body-size`` bytes of a body are sent;
    ``HttpResponse.body_truncated`` (``request_body_truncated``) says when there were
    more."""
    exchange: int
    request: bool  # True: the request body; False: the response body
    data: bytes


class HttpResponseHead(Msg):
    """The head of a response whose body streams (``text/event-stream``, or no declared
    length), sent only with ``--body``: the terminal prints its body as it arrives. The
    ``HttpResponse`` that completes the exchange follows as usual."""
    exchange: int
    time: float
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]


class HttpResponse(Msg):
    """The response to ``exchange`` is complete (or the exchange ended without one).

    The bodies came before it as ``BodyChunk`` messages (when bodies are captured)."""
    exchange: int
    time: float
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    request_body_size: int
    body_size: int
    decoded_size: int
    request_headers_done: float = 0.0
    response_started: float = 0.0
    error: str = ""
    request_done: float = 0.0  # the request body was complete (http1.RequestEnd.time); 0: unknown
    trailers: list[tuple[str, str]] = []  # the response's trailer section (gRPC's status)
    request_body_truncated: bool = False  # the captured request body is only its first part
    body_truncated: bool = False  # the captured response body is only its first part


class HttpExchange(Msg):
    """A request and its response in one message: the proxy holds each ``HttpRequest``
    until the sink's next wake-up (which it would wait for anyway), and when the
    response is complete by then, and nothing else of that connection came between,
    both travel as one record (one encoding, one ring write, one decoding instead of
    two). The sink hands them on exactly as the two messages."""
    request: HttpRequest
    response: HttpResponse


class TcpSummary(Msg):
    """A connection that closed without being decoded as anything else."""
    time: float
    client: str
    server: str
    bytes_sent: int
    bytes_received: int
    duration: float
    transport: str = "tcp"
    tls_sni: str = ""  # TLS relayed untouched (--no-intercept): the name the client asked for


class WsMessage(Msg):
    """One WebSocket message (text, binary or close) on the connection that ``exchange``
    (its ``101`` response) switched to WebSocket. ``size`` is the whole payload after
    permessage-deflate; ``data`` its first bytes when bodies are kept, never more than
    ``websocket.MAX_KEPT`` (64 KiB: one record stays far below a ring's largest), with
    ``truncated`` set when the message was longer. A close carries its code (0: none) and
    reason; its ``data`` is the raw close payload."""
    exchange: int
    time: float
    url: str              # ws:// or wss://
    from_client: bool
    opcode: int           # 1 text, 2 binary, 8 close (RFC 6455 section 5.2)
    size: int
    data: bytes | None = None
    truncated: bool = False
    compressed: bool = False
    close_code: int = 0
    close_reason: str = ""


class WsEnd(Msg):
    """The WebSocket of ``exchange`` is over (the connection closed), or its decoding
    stopped (``error``: a peer broke the protocol; the bytes were relayed on, raw). Pings
    and pongs are counted here, not reported one by one."""
    exchange: int
    time: float
    url: str
    messages_sent: int      # text and binary messages from the command
    messages_received: int  # ... and from the server
    pings_sent: int = 0
    pongs_sent: int = 0
    pings_received: int = 0
    pongs_received: int = 0
    error: str = ""


class DnsExchange(Msg):
    time: float
    name: str
    qtype: str
    answers: list[str]
    rcode: str


class Notice(Msg):
    """A line for the user from another stage: an error (``level="error"``) or, with
    ``--verbose``, information."""
    level: str
    text: str


class StatsSnapshot(Msg):
    """supervisor -> sink: the ``--stats-interval`` numbers, for a ``stats`` ndjson line
    (the same record the supervisor appends at exit; see ``stats.stats_record``)."""
    elapsed_s: float
    stages: list[dict[str, str | int | float]]


# --- control ---------------------------------------------------------------------------

class Drain(Msg):
    """The sending stage will send nothing more. A stage that has received Drain from all
    its inputs finishes its work, sends Drain to its outputs and exits."""


Message = Union[
    Packets, FlowOpened, FlowAccept, FlowRefuse, FlowData, FlowEof, FlowReset, FlowAcked,
    FlowClosed, DatagramIn, DatagramOut, HttpRequest, HttpResponseHead, BodyChunk, HttpResponse,
    HttpExchange, TcpSummary,
    DnsExchange, Notice, StatsSnapshot, Drain, WsMessage, WsEnd,
]

ALL_TYPES: tuple[type[Msg], ...] = Message.__args__  # type: ignore[attr-defined]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)

encode = _encoder.encode
decode = _decoder.decode


class FlowDataView(Msg, tag="FlowData"):
    """A ``FlowData`` as :func:`decode_view` reads it: ``data`` is a view of the record
    (of the ring's shared memory), valid only while the record is held (``Ring.
    read_holding``). Never sent: it decodes what was sent as ``FlowData``."""
    flow: int
    data: memoryview


_view_decoder = msgspec.msgpack.Decoder(Union[tuple(
    FlowDataView if t is FlowData else t for t in ALL_TYPES)])

decode_view = _view_decoder.decode


_FLOW_DATA_PREFIX = encode(FlowData(0, b""))[:-3]  # array header and tag; then flow, bin
_BIN8, _BIN16, _BIN32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")


def flow_data_header(flow: int, size: int) -> bytes:
    """The encoding of ``FlowData(flow, data)`` up to its payload: this plus ``size``
    bytes of data is exactly ``encode(FlowData(flow, data))``. Lets a stage copy a payload
    straight into a ring, once, instead of into a message and then into the ring."""
    head = encode(flow)
    if size < 0x100:
        return _FLOW_DATA_PREFIX + head + _BIN8.pack(0xC4, size)
    if size < 0x10000:
        return _FLOW_DATA_PREFIX + head + _BIN16.pack(0xC5, size)
    return _FLOW_DATA_PREFIX + head + _BIN32.pack(0xC6, size)


def flow_data_header32(flow: int, size: int) -> bytes:
    """:func:`flow_data_header` with the payload's length always in 4 bytes (msgpack bin32,
    valid for any size): a header of one length whatever ``size``, so room for it can be
    left before a payload of a size not known yet (``Ring.reserve``)."""
    return _FLOW_DATA_PREFIX + encode(flow) + _BIN32.pack(0xC6, size)
