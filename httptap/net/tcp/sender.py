"""The send half of a connection: the send buffer, segment output, ACKs and retransmission.

:class:`Sender` holds the SND.* variables of RFC 9293 §3.3.1 (unwrapped, see ``seq``),
the bytes not yet acknowledged, the retransmission and persist timers, and the two
helpers it consults: a congestion controller (``congestion``) and the RTT estimator
(``rtt``). The connection (``connection``) passes it every acceptable ACK and, when
asked for segments, the receive-side fields (ACK number, window, options) to put in them.

The send buffer (``sendbuffer.SendBuffer``) holds the application's chunks as they came;
its first byte has sequence number ``sbuf_start`` (= SND.UNA once the SYN is
acknowledged), acknowledged bytes are dropped from its front, and segment payloads are
memoryviews of the chunks (copied only when a segment spans two chunks).
``snd_max`` is the highest sequence number ever sent; after a retransmission timeout
``snd_nxt`` goes back to SND.UNA (go-back-N, as in RFC 9293 §3.8.1) while ``snd_max``
still bounds acceptable ACKs.

Not implemented: acting on SACK blocks the peer sends (we only send them).
"""

from __future__ import annotations

from .congestion import CongestionFactory
from .events import Acked, Event
from .rtt import RTO_MAX, RttEstimator
from .segment import ACK, FIN, PSH, Segment
from .sendbuffer import SendBuffer
from .seq import MASK

MAX_RETRANSMITS = 15            # Linux tcp_retries2
MAX_SYN_RETRANSMITS = 5         # Linux tcp_synack_retries (and close to tcp_syn_retries)


