"""Per-stage counters in shared memory, and the ``--stats`` table built from them.

Each stage process owns one :class:`Counters` block (an anonymous shared mapping made by
the supervisor before forking) and bumps plain integers in it; nobody else writes it. The
supervisor reads the blocks, the rings' own counters (high-water mark, waits for space)
and the CPU time the kernel reports for each stage, and formats the table.

The sink stage also owns a :class:`SinkState` block: whether it is working (or blocked
writing the user's output) rather than waiting for input, how many events it delivered,
and how many writes failed. The supervisor's drain reads it to tell a slow reader (wait)
from a stuck pipeline (give up), and the exit status reads the failures.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

FIELDS = ("packets_in", "packets_out", "msgs_in", "msgs_out", "bytes_in", "bytes_out")
PACKETS_IN, PACKETS_OUT, MSGS_IN, MSGS_OUT, BYTES_IN, BYTES_OUT = range(len(FIELDS))


class Counters:
    """Signed 64-bit counters shared between a stage (writer) and the supervisor (reader).

    ``c.v[MSGS_IN] += n`` is one item store on a memoryview: cheap enough for a hot path."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8 * len(FIELDS))  # MAP_SHARED | MAP_ANONYMOUS: shared by fork
        self.v = memoryview(self._map).cast("q")

    def snapshot(self) -> dict[str, int]:
        return dict(zip(FIELDS, self.v.tolist()))


class SharedInts:
    """Signed 64-bit integers in an anonymous shared mapping, inherited through fork."""

    SIZE = 0

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8 * self.SIZE)
        self.v = memoryview(self._map).cast("q")


BUSY, DELIVERED, FAILED_WRITES = range(3)


class SinkState(SharedInts):
    """Written by the sink stage, read by the supervisor.

    ``BUSY`` is 1 whenever the sink is not waiting for input: delivering events, opening
    or writing its outputs (where a slow reader blocks it), closing its files. While it
    is busy, or while ``DELIVERED`` grows, the pipeline is making progress.
    ``FAILED_WRITES`` counts events (or files) an output could not take."""

    SIZE = 3

    @property
    def busy(self) -> bool:
        return bool(self.v[BUSY])

    @property
    def delivered(self) -> int:
        return int(self.v[DELIVERED])

    @property
    def failed_writes(self) -> int:
        return int(self.v[FAILED_WRITES])


@dataclass
class StageReport:
    """What the table shows for one stage."""
    name: str
    counters: dict[str, int]
    cpu_seconds: float = 0.0
    ring_high_water: float = 0.0   # highest fill of the stage's output rings, 0..1
    ring_wait_seconds: float = 0.0  # time its producers spent waiting for space
    ring_waits: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _rate(value: int, seconds: float) -> str:
    return _human(value / seconds) if seconds > 0 else "-"


def _human(value: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(value) < 1000:
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}T"


def format_table(reports: list[StageReport], elapsed: float) -> str:
    """The ``--stats`` table: one row per stage, counts and rates in and out."""
    header = ("stage", "pkts in", "pkts out", "msgs in", "msgs out", "bytes in", "bytes out",
              "in/s", "out/s", "ring hwm", "ring wait", "cpu s")
    rows = [header]
    for r in reports:
        c = r.counters
        rows.append((
            r.name, _human(c["packets_in"]), _human(c["packets_out"]), _human(c["msgs_in"]),
            _human(c["msgs_out"]), _human(c["bytes_in"]) + "B", _human(c["bytes_out"]) + "B",
            _rate(c["bytes_in"], elapsed) + "B", _rate(c["bytes_out"], elapsed) + "B",
            f"{100 * r.ring_high_water:.0f}%", f"{r.ring_wait_seconds:.3f}s ({r.ring_waits})",
            f"{r.cpu_seconds:.2f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    return f"httptap stats after {elapsed:.2f}s\n" + "\n".join(lines)


def stats_record(reports: list[StageReport], elapsed: float) -> dict[str, object]:
    """The same numbers as :func:`format_table`, for a ``{"type": "stats"}`` ndjson line."""
    return {
        "type": "stats",
        "elapsed_s": round(elapsed, 3),
        "stages": [{
            "name": r.name, **r.counters, "cpu_s": round(r.cpu_seconds, 3),
            "ring_high_water": round(r.ring_high_water, 3),
            "ring_wait_s": round(r.ring_wait_seconds, 6), "ring_waits": r.ring_waits,
        } for r in reports],
    }
