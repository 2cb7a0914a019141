"""The I/O half of one proxied TCP connection: the upstream socket and the commands.

A :class:`Relay` is the asyncio protocol of one upstream socket. It hands every event of
the flow (socket reads, EOF, loss, write pressure, and the tcp stage's messages, which the
proxy stage routes here) to the flow's pure core (``httptap.flow.core``), with the time,
and then carries out the commands the core queued: bytes and half-closes to the socket,
messages to the tcp stage and to the sink, reading paused or resumed, one timer, and the
proxy's next flush held for one turn of its loop when the server's FIN is due. All the
decisions (what the flow is, TLS, decoding, credit) are the core's.

:class:`FlowLink` is what a relay needs of the proxy stage; naming it here keeps the
relay from importing the stage that owns it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Protocol, TypeGuard, cast

from ..plumbing import messages
from ..flow.commands import (AbortUpstream, AwaitUpstreamEof, CloseUpstream, Credit, FinToCommand,
                             FinUpstream, FlowOver, PauseUpstream, Report, ResetCommand,
                             ResumeUpstream, SendToCommand, SendUpstream, SetTimer)
from ..flow.core import FlowCore, Mode

WRITE_HIGH_WATER = 1 << 20   # upstream socket buffer before we stop returning credit

# Every relay of a proxy reads upstream bytes into this one buffer (asyncio's
# BufferedProtocol). Safe to share: uvloop calls get_buffer and buffer_updated back to
# back, and nothing keeps a view of it past buffer_updated (the commands that refer to it
# are carried out before it returns: messages are encoded, TLS records decrypted into
# tlsterm's own buffer, observers copy what they keep). It saves copying each read into a new bytes
# object: for a bulk download, one copy of every byte fewer.
READ_SIZE = 256 << 10
_READ_BUFFER = memoryview(bytearray(READ_SIZE))
# Where the core relays the server's bytes as they are (plain HTTP, or neither TLS nor
# HTTP), they are read straight into the ring towards the tcp stage instead, in a
# FlowData record's place (FlowLink.reserve_data), and published without a copy when the
# core sends that very view on: another copy of every byte fewer. Up to RING_READ_SIZE at
# a time (the most a record of the supervisor's 4 MiB rings holds): in a bulk download
# the socket has more than 256 KiB ready at nearly every read, and each read costs the
# same Python, syscall and wake-up of the tcp stage whatever its size (measured: proxy
# 0.56 -> 0.53 s of CPU per GiB, medians of 10).
RING_READ_SIZE = 1 << 20
_AS_IS = frozenset((Mode.HTTP, Mode.RAW))


class FlowLink(Protocol):
    """What a relay needs of the proxy stage."""

    loop: asyncio.AbstractEventLoop
    output_blocked: bool  # the sink's backlog is full: no upstream reading (see stages.proxy)
    tcp_blocked: bool     # so is the ring to the tcp stage: no upstream reading either

    def send_tcp(self, msg: messages.Msg) -> None: ...
    def send_tcp_data(self, flow: int, data: bytes | memoryview) -> None: ...
    def reserve_data(self, flow: int, size: int) -> memoryview | None: ...
    def filled_data(self, nbytes: int) -> memoryview: ...
    def end_reserved(self) -> None: ...
    def send_sink(self, msg: messages.Msg) -> None: ...
    def hold_request(self, relay: Relay) -> None: ...
    def forget(self, flow: int) -> None: ...
    def flush_after_poll(self) -> None: ...


class Relay(asyncio.BufferedProtocol):
    """One upstream connection and the flow core it serves."""

    def __init__(self, link: FlowLink, core: FlowCore) -> None:
        self.link = link
        self.core = core
        self.flow = core.flow
        self.transport: asyncio.Transport | None = None
        self.core_paused = False    # the core asked us to stop reading (credit)
        self.reading_paused = False  # what the transport is told
        self.timer: asyncio.TimerHandle | None = None
        # The last request reported, not yet sent to the sink (see report()).
        self.held: messages.HttpRequest | None = None
        self.reserved = False  # get_buffer gave room in the ring (see _AS_IS)

    # --- upstream socket events --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = upstream = cast(asyncio.Transport, transport)
        upstream.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.link.output_blocked or self.link.tcp_blocked:
            self.update_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        core = self.core
        if core.upstream_tls is None and core.mode in _AS_IS:
            view = self.link.reserve_data(self.flow, RING_READ_SIZE)
            if view is not None:
                self.reserved = True
                return view
        self.reserved = False
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        if not self.reserved:
            self.core.upstream_data(_READ_BUFFER[:nbytes], time.time())
            self.execute()
            return
        self.reserved = False
        link = self.link
        try:
            self.core.upstream_data(link.filled_data(nbytes), time.time())
            self.execute()
        finally:
            link.end_reserved()

    def eof_received(self) -> bool:
        self.core.upstream_eof(time.time())
        self.execute()
        return True  # keep our writing half open: the command may still send

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.upstream_lost(None if exc is None else str(exc) or type(exc).__name__,
                                time.time())
        self.execute()
        self.transport = None

    def pause_writing(self) -> None:
        self.core.upstream_write_paused(True)
        self.execute()

    def resume_writing(self) -> None:
        self.core.upstream_write_paused(False)
        self.execute()

    def on_timer(self) -> None:
        self.timer = None
        self.core.timer(time.time())
        self.execute()

    # --- the tcp stage's messages, routed here by the proxy stage ----------------------------

    def command_data(self, data: bytes) -> None:
        self.core.command_data(data, time.time())
        self.execute()

    def command_acked(self, count: int) -> None:
        self.core.command_acked(count)
        self.execute()

    def command_eof(self) -> None:
        self.core.command_eof(time.time())
        self.execute()

    def end(self, reset: bool) -> None:
        """The flow is over (the tcp stage forgot it, or the command reset it): close or
        reset upstream, then the final report."""
        core = self.core
        if reset:
            core.command_reset()
        else:
            core.close()
        core.final_report(time.time())
        self.execute()

    # --- carrying out the core's commands ----------------------------------------------------

    def execute(self) -> None:
        core = self.core
        commands = core.commands
        if not commands:
            return
        core.commands = []  # (what core.take() does, without the call)
        link, flow, transport = self.link, self.flow, self.transport
        # Dispatch on the exact class, most frequent first (a keep-alive exchange is
        # SendUpstream and Report, then SendToCommand and Report): cheaper than a match
        # statement's class patterns, which call isinstance and read __match_args__.
        for cmd in commands:
            if type(cmd) is SendToCommand:
                link.send_tcp_data(flow, cmd.data)
            elif type(cmd) is Report:
                self.report(cmd.message)
            elif type(cmd) is SendUpstream:
                if transport is not None and not transport.is_closing():
                    transport.write(cmd.data)
            elif type(cmd) is Credit:
                link.send_tcp(messages.FlowAcked(flow, cmd.count))
            elif type(cmd) is FinToCommand:
                link.send_tcp(messages.FlowEof(flow))
            elif type(cmd) is ResetCommand:
                link.send_tcp(messages.FlowReset(flow, cmd.reason))
            elif type(cmd) is PauseUpstream or type(cmd) is ResumeUpstream:
                self.core_paused = type(cmd) is PauseUpstream
                self.update_reading()
            elif type(cmd) is SetTimer:
                self._set_timer(cmd.deadline)
            elif type(cmd) is FinUpstream:
                if _open(transport) and transport.can_write_eof():
                    transport.write_eof()
            elif type(cmd) is CloseUpstream:
                if _open(transport):
                    transport.close()
            elif type(cmd) is AbortUpstream:
                if _open(transport):
                    _abort_with_reset(transport)
            elif type(cmd) is FlowOver:
                link.forget(flow)
            elif type(cmd) is AwaitUpstreamEof:
                link.flush_after_poll()

    def report(self, msg: messages.Msg) -> None:
        """To the sink, with one exception: a request is held until the proxy's next
        wake-up of the sink (``release``), which the sink waits for anyway; if its
        response is the flow's next message by then, both go as one ``HttpExchange``.
        Anything else of this flow first sends the held request: per flow, the sink
        sees every message in the order it was reported."""
        held = self.held
        if held is not None:
            self.held = None
            if type(msg) is messages.HttpResponse and msg.exchange == held.exchange:
                self.link.send_sink(messages.HttpExchange(held, msg))
                return
            self.link.send_sink(held)
        if type(msg) is messages.HttpRequest:
            self.held = msg
            self.link.hold_request(self)
        else:
            self.link.send_sink(msg)

    def release(self) -> None:
        """The sink is about to be woken: the held request goes now."""
        held = self.held
        if held is not None:
            self.held = None
            self.link.send_sink(held)

    def update_reading(self) -> None:
        """Read upstream unless the core's credit or the proxy's full rings say no."""
        transport = self.transport
        link = self.link
        pause = self.core_paused or link.output_blocked or link.tcp_blocked
        if transport is None or pause == self.reading_paused or transport.is_closing():
            return
        self.reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _set_timer(self, deadline: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deadline is not None:
            self.timer = self.link.loop.call_later(max(0.0, deadline - time.time()),
                                                   self.on_timer)


def _open(transport: asyncio.Transport | None) -> TypeGuard[asyncio.Transport]:
    return transport is not None and not transport.is_closing()


def _abort_with_reset(transport: asyncio.Transport) -> None:
    """Abort with a RST (SO_LINGER 0), as the command did."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
