"""Per-flow state is freed when flows end: many short connections leave the tables empty.

perf/bench_memory.py runs 10^5 new connections under httptap and samples the memory of
every process; these are the pure parts of what it watches. The tcp shard is driven in
one process (``test_tcp_stage.Rig``'s way: a second TCP core plays the command's kernel),
with the server closing first as a ``Connection: close`` response does, so the shard's
side ends in TIME_WAIT: the proxy must hear ``FlowClosed`` once, as soon as both FINs are
through (it then frees the flow and its upstream socket), not when TIME_WAIT ends; and
once TIME_WAIT is over nothing of the flow is left in the shard, timers included.
"""

from __future__ import annotations

import socket

from httptap.net.tcp.connection import State, TcpConnection
from httptap.net.tcp.events import DataReceived, PeerEof
from httptap.net.wire import VNET_HDR_LEN, build_tcp, parse_ip, parse_tcp
from httptap.plumbing import messages as m
from httptap.plumbing.stats import Counters
from httptap.stages.tcp import TIME_WAIT_GRID, TcpShard
from fakes import FakeOutbox

CLIENT = socket.inet_aton("10.1.1.100")
SERVER = socket.inet_aton("10.77.1.2")
SPORT = 80
FLOWS = 300


class Churn:
    """One shard; each call to ``exchange`` is one short connection from a new port."""

    def __init__(self, step: float = 0.01) -> None:
        self.to_tun, self.to_proxy = FakeOutbox(), FakeOutbox()
        self.shard = TcpShard(65520, self.to_tun, self.to_proxy, Counters())
        self.now = 0.0
        self.step = step  # time between two connections
        self.to_proxy_log: list[m.Msg] = []

    def _client_sends(self, client: TcpConnection, cport: int) -> None:
        packets = [build_tcp(CLIENT, SERVER, cport, SPORT, seg, vnet=False)
                   for seg in client.segments_to_send(self.now)]
        if packets:
            self.shard.on_packets(packets, self.now)

    def _shard_sends(self, client: TcpConnection, cport: int) -> None:
        for msg in self.to_tun.take():
            assert isinstance(msg, m.Packets)
            for pkt in msg.packets:
                ip = parse_ip(pkt[VNET_HDR_LEN:])
                sport, dport, seg = parse_tcp(ip.payload)
                if dport == cport:
                    client.receive(seg, self.now)

    def take(self) -> list[m.Msg]:
        """What the shard sent the proxy since the last call (also kept in the log)."""
        msgs = self.to_proxy.take()
        self.to_proxy_log += msgs
        return msgs

    def exchange(self, cport: int) -> int:
        """Request, response, the server's FIN, then the client's; returns the flow id."""
        client = TcpConnection.connect(iss=1000 + cport, now=self.now)
        self._client_sends(client, cport)
        (opened,) = [x for x in self.take() if type(x) is m.FlowOpened]
        flow = opened.flow
        self.shard.on_proxy([m.FlowAccept(flow)], self.now)
        self._shard_sends(client, cport)
        client.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        self._client_sends(client, cport)
        self.take()
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.shard.on_proxy([m.FlowAcked(flow, 37), m.FlowData(flow, answer), m.FlowEof(flow)],
                            self.now)
        got = b""
        for _ in range(10):
            self._shard_sends(client, cport)
            events = client.events()
            got += b"".join(e.data for e in events if type(e) is DataReceived)
            if PeerEof() in events:
                client.shutdown(self.now)  # the client closes its half in turn
            self._client_sends(client, cport)
            if client.state is State.CLOSED:
                break
        assert got == answer
        self.take()
        self.now += self.step
        return flow


