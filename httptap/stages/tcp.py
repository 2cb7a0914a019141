"""The tcp stage: the userspace network stack between the TUN device and the proxy.

Each shard reads its own queue of the TUN device in batches (the kernel steers every flow
to one queue; with ``--dump-pcap`` a tun stage reads the device instead and sends us the
packets). Each TCP packet is parsed (``httptap.wire``) and handed to the
:class:`~httptap.tcp.connection.TcpConnection` of its flow; a SYN for an unknown flow
creates one and asks the proxy to connect upstream (``FlowOpened``); the handshake
completes only on ``FlowAccept``. What the cores produce goes out as stream messages to
the proxy and as packets written straight to our queue of the device (through the tun
stage with ``--dump-pcap``), once per batch, so ACKs coalesce naturally. A flow sends at
most ``BURST`` new segments per turn of the loop, so the command's ACKs are read between
bursts rather than queueing behind a whole window.

Flow control is end to end: the proxy returns ``FlowAcked`` credit for bytes it has
written upstream and only then does the receive window reopen; the other way, we return
credit to the proxy as the command acknowledges data (both in steps of ``CREDIT_STEP``).
ICMP echo is answered here.
"""

from __future__ import annotations

import heapq
import os
import random
import socket
import time

from .. import messages
from ..stats import PACKETS_IN, PACKETS_OUT
from ..tcp.connection import State, TcpConnection, rst_for
from ..tcp.events import Acked, Closed, DataReceived, PeerEof, Reset
from ..tcp.segment import ACK, RST, SYN
from ..wire import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, ProtocolError,
                    VNET_HDR_LEN, build_icmp_echo_reply, build_tcp, build_tcp_vnet, build_udp,
                    describe, parse_icmp_echo, parse_ip, parse_tcp, parse_udp)
from .base import Loop, StageContext
from .tun import Packet, joined, read_batch, write_packets

RECV_BUFFER = 4 << 20   # bytes the command may send ahead of the proxy's upstream writes
SEND_BUFFER = 8 << 20   # bytes of the proxy's data we hold until the command acknowledges
RETRY_FLUSH = 0.005     # re-try a full ring this often (a space wake-up can be missed)
MESSAGE_BYTES = 256 << 10  # a Packets message is cut at about this size (rings cap records)
# Credit goes back to the proxy in steps of at least this much: a keep-alive exchange then
# costs one message each way instead of two. The proxy's window (8 MiB) dwarfs it.
CREDIT_STEP = 64 << 10
BURST = 8  # data segments per flow per turn of the loop: then read the command's ACKs


class Flow:
    """One TCP connection from the command, as this shard knows it."""

    __slots__ = ("id", "key", "conn", "src", "dst", "sport", "dport", "accepted", "timer",
                 "acked")

    def __init__(self, flow_id: int, key: tuple, conn: TcpConnection,
                 src: bytes, dst: bytes, sport: int, dport: int) -> None:
        self.id = flow_id
        self.key = key
        self.conn = conn
        # Addresses as the command sees them: it is the client (src), we play dst.
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.accepted = False
        self.timer: float | None = None
        self.acked = 0  # bytes the command acknowledged, not yet credited to the proxy


