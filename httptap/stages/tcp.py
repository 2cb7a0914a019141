"""The tcp stage: the userspace network stack between the TUN device and the proxy.

Each shard reads its own queue of the TUN device in batches (the kernel steers every flow
to one queue; with ``--dump-pcap`` a tun stage reads the device instead and sends us the
packets). Each TCP packet is parsed (``httptap.net.wire``) and handed to the
:class:`~httptap.net.tcp.connection.TcpConnection` of its flow; a SYN for an unknown flow
creates one and asks the proxy to connect upstream (``FlowOpened``); the handshake
completes only on ``FlowAccept``. What the cores produce goes out as stream messages to
the proxy and as packets written straight to our queue of the device (through the tun
stage with ``--dump-pcap``), once per batch, so ACKs coalesce naturally. A flow sends at
most ``BURST`` new segments per turn of the loop, so the command's ACKs are read between
bursts rather than queueing behind a whole window.

Bulk data is copied as little as it can be: a large payload from the proxy stays in the
proxy's ring (``HoldingInbox``: its record held, not copied out) and goes to the command
from there, until the command acknowledges its last byte (``HOLD_LEAST``, ``HOLD_AGE``,
:meth:`TcpShard.relieve`); the proxy reads the server's bytes into that ring to begin
with (``stages.relay``), so a plain download is copied by the kernel twice in httptap (the
socket read, the device write) and never by Python.

Flow control is end to end: the proxy returns ``FlowAcked`` credit for bytes it has
written upstream and only then does the receive window reopen; the other way, we return
credit to the proxy as the command acknowledges data (both in steps of ``CREDIT_STEP``).
ICMP echo is answered here.

Delayed ACK: when all a flow has to send is the ACK of a small request (``TcpConnection.
ack_can_wait``), it is held up to ``ACK_DELAY`` for the proxy's answer, which then
carries it: a keep-alive exchange costs one packet towards the command instead of two
(one device write and one pure ACK for the command's kernel to process fewer). Held
ACKs go out in the order they were held, at their deadline if no answer came. If the
command then sends more before any answer, it was waiting for that ACK (Nagle: a
request written in pieces), and that flow's ACKs are never held again; if the answer
comes first, the proxy was only slow (a busy machine), and holding goes on.

TCP and UDP towards the host's loopback (127.0.0.0/8, ::1, and the addresses that lead
there too) are refused here: a SYN gets a reset, a datagram is dropped. Such packets reach
the device only when the command writes raw packets (its own ``lo`` takes the rest), and
relaying them would let it reach any service the host keeps on loopback. The documented
way there, ``169.254.77.65`` (``host.httptap.local``), leads to 127.0.0.1 alone.
"""

from __future__ import annotations

import os
import time

from ..plumbing import messages
from ..plumbing.messages import CREDIT_STEP
from .base import RETRY_FLUSH, HoldingInbox, LazyWake, Loop, SpaceWatch, StageContext
from .tcpshard import (ACK_DELAY, BURST, CLOSED_WAKE_DELAY, HOLD_AGE, HOLD_LEAST, MESSAGE_BYTES,
                       RECV_BUFFER, SEND_BUFFER, TIME_WAIT_GRID, Flow, FlowKey, TcpShard,
                       leads_to_host_loopback)
from .tun import read_batch

# The shard's logic is httptap.stages.tcpshard (compiled); its names stay importable here.
__all__ = ["ACK_DELAY", "BURST", "CREDIT_STEP", "CLOSED_WAKE_DELAY", "HOLD_AGE", "HOLD_LEAST", "MESSAGE_BYTES",
           "RECV_BUFFER", "SEND_BUFFER", "TIME_WAIT_GRID", "Flow", "FlowKey", "TcpShard",
           "leads_to_host_loopback", "run"]