def test_flow_closed_reaches_the_proxy_when_time_wait_begins_and_only_once():
    churn = Churn()
    for i in range(FLOWS):
        flow = churn.exchange(20000 + i)
        assert churn.shard.by_id[flow].conn.state is State.TIME_WAIT
        # the proxy has heard the end already: it frees the flow now, not a TIME_WAIT later
        assert m.FlowClosed(flow) in churn.to_proxy_log
        # ... and from FlowClosed alone: the command's FIN came with the end, so no
        # FlowEof before it (one message less per connection)
        assert m.FlowEof(flow) not in churn.to_proxy_log
    churn.now += 5.0  # past every TIME_WAIT (1 s) and retransmission timer
    churn.shard.on_timer(churn.now)
    churn.take()
    closed = [x.flow for x in churn.to_proxy_log if type(x) is m.FlowClosed]
    assert sorted(closed) == list(range(1, FLOWS + 1))  # once each
    assert not any(type(x) is m.FlowReset for x in churn.to_proxy_log)
    # FlowClosed wakes nobody: it goes with the proxy's next wake-up (stages.tcp,
    # CLOSED_WAKE_DELAY); every other message is sent to be acted on at once.
    assert churn.to_proxy.lazy == [m.FlowClosed(flow) for flow in closed]


def test_the_shard_keeps_nothing_after_many_short_connections():
    churn = Churn()
    for i in range(FLOWS):
        churn.exchange(20000 + i)
    shard = churn.shard
    assert len(shard.flows) == FLOWS  # in TIME_WAIT, as they should be
    churn.now += 5.0
    shard.on_timer(churn.now)
    assert shard.flows == {} and shard.by_id == {}
    assert shard.dirty == {} and shard.busy == {}
    assert shard.timers == [] and shard.next_timer() is None
    assert shard.out_packets == []


def test_a_new_syn_on_a_port_in_time_wait_opens_a_new_flow_and_closes_the_old_once():
    churn = Churn()
    first = churn.exchange(30000)
    second = churn.exchange(30000)  # the same port again, within TIME_WAIT
    assert second != first
    churn.now += 5.0
    churn.shard.on_timer(churn.now)
    churn.take()
    closed = [x.flow for x in churn.to_proxy_log if type(x) is m.FlowClosed]
    assert closed == [first, second]
    assert churn.shard.flows == {}


def test_the_command_closing_first_still_sends_its_fin_before_the_end():
    """The command half-closes first: its FIN must reach the server at once (FlowEof), and
    FlowClosed follows only when the server's side is done too."""
    churn = Churn()
    client = TcpConnection.connect(iss=5000, now=0.0)
    churn._client_sends(client, 41000)
    (opened,) = [x for x in churn.take() if type(x) is m.FlowOpened]
    churn.shard.on_proxy([m.FlowAccept(opened.flow)], 0.0)
    churn._shard_sends(client, 41000)
    client.shutdown(0.0)
    churn._client_sends(client, 41000)
    assert churn.take() == [m.FlowEof(opened.flow)]
    churn.shard.on_proxy([m.FlowEof(opened.flow)], 0.0)  # the server closes in turn
    for _ in range(5):
        churn._shard_sends(client, 41000)
        client.events()
        churn._client_sends(client, 41000)
    assert churn.take() == [m.FlowClosed(opened.flow)]
    assert churn.shard.flows == {}  # closed, no TIME_WAIT on this side


def test_time_wait_ends_on_a_grid_one_timer_for_many_flows():
    """Flows whose TIME_WAIT began within one TIME_WAIT_GRID end at the same instant: one
    wake-up of the loop for all of them, not one each; none ends before its second."""
    churn = Churn(step=0.001)
    began = {}
    for i in range(100):
        began[churn.exchange(20000 + i)] = churn.now - churn.step
    shard = churn.shard
    deadlines = {flow.timer for flow in shard.flows.values()}
    assert len(deadlines) <= 2  # 100 flows over 0.1 s: at most two grid points
    for flow in shard.flows.values():
        assert flow.timer is not None
        assert began[flow.id] + 1.0 <= flow.timer < began[flow.id] + 1.0 + TIME_WAIT_GRID + 1e-9
    first = shard.next_timer()
    assert first == min(deadlines)
    shard.on_timer(first - 1e-6)  # a wake-up just before: nothing ends
    assert len(shard.flows) == 100
    shard.on_timer(first)
    assert first not in {flow.timer for flow in shard.flows.values()}
    assert len(shard.flows) < 100
    shard.on_timer(max(deadlines))
    assert shard.flows == {} and shard.next_timer() is None
