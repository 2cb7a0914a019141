"""The tcp stage's logic: :class:`TcpShard`, one shard's flows and what it does with each
packet from the command and each message from the proxy, apart from the stage's loop
(``httptap.stages.tcp``, whose docstring describes the stage: delayed ACKs, payloads held
in the proxy's ring, loopback refused). Driven in tests and benchmarks without a loop.

Compiled with the cores (``httptap/compiled.py``): its calls into the TCP core and the
wire format are then native calls, and its per-packet Python is C.
"""

from __future__ import annotations

import heapq
import random
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, cast

from ..plumbing import messages
from ..plumbing.stats import PACKETS_IN, PACKETS_OUT
from ..net.tcp.connection import State, TcpConnection, rst_for
from ..net.tcp.events import Acked, Closed, DataReceived, PeerEof, Reset
from ..net.tcp.segment import ACK, RST, SYN
from ..net.wire import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, ProtocolError,
                        VNET_HDR_LEN, build_icmp_echo_reply, build_tcp, build_tcp_vnet, build_udp,
                        describe, parse_icmp_echo, parse_ip, parse_tcp, parse_udp)
from ..plumbing.messages import CREDIT_STEP
from ..plumbing.stats import Counters
from ..net.tcp.segment import Segment
from ..plumbing.boxes import SMALL_DATA, OutboxLike
from .tun import Packet, joined, write_packets

RECV_BUFFER: Final = 4 << 20   # bytes the command may send ahead of the proxy's upstream writes
SEND_BUFFER: Final = 8 << 20   # bytes of the proxy's data we hold until the command acknowledges
MESSAGE_BYTES: Final = 256 << 10  # a Packets message is cut at about this size (rings cap records)
BURST: Final = 8  # data segments per flow per turn of the loop: then read the command's ACKs
# How long the ACK of a small request may wait for the answer to carry it (Linux's own
# delayed ACK waits up to 40 ms). A hold that runs out means no answer came in time: the
# proxy is slow, or the client waits for this very ACK (Nagle: a request written in two
# pieces). Which one, the next event tells: more data from the client first, and the
# flow ACKs at once for the rest of its life, so such a client loses ACK_DELAY once per
# connection; the answer first, and the flow's ACKs are held again. (Stopping for good
# on any late answer, measured with 50 wrk clients on a busy machine: 1.84 packets
# towards the command per request instead of ~1.) (Quick-ACK for the next 16 segments only, as Linux does,
# measured: a client writing each request head in two pieces, Nagle on, 300 keep-alive
# requests, p90 5.9-6.0 ms against 0.8-1.3 ms acknowledging at once.)
ACK_DELAY: Final = 0.005
# A flow in TIME_WAIT (1 s, the core's time_wait) ends at the next multiple of this on the
# monotonic clock: at one new connection per millisecond, a timer wake-up of the loop for
# each ending flow was one more wake-up per connection (measured: 451 wake-ups for 468
# ends in a 1.4 s run of perf/clients.py seq); on this grid it is one for all the flows
# whose TIME_WAIT ends within the same quarter of a second. TIME_WAIT lasts 1-1.25 s.
TIME_WAIT_GRID: Final = 0.25
# FlowClosed wakes nobody (``Outbox.send_lazy``): it rides with the next message the proxy
# is woken for (with one client opening connection after connection, the next FlowOpened,
# a moment later), or goes at most this late. Nothing waits on it: both sides have
# closed, so the proxy only closes its socket, whose server has closed too, and reports
# (the exchanges were reported already; the sink itself is woken at most every 5 ms).
# Saves the proxy one wake-up per connection.
CLOSED_WAKE_DELAY: Final = 0.005
# The proxy's payloads from this size on are kept in the send buffers as views of the ring
# they came in (no copy out of it), their records held until the command acknowledges
# their last byte. Smaller records (a keep-alive answer) are decoded and freed as before:
# no token to track and give back.
HOLD_LEAST: Final = SMALL_DATA
# Records are freed in ring order, so a payload held long holds up the ring for every
# flow: when the ring is short of room (over a half held), the oldest payloads held longer
# than this, or holding up mostly other flows' records, are copied out and their records
# given back (TcpShard.relieve). A command that keeps up acknowledges within a few ms; one
# that does not is slow, and costs a copy as before.
HOLD_AGE: Final = 0.02


