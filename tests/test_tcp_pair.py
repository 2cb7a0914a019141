"""Two TCP cores talking over a fake link that drops, duplicates and reorders segments.

The client is an active-open core (``TcpConnection.connect``), the server a passive one
created from the first SYN that reaches it, as the tcp stage would. A fake clock advances
a millisecond per link step and jumps to the earliest timer when the link is idle.
Segments for a connection that has closed get the ``rst_for`` answer, as from the stage.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from httptap.net.tcp.connection import State, TcpConnection, rst_for
from httptap.net.tcp.events import (Acked, Closed, DataReceived, Established, PeerEof,
                                Reset)
from httptap.net.tcp.segment import SYN, Segment

class Side:
    """One application endpoint: what it must send, what it got, which events it saw."""

    def __init__(self, name: str, data: bytes, chunk: int, consume_p: float) -> None:
        self.name = name
        self.conn: TcpConnection | None = None
        self.to_send = data
        self.offset = 0
        self.chunk = chunk
        self.consume_p = consume_p
        self.received = bytearray()
        self.unconsumed = 0
        self.acked = 0
        self.events: list = []
        self.shut = False

    @property
    def closed(self) -> bool:
        return self.conn is not None and self.conn.state is State.CLOSED

    def app_step(self, now: float, rng: random.Random) -> None:
        conn = self.conn
        if conn is None or conn.state is State.CLOSED:
            return
        for ev in conn.events():
            self.events.append(ev)
            if isinstance(ev, DataReceived):
                self.received += ev.data
                self.unconsumed += len(ev.data)
            elif isinstance(ev, Acked):
                self.acked += ev.count
        if conn.state is State.CLOSED:
            return
        if self.unconsumed and rng.random() < self.consume_p:
            conn.consumed(self.unconsumed)
            self.unconsumed = 0
        while self.offset < len(self.to_send):
            n = min(self.chunk, conn.send_space(), len(self.to_send) - self.offset)
            if n <= 0:
                break
            conn.send(self.to_send[self.offset:self.offset + n])
            self.offset += n
        if self.offset == len(self.to_send) and not self.shut \
                and conn.state not in (State.SYN_SENT, State.LISTEN):
            conn.shutdown(now)
            self.shut = True

    def drain_events(self) -> None:
        if self.conn is not None:
            for ev in self.conn.events():
                self.events.append(ev)
                if isinstance(ev, DataReceived):
                    self.received += ev.data


class Link:
    """Per direction: drop, duplicate, delay (reorder); never more than 3 drops in a row."""

    def __init__(self, rng: random.Random, drop: float, dup: float, delay: float) -> None:
        self.rng = rng
        self.drop = drop
        self.dup = dup
        self.delay = delay
        self.queue: list[tuple[int, str, Segment]] = []
        self.run_of_drops = {"client": 0, "server": 0}

    def put(self, step: int, dest: str, segs: list[Segment]) -> None:
        rng = self.rng
        for seg in segs:
            if rng.random() < self.drop and self.run_of_drops[dest] < 3:
                self.run_of_drops[dest] += 1
                continue
            self.run_of_drops[dest] = 0
            copies = 2 if rng.random() < self.dup else 1
            for _ in range(copies):
                lag = rng.randint(1, 4) if rng.random() < self.delay else 0
                self.queue.append((step + lag, dest, seg))

    def due(self, step: int) -> list[tuple[str, Segment]]:
        ready = [(d, s) for t, d, s in self.queue if t <= step]
        self.queue = [q for q in self.queue if q[0] > step]
        if self.delay:
            self.rng.shuffle(ready)
        return ready


def run_pair(seed: int, data_c: bytes, data_s: bytes, *, drop: float = 0.0, dup: float = 0.0,
             delay: float = 0.0, mss: int = 1460, recv_buffer: int = 65536,
             consume_p: float = 1.0, chunk: int = 16384,
             max_steps: int = 200_000) -> tuple[Side, Side, float]:
    rng = random.Random(seed)
    link = Link(rng, drop, dup, delay)
    client = Side("client", data_c, chunk, consume_p)
    server = Side("server", data_s, chunk, consume_p)
    now = 0.0
    client.conn = TcpConnection.connect(iss=rng.getrandbits(32), now=now, mss=mss,
                                        recv_buffer=recv_buffer)
    sides = {"client": client, "server": server}
    for step in range(max_steps):
        for side in (client, server):
            side.app_step(now, rng)
            if side.conn is not None:
                link.put(step, "server" if side is client else "client",
                         side.conn.segments_to_send(now))
        if client.closed and server.closed and not link.queue:
            break
        if link.queue:
            now += 0.001
        else:                                          # idle link: jump to the next timer
            timers = [s.conn.next_timer() for s in (client, server) if s.conn is not None]
            timers = [t for t in timers if t is not None]
            if not timers:
                break
            now = max(now, min(timers))
        for side in (client, server):
            t = side.conn.next_timer() if side.conn is not None else None
            if t is not None and t <= now:
                side.conn.handle_timer(now)
        for dest, seg in link.due(step):
            side = sides[dest]
            if side.conn is None:
                if seg.flags & SYN:
                    side.conn = TcpConnection(seg, iss=rng.getrandbits(32), now=now, mss=mss,
                                              recv_buffer=recv_buffer)
                    side.conn.accept(now)
                continue
            if side.conn.state is State.CLOSED:        # forgotten flow: the stage answers
                reply = rst_for(seg)
                if reply is not None:
                    link.put(step, "server" if dest == "client" else "client", [reply])
                continue
            side.conn.receive(seg, now)
    else:
        raise AssertionError(f"no progress after {max_steps} steps: "
                             f"{client.conn and client.conn.state} {server.conn and server.conn.state}")
    client.drain_events()
    server.drain_events()
    return client, server, now


def check_clean(a: Side, b: Side) -> None:
    for me, other in ((a, b), (b, a)):
        assert bytes(me.received) == other.to_send, me.name
        kinds = [type(e) for e in me.events]
        assert kinds.count(Established) == 1, (me.name, kinds)
        assert kinds.count(PeerEof) == 1, (me.name, kinds)
        assert kinds[-1] is Closed and kinds.count(Closed) == 1, (me.name, kinds)
        if Reset in kinds:
            # Only legitimate case: we sat in LAST_ACK/CLOSING after the peer had finished
            # TIME_WAIT and forgotten the flow, so our FIN retransmission drew a RST.
            assert kinds.index(PeerEof) < kinds.index(Reset), (me.name, kinds)
            assert Reset not in [type(e) for e in other.events], kinds


def test_lossless_transfer_both_ways() -> None:
    rnd = random.Random(1)
    c_data = rnd.randbytes(300_000)
    s_data = rnd.randbytes(200_000)
    a, b, now = run_pair(1, c_data, s_data)
    check_clean(a, b)
    assert a.acked == len(c_data) and b.acked == len(s_data)


def test_zero_windows_lossless() -> None:
    rnd = random.Random(2)
    a, b, _ = run_pair(2, rnd.randbytes(50_000), rnd.randbytes(70_000), recv_buffer=3000,
                       mss=1000, consume_p=0.05)
    check_clean(a, b)


@given(seed=st.integers(0, 2**32 - 1),
       c_len=st.integers(0, 60_000), s_len=st.integers(0, 60_000),
       drop=st.sampled_from([0.0, 0.05, 0.1, 0.2]),
       dup=st.sampled_from([0.0, 0.05, 0.2]),
       delay=st.sampled_from([0.0, 0.1, 0.4]),
       mss=st.sampled_from([536, 1460, 9000]),
       recv_buffer=st.sampled_from([4000, 20_000, 1 << 20]),
       consume_p=st.sampled_from([1.0, 0.3]))
def test_random_link(seed: int, c_len: int, s_len: int, drop: float, dup: float, delay: float,
                     mss: int, recv_buffer: int, consume_p: float) -> None:
    rnd = random.Random(seed)
    a, b, _ = run_pair(seed, rnd.randbytes(c_len), rnd.randbytes(s_len), drop=drop, dup=dup,
                       delay=delay, mss=mss, recv_buffer=recv_buffer, consume_p=consume_p,
                       chunk=rnd.choice([100, 5000, 65536]))
    check_clean(a, b)
