"""The stages' Outbox (httptap.stages.base): a message the ring can never take is reported
once and dropped alone; it never wedges the messages behind it."""

from __future__ import annotations

from httptap.plumbing import messages as m
from httptap.plumbing.ring import Ring
from httptap.stages.base import SMALL_DATA, Inbox, Outbox
from httptap.plumbing.stats import Counters

CAPACITY = 1 << 16  # largest record: 16 KiB


def test_an_oversize_message_is_reported_once_and_the_rest_go_on(capsys):
    counters = Counters()
    with Ring(CAPACITY, label="proxy0->sink") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        out.send(m.Notice("info", "before"))
        out.send(m.BodyChunk(1, False, bytes(ring.max_record)))  # cannot fit, ever
        out.send_data(3, bytes(ring.max_record))                 # nor can this
        out.send(m.Notice("info", "after"))
        assert out.flush() and out.backlog == 0
        assert out.flush()  # nothing reported again
        received = inbox.receive()
        assert [msg.text for msg in received] == ["before", "after"]  # type: ignore[attr-defined]
        assert out.dropped == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("httptap: dropped a BodyChunk message on ring "
                                   "'proxy0->sink': its ")
        assert "FlowData" in lines[1]


def test_an_unencodable_message_is_dropped_alone(capsys):
    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        out.send(m.Notice("info", "bad \ud800 surrogate"))
        out.send(m.Notice("info", "fine"))
        assert out.flush()
        assert [msg.text for msg in inbox.receive()] == ["fine"]  # type: ignore[attr-defined]
        assert "cannot be encoded" in capsys.readouterr().err


def test_a_full_ring_keeps_the_backlog_in_order():
    """The other side of the contract: records that fit but find the ring full wait."""
    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        for i in range(40):
            out.send(m.BodyChunk(i, True, bytes(8000)))
        assert not out.flush() and out.backlog > 0
        got: list[int] = []
        for _ in range(100):
            got += [msg.exchange for msg in inbox.receive()]  # type: ignore[attr-defined]
            if out.flush() and len(got) == 40:
                break
        got += [msg.exchange for msg in inbox.receive()]  # type: ignore[attr-defined]
        assert got == list(range(40))


def test_small_flow_data_waits_for_the_flush_in_order_with_the_rest():
    """A small payload joins the pending records (one ring write per flush); a large one
    still goes straight into the ring. Either way the consumer sees the sends in order
    and the counts agree."""
    from httptap.stages.base import SMALL_DATA

    counters = Counters()
    with Ring(1 << 20, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, Counters())
        view = memoryview(bytearray(b"response"))
        out.send_data(1, view)
        view[:] = b"reused!!"  # the caller's buffer may be reused once send_data returns
        out.send(m.FlowAcked(1, 5))
        out.send_data(2, b"x" * 300)
        assert inbox.receive() == [] and out.backlog == 3  # nothing before the flush
        assert out.flush()
        assert inbox.receive() == [m.FlowData(1, b"response"), m.FlowAcked(1, 5),
                                   m.FlowData(2, b"x" * 300)]
        big = bytes(SMALL_DATA + 1)
        out.send_data(3, big)
        assert out.backlog == 0  # straight into the ring
        out.flush()
        assert inbox.receive() == [m.FlowData(3, big)]
        assert out.pending_bytes == 0
        expected = sum(len(m.encode(msg)) for msg in (
            m.FlowData(1, b"response"), m.FlowAcked(1, 5), m.FlowData(2, b"x" * 300),
            m.FlowData(3, big)))
        from httptap.plumbing.stats import BYTES_IN, BYTES_OUT, MSGS_OUT
        assert counters.v[MSGS_OUT] == 4 and counters.v[BYTES_OUT] == expected
        assert inbox._counters[BYTES_IN] == expected


def _woken(ring: Ring) -> bool:
    """Whether the consumer's wake-up fd is readable (the producer signalled)."""
    import select

    return bool(select.select([ring.data_fd], [], [], 0)[0])


def test_lazy_records_are_published_without_waking_the_consumer_until_wake():
    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        out.send_lazy(m.FlowClosed(1))
        assert out.flush_urgent() and out.unsignaled and not _woken(ring)
        out.wake()  # the stage's deadline for lazy records
        assert _woken(ring) and not out.unsignaled
        assert inbox.receive() == [m.FlowClosed(1)]


