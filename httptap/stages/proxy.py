"""The proxy stage (placeholder for the foundation): passes Drain from tcp to the sink."""

from __future__ import annotations

from .. import messages
from .base import Loop, StageContext


def run(ctx: StageContext) -> None:
    (from_tcp,) = ctx.inboxes()
    to_tcp, to_sink = ctx.outboxes()
    loop = Loop()

    def on_input() -> None:
        from_tcp.receive()
        if from_tcp.drained:
            to_sink.send(messages.Drain())
            to_sink.flush_blocking(timeout=5.0)
            loop.stop()

    loop.add_reader(from_tcp.fd, on_input)
    loop.run()
