"""The launcher process, forked first: it imports pyroute2 while the supervisor imports
its own modules and parses the command line, then waits for the run's ``Config``.

Role at start-up: configuring the TUN device needs pyroute2, whose import (~60-75 ms of
CPU, it brings asyncio) was the longest step on the way to running the command. Forked
as soon as the interpreter is up (``httptap.__main__``), the launcher does that import on
the other core while the supervisor imports typer and parses. The supervisor then hands
it the options (:meth:`Launcher.start`: ``b"C"`` + the pickled ``Config`` on the Unix
socket they share) and the launcher goes on as before (``namespace.launch``).

Nothing is left behind: every way out of the supervisor that did not start the launcher
(``--help``, ``-V``, a bad option, a failure before the run) ends it with
:func:`discard` (SIGKILL and reap: it has done nothing but import), the parent-death
signal ends it if the supervisor dies, and it exits quietly when its socket closes.

A caller without the early fork (``cli.main`` in a test) gets a launcher forked when it
asks (:func:`take`): the same child, given its options at once.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
from typing import NoReturn

from . import timeline
# Imported before the fork: the supervisor needs these modules too (so both share them),
# and the launcher would import them first thing anyway.
from .namespace import die_with_parent, launch, preload_iproute

# Signals the supervisor waits for (blocked, taken by sigtimedwait) and passes on to the
# command; the launcher sets up the same mask for itself and its children.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
WATCHED = {signal.SIGCHLD, *FORWARDED}
_MAX_CONFIG = 1 << 20


def block_signals() -> None:
    """Block every signal the run waits for, with default dispositions: blocked signals
    are taken by sigwaitinfo(), but an *ignored* one is discarded when sent (a shell's
    background job starts with SIGINT ignored, and then Ctrl-C or kill -INT could never
    end a --no-exit run). Default dispositions keep them queued."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)


def whole_lines(stream: object) -> None:
    """Make each line printed to ``stream`` one write(2). The command writes to the same
    stderr; with ``PYTHONUNBUFFERED`` set, Python writes a print's text and its newline
    separately, and the command's bytes could land between them. Line buffering without
    write-through hands the stream whole lines. The launcher and the stages are forked
    from the httptap process after this and keep the setting."""
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(write_through=False, line_buffering=True)
        except (OSError, ValueError):
            pass  # closed, or not reconfigurable: lines may then be written in pieces


class Launcher:
    """The launcher process, seen from the supervisor: its pid and its end of the socket."""

    def __init__(self) -> None:
        self.sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.sock.close()
            _child(parent, child_sock)
        child_sock.close()
        self.pid = pid
        self.started = False

    def start(self, config: object) -> None:
        """Hand the launcher its options: from here the supervisor owns it (reaps it as
        the command's process)."""
        import pickle

        self.started = True
        self.sock.send(b"C" + pickle.dumps(config, pickle.HIGHEST_PROTOCOL))

    def discard(self) -> None:
        """End a launcher that was never started, and reap it."""
        self.sock.close()
        if self.started:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_early: Launcher | None = None


def fork_early() -> None:
    """Fork the launcher now (``httptap.__main__``, before the supervisor's imports)."""
    global _early
    whole_lines(sys.stderr)
    _early = Launcher()


def take() -> Launcher:
    """The launcher forked early, or one forked now if there is none."""
    global _early
    launcher, _early = _early, None
    return launcher if launcher is not None else Launcher()


def discard() -> None:
    """End the early launcher if the run never took it (every way out of httptap)."""
    global _early
    launcher, _early = _early, None
    if launcher is not None:
        launcher.discard()


def _child(parent: int, sock: socket.socket) -> NoReturn:
    """Body of the launcher until it has its options; then ``namespace.launch``."""
    try:
        block_signals()
        timeline.process("launcher")
        timeline.mark("started")
        die_with_parent()
        if os.getppid() != parent:
            os._exit(0)  # the supervisor is gone already
        preload_iproute()
        timeline.mark("pyroute2 imported")
        msg = sock.recv(_MAX_CONFIG)
        if msg[:1] != b"C":
            os._exit(0)  # the supervisor left without a run (--help, a bad option...)
        import pickle

        config = pickle.loads(msg[1:])
        timeline.enable(config.verbose)
        timeline.mark("options received")
    except BaseException:  # noqa: BLE001 - nothing to say: the supervisor says why it left
        os._exit(0)
    launch(config, sock)
