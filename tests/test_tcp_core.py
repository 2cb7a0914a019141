"""Exact-segment tests of the TCP core: feed segments and a fake clock, assert what comes out.

Conventions: the peer (the command's kernel) uses ISN 1000, we use ISS 5000, so the first
data byte each way is 1001 / 5001. Most tests use a peer that offers no window scaling or
timestamps and a 10 000-byte receive buffer, so windows are plain numbers.
"""

from __future__ import annotations


import pytest

from httptap.net.tcp.connection import (MAX_RETRANSMITS, MAX_SYN_RETRANSMITS, RTO_MAX, State,
                                    TcpConnection, rst_for)
from httptap.net.tcp.events import (Acked, Closed, DataReceived, Established, PeerEof,
                                Reset)
from httptap.net.tcp.rangeset import RangeSet, Reassembly
from httptap.net.tcp.segment import ACK, FIN, PSH, RST, SYN, Segment
from httptap.net.tcp.seq import seq_add, seq_diff, seq_le, seq_lt, unwrap

A, F, P, R, S = ACK, FIN, PSH, RST, SYN


def peer_syn(**opts) -> Segment:
    return Segment(1000, 0, SYN, 29200, **opts)


def server(recv_buffer: int = 10_000, peer_window: int = 20_000, now: float = 0.0,
           syn: Segment | None = None, **kw) -> TcpConnection:
    """A passive connection taken through the handshake (peer MSS 1460, no other options)."""
    conn = TcpConnection(syn or peer_syn(mss=1460), iss=5000, now=now, recv_buffer=recv_buffer,
                         **kw)
    conn.accept(now)
    conn.segments_to_send(now)
    conn.receive(Segment(1001, 5001, A, peer_window), now)
    assert conn.state is State.ESTABLISHED
    assert conn.events() == [Established()]
    return conn


def ack(seq: int, ack_: int, window: int = 20_000, payload: bytes = b"", flags: int = A) -> Segment:
    return Segment(seq, ack_, flags, window, payload)


# ---------------------------------------------------------------- handshake


def test_handshake_with_options() -> None:
    syn = peer_syn(mss=65483, wscale=7, sack_permitted=True, ts_val=777, ts_ecr=0)
    conn = TcpConnection(syn, iss=5000, now=1.0)
    assert conn.state is State.LISTEN
    assert conn.segments_to_send(1.0) == []          # nothing before upstream answers
    conn.accept(1.5)
    assert conn.state is State.SYN_RECEIVED
    assert conn.segments_to_send(1.5) == [
        Segment(5000, 1001, S | A, 65535, mss=65480, wscale=7, sack_permitted=True,
                ts_val=1500, ts_ecr=777)]
    conn.receive(Segment(1001, 5001, A, 512, ts_val=778, ts_ecr=1500), 1.6)
    assert conn.state is State.ESTABLISHED
    assert conn.events() == [Established()]
    assert conn.snd.snd_wnd == 512 << 7
    assert conn.segments_to_send(1.6) == []          # a pure ACK needs no answer
    # Data both ways now carries timestamps; the window is scaled by our shift (7).
    conn.send(b"hi")
    assert conn.segments_to_send(1.7) == [
        Segment(5001, 1001, A | P, (4 << 20) >> 7, b"hi", ts_val=1700, ts_ecr=778)]
    conn.receive(Segment(1001, 5003, A | P, 512, b"yo", ts_val=790, ts_ecr=1700), 1.8)
    assert conn.events() == [Acked(2), DataReceived(b"yo")]
    # 2 bytes unconsumed: the window rounds up rather than move the right edge left.
    assert conn.segments_to_send(1.8) == [
        Segment(5003, 1003, A, (4 << 20) >> 7, ts_val=1800, ts_ecr=790)]


