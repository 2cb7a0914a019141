"""The two ends of a ring as a stage uses them: :class:`Inbox` (decodes and counts what it
reads) and :class:`Outbox` (encodes, queues what the ring has no room for, never blocks),
with the glue every stage needs around them (:class:`LazyWake`, :class:`SpaceWatch`).

Every message of every stage passes here, so this module is compiled with the cores
(``httptap/compiled.py``); ``httptap.stages.base`` re-exports it for the stages. Writes
never block the loop: an Outbox keeps what did not fit, and the stage stops taking in
what would add to it until the ring has room again (``httptap.stages.base`` says how
that backpressure travels back towards the command). A record the ring can never take
(over its largest record size: a bug, since messages are built to fit) is reported on
stderr once and dropped alone; it never stops the records after it.
"""

from __future__ import annotations

import itertools
import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from . import messages
from .ring import Ring
from .stats import BYTES_IN, BYTES_OUT, MSGS_IN, MSGS_OUT, Counters

# FlowData payloads up to this size wait for the next flush with the other records (one
# copy into a record, then one ring write for the whole batch): cheaper than a ring write
# each. Larger ones go straight into the ring, copied once. Far below any ring's largest
# record, so a small one always fits.
SMALL_DATA: Final = 16 << 10
# Outbox.reserve_data gives no room smaller than this (the read would be cut short, and
# the ring nearly full is better left to drain): the read then goes to a buffer of its own.
RESERVE_LEAST: Final = 64 << 10


class Inbox:
    """The consuming end of one ring, decoding messages and counting them."""

    def __init__(self, ring: Ring, counters: Counters) -> None:
        self.ring = ring
        self.fd = ring.data_fd
        self._counters = counters.v
        self.drained = False  # a Drain message has arrived

    def receive(self) -> list[messages.Message]:
        """Everything in the ring now, decoded straight from shared memory. The wake-up fd
        is reset first, so a record published while we read wakes the loop again."""
        ring = self.ring
        ring.clear_data_fd()
        decode = messages.decode
        out, size = ring.read_counted(decode, 4096)
        if not out:
            return out
        for _ in range(7):
            more, more_size = ring.read_counted(decode, 4096)
            if not more:
                break
            out += more
            size += more_size
        else:
            # Still more: leave it for the next turn of the loop, and make sure there is one.
            os.eventfd_write(self.fd, 1)
        return self._took(out, size)

    def _took(self, out: list[messages.Message], size: int) -> list[messages.Message]:
        """Count what one receive took (non-empty), and see whether it ended with Drain."""
        c = self._counters
        c[MSGS_IN] += len(out)
        c[BYTES_IN] += size
        if type(out[-1]) is messages.Drain:
            self.drained = True
        return out


class HoldingInbox(Inbox):
    """An :class:`Inbox` whose ``FlowData`` of ``least`` bytes or more arrive as
    :class:`~httptap.plumbing.messages.FlowDataView`: views of the ring itself, their
    records held (``Ring.read_holding``) until the stage gives each back with
    :meth:`release`. The tcp stage keeps them in its
    send buffers until the command acknowledges them, instead of copying every byte out.
    ``held`` has one token per FlowDataView of the last :meth:`receive`, in order."""

    def __init__(self, ring: Ring, counters: Counters, least: int) -> None:
        super().__init__(ring, counters)
        self.least = least  # smaller records are decoded as usual (copied), not held
        self.held: list[list[int]] = []
        self.release = ring.give_back

    def receive(self) -> list[messages.Message]:
        ring = self.ring
        ring.clear_data_fd()
        decode, view, hold, least = (messages.decode, messages.decode_view,
                                     messages.FlowDataView, self.least)
        out, size, held = ring.read_holding(decode, view, hold, least, 4096)
        self.held = held
        if not out:
            return out
        for _ in range(7):
            more, more_size, more_held = ring.read_holding(decode, view, hold, least, 4096)
            if not more:
                break
            out += more
            size += more_size
            held += more_held
        else:
            os.eventfd_write(self.fd, 1)  # (still more: see Inbox.receive)
        return self._took(out, size)


class OutboxLike(Protocol):
    """What a stage's logic needs of its output: an :class:`Outbox`, or a test's double
    that collects what is sent."""

    def send(self, msg: messages.Msg) -> None: ...
    def send_lazy(self, msg: messages.Msg) -> None: ...
    def send_data(self, flow: int, data: bytes | memoryview) -> object: ...


