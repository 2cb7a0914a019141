"""The proxy stage's relay carries out every command a flow core can queue, each the way
``flow.commands`` says (a fake upstream transport and a fake proxy stage record what it
did)."""

from __future__ import annotations

import asyncio
import typing
from typing import Any

from httptap.flow import commands as fc
from httptap.flow.core import FlowCore
from httptap.plumbing import messages
from httptap.stages.relay import Relay


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.calls.append(("write_eof",))

    def close(self) -> None:
        self.calls.append(("close",))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort",))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append(("pause_reading",))

    def resume_reading(self) -> None:
        self.calls.append(("resume_reading",))

    def get_extra_info(self, name: str) -> None:
        return None


class FakeLink:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.output_blocked = False
        self.tcp_blocked = False
        self.sent: list[tuple[str, Any]] = []
        self.forgotten: list[int] = []
        self.flushes_after_poll = 0

    def send_tcp(self, msg: messages.Msg) -> None:
        self.sent.append(("tcp", msg))

    def send_tcp_data(self, flow: int, data: bytes | memoryview) -> None:
        self.sent.append(("tcp", messages.FlowData(flow, bytes(data))))

    def send_sink(self, msg: messages.Msg) -> None:
        self.sent.append(("sink", msg))

    def forget(self, flow: int) -> None:
        self.forgotten.append(flow)

    def flush_after_poll(self) -> None:
        self.flushes_after_poll += 1


def _relay(loop: asyncio.AbstractEventLoop) -> tuple[Relay, FakeLink, FakeTransport]:
    settings = fc.FlowSettings(
        http_ports=frozenset({80}), https_ports=frozenset({443}), capture_bodies=False,
        stream_bodies=False, max_body_size=1 << 20, verbose=False,
        new_exchange_id=lambda: 1, upstream_context=lambda alpn: None,
        server_context=lambda name, alpn: None)
    core = FlowCore(settings, messages.FlowOpened(5, "10.1.1.100", 40000, "192.0.2.1", 80), 0.0)
    link = FakeLink(loop)
    relay = Relay(link, core)
    transport = FakeTransport()
    relay.transport = transport  # type: ignore[assignment]
    return relay, link, transport


def _run(relay: Relay, commands: list[fc.Command]) -> None:
    relay.core.commands = list(commands)
    relay.execute()


def test_every_command_is_carried_out():
    loop = asyncio.new_event_loop()
    try:
        relay, link, transport = _relay(loop)
        notice = messages.Notice("info", "hello")
        every: list[fc.Command] = [
            fc.SendToCommand(b"down"), fc.SendUpstream(b"up"), fc.Report(notice),
            fc.Credit(70000), fc.FIN_TO_COMMAND, fc.ResetCommand("why"),
            fc.PAUSE_UPSTREAM, fc.RESUME_UPSTREAM, fc.SetTimer(5.0), fc.SetTimer(None),
            fc.FIN_UPSTREAM, fc.CLOSE_UPSTREAM, fc.FLOW_OVER, fc.AWAIT_UPSTREAM_EOF]
        # The list covers the Command union: a new command must be added here (and to
        # Relay.execute).
        assert {type(c) for c in every} | {fc.AbortUpstream} == set(typing.get_args(fc.Command))
        _run(relay, every)
        assert link.sent == [
            ("tcp", messages.FlowData(5, b"down")), ("sink", notice),
            ("tcp", messages.FlowAcked(5, 70000)), ("tcp", messages.FlowEof(5)),
            ("tcp", messages.FlowReset(5, "why"))]
        assert transport.calls == [("write", b"up"), ("pause_reading",), ("resume_reading",),
                                   ("write_eof",), ("close",)]
        assert relay.timer is None  # SetTimer(None) cancelled the 5 s timer
        assert link.forgotten == [5]
        assert link.flushes_after_poll == 1

        relay, link, transport = _relay(loop)
        _run(relay, [fc.SetTimer(5.0)])
        assert relay.timer is not None
        _run(relay, [fc.ABORT_UPSTREAM, fc.SendUpstream(b"late"), fc.CLOSE_UPSTREAM])
        assert transport.calls == [("abort",)]  # nothing is written to a closing socket
    finally:
        loop.close()