class Sender:
    __slots__ = (
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "snd_wscale", "send_mss", "capacity", "buffer", "sbuf_start",
        "fin_seq", "congestion", "cc", "rtt", "retries", "probes", "persist_backoff",
        "ack_time", "rto_at", "persist_at", "retx_pending", "probe_pending",
        "more_to_send", "events",
    )

    def __init__(self, iss: int, capacity: int, congestion: CongestionFactory, now: float,
                 events: list[Event]) -> None:
        """The connection calls :meth:`set_mss` next, before anything is sent: that makes
        the congestion controller, once the handshake has settled the MSS (a passive
        open) or with the default for our SYN (an active open)."""
        self.iss = self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = self.snd_wl1 = self.snd_wl2 = self.max_snd_wnd = 0
        self.snd_wscale = 0             # the peer's window shift, 0 until agreed
        self.capacity = capacity        # send buffer size: the application's limit
        self.buffer = SendBuffer()
        self.sbuf_start = iss + 1       # the SYN takes ISS; data starts after it
        self.fin_seq: int | None = None  # our FIN's sequence number, once shutdown()
        self.congestion = congestion
        self.rtt = RttEstimator()
        self.retries = 0                # retransmission timeouts without progress
        self.probes = 0                 # zero-window probes without an answer
        self.persist_backoff = 0
        self.ack_time = now             # when the peer last sent an acceptable ACK
        # Timers, as absolute times or None.
        self.rto_at: float | None = None
        self.persist_at: float | None = None
        # What the next output() call must send besides new data.
        self.retx_pending = self.probe_pending = False
        self.more_to_send = False
        self.events = events            # the connection's event list, shared

    def set_mss(self, send_mss: int) -> None:
        """The largest payload we send (settled by the handshake); a fresh congestion
        window sized for it (RFC 6928's initial window is counted in segments)."""
        self.send_mss = send_mss
        self.cc = self.congestion(send_mss, self.iss)

    def queue_fin(self) -> None:
        """FIN follows the last byte queued so far (RFC 9293 §3.10.4)."""
        self.fin_seq = self.sbuf_start + len(self.buffer)

    def syn_sent(self, now: float) -> None:
        """Our SYN (or SYN-ACK) is going out: it occupies ISS; time it the first time."""
        iss = self.iss
        first = self.snd_max == iss
        self.snd_nxt = iss + 1
        if self.snd_max < iss + 1:
            self.snd_max = iss + 1
        if first:
            self.rtt.start(iss + 1, now)
        if self.rto_at is None:
            self.rto_at = now + self.rtt.rto()

    # ------------------------------------------------------------------ ACK arrival

    def on_ack(self, seq: int, ack: int, window: int, seglen: int, now: float) -> bool:
        """An acceptable segment's ACK (RFC 9293 §3.10.7.4, fifth check); ``seq`` and ``ack``
        unwrapped, ``window`` the raw header field. False if it acknowledges data never
        sent: the connection answers with an ACK and ignores the segment."""
        if ack > self.snd_max:
            return False
        self.probes = 0
        self.ack_time = now
        snd_una = self.snd_una
        new_wnd = window << self.snd_wscale
        if ack > snd_una:
            self.on_new_ack(ack, now)
        elif ack == snd_una and seglen == 0 and new_wnd == self.snd_wnd \
                and self.snd_max > snd_una:
            # A duplicate ACK in RFC 5681 §2's sense (no data, same window, data in flight).
            if self.cc.on_dupack(snd_una, self.snd_max):
                self.retx_pending = True         # fast retransmit (RFC 5681 §3.2)
                self.rtt.discard()
        # Window update only from a newer segment (SND.WL1/WL2, RFC 9293 §3.10.7.4).
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            self.snd_wnd = new_wnd
            if new_wnd > self.max_snd_wnd:
                self.max_snd_wnd = new_wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        return True

    def on_new_ack(self, ack: int, now: float) -> None:
        """SND.UNA < ``ack`` <= SND.MAX: free the acknowledged bytes, feed RTT and cwnd."""
        una = self.snd_una
        acked = ack - una
        start = self.sbuf_start
        sbuf = self.buffer
        data_end = start + len(sbuf)
        hi = ack if ack < data_end else data_end
        n = hi - start
        if n > 0:
            sbuf.drop(n)
            self.sbuf_start = hi
            self.events.append(Acked(n))
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        rtt = self.rtt
        rtt.on_ack(ack, now)
        self.retries = 0
        if self.cc.on_ack(ack, acked, self.snd_max):
            self.retx_pending = True             # partial ACK: the next hole (RFC 6582 §3.2)
        self.rto_at = None if ack >= self.snd_max else now + rtt.rto()   # RFC 6298 §5.2-5.3

    # ------------------------------------------------------------------ timers

    def on_rto(self, now: float, handshake: bool) -> bool:
        """The retransmission timer expired (RFC 6298 §5.4-5.6). True: give up (reset).

        During the handshake the connection resends its SYN; afterwards we go back N.
        """
        if not handshake and self.snd_max == self.snd_una:
            return False
        # A peer that keeps answering with a zero window is alive: our retransmissions are
        # just zero-window probes then, and do not count towards giving up (as in Linux).
        if handshake or self.snd_wnd or now - self.ack_time > RTO_MAX:
            self.retries += 1
        if self.retries > (MAX_SYN_RETRANSMITS if handshake else MAX_RETRANSMITS):
            return True
        self.rtt.on_timeout()
        if not handshake:                         # RFC 5681 §3.1 eq. 4, then go back N
            self.cc.on_timeout(self.snd_una, self.snd_max)
            self.snd_nxt = self.snd_una
            self.retx_pending = True
        self.rto_at = now + self.rtt.rto()
        return False

    def on_persist(self, now: float) -> bool:
        """The persist timer expired (RFC 9293 §3.8.6.1): probe the zero window again,
        backing off. True: the peer never answered, give up (reset)."""
        self.probes += 1
        if self.probes > MAX_RETRANSMITS:
            return True
        self.probe_pending = True
        self.persist_backoff += 1
        self.persist_at = now + self.rtt.backed_off(self.persist_backoff)
        return False

    def stop_timers(self) -> None:
        self.rto_at = self.persist_at = None
        self.retx_pending = self.probe_pending = False

    # ------------------------------------------------------------------ output

    def output(self, out: list[Segment], now: float, burst: int, ack: int, win: int,
               seg_max: int, sack: tuple[tuple[int, int], ...], ts_val: int | None,
               ts_ecr: int | None) -> bool:
        """Append to ``out`` the retransmission, new data, FIN and probe due now; at most
        ``burst`` new data segments (then ``more_to_send`` says the window allows more).

        ``ack``, ``win``, ``sack``, ``ts_val`` and ``ts_ecr`` are the receive side's fields
        for every segment; ``seg_max`` the payload that fits beside the options. True if
        anything went out that carries our ACK (so no pure ACK is needed).
        """
        self.more_to_send = False
        sbuf = self.buffer
        start = self.sbuf_start
        data_end = start + len(sbuf)
        fin_seq = self.fin_seq
        una = self.snd_una
        sent = False

        if self.retx_pending:                     # one segment at SND.UNA, window or not
            self.retx_pending = False
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
                if self.rto_at is None:
                    self.rto_at = now + self.rtt.rto()

        nxt = self.snd_nxt
        snd_max = self.snd_max
        wnd = self.snd_wnd
        cwnd = self.cc.cwnd
        limit = una + (wnd if wnd < cwnd else cwnd)
        last = last_data = None
        if nxt < data_end and nxt < limit:
            max_half = self.max_snd_wnd >> 1
            rtt = self.rtt
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
                if nxt >= snd_max and rtt.timed_seq is None:
                    rtt.start(nxt + n, now)   # time new data only (Karn, RFC 6298 §3)
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
            if self.rto_at is None:
                self.rto_at = now + self.rtt.rto()

        if self.probe_pending:                    # zero-window probe: an old sequence number
            self.probe_pending = False               # makes the peer answer with its window
            if not sent:
                out.append(Segment((una - 1) & MASK, ack, ACK, win, b"",
                                   ts_val=ts_val, ts_ecr=ts_ecr))
                # The peer drops the probe itself: a pending ACK still goes out after it.

        # Persist timer (RFC 9293 §3.8.6.1): data waits, nothing is in flight, window is 0.
        if wnd == 0 and snd_max == self.snd_una and nxt < data_end:
            if self.persist_at is None:
                self.persist_at = now + self.rtt.backed_off(self.persist_backoff)
        elif self.persist_at is not None:
            self.persist_at = None
            self.persist_backoff = 0
        return sent
