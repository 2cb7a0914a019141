"""Tests for httptap.plumbing.ring: order, wrap-around, backpressure, closing, and a
1,000,000-record run between two forked processes.

Hermetic: every wait is on a condition (the producer's waiting flag, a pipe, a child's
exit) with a deadline, never a sleep; nothing asserts how long anything took; the last
test looks only at this process's own mappings and children."""

from __future__ import annotations

import gc
import os
import random
import select
import struct
import threading
import time

import pytest

from httptap.plumbing.ring import Ring



def _ring_mappings() -> int:
    """How many ring segments (memfd ``httptap-ring``) this process has mapped."""
    with open("/proc/self/maps") as f:
        return sum("/memfd:httptap-ring" in line for line in f)


def _until(condition, what: str, timeout: float = 30.0) -> None:  # noqa: ANN001
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _children() -> list[int]:
    pid = os.getpid()
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return kids


def _fork(fn) -> int:
    """Run fn() in a forked child, which always leaves through os._exit."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _join(pid: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish in {timeout} s")
        time.sleep(0.005)


def _drain(ring: Ring, timeout: float = 30.0) -> list[bytes]:
    """Consumer loop as documented in the module: returns everything until closed."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        ring.clear_data_fd()
        recs = ring.get_many()
        if recs:
            out += recs
            continue
        if ring.closed:
            return out
        assert time.monotonic() < deadline, "drain timed out"
        ring.wait_data(0.5)


def _readable(fd: int, timeout_ms: int = 0) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout_ms))


@pytest.fixture
def ring():
    r = Ring(1024, label="test")
    yield r
    r.release()


# --------------------------------------------------------------------------- basics


def test_empty_ring(ring: Ring) -> None:
    assert ring.get_many() == []
    assert not ring.closed
    assert ring.wait_data(0.01) is False
    assert ring.stats() == {"records": 0, "bytes": 0, "high_water": 0, "wait_ns": 0, "waits": 0}


def test_order_kept_and_types(ring: Ring) -> None:
    recs = [b"", b"a", bytearray(b"bc"), memoryview(b"defg"), b"h" * 7, b"i" * 8, b"j" * 9]
    for r in recs:
        ring.put(r)
    assert _readable(ring.data_fd)
    got = ring.get_many()
    assert got == [bytes(r) for r in recs]
    assert all(type(g) is bytes for g in got)
    assert ring.get_many() == []
    st = ring.stats()
    assert st["records"] == len(recs)
    assert st["bytes"] == sum(len(r) for r in recs)
    assert st["high_water"] > 0


def test_put_memoryview_of_wider_items(ring: Ring) -> None:
    mv = memoryview(bytearray(range(16))).cast("I")
    ring.put(mv)
    assert ring.get_many() == [bytes(range(16))]


def test_get_many_limit(ring: Ring) -> None:
    ring.put_many([bytes([i]) for i in range(50)])
    first = ring.get_many(10)
    assert first == [bytes([i]) for i in range(10)]
    rest = ring.get_many()
    assert rest == [bytes([i]) for i in range(10, 50)]


def test_put_many_signals_once(ring: Ring) -> None:
    ring.put_many([b"x"] * 10)
    assert os.eventfd_read(ring.data_fd) == 1
    ring.put_many([])
    assert not _readable(ring.data_fd)


def test_publish_without_signal_until_a_quarter_full(ring: Ring) -> None:
    assert ring.try_put_many([b"a" * 8, b"b" * 8], signal=False) == 2
    assert not _readable(ring.data_fd)          # published, consumer not woken
    assert ring.get_many() == [b"a" * 8, b"b" * 8]
    ring.signal()
    assert os.eventfd_read(ring.data_fd) == 1
    # A quarter of the capacity used: the consumer is woken anyway.
    assert ring.try_put_many([b"c" * 100, b"d" * 100, b"e" * 100], signal=False) == 3
    assert _readable(ring.data_fd)


def test_max_record_size(ring: Ring) -> None:
    assert ring.max_record == 256
    ring.put(b"m" * 256)
    with pytest.raises(ValueError):
        ring.put(b"m" * 257)
    with pytest.raises(ValueError):
        ring.try_put_many([b"m" * 257])
    # records before an oversized one in a batch are still delivered
    with pytest.raises(ValueError):
        ring.put_many([b"ok", b"m" * 1000])
    assert ring.get_many() == [b"m" * 256, b"ok"]


