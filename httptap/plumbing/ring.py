"""Single-producer single-consumer rings of length-prefixed records in shared memory.

A :class:`Ring` is made by the supervisor *before* it forks the pipeline stages; the
producer stage and the consumer stage both inherit the mapping and the two eventfds.
Exactly one process (or thread) may act as the producer and exactly one as the
consumer of a given ring.

Memory
------
The segment is an anonymous shared mapping of a ``memfd`` (``os.memfd_create`` +
``ftruncate`` + ``mmap(MAP_SHARED)``).  We deliberately do not use
``multiprocessing.shared_memory``: it leaves names behind in ``/dev/shm`` when a
process is SIGKILLed, and it starts a resource-tracker process.  A memfd has no name
in any file system, so nothing ever appears in ``/dev/shm`` and the memory is freed
when the last process holding the mapping goes away, however it dies.

Layout (all integers native-endian, naturally aligned)::

    line 0  [  0.. 63]  head (u64, producer's byte counter), magic, capacity
    line 1  [ 64..127]  tail (u64, consumer's byte counter)
    line 2  [128..191]  producer stats: records, bytes, high_water, wait_ns, waits
    line 3  [192..255]  producer_waiting (0, or head + the bytes it waits for), closed flag
    data    [256..256+capacity)

``head`` and ``tail`` only ever grow; a position in the data area is
``counter % capacity`` (capacity is a power of two).  ``head - tail`` is the number of
bytes in use.  Each record is a u32 length followed by the payload, padded so the next
record starts 8-byte aligned.  When a record does not fit between its position and
the end of the data area, the producer writes a wrap marker (length ``0xFFFFFFFF``)
and the record starts at offset 0 instead; the skipped bytes count as used until
the consumer passes them.  The largest record is ``capacity // 4`` bytes.

Memory ordering
---------------
The producer copies payloads into the data area and only then stores ``head``; the
consumer loads ``head`` and only then reads payloads, and it copies records out
before it stores ``tail``.  Python executes these in program order and the counters
are written and read with single aligned 8-byte moves (a native ``'Q'`` memoryview),
so this is correct on x86-64, whose TSO model keeps stores in order with stores and
loads in order with loads. Compiled with mypyc (``httptap/compiled.py``), this module
makes the same calls in the same order (the memoryview and mmap item and slice
assignments are calls into CPython, which the C compiler cannot move past one another),
so the argument holds for both builds.  **This module assumes x86-64** (or another TSO machine);
a weakly ordered CPU such as ARM would need real barriers.

In place
--------
Two ways round the copies (a bulk download moves every byte through a ring):

* the producer may fill a record where it will lie, reading a socket straight into it:
  :meth:`Ring.reserve` gives a view of the room, :meth:`Ring.commit` publishes it;
* the consumer may keep records it read as they are (views of the shared memory) until
  it is done with them: :meth:`Ring.read_holding`, then :meth:`Ring.give_back`. Space is
  freed in ring order: ``tail`` stays at the first record still held.

Wake-ups
--------
Two non-blocking eventfds:

* ``data_fd``: the producer writes it once per batch it publishes, unconditionally,
  so a consumer can never miss a wake-up.  Consumers reset it with
  :meth:`Ring.clear_data_fd` *before* draining.
* ``space_fd``: the consumer writes it after freeing space, but only while the
  producer has set the ``producer_waiting`` flag, and only once the record it waits to
  write fits (the flag holds ``head + need``: the consumer's ``tail`` must reach
  ``head + need - capacity``), so a producer waiting for a large record is not woken by
  every small record freed.  Setting the flag and then
  re-reading ``tail`` on one side, storing ``tail`` and then reading the flag on the
  other, is a store->load pattern that x86 may reorder, so a wake-up can be lost.
  We make that unlikely with a best-effort full fence (a locked instruction, see
  :func:`_fence`), and the blocking producer never sleeps longer than
  ``SPACE_POLL_MS`` before re-checking: a lost wake-up costs latency, never a hang.
  Event-loop producers using :meth:`Ring.try_put_many` should likewise arm a short
  fallback timer besides waiting for ``space_fd`` to become readable.

Typical consumer loop::

    while True:
        ring.clear_data_fd()
        recs = ring.get_many()
        if recs:
            handle(recs)
            continue
        if ring.closed:
            break
        ring.wait_data()
"""