def test_handshake_without_options() -> None:
    conn = TcpConnection(peer_syn(), iss=5000, now=0.0, recv_buffer=100_000)
    conn.accept(0.0)
    assert conn.segments_to_send(0.0) == [Segment(5000, 1001, S | A, 65535, mss=65480)]
    conn.receive(ack(1001, 5001), 0.1)
    assert conn.events() == [Established()]
    # No MSS option from the peer: 536-byte segments; no wscale: window capped at 65535.
    conn.send(bytes(1000))
    assert conn.segments_to_send(0.2) == [
        Segment(5001, 1001, A, 65535, bytes(536)),
        Segment(5537, 1001, A | P, 65535, bytes(464))]


def test_wscale_only_when_offered_and_fits_buffer() -> None:
    conn = TcpConnection(peer_syn(wscale=2), iss=5000, now=0.0, recv_buffer=1 << 20)
    conn.accept(0.0)
    assert conn.segments_to_send(0.0)[0].wscale == 5     # 2**20 >> 4 is 65536: one too many
    small = TcpConnection(peer_syn(wscale=2), iss=5000, now=0.0, recv_buffer=60_000)
    small.accept(0.0)
    assert small.segments_to_send(0.0)[0].wscale == 0


def test_synack_retransmitted_on_timeout_and_on_duplicate_syn() -> None:
    conn = TcpConnection(peer_syn(mss=1460), iss=5000, now=0.0, recv_buffer=10_000)
    conn.accept(0.0)
    synack = Segment(5000, 1001, S | A, 10_000, mss=65480)
    assert conn.segments_to_send(0.0) == [synack]
    assert conn.next_timer() == 1.0                       # RFC 6298 initial RTO
    conn.handle_timer(0.999)
    assert conn.segments_to_send(0.999) == []
    conn.handle_timer(1.0)
    assert conn.segments_to_send(1.0) == [synack]
    assert conn.next_timer() == 3.0                       # backed off to 2 s
    conn.receive(peer_syn(mss=1460), 1.5)                 # the peer retransmits its SYN
    assert conn.segments_to_send(1.5) == [synack]
    assert conn.next_timer() == 3.0
    t = 3.0
    for _ in range(MAX_SYN_RETRANSMITS - 1):
        conn.handle_timer(t)
        assert conn.segments_to_send(t) == [synack]
        t = conn.next_timer()
    conn.handle_timer(t)
    assert conn.events() == [Reset("timeout"), Closed()]
    assert conn.state is State.CLOSED
    assert conn.segments_to_send(t) == [] and conn.next_timer() is None


def test_refuse_answers_syn_with_rst() -> None:
    conn = TcpConnection(peer_syn(mss=1460), iss=5000, now=0.0)
    conn.refuse(0.1)
    assert conn.state is State.CLOSED
    assert conn.segments_to_send(0.1) == [Segment(0, 1001, R | A, 0)]
    assert conn.events() == [Closed()]
    assert conn.next_timer() is None


def test_bad_ack_in_syn_received_draws_rst() -> None:
    conn = TcpConnection(peer_syn(mss=1460), iss=5000, now=0.0)
    conn.accept(0.0)
    conn.segments_to_send(0.0)
    conn.receive(ack(1001, 9999), 0.1)
    assert conn.segments_to_send(0.1) == [Segment(9999, 0, R, 0)]
    assert conn.state is State.SYN_RECEIVED


def test_handshake_ack_carrying_data() -> None:
    conn = TcpConnection(peer_syn(mss=1460), iss=5000, now=0.0, recv_buffer=10_000)
    conn.accept(0.0)
    conn.segments_to_send(0.0)
    conn.receive(ack(1001, 5001, payload=b"GET /", flags=A | P), 0.1)
    assert conn.events() == [Established(), DataReceived(b"GET /")]
    assert conn.segments_to_send(0.1) == [Segment(5001, 1006, A, 9995)]


# ---------------------------------------------------------------- data


def test_data_from_peer_acked_once_per_batch() -> None:
    conn = server()
    conn.receive(ack(1001, 5001, payload=b"hello", flags=A | P), 1.0)
    conn.receive(ack(1006, 5001, payload=b" world"), 1.0)
    assert conn.events() == [DataReceived(b"hello"), DataReceived(b" world")]
    assert conn.segments_to_send(1.0) == [Segment(5001, 1012, A, 9989)]
    assert conn.segments_to_send(1.0) == []
    conn.consumed(11)                        # small change: no window update
    assert conn.segments_to_send(1.0) == []
    conn.receive(ack(1012, 5001, payload=b"!"), 1.1)
    assert conn.segments_to_send(1.1) == [Segment(5001, 1013, A, 9999)]


