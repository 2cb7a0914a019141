"""The sink stage: the only stage that writes the user's output.

Consumes one ring per proxy shard and formats what arrives: notices (errors, verbose
information) now; HTTP exchanges, DNS and tcp summaries as the decoders produce them.
Exits after every input has sent ``Drain``, with everything flushed.
"""

from __future__ import annotations

import sys

from .. import messages
from .base import Inbox, Loop, StageContext


def run(ctx: StageContext) -> None:
    out = sys.stderr if ctx.config.use_stderr else sys.stdout
    inboxes = ctx.inboxes()
    loop = Loop()

    def on_input(inbox: Inbox) -> None:
        for msg in inbox.receive():
            if type(msg) is messages.Notice:
                if msg.level == "error" or ctx.config.verbose:
                    print(f"httptap: {msg.text}", file=sys.stderr if msg.level == "error" else out)
        out.flush()
        if all(i.drained for i in inboxes):
            loop.stop()

    for inbox in inboxes:
        loop.add_reader(inbox.fd, lambda inbox=inbox: on_input(inbox))
    loop.run()
    out.flush()
