"""How the supervisor shows ``--stats`` while a run goes on: a table redrawn in place on a
terminal (:class:`StatsRedraw`), and the CPU time of a stage still running."""

from __future__ import annotations

import os
from typing import TextIO


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class StatsRedraw:
    """``--stats-interval`` on a terminal: each table is drawn over the one before (one
    block that refreshes in place, not a scroll of tables), as long as the sink has
    written no line since (its ``DELIVERED`` count did not move): httptap's own lines are
    never drawn over. Piped, every table is printed whole, as it comes."""

    def __init__(self) -> None:
        self.lines = 0          # height of the table last drawn on a terminal (0: none)
        self.delivered = -1     # the sink's count then

    def frame(self, table: str, tty: bool, delivered: int) -> str:
        """The text that draws ``table`` now."""
        previous = self.lines
        redraw = tty and previous and delivered == self.delivered
        self.lines = table.count("\n") + 1 if tty else 0
        self.delivered = delivered
        # Up to the first line of the last table, then clear to the end of the screen.
        return f"\x1b[{previous}F\x1b[J{table}" if redraw else table


def cpu_of(pid: int) -> float:
    """CPU seconds of a running process, from /proc (utime + stime, in clock ticks)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
