"""Start-up time of ``httptap -- true``, one checkout against another, interleaved.

    .venv/bin/python perf/startup.py                        # this checkout, 30 runs
    .venv/bin/python perf/startup.py --tree /tmp/base .     # A/B: rounds of A, B (order alternates)
    .venv/bin/python perf/startup.py --timeline --runs 15   # median time of each -v timeline mark
    setsid -w .venv/bin/python perf/startup.py --boost ...  # on a shared, busy machine (root)

Each tree is a directory holding an ``httptap`` package (a checkout, or
``git archive main httptap | tar -x -C /tmp/base``); its httptap runs as
``python -m httptap ARGS -- true`` from that directory with this interpreter, so the
trees share one set of installed dependencies. ARGS default to what ``bench.py``'s
start-up workload passes (``--http 18080 --https 18443 --stats --stderr``); give others
after ``--``. Trees are compiled to bytecode first, as ``bench.py`` does.

Figures per tree: wall time from fork to exit (median, p90), and CPU time of the whole run
(user + system of httptap and every process it waited for: the stages, the launcher, the
command), which a loaded machine disturbs much less than the wall time. ``true`` alone is
the reference. Each run has a timeout; a run that fails stops the script with its stderr.

``--boost`` is for a shared machine that others keep busy: the wall time then says more
about their load than about httptap. The script (a session leader: run it under
``setsid``) sets its session's autogroup to nice -20 and keeps every run in that session
(a process group of its own instead of a session), so the runs get the CPUs about as on
a quiet machine while the kernel still shares them fairly between a run's own processes.
Needs root and ``kernel.sched_autogroup_enabled``; the others' work waits meanwhile, so
keep such sittings short.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_ARGS = ["--http", "18080", "--https", "18443", "--stats", "--stderr"]
TIMEOUT = 30.0
MARK = re.compile(r"^httptap: \[\s*([\d.]+) ms\] (\S+)\s+(.*?)\s+\(cpu\s+([\d.]+) ms\)$")


def run_once(argv: list[str], cwd: str | None, boost: bool = False) -> tuple[float, str]:
    """(wall ms, stderr) of one run that must succeed (with ``boost``, in our session)."""
    start = time.perf_counter()
    group: dict[str, object] = {"process_group": 0} if boost else {"start_new_session": True}
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            **group)
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SystemExit(f"timed out after {TIMEOUT:.0f}s: {' '.join(argv)}")
    wall = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(argv)}\n{err.decode(errors='replace')}")
    return wall, err.decode(errors="replace")


def children_cpu() -> float:
    """CPU ms of every child reaped so far, with the children they reaped in turn."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def measure(argv: list[str], cwd: str | None, boost: bool) -> tuple[float, float, str]:
    """(wall ms, CPU ms of the run's whole process tree, stderr)."""
    before = children_cpu()
    wall, err = run_once(argv, cwd, boost)
    return wall, children_cpu() - before, err


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def timeline_of(err: str) -> dict[str, tuple[float, float]]:
    """``who what`` -> (ms since start, CPU ms of that process so far), from one run's -v
    output (numbers in ``what`` dropped)."""
    marks: dict[str, tuple[float, float]] = {}
    for line in err.splitlines():
        m = MARK.match(line)
        if m:
            what = re.sub(r"\d+", "N", m[3]).strip()
            marks.setdefault(f"{m[2]:<11} {what}", (float(m[1]), float(m[4])))
    return marks


def boost() -> None:
    """This session's autogroup at nice -20 (the runs stay in the session)."""
    if os.getsid(0) != os.getpid():
        raise SystemExit("--boost: run this script as a session leader (setsid -w ...)")
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("-20")
    except OSError as exc:
        raise SystemExit(f"--boost: cannot set the autogroup's nice value: {exc}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", nargs="+", default=[str(REPO)],
                        help="directories holding an httptap package (default: this checkout)")
    parser.add_argument("--runs", type=int, default=30, help="runs per tree (default 30)")
    parser.add_argument("--timeline", action="store_true",
                        help="run with -v and print the median time of each timeline mark")
    parser.add_argument("--boost", action="store_true",
                        help="runs in this session, its autogroup at nice -20 (see above)")
    parser.add_argument("args", nargs="*", help="httptap's options (after --)")
    opts = parser.parse_args()
    if opts.boost:
        boost()
    args = opts.args or BENCH_ARGS
    if opts.timeline:
        args = [*args, "-v"]
    trees = [str(Path(t).resolve()) for t in opts.tree]
    for tree in trees:
        if not (Path(tree) / "httptap" / "__main__.py").exists():
            parser.error(f"{tree} holds no httptap package")
        compileall.compile_dir(str(Path(tree) / "httptap"), quiet=1)
    runs = max(1, min(opts.runs, 1000))
    setups: list[tuple[str, list[str], str | None]] = [("true", ["true"], None)]
    setups += [(tree, [sys.executable, "-m", "httptap", *args, "--", "true"], tree) for tree in trees]
    walls: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    cpus: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    marks: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name, _, _ in setups}
    for i in range(runs):
        order = setups if i % 2 == 0 else [setups[0], *reversed(setups[1:])]
        for name, argv, cwd in order:
            wall, cpu, err = measure(argv, cwd, opts.boost)
            walls[name].append(wall)
            cpus[name].append(cpu)
            for mark, times in timeline_of(err).items():
                marks[name].setdefault(mark, []).append(times)
    boosted = " (boosted: autogroup nice -20)" if opts.boost else ""
    print(f"{runs} runs each, interleaved{boosted}; httptap {' '.join(args)} -- true")
    print(f"{'':40} {'median':>8} {'p90':>8} {'cpu med':>8}  (ms)")
    for name, _, _ in setups:
        print(f"{name[-40:]:40} {statistics.median(walls[name]):8.1f} {p90(walls[name]):8.1f} "
              f"{statistics.median(cpus[name]):8.1f}")
    if opts.timeline:
        for name, _, _ in setups[1:]:
            print(f"\ntimeline of {name} (median of {runs} runs: ms from process start, "
                  "and CPU ms of that process so far)")
            rows = sorted((statistics.median(t for t, _ in v), statistics.median(c for _, c in v), k)
                          for k, v in marks[name].items())
            for ms, cpu, mark in rows:
                print(f"  {ms:7.1f}  {mark:<50} cpu {cpu:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