def test_a_lazy_record_goes_with_the_next_urgent_one_in_order():
    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        out.send_lazy(m.FlowClosed(1))
        out.flush_urgent()
        assert not _woken(ring)
        out.send(m.FlowOpened(2, "10.1.1.100", 40000, "10.77.1.2", 80))
        out.send_lazy(m.FlowClosed(3))
        assert out.flush_urgent() and _woken(ring) and not out.unsignaled
        assert [type(msg) for msg in inbox.receive()] == [m.FlowClosed, m.FlowOpened,
                                                          m.FlowClosed]
        out.send_lazy(m.FlowClosed(4))  # urgency ended with the signalling flush
        out.flush_urgent()
        assert not _woken(ring) and out.unsignaled
        out.send_data(5, b"GET / HTTP/1.1\r\n\r\n")  # data is urgent too
        out.flush_urgent()
        assert _woken(ring)
        assert inbox.receive() == [m.FlowClosed(4), m.FlowData(5, b"GET / HTTP/1.1\r\n\r\n")]


def test_an_urgent_record_that_found_the_ring_full_still_wakes_when_it_goes():
    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        for i in range(40):
            out.send(m.BodyChunk(i, True, bytes(8000)))
        assert not out.flush_urgent()
        got = len(inbox.receive())
        out.send_lazy(m.FlowClosed(1))
        for _ in range(100):
            if out.flush_urgent():
                break
            got += len(inbox.receive())
        assert _woken(ring)  # the last of the urgent backlog woke the consumer
        got += len(inbox.receive())
        assert got == 41


def test_lazy_wake_wakes_the_consumer_by_its_deadline_or_not_at_all():
    from httptap.stages.base import LazyWake

    counters = Counters()
    with Ring(CAPACITY, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, counters)
        lazy = LazyWake(out, 0.005)
        out.flush_urgent()
        assert lazy.deadline(10.0) is None  # nothing waits
        out.send_lazy(m.FlowClosed(1))
        out.flush_urgent()
        assert lazy.deadline(10.0) == 10.005
        out.send_lazy(m.FlowClosed(2))
        out.flush_urgent()
        assert lazy.deadline(10.003) == 10.005  # from the first lazy record, not the last
        lazy.on_timer(10.004)
        assert not _woken(ring)
        lazy.on_timer(10.005)
        assert _woken(ring) and lazy.deadline(10.005) is None
        assert inbox.receive() == [m.FlowClosed(1), m.FlowClosed(2)]
        # An urgent record's signal takes the lazy ones along: no deadline left.
        out.send_lazy(m.FlowClosed(3))
        out.flush_urgent()
        assert lazy.deadline(11.0) == 11.005
        out.send(m.FlowOpened(4, "10.1.1.100", 40000, "10.77.1.2", 80))
        out.flush_urgent()
        assert lazy.deadline(11.001) is None


def test_flow_data_read_into_the_ring_is_published_without_a_copy():
    """Outbox.reserve_data: bytes read straight into the ring's room are published as a
    FlowData when that very view is sent; anything else sent while the room is in use
    waits, copied, for the next flush, and keeps its order."""
    counters = Counters()
    with Ring(1 << 20, label="t") as ring:
        out, inbox = Outbox(ring, counters), Inbox(ring, Counters())
        view = out.reserve_data(7, 100_000)
        assert view is not None and len(view) == 100_000
        view[:6] = b"abcdef"
        data = out.filled_data(6)
        out.send_data(7, data)
        out.end_reserved()
        assert out.backlog == 0 and out.unsignaled
        assert out.flush() and inbox.receive() == [m.FlowData(7, b"abcdef")]

        # Something sent while read bytes are in use waits for the flush, after them.
        view = out.reserve_data(7, 100_000)
        assert view is not None
        view[:3] = b"xyz"
        data = out.filled_data(3)
        out.send(m.FlowAcked(7, 1))
        out.send_data(8, bytes(SMALL_DATA + 1))   # large: would go straight into the ring
        assert not out.flush()                     # not now: it would overwrite "xyz"
        out.send_data(7, data)                     # behind the others: copied, in order
        out.end_reserved()
        assert out.flush()
        assert inbox.receive() == [m.FlowAcked(7, 1), m.FlowData(8, bytes(SMALL_DATA + 1)),
                                   m.FlowData(7, b"xyz")]

        # Nothing is reserved while records wait: they must go first.
        out.send(m.FlowAcked(7, 2))
        assert out.reserve_data(7, 100_000) is None
        out.flush()
        assert inbox.receive() == [m.FlowAcked(7, 2)]
        assert out.pending_bytes == 0


def test_flow_data_header32_decodes_like_the_shortest():
    for size in (0, 5, 300, 70_000):
        payload = bytes(size)
        for flow in (1, 300, 1 << 40):
            record = m.flow_data_header32(flow, size) + payload
            assert m.decode(record) == m.FlowData(flow, payload)
