"""The TCP connection: states, handshake, resets; one :class:`TcpConnection` per flow, no I/O.

Theory of operation
-------------------
The tcp stage owns a table of connections keyed by addresses and ports. For each segment
the command's kernel sends, it calls :meth:`TcpConnection.receive` (or constructs a new
connection from a SYN and, once the proxy has connected upstream, calls ``accept`` or
``refuse``). Application bytes from the proxy go in through ``send``/``shutdown``/``abort``.
After each batch it sends ``segments_to_send(now)``, re-arms one timer from
``next_timer()`` (calling ``handle_timer(now)`` when it fires) and forwards ``events()``.
Every call takes ``now`` in seconds; nothing here reads a clock.

The work is split by concern, as in gVisor's netstack (``tcp/snd.go``, ``tcp/rcv.go``):

- this module: the state machine, the handshake and option negotiation, RST handling
  and challenge ACKs (RFC 5961), the order of the checks on an arriving segment
  (RFC 9293 §3.10.7.4), TIME_WAIT, and assembling what goes out;
- ``receiver``: acceptability, out-of-order reassembly, the advertised window (``rcv``);
- ``sender``: the send buffer, output, retransmission and the persist timer (``snd``);
- ``congestion`` (NewReno behind a small interface) and ``rtt`` (RFC 6298), the sender's.

Sequence numbers are kept *unwrapped* (see ``seq``): SND.* values are plain ints starting
at our ISS, RCV.* values start at the peer's ISN, and a number read from a segment is
unwrapped against SND.UNA or RCV.NXT with ``seq.unwrap``. ``& MASK`` gives the wire form.

ACK policy: every segment that carries data or FIN makes the next ``segments_to_send()``
call emit an ACK (one per call, piggybacked when data goes out), so a Nagle-bound kernel
peer never waits on a delayed ACK.

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
from typing import Any

from .congestion import CongestionFactory, NewReno
from .events import Closed, Established, Event, Reset
from .receiver import Receiver
from .rtt import RTO_MAX
from .segment import ACK, FIN, RST, SYN, Segment
from .sender import MAX_RETRANSMITS, MAX_SYN_RETRANSMITS, Sender
from .seq import MASK, unwrap

__all__ = ["MAX_RETRANSMITS", "MAX_SYN_RETRANSMITS", "RTO_MAX", "State", "TcpConnection",
           "rst_for"]

DEFAULT_PEER_MSS = 536          # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option
MAX_WSCALE = 14                 # RFC 7323 §2.3
TS_OPTION_LEN = 12              # timestamps + 2 NOPs, subtracted from the MSS (RFC 9293 §3.7.1)
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
    """One TCP connection, passive (from the peer's SYN) or active (:meth:`connect`).

    ``snd`` (:class:`~httptap.net.tcp.sender.Sender`) and ``rcv``
    (:class:`~httptap.net.tcp.receiver.Receiver`) hold the two directions' state; ``congestion``
    makes the sender's congestion controller (see ``congestion``).
    """

    __slots__ = (
        "state", "mss", "time_wait", "snd", "rcv", "more_to_send",
        # options agreed in the handshake (RFC 7323, RFC 2018)
        "_passive", "_ts_ok", "_ts_recent", "_sack_ok", "_wscale_ok",
        "_oow_ack_time", "_tw_at",
        # things to send at the next segments_to_send()
        "_ack_pending", "_syn_pending", "_ctl",
        "_acked_to",
        "_events",
    )

    def __init__(self, syn: Segment | None, *, iss: int, now: float, mss: int = 65480,
                 recv_buffer: int = 4 << 20, send_buffer: int = 4 << 20,
                 time_wait: float = 1.0, congestion: CongestionFactory = NewReno) -> None:
        self._setup(iss, now, mss, recv_buffer, send_buffer, time_wait, congestion)
        if syn is None:     # an active open (:meth:`connect`; no ``cls.__new__``: mypyc)
            self._passive = False
            self.state = SYN_SENT
            self.snd.set_mss(min(mss, DEFAULT_PEER_MSS))    # until the SYN-ACK tells us more
            self.rcv.wscale = _choose_wscale(recv_buffer)
            self._syn_pending = True
            return
        self._passive = True
        self.state = LISTEN
        self.rcv.synchronize(syn.seq)
        self._acked_to = self.rcv.rcv_nxt  # the SYN is acknowledged with ours: no data yet
        self._negotiate(syn)
        snd = self.snd
        snd.snd_wnd = syn.window            # the window in a SYN is never scaled (RFC 7323 §2.2)
        snd.max_snd_wnd = syn.window
        snd.snd_wl1 = syn.seq

    @classmethod
    def connect(cls, *, iss: int, now: float, mss: int = 65480, recv_buffer: int = 4 << 20,
                send_buffer: int = 4 << 20, time_wait: float = 1.0,
                congestion: CongestionFactory = NewReno) -> TcpConnection:
        """Active open: queue a SYN offering MSS, window scaling, SACK and timestamps."""
        return cls(None, iss=iss, now=now, mss=mss, recv_buffer=recv_buffer,
                   send_buffer=send_buffer, time_wait=time_wait, congestion=congestion)

    def _setup(self, iss: int, now: float, mss: int, recv_buffer: int, send_buffer: int,
               time_wait: float, congestion: CongestionFactory) -> None:
        iss &= MASK
        self.mss = mss
        self.time_wait = time_wait
        self._events: list[Event] = []
        self.snd = Sender(iss, send_buffer, congestion, now, self._events)
        self.rcv = Receiver(recv_buffer, mss, self._events)
        self.more_to_send = False
        self._ts_ok = self._sack_ok = self._wscale_ok = False
        self._ts_recent = 0
        self._oow_ack_time = float("-inf")
        self._tw_at: float | None = None
        self._ack_pending = self._syn_pending = False
        self._ctl: list[Segment] = []
        self._acked_to = 0  # RCV.NXT as our last ACK sent said it (see ack_can_wait)

    def _negotiate(self, syn: Segment) -> None:
        """Record the options of the peer's SYN (or SYN-ACK) and derive what both sides use."""
        peer_mss = syn.mss if syn.mss else DEFAULT_PEER_MSS
        self._wscale_ok = syn.wscale is not None
        if self._wscale_ok:
            self.snd.snd_wscale = min(syn.wscale or 0, MAX_WSCALE)
            self.rcv.wscale = _choose_wscale(self.rcv.buffer)
        else:
            self.snd.snd_wscale = self.rcv.wscale = 0
        self._sack_ok = syn.sack_permitted
        self._ts_ok = syn.ts_val is not None
        self._ts_recent = syn.ts_val or 0
        self.snd.set_mss(min(peer_mss, self.mss) - (TS_OPTION_LEN if self._ts_ok else 0))

    # ------------------------------------------------------------------ application calls

    def accept(self, now: float) -> None:
        """Upstream connected: answer the SYN with a SYN-ACK."""
        if self.state is LISTEN:
            self.state = SYN_RECEIVED
            self._syn_pending = True

    def refuse(self, now: float) -> None:
        """Upstream refused: answer the SYN with RST/ACK and close."""
        if self.state is LISTEN:
            self._ctl.append(Segment(0, (self.rcv.irs + 1) & MASK, RST | ACK, 0))
            self._close()

    def send(self, data: bytes | memoryview) -> bool:
        """Queue bytes for the peer; False if they were dropped. The caller keeps within
        ``send_space()``. A memoryview is kept, uncopied, until the peer acknowledges its
        bytes (``Acked`` events count them, in order) or :meth:`own_send_buffer`.

        Data after ``shutdown()`` or once the connection is closed (a reset raced the
        caller) is dropped: there is no peer left to take it.
        """
        snd = self.snd
        if snd.fin_seq is not None or self.state is CLOSED:
            return False
        snd.buffer.append(data)
        return True

    def own_send_buffer(self, upto: int = -1) -> None:
        """Copy the views :meth:`send` was given into memory of the connection's own: those
        holding any of the first ``upto`` bytes not yet acknowledged (all with -1)."""
        self.snd.buffer.own(upto)

    def send_space(self) -> int:
        snd = self.snd
        return max(snd.capacity - len(snd.buffer), 0)

    def shutdown(self, now: float) -> None:
        """Send FIN once everything queued has been sent (half-close our direction)."""
        st = self.state
        if self.snd.fin_seq is not None or st is CLOSED:
            return
        self.snd.queue_fin()
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
            self._ctl.append(Segment(self.snd.snd_max & MASK, self.rcv.rcv_nxt & MASK,
                                     RST | ACK, 0))
        self._close()

    def consumed(self, n: int) -> None:
        """The application passed on ``n`` received bytes: reopen the receive window."""
        if self.rcv.consumed(n):
            self._ack_pending = True

    def events(self) -> list[Any]:
        """What happened since the last call, in order: :mod:`~httptap.net.tcp.events` objects.

        Typed ``Any`` so that the stage's ``type(event) is DataReceived`` dispatch can read
        each class's fields without casts.
        """
        ev = self._events
        if not ev:
            return []
        # The list is shared with snd and rcv, so hand out a copy and empty it in place.
        out = ev[:]
        ev.clear()
        return out

    # ------------------------------------------------------------------ closing helpers

    def _close(self) -> None:
        self.state = CLOSED
        self._tw_at = None
        self.snd.stop_timers()
        self._ack_pending = self._syn_pending = False
        self._events.append(Closed())

    def _reset(self, reason: str) -> None:
        self._events.append(Reset(reason))
        self._close()

    def _enter_time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.snd.rto_at = self.snd.persist_at = None
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
        rcv = self.rcv
        rcv_nxt = rcv.rcv_nxt
        seq = unwrap(seg.seq, rcv_nxt)

        if flags & SYN:
            if st is SYN_RECEIVED and seq == rcv.irs and not flags & (ACK | RST):
                self._syn_pending = True     # our SYN-ACK was lost: send it again
            elif not flags & RST:
                self._oow_ack(now)           # RFC 5961 §4: challenge ACK
            return

        # 1. Sequence number acceptability (RFC 9293 §3.10.7.4, first check).
        payload = seg.payload
        seglen = len(payload) + (1 if flags & FIN else 0)
        # A segment at RCV.NXT passes every row of the RFC's table: skip the call then.
        if seq != rcv_nxt and not rcv.acceptable(seq, seglen):
            if not flags & RST:
                if seglen:
                    self._ack_pending = True            # a duplicate: say what we have
                else:
                    self._oow_ack(now)
                if st is TIME_WAIT and flags & FIN:
                    self._tw_at = now + self.time_wait   # retransmitted FIN: restart 2*MSL
            return

        # 2. RST (RFC 5961 §3.2: only an exact match resets; in-window gets a challenge ACK).
        snd = self.snd
        if flags & RST:
            if seq == rcv_nxt:
                if st is TIME_WAIT or (st in (CLOSING, LAST_ACK) and snd.fin_seq is not None
                                       and snd.snd_una >= snd.fin_seq):
                    self._close()
                else:
                    self._reset("reset")
            else:
                self._oow_ack(now)                       # challenge ACK
            return

        if seg.ts_val is not None and self._ts_ok and seq <= rcv_nxt:
            self._ts_recent = seg.ts_val     # RFC 7323 §4.3

        # 3. ACK (the fifth check): the handshake's last step, then the sender's.
        if not flags & ACK:
            return
        ack = unwrap(seg.ack, snd.snd_una)
        if st is SYN_RECEIVED:
            if snd.snd_una < ack <= snd.snd_max:
                st = self._established(ESTABLISHED)
                snd.snd_wnd = seg.window << snd.snd_wscale
                snd.snd_wl1 = seq
                snd.snd_wl2 = ack
            else:
                self._ctl.append(Segment(seg.ack, 0, RST, 0))   # RFC 9293 §3.10.7.4
                return
        if not snd.on_ack(seq, ack, seg.window, seglen, now):
            self._oow_ack(now)               # acknowledges what we never sent
            return
        fin_seq = snd.fin_seq
        if fin_seq is not None and snd.snd_una > fin_seq:      # our FIN is acknowledged
            if st is FIN_WAIT_1:
                self.state = st = FIN_WAIT_2
            elif st is CLOSING:
                self._enter_time_wait(now)
                return
            elif st is LAST_ACK:
                self._close()
                return

        # 4. Data and FIN (the seventh and eighth checks), welcome until the peer's FIN.
        # Identity tests, not a set: Enum.__hash__ is Python code, ~0.2 µs a segment.
        if seglen:
            self._ack_pending = True
            if (st is ESTABLISHED or st is FIN_WAIT_1 or st is FIN_WAIT_2) \
                    and rcv.receive(seq, payload, flags & FIN):
                if st is ESTABLISHED:
                    self.state = CLOSE_WAIT
                elif st is FIN_WAIT_1:
                    self.state = CLOSING
                else:
                    self._enter_time_wait(now)

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
        if self.snd.fin_seq is not None:
            state = FIN_WAIT_1
        self.state = state
        self._events.append(Established())
        return state

    def _receive_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 §3.10.7.3: our SYN is out, the peer's SYN-ACK should come back."""
        flags = seg.flags
        snd = self.snd
        ack = 0
        if flags & ACK:
            ack = unwrap(seg.ack, snd.snd_una)
            if ack <= snd.iss or ack > snd.snd_max:
                if not flags & RST:
                    self._ctl.append(Segment(seg.ack, 0, RST, 0))
                return
        if flags & RST:
            if flags & ACK:
                self._reset("refused")
            return
        if not flags & SYN or not flags & ACK:
            return                              # simultaneous open is not supported
        self.rcv.synchronize(seg.seq)
        self._acked_to = self.rcv.rcv_nxt  # (the ACK of a SYN is never held)
        self._negotiate(seg)
        snd.snd_wnd = snd.max_snd_wnd = seg.window
        snd.snd_wl1 = seg.seq
        snd.snd_wl2 = ack
        snd.on_new_ack(ack, now)
        self._established(ESTABLISHED)
        self._ack_pending = True

    # ------------------------------------------------------------------ timers

    def next_timer(self) -> float | None:
        snd = self.snd
        t = snd.rto_at
        p = snd.persist_at
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
        snd = self.snd
        if snd.rto_at is not None and now >= snd.rto_at:
            snd.rto_at = None
            st = self.state
            handshake = st is SYN_SENT or st is SYN_RECEIVED
            if snd.on_rto(now, handshake):
                self._reset("timeout")
                return
            if handshake:
                self._syn_pending = True         # RFC 9293 §3.8.1: retransmit the SYN
        if snd.persist_at is not None and now >= snd.persist_at:
            if snd.on_persist(now):
                self._reset("timeout")

    # ------------------------------------------------------------------ segment output

    def _make_syn(self, now: float) -> Segment:
        iss = self.snd.iss
        rcv = self.rcv
        win = rcv.syn_window(self._passive)
        ts_val = int(now * 1000) & MASK
        if self._passive:
            seg = Segment(iss, rcv.rcv_nxt & MASK, SYN | ACK, win, mss=self.mss,
                          wscale=rcv.wscale if self._wscale_ok else None,
                          sack_permitted=self._sack_ok,
                          ts_val=ts_val if self._ts_ok else None,
                          ts_ecr=self._ts_recent if self._ts_ok else None)
        else:
            seg = Segment(iss, 0, SYN, win, mss=self.mss, wscale=rcv.wscale,
                          sack_permitted=True, ts_val=ts_val, ts_ecr=0)
        self.snd.syn_sent(now)
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

        # The receive side's fields, the same in every segment of this call.
        rcv = self.rcv
        ack = rcv.rcv_nxt & MASK
        win = rcv.window_field()
        if self._ts_ok:
            ts_val: int | None = int(now * 1000) & MASK
            ts_ecr: int | None = self._ts_recent
        else:
            ts_val = ts_ecr = None
        sack: tuple[tuple[int, int], ...] = ()
        snd = self.snd
        seg_max = snd.send_mss
        if self._sack_ok and rcv.ooo:                # RFC 2018 §4: the latest block first
            blocks = rcv.ooo.sack_blocks(3 if self._ts_ok else 4)
            sack = tuple((s & MASK, e & MASK) for s, e in blocks)
            seg_max -= 8 * len(sack) + 4

        sent = snd.output(out, now, burst, ack, win, seg_max, sack, ts_val, ts_ecr)
        self.more_to_send = snd.more_to_send
        if sent:
            self._ack_pending = False
            self._acked_to = rcv.rcv_nxt
        elif self._ack_pending:
            self._ack_pending = False
            self._acked_to = rcv.rcv_nxt
            out.append(Segment(snd.snd_max & MASK, ack, ACK, win, b"", sack=sack,
                               ts_val=ts_val, ts_ecr=ts_ecr))
        return out

    def ack_can_wait(self) -> bool:
        """Whether all :meth:`segments_to_send` has to send now is a pure ACK of in-order
        data that arrived since our last ACK, less than two full segments of it: an ACK
        that may be delayed (RFC 1122 §4.2.3.2) so that the answer, if the application
        has one soon, carries it. Anything else (a FIN, out-of-order data, a
        retransmission, data of ours to send, a control segment, a window we offered
        that is nearly used up) says no. The caller
        decides how long it holds the ACK; ``segments_to_send`` always sends it."""
        if not self._ack_pending or self._ctl or self._syn_pending or self.state is not ESTABLISHED:
            return False
        rcv = self.rcv
        mss2 = 2 * self.mss
        if rcv.ooo or not 0 < rcv.rcv_nxt - self._acked_to < mss2:
            return False
        if rcv.rcv_adv - rcv.rcv_nxt < mss2:
            return False  # the window we offered is nearly used up: the peer needs news now
        snd = self.snd
        return not (snd.retx_pending or snd.probe_pending
                    or snd.snd_nxt < snd.sbuf_start + len(snd.buffer))
