"""Turns one WebSocket connection's observer events into the sink's messages (pure).

After an HTTP/1.1 exchange switched to WebSocket (a ``101`` to a request that asked for
``Upgrade: websocket``), the per-flow core (``flow.core``) asks :func:`start` for a
:class:`WsReporter`, feeds it both directions, and sends on what it returns: one
``WsMessage`` per message (tagged with the 101 exchange's id and its ``ws://`` or
``wss://`` URL) and, at the end or when decoding stops, one ``WsEnd`` with the ping and
pong counts. Like ``report`` it does no I/O.
"""

from __future__ import annotations

from ..plumbing import messages
from .headers import header
from .websocket import Deflate, WebSocketError, WebSocketObserver, WsEvent, parse_deflate


def is_websocket(request: messages.HttpRequest, response: messages.HttpResponse) -> bool:
    """A 101 that accepted a request's ``Upgrade: websocket`` (RFC 6455 §4)."""
    if response.status != 101:
        return False
    asked = (header(request.headers, "upgrade") or "").lower()
    given = (header(response.headers, "upgrade") or "").lower()
    return "websocket" in [t.strip() for t in asked.split(",")] and given.strip() == "websocket"


def ws_url(http_url: str) -> str:
    """``http://h/p`` -> ``ws://h/p``, ``https://`` -> ``wss://``."""
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://"):]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://"):]
    return http_url


class WsReporter:
    """One WebSocket connection: its observer and what the sink hears about it."""

    def __init__(self, exchange: int, url: str, deflate: Deflate | None, keep_data: bool) -> None:
        self.exchange = exchange
        self.url = url
        self.observer = WebSocketObserver(deflate, keep_data=keep_data)
        self.ended = False

    def data(self, from_client: bool, data: bytes | memoryview,
             now: float) -> list[messages.Msg]:
        """Bytes one side sent; the messages they completed (and ``WsEnd`` if the
        observer gave up on them)."""
        observer = self.observer
        if self.ended:
            return []
        if from_client:
            observer.client_data(data, now)
        else:
            observer.server_data(data, now)
        out: list[messages.Msg] = [self._message(e) for e in observer.events()]
        if observer.failed:
            out += self.end(now)
        return out

    def end(self, now: float) -> list[messages.Msg]:
        """The connection is over (or decoding stopped): the summary, once."""
        if self.ended:
            return []
        self.ended = True
        client, server = self.observer.client, self.observer.server
        return [messages.WsEnd(
            exchange=self.exchange, time=now, url=self.url,
            messages_sent=client.messages, messages_received=server.messages,
            pings_sent=client.pings, pongs_sent=client.pongs,
            pings_received=server.pings, pongs_received=server.pongs,
            error=self.observer.error or "")]

    def _message(self, event: WsEvent) -> messages.WsMessage:
        return messages.WsMessage(
            exchange=self.exchange, time=event.time, url=self.url,
            from_client=event.from_client, opcode=event.opcode, size=event.size,
            data=event.data, truncated=event.truncated, compressed=event.compressed,
            close_code=event.close_code, close_reason=event.close_reason)


def start(request: messages.HttpRequest, response: messages.HttpResponse, keep_data: bool,
          first_client: bytes | None, first_server: bytes,
          now: float) -> tuple[WsReporter | None, list[messages.Msg]]:
    """A reporter for the WebSocket that ``response`` (a 101) opened, fed the first bytes
    each way that came with the switch (``first_client`` None: some were not kept, so the
    client's side cannot be followed). None when the extensions cannot be followed."""
    extensions = [v for n, v in response.headers if n.lower() == "sec-websocket-extensions"]
    url = ws_url(request.url)
    try:
        deflate = parse_deflate(extensions)
    except WebSocketError as exc:
        return None, [messages.WsEnd(exchange=response.exchange, time=now, url=url,
                                     messages_sent=0, messages_received=0, error=str(exc))]
    reporter = WsReporter(response.exchange, url, deflate, keep_data)
    out: list[messages.Msg] = []
    if first_client is None:
        reporter.observer.failed = True
        reporter.observer.error = "too much from the client before the switch"
        return reporter, reporter.end(now)
    if first_client:
        out += reporter.data(True, first_client, now)
    if first_server:
        out += reporter.data(False, first_server, now)
    return reporter, out
