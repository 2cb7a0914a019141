"""A request and its response as one message to the sink (``HttpExchange``).

The proxy holds each reported request until the sink's next wake-up, which the sink
waits for anyway (``SINK_WAKE_DELAY``); a response that is the flow's next message by
then travels with it as one record. Anything else of that flow sends the held request
first, so per flow the sink sees every message in the order it was reported, and the
sink delivers an ``HttpExchange`` exactly as the two messages."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from httptap.flow import commands as fc
from httptap.flow.core import FlowCore
from httptap.plumbing import messages as m
from httptap.plumbing.ring import Ring
from httptap.plumbing.stats import DELIVERED, Counters, SinkState
from httptap.run.config import Config
from httptap.sinks import NdjsonSink, TerminalSink
from httptap.stages import proxy as proxy_stage
from httptap.stages.base import Inbox, StageContext
from httptap.stages.relay import Relay
from httptap.stages.sink import Delivery
from httptap.tls.ca import CertificateAuthority


def request(exchange: int) -> m.HttpRequest:
    return m.HttpRequest(exchange=exchange, time=1.0, method="GET",
                         url=f"http://a.test/{exchange}", version="HTTP/1.1",
                         headers=[("Host", "a.test")], client="10.1.1.100:40000",
                         server="192.0.2.1:80")


def response(exchange: int) -> m.HttpResponse:
    return m.HttpResponse(exchange=exchange, time=2.0, status=200, reason="OK",
                          version="HTTP/1.1", headers=[("Content-Length", "2")],
                          request_body_size=0, body_size=2, decoded_size=2)


class FakeLink:
    """The proxy stage as a relay sees it: records what goes to the sink and who holds."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.output_blocked = False
        self.sink: list[m.Msg] = []
        self.holding: list[Relay] = []

    def send_tcp(self, msg: m.Msg) -> None:
        pass

    def send_tcp_data(self, flow: int, data: bytes | memoryview) -> None:
        pass

    def send_sink(self, msg: m.Msg) -> None:
        self.sink.append(msg)

    def hold_request(self, relay: Relay) -> None:
        self.holding.append(relay)

    def forget(self, flow: int) -> None:
        pass


def _settings() -> fc.FlowSettings:
    return fc.FlowSettings(
        http_ports=frozenset({80}), https_ports=frozenset({443}), capture_bodies=False,
        stream_bodies=False, max_body_size=1 << 20, verbose=False,
        new_exchange_id=lambda: 1, upstream_context=lambda alpn: None,
        server_context=lambda name, alpn: None)


def _relay(link: Any, flow: int = 5) -> Relay:
    opened = m.FlowOpened(flow, "10.1.1.100", 40000 + flow, "192.0.2.1", 80)
    return Relay(link, FlowCore(_settings(), opened, 0.0))


def _report(relay: Relay, *msgs: m.Msg) -> None:
    relay.core.commands = [fc.Report(msg) for msg in msgs]
    relay.execute()


def test_a_request_waits_for_its_response_and_both_go_as_one_message():
    loop = asyncio.new_event_loop()
    try:
        link = FakeLink(loop)
        relay = _relay(link)
        _report(relay, request(1))
        assert link.sink == [] and link.holding == [relay]
        _report(relay, response(1))
        assert link.sink == [m.HttpExchange(request(1), response(1))]
        relay.release()  # nothing is held any more
        assert link.sink == [m.HttpExchange(request(1), response(1))]
    finally:
        loop.close()


def test_per_flow_the_sink_sees_the_order_reported():
    loop = asyncio.new_event_loop()
    try:
        # Pipelined: the second request comes before the first response.
        link = FakeLink(loop)
        relay = _relay(link)
        _report(relay, request(1), request(2), response(1), response(2))
        assert link.sink == [request(1), request(2), response(1), response(2)]

        # Any other message of the flow sends the held request first.
        link = FakeLink(loop)
        relay = _relay(link)
        notice = m.Notice("info", "hello")
        _report(relay, request(3), notice)
        assert link.sink == [request(3), notice]

        # A response to another exchange is not joined to the held request.
        link = FakeLink(loop)
        relay = _relay(link)
        _report(relay, request(4), response(9))
        assert link.sink == [request(4), response(9)]

        # Released (the sink's wake-up is due): the request goes alone, the response later.
        link = FakeLink(loop)
        relay = _relay(link)
        _report(relay, request(5))
        relay.release()
        _report(relay, response(5))
        assert link.sink == [request(5), response(5)]
    finally:
        loop.close()


