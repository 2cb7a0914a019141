"""The TCP connection state machine: one :class:`TcpConnection` per flow, no I/O, no clock.

Theory of operation
-------------------
The tcp stage owns a table of connections keyed by addresses and ports. For each segment
the command's kernel sends, it calls :meth:`TcpConnection.receive` (or constructs a new
connection from a SYN and, once the proxy has connected upstream, calls ``accept`` or
``refuse``). Application bytes from the proxy go in through ``send``/``shutdown``/``abort``.
After each batch it sends ``segments_to_send(now)``, re-arms one timer from
``next_timer()`` (calling ``handle_timer(now)`` when it fires) and forwards ``events()``.
Every call takes ``now`` in seconds; nothing here reads a clock.

Sequence numbers are kept *unwrapped* (see ``seq``): SND.* values are plain ints starting
at our ISS, RCV.* values start at the peer's ISN, and a number read from a segment is
unwrapped against SND.UNA or RCV.NXT. ``& MASK`` gives the wire form.

Send side: the send buffer (``sendbuffer.SendBuffer``) holds the application's chunks as
they came; its first byte has sequence number ``_sbuf_start`` (= SND.UNA once the SYN is
acknowledged), acknowledged bytes are dropped from its front, and segment payloads are
memoryviews of the chunks (copied only when a segment spans two chunks).
``snd_max`` is the highest sequence number ever sent; after a retransmission timeout
``snd_nxt`` goes back to SND.UNA (go-back-N, as in RFC 9293 §3.8.1) while ``snd_max``
still bounds acceptable ACKs. Congestion control is RFC 5681 slow start / congestion
avoidance with NewReno fast recovery (RFC 6582); RTO per RFC 6298 with Karn's rule.

Receive side: in-order data becomes a ``DataReceived`` event at once; later data waits in
a :class:`~httptap.tcp.rangeset.Reassembly` until the hole fills. The advertised window is
``recv_buffer`` minus bytes delivered but not yet ``consumed()``, and its right edge never
moves left (RFC 9293 §3.8.6.2.2). ACK policy: every segment that carries data or FIN makes
the next ``segments_to_send()`` call emit an ACK (one per call, piggybacked when data goes
out), so a Nagle-bound kernel peer never waits on a delayed ACK.

State transitions (RFC 9293 names; "FIN acked" = our FIN acknowledged)::

    LISTEN       --accept-->        SYN_RECEIVED   --refuse/abort--> CLOSED (RST sent)
    (connect)                       SYN_SENT       --SYN-ACK-->      ESTABLISHED
    SYN_RECEIVED --ACK of SYN-->    ESTABLISHED    (FIN_WAIT_1 if shutdown() came first)
    ESTABLISHED  --shutdown-->      FIN_WAIT_1     --FIN acked-->    FIN_WAIT_2
    ESTABLISHED  --peer FIN-->      CLOSE_WAIT     --shutdown-->     LAST_ACK --FIN acked--> CLOSED
    FIN_WAIT_1   --peer FIN-->      CLOSING        --FIN acked-->    TIME_WAIT
    FIN_WAIT_2   --peer FIN-->      TIME_WAIT      --time_wait s-->  CLOSED
    any synchronized --RST (exact seq)-->  CLOSED;  --15 retransmissions--> CLOSED

Not implemented: simultaneous open, acting on SACK blocks the peer sends (we only send
them), PAWS, urgent data, receiver-side silly window avoidance beyond never shrinking, a
FIN_WAIT_2 timeout (a half-closed peer may legitimately keep sending), and reopening a
TIME_WAIT connection with a new SYN (the stage should replace the connection instead).
"""

from __future__ import annotations

import enum

from .events import Acked, Closed, DataReceived, Established, PeerEof, Reset
from .rangeset import Reassembly
from .segment import ACK, FIN, PSH, RST, SYN, Segment
from .sendbuffer import SendBuffer
from .seq import MASK

_HALF = 0x80000000
_FULL = 0x100000000

