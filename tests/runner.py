"""Run the real httptap in a subprocess, as the suite's user or as an unprivileged one.

Every run is started in a session of its own (``start_new_session``) and its pid is kept
in :data:`STARTED`: the session id then names every process of that run (httptap's stages,
the launcher, the command: none of them starts a session), so :func:`leftovers` can tell
what one run left behind without looking at anyone else's processes or files.
"""

from __future__ import annotations

import os
import pwd
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from httptap.run.supervisor import RUN_DIR_PREFIX  # + supervisor pid + "-": a run's directory

UNPRIVILEGED_UID = 65534  # "nobody": present on every Debian-like system

#: The pid of every httptap this process started, in order.
STARTED: list[int] = []


def httptap_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "httptap", *args]


def start_httptap(*args: str, uid: int | None = None, env: dict[str, str] | None = None,
                  **popen: Any) -> subprocess.Popen:
    """Start ``httptap ARGS`` (``subprocess.Popen`` keywords in ``popen``), in its own
    session, and remember its pid in :data:`STARTED`."""
    argv = httptap_argv(*args)
    if uid is not None:
        # setpriv execs httptap: the pid stays the same.
        argv = ["setpriv", f"--reuid={uid}", f"--regid={pwd.getpwuid(uid).pw_gid}",
                "--clear-groups", *argv]
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, start_new_session=True,
                            **popen)
    STARTED.append(proc.pid)
    return proc


def run_httptap(*args: str, timeout: float = 60, uid: int | None = None,
                env: dict[str, str] | None = None, input: bytes | None = None,
                ) -> subprocess.CompletedProcess[str]:
    """Run ``httptap ARGS`` to completion; stdout and stderr captured as text."""
    proc = start_httptap(*args, uid=uid, env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE if input is not None else None)
    try:
        out, err = proc.communicate(input.decode() if input is not None else None,
                                    timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the command name (which may hold spaces): state ppid pgrp session
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def leftovers(pids: list[int], tmpdir: str) -> list[str]:
    """What the httptap runs ``pids`` left behind: a process of their sessions, their run
    directories (in /dev/shm or ``tmpdir``), anything in ``tmpdir`` (the runs' TMPDIR)."""
    found: list[str] = []
    wanted = set(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _session_of(entry) in wanted:
            found.append(f"process {entry} of run {_session_of(entry)}")
    prefixes = tuple(f"{RUN_DIR_PREFIX}{pid}-" for pid in pids)
    if os.path.isdir("/dev/shm"):
        found += [f"/dev/shm/{name}" for name in os.listdir("/dev/shm")
                  if name.startswith(prefixes)]
    found += [os.path.join(tmpdir, name) for name in os.listdir(tmpdir)]
    return found


def unprivileged_skip_reason() -> str | None:
    """Why httptap cannot be run as the unprivileged user here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    st = os.stat("/dev/net/tun")
    if st.st_mode & 0o006 != 0o006:
        return "/dev/net/tun is not mode 0666 (.ci/run sets it; chmod 0666 /dev/net/tun)"
    # The interpreter and the package must be readable by that user (not under /root).
    check = subprocess.run(
        ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups",
         sys.executable, "-c", "import httptap.run.cli"], capture_output=True, text=True)
    if check.returncode != 0:
        return (f"uid {UNPRIVILEGED_UID} cannot import httptap with {sys.executable} "
                "(use a virtual environment outside /root, as .ci/run does)")
    return None


def stage_pids(httptap_pid: int) -> dict[str, int]:
    """The children of one httptap process (its stages, the launcher), by process name:
    this run's own processes only, never the machine's."""
    out = {}
    with open(f"/proc/{httptap_pid}/task/{httptap_pid}/children") as f:
        for pid in map(int, f.read().split()):
            try:
                with open(f"/proc/{pid}/comm") as c:
                    out[c.read().strip()] = pid
            except OSError:
                pass
    return out


def read_stdout_until(proc: subprocess.Popen[bytes], done: Callable[[bytes], bool],
                      what: str, timeout: float) -> bytes:
    """What ``proc`` printed on stdout until ``done(output)``; fails after ``timeout``
    seconds without it (``what`` says what was awaited) or if stdout closes first."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    while not done(out):
        left = deadline - time.monotonic()
        assert left > 0, f"{what} after {timeout:.0f} s: {out[-2000:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"httptap closed stdout early: {out[-2000:]!r} {proc.communicate(timeout=10)}"
            out += chunk
    return out
