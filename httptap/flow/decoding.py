"""What a flow's bytes mean: the HTTP decoding half of the per-flow core.

:class:`FlowDecoding` is the base of :class:`~httptap.flow.core.FlowCore`: it holds the
HTTP observer (HTTP/1 or HTTP/2) and the exchange reporter of a flow, and turns what they
see into ``Report`` commands on the core's queue. It follows the protocol switches an
exchange makes: ``Upgrade: h2c`` (decoding goes on as HTTP/2), ``Upgrade: websocket`` and
RFC 8441's extended CONNECT (WebSocket messages, ``http.wsreport``), and a CONNECT the
command's proxy accepted (the core's :meth:`FlowDecoding._enter_tunnel`: what follows is
sniffed anew). Pure, like the core: no socket, no clock.
"""
from __future__ import annotations

from typing import Any

from ..http import wsreport
from ..http.events import TunnelData, TunnelOpened
from ..http.http1 import Http1Observer
from ..http.report import ExchangeReporter
from ..http.wsreport import WsReporter, is_websocket
from ..plumbing import messages
from .commands import Command, FlowSettings, Report
from .sniff import is_h2c


class FlowDecoding:
    """The decoding state of one flow, and what it reports (see the module docstring)."""

    # Set by the core's __init__ (declared here for the methods below).
    settings: FlowSettings
    commands: list[Command]
    dst: str
    dport: int
    client: str
    server: str
    tls_sni = ""
    tls_alpn = ""
    # Class-level defaults, as in the core: most flows never set some of them.
    observer: Any = None  # Http1Observer | Http2Observer while decoding
    reporter: ExchangeReporter | None = None
    last_request: messages.HttpRequest | None = None  # (for CONNECT, WebSocket)
    websocket: WsReporter | None = None  # after a 101 to Upgrade: websocket
    # RFC 8441 (HTTP/2 flows only): stream -> its WebSocket; made with the first one.
    h2_websockets: dict[int, WsReporter] | None = None

    def _start_decoding(self, protocol: str, scheme: str) -> None:
        capture, limit = self.settings.capture_bodies, self.settings.max_body_size
        if protocol == "h2":
            from ..http.http2 import (
                Http2Observer,  # hpack and hyperframe: only when needed
            )

            self.observer = Http2Observer(capture_bodies=capture, max_capture=limit)
        else:
            self.observer = Http1Observer(capture_bodies=capture, max_capture=limit)
        self.reporter = ExchangeReporter(
            scheme=scheme, server_host=self.dst, server_port=self.dport, client=self.client,
            server=self.server, new_id=self.settings.new_exchange_id, tls_sni=self.tls_sni,
            tls_alpn=self.tls_alpn, stream_heads=self.settings.stream_bodies)

    def _observe(self, from_command: bool, data: bytes | memoryview, now: float) -> None:
        observer = self.observer
        if observer is None:
            if self.websocket is not None and data:
                self._observe_websocket(from_command, data, now)
            return
        if not data:
            return
        if from_command:
            observer.client_data(data, now)
        else:
            observer.server_data(data, now)
        self._report(now)

    def _report(self, now: float) -> None:
        observer = self.observer
        assert observer is not None and self.reporter is not None
        events = observer.events()
        switching: messages.HttpResponse | None = None
        if events:  # (most calls: a body chunk not captured, an EOF after the end)
            for msg in self.reporter.on_events(events):
                if type(msg) is messages.HttpRequest:
                    self.last_request = msg
                elif type(msg) is messages.HttpResponse and msg.status == 101:
                    switching = msg
                    if is_h2c(self.last_request, msg):
                        continue  # the request's real response comes in HTTP/2, on stream 1
                self.commands.append(Report(msg))
            if observer.tunnels:
                self._tunnels(events, now)
        if observer.failed or observer.upgraded:
            self.observer = None  # not HTTP after all, or switched: no more HTTP decoding
            request = self.last_request
            if observer.upgraded and request is not None and request.method == "CONNECT":
                self._enter_tunnel(request.url)
            elif (switching is not None and request is not None
                  and isinstance(observer, Http1Observer)):
                if is_h2c(request, switching):
                    self._start_h2c(observer, request, now)
                elif is_websocket(request, switching):
                    self._start_websocket(observer, request, switching, now)

    def _tunnels(self, events: list[Any], now: float) -> None:
        """WebSockets over HTTP/2 (RFC 8441): each accepted extended CONNECT stream gets a
        WebSocket reporter, and its DATA (``TunnelData``) goes to it, one stream each."""
        assert self.reporter is not None
        for event in events:
            kind = type(event)
            if kind is TunnelOpened and event.protocol == "websocket":
                exchange = self.reporter.tunnel(event.seq)
                if exchange is not None:
                    reporter, out = wsreport.start(*exchange, self.settings.capture_bodies,
                                                   b"", b"", now)
                    self._report_all(out)
                    if reporter is not None and not reporter.ended:
                        if self.h2_websockets is None:
                            self.h2_websockets = {}
                        self.h2_websockets[event.seq] = reporter
            elif kind is TunnelData and self.h2_websockets is not None:
                websocket = self.h2_websockets.get(event.seq)
                if websocket is not None:
                    self._report_all(websocket.data(event.from_client, event.data, event.time))
                    if websocket.ended:
                        del self.h2_websockets[event.seq]

    def _start_h2c(self, observer: Http1Observer, request: messages.HttpRequest,
                   now: float) -> None:
        """The exchange switched to HTTP/2 (``Upgrade: h2c``): decode on as HTTP/2, the
        upgraded request answered on stream 1 under its own exchange id."""
        assert self.reporter is not None
        first_client, first_server = observer.switched_bytes()
        self._start_decoding("h2", self.reporter.scheme)
        assert self.reporter is not None and self.observer is not None
        self.observer.upgraded_from_http1()
        self.reporter.adopt(1, request)
        if first_client:  # (sent while the switch was pending: before the 101 arrived)
            self.observer.client_data(first_client, now)
        if first_server:
            self.observer.server_data(first_server, now)
        self._report(now)

    def _start_websocket(self, observer: Http1Observer, request: messages.HttpRequest,
                         switching: messages.HttpResponse, now: float) -> None:
        """The exchange switched to WebSocket: its messages are decoded from here on, the
        bytes still relayed as they come (``websocket``, ``wsreport``)."""
        first_client, first_server = observer.switched_bytes()
        reporter, out = wsreport.start(request, switching, self.settings.capture_bodies,
                                       first_client, first_server, now)
        self.websocket = reporter if reporter is not None and not reporter.ended else None
        self._report_all(out)

    def _observe_websocket(self, from_command: bool, data: bytes | memoryview,
                           now: float) -> None:
        websocket = self.websocket
        assert websocket is not None
        self._report_all(websocket.data(from_command, data, now))
        if websocket.ended:
            self.websocket = None  # the peer broke the protocol: relay raw from here

    def _report_all(self, out: list[messages.Msg]) -> None:
        for msg in out:
            self.commands.append(Report(msg))
            if type(msg) is messages.WsEnd and msg.error:
                self._notice(f"WebSocket {msg.url}: not decoded further: {msg.error}",
                             verbose_only=True)

    def _notice(self, text: str, level: str = "info", verbose_only: bool = False) -> None:
        if not verbose_only or self.settings.verbose:
            self.commands.append(Report(messages.Notice(level, text)))

    def _enter_tunnel(self, target: str) -> None:
        """The command's proxy accepted a CONNECT to ``target``: the core takes it from
        here (what follows is sniffed anew)."""
        raise NotImplementedError