from __future__ import annotations

import mmap
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

__all__ = ["Ring", "DEFAULT_CAPACITY", "SPACE_POLL_MS"]

DEFAULT_CAPACITY = 4 << 20
#: Longest single sleep of a producer that waits for space (milliseconds).
SPACE_POLL_MS = 5

_MAGIC: Final = 0x72696E6770747468  # arbitrary, lets a debugger recognise the segment

# Header slots, as indices into a native u64 view of the mapping.
_HEAD: Final = 0  # line 0
_MAGIC_SLOT: Final = 1
_CAP_SLOT: Final = 2
_TAIL: Final = 8  # line 1
_RECORDS: Final = 16  # line 2 (producer stats)
_BYTES: Final = 17
_HIGH_WATER: Final = 18
_WAIT_NS: Final = 19
_WAITS: Final = 20
_WAITING: Final = 24  # line 3 (rarely written flags)
_CLOSED: Final = 25
_HEADER_SIZE: Final = 256
_DATA_OFF: Final = _HEADER_SIZE

_WRAP: Final = 0xFFFFFFFF
_MIN_CAPACITY: Final = 64
_MAX_CAPACITY: Final = 1 << 32


def _fence(lock: threading.Lock) -> None:
    """Best-effort full memory fence.

    Acquiring an uncontended ``threading.Lock`` is a locked read-modify-write
    instruction (``sem_trywait``/``sem_post`` in CPython on Linux), which x86 treats
    as a full barrier.  It is non-blocking so that a lock copied mid-operation by
    ``fork`` can never deadlock; when it does not get the lock the fence may be
    skipped, which the 5 ms re-check covers.
    """
    if lock.acquire(False):
        lock.release()


# A record: bytes, or (header, payload) written as one record without joining them.
Record = bytes | bytearray | memoryview | tuple[bytes | bytearray | memoryview,
                                                  bytes | bytearray | memoryview]