def test_bad_record_type_does_not_corrupt(ring: Ring) -> None:
    ring.put_many([b"a" * 200] * 4)  # 832 bytes used, 192 left before the end
    assert len(ring.get_many()) == 4
    with pytest.raises(TypeError):
        ring.put_many([b"ok", "s" * 200])  # would need a wrap marker
    assert ring.get_many() == [b"ok"]
    ring.put(b"z" * 250)
    assert ring.get_many() == [b"z" * 250]


@pytest.mark.parametrize("cap", [0, 63, 100, 1000, 3 << 20])
def test_bad_capacity(cap: int) -> None:
    with pytest.raises(ValueError):
        Ring(cap)


def test_release_idempotent_and_no_fd_leak() -> None:
    before = len(os.listdir("/proc/self/fd"))
    rings = [Ring(4096, label=str(i)) for i in range(20)]
    for r in rings:
        r.put(b"x")
        r.release()
        r.release()
    assert len(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- wrap-around


def test_wrap_marker_and_exact_fit() -> None:
    with Ring(1024) as r:
        # slot for 100 B = 104; 9 slots = 936, leaving 88 bytes before the end.
        for _ in range(3):
            r.put_many([bytes([i]) * 100 for i in range(9)])
            assert r.get_many() == [bytes([i]) * 100 for i in range(9)]
            # a 200 B record (slot 208) cannot fit in the remaining tail: wrap marker
            r.put(b"W" * 200)
            assert r.get_many() == [b"W" * 200]
        # records that end exactly at the end of the data area (slot 128 divides 1024)
        with Ring(1024) as e:
            for k in range(40):
                e.put(bytes([k]) * 124)
                assert e.get_many() == [bytes([k]) * 124]
            assert e.used() == 0


def test_wrap_around_many_times_random() -> None:
    rng = random.Random(1234)
    with Ring(4096) as r:
        sent = 0
        received: list[bytes] = []
        expected: list[bytes] = []
        for _ in range(3000):
            batch = []
            for _ in range(rng.randint(0, 6)):
                n = rng.choice([0, 1, 3, 4, 5, 8, 12, 60, 250, 251, 252, 700, 1023, 1024])
                payload = struct.pack("<I", sent) + bytes([sent & 0xFF]) * n
                batch.append(payload[: max(n, 4)])
                sent += 1
            k = r.try_put_many(batch)
            expected += batch[:k]
            # leave some in the ring so head and tail move relative to each other
            received += r.get_many(rng.randint(0, 8))
        received += r.get_many(10_000)
        assert received == expected
        assert r.stats()["records"] == len(expected)
        # the counters went around the 4 KiB area many times
        assert r.stats()["bytes"] > 50 * 4096


# --------------------------------------------------------------------------- backpressure


def test_try_put_many_partial_and_space_fd(ring: Ring) -> None:
    recs = [bytes([i]) * 100 for i in range(20)]
    n = ring.try_put_many(recs)
    assert n == 9
    assert ring.try_put_many(recs, n) == 0
    assert ring.stats()["records"] == 9
    assert not _readable(ring.space_fd)
    got = ring.get_many(3)
    assert got == recs[:3]
    # the producer announced it wants space, so the consumer signalled
    assert _readable(ring.space_fd)
    m = ring.try_put_many(recs, n)
    assert m == 3
    n += m
    assert not _readable(ring.space_fd)  # try_put_many reset it
    got += ring.get_many()
    while n < len(recs):
        n += ring.try_put_many(recs, n)
        got += ring.get_many()
    got += ring.get_many()
    assert got == recs
    assert ring.stats()["waits"] >= 1
    assert ring.try_put_many(recs, len(recs)) == 0


def test_put_blocks_until_consumer_frees_space_thread() -> None:
    with Ring(1024) as r:
        recs = [bytes([i]) * 100 for i in range(30)]
        done = threading.Event()

        def producer() -> None:
            r.put_many(recs)
            done.set()

        t = threading.Thread(target=producer)
        t.start()
        _until(lambda: r.producer_waiting, "the producer to wait for space")
        assert not done.is_set(), "put_many should block on a full ring"
        assert r.used() > 1024 - 104
        got = []
        deadline = time.monotonic() + 10
        while len(got) < len(recs):
            assert time.monotonic() < deadline
            r.clear_data_fd()
            batch = r.get_many(2)
            if not batch:
                r.wait_data(0.1)
            got += batch
        t.join(10)
        assert done.is_set()
        assert got == recs
        st = r.stats()
        assert st["waits"] >= 1 and st["wait_ns"] > 0


def test_put_blocks_across_processes() -> None:
    with Ring(4096) as r:
        total = 2000

        def produce() -> None:
            for i in range(total):
                r.put(struct.pack("<I", i) * 25)
            r.close_producer()

        pid = _fork(produce)
        try:
            _until(lambda: r.producer_waiting, "the producer to fill the ring and block")
            assert r.used() > 4096 - 104 * 2
            assert r.stats()["records"] < total
            got = _drain(r)
        finally:
            assert _join(pid) == 0
        assert got == [struct.pack("<I", i) * 25 for i in range(total)]
        st = r.stats()
        assert st["records"] == total and st["waits"] >= 1
        assert st["high_water"] <= 4096


def test_try_put_many_event_loop_style_across_processes() -> None:
    """A non-blocking producer that sleeps on space_fd (with a fallback timeout)."""
    total = 50_000
    recs = [struct.pack("<I", i) * (1 + i % 40) for i in range(total)]
    with Ring(4096) as r:

        def produce() -> None:
            p = select.poll()
            p.register(r.space_fd, select.POLLIN)
            start = 0
            while start < total:
                start += r.try_put_many(recs, start)
                if start < total:
                    p.poll(5)  # wait for space_fd, with a 5 ms fallback timer
            r.close_producer()

        pid = _fork(produce)
        try:
            got = _drain(r)
        finally:
            assert _join(pid) == 0
        assert got == recs
        assert r.stats()["waits"] >= 1


# --------------------------------------------------------------------------- closing


def test_close_producer(ring: Ring) -> None:
    ring.put_many([b"1", b"2", b"3"])
    ring.clear_data_fd()
    ring.close_producer()
    assert _readable(ring.data_fd)
    assert not ring.closed  # records still in the ring
    assert ring.wait_data(0) is True
    assert ring.get_many(2) == [b"1", b"2"]
    assert not ring.closed
    assert ring.get_many() == [b"3"]
    assert ring.closed
    assert ring.wait_data(1.0) is True  # returns at once: closed


def test_wait_data_wakes_on_put_from_other_process() -> None:
    """The producer puts only when told (a pipe), after the consumer is about to wait;
    ``wait_data`` returns True only for data or a close, False on its (long) timeout."""
    with Ring(4096) as r:
        go_put, put_now = os.pipe()
        go_close, close_now = os.pipe()

        def produce() -> None:
            os.read(go_put, 1)
            r.put(b"hello")
            os.read(go_close, 1)
            r.close_producer()

        pid = _fork(produce)
        try:
            assert r.wait_data(0) is False
            os.write(put_now, b"x")
            assert r.wait_data(60.0) is True
            assert r.get_many() == [b"hello"]
            assert not r.closed
            os.write(close_now, b"x")
            assert r.wait_data(60.0) is True
            assert r.closed
        finally:
            for fd in (go_put, put_now, go_close, close_now):
                os.close(fd)
            assert _join(pid) == 0


def test_wait_data_not_fooled_by_stale_signal(ring: Ring) -> None:
    ring.put(b"x")
    assert ring.get_many() == [b"x"]  # data_fd still readable (not cleared)
    assert _readable(ring.data_fd)
    assert ring.wait_data(0.05) is False
    assert not _readable(ring.data_fd)  # it woke on the stale signal, consumed it, waited on


# --------------------------------------------------------------------------- a million records

_N = 1_000_000
_SEED = 20240601
_BIG = random.Random(_SEED).randbytes((1 << 20) + (64 << 10))


def _record_plan(seed: int):
    """Yield (seq, record) for the stress test, deterministically from the seed.

    Sizes are log-uniform between 1 B and 64 KiB; content is the little-endian
    sequence number followed by a slice of one big random buffer at a random offset.
    """
    rng = random.Random(seed)
    rnd = rng.random
    big = _BIG
    pack = struct.Struct("<Q").pack
    span = 1 << 20
    for seq in range(_N):
        n = int(2.0 ** (rnd() * 16.0)) or 1
        prefix = pack(seq)
        if n <= 8:
            yield prefix[:n]
        else:
            off = int(rnd() * span)
            yield prefix + big[off : off + n - 8]


def test_million_records_between_processes() -> None:
    with Ring(8 << 20, label="stress") as r:

        def produce() -> None:
            rng = random.Random(_SEED + 1)
            plan = _record_plan(_SEED)
            left = _N
            while left:
                k = min(left, rng.randint(1, 64))
                batch = [next(plan) for _ in range(k)]
                if k == 1:
                    r.put(batch[0])
                else:
                    r.put_many(batch)
                left -= k
            r.close_producer()

        pid = _fork(produce)
        count = 0
        nbytes = 0
        try:
            expect = _record_plan(_SEED)
            deadline = time.monotonic() + 600  # a hang guard, not a speed test
            while True:
                r.clear_data_fd()
                recs = r.get_many()
                if recs:
                    for rec in recs:
                        if rec != next(expect):
                            raise AssertionError(f"record {count} differs (len {len(rec)})")
                        count += 1
                        nbytes += len(rec)
                    continue
                if r.closed:
                    break
                assert time.monotonic() < deadline, f"stress test stuck at {count} records"
                r.wait_data(1.0)
        finally:
            code = _join(pid)
        assert code == 0
        assert count == _N
        st = r.stats()
        assert st["records"] == _N
        assert st["bytes"] == nbytes
        assert st["high_water"] <= 8 << 20


# --------------------------------------------------------------------------- leftovers


_CHILDREN_BEFORE: set[int] = set()
_MAPPINGS_BEFORE: list[int] = []


@pytest.fixture(autouse=True, scope="module")
def _before() -> None:
    _CHILDREN_BEFORE.update(_children())
    _MAPPINGS_BEFORE.append(_ring_mappings())


def test_zz_no_segments_and_no_children() -> None:
    """Runs last (file order): every ring these tests made is unmapped, no child they
    forked is left. Only this process is looked at: a ring is a memfd, never a name in
    /dev/shm, and other runs on the machine may use /dev/shm as they like."""
    gc.collect()  # a ring dropped without release() is unmapped when collected
    assert _ring_mappings() <= _MAPPINGS_BEFORE[0]
    # Other test modules' session fixtures (test hosts' servers) may be running: only
    # processes these tests forked count.
    assert set(_children()) - _CHILDREN_BEFORE == set()


def test_a_record_in_two_parts_reads_back_joined(ring: Ring) -> None:
    payload = memoryview(bytearray(b"0123456789" * 10))[5:95]
    for _ in range(30):  # around the ring several times, across the wrap
        assert ring.try_put_many([(b"head:", payload), b"plain"]) == 2
        assert ring.get_many() == [b"head:" + bytes(payload), b"plain"]
    with pytest.raises(ValueError):
        ring.try_put_many([(b"x", bytes(ring.max_record))])  # the parts count together


def test_reserve_and_commit_in_place_across_the_wrap() -> None:
    """A record filled in place (Ring.reserve, then commit) reads back like a written one,
    wherever the ring's head is: before the end, or wrapped to offset 0 when the room
    left before the end is too small. The producer may commit less than it reserved."""
    with Ring(1024) as ring:
        rnd = random.Random(7)
        for round_ in range(200):
            if rnd.random() < 0.5:
                ring.put(bytes([round_ & 0xFF]) * rnd.randrange(1, 200))
            header = b"H%03d" % round_
            view = ring.reserve(len(header), 300, 1)
            assert view is not None and 1 <= len(view) <= 300
            n = rnd.randrange(0, len(view) + 1)
            view[:n] = bytes([round_ & 0xFF]) * n
            assert ring.commit(header, n)
            got = ring.get_many()
            assert got[-1] == header + bytes([round_ & 0xFF]) * n
            assert ring.used() == 0


def test_reserve_gives_only_the_free_room_and_never_overwrites() -> None:
    with Ring(1024) as ring:  # largest record: 256
        assert ring.reserve(4, 1000, 1) is not None
        assert len(ring.reserve(4, 1000, 1)) == 252  # type: ignore[arg-type]
        for _ in range(3):
            ring.put(bytes(250))  # 256 bytes each: 768 of 1024 used, 256 left before the end
        view = ring.reserve(4, 1000, 1)
        assert view is not None and len(view) == 256 - 8
        assert ring.reserve(4, 1000, 300) is None  # at least 300: there is no such room
        ring.get_many(1)  # frees 256 at the start; the end still has 256
        view = ring.reserve(4, 1000, 1)
        assert view is not None and len(view) == 248  # the end's room, not wrapped
        view[:] = b"z" * 248
        assert ring.commit(b"abcd", 248)
        assert ring.reserve(4, 1000, 1) is not None  # the start's 256 (wrapped)
        assert [len(r) for r in ring.get_many()] == [250, 250, 252]


def test_a_write_ends_the_reservation() -> None:
    """A commit after another write would publish overwritten room: it is refused."""
    with Ring(1024) as ring:
        view = ring.reserve(2, 100, 1)
        assert view is not None
        view[:5] = b"hello"
        ring.put(b"other")
        assert not ring.commit(b"hd", 5)
        assert ring.get_many() == [b"other"]
        view = ring.reserve(2, 100, 1)
        assert view is not None
        with pytest.raises(ValueError):
            ring.commit(b"hd", len(view) + 1)  # more than it reserved


def test_held_records_free_their_space_in_ring_order() -> None:
    """read_holding keeps the records turned into the held type (views of them stay
    valid) until each is given back; space is freed up to the first record still held,
    and a producer waiting for space is woken when it is."""
    with Ring(1024) as ring:
        for rec in (b"h1", b"no", b"h2", b"no"):
            ring.put(rec)
        out, size, tokens = ring.read_holding(
            bytes, lambda v: v if bytes(v[:1]) == b"h" else bytes(v), memoryview, 0)
        assert [bytes(x) for x in out] == [b"h1", b"no", b"h2", b"no"] and size == 8
        assert len(tokens) == 2 and ring.held_bytes == 4 * 8 and ring.used() == 4 * 8
        assert ring.read_holding(bytes, bytes, memoryview, 0) == ([], 0, [])  # read on
        ring.put(b"hx")  # under least: read by the other reader, never held
        assert ring.read_holding(bytes, memoryview, memoryview, 3) == ([b"hx"], 2, [])
        assert ring.held_bytes == 5 * 8
        ring._q[24] = 1  # the producer waits for space (the _WAITING slot)
        ring.give_back(tokens[1])          # not the first: nothing freed yet
        assert ring.held_bytes == 40 and not select.select([ring.space_fd], [], [], 0)[0]
        ring.give_back(tokens[0])          # now all five
        assert ring.held_bytes == 0 and ring.used() == 0
        assert select.select([ring.space_fd], [], [], 0)[0]
        ring.give_back(tokens[0])          # idempotent
        del out
        for i in range(300):               # and it goes round, past the wrap, many times
            ring.put(b"h" + bytes([i & 0xFF]) * 60)
            (view,), _, (token,) = ring.read_holding(bytes, memoryview, memoryview, 0)
            assert bytes(view) == b"h" + bytes([i & 0xFF]) * 60
            del view
            ring.give_back(token)
        assert ring.used() == 0


def test_a_producer_waiting_for_a_large_record_is_woken_once_it_fits() -> None:
    with Ring(1024) as ring:  # records up to 256 bytes
        for _ in range(8):
            ring.put(bytes(120))                  # 128 bytes each: the ring is full
        assert ring.try_put_many([bytes(250)]) == 0  # waits for 256 bytes
        assert ring.producer_waiting
        ring.get_many(1)                          # 128 freed: not enough, no wake-up
        assert not select.select([ring.space_fd], [], [], 0)[0]
        ring.get_many(1)                          # 256: it fits now
        assert select.select([ring.space_fd], [], [], 0)[0]
        assert ring.try_put_many([bytes(250)]) == 1 and not ring.producer_waiting
