"""The tcp stage's logic in one process: packets and proxy messages in, messages out.

``TcpShard`` is driven with in-memory outboxes (no rings, no TUN device); a second TCP
core plays the command's kernel, so what the shard emits is checked by a real peer.
"""

from __future__ import annotations

import socket

import pytest

from httptap.plumbing import messages as m
from httptap.plumbing.stats import Counters
from httptap.stages.tcp import (ACK_DELAY, CREDIT_STEP, TcpShard,
                                 leads_to_host_loopback)
from httptap.net.tcp.connection import TcpConnection
from httptap.net.tcp.events import DataReceived, Established, PeerEof
from httptap.net.tcp.segment import ACK, RST, SYN, Segment
from httptap.net.wire import VNET_HDR_LEN, build_tcp, parse_ip, parse_tcp
from fakes import FakeOutbox

CLIENT = socket.inet_aton("10.1.1.100")
SERVER = socket.inet_aton("10.77.1.2")
CPORT, SPORT = 40000, 80


class Rig:
    """A shard, and a client core standing in for the command's kernel."""

    def __init__(self) -> None:
        self.to_tun, self.to_proxy = FakeOutbox(), FakeOutbox()
        self.shard = TcpShard(65520, self.to_tun, self.to_proxy, Counters())
        self.client = TcpConnection.connect(iss=1000, now=0.0)
        self.now = 0.0

    def client_sends(self) -> None:
        """Everything the client core wants to send, as packets into the shard."""
        packets = [build_tcp(CLIENT, SERVER, CPORT, SPORT, seg, vnet=False)
                   for seg in self.client.segments_to_send(self.now)]
        if packets:
            self.shard.on_packets(packets, self.now)

    def shard_sends(self) -> list[Segment]:
        """Packets the shard wrote towards the command, delivered to the client core."""
        segments = []
        for msg in self.to_tun.take():
            assert isinstance(msg, m.Packets)
            for pkt in msg.packets:
                ip = parse_ip(pkt[VNET_HDR_LEN:])
                assert (ip.src, ip.dst) == (SERVER, CLIENT)
                sport, dport, seg = parse_tcp(ip.payload)
                assert (sport, dport) == (SPORT, CPORT)
                self.client.receive(seg, self.now)
                segments.append(seg)
        return segments


def test_syn_waits_for_the_upstream_then_the_handshake_completes():
    rig = Rig()
    rig.client_sends()
    (opened,) = rig.to_proxy.take()
    assert opened == m.FlowOpened(1, "10.1.1.100", CPORT, "10.77.1.2", SPORT)
    assert rig.shard_sends() == []  # no SYN-ACK before the upstream answered
    rig.shard.on_proxy([m.FlowAccept(1)], rig.now)
    (synack,) = rig.shard_sends()
    assert synack.flags == SYN | ACK
    assert Established() in rig.client.events()


def test_data_both_ways_with_credit():
    rig = Rig()
    rig.client_sends()
    rig.to_proxy.take()
    rig.shard.on_proxy([m.FlowAccept(1)], rig.now)
    rig.shard_sends()
    rig.client.send(b"GET / HTTP/1.1\r\n\r\n")
    rig.client_sends()
    assert m.FlowData(1, b"GET / HTTP/1.1\r\n\r\n") in rig.to_proxy.take()
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    rig.shard.on_proxy([m.FlowAcked(1, 18), m.FlowData(1, head)], rig.now)
    rig.shard_sends()
    assert DataReceived(head) in rig.client.events()
    rig.client_sends()  # acknowledged, but credit goes back in steps: not yet
    assert not any(type(msg) is m.FlowAcked for msg in rig.to_proxy.take())
    body = bytes(CREDIT_STEP)
    rig.shard.on_proxy([m.FlowData(1, body), m.FlowEof(1)], rig.now)
    for _ in range(20):  # bursts: the shard keeps sending while the window allows
        rig.shard_sends()
        rig.client_sends()
        rig.shard.on_timer(rig.now)
    events = rig.client.events()
    assert b"".join(e.data for e in events if type(e) is DataReceived) == body
    assert PeerEof() in events
    credit = [msg for msg in rig.to_proxy.take() if type(msg) is m.FlowAcked]
    assert credit == [m.FlowAcked(1, len(head) + len(body))]


def test_refused_upstream_resets_the_command():
    rig = Rig()
    rig.client_sends()
    rig.to_proxy.take()
    rig.shard.on_proxy([m.FlowRefuse(1, "Connection refused")], rig.now)
    (rst,) = rig.shard_sends()
    assert rst.flags & RST
    assert rig.shard.flows == {}
    assert m.FlowClosed(1) in rig.to_proxy.take()


