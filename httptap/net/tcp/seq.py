"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 serial numbers).

On the wire a TCP sequence number is 32 bits and wraps. Inside the connection core we
keep *unwrapped* sequence numbers instead: plain Python ints that grow without bound,
so every comparison on the hot path is an ordinary ``<``. Only two places touch the
32-bit form: :func:`unwrap` turns a number read from a segment into the unwrapped value
closest to a reference point the core already holds (the connection calls it for every
SEQ and ACK field it reads), and ``& MASK`` turns an unwrapped value back into the wire
form. The comparison helpers below are for code (and tests) that only has wire values.

Calling :func:`unwrap` rather than repeating its two lines costs about 25 ns a call on
CPython 3.11 (two calls per received segment); measured with ``perf/bench_tcpcore.py``,
that is below 1 % of the tcp stage's cost per segment and within its run-to-run noise.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
_HALF = 0x80000000
_FULL = 0x100000000


def seq_add(a: int, n: int) -> int:
    """``a + n`` in 32-bit sequence space."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit sequence numbers, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - _FULL if d & _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes strictly before ``b``."""
    return ((a - b) & MASK) >= _HALF


def seq_le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) >= _HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    return seq_le(b, a)


def seq_in(x: int, lo: int, hi: int) -> bool:
    """``lo <= x < hi`` in sequence space (the half-open range may wrap)."""
    return ((x - lo) & MASK) < ((hi - lo) & MASK)


def unwrap(wire: int, ref: int) -> int:
    """The unwrapped number whose low 32 bits are ``wire`` and which lies closest to ``ref``.

    ``ref`` is an unwrapped value (for example RCV.NXT); the result may be below it.
    """
    d = (wire - ref) & MASK
    return ref + (d - _FULL if d & _HALF else d)
