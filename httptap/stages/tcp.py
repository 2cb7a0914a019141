"""The tcp stage (placeholder for the foundation): counts the packets the command sends.

The userspace TCP/IP stack replaces this loop; until then packets are counted and dropped,
and Drain is passed on so the pipeline shuts down in order.
"""

from __future__ import annotations

from .. import messages
from ..stats import PACKETS_IN
from .base import Loop, StageContext


def run(ctx: StageContext) -> None:
    from_tun, from_proxy = ctx.inboxes()
    to_tun, to_proxy = ctx.outboxes()
    counters = ctx.counters.v
    loop = Loop()

    def on_packets() -> None:
        for msg in from_tun.receive():
            if type(msg) is messages.Packets:
                counters[PACKETS_IN] += len(msg.packets)
        if from_tun.drained:
            to_proxy.send(messages.Drain())
            to_proxy.flush_blocking(timeout=5.0)
            loop.stop()

    def on_proxy() -> None:
        from_proxy.receive()

    loop.add_reader(from_tun.fd, on_packets)
    loop.add_reader(from_proxy.fd, on_proxy)
    loop.run()
