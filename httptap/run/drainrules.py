"""The drain's two rules, pure (``run.drain`` applies them while the stages drain):
when a slow pipeline has become a stuck one, and when a proxy has nothing to drain."""

from __future__ import annotations


class ProgressWatch:
    """Tells a slow pipeline from a stuck one during the drain.

    ``mark`` is anything that changes when the pipeline moves (the stages' counters);
    ``busy`` says the sink is working or blocked on its output's reader, which is
    progress too, however long it takes. Stalled: ``patience`` seconds with neither."""

    def __init__(self, patience: float, mark: object, now: float) -> None:
        self.patience = patience
        self.mark = mark
        self.moved = now

    def stalled(self, mark: object, busy: bool, now: float) -> bool:
        if mark != self.mark or busy:
            self.mark, self.moved = mark, now
            return False
        return now - self.moved >= self.patience


def proxy_is_idle(tcp_sent: int, proxy_received: int, proxy_sent: int) -> bool:
    """Whether a proxy has nothing to drain: its tcp shard (finished) sent it one record,
    the Drain, and the proxy has neither taken nor sent anything yet."""
    return tcp_sent == 1 and proxy_received == 0 and proxy_sent == 0
