"""CPU time per segment of the pure TCP core and of the tcp stage's logic, in one process.

Run:  python perf/bench_tcpcore.py [--reps N] [--core DIR]

No network, no rings, no TUN device. The first three cases drive one passive
``TcpConnection`` the way the tcp stage does (the stage's MSS, buffers and burst of 8; a
peer with Linux's SYN options) against a scripted peer; the fourth drives the stage:

  download   we send: ``send()`` 256 KiB chunks, ``segments_to_send(now, 8)``, the peer
             ACKs every second segment; µs per data segment sent (its ACK included)
  upload     the peer sends full-MSS segments in bursts of 8; ``receive()`` each, then
             ``events()``, ``consumed()`` and ``segments_to_send()`` (one ACK); µs per
             data segment received
  new_conn   SYN, accept, SYN-ACK, ACK, a 100-byte request, a 1 KiB answer, FIN both
             ways: µs per connection
  stage_ka   the tcp stage's ``TcpShard`` with in-memory outboxes, one keep-alive flow:
             a 100-byte request packet in (the shard ACKs it), the proxy's credit and a
             1 KiB answer, the command's ACK in; µs per segment (four per request),
             packet parsing and building included

The peer's segments are built inside the timed loop in every case (as the stage builds
them from packets), so the numbers are the core plus a little harness. Each case runs
``--reps`` times; the best run counts (the machine's noise only ever adds time). Time is
the process's CPU time, so waiting for a core on a busy machine does not count.
``--core DIR`` imports ``httptap`` from DIR instead of this checkout, to compare two
versions of the core on the same machine in the same minute (see perf/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--core", help="directory that holds the httptap package to measure")
args = ap.parse_args()
sys.path.insert(0, args.core or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if args.core:
    # An editable install's finder would answer for modules DIR lacks (an older layout)
    # with this checkout's files, silently measuring this checkout: measure DIR alone.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]

from httptap.net.tcp.connection import TcpConnection  # noqa: E402
from httptap.net.tcp.events import DataReceived  # noqa: E402
from httptap.net.tcp.segment import ACK, FIN, PSH, SYN, Segment  # noqa: E402

MSS = 65480                     # the stage's MSS at MTU 65520 (IPv4)
BUF = 4 << 20                   # the stage's receive and send buffers
BURST = 8
PEER_ISN = 1000
ISS = 5000
PEER_WINDOW = 0xFFFF            # scaled by 2**7: the peer offers 8 MiB
MASK = 0xFFFFFFFF


def _open(now: float) -> TcpConnection:
    syn = Segment(PEER_ISN, 0, SYN, 64240, mss=MSS, wscale=7, sack_permitted=True,
                  ts_val=1, ts_ecr=0)
    conn = TcpConnection(syn, iss=ISS, now=now, mss=MSS, recv_buffer=BUF, send_buffer=BUF)
    conn.accept(now)
    conn.segments_to_send(now)
    conn.receive(Segment(PEER_ISN + 1, ISS + 1, ACK, PEER_WINDOW, ts_val=2, ts_ecr=0), now)
    conn.events()
    return conn


def download(total: int) -> tuple[float, int]:
    now = 1.0
    conn = _open(now)
    chunk = bytes(256 << 10)
    queued = segs = 0
    rcv = PEER_ISN + 1
    t0 = time.process_time()
    while segs < total:
        while conn.send_space() >= len(chunk):
            conn.send(chunk)
            queued += len(chunk)
        out = conn.segments_to_send(now, BURST)
        pending = 0
        for seg in out:
            if seg.payload:
                segs += 1
                pending += 1
                if pending == 2:
                    end = (seg.seq + len(seg.payload)) & MASK
                    conn.receive(Segment(rcv, end, ACK, PEER_WINDOW, ts_val=3, ts_ecr=seg.ts_val),
                                 now)
                    pending = 0
        if pending:
            last = out[-1]
            end = (last.seq + len(last.payload)) & MASK
            conn.receive(Segment(rcv, end, ACK, PEER_WINDOW, ts_val=3, ts_ecr=last.ts_val), now)
        conn.events()
        now += 0.0001
    return time.process_time() - t0, segs


def upload(total: int) -> tuple[float, int]:
    now = 1.0
    conn = _open(now)
    payload = bytes(MSS)
    seq = PEER_ISN + 1
    segs = 0
    t0 = time.process_time()
    while segs < total:
        for _ in range(BURST):
            conn.receive(Segment(seq & MASK, ISS + 1, ACK | PSH, PEER_WINDOW, payload,
                                 ts_val=4, ts_ecr=5), now)
            seq += MSS
            segs += 1
        n = 0
        for ev in conn.events():
            if type(ev) is DataReceived:
                n += len(ev.data)
        assert n == BURST * MSS, n  # every segment was in order and delivered
        conn.consumed(n)
        conn.segments_to_send(now, BURST)
        now += 0.0001
    return time.process_time() - t0, segs


def new_conn(total: int) -> tuple[float, int]:
    request = bytes(100)
    answer = bytes(1024)
    now = 1.0
    t0 = time.process_time()
    for _ in range(total):
        conn = _open(now)
        conn.receive(Segment(PEER_ISN + 1, ISS + 1, ACK | PSH, PEER_WINDOW, request,
                             ts_val=2, ts_ecr=0), now)
        conn.events()
        conn.consumed(len(request))
        conn.send(answer)
        conn.segments_to_send(now, BURST)
        rcv = PEER_ISN + 1 + len(request)
        conn.receive(Segment(rcv, ISS + 1 + len(answer), ACK | FIN, PEER_WINDOW,
                             ts_val=3, ts_ecr=0), now)
        conn.events()
        conn.shutdown(now)
        conn.segments_to_send(now, BURST)
        conn.receive(Segment(rcv + 1, ISS + 2 + len(answer), ACK, PEER_WINDOW,
                             ts_val=4, ts_ecr=0), now)
        conn.events()
        now += 0.001
    elapsed = time.process_time() - t0
    assert conn.state.name == "CLOSED", conn.state  # the script really closed them
    return elapsed, total


class _Sink:
    """An outbox that keeps nothing: the stage's messages are built, then dropped."""

    def __init__(self) -> None:
        self.last: object = None

    def send(self, msg: object) -> None:
        self.last = msg

    def send_data(self, flow: int, data: bytes) -> None:
        self.last = data


