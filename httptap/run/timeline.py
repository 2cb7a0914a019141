"""The start-up timeline that ``-v`` prints: when each step of a run happens, in every
process of the run, relative to the start of the httptap process.

    httptap: [  41.2 ms] supervisor  imports done           (cpu 38.0 ms)
    httptap: [  97.0 ms] launcher    TUN device up          (cpu  4.1 ms)

The cpu figure is the process's own CPU time so far (a fork starts again from zero).

Imported first (by ``run.early``, or ``run.cli``), so it may import only ``os``,
``sys`` and ``time``. Marks made before the options are parsed are kept and printed
once ``-v`` is known; after that they print as they happen. Stages and the command's
PID 1 are forks of the supervisor: they inherit the start time and the switch. The
launcher and the trust maker are forked before the options are parsed (``run.early``):
they inherit the start time and turn the switch themselves when given the options.

Process start comes from the httptap process's ``/proc/PID/stat`` (in clock ticks: 10 ms
steps), so the first mark, ``interpreter up``, is that coarse; the intervals between
marks are exact (``CLOCK_MONOTONIC``).
"""

from __future__ import annotations

import os
import sys
import time

_first = time.monotonic()           # when this module was imported: "interpreter up"
_origin = os.getpid()               # the httptap process, whose start the times count from
_who = "supervisor"
# Marks made before enable(); None after.
_pending: list[tuple[float, float, str, str]] | None = [
    (_first, time.process_time(), _who, "interpreter up")]
_enabled = False


def _since_process_start() -> float:
    """Seconds between the httptap process's start and ``_first`` (0 if /proc says
    nothing). Read from the httptap process's own entry: the launcher is forked before
    ``-v`` is known, and enables its timeline itself."""
    try:
        with open(f"/proc/{_origin}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        started = start_ticks / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - (time.monotonic() - _first)
                   - started)
    except (OSError, IndexError, ValueError):
        return 0.0


_offset = 0.0  # set by enable(): process start to _first


def enable(on: bool) -> None:
    """Print the marks made so far and every later one (``on``), or drop them."""
    global _enabled, _pending, _offset
    _enabled = on
    pending, _pending = _pending, None
    if on:
        _offset = _since_process_start()
        for at, cpu, who, what in pending or ():
            _print(at, cpu, who, what)


def process(name: str) -> None:
    """Name the current process (after a fork) in its marks. A process forked before
    ``-v`` is known drops the marks it inherited: its parent prints them."""
    global _who, _pending
    _who = name
    if _pending is not None:
        _pending = []


def mark(what: str) -> None:
    """Note that ``what`` happens now."""
    if _enabled:
        _print(time.monotonic(), time.process_time(), _who, what)
    elif _pending is not None:
        _pending.append((time.monotonic(), time.process_time(), _who, what))


def enabled() -> bool:
    return _enabled


def _print(at: float, cpu: float, who: str, what: str) -> None:
    ms = (at - _first + _offset) * 1000
    try:
        # One write per line: the processes of a run print to the same stderr.
        os.write(2, f"httptap: [{ms:7.1f} ms] {who:<11} {what:<32} (cpu {cpu * 1000:5.1f} ms)\n"
                 .encode())
    except OSError:
        pass

