"""The round-trip time estimator and the retransmission timeout (RFC 6298), for the sender.

One segment at a time is timed (the classic scheme, not timestamps): the sender calls
:meth:`RttEstimator.start` when it sends new data and nothing is being timed, and
:meth:`RttEstimator.on_ack` on every ACK that advances SND.UNA; the sample is taken once
the timed segment is covered. Karn's rule (RFC 6298 §3): a retransmission makes the
timing ambiguous, so :meth:`discard` drops it and no sample is taken until new data is
timed. ``now`` comes from the caller, as everywhere in the core.
"""

from __future__ import annotations

RTO_INITIAL = 1.0               # RFC 6298 §2.1
RTO_MIN = 0.2                   # Linux's TCP_RTO_MIN (RFC 6298 allows less than its 1 s)
RTO_MAX = 60.0                  # RFC 6298 §2.5
CLOCK_GRANULARITY = 0.001       # "G" in RFC 6298 §2; our timestamps tick in milliseconds


class RttEstimator:
    """SRTT, RTTVAR and the RTO derived from them, with exponential backoff."""

    __slots__ = ("srtt", "rttvar", "base_rto", "backoff", "timed_seq", "timed_at")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base_rto = RTO_INITIAL     # the RTO before backoff
        self.backoff = 0                # timeouts since the last new ACK
        self.timed_seq: int | None = None   # the ACK that completes the timed segment
        self.timed_at = 0.0

    def start(self, end_seq: int, now: float) -> None:
        """Time the segment that ends at ``end_seq`` (unwrapped), sent ``now``."""
        self.timed_seq = end_seq
        self.timed_at = now

    def discard(self) -> None:
        """Karn's rule: the timed segment was (or may have been) retransmitted."""
        self.timed_seq = None

    def on_ack(self, ack: int, now: float) -> None:
        """New data was acknowledged up to ``ack``: sample if the timed segment is covered,
        and drop the backoff (the peer is answering again)."""
        timed = self.timed_seq
        if timed is not None and ack >= timed:
            self.sample(now - self.timed_at)
            self.timed_seq = None
        self.backoff = 0

    def on_timeout(self) -> None:
        """The retransmission timer expired: back off (RFC 6298 §5.5), stop timing (§3)."""
        self.backoff += 1
        self.timed_seq = None

    def sample(self, r: float) -> None:
        """Fold one measurement into SRTT and RTTVAR (RFC 6298 §2.2-2.3)."""
        if r < 0:
            r = 0.0
        srtt = self.srtt
        if srtt is None:
            srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
        self.srtt = srtt
        rto = srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self.base_rto = min(max(rto, RTO_MIN), RTO_MAX)

    def rto(self) -> float:
        """The current retransmission timeout, with exponential backoff (RFC 6298 §5.5)."""
        return min(self.base_rto * (1 << self.backoff), RTO_MAX)

    def backed_off(self, shift: int) -> float:
        """The base RTO doubled ``shift`` times, capped: the persist timer's own backoff."""
        return min(self.base_rto * (1 << shift), RTO_MAX)
