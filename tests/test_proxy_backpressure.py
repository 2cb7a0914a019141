"""The proxy stage under a slow reader of httptap's output, in one process (real rings).

When the sink cannot keep up, what did not fit in the proxy -> sink ring waits in the
proxy's backlog. Above ``SINK_BACKLOG_HIGH`` the proxy stops reading upstream sockets
and the tcp stage's ring (no credit goes back: the command's windows close), so its
memory stays bounded; once the sink has taken the backlog under ``SINK_BACKLOG_LOW`` it
reads again. Nothing is dropped on the way."""

from __future__ import annotations

import asyncio

from httptap.plumbing import messages
from httptap.plumbing.ring import Ring
from httptap.plumbing.stats import Counters
from httptap.run.config import Config
from httptap.stages import proxy as proxy_stage
from httptap.stages.base import Inbox, StageContext
from httptap.stages.relay import Relay
from httptap.tls.ca import CertificateAuthority


class FakeTransport:
    """What a relay does to its upstream socket: only reading is watched here."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False


def test_a_full_sink_backlog_stops_reading_and_nothing_is_lost():
    rings = [Ring(1 << 20, label=f"bp{i}") for i in range(3)]  # tcp->proxy, ->tcp, ->sink
    loop = asyncio.new_event_loop()
    try:
        ctx = StageContext("proxy", Config(command=("true",)), Counters(), [rings[0]],
                           [rings[1], rings[2]], {"ca": CertificateAuthority.ephemeral()})
        proxy = proxy_stage.Proxy(ctx, loop)
        loop.add_reader(proxy.from_tcp.fd, proxy.on_input)
        relay = Relay(proxy, proxy_stage.FlowCore(
            proxy.flow_settings, messages.FlowOpened(1, "10.1.1.100", 40000, "192.0.2.1", 5432),
            0.0))
        transport = FakeTransport()
        relay.transport = transport  # type: ignore[assignment]
        proxy.relays[1] = relay
        sink = Inbox(rings[2], Counters())

        # Nobody reads the sink ring: notices pile up past the ring and the high mark.
        sent = 0
        text = "x" * 4000
        while proxy.to_sink.pending_bytes <= proxy_stage.SINK_BACKLOG_HIGH:
            proxy.send_sink(messages.Notice("info", f"{sent} {text}"))
            sent += 1
            loop.run_until_complete(asyncio.sleep(0))  # the flush the send scheduled
        assert proxy.output_blocked
        assert not transport.reading  # the upstream socket is not read
        assert proxy.from_tcp.fd not in loop._selector.get_map()  # nor the tcp stage's ring
        backlog_bytes = proxy.to_sink.pending_bytes
        assert backlog_bytes < proxy_stage.SINK_BACKLOG_HIGH + 8192  # bounded

        # The sink catches up: everything arrives, in order, and reading resumes.
        got: list[str] = []
        for _ in range(10_000):
            got += [m.text.split(" ")[0] for m in sink.receive()]  # type: ignore[attr-defined]
            if len(got) == sent:
                break
            proxy._on_space()  # (what the space eventfd or the retry timer would call)
        assert got == [str(i) for i in range(sent)]
        assert not proxy.output_blocked
        assert transport.reading
        assert proxy.from_tcp.fd in loop._selector.get_map()
    finally:
        loop.close()
        for ring in rings:
            ring.release()


def test_a_full_ring_to_the_tcp_stage_stops_reading_upstream_until_it_drains():
    """The tcp stage keeps the command's unacknowledged bytes in its ring (``tcp.
    HOLD_LEAST``): while that ring is full, what the proxy read could only wait in its
    backlog, copied once more, so it stops reading upstream until the ring takes it."""
    rings = [Ring(1 << 20, label=f"tb{i}") for i in range(3)]  # tcp->proxy, ->tcp, ->sink
    loop = asyncio.new_event_loop()
    try:
        ctx = StageContext("proxy", Config(command=("true",)), Counters(), [rings[0]],
                           [rings[1], rings[2]], {"ca": CertificateAuthority.ephemeral()})
        proxy = proxy_stage.Proxy(ctx, loop)
        relay = Relay(proxy, proxy_stage.FlowCore(
            proxy.flow_settings, messages.FlowOpened(1, "10.1.1.100", 40000, "192.0.2.1", 5432),
            0.0))
        transport = FakeTransport()
        relay.transport = transport  # type: ignore[assignment]
        proxy.relays[1] = relay
        tcp = Inbox(rings[1], Counters())

        sent = 0
        while proxy.to_tcp.backlog == 0:  # nobody reads the ring: it fills
            proxy.send_tcp_data(1, bytes([sent]) * 100_000)
            sent += 1
            loop.run_until_complete(asyncio.sleep(0))  # the flush the send scheduled
        assert proxy.tcp_blocked and not transport.reading
        assert proxy.to_tcp.reserve_data(1, 1 << 18) is None  # nor read into the ring

        got: list[int] = []
        for _ in range(1000):
            got += [m.data[0] for m in tcp.receive()]  # type: ignore[attr-defined]
            proxy._on_space()  # (what the space eventfd or the retry timer would call)
            if len(got) == sent:
                break
        assert got == list(range(sent))
        assert not proxy.tcp_blocked and transport.reading
    finally:
        loop.close()
        for ring in rings:
            ring.release()