def test_ack_can_wait_only_for_a_little_in_order_data() -> None:
    """The ACK a caller may hold for an answer to carry (RFC 1122 §4.2.3.2): a pure ACK
    of in-order data since our last ACK, under two segments of it; nothing else."""
    conn = server(mss=1000, syn=peer_syn(mss=1460, sack_permitted=True))
    assert not conn.ack_can_wait()                       # nothing to acknowledge
    conn.receive(ack(1001, 5001, payload=b"x" * 100), 1.0)
    assert conn.ack_can_wait()
    conn.segments_to_send(1.0)
    conn.receive(ack(1101, 5001, payload=b"x" * 100), 1.1)
    assert conn.ack_can_wait()
    assert conn.segments_to_send(1.1) == [Segment(5001, 1201, A, 9800)]  # sent when asked
    assert not conn.ack_can_wait()
    conn.receive(ack(1201, 5001, payload=b"x" * 1999), 1.2)
    assert conn.ack_can_wait()                           # under two segments (2 * 1000)
    conn.receive(ack(3200, 5001, payload=b"x"), 1.2)
    assert not conn.ack_can_wait()                       # two segments' worth: ACK now
    conn.segments_to_send(1.2)
    conn.receive(ack(3301, 5001, payload=b"x" * 10), 1.3)  # a gap: a duplicate ACK, at once
    assert not conn.ack_can_wait()
    conn.receive(ack(3201, 5001, payload=b"x" * 100), 1.3)  # filled
    assert conn.ack_can_wait()
    conn.send(b"answer")
    assert not conn.ack_can_wait()                       # the answer carries it
    conn.segments_to_send(1.3)
    conn.receive(ack(3311, 5007, payload=b"bye", flags=A | F), 1.4)
    assert not conn.ack_can_wait()                       # a FIN is acknowledged at once


def test_ack_can_wait_not_when_the_window_is_nearly_used_up() -> None:
    conn = server(mss=1000, recv_buffer=10_000)
    conn.receive(ack(1001, 5001, payload=b"x" * 1500), 1.0)
    assert conn.ack_can_wait()                           # 8500 of the 10000 offered are left
    conn.segments_to_send(1.0)                           # (nothing consumed: 8500 offered)
    conn.receive(ack(2501, 5001, payload=b"x" * 1500), 1.1)
    conn.segments_to_send(1.1)
    conn.receive(ack(4001, 5001, payload=b"x" * 1500), 1.2)
    conn.segments_to_send(1.2)
    conn.receive(ack(5501, 5001, payload=b"x" * 1500), 1.3)
    conn.segments_to_send(1.3)
    conn.receive(ack(7001, 5001, payload=b"x" * 1500), 1.4)
    assert conn.ack_can_wait()                           # 2500 left
    conn.segments_to_send(1.4)
    conn.receive(ack(8501, 5001, payload=b"x" * 1000), 1.5)
    assert not conn.ack_can_wait()                       # 1500 left: under two segments


def test_ack_piggybacks_on_data() -> None:
    conn = server()
    conn.receive(ack(1001, 5001, payload=b"ping"), 1.0)
    conn.send(b"pong")
    assert conn.segments_to_send(1.0) == [Segment(5001, 1005, A | P, 9996, b"pong")]


def test_data_to_peer_segmented_by_mss_and_acked() -> None:
    conn = server()
    conn.send(bytes(range(256)) * 12)       # 3072 bytes
    assert conn.send_space() == (4 << 20) - 3072
    segs = conn.segments_to_send(1.0)
    assert segs == [Segment(5001, 1001, A, 10_000, (bytes(range(256)) * 12)[:1460]),
                    Segment(6461, 1001, A, 10_000, (bytes(range(256)) * 12)[1460:2920]),
                    Segment(7921, 1001, A | P, 10_000, (bytes(range(256)) * 12)[2920:])]
    assert conn.next_timer() == pytest.approx(1.2)   # RTO from the handshake sample, min 200 ms
    conn.receive(ack(1001, 7921), 1.01)
    assert conn.events() == [Acked(2920)]
    assert conn.next_timer() is not None
    conn.receive(ack(1001, 8073), 1.02)
    assert conn.events() == [Acked(152)]
    assert conn.next_timer() is None
    assert conn.send_space() == 4 << 20
    assert conn.segments_to_send(1.02) == []


