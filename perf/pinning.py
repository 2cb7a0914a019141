"""CPU pinning for perf/bench.py (``--pin``): the client and the server on some cores,
the tool (httptap's stages, or a peer) on the others, so that they do not compete.

``--pin CLIENT:TOOL`` takes two CPU lists in taskset's syntax (``0-3:4-15``, ``0:1``);
``--pin auto`` gives the client and the server the first quarter of the CPUs this process
may use (at least 1, at most 4) and the tool the rest. With fewer than 2 CPUs, or lists
that overlap or name CPUs this process may not use, pinning is skipped with a message
saying why, and the run goes on unpinned.

How each part is pinned:
- the client: ``taskset -c CLIENT`` in front of its command (inside the tool's
  namespace for httptap and pasta: ``... -- taskset -c CLIENT curl ...``);
- the tool: ``taskset -c TOOL`` in front of httptap or pasta (its stages inherit the
  mask when they fork); the daemons (slirp4netns, mitmdump) and the server (nginx, or the
  test host's Python servers) are running already, so every thread of their process
  trees gets its mask with ``sched_setaffinity``.
A direct run pins the client and the server alike: its figure is what CLIENT cores give
without a tool in between.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass

from procs import descendants


def parse_cpus(text: str) -> set[int]:
    """``0-3,8`` -> {0, 1, 2, 3, 8}; ValueError when malformed."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a < 0 or b < a or b > 4095:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(a, b + 1))
    if not cpus:
        raise ValueError(f"no CPU in {text!r}")
    return cpus


def cpu_list(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> ``0-2,5`` (taskset's syntax)."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


@dataclass(frozen=True)
class Pin:
    client: frozenset[int]   # the client and the server
    tool: frozenset[int]     # httptap's processes, or the peer tool's

    def describe(self) -> str:
        return f"client+server on CPUs {cpu_list(set(self.client))}, " \
               f"tool on CPUs {cpu_list(set(self.tool))}"

    def client_prefix(self) -> list[str]:
        return ["taskset", "-c", cpu_list(set(self.client))]

    def tool_prefix(self) -> list[str]:
        return ["taskset", "-c", cpu_list(set(self.tool))]


def choose(spec: str, available: set[int]) -> tuple[Pin | None, str]:
    """The pinning ``--pin`` asks for on this machine, or None and why it is skipped."""
    if len(available) < 2:
        return None, (f"--pin needs at least 2 CPUs and this process may use "
                      f"{len(available)}: running unpinned")
    if not shutil.which("taskset"):
        return None, "--pin needs taskset (util-linux): running unpinned"
    if spec == "auto":
        ordered = sorted(available)
        k = max(1, min(4, len(ordered) // 4))
        client, tool = set(ordered[:k]), set(ordered[k:])
    else:
        left, sep, right = spec.partition(":")
        if not sep:
            raise ValueError(f"--pin {spec!r}: expected CLIENT:TOOL CPU lists or auto")
        client, tool = parse_cpus(left), parse_cpus(right)
    if client & tool:
        return None, (f"--pin {spec}: the client's and the tool's CPUs overlap "
                      f"({cpu_list(client & tool)}): running unpinned")
    missing = (client | tool) - available
    if missing:
        return None, (f"--pin {spec}: CPUs {cpu_list(missing)} are not available here "
                      f"(this process may use {cpu_list(available)}): running unpinned")
    return Pin(frozenset(client), frozenset(tool)), ""


def pin_tree(pid: int, cpus: frozenset[int]) -> int:
    """Set the CPU mask of every thread of ``pid`` and of its descendants; how many."""
    done = 0
    for p in [pid, *descendants(pid)]:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)
                done += 1
    return done
