"""UDP and DNS for the proxy stage: answered DNS, relayed datagrams, DNS over TCP.

- DNS on UDP port 53 of any address is answered by ``httptap.dns.resolver`` (the host's
  resolver for A/AAAA, the host's nameservers for the rest); each exchange goes to the
  sinks (``--print-dns`` shows it).
- Any other datagram is relayed from the host namespace on a connected UDP socket per
  flow (command address and port, destination address and port), forgotten after
  ``UDP_IDLE`` seconds without traffic and then reported as a ``udp`` summary.
- DNS on TCP port 53 is answered locally too (:class:`DnsOverTcp`): the command's
  connection is accepted without any upstream socket.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol, cast

from ..plumbing import messages
from ..dns.message import DnsError, TcpDnsReader, frame_tcp
from ..flow.commands import endpoint as _endpoint
from ..run.namespace import HOST_LOOPBACK_ALIAS

if TYPE_CHECKING:
    from ..dns.resolver import DnsInfo, Resolver


class DatagramLink(Protocol):
    """What the UDP side needs of the proxy stage (named here: no import of the stage)."""

    loop: asyncio.AbstractEventLoop

    def send_tcp(self, msg: messages.Msg) -> None: ...
    def send_sink(self, msg: messages.Msg) -> None: ...
    def notice(self, text: str, level: str = "info", verbose_only: bool = False) -> None: ...

DNS_PORT = 53
UDP_IDLE = 60.0


class UdpFlow(asyncio.DatagramProtocol):
    """One relayed UDP flow: a connected socket towards the destination."""

    def __init__(self, datagrams: Datagrams, key: tuple[str, int, str, int]) -> None:
        self.datagrams = datagrams
        self.key = key
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []  # sent by the command while we were connecting
        self.started = time.time()
        self.last = time.monotonic()
        self.sent = self.received = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport quacks like asyncio.DatagramTransport without subclassing it.
        self.transport = udp = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            udp.sendto(data)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.last = time.monotonic()
        self.received += len(data)
        src, sport, dst, dport = self.key
        self.datagrams.proxy.send_tcp(messages.DatagramOut(dst, dport, src, sport, data))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (port unreachable...) are not forwarded; the command times out

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.sent += len(data)
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.datagrams.forget(self)


class Datagrams:
    """The proxy stage's UDP side; see the module docstring."""

    def __init__(self, proxy: DatagramLink) -> None:
        self.proxy = proxy
        self.flows: dict[tuple[str, int, str, int], UdpFlow] = {}
        self._resolver: Resolver | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            from ..dns.resolver import Resolver

            self._resolver = Resolver()
        return self._resolver

    def on_datagram(self, msg: messages.DatagramIn) -> None:
        if msg.dport == DNS_PORT:
            self.proxy.loop.create_task(self._answer_dns(msg))
            return
        key = (msg.src, msg.sport, msg.dst, msg.dport)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = UdpFlow(self, key)
            host = "127.0.0.1" if msg.dst == HOST_LOOPBACK_ALIAS else msg.dst
            self.proxy.loop.create_task(self._connect(flow, host, msg.dport))
            self._arm_sweeper()
        flow.send(msg.data)

    async def _connect(self, flow: UdpFlow, host: str, port: int) -> None:
        try:
            await self.proxy.loop.create_datagram_endpoint(lambda: flow, remote_addr=(host, port))
        except OSError as exc:
            self.proxy.notice(f"UDP to {_endpoint(host, port)} failed: {exc.strerror or exc}",
                              verbose_only=True)
            flow.close()

    async def _answer_dns(self, msg: messages.DatagramIn) -> None:
        reply, info = await self.resolver.answer(msg.data, udp=True)
        if reply is not None:
            self.proxy.send_tcp(messages.DatagramOut(msg.dst, msg.dport, msg.src, msg.sport, reply))
        self.report_dns(info)

    def report_dns(self, info: DnsInfo | None) -> None:
        if info is not None:
            self.proxy.send_sink(messages.DnsExchange(
                time=time.time(), name=info.name, qtype=info.qtype, answers=list(info.answers),
                rcode=info.rcode))

    def forget(self, flow: UdpFlow) -> None:
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
            src, sport, dst, dport = flow.key
            self.proxy.send_sink(messages.TcpSummary(
                time=flow.started, client=_endpoint(src, sport), server=_endpoint(dst, dport),
                bytes_sent=flow.sent, bytes_received=flow.received,
                duration=time.time() - flow.started, transport="udp"))

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.proxy.loop.call_later(UDP_IDLE / 4, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        idle_since = time.monotonic() - UDP_IDLE
        for flow in [f for f in self.flows.values() if f.last < idle_since]:
            flow.close()
        if self.flows:
            self._arm_sweeper()

    def close_all(self) -> None:
        for flow in list(self.flows.values()):
            flow.close()


class DnsOverTcp:
    """A command's TCP connection to port 53, answered here (no upstream socket).

    Answers to the same calls as a :class:`~httptap.stages.relay.Relay`, for the proxy's
    dispatch."""

    def __init__(self, datagrams: Datagrams, opened: messages.FlowOpened) -> None:
        self.datagrams = datagrams
        self.proxy = datagrams.proxy
        self.flow = opened.flow
        self.reader = TcpDnsReader()
        self.tasks: set[asyncio.Task[None]] = set()
        self.eof = False
        self.finished = False

    def command_data(self, data: bytes) -> None:
        self.proxy.send_tcp(messages.FlowAcked(self.flow, len(data)))
        try:
            queries = self.reader.feed(data)
        except DnsError:
            self.end(reset=True)
            self.proxy.send_tcp(messages.FlowReset(self.flow, "malformed DNS over TCP"))
            return
        for query in queries:
            task = self.proxy.loop.create_task(self._answer(query))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    async def _answer(self, query: bytes) -> None:
        reply, info = await self.datagrams.resolver.answer(query)
        if reply is not None and not self.finished:
            self.proxy.send_tcp(messages.FlowData(self.flow, frame_tcp(reply)))
        self.datagrams.report_dns(info)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.eof and not self.tasks and not self.finished:
            self.proxy.send_tcp(messages.FlowEof(self.flow))

    def command_acked(self, count: int) -> None:
        pass

    def command_eof(self) -> None:
        self.eof = True
        if not self.tasks:
            self.proxy.send_tcp(messages.FlowEof(self.flow))

    def end(self, reset: bool) -> None:
        """The flow is over: unanswered queries are dropped (their DNS lines too)."""
        self.finished = True
        for task in self.tasks:
            task.cancel()