def test_burst_limits_new_segments_and_says_more_is_allowed() -> None:
    conn = server(peer_window=20_000)
    data = bytes(range(256)) * 20                 # 5120 bytes: four segments' worth
    conn.send(data)
    first = conn.segments_to_send(1.0, burst=2)
    assert [(s.seq, len(s.payload)) for s in first] == [(5001, 1460), (6461, 1460)]
    assert conn.more_to_send
    rest = conn.segments_to_send(1.0, burst=2)
    assert [(s.seq, len(s.payload)) for s in rest] == [(7921, 1460), (9381, 740)]
    assert b"".join(bytes(s.payload) for s in first + rest) == data
    assert not conn.more_to_send                  # all sent, though the burst was used up
    conn.receive(ack(1001, 10121, window=1000), 1.1)
    conn.send(bytes(3000))
    assert len(conn.segments_to_send(1.1, burst=1)) == 1
    assert not conn.more_to_send                  # the peer's window allows no more


def test_send_respects_peer_window_and_avoids_silly_segments() -> None:
    conn = server(peer_window=2000)
    conn.send(bytes(5000))
    # 540 more bytes would fit, but a small segment while data is in flight is silly
    # (RFC 9293 §3.8.6.2.1: below half the largest window seen, 29200 in the SYN).
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A | P, 10_000, bytes(1460))]
    conn.receive(ack(1001, 6461, window=3000), 1.1)
    assert conn.events() == [Acked(1460)]
    assert conn.segments_to_send(1.1) == [Segment(6461, 1001, A, 10_000, bytes(1460)),
                                          Segment(7921, 1001, A | P, 10_000, bytes(1460))]
    conn.receive(ack(1001, 9381, window=500), 1.2)     # nothing in flight: small is fine
    assert conn.segments_to_send(1.2) == [Segment(9381, 1001, A | P, 10_000, bytes(500))]
    conn.receive(ack(1001, 9881, window=5000), 1.3)
    assert conn.segments_to_send(1.3) == [Segment(9881, 1001, A | P, 10_000, bytes(120))]


def test_out_of_order_delivered_when_gap_fills_with_sack() -> None:
    conn = server(syn=peer_syn(mss=1460, sack_permitted=True))
    a, b, c = b"a" * 100, b"b" * 100, b"c" * 100
    conn.receive(ack(1201, 5001, payload=c), 1.0)
    conn.receive(ack(1101, 5001, payload=b), 1.0)
    assert conn.events() == []
    assert conn.segments_to_send(1.0) == [
        Segment(5001, 1001, A, 10_000, sack=((1101, 1301),))]
    conn.receive(ack(1051, 5001, payload=a[50:] + b[:50]), 1.1)   # overlaps the stored range
    assert conn.segments_to_send(1.1) == [
        Segment(5001, 1001, A, 10_000, sack=((1051, 1301),))]   # still missing 1001..1051
    conn.receive(ack(1001, 5001, payload=a), 1.2)
    assert conn.events() == [DataReceived(a), DataReceived(b + c)]
    assert conn.segments_to_send(1.2) == [Segment(5001, 1301, A, 9700)]
    conn.receive(ack(1001, 5001, payload=a), 1.3)                  # pure duplicate
    assert conn.events() == []
    assert conn.segments_to_send(1.3) == [Segment(5001, 1301, A, 9700)]


