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
``os``, ``socket``, ``asyncio`` or ``time`` (a test walks its imports). It holds the
observer; heads are parsed in ``h1heads``, the two sides are ``h1sides`` and their
readers ``h1readers``, and the events (shared with HTTP/2) are ``events``.

Theory of operation
-------------------
Each direction is a side whose bytes go to its current reader, one small class per
framing, chosen from a table (``h1readers.BODY_READERS``, as h11's ``READERS``)::

    HeadReader ──head──▶ BODY_READERS[framing] ──body done──▶ HeadReader (keep-alive),
                         ContentLengthReader                  WaitReader (a switch was
                         ChunkedReader                        proposed) or ClosedReader
                         UntilCloseReader (responses only)

Heads are collected into a bounded buffer (``MAX_HEAD``) until the empty line
and parsed in one go with a few regular expressions. Bodies are never parsed:
per fed chunk a body reader does a few integer operations and slices, so a
1 GiB body costs about as many Python operations as it has chunks. Body
bytes are copied only into a :class:`~httptap.http.contentcoding.ContentDecoder`,
which exists only when the message has a ``Content-Encoding`` (to count the
decoded size the terminal line shows) or when bodies are captured. Captured
bodies leave as :class:`BodyData` events as each fed chunk is decoded, so the
observer holds no body, whatever its size.

The response side needs the request each response answers (a response to
HEAD, or a 2xx to CONNECT, has no body whatever its headers say; a 101 or a
2xx to CONNECT switches protocols), so the request side appends one entry
per request head to a FIFO and the response side pops one per final
(non-1xx) response: pipelining works without extra effort. Server bytes that
arrive before the observer has seen the request they answer are buffered,
not misread. After a request that asks for a protocol switch (``Upgrade``
header, or ``CONNECT``) the request side waits, buffering client bytes,
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

Measured again for heads only (issue 14, ``perf/bench_http1.py``): httptools
parsing each complete head (a fresh parser per head, our framing kept) saves
about 1.3 µs of the ~15 µs an nginx-like keep-alive exchange costs the
observer, some 1.5% of the proxy's CPU per request, because the Python
callbacks per field and the decoding to ``str`` remain. Not worth a
dependency and the fallbacks it would need.
"""

from __future__ import annotations

from collections import deque

from ..events import Event
from .events import (DEFAULT_MAX_CAPTURE, BodyData, ObserverBase, ProtocolError, RequestEnd,
                     RequestHead, ResponseEnd, ResponseHead)
from .h1heads import MAX_HEAD, MAX_HEADERS, HttpError
from .h1sides import RequestSide, ResponseSide, _Pending

__all__ = [
    "HttpError", "Http1Observer", "RequestHead", "RequestEnd", "ResponseHead",
    "ResponseEnd", "BodyData", "ProtocolError", "Event", "ObserverBase", "MAX_HEAD",
    "MAX_HEADERS", "DEFAULT_MAX_CAPTURE",
]


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
        self._req = RequestSide(self)
        self._resp = ResponseSide(self)
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

    def server_closing(self) -> bool:
        """A response that ends the connection (``Connection: close``, HTTP/1.0, a
        request that said close) is complete: the server's FIN follows."""
        resp = self._resp
        return resp.reader is resp.closed and not (self.failed or self.upgraded)

    protocol_errors = (HttpError,)

    def _abort(self, now: float) -> None:
        # A body cut short by the error is still reported, as far as it was read
        # (incomplete: the reporter gives it the error's name).
        self._req.eof(now)
        self._resp.eof(now)

    # -- between the two sides --------------------------------------------

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
