"""The sink stage: the only stage that writes the user's output.

Consumes one ring per proxy shard and hands each event to every configured sink
(``httptap.sinks``: terminal, ndjson, HAR); body chunks are joined per exchange (at most
``--max-body-size`` each) and handed over with the exchange's response. Notices (errors,
and information with ``--verbose``) go to stderr. Exits after every input has sent
``Drain`` (the supervisor sends it on behalf of a proxy that died); the sinks are closed
(files written) on every way out, HAR files first, including SIGTERM from the
supervisor, which is not a failure.

It tells the supervisor how it is doing in a :class:`~httptap.stats.SinkState` block:
busy (delivering or blocked writing output, as behind a slow reader) or waiting for
input, how many events it delivered, and how many writes failed. A sink whose write
fails is reported once and kept: the other sinks, and its later events, go on.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import TextIO

from ..plumbing import messages
from ..plumbing.stats import BUSY, DELIVERED, FAILED_WRITES, SinkState
from ..sinks import HarSink, Sink, make_sinks
from ..sinks.bodies import BodyAssembler
from ..run.config import Config
from .base import Inbox, Loop, StageContext


class Stop(Exception):
    """SIGTERM from the supervisor: close the outputs now, with what has arrived."""


class Delivery:
    """Hands each message to every sink (``sinks``), the bodies joined per exchange; a
    sink's failure is counted in ``state`` and reported once on stderr, and the other
    sinks, and its later events, go on. ``out``: where ``--dump-tcp`` lines go."""

    def __init__(self, sinks: list[Sink], config: Config, state: SinkState | None = None,
                 out: TextIO | None = None) -> None:
        self.sinks = sinks
        self.config = config
        self.v = (state or SinkState()).v
        self.out = out if out is not None else sys.stdout
        self.bodies = BodyAssembler(config.max_body_size)
        self._failed: set[int] = set()  # sinks whose failure was reported

    def write_failed(self, sink: Sink, exc: Exception, what: str = "") -> None:
        self.v[FAILED_WRITES] += 1
        if id(sink) not in self._failed:
            self._failed.add(id(sink))
            print(f"httptap: writing output failed{what}: {exc}", file=sys.stderr, flush=True)

    def receive(self, inbox: Inbox) -> None:
        """Everything the ring holds now, delivered."""
        msgs = inbox.receive()
        deliver = self.deliver
        for msg in msgs:
            deliver(msg)
        self.v[DELIVERED] += len(msgs)

    def deliver(self, msg: messages.Message) -> None:
        # The messages of every exchange first, each sink called directly (no closure
        # per message): most of what a busy sink does. An HttpExchange is its request
        # and its response, delivered as if they had come apart.
        if type(msg) is messages.HttpExchange:
            self._request(msg.request)
            self._response(msg.response)
        elif type(msg) is messages.HttpRequest:
            self._request(msg)
        elif type(msg) is messages.HttpResponse:
            self._response(msg)
        else:
            self._deliver_other(msg)

    def _request(self, msg: messages.HttpRequest) -> None:
        for sink in self.sinks:
            try:
                sink.request(msg)
            except Exception as exc:  # noqa: BLE001 - one output's failure must not lose the others
                self.write_failed(sink, exc)

    def _response(self, msg: messages.HttpResponse) -> None:
        exchange_bodies = self.bodies.take(msg)
        for sink in self.sinks:
            try:
                sink.response(msg, exchange_bodies)
            except Exception as exc:  # noqa: BLE001
                self.write_failed(sink, exc)

    def _deliver_other(self, msg: messages.Message) -> None:
        config = self.config
        match msg:
            case messages.HttpResponseHead():
                self.each_sink(lambda sink: sink.response_head(msg))
            case messages.BodyChunk():
                self.bodies.add(msg)
                self.each_sink(lambda sink: sink.body_chunk(msg))
            case messages.WsMessage():
                self.each_sink(lambda sink: sink.ws(msg))
            case messages.WsEnd():
                self.each_sink(lambda sink: sink.ws_end(msg))
            case messages.TcpSummary():
                self.each_sink(lambda sink: sink.tcp(msg))
            case messages.DnsExchange():
                self.each_sink(lambda sink: sink.dns(msg))
            case messages.StatsSnapshot():
                record = {"type": "stats", "elapsed_s": msg.elapsed_s, "stages": msg.stages}
                self.each_sink(lambda sink: sink.stats(record))
            case messages.Notice(level="packet"):
                self.flush()  # (lines keep their order)
                print(msg.text, file=self.out, flush=True)
            case messages.Notice():
                if msg.level == "error" or config.verbose:
                    self.flush()
                    print(f"httptap: {msg.text}", file=sys.stderr, flush=True)

    def each_sink(self, call: Callable[[Sink], None]) -> None:
        for sink in self.sinks:
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001 - one output's failure must not lose the others
                self.write_failed(sink, exc)

    def flush(self) -> None:
        """What waits in the sinks is written (once per wake-up, and before a notice)."""
        self.each_sink(lambda sink: sink.flush())


def run(ctx: StageContext) -> None:
    config = ctx.config
    out = sys.stderr if config.use_stderr else sys.stdout
    state: SinkState = ctx.extra.get("state") or SinkState()
    v = state.v
    v[BUSY] = 1  # opening the outputs may block (a FIFO waits for its reader)
    *inboxes, from_supervisor = ctx.inboxes()  # one per proxy shard, then the supervisor's
    loop = Loop()
    sinks: list[Sink] = []
    delivery = Delivery(sinks, config, state, out)

    def receive(inbox: Inbox) -> None:
        v[BUSY] = 1
        delivery.receive(inbox)

    def on_input(inbox: Inbox) -> None:
        receive(inbox)
        if all(i.drained for i in inboxes):
            loop.stop()

    def idle() -> None:
        # Once per wake-up, not once per line: what this batch made is written now (so
        # lines still appear as they happen), in one write per output.
        delivery.flush()
        v[BUSY] = 0  # back to waiting for input

    def on_term(signum: int, frame: object) -> None:
        # Once: closing may itself block on a slow reader; the supervisor's SIGKILL
        # follows its grace period, and the HAR files are closed first.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stop

    signal.signal(signal.SIGTERM, on_term)
    try:
        sinks += make_sinks(config.sinks, config, ctx.extra.get("spool_dir"))
        for inbox in inboxes:
            loop.add_reader(inbox.fd, functools.partial(on_input, inbox))
        loop.add_reader(from_supervisor.fd, functools.partial(receive, from_supervisor))
        loop.after_batch = idle
        loop.run()
    except Stop:
        pass
    finally:
        v[BUSY] = 1
        # Files first: they do not depend on a reader, and the HAR is what a dying run
        # most often loses.
        for sink in sorted(sinks, key=lambda s: not isinstance(s, HarSink)):
            try:
                sink.close()
            except Stop:
                break  # the supervisor writes the HAR files from their spools
            except Exception as exc:  # noqa: BLE001 - one sink's failure must not lose the others
                delivery.write_failed(sink, exc)
