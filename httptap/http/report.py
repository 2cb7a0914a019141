"""Turns one connection's HTTP observer events into the sink's messages (pure).

The flow core (``httptap.flow.core``) feeds a connection's bytes to an HTTP/1.x or HTTP/2
observer (:class:`~httptap.http.http1.Http1Observer`, :class:`~httptap.http.http2.Http2Observer`:
the same events) and their events to an :class:`ExchangeReporter`, which pairs requests
with responses (by their sequence number on the connection, or HTTP/2 stream id), builds
the URL the user sees and returns
``HttpRequest`` (when a request head is complete), ``BodyChunk`` (captured body bytes, as
the observer hands them on) and ``HttpResponse`` (when its response is complete) messages.

Bodies never travel inside one message: the observer's ``BodyData`` become ``BodyChunk``
messages of at most ``messages.BODY_CHUNK`` bytes (small pieces that arrive together are
joined up to that size, large ones split), all before the ``HttpResponse`` of their
exchange. Nothing is held between calls.

Errors are reported when they happen, as the exchange's response with ``error`` set:

- an HTTP/2 stream reset (:class:`~httptap.http.h2reset.StreamReset`) ends its exchange at
  once, "stream reset by the client (CANCEL)"; with the status when a response head had
  been seen, else without one. Nothing about a reset stream is kept.
- a protocol error (:class:`~httptap.http.http1.ProtocolError`: the observer gives up on the
  connection) ends every open exchange with the error's name ("invalid chunked
  encoding", "response is not HTTP"); a request whose head failed ("request head over
  64 KiB", "too many headers", "invalid Content-Length") is reported first, so it shows
  as an ``http`` record with that error rather than as a plain TCP connection.

The URL (SPEC, "Terminal output"): scheme, the request's Host (else the destination
address), the port when it is not the scheme's default, and the request target. An
absolute-form target (``GET http://x/ HTTP/1.1``, as sent to proxies) is used as it is;
a CONNECT shows its authority-form target (``host:443``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..plumbing import messages
from .h2reset import StreamReset
from .headers import header
from .events import BodyData, ProtocolError, RequestEnd, RequestHead, ResponseEnd, ResponseHead

DEFAULT_PORTS = {"http": 80, "https": 443}


def build_url(scheme: str, host_header: str | None, server_host: str, server_port: int,
              target: str) -> str:
    if target.startswith(("http://", "https://")):
        return target
    if host_header:
        authority = host_header.strip()
    else:
        host = f"[{server_host}]" if ":" in server_host else server_host
        authority = host if server_port == DEFAULT_PORTS.get(scheme) else f"{host}:{server_port}"
    if target == "*" or not target.startswith("/"):
        target = "/" + target if target != "*" else ""
    return f"{scheme}://{authority}{target}"


def streams(method: str, head: ResponseHead) -> bool:
    """Whether a response's body is a stream worth printing as it arrives: server-sent
    events, or a body without a declared length (chunked, or until the close), as long
    polls and progress feeds are. A HEAD, a 1xx, 204 or 304 has no body at all."""
    if method == "HEAD" or head.status in (204, 304) or head.status < 200:
        return False
    ctype = (header(head.headers, "content-type") or "").split(";")[0].strip().lower()
    return ctype == "text/event-stream" or header(head.headers, "content-length") is None


class _Exchange:
    __slots__ = ("id", "request", "request_end", "response_head", "reset", "reset_time")

    def __init__(self, exchange_id: int, request: messages.HttpRequest) -> None:
        self.id = exchange_id
        self.request = request
        self.request_end: RequestEnd | None = None
        self.response_head: ResponseHead | None = None
        self.reset = ""  # why the stream was reset, once it was
        self.reset_time = 0.0


class ExchangeReporter:
    """Pairs one connection's requests and responses; see the module docstring."""

    def __init__(self, *, scheme: str, server_host: str, server_port: int, client: str,
                 server: str, new_id: Callable[[], int], tls_sni: str = "",
                 tls_alpn: str = "", stream_heads: bool = False) -> None:
        self.scheme = scheme
        self.server_host = server_host
        self.server_port = server_port
        self.client = client
        self.server = server
        self.new_id = new_id
        self.tls_sni = tls_sni
        self.tls_alpn = tls_alpn
        self.open: dict[int, _Exchange] = {}
        self.exchanges = 0  # requests seen on this connection
        self.stream_heads = stream_heads  # --body: HttpResponseHead for streamed bodies
        self.connects: dict[int, tuple[messages.HttpRequest, messages.HttpResponse]] = {}

    def tunnel(self, seq: int) -> tuple[messages.HttpRequest, messages.HttpResponse] | None:
        """The request and response of the CONNECT answered as ``seq``, once (for an
        HTTP/2 extended CONNECT whose stream now carries a WebSocket)."""
        return self.connects.pop(seq, None)

    def adopt(self, seq: int, request: messages.HttpRequest) -> None:
        """Answer ``request``, reported already on another reporter, with the response
        that comes as ``seq``: an HTTP/1.1 request upgraded to h2c is answered on HTTP/2
        stream 1, under the same exchange id."""
        self.open[seq] = _Exchange(request.exchange, request)
        self.exchanges += 1

    def on_events(self, events: list[Any]) -> list[messages.Msg]:
        out: list[messages.Msg] = []
        # Body bytes of one side of one exchange (body_key: exchange id, request?) not yet
        # in a message.
        body_key = (0, False)
        body: list[bytes] = []
        body_size = 0
        reset: list[tuple[int, _Exchange]] = []
        failure: ProtocolError | None = None
        for event in events:
            kind = type(event)
            if kind is BodyData:
                exchange = self.open.get(event.seq)
                if exchange is None:
                    continue
                key = (exchange.id, event.request)
                if key != body_key or body_size + len(event.data) > messages.BODY_CHUNK:
                    if body:
                        _chunks(out, body_key, body)
                    body_key, body, body_size = key, [], 0
                body.append(event.data)
                body_size += len(event.data)
                continue
            if body:
                _chunks(out, body_key, body)
                body, body_size = [], 0
            if kind is RequestHead:
                out.append(self._request(event))
            elif kind is RequestEnd:
                exchange = self.open.get(event.seq)
                if exchange is not None:
                    exchange.request_end = event
            elif kind is ResponseHead:
                exchange = self.open.get(event.seq)
                if exchange is not None and not event.informational:
                    exchange.response_head = event
                    if self.stream_heads and streams(exchange.request.method, event):
                        out.append(messages.HttpResponseHead(
                            exchange=exchange.id, time=event.time, status=event.status,
                            reason=event.reason, version=event.version, headers=event.headers))
            elif kind is ResponseEnd:
                exchange = self.open.pop(event.seq, None)
                if exchange is not None and exchange.response_head is not None:
                    error = exchange.reset
                    if not error and not event.complete:
                        error = failure.error if failure is not None else \
                            "the server closed before the body was complete"
                    response = self._response(exchange, event, error)
                    out.append(response)
                    if exchange.request.method == "CONNECT":  # (see tunnel())
                        self.connects[event.seq] = (exchange.request, response)
            elif kind is StreamReset:
                exchange = self.open.get(event.seq)
                if exchange is not None and not exchange.reset:
                    who = "client" if event.by_client else "server"
                    exchange.reset = f"stream reset by the {who} ({event.name})"
                    exchange.reset_time = event.time
                    reset.append((event.seq, exchange))
            elif kind is ProtocolError:
                if event.request is not None and event.request.seq not in self.open:
                    out.append(self._request(event.request))
                failure = event
        if body:
            _chunks(out, body_key, body)
        # The incomplete RequestEnd/ResponseEnd of a reset stream, or of a connection the
        # observer gave up on, follow the StreamReset or ProtocolError in the same batch:
        # a response whose head had been seen was reported above, with the error. The
        # rest end here, without a status.
        for seq, exchange in reset:
            if self.open.get(seq) is exchange:
                del self.open[seq]
                out.append(self._failed(exchange, exchange.reset_time, exchange.reset))
        if failure is not None:
            out += self.finish(failure.time, failure.error)
        return out

    def _request(self, head: RequestHead) -> messages.HttpRequest:
        if head.method == "CONNECT" and not head.target.startswith("/"):
            # authority-form: the target is host:port (an extended CONNECT, RFC 8441,
            # has a path: its URL is built as any other)
            url = head.target
        else:
            url = build_url(self.scheme, header(head.headers, "host"), self.server_host,
                            self.server_port, head.target)
        request = messages.HttpRequest(
            exchange=self.new_id(), time=head.time, method=head.method, url=url,
            version=head.version, headers=head.headers, client=self.client,
            server=self.server, tls_sni=self.tls_sni, tls_alpn=self.tls_alpn)
        self.open[head.seq] = _Exchange(request.exchange, request)
        self.exchanges += 1
        return request

    def _response(self, exchange: _Exchange, end: ResponseEnd,
                  error: str) -> messages.HttpResponse:
        head = exchange.response_head
        assert head is not None
        req_end = exchange.request_end
        return messages.HttpResponse(
            exchange=exchange.id, time=end.time, status=head.status, reason=head.reason,
            version=head.version, headers=head.headers,
            request_body_size=req_end.decoded_size if req_end else 0,
            body_size=end.body_size, decoded_size=end.decoded_size,
            request_headers_done=exchange.request.time,
            request_done=req_end.time if req_end else 0.0,
            response_started=head.time,
            error=error,
            request_body_truncated=req_end.truncated if req_end else False,
            body_truncated=end.truncated,
            trailers=end.trailers,
        )

    def finish(self, now: float, reason: str) -> list[messages.Msg]:
        """The connection ended: every request still waiting gets an error response."""
        out: list[messages.Msg] = [self._failed(exchange, now, reason)
                                   for exchange in self.open.values()]
        self.open.clear()
        return out

    @staticmethod
    def _failed(exchange: _Exchange, now: float, reason: str) -> messages.HttpResponse:
        """The end of an exchange that got no (complete) response head."""
        req_end = exchange.request_end
        return messages.HttpResponse(
            exchange=exchange.id, time=now, status=0, reason="", version="", headers=[],
            request_body_size=req_end.decoded_size if req_end else 0,
            body_size=0, decoded_size=0, request_headers_done=exchange.request.time,
            request_done=req_end.time if req_end else 0.0, error=reason,
            request_body_truncated=req_end.truncated if req_end else False)


def _chunks(out: list[messages.Msg], key: tuple[int, bool], pieces: list[bytes]) -> None:
    """Append ``pieces`` (one side of one exchange) as BodyChunk messages of at most
    ``BODY_CHUNK`` bytes each."""
    exchange, request = key
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    step = messages.BODY_CHUNK
    if len(data) <= step:
        out.append(messages.BodyChunk(exchange, request, data))
        return
    view = memoryview(data)
    for start in range(0, len(data), step):
        out.append(messages.BodyChunk(exchange, request, bytes(view[start:start + step])))