def test_a_segment_for_no_connection_gets_a_reset():
    rig = Rig()
    stray = Segment(5000, 7000, ACK, 100, b"late data")
    rig.shard.on_packets([build_tcp(CLIENT, SERVER, CPORT, SPORT, stray, vnet=False)], 0.0)
    (packets,) = rig.to_tun.take()
    ip = parse_ip(packets.packets[0][VNET_HDR_LEN:])
    _, _, rst = parse_tcp(ip.payload)
    assert rst.flags & RST and rst.seq == 7000
    assert rig.to_proxy.take() == []


def test_udp_goes_to_the_proxy_and_answers_come_back():
    from httptap.net.wire import build_udp, parse_udp

    rig = Rig()
    query = build_udp(CLIENT, socket.inet_aton("10.1.1.1"), 5353, 53, b"\x12\x34", vnet=False)
    rig.shard.on_packets([query], 0.0)
    assert rig.to_proxy.take() == [m.DatagramIn("10.1.1.100", 5353, "10.1.1.1", 53, b"\x12\x34")]
    rig.shard.on_proxy([m.DatagramOut("10.1.1.1", 53, "10.1.1.100", 5353, b"\x12\x35")], 0.0)
    (packets,) = rig.to_tun.take()
    ip = parse_ip(packets.packets[0][VNET_HDR_LEN:])
    assert parse_udp(ip.payload) == (53, 5353, b"\x12\x35")


# --- the host's loopback is refused ------------------------------------------------------

@pytest.mark.parametrize("address, refused", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("0.0.0.0", True),
    ("::1", True), ("::", True), ("::ffff:127.0.0.1", True), ("::ffff:0.0.0.0", True),
    ("169.254.77.65", False),  # the documented alias: the proxy maps it to 127.0.0.1
    ("10.77.1.2", False), ("128.0.0.1", False), ("126.255.255.255", False),
    ("::2", False), ("2001:db8::1", False), ("::ffff:10.0.0.1", False), ("::127.0.0.1", False),
    ("fe80::1", False),
])
def test_which_destinations_lead_to_the_host_loopback(address: str, refused: bool):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    assert leads_to_host_loopback(socket.inet_pton(family, address)) is refused


@pytest.mark.parametrize("src, dst", [
    ("10.1.1.100", "127.0.0.2"), ("10.1.1.100", "127.0.0.1"),
    ("fd01:1:1::100", "::1"), ("fd01:1:1::100", "::ffff:127.0.0.1"),
])
def test_a_syn_to_the_host_loopback_gets_a_reset_and_never_reaches_the_proxy(src: str, dst: str):
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    client, server = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    rig = Rig()
    syn = Segment(1000, 0, SYN, 65535, b"")
    for _ in range(3):  # retransmitted SYNs: refused each time, said once
        rig.shard.on_packets([build_tcp(client, server, CPORT, 22, syn, vnet=False)], 0.0)
    replies = [pkt for msg in rig.to_tun.take() for pkt in msg.packets]
    assert len(replies) == 3
    for pkt in replies:
        ip = parse_ip(pkt[VNET_HDR_LEN:])
        assert (ip.src, ip.dst) == (server, client)
        _, _, rst = parse_tcp(ip.payload)
        assert rst.flags == RST | ACK and rst.ack == 1001  # "connection refused"
    assert rig.shard.flows == {}
    (notice,) = rig.to_proxy.take()  # no FlowOpened: nothing connects upstream
    assert isinstance(notice, m.Notice) and notice.level == "info"
    assert f"refused TCP to {dst} port 22" in notice.text and "169.254.77.65" in notice.text


def test_udp_to_the_host_loopback_is_dropped():
    from httptap.net.wire import build_udp

    rig = Rig()
    for dst in ("127.0.0.1", "127.0.0.53", "0.0.0.0"):
        datagram = build_udp(CLIENT, socket.inet_aton(dst), 5353, 11211, b"stats", vnet=False)
        rig.shard.on_packets([datagram], 0.0)
    sent = rig.to_proxy.take()
    assert not any(isinstance(msg, m.DatagramIn) for msg in sent)
    assert len(sent) == 1 and "refused UDP to 127.0.0.1 port 11211" in sent[0].text
    assert rig.to_tun.take() == []


def test_the_loopback_alias_still_reaches_the_proxy():
    rig = Rig()
    alias = socket.inet_aton("169.254.77.65")
    syn = Segment(1000, 0, SYN, 65535, b"")
    rig.shard.on_packets([build_tcp(CLIENT, alias, CPORT, 8080, syn, vnet=False)], 0.0)
    assert rig.to_proxy.take() == [m.FlowOpened(1, "10.1.1.100", CPORT, "169.254.77.65", 8080)]


def _keepalive_rig() -> Rig:
    """A rig whose connection is established and has carried one exchange."""
    rig = Rig()
    rig.client_sends()
    rig.to_proxy.take()
    rig.shard.on_proxy([m.FlowAccept(1)], rig.now)
    rig.shard_sends()
    rig.client.send(b"GET /1 HTTP/1.1\r\n\r\n")
    rig.client_sends()
    rig.shard_sends()
    rig.shard.on_proxy([m.FlowData(1, b"HTTP/1.1 204 No Content\r\n\r\n")], rig.now)
    rig.shard_sends()
    rig.client_sends()
    rig.to_proxy.take()
    rig.client.events()
    return rig


