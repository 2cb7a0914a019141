"""Stand-ins for the stages' plumbing in tests that drive a stage's core in one process."""

from __future__ import annotations

from httptap.plumbing import messages as m


class FakeOutbox:
    """What a stage's Outbox looks like to its code (``OutboxLike``): ``send`` collects
    messages, ``take`` hands them over."""

    def __init__(self) -> None:
        self.sent: list[m.Msg] = []
        self.lazy: list[m.Msg] = []  # those of them sent with send_lazy

    def send(self, msg: m.Msg) -> None:
        self.sent.append(msg)

    def send_lazy(self, msg: m.Msg) -> None:
        self.sent.append(msg)
        self.lazy.append(msg)

    def send_data(self, flow: int, data: bytes) -> None:
        self.sent.append(m.FlowData(flow, bytes(data)))

    def take(self) -> list[m.Msg]:
        out, self.sent = self.sent, []
        return out
