"""Sorted sets of half-open ranges, and the out-of-order reassembly buffer built on one.

The receiver (``receiver``) keeps data that arrived beyond RCV.NXT in a
:class:`Reassembly` until the gap before it fills. Ranges are in *unwrapped* sequence
numbers (see ``seq``), so nothing here worries about wrap-around. The number of ranges
is small in practice (a handful of holes on a lossy link, none on the kernel's lossless
TUN path), so a plain sorted list with :mod:`bisect` is the right size of tool.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    """Disjoint, non-adjacent half-open ranges ``[start, end)`` kept sorted.

    ``_starts`` and ``_ends`` are parallel lists; adjacent or overlapping ranges merge.
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    @property
    def total(self) -> int:
        """Number of values covered."""
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def add(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add ``[start, end)``; return the sub-ranges that were not covered before, in order."""
        if start >= end:
            return []
        starts, ends = self._starts, self._ends
        # Ranges i..j-1 overlap or touch [start, end).
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        fresh: list[tuple[int, int]] = []
        pos = start
        for k in range(i, j):
            s, e = starts[k], ends[k]
            if s > pos:
                fresh.append((pos, min(s, end)))
            pos = max(pos, e)
            if pos >= end:
                break
        if pos < end:
            fresh.append((pos, end))
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]
        return fresh

    def pop_first(self) -> tuple[int, int]:
        return self._starts.pop(0), self._ends.pop(0)

    def discard_below(self, point: int) -> None:
        """Forget everything below ``point``."""
        starts, ends = self._starts, self._ends
        while starts and ends[0] <= point:
            del starts[0], ends[0]
        if starts and starts[0] < point:
            starts[0] = point

    def containing(self, value: int) -> tuple[int, int] | None:
        """The range that holds ``value``, if any."""
        k = bisect_right(self._starts, value) - 1
        if k >= 0 and value < self._ends[k]:
            return self._starts[k], self._ends[k]
        return None


class Reassembly:
    """Out-of-order data: byte pieces keyed by their first sequence number.

    Each byte is stored once: :meth:`insert` keeps only the parts of a segment that were
    not already held (RangeSet.add tells which), so overlapping retransmissions cost
    nothing. ``max_ranges`` bounds the bookkeeping against a pathological sender; the
    byte total is bounded by the caller, which only inserts data inside its window.
    """

    __slots__ = ("ranges", "_pieces", "bytes", "max_ranges", "_last_seq")

    def __init__(self, max_ranges: int = 64) -> None:
        self.ranges = RangeSet()
        self._pieces: dict[int, bytes] = {}
        self.bytes = 0
        self.max_ranges = max_ranges
        self._last_seq: int | None = None  # where the most recent insert began (for SACK)

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def insert(self, seq: int, data: bytes) -> bool:
        """Store ``data`` starting at ``seq``. False if refused (too many holes)."""
        end = seq + len(data)
        ranges = self.ranges
        if len(ranges) >= self.max_ranges and ranges.containing(seq) is None \
                and ranges.containing(end) is None:
            return False
        fresh = ranges.add(seq, end)
        pieces = self._pieces
        whole = len(fresh) == 1 and fresh[0] == (seq, end)
        for s, e in fresh:
            pieces[s] = data if whole else data[s - seq:e - seq]
            self.bytes += e - s
        self._last_seq = seq
        return True

    def pop_at(self, seq: int) -> bytes | None:
        """If a stored range begins at ``seq``, remove it and return its bytes."""
        first = self.ranges.first()
        if first is None or first[0] != seq:
            return None
        start, end = self.ranges.pop_first()
        pieces = self._pieces
        parts = []
        pos = start
        while pos < end:
            piece = pieces.pop(pos)
            parts.append(piece)
            pos += len(piece)
        self.bytes -= end - start
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def discard_below(self, seq: int) -> None:
        """Drop stored bytes below ``seq`` (already delivered by an overlapping segment)."""
        first = self.ranges.first()
        if first is None or first[0] >= seq:
            return
        pieces = self._pieces
        for s in sorted(k for k in pieces if k < seq):
            piece = pieces.pop(s)
            e = s + len(piece)
            if e > seq:
                pieces[seq] = piece[seq - s:]
                self.bytes -= seq - s
            else:
                self.bytes -= len(piece)
        self.ranges.discard_below(seq)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` ranges for SACK: the most recently changed first (RFC 2018 §4)."""
        blocks: list[tuple[int, int]] = []
        last = None if self._last_seq is None else self.ranges.containing(self._last_seq)
        if last is not None:
            blocks.append(last)
        for r in reversed(list(self.ranges)):
            if len(blocks) >= limit:
                break
            if r != last:
                blocks.append(r)
        return blocks[:limit]
