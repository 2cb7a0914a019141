"""The sink stage's delivery (``stages.sink.Delivery``), in one process: messages from a
real ring handed to every sink, bodies joined per exchange, a failing sink reported once
while the others go on."""

from __future__ import annotations

import io

from httptap.plumbing import messages as m
from httptap.plumbing.ring import Ring
from httptap.plumbing.stats import DELIVERED, FAILED_WRITES, Counters, SinkState
from httptap.run.config import Config
from httptap.sinks import NdjsonSink, TerminalSink
from httptap.sinks.bodies import Bodies
from httptap.stages.base import Inbox, Outbox
from httptap.stages.sink import Delivery

REQUEST = m.HttpRequest(exchange=1, time=1.0, method="POST", url="http://a.test/x",
                        version="HTTP/1.1", headers=[("Host", "a.test")], client="c:1",
                        server="s:80")
RESPONSE = m.HttpResponse(exchange=1, time=2.0, status=200, reason="OK", version="HTTP/1.1",
                          headers=[], request_body_size=4, body_size=2, decoded_size=2)


class Recorder:
    """A sink that records what it is handed (or fails, if told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: list[object] = []
        self.flushes = 0

    def request(self, req: m.HttpRequest) -> None:
        self.got.append(req)
        if self.fail:
            raise OSError("disk full")

    def response(self, resp: m.HttpResponse, bodies: Bodies) -> None:
        self.got.append((resp, bodies))
        if self.fail:
            raise OSError("disk full")

    def body_chunk(self, chunk: m.BodyChunk) -> None:
        self.got.append(chunk)

    def flush(self) -> None:
        self.flushes += 1


def test_each_message_reaches_every_sink_with_its_bodies(capsys):
    state = SinkState()
    broken, good = Recorder(fail=True), Recorder()
    delivery = Delivery([broken, good], Config(command=("true",)), state)  # type: ignore[list-item]
    with Ring(1 << 16, label="d") as ring:
        out = Outbox(ring, Counters())
        for msg in (REQUEST, m.BodyChunk(1, True, b"da"), m.BodyChunk(1, True, b"ta"),
                    m.BodyChunk(1, False, b"ok"), RESPONSE):
            out.send(msg)
        out.flush()
        delivery.receive(Inbox(ring, Counters()))
    bodies = Bodies(b"data", b"ok")
    assert good.got[0] == REQUEST and good.got[-1] == (RESPONSE, bodies)
    assert broken.got[0] == REQUEST and broken.got[-1] == (RESPONSE, bodies)
    assert state.v[DELIVERED] == 5
    assert state.v[FAILED_WRITES] == 2  # each failed write counted, reported once
    assert capsys.readouterr().err.count("writing output failed") == 1
    delivery.flush()
    assert good.flushes == broken.flushes == 1


def test_terminal_and_ndjson_lines_wait_for_the_flush():
    term_out, nd_out = io.StringIO(), io.StringIO()
    sinks = [TerminalSink(term_out, batched=True), NdjsonSink(nd_out, batched=True)]
    delivery = Delivery(sinks, Config(command=("true",)))  # type: ignore[arg-type]
    delivery.deliver(REQUEST)
    delivery.deliver(RESPONSE)
    assert term_out.getvalue() == nd_out.getvalue() == ""
    delivery.flush()
    assert term_out.getvalue() == ("---> POST http://a.test/x\n"
                                   "<--- 200 http://a.test/x (2 bytes)\n")
    assert nd_out.getvalue().count("\n") == 1 and '"exchange":1' in nd_out.getvalue()
