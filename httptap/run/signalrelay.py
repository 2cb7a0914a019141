"""Wait for one child, pass signals on to it, reap the rest: the two waiting processes of
the namespace (the launcher, parent of the namespace's PID 1, and PID 1 itself).

Both are forks of the supervisor, so each held a copy of its interpreter: ~25 MB of
resident memory apiece for a loop that only waits. When their child has run for a while,
they exec this file in a fresh interpreter without site (``python -I -S``, ~9 MB) through
:func:`exec_relay`. The file imports only ``os``, ``signal`` and ``sys`` so that it runs
without the package on the path; ``httptap.run.namespace`` imports :func:`relay_signals` from
it for the in-process fallback.

    python -I -S signalrelay.py NAME CHILD_PID KEEP_RUNNING(0|1)

The signal mask (everything we wait for is blocked), the parent-death signal and the
children survive the exec, so nothing is missed in between: a signal that arrives while
the new interpreter starts stays pending until ``sigwaitinfo`` takes it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def relay_signals(child: int, keep_running: bool, shrink_after: float | None = None,
                  name: str = "") -> int:
    """Wait for ``child``, passing on signals sent to us by another process (a terminal's
    Ctrl-C reaches the child's process group by itself), and reap every other child.
    Returns the child's exit code (128 + signal when killed). With ``keep_running``, stay
    after the child has exited until a signal arrives. Signals are blocked (inherited
    from the supervisor), so they are taken one by one here.

    ``shrink_after``: if the child still runs after that many seconds, continue in a
    small interpreter (:func:`exec_relay`, named ``name``). Not at once: a new interpreter
    takes ~10 ms to start, which a short command (``httptap -- true``) would wait for."""
    watched = {signal.SIGCHLD, *RELAYED}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    code: int | None = None
    deadline = None if shrink_after is None else time.monotonic() + shrink_after
    while True:
        if deadline is not None:
            info = signal.sigtimedwait(watched, max(0.0, deadline - time.monotonic()))
            if info is None:
                deadline = None
                if code is None:  # the exec'd relay must still see the child exit
                    exec_relay(name, child, keep_running)
                continue
        else:
            info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == child:
                    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            if code is not None and not keep_running:
                return code
        elif code is not None:
            return code  # --no-exit and the command is gone: any interrupt ends it
        elif info.si_code <= 0:  # SI_USER (0), SI_QUEUE (-1)...: sent by a process
            try:
                os.kill(child, info.si_signo)
            except ProcessLookupError:
                pass


def exec_relay(name: str, child: int, keep_running: bool) -> None:
    """Become a small interpreter running :func:`relay_signals` (returns only if the exec
    failed: then the caller relays in process)."""
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", os.path.abspath(__file__),
                                  name, str(child), "1" if keep_running else "0"])
    except OSError:
        pass


def _main(argv: list[str]) -> int:
    name, child, keep = argv[1], int(argv[2]), argv[3] == "1"
    _set_name(name)
    return relay_signals(child, keep)


def _set_name(name: str) -> None:
    """The process name ps, the tests and the benchmark see."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        # The launcher's /proc is the new PID namespace's, where it does not appear.
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
