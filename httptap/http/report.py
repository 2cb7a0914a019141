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

The URL (SPEC, "Terminal output"): scheme, the request's Host (else the destination
address), the port when it is not the scheme's default, and the request target. An
absolute-form target (``GET http://x/ HTTP/1.1``, as sent to proxies) is used as it is;
a CONNECT shows its authority-form target (``host:443``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..plumbing import messages
from .headers import header
from .http1 import BodyData, RequestEnd, RequestHead, ResponseEnd, ResponseHead

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
    __slots__ = ("id", "request", "request_end", "response_head")

    def __init__(self, exchange_id: int, request: messages.HttpRequest) -> None:
        self.id = exchange_id
        self.request = request
        self.request_end: RequestEnd | None = None
        self.response_head: ResponseHead | None = None


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
                if event.method == "CONNECT":  # authority-form: the target is host:port
                    url = event.target
                else:
                    url = build_url(self.scheme, header(event.headers, "host"),
                                    self.server_host, self.server_port, event.target)
                request = messages.HttpRequest(
                    exchange=self.new_id(), time=event.time, method=event.method, url=url,
                    version=event.version, headers=event.headers, client=self.client,
                    server=self.server, tls_sni=self.tls_sni, tls_alpn=self.tls_alpn)
                self.open[event.seq] = _Exchange(request.exchange, request)
                self.exchanges += 1
                out.append(request)
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
                    out.append(self._response(exchange, event))
        if body:
            _chunks(out, body_key, body)
        return out

    def _response(self, exchange: _Exchange, end: ResponseEnd) -> messages.HttpResponse:
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
            error="" if end.complete else "the server closed before the body was complete",
            request_body_truncated=req_end.truncated if req_end else False,
            body_truncated=end.truncated,
            trailers=end.trailers,
        )

    def finish(self, now: float, reason: str) -> list[messages.Msg]:
        """The connection ended: every request still waiting gets an error response."""
        out: list[messages.Msg] = []
        for exchange in self.open.values():
            req_end = exchange.request_end
            out.append(messages.HttpResponse(
                exchange=exchange.id, time=now, status=0, reason="", version="", headers=[],
                request_body_size=req_end.decoded_size if req_end else 0,
                body_size=0, decoded_size=0, request_headers_done=exchange.request.time,
                request_done=req_end.time if req_end else 0.0, error=reason,
                request_body_truncated=req_end.truncated if req_end else False))
        self.open.clear()
        return out


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