def test_out_of_order_fin_waits_for_data() -> None:
    conn = server()
    conn.receive(ack(1006, 5001, payload=b"world", flags=A | F), 1.0)
    assert conn.events() == []
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A, 10_000)]
    conn.receive(ack(1001, 5001, payload=b"hello"), 1.1)
    assert conn.events() == [DataReceived(b"hello"), DataReceived(b"world"), PeerEof()]
    assert conn.state is State.CLOSE_WAIT
    assert conn.segments_to_send(1.1) == [Segment(5001, 1012, A, 9990)]


def test_window_update_when_consumed_reopens() -> None:
    conn = server()
    for i in range(6):
        conn.receive(ack(1001 + 1460 * i, 5001, payload=bytes(1460)), 1.0)
    conn.receive(ack(1001 + 8760, 5001, payload=bytes(740)), 1.0)   # fills 9500 of 10 000
    assert len(conn.events()) == 7
    assert conn.segments_to_send(1.0) == [Segment(5001, 10501, A, 500)]
    conn.receive(ack(10501, 5001, payload=bytes(600)), 1.1)          # only 500 fit
    assert conn.events() == [DataReceived(bytes(500))]
    assert conn.segments_to_send(1.1) == [Segment(5001, 11001, A, 0)]
    conn.consumed(10_000)
    assert conn.segments_to_send(1.2) == [Segment(5001, 11001, A, 10_000)]


def test_data_beyond_window_is_trimmed_and_window_never_shrinks() -> None:
    conn = server(recv_buffer=1000)
    conn.receive(ack(1001, 5001, payload=bytes(1200)), 1.0)
    assert conn.events() == [DataReceived(bytes(1000))]
    assert conn.segments_to_send(1.0) == [Segment(5001, 2001, A, 0)]
    assert conn.rcv.rcv_adv == 2001


# ---------------------------------------------------------------- closing


def test_peer_closes_first() -> None:
    conn = server()
    conn.receive(ack(1001, 5001, payload=b"bye", flags=A | F | P), 1.0)
    assert conn.events() == [DataReceived(b"bye"), PeerEof()]
    assert conn.state is State.CLOSE_WAIT
    assert conn.segments_to_send(1.0) == [Segment(5001, 1005, A, 9997)]
    assert conn.send(b"ok")
    conn.shutdown(1.1)
    assert not conn.send(b"late")  # after our FIN: dropped, and the caller is told
    assert conn.state is State.LAST_ACK
    assert conn.segments_to_send(1.1) == [Segment(5001, 1005, A | F | P, 9997, b"ok")]
    conn.receive(ack(1005, 5003), 1.2)                             # data acked, FIN not yet
    assert conn.state is State.LAST_ACK
    conn.receive(ack(1005, 5004), 1.2)
    assert conn.state is State.CLOSED
    assert conn.events() == [Acked(2), Closed()]
    assert conn.next_timer() is None


def test_we_close_first_then_time_wait() -> None:
    conn = server()
    conn.shutdown(1.0)
    assert conn.state is State.FIN_WAIT_1
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A | F, 10_000)]
    conn.receive(ack(1001, 5002), 1.1)
    assert conn.state is State.FIN_WAIT_2
    assert conn.next_timer() is None
    conn.receive(ack(1001, 5002, payload=b"last"), 1.2)              # half-closed: still receives
    assert conn.events() == [DataReceived(b"last")]
    conn.receive(ack(1005, 5002, flags=A | F), 1.3)
    assert conn.state is State.TIME_WAIT
    assert conn.events() == [PeerEof()]
    assert conn.segments_to_send(1.3) == [Segment(5002, 1006, A, 9996)]
    assert conn.next_timer() == pytest.approx(2.3)
    conn.receive(ack(1005, 5002, flags=A | F), 1.8)                  # our ACK was lost
    assert conn.segments_to_send(1.8) == [Segment(5002, 1006, A, 9996)]
    assert conn.next_timer() == pytest.approx(2.8)                   # 2*MSL restarted
    conn.handle_timer(2.7)
    assert conn.state is State.TIME_WAIT
    conn.handle_timer(2.8)
    assert conn.state is State.CLOSED
    assert conn.events() == [Closed()]