class Outbox:
    """The producing end of one ring. ``send`` never blocks; ``flush`` moves what it can."""

    def __init__(self, ring: Ring, counters: Counters) -> None:
        self.ring = ring
        self.space_fd = ring.space_fd
        self._counters = counters.v
        self._pending: deque[bytes] = deque()
        self.pending_bytes = 0  # encoded size of what waits in _pending
        self.unsignaled = False  # records published by flush(signal=False), consumer not woken
        # A record the consumer must be woken for was queued (send, send_data) since a
        # signalling flush last left nothing pending; only send_lazy's records otherwise.
        self.urgent = False
        self.dropped = 0  # records refused by the ring, reported and dropped
        # reserve_data(): the flow and view of the room reserved in the ring, and once
        # filled (filled_data), the view of what was read into it; see send_data.
        self._reserved_flow = -1
        self._reserved: memoryview | None = None
        self._filled: memoryview | None = None

    def send(self, msg: messages.Msg) -> None:
        try:
            record = messages.encode(msg)
        except Exception as exc:  # noqa: BLE001 - e.g. a lone surrogate in a str field
            self._drop(type(msg).__name__, f"it cannot be encoded ({type(exc).__name__}: {exc})")
            return
        if len(record) > self.ring.max_record:
            if type(msg) is messages.HttpExchange:
                # Two messages joined to save a record: too big together, they go apart
                # (each head is bounded, so each fits), as they would have unjoined.
                self.send(msg.request)
                self.send(msg.response)
                return
            self._drop(type(msg).__name__, f"its {len(record)} bytes are over the ring's "
                       f"largest record ({self.ring.max_record} bytes)")
            return
        self._pending.append(record)
        self.pending_bytes += len(record)
        self.urgent = True

    def send_lazy(self, msg: messages.Msg) -> None:
        """``send``, for a message the consumer need not be woken for: it goes with the
        next urgent record, or when the stage calls :meth:`wake` (the stage bounds the
        wait: see ``flush_urgent``). For news that nothing waits on, such as the end of
        a flow both sides have closed, it saves the consumer a wake-up of its own."""
        urgent = self.urgent
        self.send(msg)
        self.urgent = urgent

    def _drop(self, kind: str, why: str) -> None:
        """A message the ring can never take: report it (once: it is gone after this) and
        forget it. Only that message is lost; everything before and after is delivered."""
        self.dropped += 1
        try:
            print(f"httptap: dropped a {kind} message on ring {self.ring.label!r}: {why} "
                  "(a bug in httptap; please report it)", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def reserve_data(self, flow: int, size: int) -> memoryview | None:
        """Room in the ring for a ``FlowData`` of ``flow`` whose payload is read straight into
        it (a socket's ``recv_into``), up to ``size`` bytes; None when nothing waits to be
        flushed first and the ring has room for at least ``RESERVE_LEAST`` (or all of
        ``size``). Then :meth:`filled_data` with the count read, and :meth:`send_data` of
        exactly that view publishes it without copying; :meth:`end_reserved` after."""
        if self._pending:
            return None  # it would have to wait behind them, copied: read elsewhere
        header = len(messages.flow_data_header32(flow, 0))
        view = self.ring.reserve(header, size, RESERVE_LEAST)
        self._reserved, self._reserved_flow, self._filled = view, flow, None
        return view

    def filled_data(self, nbytes: int) -> memoryview:
        """The first ``nbytes`` of the reserved room, just read into. Until
        :meth:`end_reserved` nothing else is written into the ring (it would overwrite
        them): what is sent meanwhile waits for the next flush."""
        assert self._reserved is not None
        self._filled = self._reserved[:nbytes]
        return self._filled

    def end_reserved(self) -> None:
        """The reserved room is no longer in use (published, or given up)."""
        self._reserved = self._filled = None

    def send_data(self, flow: int, data: bytes | memoryview) -> bool:
        """``send(FlowData(flow, data))`` without building the message. A small payload
        (``SMALL_DATA``: a keep-alive request or response) joins the records that wait
        for the next ``flush``, which writes them all in one go; a large one is copied
        once, straight into the ring, when nothing waits before it and it fits
        (published, the consumer woken by the next ``flush``), else it waits as a
        message like any other: then (only) False, the ring is full. ``data`` need only
        live for the call."""
        self.urgent = True
        size = len(data)
        filled = self._filled
        if filled is not None:
            if data is filled and flow == self._reserved_flow and not self._pending:
                self._filled = self._reserved = None
                header = messages.flow_data_header32(flow, size)
                if self.ring.commit(header, size, signal=False):  # (woken by flush)
                    self.unsignaled = True
                    c = self._counters
                    c[MSGS_OUT] += 1
                    c[BYTES_OUT] += len(header) + size
                    return True
            # The ring's room holds bytes still in use: this record waits, copied.
            self._queue(messages.encode(messages.FlowData(flow, data)))  # type: ignore[arg-type]
            return True
        header = messages.flow_data_header(flow, size)
        if len(header) + size > self.ring.max_record:
            self._drop("FlowData", f"its {len(header) + size} bytes are over the ring's "
                       f"largest record ({self.ring.max_record} bytes)")
            return True
        if size <= SMALL_DATA:
            record = header + data
            self._pending.append(record)
            self.pending_bytes += len(record)
            return True
        if not self._pending:
            if self.ring.try_put_many([(header, data)], signal=False):
                self.unsignaled = True
                c = self._counters
                c[MSGS_OUT] += 1
                c[BYTES_OUT] += len(header) + len(data)
                return True
        self._queue(messages.encode(messages.FlowData(flow, data)))  # type: ignore[arg-type]
        return False

    def _queue(self, record: bytes) -> None:
        self._pending.append(record)
        self.pending_bytes += len(record)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def flush(self, signal: bool = True) -> bool:
        """Write as much as fits; True when nothing is left pending. ``signal=False``:
        leave the consumer asleep (see ``Ring.try_put_many``) until :meth:`wake`."""
        pending = self._pending
        if pending and self._filled is None:  # (not over bytes read into the ring, in use)
            # At most a ring's worth of records at a time: a long backlog is not copied
            # whole on every flush.
            whole = len(pending) <= 4096
            batch = list(pending) if whole else list(itertools.islice(pending, 4096))
            # Never raises: send() and send_data() let in only records the ring can take.
            written = self.ring.try_put_many(batch, signal=signal)
            if written:
                self.unsignaled = not signal
                c = self._counters
                if whole and written == len(batch):  # the usual case: all of it
                    size = self.pending_bytes
                    pending.clear()
                else:
                    size = sum(map(len, batch[:written]))
                    for _ in range(written):
                        pending.popleft()
                self.pending_bytes -= size
                c[MSGS_OUT] += written
                c[BYTES_OUT] += size
        if signal:
            self.wake()  # records published unsignalled before (send_data)
            if not pending:
                self.urgent = False
        return not pending

    def flush_urgent(self) -> bool:
        """``flush``, waking the consumer only if an urgent record was queued: records of
        ``send_lazy`` alone are published unsignaled (:attr:`unsignaled` says so), and
        the stage must call :meth:`wake` within the delay it allows them."""
        return self.flush(signal=self.urgent)

    def wake(self) -> None:
        """Wake the consumer if records wait unsignaled."""
        if self.unsignaled:
            self.unsignaled = False
            self.ring.signal()

    def flush_blocking(self, idle_timeout: float | None) -> bool:
        """Wait until everything pending is in the ring (used when draining), for as long
        as the consumer keeps taking records: False after ``idle_timeout`` seconds in which
        nothing could be written (None: wait for as long as it takes; the supervisor
        ends a stage whose consumer died)."""
        forever = idle_timeout is None
        idle = 0.0 if idle_timeout is None else idle_timeout
        deadline = time.monotonic() + idle
        while True:
            before = len(self._pending)
            if self.flush():
                return True
            now = time.monotonic()
            if len(self._pending) < before:
                deadline = now + idle
            elif now >= deadline and not forever:
                return False
            select.select([self.space_fd], [], [], 0.01)
            self.clear_space_fd()

    def clear_space_fd(self) -> None:
        """Reset ``space_fd`` (the consumer freed space) after it woke the loop."""
        try:
            os.eventfd_read(self.space_fd)
        except BlockingIOError:
            pass


class LazyWake:
    """Wakes an outbox's consumer for the records ``Outbox.flush_urgent`` published without
    a signal (``send_lazy``'s), at most ``delay`` after the first of them: the stage calls
    :meth:`deadline` after each flush and arms its timer for it, and :meth:`on_timer`
    when that timer fires. An urgent record's signal before then wakes the consumer for
    them too, and the deadline goes."""

    def __init__(self, outbox: Outbox, delay: float) -> None:
        self.outbox = outbox
        self.delay = delay
        self.at: float | None = None

    def deadline(self, now: float) -> float | None:
        if not self.outbox.unsignaled:
            self.at = None
        elif self.at is None:
            self.at = now + self.delay
        return self.at

    def on_timer(self, now: float) -> None:
        if self.at is not None and now >= self.at:
            self.at = None
            self.outbox.wake()


class SpaceWatch:
    """While some of a stage's outboxes hold records their ring had no room for, watch
    those rings' space eventfds, so the loop wakes when a consumer frees room; the glue
    every stage needs around :meth:`Outbox.flush`, written once. ``add_reader`` and
    ``remove_reader`` are the stage's loop's (an epoll :class:`Loop` or asyncio's).

    The wake-up is best effort (see ``httptap.plumbing.ring``): a stage also retries
    every ``RETRY_FLUSH`` while :attr:`waiting`."""

    def __init__(self, outboxes: list[Outbox],
                 add_reader: Callable[[int, Callable[[], None]], object],
                 remove_reader: Callable[[int], object], on_space: Callable[[], None]) -> None:
        self.outboxes = outboxes
        self._add, self._remove, self._on_space = add_reader, remove_reader, on_space
        self.waiting = False

    def flush(self) -> bool:
        """Flush every outbox (``Outbox.flush_urgent``: a consumer is woken unless all it
        got is ``send_lazy``'s); watch for space unless all are empty. True when they are."""
        flushed = all([outbox.flush_urgent() for outbox in self.outboxes])
        self.watch(not flushed)
        return flushed

    def watch(self, waiting: bool) -> None:
        if waiting == self.waiting:
            return
        self.waiting = waiting
        for outbox in self.outboxes:
            if waiting:
                self._add(outbox.space_fd, self._woken)
            else:
                self._remove(outbox.space_fd)

    def _woken(self) -> None:
        for outbox in self.outboxes:
            outbox.clear_space_fd()
        self._on_space()
