"""A passive, incremental HTTP/2 decoder: watches both directions of one connection.

Role in the pipeline: when TLS interception negotiated ALPN ``h2``, the proxy
stage relays the plaintext bytes between the command (client) and the
upstream server unchanged and feeds a copy of every chunk to one
:class:`Http2Observer`, exactly as it does with
:class:`httptap.http.http1.Http1Observer` for HTTP/1.x. The observer reports each
stream as one exchange with the same event classes (:class:`RequestHead`,
:class:`RequestEnd`, :class:`ResponseHead`, :class:`ResponseEnd`, with
``seq`` = the stream id and ``version`` = ``"HTTP/2"``; :class:`BodyData`
when bodies are captured) plus :class:`StreamReset` for RST_STREAM. It never
changes, holds back or answers bytes; when it cannot follow the connection it
sets ``failed``.

This module is a pure core: bytes and ``now`` in, events out; it imports no
``os``, ``socket``, ``asyncio`` or ``time`` (a test walks its imports).

Why not ``h2.H2Connection``
---------------------------
``H2Connection`` is an endpoint: it keeps its own flow-control windows,
applies its own SETTINGS (max frame size, concurrent streams, header list
size) and validates the peer against them, and it expects to *send* (ACKs,
WINDOW_UPDATEs). A passive observer sits between two real endpoints whose
settings and windows it does not own; two ``H2Connection`` objects fed a copy
of the traffic would disagree with the real peers (e.g. a DATA frame the
real receiver's window allowed but ours did not), raise, and lose the
connection. What must be exact is only framing and HPACK state, so this
module uses the two libraries ``h2`` is built on: ``hyperframe`` to parse
the payloads of the few frame types that matter (HEADERS, CONTINUATION,
PUSH_PROMISE, SETTINGS, RST_STREAM) and ``hpack`` to decode header blocks,
one :class:`hpack.Decoder` per direction.

Theory of operation
-------------------
Each direction has a :class:`_FrameReader`, a small state machine over the
byte stream::

    PREFACE (client only) ─▶ HEAD ─┬─ DATA ─────▶ [PADLEN] ─▶ BODY ─▶ [PAD] ─▶ HEAD
                                   ├─ HEADERS, CONTINUATION, PUSH_PROMISE,
                                   │  SETTINGS, RST_STREAM ─▶ PAYLOAD (buffered) ─▶ HEAD
                                   └─ anything else ─▶ SKIP ─▶ HEAD

The 9-byte frame header is unpacked with :mod:`struct`. DATA payloads are
never buffered or parsed: per fed chunk the BODY state does a few integer
operations, and a slice is taken only when the message has a content
decoder (a ``content-encoding``, or bodies are captured). Only the frames
listed above are collected and handed to ``hyperframe``; PING, WINDOW_UPDATE,
PRIORITY, GOAWAY and unknown types are skipped by length. Frames up to the
protocol maximum (16 MiB - 1) are accepted whatever SETTINGS_MAX_FRAME_SIZE
says; header blocks are bounded by :data:`MAX_HEADER_BLOCK`.

Measured on the 2-core development machine (CPython 3.11, other work
running), decoder overhead only: a 256 MiB response in 16 KiB DATA frames
fed in 64 KiB chunks goes at ~21,000 MB/s (~12,000 MB/s with
``capture_bodies``, which feeds a :class:`ContentDecoder`); handing the same
DATA frames to ``hyperframe`` (which copies each payload) alone manages
~5,000 MB/s. Small exchanges (request head, response head, 5-byte body)
run at ~14,600 a second, most of it in ``hpack``.

A HEADERS or PUSH_PROMISE without END_HEADERS must be followed by
CONTINUATION frames on the same stream; the fragments are joined and the
block is decoded once complete. Every block is decoded, in order, even for
streams the observer ignores, so the dynamic table stays in step with the
encoder.

HPACK table size: SETTINGS_HEADER_TABLE_SIZE sent by one side limits the
*other* side's encoder, i.e. the decoder of the other direction. The limit
is raised as soon as the SETTINGS frame is seen (a bigger table can only be
used after the peer read it) and lowered only when the other side's
SETTINGS ACK shows the encoder has taken it in: until then the encoder may
still use the old size. Actual table size changes are in-band (dynamic
table size updates) and ``hpack`` follows them.

Streams (``seq`` = stream id):

* client HEADERS on a new stream → :class:`RequestHead` (``:method``,
  ``:path``; for CONNECT without ``:path`` the target is ``:authority``).
  Pseudo-headers are left out of ``headers``, except that ``:authority`` is
  put first as ``("host", authority)`` when there is no ``host`` header.
* server HEADERS → :class:`ResponseHead` (``:status``, ``reason`` ``""``);
  1xx heads are ``informational`` and the final head is still to come.
* DATA payloads (minus padding) are counted, content-decoded and captured
  like HTTP/1 bodies (captured bytes leave as :class:`BodyData` events as each
  piece is decoded, so no body is held); END_STREAM on HEADERS or DATA ends
  that side (:class:`RequestEnd` / :class:`ResponseEnd`). A HEADERS after the head of
  a side is a trailer section (``trailers``).
* RST_STREAM on a live stream → :class:`StreamReset`, then a
  ``RequestEnd(complete=False)`` if the request body was still open and a
  ``ResponseEnd(complete=False)`` if a final response head was seen and its
  body still open. A stream reset before any response gets nothing more:
  the reporter (``http.report``) ends the exchange with the reset as its error.
* ``client_eof`` ends open request bodies (``complete=False``);
  ``server_eof`` ends open responses the same way; streams without a
  response get nothing more (the proxy reports them as errors).
* PUSH_PROMISE: its header block is decoded (HPACK state) and the pushed
  stream is ignored: pushes are not reported (browsers disabled push; the
  pushed request was never made by the command).
* GOAWAY, PRIORITY, PING, WINDOW_UPDATE and extension frames are ignored.

Any protocol error the observer cannot follow (bad client preface, a server
that does not start with SETTINGS, a malformed frame, an HPACK failure, a
CONTINUATION out of place, a response without a valid ``:status``) sets
``failed`` and ``error`` and emits a :class:`~httptap.http.http1.ProtocolError`, then
ends every open body incomplete; no exception escapes and later bytes are ignored.

Not handled: ``h2c`` (cleartext upgrade from HTTP/1.1) and prior-knowledge
cleartext HTTP/2 are not detected here (the proxy chooses this observer from
ALPN only); server push is not reported; priorities are ignored; extended
CONNECT (RFC 8441 WebSocket) is shown as one long exchange whose DATA is
counted as bodies.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError

from .contentcoding import ContentDecoder, parse_content_encoding
from .events import (DEFAULT_MAX_CAPTURE, BodyData, ObserverBase, RequestEnd, RequestHead,
                     ResponseEnd, ResponseHead, TunnelData, TunnelOpened)
from .h2frames import (DONE, MAX_HEADER_BLOCK, MAX_HEADER_LIST, PREFACE, FrameReader,
                       Http2Error)
from .h2reset import ERROR_CODES, StreamReset

# (PREFACE, MAX_HEADER_BLOCK, MAX_HEADER_LIST and Http2Error live with the frame reader.)
__all__ = [
    "Http2Error", "Http2Observer", "StreamReset", "PREFACE", "MAX_HEADER_BLOCK",
    "MAX_HEADER_LIST", "ERROR_CODES",
]

VERSION = "HTTP/2"


# ---------------------------------------------------------------------------
# Streams


class _Body:
    """One side (request or response) of a stream, from its head to its end."""

    __slots__ = ("size", "decoder", "open", "length", "sid", "request", "tunnel")

    def __init__(self, decoder: ContentDecoder | None, fields: list[tuple[str, str]],
                 sid: int, request: bool) -> None:
        self.sid = sid
        self.request = request
        self.size = 0
        self.decoder = decoder
        self.open = True
        self.tunnel = False  # the DATA of an accepted extended CONNECT (RFC 8441)
        # The declared content-length, if any: a body that reached it is complete even
        # when the connection closes before END_STREAM arrives.
        self.length = next((int(v) for k, v in fields
                            if k.lower() == "content-length" and v.strip().isdigit()), None)

    @property
    def reached_length(self) -> bool:
        return self.length is not None and self.size == self.length


class _Stream:
    __slots__ = ("sid", "req", "resp", "resp_done", "protocol")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.protocol = ""  # the :protocol of an extended CONNECT (RFC 8441)
        self.req: _Body | None = None     # set with the request head
        self.resp: _Body | None = None    # set with the final response head
        self.resp_done = False


def _split_headers(block: Sequence[tuple[bytes, bytes]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Pseudo-headers (first value of each) and regular fields, as latin-1 text."""
    pseudo: dict[str, str] = {}
    fields: list[tuple[str, str]] = []
    for raw_name, raw_value in block:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name.startswith(":"):
            pseudo.setdefault(name, value)
        else:
            fields.append((name, value))
    return pseudo, fields