def test_simultaneous_close_goes_through_closing() -> None:
    conn = server(time_wait=0.5)
    conn.send(b"x")
    conn.shutdown(1.0)
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A | F | P, 10_000, b"x")]
    conn.receive(ack(1001, 5001, flags=A | F), 1.1)                  # peer's FIN crosses ours
    assert conn.state is State.CLOSING
    assert conn.events() == [PeerEof()]
    assert conn.segments_to_send(1.1) == [Segment(5003, 1002, A, 10_000)]
    conn.receive(ack(1002, 5003), 1.2)
    assert conn.state is State.TIME_WAIT
    assert conn.events() == [Acked(1)]
    conn.handle_timer(1.7)
    assert conn.events() == [Closed()]


def test_shutdown_before_handshake_completes() -> None:
    conn = TcpConnection(peer_syn(mss=1460), iss=5000, now=0.0, recv_buffer=10_000)
    conn.accept(0.0)
    conn.send(b"early")
    conn.shutdown(0.0)
    assert conn.segments_to_send(0.0) == [Segment(5000, 1001, S | A, 10_000, mss=65480)]
    conn.receive(ack(1001, 5001), 0.1)
    assert conn.state is State.FIN_WAIT_1
    assert conn.segments_to_send(0.1) == [Segment(5001, 1001, A | F | P, 10_000, b"early")]


def test_fin_retransmitted() -> None:
    conn = server()
    conn.shutdown(1.0)
    fin = Segment(5001, 1001, A | F, 10_000)
    assert conn.segments_to_send(1.0) == [fin]
    conn.handle_timer(conn.next_timer())
    assert conn.segments_to_send(1.2) == [fin]


# ---------------------------------------------------------------- resets


def test_rst_received_exact_sequence() -> None:
    conn = server()
    conn.receive(Segment(1001, 0, R, 0), 1.0)
    assert conn.state is State.CLOSED
    assert conn.events() == [Reset("reset"), Closed()]
    assert conn.segments_to_send(1.0) == []


def test_rst_in_window_gets_challenge_ack_out_of_window_ignored() -> None:
    conn = server()
    conn.receive(Segment(1500, 0, R, 0), 1.0)
    assert conn.state is State.ESTABLISHED
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A, 10_000)]
    conn.receive(Segment(900_000, 0, R, 0), 2.0)
    assert conn.segments_to_send(2.0) == []
    assert conn.events() == []


def test_syn_in_established_gets_challenge_ack() -> None:
    conn = server()
    conn.receive(peer_syn(mss=1460), 1.0)
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A, 10_000)]
    assert conn.state is State.ESTABLISHED


def test_abort_sends_rst() -> None:
    conn = server()
    conn.send(b"abc")
    conn.segments_to_send(1.0)
    conn.abort(1.1)
    assert conn.state is State.CLOSED
    assert conn.segments_to_send(1.1) == [Segment(5004, 1001, R | A, 0)]
    assert conn.events() == [Closed()]
    assert conn.next_timer() is None


def test_rst_for_unknown_segments() -> None:
    assert rst_for(Segment(77, 1234, A, 100, b"data")) == Segment(1234, 0, R, 0)
    assert rst_for(Segment(77, 0, S, 100)) == Segment(0, 78, R | A, 0)
    assert rst_for(Segment(0xFFFFFFFF, 0, S | F, 100, b"x")) == Segment(0, 2, R | A, 0)
    assert rst_for(Segment(77, 1234, R | A, 0)) is None


# ---------------------------------------------------------------- loss