def stage_ka(total: int) -> tuple[float, int]:
    from httptap.plumbing import messages as m
    from httptap.stages.tcp import TcpShard
    from httptap.plumbing.stats import Counters
    from httptap.net.wire import VNET_HDR_LEN, build_tcp, parse_ip, parse_tcp
    client, server = bytes([10, 1, 1, 100]), bytes([10, 77, 1, 2])

    def packet(seg: Segment) -> bytes:
        return build_tcp(client, server, 40000, 80, seg, vnet=False)

    to_tun = _Sink()
    shard = TcpShard(65520, to_tun, _Sink(), Counters())
    now = 1.0
    shard.on_packets([packet(Segment(PEER_ISN, 0, SYN, 64240, mss=MSS, wscale=7,
                                     sack_permitted=True, ts_val=1, ts_ecr=0))], now)
    shard.on_proxy([m.FlowAccept(1)], now)
    assert isinstance(to_tun.last, m.Packets)     # the SYN-ACK: learn the shard's ISS
    siss = parse_tcp(parse_ip(to_tun.last.packets[0][VNET_HDR_LEN:]).payload)[2].seq
    shard.on_packets([packet(Segment(PEER_ISN + 1, (siss + 1) & MASK, ACK, PEER_WINDOW,
                                     ts_val=2, ts_ecr=0))], now)
    request, answer = bytes(100), bytes(1024)
    # The command's packets, built before the clock starts (the kernel builds them).
    reqs, acks = [], []
    for i in range(total):
        seq, ack = PEER_ISN + 1 + i * 100, siss + 1 + i * 1024
        reqs.append([packet(Segment(seq & MASK, ack & MASK, ACK | PSH, PEER_WINDOW, request,
                                    ts_val=3, ts_ecr=0))])
        acks.append([packet(Segment((seq + 100) & MASK, (ack + 1024) & MASK, ACK, PEER_WINDOW,
                                    ts_val=3, ts_ecr=0))])
    from_proxy = [m.FlowAcked(1, 100), m.FlowData(1, answer)]
    t0 = time.process_time()
    for i in range(total):
        shard.on_packets(reqs[i], now)
        shard.on_proxy(from_proxy, now)
        shard.on_packets(acks[i], now)
    elapsed = time.process_time() - t0
    conn = shard.by_id[1].conn
    assert conn.state.name == "ESTABLISHED" and not conn.send_space() < (4 << 20), conn.state
    return elapsed, 4 * total


CASES = [("download", download, 50_000, "data segment"),
         ("upload", upload, 50_000, "data segment"),
         ("new_conn", new_conn, 5_000, "connection"),
         ("stage_ka", stage_ka, 20_000, "segment")]

for name, fn, count, unit in CASES:
    best = min(elapsed / n for elapsed, n in (fn(count) for _ in range(args.reps)))
    print(f"{name:9} {best * 1e6:7.3f} µs per {unit}")
