"""The tcp stage keeps the proxy's large payloads as views of the ring they came in (no
copy out of it) until the command acknowledges them (``TcpShard`` with a
``HoldingInbox``): the bytes reach the command intact, each record is given back once its
last byte is acknowledged (or its flow is gone), and a payload held too long while the ring
is short of room is copied out, so a slow command never holds up the ring for the others."""

from __future__ import annotations

from httptap.net.tcp.events import DataReceived
from httptap.plumbing import messages as m
from httptap.plumbing.ring import Ring
from httptap.plumbing.stats import Counters
from httptap.stages.base import HoldingInbox, Outbox
from httptap.stages.tcp import HOLD_AGE, HOLD_LEAST
from test_tcp_stage import Rig


class HoldingRig(Rig):
    """The shard fed by a real ring from a proxy's Outbox, read by a HoldingInbox."""

    def __init__(self, capacity: int = 1 << 20) -> None:
        super().__init__()
        self.ring = Ring(capacity)
        self.proxy = Outbox(self.ring, Counters())
        self.inbox = HoldingInbox(self.ring, Counters(), HOLD_LEAST)
        self.shard.release = self.inbox.release

    def proxy_sends(self, *msgs: m.Msg) -> None:
        for msg in msgs:
            if type(msg) is m.FlowData:
                self.proxy.send_data(msg.flow, msg.data)
            else:
                self.proxy.send(msg)
        assert self.proxy.flush()
        self.shard.on_proxy(self.inbox.receive(), self.now, self.inbox.held)

    def open(self) -> None:
        self.client_sends()
        self.to_proxy.take()
        self.proxy_sends(m.FlowAccept(1))
        self.shard_sends()
        self.client_sends()  # the handshake's last ACK

    def relieve(self, limit: int) -> float | None:
        return self.shard.relieve(self.now, limit, lambda: self.ring.held_bytes,
                                  self.ring.oldest_held)

    def received(self) -> bytes:
        return b"".join(bytes(e.data) for e in self.client.events() if type(e) is DataReceived)