class TcpShard:
    """The stage's state and logic, separate from its loop so it can be driven in tests."""

    def __init__(self, mtu: int, to_tun, to_proxy, counters, dump: bool = False,  # type: ignore[no-untyped-def]
                 tun_fd: int | None = None) -> None:
        self.mtu = mtu
        self.tun_fd = tun_fd  # write packets to the device directly (else: through to_tun)
        self.dump = dump  # --dump-tcp: a line per packet, to the sink through the proxy
        self.to_tun = to_tun
        self.to_proxy = to_proxy
        self.counters = counters.v
        self.flows: dict[tuple, Flow] = {}
        self.by_id: dict[int, Flow] = {}
        self.next_id = 1
        self.timers: list[tuple[float, int]] = []
        self.out_packets: list[Packet] = []
        self.out_bytes = 0
        self.dirty: dict[int, Flow] = {}
        self.busy: dict[int, Flow] = {}  # flows whose window allows more than one burst

    # --- from the command ----------------------------------------------------------------

    def on_packets(self, packets: list[bytes], now: float) -> None:
        self.counters[PACKETS_IN] += len(packets)
        if self.dump:
            for pkt in packets:
                self.to_proxy.send(messages.Notice("packet", "in  " + describe(pkt)))
        for pkt in packets:
            try:
                ip = parse_ip(pkt)
                if ip.proto == IPPROTO_TCP:
                    sport, dport, seg = parse_tcp(ip.payload)
                    self._on_segment(ip.src, ip.dst, sport, dport, seg, now)
                elif ip.proto == IPPROTO_UDP:
                    sport, dport, data = parse_udp(ip.payload)
                    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
                    self.to_proxy.send(messages.DatagramIn(
                        socket.inet_ntop(family, ip.src), sport,
                        socket.inet_ntop(family, ip.dst), dport, data))
                elif ip.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                    kind = parse_icmp_echo(ip)[0]
                    if kind in (8, 128):  # echo request: answer as the destination
                        self.out_packets.append(build_icmp_echo_reply(ip, vnet=True))
            except ProtocolError:
                continue  # malformed or not ours (IPv6 neighbour discovery...): ignore
        self._finish(now)

    def _on_segment(self, src: bytes, dst: bytes, sport: int, dport: int, seg, now: float) -> None:  # type: ignore[no-untyped-def]
        key = (src, dst, sport, dport)
        flow = self.flows.get(key)
        if flow is None:
            if seg.flags & (SYN | ACK | RST) == SYN:
                self._open(key, src, dst, sport, dport, seg, now)
            else:
                reply = rst_for(seg)
                if reply is not None:
                    self.out_packets.append(build_tcp(dst, src, dport, sport, reply, vnet=True))
            return
        if seg.flags & (SYN | ACK | RST) == SYN:
            if not flow.accepted:
                return  # the command retransmits its SYN while the upstream connect is pending
            if flow.conn.state is State.TIME_WAIT:
                # The command reuses the port of a connection we still remember: that one
                # is over (RFC 9293 §3.10.7.4 allows a new SYN to reopen from TIME_WAIT).
                self._forget(flow, notify=True)
                self._open(key, src, dst, sport, dport, seg, now)
                return
        flow.conn.receive(seg, now)
        self.dirty[flow.id] = flow

    def _open(self, key: tuple, src: bytes, dst: bytes, sport: int, dport: int, seg, now: float) -> None:  # type: ignore[no-untyped-def]
        mss = self.mtu - (40 if len(src) == 4 else 60)
        conn = TcpConnection(seg, iss=random.getrandbits(32), now=now, mss=mss,
                             recv_buffer=RECV_BUFFER, send_buffer=SEND_BUFFER)
        flow = Flow(self.next_id, key, conn, src, dst, sport, dport)
        self.next_id += 1
        self.flows[key] = flow
        self.by_id[flow.id] = flow
        family = socket.AF_INET if len(src) == 4 else socket.AF_INET6
        self.to_proxy.send(messages.FlowOpened(
            flow.id, socket.inet_ntop(family, src), sport, socket.inet_ntop(family, dst), dport))

    # --- from the proxy ------------------------------------------------------------------

    def on_proxy(self, msgs: list, now: float) -> None:  # type: ignore[type-arg]
        by_id = self.by_id
        for msg in msgs:
            kind = type(msg)
            if kind is messages.Drain:
                continue
            if kind is messages.DatagramOut:
                self._datagram_out(msg)
                continue
            flow = by_id.get(msg.flow)
            if flow is None:
                continue  # already forgotten (reset meanwhile)
            conn = flow.conn
            if kind is messages.FlowData:
                conn.send(msg.data)
            elif kind is messages.FlowAcked:
                conn.consumed(msg.count)
            elif kind is messages.FlowAccept:
                flow.accepted = True
                conn.accept(now)
            elif kind is messages.FlowEof:
                conn.shutdown(now)
            elif kind is messages.FlowReset:
                conn.abort(now)
            elif kind is messages.FlowRefuse:
                if msg.reset:
                    conn.refuse(now)
                else:  # silence: the command's connect times out, as on a real network
                    self._forget(flow, notify=False)
                    continue
            self.dirty[flow.id] = flow
        self._finish(now)

    def _datagram_out(self, msg: messages.DatagramOut) -> None:
        family = socket.AF_INET6 if ":" in msg.src else socket.AF_INET
        try:
            pkt = build_udp(socket.inet_pton(family, msg.src), socket.inet_pton(family, msg.dst),
                            msg.sport, msg.dport, msg.data, vnet=True)
        except (OSError, ValueError):
            return  # mixed families or an oversized datagram: nothing the command can take
        self.out_packets.append(pkt)
        self.out_bytes += len(pkt)

    # --- timers ----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        timers = self.timers
        while timers:
            when, flow_id = timers[0]
            flow = self.by_id.get(flow_id)
            if flow is not None and flow.timer == when:
                return when
            heapq.heappop(timers)  # stale entry
        return None

    def on_timer(self, now: float) -> None:
        if self.busy:
            self.dirty.update(self.busy)
            self.busy.clear()
        timers = self.timers
        while timers and timers[0][0] <= now:
            when, flow_id = heapq.heappop(timers)
            flow = self.by_id.get(flow_id)
            if flow is not None and flow.timer == when:
                flow.timer = None
                flow.conn.handle_timer(now)
                self.dirty[flow.id] = flow
        self._finish(now)

    # --- after every batch -------------------------------------------------------------------

    def _finish(self, now: float) -> None:
        """Turn what the touched connections produced into messages and packets."""
        out = self.out_packets
        to_proxy = self.to_proxy
        for flow in self.dirty.values():
            conn = flow.conn
            closed = False
            for event in conn.events():
                kind = type(event)
                if kind is DataReceived:
                    to_proxy.send_data(flow.id, event.data)
                elif kind is Acked:
                    flow.acked += event.count
                    if flow.acked >= CREDIT_STEP:
                        to_proxy.send(messages.FlowAcked(flow.id, flow.acked))
                        flow.acked = 0
                elif kind is PeerEof:
                    to_proxy.send(messages.FlowEof(flow.id))
                elif kind is Reset:
                    to_proxy.send(messages.FlowReset(flow.id, event.reason))
                elif kind is Closed:
                    closed = True
            src, dst, sport, dport = flow.dst, flow.src, flow.dport, flow.sport
            for seg in conn.segments_to_send(now, BURST):
                pkt = build_tcp_vnet(src, dst, sport, dport, seg)
                out.append(pkt)
                self.out_bytes += len(pkt[0]) + len(pkt[1])
                if self.out_bytes >= MESSAGE_BYTES:
                    self._send_packets()
                    out = self.out_packets
            if closed or conn.state is State.CLOSED:
                self._forget(flow, notify=True)
                continue
            if conn.more_to_send:
                self.busy[flow.id] = flow
            when = conn.next_timer()
            if when != flow.timer:
                flow.timer = when
                if when is not None:
                    heapq.heappush(self.timers, (when, flow.id))
        self.dirty.clear()
        self._send_packets()

    def _send_packets(self) -> None:
        out = self.out_packets
        if out:
            self.counters[PACKETS_OUT] += len(out)
            if self.dump:
                for pkt in joined(out):
                    self.to_proxy.send(messages.Notice("packet", "out " + describe(pkt[VNET_HDR_LEN:])))
            if self.tun_fd is None:
                self.to_tun.send(messages.Packets(joined(out)))
            else:
                write_packets(self.tun_fd, out)
            self.out_packets = []
            self.out_bytes = 0

    def _forget(self, flow: Flow, notify: bool) -> None:
        if self.flows.pop(flow.key, None) is not None:
            del self.by_id[flow.id]
            if notify:
                self.to_proxy.send(messages.FlowClosed(flow.id))

    def reset_all(self, reason: str) -> None:
        """The command is gone: tell the proxy every open flow has ended."""
        for flow in list(self.flows.values()):
            self.to_proxy.send(messages.FlowReset(flow.id, reason))
            self._forget(flow, notify=True)


