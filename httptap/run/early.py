"""Processes forked before the options are parsed: the launcher and the trust maker.

Role at start-up: the command waits for two long tasks, the launcher's (the namespaces
and the TUN device, configured with pyroute2, whose import brings asyncio: ~50-75 ms of
CPU, asyncio ~15 of it, imported before the launcher's fork) and the trust maker's (the
CA and the trust files, with ``cryptography``: ~35-45 ms to import). Both are forked
as soon as the interpreter is up (``httptap.__main__`` calls :func:`fork_early`) and
import their modules on the other core while the supervisor imports typer and parses
the command line. Then each waits for its part of the run: the supervisor hands it
over with :meth:`EarlyChild.start` (``b"C"`` + the pickled ``Config`` and whatever else
that process needs, with file descriptors, on a Unix socket of its own), and it goes on
as it did when it was forked at that point (``namespace.launch``, ``trustmaker``).

Nothing is left behind: every way out of the supervisor that did not start them
(``--help``, ``-V``, a bad option, a failure before the run) ends them with
:func:`discard` (SIGKILL and reap: they have done nothing but import), the parent-death
signal ends them if the supervisor dies, and each exits quietly when its socket closes
before it was started. Neither starts a thread (the launcher's unshare(CLONE_NEWUSER)
needs a process with one).

A caller without the early forks (``cli.main`` in a test) gets each one forked when it
asks (:func:`take`): the same child, given its part at once.
"""

from __future__ import annotations

import io
import os
import pickle  # before the forks: each early process and the supervisor use it
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from . import timeline
# Imported before the forks: the supervisor needs these modules too (so they are shared),
# and the launcher would import them first thing anyway.
from .namespace import die_with_parent

if TYPE_CHECKING:
    from .config import Config

LAUNCHER = "launcher"
TRUST_MAKER = "ca"
# Signals the supervisor waits for (blocked, taken by sigtimedwait) and passes on to the
# command; the early processes set up the same mask, as forks of the supervisor had it.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
WATCHED = {signal.SIGCHLD, *FORWARDED}
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 256

# What an early process does: import its modules; then, given the run's config, what the
# supervisor sent with it and the descriptors, its work (never returns).
Prepare = Callable[[], object]
Body = Callable[["Config", object, list[int], socket.socket], NoReturn]


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
    write-through hands the stream whole lines. The early processes and the stages are
    forked from the httptap process after this and keep the setting."""
    if isinstance(stream, io.TextIOWrapper):
        try:
            stream.reconfigure(write_through=False, line_buffering=True)
        except (OSError, ValueError):
            pass  # closed, or not reconfigurable: lines may then be written in pieces


class EarlyChild:
    """An early process, seen from the supervisor: its pid and its end of the socket."""

    def __init__(self, name: str, close_fds: Sequence[int] = ()) -> None:
        """Fork process ``name`` (closing ``close_fds`` in it: when forked late, what the
        supervisor holds for others)."""
        prepare, body = _role(name)
        self.name = name
        self.sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.sock.close()
            _child(name, parent, child_sock, close_fds, prepare, body)
        child_sock.close()
        self.pid = pid
        self.started = False

    def start(self, config: Config, extra: object = None, fds: Sequence[int] = ()) -> None:
        """Hand the process its part of the run: from here the supervisor owns it."""
        self.started = True
        data = b"C" + pickle.dumps((config, extra), pickle.HIGHEST_PROTOCOL)
        socket.send_fds(self.sock, [data], list(fds))

    def discard(self) -> None:
        """End the process if it was never started, and reap it."""
        self.sock.close()
        if self.started:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_early: dict[str, EarlyChild] = {}


def fork_early() -> None:
    """Fork the trust maker and the launcher now (``httptap.__main__``, before the
    supervisor's imports).

    asyncio is imported in between: pyroute2 needs it in the launcher, and so does the
    proxy stage, a fork of the supervisor; imported once here, before the launcher's
    fork, both share it (~15 ms of CPU less per run). The trust maker, which has no use
    for it, is forked before."""
    whole_lines(sys.stderr)
    _early[TRUST_MAKER] = EarlyChild(TRUST_MAKER)
    import asyncio  # noqa: F401

    _early[LAUNCHER] = EarlyChild(LAUNCHER)


def take(name: str, close_fds: Sequence[int] = ()) -> EarlyChild:
    """Process ``name`` forked early, or one forked now if there is none."""
    child = _early.pop(name, None)
    return child if child is not None else EarlyChild(name, close_fds)


def discard() -> None:
    """End the early processes the run never took (every way out of httptap)."""
    while _early:
        _early.popitem()[1].discard()


def _role(name: str) -> tuple[Prepare, Body]:
    if name == LAUNCHER:
        from .namespace import launch_with, preload_iproute

        return preload_iproute, launch_with
    from .trustmaker import import_ca_modules, make_with

    return import_ca_modules, make_with


def _child(name: str, parent: int, sock: socket.socket, close_fds: Sequence[int],
           prepare: Prepare, body: Body) -> NoReturn:
    """Body of an early process until it has its part of the run."""
    try:
        block_signals()
        timeline.process(name)
        timeline.mark("started")
        die_with_parent()
        if os.getppid() != parent:
            os._exit(0)  # the supervisor is gone already
        for fd in close_fds:
            os.close(fd)
        try:
            prepare()
        except Exception:  # noqa: BLE001 - the work imports them again and says what failed
            pass
        timeline.mark("modules imported")
        msg, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
        if msg[:1] != b"C":
            os._exit(0)  # the supervisor left without a run (--help, a bad option...)
        config, extra = pickle.loads(msg[1:])
        timeline.enable(config.verbose)
        timeline.mark("options received")
    except BaseException:  # noqa: BLE001 - nothing to say: the supervisor says why it left
        os._exit(0)
    body(config, extra, fds, sock)