_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


def leads_to_host_loopback(dst: bytes) -> bool:
    """Whether connecting to ``dst`` (4 or 16 bytes) from the host reaches its loopback:
    127.0.0.0/8, and 0.0.0.0/8 (Linux connects 0.0.0.0 to itself); ::1, :: (the same),
    and those IPv4 addresses mapped into IPv6 (``::ffff:127.0.0.1``), which a dual-stack
    socket connects to over IPv4."""
    if len(dst) == 16:
        if dst[:15] == bytes(15) and dst[15] in (0, 1):
            return True
        if dst[:12] != _V4_MAPPED:
            return False
        dst = dst[12:]
    return dst[0] in (127, 0)


# What the proxy sends about one flow.
_FlowMessage = (messages.FlowData | messages.FlowAcked | messages.FlowAccept | messages.FlowEof
                | messages.FlowReset | messages.FlowRefuse)
# (The classes written out: compiled, a type alias is no value to take apart at run time.)
_FLOW_MESSAGES: Final = frozenset((messages.FlowData, messages.FlowAcked, messages.FlowAccept,
                                   messages.FlowEof, messages.FlowReset, messages.FlowRefuse))

# A flow as the command sees it: its address, ours (the destination), its port, ours.
FlowKey = tuple[bytes, bytes, int, int]


class Flow:
    """One TCP connection from the command, as this shard knows it."""

    __slots__ = ("id", "key", "conn", "src", "dst", "sport", "dport", "accepted", "timer",
                 "acked", "ended", "ack_at_once", "ack_ran_out", "queued", "acked_total", "holds",
                 "held")

    def __init__(self, flow_id: int, key: FlowKey, conn: TcpConnection,
                 src: bytes, dst: bytes, sport: int, dport: int) -> None:
        self.id = flow_id
        self.key = key
        self.conn = conn
        # Addresses as the command sees them: it is the client (src), we play dst.
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.accepted = False
        self.timer: float | None = None
        self.acked = 0  # bytes the command acknowledged, not yet credited to the proxy
        self.ended = False  # the proxy was told (FlowClosed) and has forgotten the flow
        self.ack_at_once = False  # never hold this flow's ACKs again (see ACK_DELAY)
        self.ack_ran_out = False  # a held ACK ran out, and no answer has come since
        # Payloads kept as views of the proxy's ring (see HOLD_LEAST): for each, the count
        # of bytes queued when it was, its record's token and when it came; with the bytes
        # queued and acknowledged so far, to know when the command has them all.
        self.queued = self.acked_total = 0
        self.holds: deque[tuple[int, list[int], float]] | None = None
        self.held = 0  # ring bytes of those records


