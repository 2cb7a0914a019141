"""What every stage process shares: how it is forked, how it reads and writes rings, its loop.

A stage is a function ``run(ctx)`` executed in its own forked process. It talks to its
neighbours only through :class:`Inbox` (one ring it consumes) and :class:`Outbox` (one ring
it produces), in messages from ``httptap.plumbing.messages``; both live in
``httptap.plumbing.boxes`` (compiled with the cores) and are re-exported here. Writes never
block the loop: an Outbox keeps what did not fit, and the stage stops taking in what would
add to it until the ring has room again; that is how backpressure travels back towards
the command:

- the tun stage stops reading the device while a shard's ring is full (the kernel
  queues, then drops, and the command's TCP retransmits);
- a tcp shard opens each flow's receive window only as far as the proxy's credit
  (``FlowAcked``) allows, so the command's sending stops when the proxy's does, and the
  shard retries its full rings every ``RETRY_FLUSH``;
- the proxy stops reading an upstream socket while too much of its flow is in flight to
  the tcp shard, and stops reading every socket and the tcp shard's ring while the sink's
  backlog is over its bound (``stages.proxy``: a slow reader of the output slows the
  command, as a full pipe slows any program).

:class:`Loop` is the one event loop of the non-asyncio stages: epoll over file
descriptors plus one timer callback.
"""

from __future__ import annotations

import ctypes
import gc
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..plumbing.boxes import (RESERVE_LEAST, SMALL_DATA, HoldingInbox, Inbox, LazyWake, Outbox,
                              OutboxLike, SpaceWatch)
from ..run import timeline
from ..run.config import Config
from ..plumbing.ring import Ring
from ..plumbing.stats import Counters

__all__ = ["RETRY_FLUSH", "RESERVE_LEAST", "SMALL_DATA", "HoldingInbox", "Inbox", "LazyWake",
           "Loop", "Outbox", "OutboxLike", "SpaceWatch", "StageContext", "keep_freed_memory",
           "set_process_name", "start_stage"]

RETRY_FLUSH = 0.005  # re-try a full ring this often (a space wake-up is best effort)
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class Loop:
    """epoll over file descriptors, plus one timer; ``stop()`` ends ``run()``."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._running = False
        self.timer_at: float | None = None
        self.on_timer: Callable[[float], None] | None = None
        self.after_batch: Callable[[], None] | None = None  # runs after each wake-up's handlers

    def add_reader(self, fd: int, handler: Callable[[], None]) -> None:
        if fd in self._handlers:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def remove_reader(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        timeline.mark("ready")
        self._running = True
        handlers = self._handlers
        poll = self._epoll.poll
        monotonic = time.monotonic
        while self._running:
            timeout = -1.0
            if self.timer_at is not None:
                timeout = max(0.0, self.timer_at - monotonic())
            for fd, _ in poll(timeout):
                handler = handlers.get(fd)
                if handler is not None:
                    handler()
            if self.timer_at is not None and self.on_timer is not None:
                now = monotonic()
                if now >= self.timer_at:
                    self.on_timer(now)
            if self.after_batch is not None:
                self.after_batch()


@dataclass
class StageContext:
    """Everything a stage process gets from the supervisor (inherited through fork)."""
    name: str
    config: Config
    counters: Counters
    inputs: list[Ring] = field(default_factory=list)
    outputs: list[Ring] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def inboxes(self) -> list[Inbox]:
        return [Inbox(r, self.counters) for r in self.inputs]

    def outboxes(self) -> list[Outbox]:
        return [Outbox(r, self.counters) for r in self.outputs]


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Make malloc keep and reuse what a stage frees instead of returning it to the kernel.

    Payloads of 64-256 KiB are allocated and freed thousands of times a second (decoded
    and encoded messages). glibc serves them with mmap, or grows and trims the heap top
    around them, so every one costs fresh pages and page faults: measured, 20% of the
    proxy's time in bulk HTTPS went to first touches of newly mapped pages. With large
    thresholds the freed blocks are reused. Modest ones (1 MiB, 16 MiB) keep the same speed
    as huge ones and give memory back above 16 MiB free: peak RSS of all processes in a
    bulk download 192 -> ~207 MB (64 and 256 MiB thresholds: 211-225 MB)."""
    _libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    _libc.mallopt(M_TRIM_THRESHOLD, 16 << 20)


def set_process_name(name: str) -> None:
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def start_stage(ctx: StageContext, module: str, close_fds: list[int]) -> int:
    """Fork a process that runs ``httptap.stages.<module>.run(ctx)`` and exits; returns
    its pid.

    In the child: named ``httptap-<stage>``, killed if the supervisor dies, deaf to the
    terminal's SIGINT/SIGQUIT (the supervisor decides when a stage stops), and any
    exception is reported on stderr as one line naming the stage before exiting 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    # What exists now stays out of the child's collections: they would touch (and copy)
    # every page of the supervisor's objects the child shares.
    gc.freeze()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        timeline.process(ctx.name)
        set_process_name(f"httptap-{ctx.name}")
        keep_freed_memory()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        import importlib

        stage = importlib.import_module(f"httptap.stages.{module}")
        timeline.mark("imported")
        gc.enable()  # off during start-up (httptap.__main__)
        stage.run(ctx)
        timeline.mark("exiting")
        code = 0
    except BaseException as exc:  # noqa: BLE001 - the process must report and exit
        try:
            if ctx.config.verbose:
                traceback.print_exc()
            print(f"httptap: the {ctx.name} stage failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
