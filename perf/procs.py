"""Processes for perf/bench.py: run a command with a timeout, kill its whole tree, sample
the memory and CPU of a tool's processes, and undo everything on every way out.

The other bench modules start every subprocess through ``run`` (output in temporary
files, the tree killed at the timeout) or register its removal with ``on_cleanup``;
``bench.main`` runs the cleanups at the end, atexit is the last resort, and
``raise_exit`` turns SIGTERM/SIGHUP into an exit so the cleanups run then too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent   # every command runs from the repository
SAMPLE_INTERVAL = 0.05          # seconds between /proc samples of the tool's processes

# --------------------------------------------------------------------------- cleanup

_cleanups: list[Callable[[], None]] = []
_cleanup_lock = threading.Lock()


def run_cleanups() -> None:
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            print(f"bench: cleanup {getattr(fn, '__name__', fn)} failed: {exc!r}", file=sys.stderr)


def on_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    with _cleanup_lock:
        _cleanups.append(fn)
    return fn


atexit.register(run_cleanups)


def raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- processes

def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = children_map()
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process, its process group and its descendants."""
    if proc.poll() is not None and not descendants(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        pids = [proc.pid, *descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        try:
            proc.wait(timeout=wait)
            if not descendants(proc.pid):
                return
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Result:
    cmd: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    samples: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"timed out after {self.seconds:.1f}s" if self.timed_out else \
            f"exit status {self.rc} after {self.seconds:.1f}s"
        err = self.stderr
        cut = err.rfind("httptap stats after")
        if cut >= 0:                       # the --stats table hides the error lines above it
            err = err[:cut]
        tail = (err.strip().splitlines() or [""])[-6:]
        out = (self.stdout.strip().splitlines() or [""])[-2:]
        return (f"`{' '.join(self.cmd)[:300]}` {what}; stdout: {' | '.join(out)[:300]!r}; "
                f"stderr: {' | '.join(tail)[:600]!r}")


def wait_exactly(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """``proc.wait(timeout)``, woken the moment the process exits (select on a pidfd).
    ``Popen.wait`` with a timeout polls, sleeping up to 50 ms between looks: a 120 ms
    ``httptap -- true`` was measured as ~165 ms."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # before Linux 5.3
        proc.wait(timeout=timeout)
        return
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    proc.wait()


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
        sampler: "ToolSampler | None" = None) -> Result:
    """Run ``cmd`` with output in temporary files; kill its whole tree at ``timeout``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=REPO, start_new_session=True, close_fds=True)
        timed_out = False
        try:
            if sampler:
                sampler.start(proc.pid)
            try:
                wait_exactly(proc, timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            if sampler:
                sampler.stop()
            kill_tree(proc)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return Result(cmd, None if timed_out else proc.returncode,
                      out.read().decode(errors="replace"),
                      err.read()[-200_000:].decode(errors="replace"), seconds, timed_out,
                      sampler.result() if sampler else {})


# --------------------------------------------------------------------------- memory/CPU sampler

def _read_proc(pid: int) -> tuple[str, list[str], int, int, float] | None:
    """(comm, argv, VmRSS kB, Pss kB, CPU seconds) of ``pid``, or None if gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        rss = pss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1])
                        break
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return comm, argv, rss, pss, cpu
    except (OSError, IndexError, ValueError):
        return None


def memory_kb(pid: int) -> dict[str, int] | None:
    """RSS, PSS and USS (private clean + private dirty) of ``pid`` in kB, from
    ``/proc/PID/smaps_rollup``; None if the process is gone."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "Rss":
                    out["rss"] = int(rest.split()[0])
                elif key == "Pss":
                    out["pss"] = int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += int(rest.split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return out


def tool_pids(root: int, is_tool: Callable[[str, list[str]], bool]) -> list[tuple[int, str]]:
    """(pid, comm) of ``root`` and of its descendants that ``is_tool`` accepts, not
    descending into the others (the command a tool runs)."""
    kids = children_map()
    out: list[tuple[int, str]] = []
    todo = [root]
    while todo and len(out) < 1000:
        pid = todo.pop()
        info = _read_proc(pid)
        if info is None or not (pid == root or is_tool(info[0], info[1])):
            continue
        out.append((pid, info[0]))
        todo.extend(kids.get(pid, []))
    return out


def is_httptap_process(comm: str, argv: list[str]) -> bool:
    """httptap's supervisor, launcher and stages: comm ``httptap-*`` or ``python -m httptap``."""
    if comm.startswith("httptap"):
        return True
    return len(argv) >= 3 and argv[1:3] == ["-m", "httptap"] or \
        (len(argv) >= 2 and os.path.basename(argv[1]) == "httptap") or \
        (len(argv) >= 1 and os.path.basename(argv[0]) == "httptap")


class ToolSampler:
    """Samples, every 50 ms, the processes of a tool: the root process and the descendants
    that ``is_tool`` accepts, not descending into the rest (the command it runs).

    Records the peak of the summed VmRSS, the peak of the summed Pss (shared pages split
    between the processes sharing them) and the CPU seconds (utime + stime) last seen per
    process, summed."""

    def __init__(self, is_tool: Callable[[str, list[str]], bool], root: int | None = None) -> None:
        self.is_tool = is_tool
        self.root = root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.max_procs = 0
        self.cpu: dict[int, float] = {}

    def _tool_pids(self, root: int) -> list[int]:
        return [pid for pid, _ in tool_pids(root, self.is_tool)]

    def _loop(self, root: int) -> None:
        deadline = time.monotonic() + 3600
        while not self._stop.is_set() and time.monotonic() < deadline:
            rss = pss = n = 0
            for pid in self._tool_pids(root):
                info = _read_proc(pid)
                if info is None:
                    continue
                rss += info[2]
                pss += info[3]
                n += 1
                self.cpu[pid] = info[4]
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.max_procs = max(self.max_procs, n)
            self._stop.wait(SAMPLE_INTERVAL)

    def start(self, pid: int) -> None:
        root = self.root if self.root is not None else pid
        self._thread = threading.Thread(target=self._loop, args=(root,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def result(self) -> dict[str, float]:
        return {"peak_rss_mb": self.peak_rss_kb / 1024, "peak_pss_mb": self.peak_pss_kb / 1024,
                "procs": self.max_procs, "cpu_s_sampled": sum(self.cpu.values())}