def test_retransmission_timeout_backoff_and_give_up() -> None:
    conn = server()
    conn.send(b"hello")
    seg = Segment(5001, 1001, A | P, 10_000, b"hello")
    assert conn.segments_to_send(10.0) == [seg]
    assert conn.next_timer() == pytest.approx(10.2)
    conn.handle_timer(10.2)
    retx = Segment(5001, 1001, A, 10_000, b"hello")   # a lone retransmission, no new burst
    assert conn.segments_to_send(10.2) == [retx]
    assert conn.next_timer() == pytest.approx(10.6)   # doubled
    conn.handle_timer(10.6)
    assert conn.segments_to_send(10.6) == [retx]
    assert conn.next_timer() == pytest.approx(11.4)
    conn.receive(ack(1001, 5006), 11.0)
    assert conn.events() == [Acked(5)]
    assert conn.next_timer() is None

    conn.send(b"again")
    conn.segments_to_send(20.0)
    t, intervals = 20.0, []
    for _ in range(MAX_RETRANSMITS):
        nt = conn.next_timer()
        intervals.append(round(nt - t, 6))
        t = nt
        conn.handle_timer(t)
        assert conn.segments_to_send(t) == [Segment(5006, 1001, A, 10_000, b"again")]
    assert max(intervals) == RTO_MAX and intervals[:3] == [0.2, 0.4, 0.8]
    conn.handle_timer(conn.next_timer())
    assert conn.events() == [Reset("timeout"), Closed()]
    assert conn.state is State.CLOSED


def test_go_back_n_after_timeout() -> None:
    conn = server()
    conn.send(bytes(3000))
    assert len(conn.segments_to_send(1.0)) == 3
    conn.handle_timer(1.2)                            # everything lost; cwnd is 1 MSS now
    assert conn.segments_to_send(1.2) == [Segment(5001, 1001, A, 10_000, bytes(1460))]
    conn.receive(ack(1001, 6461), 1.25)
    assert conn.events() == [Acked(1460)]
    assert conn.segments_to_send(1.25) == [Segment(6461, 1001, A, 10_000, bytes(1460)),
                                           Segment(7921, 1001, A | P, 10_000, bytes(80))]


def test_fast_retransmit_after_three_duplicate_acks() -> None:
    conn = server(peer_window=60_000)
    data = bytes(range(250)) * 40                     # 10 000 bytes: 7 segments
    conn.send(data)
    segs = conn.segments_to_send(1.0)
    assert [s.seq for s in segs] == [5001 + 1460 * i for i in range(7)]
    # The first segment is lost; each later one draws a duplicate ACK.
    conn.receive(ack(1001, 5001, window=60_000), 1.01)
    conn.receive(ack(1001, 5001, window=60_000), 1.01)
    assert conn.segments_to_send(1.01) == []
    conn.receive(ack(1001, 5001, window=60_000), 1.01)
    assert conn.segments_to_send(1.01) == [Segment(5001, 1001, A, 10_000, data[:1460])]
    conn.receive(ack(1001, 15001, window=60_000), 1.02)
    assert conn.events() == [Acked(10_000)]
    assert conn.next_timer() is None


def test_partial_ack_retransmits_next_hole() -> None:
    conn = server(peer_window=60_000)
    data = bytes(range(250)) * 40
    conn.send(data)
    conn.segments_to_send(1.0)
    for _ in range(3):
        conn.receive(ack(1001, 5001, window=60_000), 1.01)
    conn.segments_to_send(1.01)
    conn.receive(ack(1001, 6461 + 1460, window=60_000), 1.02)   # 2nd segment lost as well
    assert conn.segments_to_send(1.02) == [Segment(7921, 1001, A, 10_000, data[2920:4380])]


# ---------------------------------------------------------------- zero window


def test_zero_window_persist_probes_then_resume() -> None:
    conn = server(peer_window=1000)
    conn.send(bytes(3000))
    assert conn.segments_to_send(1.0) == [Segment(5001, 1001, A | P, 10_000, bytes(1000))]
    conn.receive(ack(1001, 6001, window=0), 1.01)
    assert conn.events() == [Acked(1000)]
    assert conn.segments_to_send(1.01) == []
    assert conn.next_timer() == pytest.approx(1.21)   # persist timer, one RTO
    conn.handle_timer(1.21)
    probe = Segment(6000, 1001, A, 10_000)
    assert conn.segments_to_send(1.21) == [probe]
    assert conn.next_timer() == pytest.approx(1.61)   # backed off
    conn.receive(ack(1001, 6001, window=0), 1.22)
    conn.handle_timer(1.61)
    assert conn.segments_to_send(1.61) == [probe]
    assert conn.next_timer() == pytest.approx(2.41)
    conn.receive(ack(1001, 6001, window=4000), 1.7)   # window update
    assert conn.segments_to_send(1.7) == [Segment(6001, 1001, A, 10_000, bytes(1460)),
                                          Segment(7461, 1001, A | P, 10_000, bytes(540))]
    assert conn.next_timer() == pytest.approx(1.9)    # now the retransmission timer