def test_a_large_payload_is_held_until_acknowledged_and_a_small_one_is_not():
    rig = HoldingRig()
    rig.open()
    small, large = b"s" * 100, bytes(range(256)) * (HOLD_LEAST // 256 + 1)
    rig.proxy_sends(m.FlowData(1, small), m.FlowData(1, large))
    assert rig.ring.held_bytes > len(large) and len(rig.shard.holding) == 1
    rig.shard_sends()                       # the client has them, not yet acknowledged
    assert rig.ring.held_bytes > len(large)
    rig.client_sends()                      # its ACK: the record is given back
    assert rig.ring.held_bytes == 0 and rig.ring.used() == 0 and not rig.shard.holding
    assert rig.received() == small + large


def test_held_payloads_stay_intact_while_the_ring_goes_round():
    rig = HoldingRig(capacity=1 << 18)      # records up to 64 KiB: the ring wraps often
    rig.open()
    sent = b""
    for i in range(40):
        payload = bytes([i]) * (HOLD_LEAST + 1000 * i % 30_000)
        sent += payload
        rig.proxy_sends(m.FlowData(1, payload))
        for _ in range(4):
            rig.shard_sends()
            rig.client_sends()
            rig.shard.on_timer(rig.now)
    assert rig.received() == sent
    assert rig.ring.used() == 0


def test_a_payload_held_too_long_is_copied_out_and_its_record_given_back():
    rig = HoldingRig()
    rig.open()
    payload = b"slow" * (HOLD_LEAST // 2)
    rig.proxy_sends(m.FlowData(1, payload))
    rig.to_tun.take()                        # lost on the way: it stays in the buffer
    held = rig.ring.held_bytes
    assert held > len(payload)
    due = rig.relieve(limit=0)               # young: left alone, looked at again later
    assert due == rig.now + HOLD_AGE and rig.ring.held_bytes == held
    rig.now = due
    assert rig.relieve(limit=0) is None
    assert rig.ring.held_bytes == 0 and not rig.shard.holding
    rig.ring._mm[256:] = b"\xee" * rig.ring.capacity  # the ring's room is reused (empty now)
    got = b""
    for _ in range(10):                      # retransmitted, from the flow's own copy
        rig.now += 1.0
        rig.shard.on_timer(rig.now)
        rig.shard_sends()
        got += rig.received()
        if got:
            break
    assert got == payload


def test_a_flow_that_ends_gives_its_held_records_back():
    rig = HoldingRig()
    rig.open()
    rig.proxy_sends(m.FlowData(1, bytes(HOLD_LEAST)), m.FlowData(1, bytes(HOLD_LEAST)))
    assert rig.ring.held_bytes > 0
    rig.shard.reset_all("the command exited")
    assert rig.ring.held_bytes == 0 and not rig.shard.holding
    rig.proxy_sends(m.FlowData(1, bytes(HOLD_LEAST)))  # for a flow already forgotten
    assert rig.ring.held_bytes == 0


def test_a_young_payload_that_holds_up_other_flows_records_is_copied_out():
    """Room is freed in ring order: a slow flow's one record would hold up the room of
    every record after it, done with or not. Once the ring is short (over ``limit``) and
    most of what is held up is not that flow's, its payloads are copied out at once."""
    rig = HoldingRig()
    rig.open()
    payload = b"pin!" * (HOLD_LEAST // 4)
    rig.proxy_sends(m.FlowData(1, payload))
    rig.to_tun.take()                        # not acknowledged: it stays held
    assert rig.relieve(limit=0) == rig.now + HOLD_AGE  # alone: young, left alone
    for _ in range(8):                       # records behind it, done with at once
        rig.proxy_sends(m.FlowData(99, bytes(HOLD_LEAST)))
    assert rig.ring.held_bytes > 8 * HOLD_LEAST
    assert rig.relieve(limit=4 * HOLD_LEAST) is None
    assert rig.ring.held_bytes == 0 and not rig.shard.holding
    rig.ring._mm[256:] = b"\xee" * rig.ring.capacity
    rig.now += 1.0
    rig.shard.on_timer(rig.now)              # retransmitted from the flow's own copy
    rig.shard_sends()
    assert rig.received() == payload


def test_a_flow_reset_by_the_proxy_gives_its_held_records_back_after_its_packets():
    rig = HoldingRig()
    rig.open()
    rig.proxy_sends(m.FlowData(1, bytes(HOLD_LEAST)))
    assert rig.ring.held_bytes > 0
    rig.proxy_sends(m.FlowReset(1, "upstream reset"))  # the RST goes out, then given back
    assert rig.ring.held_bytes == 0 and not rig.shard.holding and not rig.shard.forgotten


def test_of_one_slow_flow_only_the_payloads_past_their_age_are_copied_out():
    rig = HoldingRig()
    rig.open()
    first, second = b"1" * HOLD_LEAST, b"2" * HOLD_LEAST
    rig.proxy_sends(m.FlowData(1, first))
    rig.now += HOLD_AGE / 2
    rig.proxy_sends(m.FlowData(1, second))
    rig.to_tun.take()                        # neither acknowledged
    rig.now += HOLD_AGE / 2
    assert rig.relieve(limit=0) == rig.now + HOLD_AGE / 2  # the second is young
    (hold,) = rig.shard.by_id[1].holds       # type: ignore[misc]
    assert hold[0] == 2 * HOLD_LEAST and rig.ring.held_bytes == hold[1][1] - hold[1][0]
    rig.ring._mm[256:hold[1][0] % rig.ring.capacity + 256] = b"\xee" * (hold[1][0] % rig.ring.capacity)
    got = b""
    for _ in range(10):                      # retransmitted: the copy, then the view
        rig.now += 1.0
        rig.shard.on_timer(rig.now)
        rig.shard_sends()
        rig.client_sends()
        got += rig.received()
        if len(got) == 2 * HOLD_LEAST:
            break
    assert got == first + second