DEFAULT_PEER_MSS = 536          # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option
MAX_WSCALE = 14                 # RFC 7323 §2.3
TS_OPTION_LEN = 12              # timestamps + 2 NOPs, subtracted from the MSS (RFC 9293 §3.7.1)
INITIAL_CWND_SEGMENTS = 10      # RFC 6928
DUPACK_THRESHOLD = 3            # RFC 5681 §3.2
RTO_INITIAL = 1.0               # RFC 6298 §2.1
RTO_MIN = 0.2                   # Linux's TCP_RTO_MIN (RFC 6298 allows less than its 1 s)
RTO_MAX = 60.0                  # RFC 6298 §2.5
CLOCK_GRANULARITY = 0.001       # "G" in RFC 6298 §2; our timestamps tick in milliseconds
MAX_RETRANSMITS = 15            # Linux tcp_retries2
MAX_SYN_RETRANSMITS = 5         # Linux tcp_synack_retries (and close to tcp_syn_retries)
MAX_OOO_RANGES = 64             # holes tracked in the reassembly buffer
OOW_ACK_INTERVAL = 0.5          # Linux tcp_invalid_ratelimit: ACKs for dropped pure segments


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"


CLOSED = State.CLOSED
LISTEN = State.LISTEN
SYN_SENT = State.SYN_SENT
SYN_RECEIVED = State.SYN_RECEIVED
ESTABLISHED = State.ESTABLISHED
FIN_WAIT_1 = State.FIN_WAIT_1
FIN_WAIT_2 = State.FIN_WAIT_2
CLOSE_WAIT = State.CLOSE_WAIT
CLOSING = State.CLOSING
LAST_ACK = State.LAST_ACK
TIME_WAIT = State.TIME_WAIT

_RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})     # peer's data still welcome
_RESET_SENDS_RST = frozenset({SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT})


def _choose_wscale(buffer: int) -> int:
    """The smallest shift that lets a 16-bit window field describe ``buffer`` bytes."""
    shift = 0
    while shift < MAX_WSCALE and (buffer >> shift) > 0xFFFF:
        shift += 1
    return shift


def rst_for(seg: Segment) -> Segment | None:
    """The reset that answers a segment for which no connection exists (RFC 9293 §3.10.7.1).

    None for an incoming RST (never answer a reset with a reset).
    """
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return Segment(seg.ack, 0, RST, 0)
    return Segment(0, (seg.seq + seg.seg_len) & MASK, RST | ACK, 0)