def test_zero_window_probe_from_peer_is_answered() -> None:
    conn = server(recv_buffer=1000)
    conn.receive(ack(1001, 5001, payload=bytes(1000)), 1.0)
    conn.segments_to_send(1.0)
    conn.receive(ack(2000, 5001), 1.5)                # Linux's probe: seq = RCV.NXT - 1
    assert conn.segments_to_send(1.5) == [Segment(5001, 2001, A, 0)]


# ---------------------------------------------------------------- active open


def test_active_open_handshake() -> None:
    conn = TcpConnection.connect(iss=7000, now=2.0, recv_buffer=10_000, mss=1460)
    assert conn.state is State.SYN_SENT
    assert conn.segments_to_send(2.0) == [
        Segment(7000, 0, S, 10_000, mss=1460, wscale=0, sack_permitted=True, ts_val=2000,
                ts_ecr=0)]
    conn.receive(Segment(300, 7001, S | A, 5000, mss=1400), 2.1)
    assert conn.state is State.ESTABLISHED
    assert conn.events() == [Established()]
    assert conn.segments_to_send(2.1) == [Segment(7001, 301, A, 10_000)]
    conn.send(bytes(2000))
    assert [len(s.payload) for s in conn.segments_to_send(2.2)] == [1400, 600]


def test_active_open_refused() -> None:
    conn = TcpConnection.connect(iss=7000, now=0.0)
    conn.segments_to_send(0.0)
    conn.receive(Segment(0, 7001, R | A, 0), 0.1)
    assert conn.events() == [Reset("refused"), Closed()]


# ---------------------------------------------------------------- pieces


def test_sequence_arithmetic_wraps() -> None:
    assert seq_add(0xFFFFFFFF, 2) == 1
    assert seq_diff(1, 0xFFFFFFFF) == 2 and seq_diff(0xFFFFFFFF, 1) == -2
    assert seq_lt(0xFFFFFFF0, 5) and not seq_lt(5, 0xFFFFFFF0)
    assert seq_le(5, 5)
    assert unwrap(3, 0xFFFFFFF0) == 0x100000003
    assert unwrap(0xFFFFFFF0, 0x100000003) == 0xFFFFFFF0


def test_wraparound_connection() -> None:
    conn = TcpConnection(Segment(0xFFFFFFF0, 0, S, 20_000, mss=1460), iss=0xFFFFFFFE, now=0.0,
                         recv_buffer=10_000)
    conn.accept(0.0)
    assert conn.segments_to_send(0.0)[0].ack == 0xFFFFFFF1
    conn.receive(Segment(0xFFFFFFF1, 0xFFFFFFFF, A, 20_000), 0.0)
    conn.receive(Segment(0xFFFFFFF1, 0xFFFFFFFF, A, 20_000, bytes(100)), 0.1)
    conn.send(bytes(10))
    assert conn.segments_to_send(0.1) == [Segment(0xFFFFFFFF, 0x55, A | P, 9900, bytes(10))]
    conn.receive(Segment(0x55, 9, A, 20_000), 0.2)
    assert conn.events() == [Established(), DataReceived(bytes(100)), Acked(10)]


def test_rangeset_and_reassembly() -> None:
    rs = RangeSet()
    assert rs.add(10, 20) == [(10, 20)]
    assert rs.add(30, 40) == [(30, 40)]
    assert rs.add(5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert list(rs) == [(5, 45)]
    assert rs.add(45, 50) == [(45, 50)] and list(rs) == [(5, 50)]
    ra = Reassembly()
    ra.insert(110, b"hijk")
    ra.insert(104, b"bcdefghi")
    assert ra.bytes == 10
    assert ra.pop_at(103) is None
    assert ra.pop_at(104) == b"bcdefghijk"
    assert not ra