class _Proxy:
    """A real proxy stage with real rings, in this process; flows with no upstream."""

    def __init__(self) -> None:
        self.rings = [Ring(1 << 20, label=f"ex{i}") for i in range(3)]  # tcp->, ->tcp, ->sink
        self.loop = asyncio.new_event_loop()
        ctx = StageContext("proxy", Config(command=("true",)), Counters(), [self.rings[0]],
                           [self.rings[1], self.rings[2]],
                           {"ca": CertificateAuthority.ephemeral()})
        self.proxy = proxy_stage.Proxy(ctx, self.loop)
        self.sink = Inbox(self.rings[2], Counters())

    def relay(self, flow: int) -> Relay:
        relay = _relay(self.proxy, flow)
        self.proxy.relays[flow] = relay
        return relay

    def turn(self) -> list[m.Message]:
        """One turn of the loop (the flush a send scheduled), then what the sink ring holds."""
        self.loop.run_until_complete(asyncio.sleep(0))
        return self.sink.receive()

    def close(self) -> None:
        self.loop.close()
        for ring in self.rings:
            ring.release()


def test_the_proxy_sends_held_requests_when_it_wakes_the_sink():
    p = _Proxy()
    try:
        proxy = p.proxy
        a, b = p.relay(1), p.relay(2)
        # The sink has never been woken: the first request goes at once.
        _report(a, request(1))
        assert p.turn() == [request(1)]
        # Now a wake-up is not due (the next one far ahead, so that no clock matters).
        proxy.sink_woken = p.loop.time() + 3600
        _report(a, response(1), request(2))
        _report(b, request(3))
        assert p.turn() == [response(1)]
        assert proxy.sink_wake is not None  # the wake-up that will carry the held ones
        _report(a, response(2))
        assert p.turn() == [m.HttpExchange(request(2), response(2))]
        proxy._wake_sink()  # (what the sink_wake timer calls)
        assert p.sink.receive() == [request(3)]
        assert not proxy.holding
        # Draining: what is held goes before the Drain (and before the end of its flow).
        _report(b, request(4))
        proxy._drain()
        got = p.sink.receive()
        assert got[-1] == m.Drain() and request(4) in got
        summary = next(i for i, x in enumerate(got) if type(x) is m.TcpSummary
                       and x.client.endswith(":40002"))
        assert got.index(request(4)) < summary
    finally:
        p.close()


def test_the_sink_delivers_an_exchange_as_its_two_messages():
    outputs = []
    for msgs in ([request(1), response(1)], [m.HttpExchange(request(1), response(1))]):
        term, nd = io.StringIO(), io.StringIO()
        state = SinkState()
        delivery = Delivery([TerminalSink(term, batched=True),  # type: ignore[list-item]
                             NdjsonSink(nd, batched=True)], Config(command=("true",)), state)
        with Ring(1 << 16, label="exd") as ring:
            for msg in msgs:
                ring.put(m.encode(msg))
            delivery.receive(Inbox(ring, Counters()))
        delivery.flush()
        assert state.v[DELIVERED] == len(msgs)
        outputs.append((term.getvalue(), nd.getvalue()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == "---> GET http://a.test/1\n<--- 200 http://a.test/1 (2 bytes)\n"


def test_an_exchange_too_big_for_one_record_goes_as_its_two_messages():
    """Joined, a request and a response may exceed the ring's largest record where each
    alone fits: they go apart then, nothing dropped."""
    from httptap.stages.base import Outbox
    ring = Ring(1 << 12, label="test-exchange")
    try:
        big = [("X-Pad", "p" * 600)]
        req = m.HttpRequest(exchange=7, time=1.0, method="GET", url="http://a.test/7",
                            version="HTTP/1.1", headers=big, client="10.1.1.100:40000",
                            server="192.0.2.1:80")
        resp = m.HttpResponse(exchange=7, time=2.0, status=200, reason="OK",
                              version="HTTP/1.1", headers=big, request_body_size=0,
                              body_size=0, decoded_size=0)
        assert len(m.encode(req)) <= ring.max_record and len(m.encode(resp)) <= ring.max_record
        assert len(m.encode(m.HttpExchange(req, resp))) > ring.max_record
        out = Outbox(ring, Counters())
        out.send(m.HttpExchange(req, resp))
        assert out.flush()
        assert out.dropped == 0
        assert Inbox(ring, Counters()).receive() == [req, resp]
    finally:
        ring.release()
