"""Congestion control for the sender: a small interface and NewReno behind it.

The sender (``sender``) owns what is sent and when it is retransmitted; a controller only
sizes the congestion window and says when loss calls for a retransmission. It hears of
three things, all in unwrapped sequence numbers (see ``seq``):

- ``on_ack``: an ACK advanced SND.UNA by ``acked`` bytes;
- ``on_dupack``: a duplicate ACK (RFC 5681 §2's definition, checked by the sender);
- ``on_timeout``: the retransmission timer expired (the sender then goes back N).

``on_ack`` and ``on_dupack`` return True when the segment at SND.UNA should be
retransmitted at once (fast retransmit, or a partial ACK in recovery). The sender reads
``cwnd`` before each burst. A controller is made per connection by a factory called with
the sender's MSS and ISS (``TcpConnection(..., congestion=NewReno)``), once more when
the handshake settles the MSS; any class with this shape plugs in (CUBIC, BBR, a fixed
window for tests).
"""

from __future__ import annotations

from typing import Callable, Protocol

INITIAL_CWND_SEGMENTS = 10      # RFC 6928
DUPACK_THRESHOLD = 3            # RFC 5681 §3.2


class CongestionControl(Protocol):
    cwnd: int

    def on_ack(self, ack: int, acked: int, snd_max: int) -> bool: ...

    def on_dupack(self, snd_una: int, snd_max: int) -> bool: ...

    def on_timeout(self, snd_una: int, snd_max: int) -> None: ...


CongestionFactory = Callable[[int, int], CongestionControl]
"""Makes a controller from (sender MSS, ISS)."""


class NewReno:
    """RFC 5681 slow start and congestion avoidance with RFC 6582 NewReno fast recovery."""

    __slots__ = ("smss", "cwnd", "ssthresh", "dupacks", "recover", "in_recovery")

    def __init__(self, smss: int, iss: int) -> None:
        self.smss = smss
        self.cwnd = INITIAL_CWND_SEGMENTS * smss
        self.ssthresh = 1 << 62          # "arbitrarily high" (RFC 5681 §3.1)
        self.dupacks = 0
        self.recover = iss               # RFC 6582 §3.2 step 1: initialised to the ISS
        self.in_recovery = False

    def on_ack(self, ack: int, acked: int, snd_max: int) -> bool:
        self.dupacks = 0
        smss = self.smss
        if self.in_recovery:
            if ack >= self.recover:              # full ACK: leave fast recovery (RFC 6582 §3.2)
                self.in_recovery = False
                flight = snd_max - ack
                self.cwnd = min(self.ssthresh, max(flight, smss) + smss)
                return False
            # Partial ACK: deflate by what it acknowledged, retransmit the next hole.
            self.cwnd = max(self.cwnd - acked + smss, smss)
            return True
        if self.cwnd < self.ssthresh:
            self.cwnd += acked                   # slow start (generous: no RFC 3465 cap)
        else:
            self.cwnd += max(smss * acked // self.cwnd, 1)   # RFC 5681 §3.1 eq. 3
        return False

    def on_dupack(self, snd_una: int, snd_max: int) -> bool:
        self.dupacks += 1
        smss = self.smss
        if self.in_recovery:
            self.cwnd += smss                    # RFC 6582 §3.2 step 4: inflate
            return False
        # RFC 6582 §3.2 step 2: enter recovery only beyond the last recovery point, so one
        # window's losses cause one reduction.
        if self.dupacks == DUPACK_THRESHOLD and snd_una >= self.recover:
            self.ssthresh = max((snd_max - snd_una) // 2, 2 * smss)   # RFC 5681 §3.2 eq. 4
            self.cwnd = self.ssthresh + DUPACK_THRESHOLD * smss
            self.recover = snd_max
            self.in_recovery = True
            return True
        return False

    def on_timeout(self, snd_una: int, snd_max: int) -> None:
        smss = self.smss
        self.ssthresh = max((snd_max - snd_una) // 2, 2 * smss)       # RFC 5681 §3.1 eq. 4
        self.cwnd = smss                         # loss window: one segment
        self.recover = snd_max                   # RFC 6582 §4: no fast recovery for these
        self.in_recovery = False
        self.dupacks = 0
