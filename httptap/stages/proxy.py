"""The proxy stage: real upstream sockets for the command's connections (uvloop).

For every ``FlowOpened`` from the tcp stage it connects to the original destination from
the host's network namespace, and answers ``FlowAccept`` (the command's handshake then
completes) or ``FlowRefuse`` (the command sees a reset, or a timeout). Then bytes relay
both ways, half-closes and resets pass through, and each finished connection is reported
to the sink as a ``TcpSummary``.

Flow control is credit-based across the ring: we return ``FlowAcked`` for bytes the
upstream socket has taken, and stop reading an upstream socket while more than
``MAX_IN_FLIGHT`` of its bytes wait for the command to acknowledge them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time

from .. import messages
from ..http1 import Http1Observer
from ..httpreport import ExchangeReporter
from .base import StageContext

CONNECT_TIMEOUT = 20.0       # then the command's connect times out (we stay silent)
MAX_IN_FLIGHT = 8 << 20      # upstream bytes not yet acknowledged by the command
WRITE_HIGH_WATER = 1 << 20   # upstream socket buffer before we stop returning credit
RETRY_FLUSH = 0.005

# host.httptap.local: the host's loopback, reachable from inside the namespace.
HOST_LOOPBACK_ALIAS = {"169.254.77.65": "127.0.0.1"}


class Relay(asyncio.Protocol):
    """One upstream connection and the flow it belongs to."""

    def __init__(self, proxy: Proxy, opened: messages.FlowOpened) -> None:
        self.proxy = proxy
        self.flow = opened.flow
        self.client = f"{opened.src}:{opened.sport}" if ":" not in opened.src else f"[{opened.src}]:{opened.sport}"
        self.server = f"{opened.dst}:{opened.dport}" if ":" not in opened.dst else f"[{opened.dst}]:{opened.dport}"
        self.transport: asyncio.Transport | None = None
        self.started = time.time()
        self.bytes_up = 0       # command -> upstream
        self.bytes_down = 0     # upstream -> command
        self.in_flight = 0      # sent towards the command, not yet acknowledged by it
        self.owed_credit = 0    # written upstream while the socket was over high water
        self.write_paused = False
        self.read_paused = False
        self.upstream_eof = False
        self.finished = False
        # HTTP decoding on --http ports: the observer sees a copy of every byte relayed.
        self.observer: Http1Observer | None = None
        self.reporter: ExchangeReporter | None = None
        if opened.dport in proxy.ctx.config.http_ports:
            self.observer = Http1Observer(capture_bodies=proxy.capture_bodies)
            self.reporter = ExchangeReporter(
                scheme="http", server_host=opened.dst, server_port=opened.dport,
                client=self.client, server=self.server, new_id=proxy.new_exchange_id)

    # --- upstream socket events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.in_flight += len(data)
        self.proxy.send_tcp(messages.FlowData(self.flow, data))
        if self.observer is not None:
            self.observer.server_data(data, time.time())
            self._report()
        if self.in_flight > MAX_IN_FLIGHT and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.upstream_eof = True
        self.proxy.send_tcp(messages.FlowEof(self.flow))
        if self.observer is not None:
            self.observer.server_eof(time.time())
            self._report()
        return True  # keep our writing half open: the command may still send

    def connection_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        if exc is not None:
            self.proxy.send_tcp(messages.FlowReset(self.flow, f"upstream: {exc}"))
        elif not self.upstream_eof:
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
        if self.transport is None or self.transport.is_closing():
            return
        self.bytes_up += len(data)
        self.transport.write(data)
        if self.observer is not None:
            self.observer.client_data(data, time.time())
            self._report()
        if self.write_paused:
            self.owed_credit += len(data)
        else:
            self.proxy.send_tcp(messages.FlowAcked(self.flow, len(data)))

    def command_acked(self, count: int) -> None:
        self.in_flight -= count
        if self.read_paused and self.in_flight <= MAX_IN_FLIGHT // 2 and self.transport:
            self.read_paused = False
            self.transport.resume_reading()

    def command_eof(self) -> None:
        if self.observer is not None:
            self.observer.client_eof(time.time())
            self._report()
        if self.transport is not None and not self.transport.is_closing() and self.transport.can_write_eof():
            self.transport.write_eof()

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

    def _report(self) -> None:
        observer = self.observer
        assert observer is not None and self.reporter is not None
        for msg in self.reporter.on_events(observer.events()):
            self.proxy.send_sink(msg)
        if observer.failed or observer.upgraded:
            self.observer = None  # not HTTP after all, or a WebSocket: relay raw from now on

    def final_report(self) -> list[messages.Msg]:
        """What the sink hears when the connection is over: errors for unanswered
        requests, or a tcp summary if nothing on it was HTTP."""
        if self.reporter is not None and self.reporter.exchanges:
            return self.reporter.finish(time.time(), "the connection closed before a response")
        return [self.summary()]

    def summary(self) -> messages.TcpSummary:
        return messages.TcpSummary(time=self.started, client=self.client, server=self.server,
                                   bytes_sent=self.bytes_up, bytes_received=self.bytes_down,
                                   duration=time.time() - self.started)


class Proxy:
    def __init__(self, ctx: StageContext, loop: asyncio.AbstractEventLoop) -> None:
        self.ctx = ctx
        self.loop = loop
        (self.from_tcp,) = ctx.inboxes()
        self.to_tcp, self.to_sink = ctx.outboxes()
        self.relays: dict[int, Relay] = {}
        self.connecting: dict[int, asyncio.Task[None]] = {}
        self.flush_scheduled = False
        self.done = loop.create_future()
        config = ctx.config
        self.capture_bodies = config.body or any(s.startswith("har:") for s in config.sinks)
        # Exchange ids unique across proxy shards: the shard number in the high bits.
        self._exchange_ids = iter(range((ctx.extra.get("shard", 0) << 40) + 1, 1 << 62))

    def new_exchange_id(self) -> int:
        return next(self._exchange_ids)

    # --- rings -----------------------------------------------------------------------------

    def send_tcp(self, msg: messages.Msg) -> None:
        self.to_tcp.send(msg)
        self._schedule_flush()

    def send_sink(self, msg: messages.Msg) -> None:
        self.to_sink.send(msg)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.to_tcp.flush() & self.to_sink.flush():
            return
        # A ring is full: flush again when its consumer frees space, or shortly anyway
        # (the space wake-up is best effort, see httptap.ring).
        self.flush_scheduled = True
        for outbox in (self.to_tcp, self.to_sink):
            if outbox.backlog:
                self.loop.add_reader(outbox.space_fd, self._on_space)
        self.retry = self.loop.call_later(RETRY_FLUSH, self._on_space)

    def _on_space(self) -> None:
        for outbox in (self.to_tcp, self.to_sink):
            self.loop.remove_reader(outbox.space_fd)
        self.retry.cancel()
        self._flush()

    def on_input(self) -> None:
        relays = self.relays
        for msg in self.from_tcp.receive():
            kind = type(msg)
            if kind is messages.FlowData:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_data(msg.data)
            elif kind is messages.FlowAcked:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_acked(msg.count)
            elif kind is messages.FlowOpened:
                self.connecting[msg.flow] = self.loop.create_task(self._connect(msg))
            elif kind is messages.FlowEof:
                relay = relays.get(msg.flow)
                if relay is not None:
                    relay.command_eof()
            elif kind is messages.FlowReset:
                self._end(msg.flow, reset=True)
            elif kind is messages.FlowClosed:
                self._end(msg.flow, reset=False)
            elif kind is messages.Drain:
                self._drain()

    # --- connections -----------------------------------------------------------------------

    async def _connect(self, opened: messages.FlowOpened) -> None:
        host = HOST_LOOPBACK_ALIAS.get(opened.dst, opened.dst)
        relay = Relay(self, opened)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: relay, host, opened.dport), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            self.send_tcp(messages.FlowRefuse(opened.flow, "upstream connect timed out", reset=False))
            self._notice(f"connect to {relay.server} timed out")
            return
        except OSError as exc:
            # Refused or unreachable: the command sees "connection refused" at once.
            self.send_tcp(messages.FlowRefuse(opened.flow, exc.strerror or str(exc)))
            if exc.errno != errno.ECONNREFUSED and self.ctx.config.verbose:
                self._notice(f"connect to {relay.server} failed: {exc.strerror or exc}")
            return
        finally:
            self.connecting.pop(opened.flow, None)
        self.relays[opened.flow] = relay
        self.send_tcp(messages.FlowAccept(opened.flow))

    def _end(self, flow: int, reset: bool) -> None:
        task = self.connecting.pop(flow, None)
        if task is not None:
            task.cancel()
        relay = self.relays.pop(flow, None)
        if relay is None:
            return
        if reset:
            relay.command_reset()
        else:
            relay.close()
        for msg in relay.final_report():
            self.send_sink(msg)

    def _notice(self, text: str, level: str = "info") -> None:
        self.send_sink(messages.Notice(level, text))

    def _drain(self) -> None:
        for task in self.connecting.values():
            task.cancel()
        for flow in list(self.relays):
            self._end(flow, reset=False)
        self.to_tcp.flush()
        self.to_sink.send(messages.Drain())
        self.to_sink.flush_blocking(timeout=5.0)
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