class Ring:
    """A single-producer single-consumer ring of byte records in shared memory."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, label: str = "") -> None:
        if (
            not isinstance(capacity, int)
            or capacity < _MIN_CAPACITY
            or capacity > _MAX_CAPACITY
            or capacity & (capacity - 1)
        ):
            raise ValueError(
                f"ring capacity must be a power of two in [{_MIN_CAPACITY}, {_MAX_CAPACITY}], got {capacity!r}"
            )
        self.label = label
        self.capacity = capacity
        self.max_record = capacity // 4
        self._mask = capacity - 1
        self._released = False
        self.data_fd = -1
        self.space_fd = -1

        size = _HEADER_SIZE + capacity
        fd = os.memfd_create("httptap-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._mm = mm
        self._mv = memoryview(mm)
        self._q = self._mv.cast("Q")  # u64 slots (header)
        self._u32 = self._mv.cast("I")  # u32 slots (record lengths)
        try:
            self.data_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.space_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            self.release()
            raise
        q = self._q
        q[_MAGIC_SLOT] = _MAGIC
        q[_CAP_SLOT] = capacity

        self._lock = threading.Lock()  # used only as a fence, see _fence()
        self._data_poll = select.poll()
        self._data_poll.register(self.data_fd, select.POLLIN)
        self._space_poll = select.poll()
        self._space_poll.register(self.space_fd, select.POLLIN)
        # Producer-local state for try_put_many's non-blocking wait.
        self._want_space = False
        self._want_since = 0
        # Consumer-local state for read_holding: where reading goes on (-1: at tail), and
        # the records held, in ring order, each [start, end, held].
        self._rtail = -1
        self._held: deque[list[int]] = deque()
        # The room reserve() handed out: (head then, offset, header size, wrapped, size).
        self._reserved: tuple[int, int, int, bool, int] | None = None

    # ------------------------------------------------------------------ producer

    def put(self, record: bytes | bytearray | memoryview) -> None:
        """Append one record, blocking while the ring is full; signals ``data_fd``."""
        if isinstance(record, memoryview) and (record.ndim != 1 or record.itemsize != 1):
            record = record.cast("B")
        self._write((record,), 0, True)

    def put_many(self, records: Sequence[bytes]) -> None:
        """Append all records, blocking while the ring is full.

        One ``data_fd`` write per call, except that when the ring fills up part-way
        the records written so far are published (and signalled) before waiting.
        Records must be bytes-like objects whose ``len`` is their size in bytes.
        """
        if records:
            self._write(records, 0, True)

    def try_put_many(self, records: Sequence[Record], start: int = 0, signal: bool = True) -> int:
        """Append ``records[start:]`` while they fit, never blocking. A record may also be
        a ``(header, payload)`` tuple, written as their concatenation without joining them.

        Signals ``data_fd`` once if anything was written, and returns how many records
        were written.  When that is fewer than ``len(records) - start`` the ring is
        full: the caller should wait for ``space_fd`` to become readable (plus a
        short fallback timer, e.g. 5 ms) and call again with the new ``start``.

        ``signal=False`` publishes without waking the consumer (unless the ring is a
        quarter full or fills up): for a consumer that need not hear of every record at
        once, woken later by :meth:`signal`.
        """
        if start >= len(records):
            return 0
        return self._write(records, start, False, signal)

    def reserve(self, header: int, size: int, least: int) -> memoryview | None:
        """Room for the next record, to be filled in place: a view of up to ``size`` bytes
        (at least ``least``, else None) that follow ``header`` bytes left for
        :meth:`commit`. Lets a producer ``recv_into`` the ring itself instead of copying
        each read into it. Never blocks, publishes nothing; any other write (or the next
        ``reserve``) ends the reservation, so fill it and commit before writing again."""
        q = self._q
        cap = self.capacity
        head = q[_HEAD]
        pos = head & self._mask
        room = cap - pos
        free = cap - (head - q[_TAIL])
        extra = 4 + header  # length prefix and header before the payload
        size = min(size, self.max_record - header)
        # Here if the payload fits before the end of the data area, else at offset 0 after
        # a wrap marker (the gap counts as used until the consumer passes it).
        here = (room if room < free else free) - extra
        if here >= least or here >= size:
            off, wrap, n = pos, False, min(size, here)
        else:
            there = min(free - room, pos) - extra
            if there < least and there < size:
                return None
            off, wrap, n = 0, True, min(size, there)
        if n <= 0:
            return None
        start = _DATA_OFF + off + extra
        self._reserved = (head, off, header, wrap, n)
        return self._mv[start:start + n]

    def commit(self, header: bytes, n: int, signal: bool = True) -> bool:
        """Publish the record reserved last (:meth:`reserve`): ``header`` (exactly the size
        reserved for it) then the first ``n`` payload bytes, already in place. False if
        the reservation had ended (nothing is published then)."""
        reserved = self._reserved
        self._reserved = None
        q = self._q
        if reserved is None or reserved[0] != q[_HEAD] or len(header) != reserved[2]:
            return False
        head, off, _, wrap, room = reserved
        if not 0 <= n <= room:
            raise ValueError(f"ring {self.label!r}: a commit of {n} bytes is over its reservation")
        cap = self.capacity
        size = len(header) + n
        slot = (size + 11) & ~7
        if wrap:
            pos = head & self._mask
            self._u32[(_DATA_OFF + pos) >> 2] = _WRAP
            slot += cap - pos
        start = _DATA_OFF + off
        self._mm[start + 4:start + 4 + len(header)] = header
        self._u32[start >> 2] = size
        head += slot
        used = head - q[_TAIL]
        high = q[_HIGH_WATER]
        self._publish(head, 1, size, used if used > high else high, signal or used * 4 >= cap)
        return True

    def signal(self) -> None:
        """Wake the consumer (records published with ``signal=False``)."""
        os.eventfd_write(self.data_fd, 1)

    def close_producer(self) -> None:
        """Mark the end of the stream and wake the consumer."""
        self._q[_CLOSED] = 1
        os.eventfd_write(self.data_fd, 1)

    def _write(self, records: Sequence[Record], start: int, block: bool,
               signal: bool = True) -> int:
        q = self._q
        u32 = self._u32
        mm = self._mm
        cap = self.capacity
        mask = self._mask
        max_record = self.max_record
        if self._want_space:
            self._end_space_wait()
        self._reserved = None  # (this write takes the reserved room)

        head = q[_HEAD]
        head0 = head  # head last published
        tail = q[_TAIL]
        high = q[_HIGH_WATER]
        i = start
        batch = start  # first record not yet published
        end = len(records)
        nbytes = 0
        try:
            while i < end:
                rec = records[i]
                first: bytes | bytearray | memoryview
                second: bytes | bytearray | memoryview
                if isinstance(rec, tuple):  # (header, payload): copied in, never joined
                    first, second = rec
                else:
                    first, second = rec, b""
                n = len(first) + len(second)
                if n > max_record:
                    raise ValueError(
                        f"ring {self.label!r}: record of {n} bytes exceeds the maximum of {max_record}"
                    )
                slot = (n + 11) & ~7
                pos = head & mask
                room = cap - pos
                need = slot if slot <= room else room + slot
                if head + need - tail > cap:
                    tail = q[_TAIL]
                    if head + need - tail > cap:
                        # Full.  Publish what we have so the consumer can drain it.
                        used = head - tail
                        if used > high:
                            high = used
                        if head != head0:
                            self._publish(head, i - batch, nbytes, high)
                            batch = i
                            nbytes = 0
                            head0 = head
                        if not block:
                            tail = self._begin_space_wait(head, need)
                            if head + need - tail > cap:
                                break
                            self._end_space_wait()
                        else:
                            tail = self._wait_space(head, need)
                if slot > room:
                    u32[(_DATA_OFF + pos) >> 2] = _WRAP
                    off = _DATA_OFF
                    slot += room
                else:
                    off = _DATA_OFF + pos
                u32[off >> 2] = n
                split = off + 4 + len(first)
                mm[off + 4 : split] = first
                if second:
                    mm[split : off + 4 + n] = second
                # only now move head (past the wrap gap too): if copying failed,
                # nothing half-written can ever be published
                head += slot
                nbytes += n
                i += 1
        finally:
            if head != head0:
                used = head - q[_TAIL]
                if used > high:
                    high = used
                self._publish(head, i - batch, nbytes, high, signal or used * 4 >= cap)
        return i - start

    def _publish(self, head: int, nrecords: int, nbytes: int, high: int,
                 signal: bool = True) -> None:
        q = self._q
        q[_RECORDS] += nrecords
        q[_BYTES] += nbytes
        q[_HIGH_WATER] = high
        q[_HEAD] = head  # payloads were written first (TSO keeps the order)
        if signal:
            os.eventfd_write(self.data_fd, 1)

    def _space_ok(self, head: int, need: int) -> tuple[bool, int]:
        tail = self._q[_TAIL]
        return head + need - tail <= self.capacity, tail

    def _wait_space(self, head: int, need: int) -> int:
        """Block until ``need`` bytes fit after ``head``; returns the new tail."""
        q = self._q
        t0 = time.monotonic_ns()
        q[_WAITING] = head + need
        _fence(self._lock)
        poll = self._space_poll.poll
        space_fd = self.space_fd
        try:
            while True:
                ok, tail = self._space_ok(head, need)
                if ok:
                    return tail
                poll(SPACE_POLL_MS)
                try:
                    os.eventfd_read(space_fd)
                except BlockingIOError:
                    pass
        finally:
            q[_WAITING] = 0
            q[_WAIT_NS] += time.monotonic_ns() - t0
            q[_WAITS] += 1

    def _begin_space_wait(self, head: int, need: int) -> int:
        """Non-blocking variant: raise the waiting flag, re-check, return tail."""
        if not self._want_space:
            self._want_space = True
            self._want_since = time.monotonic_ns()
        self._q[_WAITING] = head + need
        _fence(self._lock)
        return self._q[_TAIL]

    def _end_space_wait(self) -> None:
        q = self._q
        q[_WAITING] = 0
        try:
            os.eventfd_read(self.space_fd)
        except BlockingIOError:
            pass
        q[_WAIT_NS] += time.monotonic_ns() - self._want_since
        q[_WAITS] += 1
        self._want_space = False

    # ------------------------------------------------------------------ consumer

    def get_many(self, max_records: int = 1024) -> list[bytes]:
        """Copy out up to ``max_records`` records and free their space; never blocks."""
        return self.read_many(bytes, max_records)

    def read_many(self, read: Callable[[memoryview], T], max_records: int = 1024) -> list[T]:
        """Like :meth:`get_many`, but hands each record to ``read`` as a memoryview of the
        shared memory itself and returns what it made. ``read`` must not keep the view:
        the space is freed right after. Decoding straight from the ring saves a copy."""
        return self.read_counted(read, max_records)[0]

    def read_counted(self, read: Callable[[memoryview], T],
                     max_records: int = 1024) -> tuple[list[T], int]:
        """:meth:`read_many`, and the size of the records read (payload bytes): ``read``
        can then be a decoder itself, not a function around it that counts."""
        q = self._q
        head = q[_HEAD]
        tail = q[_TAIL]
        out: list[T] = []
        if head == tail:
            return out, 0
        u32 = self._u32
        mv = self._mv
        mask = self._mask
        cap = self.capacity
        append = out.append
        size = 0
        for _ in range(max_records):
            if tail == head:
                break
            pos = tail & mask
            off = _DATA_OFF + pos
            n = u32[off >> 2]
            if n == _WRAP:  # always followed by a record at offset 0
                tail += cap - pos
                off = _DATA_OFF
                n = u32[off >> 2]
            append(read(mv[off + 4 : off + 4 + n]))
            size += n
            tail += (n + 11) & ~7
        q[_TAIL] = tail  # records were copied out first (TSO keeps the order)
        _fence(self._lock)
        wants = q[_WAITING]
        if wants and wants - tail <= cap:
            os.eventfd_write(self.space_fd, 1)
        return out, size

    def read_holding(self, read: Callable[[memoryview], T], hold_read: Callable[[memoryview], T],
                     hold: type, least: int,
                     max_records: int = 1024) -> tuple[list[T], int, list[list[int]]]:
        """:meth:`read_counted`, except that records of ``least`` bytes or more go to
        ``hold_read``, and those it turns into a ``hold`` are kept: their space is not
        freed, so what ``hold_read`` made of them may keep views of the shared memory,
        until each is given back with :meth:`give_back`. Returns also one token per such
        record, in order. (``read`` must copy what it keeps: smaller records are freed at
        once.) A ring read this way is never read otherwise.

        Space is freed in ring order: a record held long holds up the space of every
        record after it (``held_bytes`` says how much), so the consumer must give back or
        copy out what it keeps too long."""
        q = self._q
        head = q[_HEAD]
        tail = self._rtail if self._rtail >= 0 else q[_TAIL]
        out: list[T] = []
        tokens: list[list[int]] = []
        if head == tail:
            return out, 0, tokens
        u32 = self._u32
        mv = self._mv
        mask = self._mask
        cap = self.capacity
        append = out.append
        held = self._held
        size = 0
        for _ in range(max_records):
            if tail == head:
                break
            start = tail
            pos = tail & mask
            off = _DATA_OFF + pos
            n = u32[off >> 2]
            if n == _WRAP:  # always followed by a record at offset 0
                tail += cap - pos
                off = _DATA_OFF
                n = u32[off >> 2]
            if n < least:
                append(read(mv[off + 4 : off + 4 + n]))
                size += n
                tail += (n + 11) & ~7
                continue
            item = hold_read(mv[off + 4 : off + 4 + n])
            append(item)
            size += n
            tail += (n + 11) & ~7
            if type(item) is hold:
                token = [start, tail, 1]
                held.append(token)
                tokens.append(token)
        self._rtail = tail
        self._free()
        return out, size, tokens

    def give_back(self, token: list[int]) -> None:
        """A held record (:meth:`read_holding`) is no longer used: its space (and that of
        the released records after it) may be reused. Idempotent."""
        if token[2]:
            token[2] = 0
            held = self._held
            if held[0] is token:
                while held and not held[0][2]:
                    held.popleft()
                self._free()

    @property
    def held_bytes(self) -> int:
        """Bytes read (:meth:`read_holding`) whose space is not free yet."""
        return self._rtail - self._q[_TAIL] if self._rtail >= 0 else 0

    def oldest_held(self) -> list[int] | None:
        """The token of the held record that holds up the most space, if any. (A token
        is ``[start, end, held]``; the consumer may append items of its own.)"""
        return self._held[0] if self._held else None

    def _free(self) -> None:
        """Move ``tail`` to the first record still held, or to the read position."""
        q = self._q
        held = self._held
        tail = held[0][0] if held else self._rtail
        if tail != q[_TAIL]:
            q[_TAIL] = tail  # records were used first (TSO keeps the order)
            _fence(self._lock)
            wants = q[_WAITING]
            if wants and wants - tail <= self.capacity:
                os.eventfd_write(self.space_fd, 1)

    def wait_data(self, timeout: float | None = None) -> bool:
        """Block until records are available or the producer closed.

        Returns False on timeout.  Checks the ring before and after every sleep, so it
        never sleeps while records are present; it resets ``data_fd`` itself.
        """
        q = self._q
        if q[_HEAD] != q[_TAIL] or q[_CLOSED]:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = self._data_poll.poll
        while True:
            if deadline is None:
                ms = None
            else:
                remaining = deadline - time.monotonic()
                ms = max(0, int(remaining * 1000 + 0.999))
            events = poll(ms)
            if events:
                try:
                    os.eventfd_read(self.data_fd)
                except BlockingIOError:
                    pass
            if q[_HEAD] != q[_TAIL] or q[_CLOSED]:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def clear_data_fd(self) -> None:
        """Reset ``data_fd`` (call before draining, from an event loop's reader)."""
        try:
            os.eventfd_read(self.data_fd)
        except BlockingIOError:
            pass

    @property
    def closed(self) -> bool:
        """True once the producer closed *and* every record has been consumed."""
        q = self._q
        # Read the flag first: the producer stores its last head before the flag.
        return bool(q[_CLOSED]) and q[_HEAD] == q[_TAIL]

    # ------------------------------------------------------------------ either side

    def stats(self) -> dict[str, int]:
        """Producer-side counters, readable from any process holding the ring."""
        q = self._q
        return {
            "records": q[_RECORDS],
            "bytes": q[_BYTES],
            "high_water": q[_HIGH_WATER],
            "wait_ns": q[_WAIT_NS],
            "waits": q[_WAITS],
        }

    def used(self) -> int:
        """Bytes currently in use (written, not yet consumed), wrap padding included."""
        q = self._q
        tail = q[_TAIL]
        return q[_HEAD] - tail

    @property
    def producer_waiting(self) -> bool:
        """True while the producer waits for space (the consumer then signals space_fd)."""
        return bool(self._q[_WAITING])

    def release(self) -> None:
        """Unmap the segment and close both eventfds in this process (idempotent)."""
        if self._released:
            return
        self._released = True
        # (Released views stay as attributes: using the ring after this raises ValueError.
        # No __dict__ games: compiled, Ring is a native class with fixed attributes.)
        try:
            self._q.release()
            self._u32.release()
            self._mv.release()
            self._mm.close()
        except BufferError:
            pass  # views of records (reserve, read_held) still live: unmapped with the last
        fd, self.data_fd = self.data_fd, -1
        if fd >= 0:
            os.close(fd)
        fd, self.space_fd = self.space_fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        if self._released:
            return f"<Ring {self.label!r} released>"
        return f"<Ring {self.label!r} capacity={self.capacity} used={self.used()}>"