def run(ctx: StageContext) -> None:
    # Two shapes (supervisor._run_pipeline): usually this shard reads its own queue of the
    # TUN device; with --dump-pcap a tun stage reads the device and sends us Packets.
    reads_tun = ctx.extra.get("reads_tun", False)
    if reads_tun:
        (from_proxy_ring,), (to_proxy,) = ctx.inputs, ctx.outboxes()
        from_tun = to_tun = None
    else:
        from_tun, _ = ctx.inboxes()
        from_proxy_ring = ctx.inputs[1]
        to_tun, to_proxy = ctx.outboxes()
    from_proxy = HoldingInbox(from_proxy_ring, ctx.counters, HOLD_LEAST)
    tun_fd = ctx.extra["tun_fd"]
    shard = TcpShard(ctx.config.mtu, to_tun, to_proxy, ctx.counters, dump=ctx.config.dump_tcp,
                     tun_fd=None if ctx.config.dump_pcap else tun_fd, release=from_proxy.release)
    pressed = from_proxy_ring.capacity // 2  # held bytes over which the ring is short

    def held_bytes() -> int:
        return from_proxy_ring.held_bytes

    outboxes = [o for o in (to_tun, to_proxy) if o is not None]
    loop = Loop()
    monotonic = time.monotonic

    def finish() -> None:
        """The command is gone and its last packets are processed: drain into the proxy."""
        shard.reset_all("the command exited")
        to_proxy.send(messages.Drain())
        # As long as it takes: the proxy may be waiting for a slow reader of the output
        # (the supervisor ends a drain that stops moving, and a stage whose proxy died).
        to_proxy.flush_blocking(idle_timeout=None)
        loop.stop()

    def on_ring_from_tun() -> None:
        assert from_tun is not None
        now = monotonic()
        for msg in from_tun.receive():
            if type(msg) is messages.Packets:
                shard.on_packets(msg.packets, now)
        if from_tun.drained:
            finish()

    def on_device() -> None:
        packets = read_batch(tun_fd)
        if packets:
            shard.on_packets(packets, monotonic())

    def on_stop() -> None:
        # The stop eventfd is shared by every shard: it stays readable (never read here)
        # so each of them sees it. Take what the command left in our queue first.
        for _ in range(64):  # bounded: the command's processes are gone, its queue is finite
            packets = read_batch(tun_fd)
            if not packets:
                break
            shard.on_packets(packets, monotonic())
        finish()

    def on_proxy() -> None:
        msgs = from_proxy.receive()
        shard.on_proxy(msgs, monotonic(), from_proxy.held)

    # Woken for space: after_batch, which runs after every wake-up, flushes again.
    space = SpaceWatch(outboxes, loop.add_reader, loop.remove_reader, lambda: None)
    lazy = LazyWake(to_proxy, CLOSED_WAKE_DELAY)

    def after_batch() -> None:
        space.flush()
        now = monotonic()
        when = now if shard.busy else shard.next_timer()
        if from_proxy_ring.held_bytes > pressed:  # (every packet is written by now)
            due = shard.relieve(now, pressed, held_bytes, from_proxy_ring.oldest_held)
            if due is not None and (when is None or due < when):
                when = due
        if space.waiting:
            retry = now + RETRY_FLUSH
            when = retry if when is None else min(when, retry)
        wake = lazy.deadline(now)
        if wake is not None:
            when = wake if when is None else min(when, wake)
        loop.timer_at = when

    def on_timer(now: float) -> None:
        lazy.on_timer(now)
        shard.on_timer(now)

    loop.on_timer = on_timer
    loop.after_batch = after_batch
    if reads_tun:
        os.set_blocking(tun_fd, False)
        loop.add_reader(tun_fd, on_device)
        loop.add_reader(ctx.extra["stop_fd"], on_stop)
    else:
        assert from_tun is not None
        loop.add_reader(from_tun.fd, on_ring_from_tun)
    loop.add_reader(from_proxy.fd, on_proxy)
    loop.run()