class TcpShard:
    """The stage's state and logic, separate from its loop so it can be driven in tests."""

    def __init__(self, mtu: int, to_tun: OutboxLike | None, to_proxy: OutboxLike,
                 counters: Counters, dump: bool = False, tun_fd: int | None = None,
                 release: Callable[[list[int]], None] | None = None) -> None:
        self.mtu = mtu
        self.tun_fd = tun_fd  # write packets to the device directly (else: through to_tun)
        self.dump = dump  # --dump-tcp: a line per packet, to the sink through the proxy
        self.to_tun = to_tun
        self.to_proxy = to_proxy
        self.counters = counters.v
        self.flows: dict[FlowKey, Flow] = {}
        self.by_id: dict[int, Flow] = {}
        self.next_id = 1
        self.timers: list[tuple[float, int]] = []
        self.out_packets: list[Packet] = []
        self.out_bytes = 0
        self.dirty: dict[int, Flow] = {}
        self.busy: dict[int, Flow] = {}  # flows whose window allows more than one burst
        # Flows holding an ACK (see ACK_DELAY), with its deadline. Deadlines are now +
        # ACK_DELAY and dicts keep insertion order: the first entry is the earliest.
        self.ack_due: dict[int, float] = {}
        self.refused_loopback = 0  # packets towards the host's loopback (said once, -v)
        # Gives back a held record of the proxy's ring (HoldingInbox.release); None: the
        # proxy's FlowData are not held (each is copied), as in tests without a ring.
        self.release = release
        self.holding: dict[int, Flow] = {}  # flows with payloads held in the ring
        self.forgotten: list[Flow] = []  # flows forgotten with payloads still held

    # --- from the command ----------------------------------------------------------------

    def on_packets(self, packets: Sequence[bytes | memoryview], now: float) -> None:
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
                    if leads_to_host_loopback(ip.dst):
                        self._refuse_loopback(ip.dst, dport, "UDP")
                        continue  # dropped, as a firewall would
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

    def _on_segment(self, src: bytes, dst: bytes, sport: int, dport: int, seg: Segment,
                    now: float) -> None:
        key = (src, dst, sport, dport)
        flow = self.flows.get(key)
        if flow is None:
            if seg.flags & (SYN | ACK | RST) == SYN:
                if not leads_to_host_loopback(dst):
                    self._open(key, src, dst, sport, dport, seg, now)
                    return
                self._refuse_loopback(dst, dport, "TCP")
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

    def _open(self, key: FlowKey, src: bytes, dst: bytes, sport: int, dport: int, seg: Segment,
              now: float) -> None:
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

    def _refuse_loopback(self, dst: bytes, dport: int, proto: str) -> None:
        self.refused_loopback += 1
        if self.refused_loopback == 1:  # a raw-packet flood must not flood the output too
            family = socket.AF_INET if len(dst) == 4 else socket.AF_INET6
            self.to_proxy.send(messages.Notice("info", (
                f"refused {proto} to {socket.inet_ntop(family, dst)} port {dport}: the host's "
                "loopback is reached only through 169.254.77.65 (host.httptap.local); "
                "further refusals are not shown")))

    # --- from the proxy ------------------------------------------------------------------

    def on_proxy(self, msgs: Sequence[messages.Message | messages.FlowDataView], now: float,
                 held: Sequence[list[int]] = ()) -> None:
        """The proxy's messages; ``held``: the token of each FlowDataView's record, in
        order (``HoldingInbox``), each given back to ``release`` once its bytes are no
        longer needed."""
        by_id = self.by_id
        tokens = iter(held)
        for msg in msgs:
            # By exact class, most frequent first (cheaper than match's class patterns).
            kind = type(msg)
            if kind is messages.FlowDataView:
                self._data_view(cast(messages.FlowDataView, msg), next(tokens), now)
                continue
            if kind is messages.DatagramOut:
                self._datagram_out(cast(messages.DatagramOut, msg))
                continue
            if kind not in _FLOW_MESSAGES:
                continue  # Drain
            flow = by_id.get(cast(_FlowMessage, msg).flow)
            if flow is None:
                continue  # already forgotten (reset meanwhile)
            conn = flow.conn
            if type(msg) is messages.FlowData:
                if conn.send(msg.data):
                    flow.queued += len(msg.data)
                flow.ack_ran_out = False  # the answer came: the proxy was only slow
            elif type(msg) is messages.FlowAcked:
                conn.consumed(msg.count)
            elif type(msg) is messages.FlowAccept:
                flow.accepted = True
                conn.accept(now)
            elif type(msg) is messages.FlowEof:
                conn.shutdown(now)
            elif type(msg) is messages.FlowReset:
                conn.abort(now)
            elif type(msg) is messages.FlowRefuse:
                if msg.reset:
                    conn.refuse(now)
                else:  # silence: the command's connect times out, as on a real network
                    self._forget(flow, notify=False)
                    continue
            self.dirty[flow.id] = flow
        self._finish(now)

    def _data_view(self, msg: messages.FlowDataView, token: list[int], now: float) -> None:
        """Bytes for the command that are a view of the proxy's ring (a large payload:
        ``HoldingInbox``): queued as they are, the record held until the command
        acknowledges their last byte (one copy of every byte fewer)."""
        release = self.release
        assert release is not None
        flow = self.by_id.get(msg.flow)
        data = msg.data
        if flow is None:
            release(token)
            return
        conn = flow.conn
        if conn.send(data):
            flow.queued += len(data)
            holds = flow.holds
            if holds is None:
                flow.holds = holds = deque()
            holds.append((flow.queued, token, now))
            flow.held += token[1] - token[0]
            token.append(flow.id)  # (Ring tokens take the consumer's own items after theirs)
            self.holding[flow.id] = flow
        else:
            release(token)  # dropped (the connection is closing): nothing refers to it
        self.dirty[flow.id] = flow

    def _give_back(self, flow: Flow, upto: int | None) -> None:
        """Release the held records of ``flow`` whose bytes the command acknowledged
        (all of them, with ``upto`` None)."""
        holds = flow.holds
        if holds is None:
            return
        release = self.release
        assert release is not None
        while holds and (upto is None or holds[0][0] <= upto):
            token = holds.popleft()[1]
            flow.held -= token[1] - token[0]
            release(token)
        if not holds:
            flow.holds = None
            del self.holding[flow.id]

    def relieve(self, now: float, limit: int, held: Callable[[], int],
                oldest: Callable[[], list[int] | None]) -> float | None:
        """The proxy's ring is short of room: ``held()`` (the ring's bytes not free yet,
        ``HoldingInbox``) is over ``limit``. Room is freed in ring order, so the flow that
        holds the oldest record (``oldest()``) holds up all of it: when that payload is
        older than ``HOLD_AGE`` (its command is slow to acknowledge), it is copied out and
        its record given back; all of that flow's are when most of the room it holds up
        is not its own (other flows' records, done with, wait behind it). Then the next
        oldest, while the ring is short. A single fast download is left alone. Returns
        when to look again, if the payload left holding is young. Call it only with no
        packet waiting to be written (they may refer to held payloads)."""
        while held() > limit:
            token = oldest()
            flow = None if token is None or len(token) < 4 else self.by_id.get(token[3])
            holds = None if flow is None else flow.holds
            if flow is None or holds is None:
                return None  # (not ours to keep: given back already)
            end, _, since = holds[0]
            if flow.held * 2 <= held():
                flow.conn.own_send_buffer()
                self._give_back(flow, None)
            elif now - since >= HOLD_AGE:
                # (its bytes are the first end - acked_total of the flow's send buffer)
                flow.conn.own_send_buffer(end - flow.acked_total)
                self._give_back(flow, end)
            else:
                return since + HOLD_AGE
        return None

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
        ack = next(iter(self.ack_due.values())) if self.ack_due else None
        timers = self.timers
        while timers:
            when, flow_id = timers[0]
            flow = self.by_id.get(flow_id)
            if flow is not None and flow.timer == when:
                return when if ack is None or when < ack else ack
            heapq.heappop(timers)  # stale entry
        return ack

    def on_timer(self, now: float) -> None:
        if self.busy:
            self.dirty.update(self.busy)
            self.busy.clear()
        # Held ACKs past their deadline: _finish sends them (their entries go there).
        for flow_id, due in self.ack_due.items():
            if due > now:
                break
            flow = self.by_id.get(flow_id)
            if flow is not None:
                self.dirty[flow_id] = flow
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
        ack_due = self.ack_due
        for flow in self.dirty.values():
            conn = flow.conn
            closed = False
            eof_left_out = False
            for event in conn.events():
                kind = type(event)
                if kind is DataReceived:
                    to_proxy.send_data(flow.id, event.data)
                    if flow.ack_ran_out:  # more, after the late ACK and before any answer:
                        flow.ack_at_once = True  # the client was waiting for that ACK
                elif kind is Acked:
                    flow.acked_total += event.count
                    if flow.holds is not None:
                        self._give_back(flow, flow.acked_total)
                    flow.acked += event.count
                    if flow.acked >= CREDIT_STEP:
                        to_proxy.send(messages.FlowAcked(flow.id, flow.acked))
                        flow.acked = 0
                elif kind is PeerEof:
                    # The command's FIN with the end of the connection in one pass (the
                    # server closed first, as after a Connection: close response; the
                    # state is this pass's last): the FlowClosed below says both, and
                    # FlowEof is left out (one message less per connection; the proxy
                    # closes upstream on FlowClosed as on FlowEof once the server's FIN is
                    # through). A reset after the FIN keeps the old order: FlowEof, FlowReset.
                    if not flow.ended and (conn.state is State.TIME_WAIT
                                           or conn.state is State.CLOSED):
                        eof_left_out = True
                    else:
                        to_proxy.send(messages.FlowEof(flow.id))
                elif kind is Reset:
                    if eof_left_out:
                        eof_left_out = False
                        to_proxy.send(messages.FlowEof(flow.id))
                    to_proxy.send(messages.FlowReset(flow.id, event.reason))
                elif kind is Closed:
                    closed = True
            hold = False
            if not flow.ack_at_once and conn.ack_can_wait():
                due = ack_due.get(flow.id)
                if due is None:
                    ack_due[flow.id] = due = now + ACK_DELAY
                hold = due > now
                if not hold:  # no answer in time: what comes next says why (ACK_DELAY)
                    flow.ack_ran_out = True
            if not hold:
                if ack_due:
                    ack_due.pop(flow.id, None)
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
            if conn.state is State.TIME_WAIT and not flow.ended:
                # Both FINs are through and ours is acknowledged: the stream is over both
                # ways. Tell the proxy now, so that it closes the upstream socket and frees
                # the flow, rather than when TIME_WAIT ends: holding every flow of the last
                # second cost ~30 MB at 1,000 new connections/s (perf/bench_memory.py).
                flow.ended = True
                to_proxy.send_lazy(messages.FlowClosed(flow.id))
            if conn.more_to_send:
                self.busy[flow.id] = flow
            when = conn.next_timer()
            if when is not None and conn.state is State.TIME_WAIT:
                when = -(-when // TIME_WAIT_GRID) * TIME_WAIT_GRID  # up to the grid
            if when != flow.timer:
                flow.timer = when
                if when is not None:
                    heapq.heappush(self.timers, (when, flow.id))
        self.dirty.clear()
        self._send_packets()
        if self.forgotten:
            self._give_back_forgotten()

    def _give_back_forgotten(self) -> None:
        for flow in self.forgotten:
            self._give_back(flow, None)
        self.forgotten.clear()

    def _send_packets(self) -> None:
        out = self.out_packets
        if out:
            self.counters[PACKETS_OUT] += len(out)
            if self.dump:
                for pkt in joined(out):
                    self.to_proxy.send(messages.Notice("packet", "out " + describe(pkt[VNET_HDR_LEN:])))
            if self.tun_fd is not None:
                write_packets(self.tun_fd, out)
            elif self.to_tun is not None:
                self.to_tun.send(messages.Packets(joined(out)))
            self.out_packets = []
            self.out_bytes = 0

    def _forget(self, flow: Flow, notify: bool) -> None:
        if self.flows.pop(flow.key, None) is not None:
            del self.by_id[flow.id]
            if flow.holds is not None:
                # Nothing more is sent from its buffer; its records are given back once
                # the packets built so far are written (they may refer to them).
                self.forgotten.append(flow)
            self.ack_due.pop(flow.id, None)
            if notify and not flow.ended:
                flow.ended = True
                self.to_proxy.send_lazy(messages.FlowClosed(flow.id))

    def reset_all(self, reason: str) -> None:
        """The command is gone: tell the proxy every open flow has ended."""
        for flow in list(self.flows.values()):
            if not flow.ended:
                self.to_proxy.send(messages.FlowReset(flow.id, reason))
            self._forget(flow, notify=True)
        self._send_packets()
        self._give_back_forgotten()
