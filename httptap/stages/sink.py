"""The sink stage: the only stage that writes the user's output.

Consumes one ring per proxy shard and hands each event to every configured sink
(``httptap.sinks``: terminal, ndjson, HAR); body chunks are joined per exchange (at most
``--max-body-size`` each) and handed over with the exchange's response. Notices (errors,
and information with ``--verbose``) go to stderr. Exits after every input has sent
``Drain``; the sinks are closed (files written) on every way out, including SIGTERM from
the supervisor.
"""

from __future__ import annotations

import functools
import signal
import sys

from ..plumbing import messages
from ..sinks import make_sinks
from ..sinks.bodies import BodyAssembler
from .base import Inbox, Loop, StageContext


# The sink method each event goes to (HttpResponse: with its bodies, see deliver).
SINK_METHOD: dict[type, str] = {
    messages.HttpRequest: "request", messages.TcpSummary: "tcp", messages.DnsExchange: "dns",
    messages.WsMessage: "ws", messages.WsEnd: "ws_end",
    messages.HttpResponseHead: "response_head",
}


def run(ctx: StageContext) -> None:
    config = ctx.config
    out = sys.stderr if config.use_stderr else sys.stdout
    sinks = make_sinks(config.sinks, config)
    *inboxes, from_supervisor = ctx.inboxes()  # one per proxy shard, then the supervisor's
    loop = Loop()
    bodies = BodyAssembler(config.max_body_size)

    def deliver(msg: messages.Msg) -> None:
        kind = type(msg)
        method = SINK_METHOD.get(kind)
        if method is not None:
            for sink in sinks:
                getattr(sink, method)(msg)
        elif kind is messages.BodyChunk:
            bodies.add(msg)  # type: ignore[arg-type]
            for sink in sinks:
                sink.body_chunk(msg)  # type: ignore[arg-type]
        elif kind is messages.HttpResponse:
            exchange_bodies = bodies.take(msg)  # type: ignore[arg-type]
            for sink in sinks:
                sink.response(msg, exchange_bodies)  # type: ignore[arg-type]
        elif kind is messages.StatsSnapshot:
            record = {"type": "stats", "elapsed_s": msg.elapsed_s, "stages": msg.stages}  # type: ignore[attr-defined]
            for sink in sinks:
                sink.stats(record)
        elif kind is messages.Notice:
            if msg.level == "packet":  # type: ignore[attr-defined]
                print(msg.text, file=out, flush=True)  # type: ignore[attr-defined]
            elif msg.level == "error" or config.verbose:  # type: ignore[attr-defined]
                print(f"httptap: {msg.text}", file=sys.stderr, flush=True)  # type: ignore[attr-defined]

    def on_input(inbox: Inbox) -> None:
        for msg in inbox.receive():
            deliver(msg)
        if all(i.drained for i in inboxes):
            loop.stop()

    def on_supervisor(inbox: Inbox) -> None:
        for msg in inbox.receive():
            deliver(msg)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    # The supervisor ends a stuck pipeline with SIGTERM first: files still get written.
    signal.signal(signal.SIGTERM, on_term)
    for inbox in inboxes:
        loop.add_reader(inbox.fd, functools.partial(on_input, inbox))
    loop.add_reader(from_supervisor.fd, functools.partial(on_supervisor, from_supervisor))
    try:
        loop.run()
    finally:
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - one sink's failure must not lose the others
                print(f"httptap: writing output failed: {exc}", file=sys.stderr, flush=True)
