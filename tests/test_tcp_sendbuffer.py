"""SendBuffer against a bytearray model: any appends, drops and views agree."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from httptap.net.tcp.sendbuffer import SMALL, SendBuffer

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3 * SMALL)),
    st.tuples(st.just("drop"), st.integers(0, 4 * SMALL)),
    st.tuples(st.just("view"), st.integers(0, 4 * SMALL), st.integers(0, 2 * SMALL)),
), max_size=60)


@given(ops)
def test_matches_a_bytearray(program):
    buf, model, counter = SendBuffer(), bytearray(), 0
    for op in program:
        if op[0] == "append":
            data = bytes((counter + i) & 0xFF for i in range(op[1]))
            counter += op[1]
            buf.append(data)
            model += data
        elif op[0] == "drop":
            n = min(op[1], len(model))
            buf.drop(n)
            del model[:n]
        else:
            off = min(op[1], len(model))
            n = min(op[2], len(model) - off)
            assert bytes(buf.view(off, n)) == bytes(model[off:off + n])
        assert len(buf) == len(model)


def test_views_stay_valid_after_the_data_is_dropped():
    buf = SendBuffer()
    buf.append(b"a" * SMALL + b"b" * SMALL)
    view = buf.view(SMALL - 2, 4)
    buf.drop(2 * SMALL)
    buf.append(b"c" * 10)
    assert bytes(view) == b"aabb"


def test_one_chunk_segments_are_not_copied():
    chunk = bytes(range(256)) * 256
    buf = SendBuffer()
    buf.append(chunk)
    view = buf.view(100, 1000)
    assert isinstance(view, memoryview) and view.obj is chunk


view_ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3 * SMALL), st.booleans()),
    st.tuples(st.just("drop"), st.integers(0, 4 * SMALL)),
    st.tuples(st.just("view"), st.integers(0, 4 * SMALL), st.integers(0, 2 * SMALL)),
    st.tuples(st.just("own")),
), max_size=60)


@given(view_ops)
def test_memoryview_chunks_are_kept_until_own_copies_them(program):
    """Memoryviews are kept uncopied (their owner keeps them valid); after ``own()`` the
    buffer refers to none of them: the owners may reuse their memory."""
    buf, model, counter = SendBuffer(), bytearray(), 0
    owners: list[bytearray] = []
    for op in program:
        if op[0] == "append":
            data = bytearray((counter + i) & 0xFF for i in range(op[1]))
            counter += op[1]
            if op[2]:
                owners.append(data)
                buf.append(memoryview(data))
            else:
                buf.append(bytes(data))
            model += data
        elif op[0] == "drop":
            n = min(op[1], len(model))
            buf.drop(n)
            del model[:n]
        elif op[0] == "own":
            buf.own()
            for owner in owners:
                owner[:] = b"\xee" * len(owner)  # reused by its owner
            owners.clear()
        else:
            off = min(op[1], len(model))
            n = min(op[2], len(model) - off)
            assert bytes(buf.view(off, n)) == bytes(model[off:off + n])
        assert len(buf) == len(model)


def test_a_large_memoryview_is_kept_as_it_is():
    owner = bytearray(range(256)) * 256
    buf = SendBuffer()
    buf.append(memoryview(owner))
    owner[100:104] = b"new!"  # the same memory: no copy was taken
    assert bytes(buf.view(100, 4)) == b"new!"


def test_own_upto_copies_only_the_chunks_that_hold_those_bytes():
    owners = [bytearray([i]) * SMALL for i in range(4)]
    buf = SendBuffer()
    for owner in owners:
        buf.append(memoryview(owner))
    buf.drop(100)                       # the first chunk is partly acknowledged
    buf.own(SMALL - 100 + 1)            # the rest of chunk 0 and one byte of chunk 1
    owners[0][:] = owners[1][:] = b"\xee" * SMALL  # reused by their owners: copied before
    assert bytes(buf.view(0, 2 * SMALL - 100)) == b"\0" * (SMALL - 100) + b"\1" * SMALL
    owners[2][:1] = b"!"                # still a view: not copied
    assert bytes(buf.view(2 * SMALL - 100, 1)) == b"!"
