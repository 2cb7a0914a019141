"""The parts of the TCP core on their own: receiver acceptability, NewReno, the RTT
estimator, and the congestion-control seam (a controller of our own plugged in).

Whole-connection behaviour (exact segments in and out) is in test_tcp_core.py; these
tests pin the pieces that module leaves to the helpers, with the RFCs' own numbers.
"""

from __future__ import annotations

import pytest

from httptap.net.tcp.congestion import DUPACK_THRESHOLD, INITIAL_CWND_SEGMENTS, NewReno
from httptap.net.tcp.connection import State, TcpConnection
from httptap.net.tcp.events import Acked, DataReceived, Event, PeerEof
from httptap.net.tcp.receiver import Receiver
from httptap.net.tcp.rtt import RTO_INITIAL, RTO_MAX, RTO_MIN, RttEstimator
from httptap.net.tcp.segment import ACK, SYN, Segment

SMSS = 1000

# ---------------------------------------------------------------- receiver


def receiver(buffer: int = 4000) -> tuple[Receiver, list[Event]]:
    events: list[Event] = []
    rcv = Receiver(buffer, 1460, events)
    rcv.synchronize(999)                       # RCV.NXT = 1000
    return rcv, events


def test_acceptability_table_rfc9293() -> None:
    rcv, _ = receiver(4000)
    assert rcv.rcv_nxt == 1000
    # Window > 0: a pure segment must start inside it, a longer one overlap it.
    assert rcv.acceptable(1000, 0) and rcv.acceptable(4999, 0)
    assert not rcv.acceptable(5000, 0) and not rcv.acceptable(999, 0)
    assert rcv.acceptable(999, 2) and rcv.acceptable(4999, 100)
    assert not rcv.acceptable(998, 2) and not rcv.acceptable(5000, 1)
    # Window 0: only a segment at RCV.NXT, with or without data (its ACK still counts).
    rcv.receive(1000, bytes(4000), 0)
    assert rcv.rcv_nxt == 5000
    rcv.window_field()                         # advertise the zero window
    assert rcv.acceptable(5000, 0) and rcv.acceptable(5000, 10)
    assert not rcv.acceptable(5001, 0) and not rcv.acceptable(4999, 0)
    assert not rcv.acceptable(5001, 10)


def test_segment_at_rcv_nxt_is_always_acceptable() -> None:
    """The connection skips the call for seq == RCV.NXT: every row must agree."""
    for buffer, fill in ((4000, 0), (4000, 4000), (4000, 1500)):
        rcv, _ = receiver(buffer)
        if fill:
            rcv.receive(1000, bytes(fill), 0)
        rcv.window_field()
        for seglen in (0, 1, 1460, 10_000):
            assert rcv.acceptable(rcv.rcv_nxt, seglen), (buffer, fill, seglen)


def test_receiver_reassembles_and_reports_fin_once() -> None:
    rcv, events = receiver()
    assert rcv.receive(1005, b"world", 1) is False          # ahead of a hole: FIN waits
    assert events == []
    assert rcv.receive(1000, b"hello", 0) is True           # the hole fills: data, then EOF
    assert events == [DataReceived(b"hello"), DataReceived(b"world"), PeerEof()]
    assert rcv.rcv_nxt == 1011                               # the FIN took one number