# ---------------------------------------------------------------------------
# The observer


class Http2Observer(ObserverBase):
    """Decode both directions of one HTTP/2 connection, passively.

    Feed every chunk the client sent (starting with the connection preface)
    to :meth:`client_data` and every chunk the server sent to
    :meth:`server_data`, in the order the proxy saw them, with the time;
    then drain :meth:`events`. None of these methods raises on bad input:
    the observer sets ``failed`` (and ``error``) and ignores everything
    after. ``upgraded`` is always False (kept for the proxy's sake: the same
    attribute as :class:`~httptap.http.http1.Http1Observer`).

    ``capture_bodies`` hands on up to ``max_capture`` bytes of each body
    (content-decoded) as :class:`BodyData` events, as they arrive.
    ``decode_content=False`` skips content decoding (``decoded_size`` is then
    the wire size).
    """

    def __init__(self, *, capture_bodies: bool = False,
                 max_capture: int = DEFAULT_MAX_CAPTURE, decode_content: bool = True) -> None:
        super().__init__(capture_bodies=capture_bodies, max_capture=max_capture,
                         decode_content=decode_content)
        self.streams: dict[int, _Stream] = {}
        self.last_client_sid = 0
        self._client = FrameReader(self, True)
        self._server = FrameReader(self, False)

    def upgraded_from_http1(self) -> None:
        """h2c through an HTTP/1.1 ``Upgrade`` (RFC 7540 §3.2): the request that
        asked for it is stream 1, sent whole in HTTP/1.1 (already reported); its response
        comes as HTTP/2 on stream 1, and the client's preface follows."""
        stream = self.streams[1] = _Stream(1)
        stream.req = _Body(None, [], 1, True)
        stream.req.open = False
        self.last_client_sid = 1

    # -- the proxy's side -----------------------------------------------

    def client_data(self, data: bytes, now: float) -> None:
        """Bytes the client sent (any chunking; bytes, bytearray or memoryview)."""
        if not self.failed and data:
            self._run(self._client.feed, data, now)

    def server_data(self, data: bytes | memoryview, now: float) -> None:
        """Bytes the server sent (any chunking)."""
        if not self.failed and data:
            self._run(self._server.feed, bytes(data), now)

    def client_eof(self, now: float) -> None:
        """The client closed its side: open request bodies end incomplete."""
        if not self.failed:
            self._run(lambda _d, t: self._eof(True, t), b"", now)

    def server_eof(self, now: float) -> None:
        """The server closed its side: open responses end incomplete."""
        if not self.failed:
            self._run(lambda _d, t: self._eof(False, t), b"", now)

    protocol_errors = (Http2Error, HyperframeError, HPACKError)

    def describe(self, exc: Exception) -> str:
        # The libraries' errors keep their class name: their messages alone are terse.
        return str(exc) if isinstance(exc, Http2Error) else f"{type(exc).__name__}: {exc}"

    def _abort(self, now: float) -> None:
        """After a failure: bodies cut short are reported as far as they were read
        (incomplete; the reporter names the failure as their error)."""
        for sid in sorted(self.streams):
            stream = self.streams[sid]
            if stream.req is not None and stream.req.open:
                self._end_request(stream, now, False, [])
            if stream.resp is not None and stream.resp.open:
                self._end_response(stream, now, False, [])
        self.streams.clear()

    # -- from the frame readers -----------------------------------------

    def _decoder(self, headers: list[tuple[str, str]]) -> ContentDecoder | None:
        codings = parse_content_encoding([v for k, v in headers if k.lower() == "content-encoding"])
        if codings and self.decode_content:
            return ContentDecoder(codings, capture=self.capture_bodies,
                                  max_capture=self.max_capture)
        if self.capture_bodies:
            return ContentDecoder([], capture=True, max_capture=self.max_capture)
        return None

    def data_target(self, from_client: bool, sid: int) -> _Body | None:
        if sid in self.tunnels:
            tunnel = _Body(None, [], sid, from_client)
            tunnel.tunnel = True
            return tunnel
        stream = self.streams.get(sid)
        if stream is None:
            return None
        body = stream.req if from_client else stream.resp
        return body if body is not None and body.open else None

    def on_headers(self, from_client: bool, sid: int, block: Sequence[tuple[bytes, bytes]],
                   end_stream: bool, now: float) -> None:
        if from_client:
            self._client_headers(sid, block, end_stream, now)
        else:
            self._server_headers(sid, block, end_stream, now)

    def _client_headers(self, sid: int, block: Sequence[tuple[bytes, bytes]],
                        end_stream: bool, now: float) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if sid % 2 == 0 or sid <= self.last_client_sid:
                return                      # not a stream the client may open: ignored
            self.last_client_sid = sid
            pseudo, fields = _split_headers(block)
            method = pseudo.get(":method", "")
            authority = pseudo.get(":authority")
            target = pseudo.get(":path")
            if target is None:
                target = authority if method == "CONNECT" and authority else ""
            if authority is not None and not any(k.lower() == "host" for k, _ in fields):
                fields.insert(0, ("host", authority))
            stream = self.streams[sid] = _Stream(sid)
            if method == "CONNECT":
                stream.protocol = pseudo.get(":protocol", "")
            stream.req = _Body(self._decoder(fields), fields, sid, True)
            self.events_.append(RequestHead(method, target, VERSION, fields, now, seq=sid))
            if end_stream:
                self._end_request(stream, now, True, [])
            return
        if stream.req is None or not stream.req.open:
            return                          # HEADERS after the request ended: ignored
        _, trailers = _split_headers(block)
        if end_stream:
            self._end_request(stream, now, True, trailers)
        # Trailers without END_STREAM are malformed (RFC 9113 §8.1): ignored.

    def _server_headers(self, sid: int, block: Sequence[tuple[bytes, bytes]],
                        end_stream: bool, now: float) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.resp_done:
            return                          # pushed, unknown or finished stream
        if stream.resp is None:
            pseudo, fields = _split_headers(block)
            raw = pseudo.get(":status", "")
            if len(raw) != 3 or not raw.isdigit():
                raise Http2Error(f"response without a valid :status on stream {sid}")
            status = int(raw)
            if 100 <= status < 200 and status != 101:
                self.events_.append(ResponseHead(status, "", VERSION, fields, now, seq=sid,
                                                 informational=True))
                return
            stream.resp = _Body(self._decoder(fields), fields, sid, False)
            self.events_.append(ResponseHead(status, "", VERSION, fields, now, seq=sid,
                                             informational=False))
            if stream.protocol and 200 <= status < 300 and not end_stream:
                self._open_tunnel(stream, now)
                return
            if end_stream:
                self._end_response(stream, now, True, [])
            return
        _, trailers = _split_headers(block)
        if end_stream:
            self._end_response(stream, now, True, trailers)

    def _open_tunnel(self, stream: _Stream, now: float) -> None:
        """An extended CONNECT accepted (RFC 8441 §5): the exchange ends here, and the
        stream's DATA is the tunnelled protocol's, each way, from now on."""
        assert stream.req is not None
        if stream.req.open:
            self._end_request(stream, now, True, [])
        self._end_response(stream, now, True, [])
        self.streams.pop(stream.sid, None)
        self.tunnels[stream.sid] = stream.protocol
        self.events_.append(TunnelOpened(stream.sid, stream.protocol, now))

    def tunnel_data(self, body: _Body, data: memoryview, now: float) -> None:
        self.events_.append(TunnelData(body.sid, body.request, bytes(data), now))

    def end_side(self, from_client: bool, sid: int, now: float) -> None:
        """END_STREAM on a DATA frame."""
        stream = self.streams.get(sid)
        if stream is None:
            return
        if from_client:
            if stream.req is not None and stream.req.open:
                self._end_request(stream, now, True, [])
        elif stream.resp is not None and stream.resp.open:
            self._end_response(stream, now, True, [])

    def reset(self, from_client: bool, sid: int, code: int, now: float) -> None:
        self.tunnels.pop(sid, None)
        stream = self.streams.get(sid)
        if stream is None:
            return
        self.events_.append(StreamReset(sid, code, now, by_client=from_client))
        if stream.req is not None and stream.req.open:
            self._end_request(stream, now, False, [])
        if stream.resp is not None and stream.resp.open:
            self._end_response(stream, now, False, [])
        self.streams.pop(sid, None)

    def peer_settings(self, from_client: bool, limit: int | None) -> None:
        """SETTINGS from one side limit the other side's HPACK encoder."""
        (self._server if from_client else self._client).limit_sent(limit)

    # -- ends -----------------------------------------------------------

    def pass_body(self, body: _Body) -> None:
        """Hand on what ``body``'s decoder captured so far as a BodyData event."""
        assert body.decoder is not None
        data = body.decoder.take()
        if data:
            self.events_.append(BodyData(body.sid, body.request, data))

    def _finish(self, body: _Body) -> tuple[int, bool]:
        """Close ``body``: its decoded size, and whether its capture was cut short."""
        body.open = False
        decoder = body.decoder
        if decoder is None:
            return body.size, False
        decoder.finish()
        if self.capture_bodies:
            self.pass_body(body)
        body.decoder = None
        return decoder.decoded_size, decoder.truncated

    def _end_request(self, stream: _Stream, now: float, complete: bool,
                     trailers: list[tuple[str, str]]) -> None:
        body = stream.req
        assert body is not None
        decoded, truncated = self._finish(body)
        self.events_.append(RequestEnd(body.size, now, decoded_size=decoded,
                                       seq=stream.sid, complete=complete, trailers=trailers,
                                       truncated=truncated))
        if stream.resp_done:
            self.streams.pop(stream.sid, None)

    def _end_response(self, stream: _Stream, now: float, complete: bool,
                      trailers: list[tuple[str, str]]) -> None:
        body = stream.resp
        assert body is not None
        decoded, truncated = self._finish(body)
        stream.resp_done = True
        self.events_.append(ResponseEnd(body.size, decoded, now, seq=stream.sid,
                                        complete=complete, trailers=trailers,
                                        truncated=truncated))
        if stream.req is not None and not stream.req.open:
            self.streams.pop(stream.sid, None)

    def _eof(self, client: bool, now: float) -> None:
        reader = self._client if client else self._server
        if reader.state == DONE:
            return
        reader.eof()
        for sid in sorted(self.streams):
            stream = self.streams[sid]
            if client:
                if stream.req is not None and stream.req.open:
                    self._end_request(stream, now, stream.req.reached_length, [])
            elif stream.resp is not None and stream.resp.open:
                self._end_response(stream, now, stream.resp.reached_length, [])
