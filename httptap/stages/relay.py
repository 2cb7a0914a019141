"""One proxied TCP connection: the upstream socket, and what is decoded on the way.

A :class:`Relay` is the asyncio protocol of the upstream socket and the receiver of the
command's stream messages for one flow. The first bytes the command sends decide what it
is (``mode``):

    sniff  --TLS ClientHello-->  hello --ClientHello complete--> tls-wait --upstream TLS up--> tls
       |                                                              `--upstream TLS failed--> refused
       +--HTTP port-->  http   (an HTTP/1.x observer sees a copy of every byte)
       `--otherwise-->  raw    (bytes relayed untouched; a tcp summary at the end)

In ``tls`` the command's TLS is terminated here (``httptap.tlsterm``, a certificate from
the run's CA for the name it asked for) and the upstream side is a real, verifying TLS
client with the same SNI and the command's ALPN list; the protocol the upstream chose is
the one the command gets, and decides the decoder (HTTP/1.1 or HTTP/2).

Flow control: bytes from the command are credited back (``FlowAcked``) once written
upstream; bytes towards the command count as in flight until the tcp stage credits them,
and reading upstream pauses above ``MAX_IN_FLIGHT``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from typing import TYPE_CHECKING, Any

from .. import messages
from ..ca import CAError
from ..clienthello import ClientHelloError, looks_like_tls, parse_client_hello
from ..http1 import Http1Observer
from ..httpreport import ExchangeReporter
from ..tlsterm import ServerTls, TlsError, refusing_context

if TYPE_CHECKING:
    from ..http2 import Http2Observer
    from .proxy import Proxy

MAX_IN_FLIGHT = 8 << 20      # upstream bytes not yet acknowledged by the command
WRITE_HIGH_WATER = 1 << 20   # upstream socket buffer before we stop returning credit
CREDIT_STEP = 64 << 10       # credit to the tcp stage goes back in steps of this much
MAX_HELLO = 64 << 10         # a ClientHello larger than this is not one we intercept
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TLS_HANDSHAKE_TIMEOUT = 15.0


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Every relay of a proxy reads upstream bytes into this one buffer (asyncio's
# BufferedProtocol; with TLS the transport decrypts straight into it). Safe to share:
# uvloop calls get_buffer and buffer_updated back to back, and nothing keeps a view of it
# past buffer_updated (messages are encoded, TLS records encrypted, observers copy what
# they keep). It saves copying each read into a new bytes object: for a bulk download,
# one copy of every byte fewer.
_READ_BUFFER = memoryview(bytearray(256 << 10))


class Relay(asyncio.BufferedProtocol):
    """One upstream connection and the flow it belongs to."""

    def __init__(self, proxy: Proxy, opened: messages.FlowOpened) -> None:
        self.proxy = proxy
        self.flow = opened.flow
        self.dst, self.dport = opened.dst, opened.dport
        self.client = _endpoint(opened.src, opened.sport)
        self.server = _endpoint(opened.dst, opened.dport)
        self.transport: asyncio.Transport | None = None
        self.started = time.time()
        self.bytes_up = 0       # command -> upstream (as the command sent them)
        self.bytes_down = 0     # upstream -> command
        self.in_flight = 0      # sent towards the command, not yet acknowledged by it
        self.owed_credit = 0    # command bytes written upstream, not yet credited back
        self.write_paused = False
        self.read_paused = False
        self.upstream_eof = False
        self.finished = False
        self.mode = "sniff"
        self.hello = bytearray()  # the command's first bytes while we decide / handshake
        self.tls: ServerTls | None = None
        self.tls_sni = ""
        self.tls_alpn = ""
        self.observer: Http1Observer | Http2Observer | None = None
        self.reporter: ExchangeReporter | None = None

    # --- upstream socket events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ_BUFFER[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.mode == "sniff":
            self.mode = "raw"  # the server spoke first: neither TLS nor HTTP
        wire: bytes | memoryview
        if self.tls is not None:
            try:
                wire = self.tls.send(data)
            except TlsError:
                self.command_reset()
                return
        else:
            wire = data
        self.bytes_down += len(wire)
        self._to_command(wire)
        self._observe(False, data)

    def _to_command(self, wire: bytes | memoryview) -> None:
        if not wire:
            return
        self.in_flight += len(wire)
        # A view of the read buffer is fine: it is copied (into the ring) before we return.
        self.proxy.send_tcp_data(self.flow, wire)
        if self.in_flight > MAX_IN_FLIGHT and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.upstream_eof = True
        if self.tls is not None:
            self._to_command(self.tls.close())
        self.proxy.send_tcp(messages.FlowEof(self.flow))
        if self.observer is not None:
            self.observer.server_eof(time.time())
            self._report()
        return True  # keep our writing half open: the command may still send

    def connection_lost(self, exc: Exception | None) -> None:
        if self.finished or self.mode in ("tls-wait", "refused"):
            return
        if exc is not None:
            self.proxy.send_tcp(messages.FlowReset(self.flow, f"upstream: {exc}"))
        elif not self.upstream_eof:
            if self.tls is not None:
                self._to_command(self.tls.close())
            self.proxy.send_tcp(messages.FlowEof(self.flow))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owed_credit:
            self.proxy.send_tcp(messages.FlowAcked(self.flow, self.owed_credit))
            self.owed_credit = 0

    # --- messages from the command's side ------------------------------------------------

    def command_data(self, data: bytes) -> None:
        if self.transport is None or self.finished:
            return
        self.bytes_up += len(data)
        mode = self.mode
        if mode == "sniff":
            mode = self._decide(data)
        if mode in ("hello", "tls-wait"):
            self.hello += data
            if mode == "hello":
                self._try_hello()
            return  # credited when the handshake consumes it
        if mode == "tls":
            assert self.tls is not None
            try:
                plain, back = self.tls.receive(data)
            except TlsError as exc:
                self._to_command(exc.pending)
                self.proxy.notice(f"TLS with the command failed ({self.tls_sni or self.dst}): {exc}",
                                  verbose_only=True)
                self.command_reset()
                return
            self._to_command(back)
            self._write_upstream(plain)
            self._credit(len(data))
            self._observe(True, plain)
            if self.tls.closed and not self.transport.is_closing():
                # close_notify: the command is done with this session. An asyncio TLS
                # transport cannot half-close, so close it (close_notify upstream once the
                # queue is written); our close_notify and FIN follow in connection_lost.
                # Waiting instead would hang a client that waits for ours (ssl.unwrap()).
                self.transport.close()
            return
        if mode == "refused":
            self._credit(len(data))
            return
        self._write_upstream(data)
        self._credit(len(data))
        self._observe(True, data)

    def _write_upstream(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _credit(self, count: int) -> None:
        # Returned in steps (see tcp.CREDIT_STEP), and not while the upstream socket is
        # over its high-water mark: the command's window then closes, as it should.
        self.owed_credit += count
        if not self.write_paused and self.owed_credit >= CREDIT_STEP:
            self.proxy.send_tcp(messages.FlowAcked(self.flow, self.owed_credit))
            self.owed_credit = 0

    def _decide(self, first: bytes) -> str:
        config = self.proxy.ctx.config
        if looks_like_tls(first[:3]) or (self.dport in config.https_ports and len(first) < 3):
            self.mode = "hello"
        elif self.dport in config.http_ports:
            self.mode = "http"
            if first.startswith(H2_PREFACE[:len(first)]) and len(first) >= 4:
                # HTTP/2 with prior knowledge (h2c): the preface instead of a request line.
                from ..http2 import Http2Observer

                self._start_decoding(Http2Observer(capture_bodies=self.proxy.capture_bodies), "http")
            else:
                self._start_decoding(Http1Observer(capture_bodies=self.proxy.capture_bodies), "http")
        else:
            self.mode = "raw"
        return self.mode

    def _start_decoding(self, observer: Http1Observer | Http2Observer, scheme: str) -> None:
        self.observer = observer
        self.reporter = ExchangeReporter(
            scheme=scheme, server_host=self.dst, server_port=self.dport, client=self.client,
            server=self.server, new_id=self.proxy.new_exchange_id, tls_sni=self.tls_sni,
            tls_alpn=self.tls_alpn)

    # --- TLS interception --------------------------------------------------------------------

    def _try_hello(self) -> None:
        try:
            hello = parse_client_hello(bytes(self.hello))
        except ClientHelloError:
            hello = None
            broken = True
        else:
            broken = False
            if hello is None and len(self.hello) <= MAX_HELLO:
                return  # wait for the rest of the ClientHello
        if broken or hello is None:
            # Not a ClientHello we understand: relay what we held, untouched, from now on.
            self.mode = "raw"
            data, self.hello = bytes(self.hello), bytearray()
            self._write_upstream(data)
            self._credit(len(data))
            return
        self.mode = "tls-wait"
        self.tls_sni = hello.sni or ""
        alpn = [p for p in hello.alpn if p.isascii() and p]
        self.proxy.loop.create_task(self._upstream_tls(hello.sni, alpn))

    async def _upstream_tls(self, sni: str | None, alpn: list[str]) -> None:
        name = sni or self.dst
        context = self.proxy.upstream_tls.context(tuple(alpn))
        transport = self.transport
        assert transport is not None
        try:
            tls_transport: Any = await self.proxy.loop.start_tls(
                transport, self, context, server_hostname=name,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            self._refuse(name, exc)
            return
        if self.finished:
            tls_transport.close()
            return
        self.transport = tls_transport  # type: ignore[assignment]
        ssl_object: Any = tls_transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.tls_alpn = chosen or ""
        try:
            leaf = self.proxy.ca.server_context(name, [chosen] if chosen else None)
        except CAError as exc:  # a name no certificate can hold (with --insecure, say)
            self._refuse(name, exc)
            return
        self.tls = ServerTls(leaf)
        self.mode = "tls"
        if chosen == "h2":
            from ..http2 import Http2Observer  # hpack and hyperframe: only when needed

            self._start_decoding(Http2Observer(capture_bodies=self.proxy.capture_bodies), "https")
        elif chosen in (None, "http/1.1", "http/1.0"):
            self._start_decoding(Http1Observer(capture_bodies=self.proxy.capture_bodies), "https")
        held, self.hello = bytes(self.hello), bytearray()
        self.bytes_up -= len(held)  # counted again by command_data
        self.command_data(held)

    def _refuse(self, name: str, exc: BaseException) -> None:
        """The upstream handshake failed: fail the command's with an alert, say why."""
        self.mode = "refused"
        verify = isinstance(exc, ssl.SSLCertVerificationError)
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        self.proxy.notice(f"TLS to {name} ({self.server}) failed: {reason}", level="error")
        alert = ssl.ALERT_DESCRIPTION_BAD_CERTIFICATE if verify else ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        try:
            ServerTls(refusing_context(alert)).receive(bytes(self.hello))
        except TlsError as err:
            self._to_command(err.pending)
        self._credit(len(self.hello))
        self.hello = bytearray()
        self.proxy.send_tcp(messages.FlowEof(self.flow))
        if self.transport is not None:
            self.transport.abort()

    # --- decoding ----------------------------------------------------------------------------

    def _observe(self, from_command: bool, data: bytes | memoryview) -> None:
        observer = self.observer
        if observer is None or not data:
            return
        if from_command:
            observer.client_data(data, time.time())  # type: ignore[arg-type]  # always bytes
        else:
            observer.server_data(data, time.time())
        self._report()

    def _report(self) -> None:
        observer = self.observer
        assert observer is not None and self.reporter is not None
        for msg in self.reporter.on_events(observer.events()):
            self.proxy.send_sink(msg)
        if observer.failed or getattr(observer, "upgraded", False):
            self.observer = None  # not HTTP after all, or a WebSocket: relay raw from now on

    # --- the end -----------------------------------------------------------------------------

    def command_acked(self, count: int) -> None:
        self.in_flight -= count
        if self.read_paused and self.in_flight <= MAX_IN_FLIGHT // 2 and self.transport:
            self.read_paused = False
            self.transport.resume_reading()

    def command_eof(self) -> None:
        if self.observer is not None:
            self.observer.client_eof(time.time())
            self._report()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.tls is None:
            if transport.can_write_eof():
                transport.write_eof()
        # Over TLS, a FIN without close_notify keeps the upstream open (the nearest thing
        # to a half-close we can offer) until the flow ends; close_notify: see command_data.

    def command_reset(self) -> None:
        self.finished = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if sock is not None:  # abort with RST, as the command did
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()

    def close(self) -> None:
        self.finished = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def final_report(self) -> list[messages.Msg]:
        """What the sink hears when the connection is over: errors for unanswered
        requests, or a tcp summary if nothing on it was HTTP."""
        if self.observer is not None:
            self.observer.client_eof(time.time())
            self.observer.server_eof(time.time())
            self._report()
        if self.reporter is not None and self.reporter.exchanges:
            return self.reporter.finish(time.time(), "the connection closed before a response")
        return [messages.TcpSummary(time=self.started, client=self.client, server=self.server,
                                    bytes_sent=self.bytes_up, bytes_received=self.bytes_down,
                                    duration=time.time() - self.started)]