def test_window_field_scales_and_never_shrinks() -> None:
    rcv, _ = receiver(1 << 20)
    rcv.wscale = 5
    assert rcv.window_field() == (1 << 20) >> 5
    rcv.receive(1000, bytes(1000), 0)                       # 1000 unconsumed
    # 1 MiB - 1000 is not a multiple of 32: round up rather than move the edge left.
    assert rcv.window_field() == -(-((1 << 20) - 1000) // 32)
    assert rcv.rcv_adv >= 1000 + (1 << 20)
    assert rcv.consumed(1000) is False                      # nothing worth an update alone


# ---------------------------------------------------------------- NewReno (RFC 5681, 6582)


def test_newreno_slow_start_then_congestion_avoidance() -> None:
    cc = NewReno(SMSS, iss=0)
    assert cc.cwnd == INITIAL_CWND_SEGMENTS * SMSS           # RFC 6928
    assert cc.on_ack(ack=3000, acked=3000, snd_max=10_000) is False
    assert cc.cwnd == 13 * SMSS                              # slow start: + bytes acked
    cc.ssthresh = cc.cwnd
    cc.on_ack(ack=4000, acked=1000, snd_max=10_000)
    assert cc.cwnd == 13 * SMSS + SMSS * SMSS // (13 * SMSS)  # RFC 5681 eq. 3


def test_newreno_fast_retransmit_recovery_and_exit() -> None:
    cc = NewReno(SMSS, iss=0)
    for _ in range(DUPACK_THRESHOLD - 1):
        assert cc.on_dupack(snd_una=1, snd_max=8001) is False
    assert cc.on_dupack(snd_una=1, snd_max=8001) is True    # third: fast retransmit
    assert cc.ssthresh == 4000 and cc.cwnd == 4000 + 3 * SMSS and cc.recover == 8001
    assert cc.on_dupack(snd_una=1, snd_max=8001) is False   # inflate only
    assert cc.cwnd == 8000
    assert cc.on_ack(ack=2001, acked=2000, snd_max=8001) is True     # partial: next hole
    assert cc.cwnd == 8000 - 2000 + SMSS and cc.in_recovery
    assert cc.on_ack(ack=8001, acked=6000, snd_max=9001) is False    # full ACK: leave
    assert not cc.in_recovery and cc.cwnd == min(4000, max(1000, SMSS) + SMSS)


def test_newreno_no_second_reduction_for_one_window_after_timeout() -> None:
    cc = NewReno(SMSS, iss=0)
    cc.on_timeout(snd_una=1, snd_max=10_001)
    assert cc.cwnd == SMSS and cc.ssthresh == 5000 and cc.recover == 10_001
    for _ in range(DUPACK_THRESHOLD):                        # old data's duplicate ACKs
        assert cc.on_dupack(snd_una=2001, snd_max=10_001) is False
    assert cc.cwnd == SMSS


# ---------------------------------------------------------------- RTT estimator (RFC 6298)


def test_rtt_first_and_later_samples() -> None:
    rtt = RttEstimator()
    assert rtt.rto() == RTO_INITIAL
    rtt.sample(0.1)                                   # §2.2: SRTT = R, RTTVAR = R/2
    assert (rtt.srtt, rtt.rttvar) == (0.1, 0.05)
    assert rtt.rto() == pytest.approx(0.3)            # R + 4 * R/2
    rtt.sample(0.3)                                   # §2.3
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    for _ in range(30):
        rtt.sample(0.0)
    assert rtt.rto() == RTO_MIN                       # bounded below


def test_rtt_backoff_karn_and_timing() -> None:
    rtt = RttEstimator()
    rtt.start(end_seq=1000, now=1.0)
    rtt.on_ack(500, now=1.5)                          # not covered yet: no sample
    assert rtt.srtt is None
    rtt.on_timeout()                                  # §5.5 backoff; §3 Karn: stop timing
    rtt.on_timeout()
    assert rtt.rto() == 4 * RTO_INITIAL and rtt.timed_seq is None
    rtt.on_ack(1000, now=9.0)                         # a retransmission's ACK: no sample
    assert rtt.srtt is None and rtt.rto() == RTO_INITIAL
    for _ in range(10):
        rtt.on_timeout()
    assert rtt.rto() == RTO_MAX
    rtt.start(end_seq=2000, now=10.0)
    rtt.on_ack(2500, now=10.25)
    assert rtt.srtt == 0.25 and rtt.timed_seq is None


# ---------------------------------------------------------------- the congestion-control seam


class FixedWindow:
    """A controller of our own: two segments of window, and a log of what it heard."""

    def __init__(self, smss: int, iss: int) -> None:
        self.cwnd = 2 * smss
        self.heard: list[tuple[str, int]] = []
        self.retransmit_on_dupack = False

    def on_ack(self, ack: int, acked: int, snd_max: int) -> bool:
        self.heard.append(("ack", acked))
        return False

    def on_dupack(self, snd_una: int, snd_max: int) -> bool:
        self.heard.append(("dupack", snd_max - snd_una))
        return self.retransmit_on_dupack

    def on_timeout(self, snd_una: int, snd_max: int) -> None:
        self.heard.append(("timeout", snd_max - snd_una))


def test_a_plugged_in_controller_sizes_the_window_and_hears_acks() -> None:
    made: list[FixedWindow] = []

    def factory(smss: int, iss: int) -> FixedWindow:
        made.append(FixedWindow(smss, iss))
        return made[-1]

    conn = TcpConnection(Segment(1000, 0, SYN, 60_000, mss=1460), iss=5000, now=0.0,
                         congestion=factory)
    conn.accept(0.0)
    conn.segments_to_send(0.0)
    conn.receive(Segment(1001, 5001, ACK, 60_000), 0.0)
    assert conn.state is State.ESTABLISHED and len(made) == 1
    cc = made[0]
    conn.events()
    conn.send(bytes(10_000))
    segs = conn.segments_to_send(1.0)
    assert [(s.seq, len(s.payload)) for s in segs] == [(5001, 1460), (6461, 1460)]
    conn.receive(Segment(1001, 6461, ACK, 60_000), 1.01)
    assert cc.heard == [("ack", 1), ("ack", 1460)]          # the SYN's number, then data
    assert conn.events() == [Acked(1460)]
    assert [s.seq for s in conn.segments_to_send(1.01)] == [7921]   # still two in flight
    cc.retransmit_on_dupack = True
    conn.receive(Segment(1001, 6461, ACK, 60_000), 1.02)
    assert cc.heard[-1] == ("dupack", 2920)
    # The controller asked for a retransmission: the segment at SND.UNA goes again.
    assert conn.segments_to_send(1.02) == [Segment(6461, 1001, ACK, 0xFFFF, bytes(1460))]
    when = conn.next_timer()
    assert when is not None
    conn.handle_timer(when)
    assert cc.heard[-1] == ("timeout", 2920)