def run(ctx: StageContext) -> None:
    # Two shapes (supervisor._run_pipeline): usually this shard reads its own queue of the
    # TUN device; with --dump-pcap a tun stage reads the device and sends us Packets.
    reads_tun = ctx.extra.get("reads_tun", False)
    if reads_tun:
        (from_proxy,), (to_proxy,) = ctx.inboxes(), ctx.outboxes()
        from_tun = to_tun = None
    else:
        from_tun, from_proxy = ctx.inboxes()
        to_tun, to_proxy = ctx.outboxes()
    tun_fd = ctx.extra["tun_fd"]
    shard = TcpShard(ctx.config.mtu, to_tun, to_proxy, ctx.counters, dump=ctx.config.dump_tcp,
                     tun_fd=None if ctx.config.dump_pcap else tun_fd)
    outboxes = [o for o in (to_tun, to_proxy) if o is not None]
    loop = Loop()
    monotonic = time.monotonic
    waiting_for_space = False

    def finish() -> None:
        """The command is gone and its last packets are processed: drain into the proxy."""
        shard.reset_all("the command exited")
        to_proxy.send(messages.Drain())
        to_proxy.flush_blocking(timeout=None)  # the proxy may wait for a slow sink
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
        shard.on_proxy(from_proxy.receive(), monotonic())

    def on_space() -> None:
        for outbox in outboxes:
            outbox.clear_space_fd()

    def after_batch() -> None:
        nonlocal waiting_for_space
        flushed = all([outbox.flush() for outbox in outboxes])
        if flushed != (not waiting_for_space):
            waiting_for_space = not flushed
            for outbox in outboxes:
                if waiting_for_space:
                    loop.add_reader(outbox.space_fd, on_space)
                else:
                    loop.remove_reader(outbox.space_fd)
        when = monotonic() if shard.busy else shard.next_timer()
        if waiting_for_space:
            retry = monotonic() + RETRY_FLUSH
            when = retry if when is None else min(when, retry)
        loop.timer_at = when

    loop.on_timer = shard.on_timer
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
