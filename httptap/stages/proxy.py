"""The proxy stage: real upstream sockets for the command's connections (uvloop).

For every ``FlowOpened`` from the tcp stage it connects to the original destination from
the host's network namespace, and answers ``FlowAccept`` (the command's handshake then
completes) or ``FlowRefuse`` (the command sees a reset, or a timeout). Then bytes relay
both ways, half-closes and resets pass through.

Each TCP flow is a pure :class:`~httptap.flow.core.FlowCore` (what happens on the
connection: TLS interception, HTTP decoding, flow control) driven by a
:class:`~httptap.stages.relay.Relay` (its upstream socket); this module routes the tcp
stage's messages to relays and batches what they send to the rings.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import time

from ..plumbing import messages
from ..flow.commands import FlowSettings, endpoint
from ..flow.core import FlowCore
from ..run.namespace import HOST_LOOPBACK_ALIAS
from .base import RETRY_FLUSH, SpaceWatch, StageContext
from .datagrams import DNS_PORT, Datagrams, DnsOverTcp
from .relay import Relay

CONNECT_TIMEOUT = 20.0       # then the command's connect times out (we stay silent)
# The sink is woken at most this often (events wait at most this long): each wake-up
# costs the sink a poll, an eventfd read and a write per output, on the cores the
# command's traffic needs. 5 ms is still far below what a reader can see.
SINK_WAKE_DELAY = 0.005
# The backlog of records for the sink (what did not fit in its ring) is bounded: above
# HIGH the proxy stops reading upstream and stops taking the tcp stage's messages (so no
# credit goes back and the command's windows close), until the backlog is under LOW.
SINK_BACKLOG_HIGH = 8 << 20
SINK_BACKLOG_LOW = 2 << 20


class UpstreamTls:
    """Client contexts for upstream TLS, one per ALPN list (ALPN is set per context).

    Trust: the host's default store plus, if set in httptap's own environment,
    ``SSL_CERT_FILE`` (OpenSSL alone would use it *instead of* the system store)."""

    def __init__(self, insecure: bool, keylog: str | None) -> None:
        self.insecure = insecure
        self.keylog = keylog
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}

    def context(self, alpn: tuple[str, ...]) -> ssl.SSLContext:
        context = self._contexts.get(alpn)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                paths = ssl.get_default_verify_paths()
                for cafile, capath in ((paths.openssl_cafile, None), (None, paths.openssl_capath)):
                    try:
                        context.load_verify_locations(cafile=cafile, capath=capath)
                    except (OSError, ssl.SSLError):
                        pass
                extra = os.environ.get("SSL_CERT_FILE")
                if extra:
                    try:
                        context.load_verify_locations(cafile=extra)
                    except (OSError, ssl.SSLError):
                        pass
            if alpn:
                context.set_alpn_protocols(list(alpn))
            if self.keylog:
                context.keylog_filename = self.keylog
            self._contexts[alpn] = context
        return context


class Proxy:
    def __init__(self, ctx: StageContext, loop: asyncio.AbstractEventLoop) -> None:
        self.ctx = ctx
        self.loop = loop
        (self.from_tcp,) = ctx.inboxes()
        self.to_tcp, self.to_sink = ctx.outboxes()
        self.relays: dict[int, Relay | DnsOverTcp] = {}
        # Upstream connects under way, oldest first, each with its deadline (loop time).
        # One timer for them all (connect_sweep), armed for the oldest: a timer per
        # connect (asyncio.timeout) costs more than the rest of _connect's Python.
        self.connecting: dict[int, tuple[asyncio.Task[None], float]] = {}
        self.connect_sweep: asyncio.TimerHandle | None = None
        self.timed_out: set[int] = set()  # flows whose connect the sweep cancelled
        self.flush_scheduled = False
        self.flush_late = False  # the next flush waits for one more poll (flush_after_poll)
        self.retry: asyncio.TimerHandle | None = None  # the next flush of a full ring
        self.space = SpaceWatch([self.to_tcp, self.to_sink], loop.add_reader,
                                loop.remove_reader, self._on_space)
        self.sink_wake: asyncio.TimerHandle | None = None
        self.sink_woken = float("-inf")  # loop time of the sink's last wake-up
        # Relays holding a request until the sink's next wake-up (Relay.report), by flow.
        self.holding: dict[int, Relay] = {}
        self.done = loop.create_future()
        config = ctx.config
        self.capture_bodies = config.body or any(s.startswith("har:") for s in config.sinks)
        # Exchange ids unique across proxy shards: the shard number in the high bits.
        self._exchange_ids = iter(range((ctx.extra.get("shard", 0) << 40) + 1, 1 << 62))
        self.ca = ctx.extra["ca"]
        self.upstream_tls = UpstreamTls(config.insecure, config.keylog)
        self.flow_settings = FlowSettings(
            http_ports=config.http_ports, https_ports=config.https_ports,
            capture_bodies=self.capture_bodies, stream_bodies=config.body,
            max_body_size=config.max_body_size,
            verbose=config.verbose,
            # (the iterator's own __next__: no Python frame per exchange, as a method has)
            new_exchange_id=self._exchange_ids.__next__, upstream_context=self.upstream_tls.context,
            server_context=self.ca.server_context, no_intercept=config.no_intercept)
        self.output_blocked = False  # see stages.relay.FlowLink
        self.tcp_blocked = False     # the ring to the tcp stage is full (see _flush)
        self.datagrams = Datagrams(self)

    # --- rings -----------------------------------------------------------------------------

    def send_tcp(self, msg: messages.Msg) -> None:
        self.to_tcp.send(msg)
        self._schedule_flush()

    def send_tcp_now(self, msg: messages.Msg) -> None:
        """``send_tcp``, flushed at once unless a flush is already due this turn of the
        loop. For FlowAccept: it resumes a task of its own (a connect completing), and a
        flush scheduled from there costs the loop one more turn (an epoll_wait and a
        handle) before the command's handshake can complete."""
        self.to_tcp.send(msg)
        if self.flush_scheduled or not self.to_tcp.flush():
            self._schedule_flush()

    def send_tcp_data(self, flow: int, data: bytes | memoryview) -> None:
        """FlowData towards the command, the payload copied once (``Outbox.send_data``)."""
        if not self.to_tcp.send_data(flow, data) and not self.tcp_blocked:
            # The ring is full: stop reading upstream now, not at the flush (libuv reads
            # a socket up to 32 times in a row, each read waiting here copied). The
            # flush reads on once the ring has taken what waits.
            self.tcp_blocked = True
            self._update_reading()
        self._schedule_flush()

    def reserve_data(self, flow: int, size: int) -> memoryview | None:
        """Room in the ring to the tcp stage to read a flow's bytes into (``Outbox``)."""
        return self.to_tcp.reserve_data(flow, size)

    def filled_data(self, nbytes: int) -> memoryview:
        return self.to_tcp.filled_data(nbytes)

    def end_reserved(self) -> None:
        self.to_tcp.end_reserved()
        self._schedule_flush()  # (what waited meanwhile; the consumer is woken there)

    def send_sink(self, msg: messages.Msg) -> None:
        self.to_sink.send(msg)
        if self.to_sink.pending_bytes > SINK_BACKLOG_HIGH and not self.output_blocked:
            self._check_output_backlog()  # now, not at the next retry: the bound is a bound
        self._schedule_flush()

    def hold_request(self, relay: Relay) -> None:
        """``relay`` holds a request for the sink: it goes at the next wake-up, at the
        latest (with its response, if that came first)."""
        self.holding[relay.flow] = relay
        self._schedule_flush()

    def _release_held(self) -> None:
        holding = self.holding
        if holding:
            self.holding = {}
            for relay in holding.values():
                relay.release()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def flush_after_poll(self) -> None:
        """Let the next flush wait for one more turn of the loop, whose poll (at once:
        a callback is ready) takes what the sockets hold now: a server's FIN right behind
        its last response then goes to the tcp stage with it (AwaitUpstreamEof)."""
        self.flush_late = True
        self._schedule_flush()

    def _flush(self) -> None:
        if self.flush_late:
            self.flush_late = False
            self.loop.call_soon(self._flush)  # (flush_scheduled stays True meanwhile)
            return
        if (self.holding and self.sink_wake is None
                and self.loop.time() >= self.sink_woken + SINK_WAKE_DELAY):
            self._release_held()  # (before the flag is cleared: no flush of their own)
        self.flush_scheduled = False
        # The sink is woken at most once every SINK_WAKE_DELAY, not for every batch: the
        # first events go out at once (output keeps its place among the command's own),
        # and under load one wake-up carries dozens of events (keep-alive: one eventfd
        # write and one sink wake-up less per request).
        to_tcp = self.to_tcp.flush()
        flushed = to_tcp & self.to_sink.flush(signal=False)
        self.space.watch(not flushed)
        if to_tcp == self.tcp_blocked:
            # The ring to the tcp stage is full (it holds what the command has yet to
            # acknowledge): stop reading upstream until it takes what waits. Bytes read
            # meanwhile could only wait here, copied once more (the ring, not the credit
            # alone, bounds what the proxy holds for the tcp stage).
            self.tcp_blocked = not to_tcp
            self._update_reading()
        if self.output_blocked or self.to_sink.pending_bytes > SINK_BACKLOG_HIGH:
            self._check_output_backlog()
        if (self.to_sink.unsignaled or self.holding) and self.sink_wake is None:
            due = self.sink_woken + SINK_WAKE_DELAY
            if self.loop.time() >= due:
                self._wake_sink()
            else:
                self.sink_wake = self.loop.call_at(due, self._wake_sink)
        if flushed:
            return
        # A ring is full: flush again when its consumer frees space (self.space), or
        # shortly anyway (the space wake-up is best effort, see httptap.plumbing.ring).
        self.flush_scheduled = True
        self.retry = self.loop.call_later(RETRY_FLUSH, self._on_space)

    def _check_output_backlog(self) -> None:
        """Stop taking work while the sink's backlog is over SINK_BACKLOG_HIGH; take it up
        again under SINK_BACKLOG_LOW. A slow reader of httptap's output then slows the
        command, as a full pipe slows any program, and the proxy's memory stays bounded."""
        backlog = self.to_sink.pending_bytes
        if not self.output_blocked and backlog > SINK_BACKLOG_HIGH:
            self.output_blocked = True
            self.loop.remove_reader(self.from_tcp.fd)
        elif self.output_blocked and backlog <= SINK_BACKLOG_LOW:
            self.output_blocked = False
            self.loop.add_reader(self.from_tcp.fd, self.on_input)
            self.loop.call_soon(self.on_input)  # what arrived meanwhile (its wake-up was read)
        else:
            return
        self._update_reading()

    def _update_reading(self) -> None:
        for relay in self.relays.values():
            if isinstance(relay, Relay):
                relay.update_reading()

    def _wake_sink(self) -> None:
        self.sink_wake = None
        if self.holding:
            self._release_held()
            if not self.to_sink.flush(signal=False):
                self._schedule_flush()  # the ring is full: the flush takes it from here
        self.sink_woken = self.loop.time()
        self.to_sink.wake()

    def _on_space(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self._flush()

    def on_input(self) -> None:
        relays = self.relays
        for msg in self.from_tcp.receive():
            if type(msg) is messages.FlowData:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_data(msg.data)
            elif type(msg) is messages.FlowAcked:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_acked(msg.count)
            elif type(msg) is messages.DatagramIn:
                self.datagrams.on_datagram(msg)
            elif type(msg) is messages.FlowOpened:
                if msg.dport == DNS_PORT:  # DNS over TCP, to any address: answered here
                    relays[msg.flow] = DnsOverTcp(self.datagrams, msg)
                    self.send_tcp(messages.FlowAccept(msg.flow))
                else:
                    self._start_connect(msg)
            elif type(msg) is messages.Notice:
                self.send_sink(msg)  # --dump-tcp lines from the tcp stage
            elif type(msg) is messages.FlowEof:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_eof()
            elif type(msg) is messages.FlowReset:
                self._end(msg.flow, reset=True)
            elif type(msg) is messages.FlowClosed:
                self._end(msg.flow, reset=False)
            elif type(msg) is messages.Drain:
                self._drain()

    # --- connections -----------------------------------------------------------------------

    def _start_connect(self, opened: messages.FlowOpened) -> None:
        deadline = self.loop.time() + CONNECT_TIMEOUT
        self.connecting[opened.flow] = (self.loop.create_task(self._connect(opened)), deadline)
        if self.connect_sweep is None:
            self.connect_sweep = self.loop.call_at(deadline, self._sweep_connects)

    def _sweep_connects(self) -> None:
        """Cancel the connects past their deadline; re-arm for the oldest one left."""
        self.connect_sweep = None
        now = self.loop.time()
        for flow, (task, deadline) in list(self.connecting.items()):
            if deadline > now:
                self.connect_sweep = self.loop.call_at(deadline, self._sweep_connects)
                return
            del self.connecting[flow]
            if task.cancel():
                self.timed_out.add(flow)  # (_connect tells a timeout from _end's cancel)

    async def _connect(self, opened: messages.FlowOpened) -> None:
        # host.httptap.local: the host's loopback, reachable from inside the namespace.
        host = "127.0.0.1" if opened.dst == HOST_LOOPBACK_ALIAS else opened.dst
        relay = Relay(self, FlowCore(self.flow_settings, opened, time.time()))
        try:
            await self.loop.create_connection(lambda: relay, host, opened.dport)
        except asyncio.CancelledError:
            if opened.flow not in self.timed_out:
                raise  # the flow ended (_end) or the proxy drains
            self.timed_out.discard(opened.flow)
            self.send_tcp(messages.FlowRefuse(opened.flow, "upstream connect timed out", reset=False))
            # -v only: the command sees its own timeout, and a SYN flood would print a
            # line for every unanswered SYN.
            self.notice(f"connect to {endpoint(opened.dst, opened.dport)} timed out",
                        verbose_only=True)
            return
        except OSError as exc:
            # Refused or unreachable: the command sees "connection refused" at once.
            self.send_tcp(messages.FlowRefuse(opened.flow, exc.strerror or str(exc)))
            if exc.errno != errno.ECONNREFUSED:
                self.notice(f"connect to {endpoint(opened.dst, opened.dport)} failed: "
                            f"{exc.strerror or exc}", verbose_only=True)
            return
        finally:
            self.connecting.pop(opened.flow, None)
        self.relays[opened.flow] = relay
        self.send_tcp_now(messages.FlowAccept(opened.flow))

    def forget(self, flow: int) -> None:
        """The flow's core is done (FlowOver): what the tcp stage says of it later finds
        nothing here."""
        self.relays.pop(flow, None)

    def _end(self, flow: int, reset: bool) -> None:
        connecting = self.connecting.pop(flow, None)
        if connecting is not None:
            connecting[0].cancel()
        relay = self.relays.pop(flow, None)
        if relay is not None:
            relay.end(reset)

    def notice(self, text: str, level: str = "info", verbose_only: bool = False) -> None:
        if not verbose_only or self.ctx.config.verbose:
            self.send_sink(messages.Notice(level, text))

    def _drain(self) -> None:
        for task, _ in self.connecting.values():
            task.cancel()
        self.datagrams.close_all()
        for flow in list(self.relays):
            self._end(flow, reset=False)
        self.to_tcp.flush()
        self._release_held()
        self.to_sink.send(messages.Drain())
        self.to_sink.flush_blocking(idle_timeout=None)  # a slow reader gets every line
        if not self.done.done():
            self.done.set_result(None)


def run(ctx: StageContext) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        proxy = Proxy(ctx, loop)
        loop.add_reader(proxy.from_tcp.fd, proxy.on_input)
        await proxy.done

    uvloop.run(main())