class TcpConnection:
    """One TCP connection, passive (from the peer's SYN) or active (:meth:`connect`)."""

    __slots__ = (
        "state", "mss", "recv_buffer", "send_buffer", "time_wait",
        # send sequence space
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "_max_snd_wnd", "_snd_wscale", "_sbuf", "_sbuf_start", "_fin_seq", "_send_mss",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "_rcv_wscale", "_unconsumed", "_ooo", "_ooo_fin",
        # options
        "_peer_mss", "_ts_ok", "_ts_recent", "_sack_ok", "_wscale_ok", "_passive",
        # congestion control and retransmission
        "cwnd", "ssthresh", "more_to_send", "_dupacks", "_recover", "_in_recovery",
        "_srtt", "_rttvar", "_base_rto", "_backoff", "_rtt_seq", "_rtt_time", "_retries",
        "_persist_backoff", "_probes", "_oow_ack_time", "_ack_time",
        # timers (absolute times or None)
        "_rto_at", "_persist_at", "_tw_at",
        # things to send at the next segments_to_send()
        "_ack_pending", "_syn_pending", "_retx_pending", "_probe_pending", "_ctl",
        "_events",
    )

    def __init__(self, syn: Segment, *, iss: int, now: float, mss: int = 65480,
                 recv_buffer: int = 4 << 20, send_buffer: int = 4 << 20,
                 time_wait: float = 1.0) -> None:
        self._setup(iss, now, mss, recv_buffer, send_buffer, time_wait)
        self._passive = True
        self.state = LISTEN
        self.irs = syn.seq
        self.rcv_nxt = self.rcv_adv = syn.seq + 1
        self._negotiate(syn)
        self.snd_wnd = syn.window            # the window in a SYN is never scaled (RFC 7323 §2.2)
        self._max_snd_wnd = syn.window
        self.snd_wl1 = self.irs

    @classmethod
    def connect(cls, *, iss: int, now: float, mss: int = 65480, recv_buffer: int = 4 << 20,
                send_buffer: int = 4 << 20, time_wait: float = 1.0) -> TcpConnection:
        """Active open: queue a SYN offering MSS, window scaling, SACK and timestamps."""
        self = cls.__new__(cls)
        self._setup(iss, now, mss, recv_buffer, send_buffer, time_wait)
        self._passive = False
        self.state = SYN_SENT
        self.irs = self.rcv_nxt = self.rcv_adv = 0
        self._rcv_wscale = _choose_wscale(recv_buffer)
        self._syn_pending = True
        return self

    def _setup(self, iss: int, now: float, mss: int, recv_buffer: int, send_buffer: int,
               time_wait: float) -> None:
        iss &= MASK
        self.mss = mss
        self.recv_buffer = recv_buffer
        self.send_buffer = send_buffer
        self.time_wait = time_wait
        self.iss = self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = self.snd_wl1 = self.snd_wl2 = self._max_snd_wnd = 0
        self._snd_wscale = self._rcv_wscale = 0
        self._sbuf = SendBuffer()
        self._sbuf_start = iss + 1
        self._fin_seq: int | None = None
        self._unconsumed = 0
        self._ooo = Reassembly(MAX_OOO_RANGES)
        self._ooo_fin: int | None = None
        self._peer_mss = DEFAULT_PEER_MSS
        self._ts_ok = self._sack_ok = self._wscale_ok = False
        self._ts_recent = 0
        self._send_mss = min(mss, DEFAULT_PEER_MSS)
        self.cwnd = INITIAL_CWND_SEGMENTS * self._send_mss
        self.more_to_send = False
        self.ssthresh = 1 << 62
        self._dupacks = 0
        self._recover = iss
        self._in_recovery = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._base_rto = RTO_INITIAL
        self._backoff = 0
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._retries = 0
        self._persist_backoff = 0
        self._probes = 0
        self._oow_ack_time = float("-inf")
        self._ack_time = now
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._tw_at: float | None = None
        self._ack_pending = self._syn_pending = self._retx_pending = self._probe_pending = False
        self._ctl: list[Segment] = []
        self._events: list = []

    def _negotiate(self, syn: Segment) -> None:
        """Record the options of the peer's SYN (or SYN-ACK) and derive what both sides use."""
        self._peer_mss = syn.mss if syn.mss else DEFAULT_PEER_MSS
        self._wscale_ok = syn.wscale is not None
        if self._wscale_ok:
            self._snd_wscale = min(syn.wscale or 0, MAX_WSCALE)
            self._rcv_wscale = _choose_wscale(self.recv_buffer)
        else:
            self._snd_wscale = self._rcv_wscale = 0
        self._sack_ok = syn.sack_permitted
        self._ts_ok = syn.ts_val is not None
        self._ts_recent = syn.ts_val or 0
        self._send_mss = min(self._peer_mss, self.mss) - (TS_OPTION_LEN if self._ts_ok else 0)
        self.cwnd = INITIAL_CWND_SEGMENTS * self._send_mss

    # ------------------------------------------------------------------ application calls

    def accept(self, now: float) -> None:
        """Upstream connected: answer the SYN with a SYN-ACK."""
        if self.state is LISTEN:
            self.state = SYN_RECEIVED
            self._syn_pending = True

    def refuse(self, now: float) -> None:
        """Upstream refused: answer the SYN with RST/ACK and close."""
        if self.state is LISTEN:
            self._ctl.append(Segment(0, (self.irs + 1) & MASK, RST | ACK, 0))
            self._close()

    def send(self, data: bytes) -> None:
        """Queue bytes for the peer. The caller keeps within ``send_space()``.

        Data after ``shutdown()`` or once the connection is closed (a reset raced the
        caller) is dropped: there is no peer left to take it.
        """
        if self._fin_seq is not None or self.state is CLOSED:
            return
        self._sbuf.append(data)

    def send_space(self) -> int:
        return max(self.send_buffer - len(self._sbuf), 0)

    def shutdown(self, now: float) -> None:
        """Send FIN once everything queued has been sent (half-close our direction)."""
        st = self.state
        if self._fin_seq is not None or st is CLOSED:
            return
        self._fin_seq = self._sbuf_start + len(self._sbuf)
        if st is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif st is CLOSE_WAIT:
            self.state = LAST_ACK
        # LISTEN / SYN_RECEIVED / SYN_SENT: the FIN waits for the handshake to complete.

    def abort(self, now: float) -> None:
        """Reset the connection: send RST (in synchronized states) and close at once."""
        st = self.state
        if st is CLOSED:
            return
        if st is LISTEN:
            self.refuse(now)
            return
        if st in _RESET_SENDS_RST:
            self._ctl.append(Segment(self.snd_max & MASK, self.rcv_nxt & MASK, RST | ACK, 0))
        self._close()

    def consumed(self, n: int) -> None:
        """The application passed on ``n`` received bytes: reopen the receive window."""
        old_wnd = self.rcv_adv - self.rcv_nxt
        self._unconsumed -= n
        if self._unconsumed < 0:
            self._unconsumed = 0
        new_wnd = self.recv_buffer - self._unconsumed
        threshold = min(self.mss, self.recv_buffer // 2)
        if new_wnd - old_wnd >= self.recv_buffer // 2 or (old_wnd < threshold <= new_wnd):
            self._ack_pending = True

    def events(self) -> list:
        ev = self._events
        self._events = []
        return ev

    # ------------------------------------------------------------------ closing helpers

    def _close(self) -> None:
        self.state = CLOSED
        self._rto_at = self._persist_at = self._tw_at = None
        self._ack_pending = self._syn_pending = self._retx_pending = self._probe_pending = False
        self._events.append(Closed())

    def _reset(self, reason: str) -> None:
        self._events.append(Reset(reason))
        self._close()

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self._rto_at = self._persist_at = None
        self._tw_at = now + self.time_wait

    # ------------------------------------------------------------------ segment arrival

    def receive(self, seg: Segment, now: float) -> None:
        """Process one segment from the peer (RFC 9293 §3.10.7)."""
        st = self.state
        if st is CLOSED:
            return
        if st is LISTEN:
            if seg.flags & RST:          # the peer gave up before upstream answered
                self._reset("reset")
            return                       # retransmitted SYNs wait for accept()
        if st is SYN_SENT:
            self._receive_syn_sent(seg, now)
            return
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        d = (seg.seq - rcv_nxt) & MASK
        seq = rcv_nxt + (d - _FULL if d & _HALF else d)

        if flags & SYN:
            if st is SYN_RECEIVED and seq == self.irs and not flags & (ACK | RST):
                self._syn_pending = True     # our SYN-ACK was lost: send it again
            elif not flags & RST:
                self._oow_ack(now)           # RFC 5961 §4: challenge ACK
            return

        # 1. Sequence number acceptability (RFC 9293 §3.10.7.4, first check).
        payload = seg.payload
        seglen = len(payload) + (1 if flags & FIN else 0)
        wnd = self.rcv_adv - rcv_nxt
        free = self.recv_buffer - self._unconsumed
        if free > wnd:
            wnd = free
        if seglen == 0:
            ok = seq == rcv_nxt if wnd <= 0 else rcv_nxt <= seq < rcv_nxt + wnd
        else:
            # seq == RCV.NXT: RFC 9293's allowance to process the ACK of a segment that
            # arrives at a zero window (its data is trimmed below).
            ok = seq == rcv_nxt or (seq < rcv_nxt + wnd and seq + seglen > rcv_nxt)
        if not ok:
            if not flags & RST:
                if seglen:
                    self._ack_pending = True            # a duplicate: say what we have
                else:
                    self._oow_ack(now)
                if st is TIME_WAIT and flags & FIN:
                    self._tw_at = now + self.time_wait   # retransmitted FIN: restart 2*MSL
            return

        # 2. RST (RFC 5961 §3.2: only an exact match resets; in-window gets a challenge ACK).
        if flags & RST:
            if seq == rcv_nxt:
                if st is TIME_WAIT or (st in (CLOSING, LAST_ACK) and self._fin_seq is not None
                                       and self.snd_una >= self._fin_seq):
                    self._close()
                else:
                    self._reset("reset")
            else:
                self._oow_ack(now)                       # challenge ACK
            return

        if seg.ts_val is not None and self._ts_ok and seq <= rcv_nxt:
            self._ts_recent = seg.ts_val     # RFC 7323 §4.3

        # 3. ACK.
        if not flags & ACK:
            return
        snd_una = self.snd_una
        d = (seg.ack - snd_una) & MASK
        ack = snd_una + (d - _FULL if d & _HALF else d)
        if st is SYN_RECEIVED:
            if snd_una < ack <= self.snd_max:
                st = self._established(ESTABLISHED)
                self.snd_wnd = seg.window << self._snd_wscale
                self.snd_wl1 = seq
                self.snd_wl2 = ack
            else:
                self._ctl.append(Segment(seg.ack, 0, RST, 0))
                return
        if ack > self.snd_max:
            self._oow_ack(now)               # acknowledges what we never sent
            return
        self._probes = 0
        self._ack_time = now
        new_wnd = seg.window << self._snd_wscale
        if ack > snd_una:
            self._on_new_ack(ack, now)
        elif ack == snd_una and seglen == 0 and new_wnd == self.snd_wnd \
                and self.snd_max > snd_una:
            self._on_dupack()
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            self.snd_wnd = new_wnd
            if new_wnd > self._max_snd_wnd:
                self._max_snd_wnd = new_wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        fin_seq = self._fin_seq
        if fin_seq is not None and self.snd_una > fin_seq:      # our FIN is acknowledged
            if st is FIN_WAIT_1:
                self.state = st = FIN_WAIT_2
            elif st is CLOSING:
                self._enter_time_wait(now)
                return
            elif st is LAST_ACK:
                self._close()
                return

        # 4. Data and FIN.
        if seglen:
            self._ack_pending = True
            if st in _RECEIVING:
                self._receive_data(seq, payload, flags & FIN, now)

    def _oow_ack(self, now: float) -> None:
        """ACK a segment we drop (out of window, challenge), at most once per interval.

        Two stacks that each answer the other's unacceptable pure ACK with an ACK would
        loop forever; like Linux (tcp_invalid_ratelimit) we rate-limit these replies.
        """
        if now - self._oow_ack_time >= OOW_ACK_INTERVAL:
            self._oow_ack_time = now
            self._ack_pending = True

    def _established(self, state: State) -> State:
        """Handshake done: enter ESTABLISHED (or FIN_WAIT_1 if shutdown() came first)."""
        if self._fin_seq is not None:
            state = FIN_WAIT_1
        self.state = state
        self._events.append(Established())
        return state

    def _receive_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        ack = 0
        if flags & ACK:
            d = (seg.ack - self.snd_una) & MASK
            ack = self.snd_una + (d - _FULL if d & _HALF else d)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._ctl.append(Segment(seg.ack, 0, RST, 0))
                return
        if flags & RST:
            if flags & ACK:
                self._reset("refused")
            return
        if not flags & SYN or not flags & ACK:
            return                              # simultaneous open is not supported
        self.irs = seg.seq
        self.rcv_nxt = self.rcv_adv = seg.seq + 1
        self._negotiate(seg)
        self.snd_wnd = self._max_snd_wnd = seg.window
        self.snd_wl1 = self.irs
        self.snd_wl2 = ack
        self._on_new_ack(ack, now)
        self._established(ESTABLISHED)
        self._ack_pending = True

    def _on_new_ack(self, ack: int, now: float) -> None:
        una = self.snd_una
        acked = ack - una
        start = self._sbuf_start
        sbuf = self._sbuf
        data_end = start + len(sbuf)
        hi = ack if ack < data_end else data_end
        n = hi - start
        if n > 0:
            sbuf.drop(n)
            self._sbuf_start = hi
            self._events.append(Acked(n))
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            self._rtt_sample(now - self._rtt_time)
            self._rtt_seq = None
        self._retries = 0
        self._backoff = 0
        self._dupacks = 0
        smss = self._send_mss
        if self._in_recovery:
            if ack >= self._recover:             # full ACK: leave fast recovery (RFC 6582 §3.2)
                self._in_recovery = False
                flight = self.snd_max - ack
                self.cwnd = min(self.ssthresh, max(flight, smss) + smss)
            else:                                # partial ACK: retransmit the next hole
                self._retx_pending = True
                self.cwnd = max(self.cwnd - acked + smss, smss)
        elif self.cwnd < self.ssthresh:
            self.cwnd += acked                   # slow start (generous: no RFC 3465 cap)
        else:
            self.cwnd += max(smss * acked // self.cwnd, 1)
        self._rto_at = None if ack >= self.snd_max else now + self._rto()

    def _on_dupack(self) -> None:
        self._dupacks += 1
        smss = self._send_mss
        if self._in_recovery:
            self.cwnd += smss
        elif self._dupacks == DUPACK_THRESHOLD and self.snd_una >= self._recover:
            flight = self.snd_max - self.snd_una
            self.ssthresh = max(flight // 2, 2 * smss)
            self.cwnd = self.ssthresh + DUPACK_THRESHOLD * smss
            self._recover = self.snd_max
            self._in_recovery = True
            self._retx_pending = True
            self._rtt_seq = None                 # Karn: no sample across a retransmission

    def _receive_data(self, seq: int, payload: bytes | memoryview, fin: int, now: float) -> None:
        if type(payload) is not bytes:  # a segment straight from another core (tests)
            payload = bytes(payload)
        rcv_nxt = self.rcv_nxt
        end = seq + len(payload)
        if seq < rcv_nxt:                        # overlaps what we already have
            payload = payload[rcv_nxt - seq:]
            seq = rcv_nxt
        wnd_end = self.rcv_adv
        free_end = rcv_nxt + self.recv_buffer - self._unconsumed
        if free_end > wnd_end:
            wnd_end = free_end
        if end > wnd_end:                        # beyond the window: keep what fits, drop FIN
            keep = wnd_end - seq
            payload = payload[:keep] if keep > 0 else b""
            end = seq + len(payload)
            fin = 0
        events = self._events
        if seq == rcv_nxt:
            if payload:
                events.append(DataReceived(payload))
                self._unconsumed += len(payload)
                rcv_nxt = end
                ooo = self._ooo
                if ooo:
                    ooo.discard_below(rcv_nxt)
                    while True:
                        data = ooo.pop_at(rcv_nxt)
                        if data is None:
                            break
                        events.append(DataReceived(data))
                        self._unconsumed += len(data)
                        rcv_nxt += len(data)
                self.rcv_nxt = rcv_nxt
        else:
            if payload:
                self._ooo.insert(seq, bytes(payload))
        if fin and end >= rcv_nxt:
            self._ooo_fin = end
        if self._ooo_fin is not None and self._ooo_fin == rcv_nxt:
            self._ooo_fin = None
            self.rcv_nxt = rcv_nxt + 1
            events.append(PeerEof())
            st = self.state
            if st is ESTABLISHED:
                self.state = CLOSE_WAIT
            elif st is FIN_WAIT_1:
                self.state = CLOSING
            elif st is FIN_WAIT_2:
                self._enter_time_wait(now)

    # ------------------------------------------------------------------ RTT and timers

    def _rtt_sample(self, r: float) -> None:
        """RFC 6298 §2.2-2.3."""
        if r < 0:
            r = 0.0
        srtt = self._srtt
        if srtt is None:
            srtt = r
            self._rttvar = r / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        self._srtt = srtt
        rto = srtt + max(CLOCK_GRANULARITY, 4 * self._rttvar)
        self._base_rto = min(max(rto, RTO_MIN), RTO_MAX)

    def _rto(self) -> float:
        """The current retransmission timeout, with exponential backoff (RFC 6298 §5.5)."""
        return min(self._base_rto * (1 << self._backoff), RTO_MAX)

    def next_timer(self) -> float | None:
        t = self._rto_at
        p = self._persist_at
        if p is not None and (t is None or p < t):
            t = p
        w = self._tw_at
        if w is not None and (t is None or w < t):
            t = w
        return t

    def handle_timer(self, now: float) -> None:
        if self._tw_at is not None and now >= self._tw_at:
            self._tw_at = None
            self._close()
            return
        if self._rto_at is not None and now >= self._rto_at:
            self._rto_at = None
            self._on_rto(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._probes += 1
            if self._probes > MAX_RETRANSMITS:
                self._reset("timeout")
                return
            self._probe_pending = True
            self._persist_backoff += 1
            self._persist_at = now + min(self._base_rto * (1 << self._persist_backoff), RTO_MAX)

    def _on_rto(self, now: float) -> None:
        st = self.state
        handshake = st is SYN_SENT or st is SYN_RECEIVED
        if not handshake and self.snd_max == self.snd_una:
            return
        # A peer that keeps answering with a zero window is alive: our retransmissions are
        # just zero-window probes then, and do not count towards giving up (as in Linux).
        if handshake or self.snd_wnd or now - self._ack_time > RTO_MAX:
            self._retries += 1
        if self._retries > (MAX_SYN_RETRANSMITS if handshake else MAX_RETRANSMITS):
            self._reset("timeout")
            return
        self._backoff += 1
        self._rtt_seq = None
        if handshake:
            self._syn_pending = True
        else:                                     # RFC 5681 §3.1 eq. 4, then go back N
            smss = self._send_mss
            self.ssthresh = max((self.snd_max - self.snd_una) // 2, 2 * smss)
            self.cwnd = smss
            self._recover = self.snd_max
            self._in_recovery = False
            self._dupacks = 0
            self.snd_nxt = self.snd_una
            self._retx_pending = True
        self._rto_at = now + self._rto()

    # ------------------------------------------------------------------ segment output

    def _window_field(self) -> int:
        """The window to advertise now, as the 16-bit field; never moves the right edge left."""
        rcv_nxt = self.rcv_nxt
        free = self.recv_buffer - self._unconsumed
        if free < 0:
            free = 0
        edge = rcv_nxt + free
        adv = self.rcv_adv
        shift = self._rcv_wscale
        if edge < adv:
            edge = adv
        field = (edge - rcv_nxt) >> shift
        if rcv_nxt + (field << shift) < adv:
            field += 1                            # round up rather than shrink
        if field > 0xFFFF:
            field = 0xFFFF
        new_adv = rcv_nxt + (field << shift)
        if new_adv > adv:
            self.rcv_adv = new_adv
        return field

    def _make_syn(self, now: float) -> Segment:
        first = self.snd_max == self.iss
        iss = self.iss
        win = min(max(self.recv_buffer - self._unconsumed, 0), 0xFFFF)
        ts_val = int(now * 1000) & MASK
        if self._passive:
            if self.rcv_nxt + win > self.rcv_adv:
                self.rcv_adv = self.rcv_nxt + win
            seg = Segment(iss, self.rcv_nxt & MASK, SYN | ACK, win, mss=self.mss,
                          wscale=self._rcv_wscale if self._wscale_ok else None,
                          sack_permitted=self._sack_ok,
                          ts_val=ts_val if self._ts_ok else None,
                          ts_ecr=self._ts_recent if self._ts_ok else None)
        else:
            seg = Segment(iss, 0, SYN, win, mss=self.mss, wscale=self._rcv_wscale,
                          sack_permitted=True, ts_val=ts_val, ts_ecr=0)
        self.snd_nxt = iss + 1
        if self.snd_max < iss + 1:
            self.snd_max = iss + 1
        if first:
            self._rtt_seq = iss + 1
            self._rtt_time = now
        if self._rto_at is None:
            self._rto_at = now + self._rto()
        return seg

    def segments_to_send(self, now: float, burst: int = 1 << 30) -> list[Segment]:
        """Everything to transmit now, in order; at most ``burst`` new data segments (then
        ``more_to_send`` says the window allows more: ask again)."""
        self.more_to_send = False
        out = self._ctl
        if out:
            self._ctl = []
        else:
            out = []
        st = self.state
        if st is CLOSED or st is LISTEN:
            return out
        if self._syn_pending:
            self._syn_pending = False
            out.append(self._make_syn(now))
        if st is SYN_SENT or st is SYN_RECEIVED:
            return out

        ack = self.rcv_nxt & MASK
        win = self._window_field()
        if self._ts_ok:
            ts_val: int | None = int(now * 1000) & MASK
            ts_ecr: int | None = self._ts_recent
        else:
            ts_val = ts_ecr = None
        sack: tuple[tuple[int, int], ...] = ()
        seg_max = self._send_mss
        if self._sack_ok and self._ooo:
            blocks = self._ooo.sack_blocks(3 if self._ts_ok else 4)
            sack = tuple((s & MASK, e & MASK) for s, e in blocks)
            seg_max -= 8 * len(sack) + 4
        sbuf = self._sbuf
        start = self._sbuf_start
        data_end = start + len(sbuf)
        fin_seq = self._fin_seq
        una = self.snd_una
        sent = False

        if self._retx_pending:                    # one segment at SND.UNA, window or not
            self._retx_pending = False
            n = min(data_end, self.snd_max) - una     # only what was sent before
            if n > seg_max:
                n = seg_max
            if n < 0:
                n = 0
            flags = ACK
            if fin_seq is not None and una + n == fin_seq and self.snd_max > fin_seq:
                flags |= FIN
            if n or flags & FIN:
                off = una - start
                payload = sbuf.view(off, n)
                out.append(Segment(una & MASK, ack, flags, win, payload, sack=sack,
                                   ts_val=ts_val, ts_ecr=ts_ecr))
                sent = True
                end = una + n + (1 if flags & FIN else 0)
                if self.snd_nxt < end:
                    self.snd_nxt = end
                if self._rto_at is None:
                    self._rto_at = now + self._rto()

        nxt = self.snd_nxt
        snd_max = self.snd_max
        wnd = self.snd_wnd
        limit = una + (wnd if wnd < self.cwnd else self.cwnd)
        last = last_data = None
        if nxt < data_end and nxt < limit:
            max_half = self._max_snd_wnd >> 1
            while nxt < data_end:
                left = data_end - nxt
                n = limit - nxt
                if n > seg_max:
                    n = seg_max
                if n > left:
                    n = left
                if n <= 0:
                    break
                if n < seg_max and n < left and nxt > una and n < max_half:
                    break                     # sender SWS avoidance (RFC 9293 §3.8.6.2.1)
                flags = ACK
                if fin_seq is not None and nxt + n == fin_seq:
                    flags = ACK | FIN
                off = nxt - start
                last = last_data = Segment(nxt & MASK, ack, flags, win,
                                           sbuf.view(off, n), sack=sack,
                                           ts_val=ts_val, ts_ecr=ts_ecr)
                out.append(last)
                if nxt >= snd_max and self._rtt_seq is None:
                    self._rtt_seq = nxt + n
                    self._rtt_time = now
                nxt += n
                if flags & FIN:
                    nxt += 1
                burst -= 1
                if burst <= 0:
                    self.more_to_send = nxt < data_end and nxt < limit
                    break
        if fin_seq is not None and nxt == fin_seq:         # FIN on its own (ignores the window)
            last = Segment(nxt & MASK, ack, ACK | FIN, win, b"", sack=sack,
                           ts_val=ts_val, ts_ecr=ts_ecr)
            out.append(last)
            nxt += 1
        if last is not None:
            if last_data is not None:
                last_data.flags |= PSH            # the end of this burst
            sent = True
            self.snd_nxt = nxt
            if nxt > snd_max:
                self.snd_max = snd_max = nxt
            if self._rto_at is None:
                self._rto_at = now + self._rto()

        if self._probe_pending:                   # zero-window probe: an old sequence number
            self._probe_pending = False              # makes the peer answer with its window
            if not sent:
                out.append(Segment((una - 1) & MASK, ack, ACK, win, b"",
                                   ts_val=ts_val, ts_ecr=ts_ecr))
                # The peer drops the probe itself: a pending ACK still goes out below.
        if sent:
            self._ack_pending = False
        elif self._ack_pending:
            self._ack_pending = False
            out.append(Segment(snd_max & MASK, ack, ACK, win, b"", sack=sack,
                               ts_val=ts_val, ts_ecr=ts_ecr))

        # Persist timer (RFC 9293 §3.8.6.1): data waits, nothing is in flight, window is 0.
        if wnd == 0 and snd_max == self.snd_una and nxt < data_end:
            if self._persist_at is None:
                self._persist_at = now + min(self._base_rto * (1 << self._persist_backoff),
                                             RTO_MAX)
        elif self._persist_at is not None:
            self._persist_at = None
            self._persist_backoff = 0
        return out