def test_the_ack_of_a_small_request_waits_for_the_answer_and_rides_on_it():
    rig = _keepalive_rig()
    rig.client.send(b"GET /2 HTTP/1.1\r\n\r\n")
    rig.client_sends()
    assert m.FlowData(1, b"GET /2 HTTP/1.1\r\n\r\n") in rig.to_proxy.take()  # passed on at once
    assert rig.shard_sends() == []  # no lone ACK
    assert rig.shard.next_timer() == rig.now + ACK_DELAY
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    rig.shard.on_proxy([m.FlowData(1, answer)], rig.now)
    (segment,) = rig.shard_sends()  # one packet: the answer, acknowledging the request
    assert segment.payload == answer and segment.flags & ACK
    assert DataReceived(answer) in rig.client.events()
    assert rig.client.snd.snd_una == rig.client.snd.snd_max  # the request is acknowledged
    assert rig.shard.ack_due == {}


def test_a_held_ack_goes_alone_at_its_deadline():
    rig = _keepalive_rig()
    rig.client.send(b"GET /2 HTTP/1.1\r\n\r\n")
    rig.client_sends()
    assert rig.shard_sends() == []
    due = rig.shard.next_timer()
    assert due == rig.now + ACK_DELAY
    rig.now = due - ACK_DELAY / 2
    rig.shard.on_timer(rig.now)  # not yet
    assert rig.shard_sends() == []
    rig.now = due
    rig.shard.on_timer(rig.now)
    (ack,) = rig.shard_sends()
    assert ack.flags == ACK and not ack.payload
    assert rig.client.snd.snd_una == rig.client.snd.snd_max
    assert rig.shard.ack_due == {} and rig.shard.next_timer() != due
    # No answer came in time, and the client sends more before any answer: it was
    # waiting for this very ACK (Nagle), so this flow's data is acknowledged at once from
    # now on.
    for _ in range(40):
        rig.client.send(b"more")
        rig.client_sends()
        assert [seg.flags for seg in rig.shard_sends()] == [ACK]
        assert not rig.shard.ack_due


def test_after_a_late_answer_acks_are_held_again():
    """A hold ran out and the answer came next: the proxy was slow (a busy machine), the
    client was not waiting for the ACK, so the next request's ACK waits for its answer."""
    rig = _keepalive_rig()
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    rig.client.send(b"GET /2 HTTP/1.1\r\n\r\n")
    rig.client_sends()
    rig.now = rig.shard.next_timer()
    rig.shard.on_timer(rig.now)
    (ack,) = rig.shard_sends()  # the hold ran out: the ACK alone
    assert ack.flags == ACK and not ack.payload
    rig.shard.on_proxy([m.FlowData(1, answer)], rig.now)  # then the (late) answer
    rig.shard_sends()
    rig.client_sends()  # (the client acknowledges the answer)
    rig.client.send(b"GET /3 HTTP/1.1\r\n\r\n")
    rig.client_sends()
    assert rig.shard_sends() == []  # held again
    assert rig.shard.next_timer() == rig.now + ACK_DELAY
    rig.shard.on_proxy([m.FlowData(1, answer)], rig.now)
    (segment,) = rig.shard_sends()  # the answer carries the ACK
    assert segment.payload == answer
    assert rig.client.snd.snd_una == rig.client.snd.snd_max


def test_a_fin_is_acknowledged_at_once():
    rig = _keepalive_rig()
    rig.client.send(b"GET /2 HTTP/1.1\r\n\r\n")
    rig.client.shutdown(rig.now)
    rig.client_sends()
    (ack,) = rig.shard_sends()
    assert ack.flags & ACK and rig.client.snd.snd_una == rig.client.snd.snd_max


def test_a_fin_then_a_reset_in_one_batch_reach_the_proxy_in_that_order():
    """The command's FIN is left out only when FlowClosed says it (the flow ended in the
    same pass by both FINs): a reset right behind a FIN keeps FlowEof, then FlowReset."""
    rig = Rig()
    rig.client_sends()
    rig.to_proxy.take()
    rig.shard.on_proxy([m.FlowAccept(1)], rig.now)
    rig.shard_sends()
    rig.client_sends()  # the handshake's last ACK
    rig.client.shutdown(rig.now)
    (fin,) = rig.client.segments_to_send(rig.now)
    rst = Segment(fin.seq + 1, fin.ack, RST | ACK, 0)
    rig.shard.on_packets([build_tcp(CLIENT, SERVER, CPORT, SPORT, seg, vnet=False)
                          for seg in (fin, rst)], rig.now)
    assert rig.to_proxy.take() == [m.FlowEof(1), m.FlowReset(1, "reset"), m.FlowClosed(1)]
    assert rig.shard.flows == {}
