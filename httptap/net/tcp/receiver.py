"""The receive half of a connection: acceptability, reassembly, the advertised window.

:class:`Receiver` holds the RCV.* variables of RFC 9293 §3.3.1 (unwrapped, see ``seq``)
and the bytes that arrived ahead of RCV.NXT. The connection (``connection``) asks it
whether a segment is acceptable, hands it each acceptable segment's data and FIN, and
asks it for the window and the SACK blocks to put in every segment it sends.

In-order data becomes a ``DataReceived`` event at once; later data waits in a
:class:`~httptap.net.tcp.rangeset.Reassembly` until the hole fills. Delivered bytes count
against the window until the application calls ``consumed()``: the advertised window is
the buffer minus those bytes, and its right edge never moves left (RFC 9293
§3.8.6.2.2). Receiver-side silly window avoidance goes no further than that (and the
window-update rule in :meth:`Receiver.consumed`).
"""

from __future__ import annotations

from .events import DataReceived, Event, PeerEof
from .rangeset import Reassembly

MAX_OOO_RANGES = 64             # holes tracked in the reassembly buffer


class Receiver:
    __slots__ = ("irs", "rcv_nxt", "rcv_adv", "buffer", "mss", "wscale", "unconsumed",
                 "ooo", "ooo_fin", "events")

    def __init__(self, buffer: int, mss: int, events: list[Event]) -> None:
        self.irs = self.rcv_nxt = self.rcv_adv = 0
        self.buffer = buffer            # receive buffer size: the most we ever advertise
        self.mss = mss                  # our MSS: the window update threshold
        self.wscale = 0                 # our window shift (RFC 7323 §2.3), 0 until agreed
        self.unconsumed = 0             # delivered, not yet consumed() by the application
        self.ooo = Reassembly(MAX_OOO_RANGES)
        self.ooo_fin: int | None = None  # where the peer's FIN sits, once seen
        self.events = events            # the connection's event list, shared

    def synchronize(self, irs: int) -> None:
        """The peer's SYN carried ISN ``irs``: its first data byte is ``irs + 1``."""
        self.irs = irs
        self.rcv_nxt = self.rcv_adv = irs + 1

    def acceptable(self, seq: int, seglen: int) -> bool:
        """RFC 9293 §3.10.7.4, first check: does the segment at ``seq`` (unwrapped),
        occupying ``seglen`` of sequence space, overlap the receive window?"""
        rcv_nxt = self.rcv_nxt
        wnd = self.rcv_adv - rcv_nxt
        free = self.buffer - self.unconsumed
        if free > wnd:
            wnd = free
        if seglen == 0:
            return seq == rcv_nxt if wnd <= 0 else rcv_nxt <= seq < rcv_nxt + wnd
        # seq == RCV.NXT: RFC 9293's allowance to process the ACK of a segment that
        # arrives at a zero window (its data is trimmed in receive()).
        return seq == rcv_nxt or (seq < rcv_nxt + wnd and seq + seglen > rcv_nxt)

    def receive(self, seq: int, payload: bytes | memoryview, fin: int) -> bool:
        """Take an acceptable segment's data and FIN (RFC 9293 §3.10.7.4, seventh and
        eighth steps). True when the peer's FIN has now been reached: ``PeerEof`` is queued
        and the connection changes state."""
        if type(payload) is not bytes:  # a segment straight from another core (tests)
            payload = bytes(payload)
        rcv_nxt = self.rcv_nxt
        end = seq + len(payload)
        if seq < rcv_nxt:                        # overlaps what we already have
            payload = payload[rcv_nxt - seq:]
            seq = rcv_nxt
        wnd_end = self.rcv_adv
        free_end = rcv_nxt + self.buffer - self.unconsumed
        if free_end > wnd_end:
            wnd_end = free_end
        if end > wnd_end:                        # beyond the window: keep what fits, drop FIN
            keep = wnd_end - seq
            payload = payload[:keep] if keep > 0 else b""
            end = seq + len(payload)
            fin = 0
        events = self.events
        if seq == rcv_nxt:
            if payload:
                events.append(DataReceived(payload))
                self.unconsumed += len(payload)
                rcv_nxt = end
                ooo = self.ooo
                if ooo:
                    ooo.discard_below(rcv_nxt)
                    while True:
                        data = ooo.pop_at(rcv_nxt)
                        if data is None:
                            break
                        events.append(DataReceived(data))
                        self.unconsumed += len(data)
                        rcv_nxt += len(data)
                self.rcv_nxt = rcv_nxt
        else:
            if payload:
                self.ooo.insert(seq, bytes(payload))
        if fin and end >= rcv_nxt:
            self.ooo_fin = end
        if self.ooo_fin is not None and self.ooo_fin == rcv_nxt:
            self.ooo_fin = None
            self.rcv_nxt = rcv_nxt + 1
            events.append(PeerEof())
            return True
        return False

    def consumed(self, n: int) -> bool:
        """The application passed on ``n`` received bytes. True when the window opened
        enough to be worth an ACK of its own (a window update, RFC 9293 §3.8.6.2.2)."""
        old_wnd = self.rcv_adv - self.rcv_nxt
        self.unconsumed -= n
        if self.unconsumed < 0:
            self.unconsumed = 0
        buffer = self.buffer
        new_wnd = buffer - self.unconsumed
        threshold = min(self.mss, buffer // 2)
        return new_wnd - old_wnd >= buffer // 2 or (old_wnd < threshold <= new_wnd)

    def window_field(self) -> int:
        """The window to advertise now, as the 16-bit field; never moves the right edge left."""
        rcv_nxt = self.rcv_nxt
        free = self.buffer - self.unconsumed
        if free < 0:
            free = 0
        edge = rcv_nxt + free
        adv = self.rcv_adv
        shift = self.wscale
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

    def syn_window(self, advertise: bool) -> int:
        """The window of our SYN or SYN-ACK: never scaled (RFC 7323 §2.2), so at most 64 KiB.

        ``advertise``: it moves the right edge (a SYN-ACK; a SYN goes out before RCV.NXT
        is known, and :meth:`synchronize` sets the edge when the SYN-ACK comes).
        """
        win = min(max(self.buffer - self.unconsumed, 0), 0xFFFF)
        if advertise and self.rcv_nxt + win > self.rcv_adv:
            self.rcv_adv = self.rcv_nxt + win
        return win
