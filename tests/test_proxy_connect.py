"""The proxy stage's upstream connect, in one process (real rings, a stubbed connect).

A connect that times out is a silence the command experiences itself (its own connect
times out); httptap says so only with ``-v``, or a SYN flood would print one line per SYN.
"""

from __future__ import annotations

import asyncio

import pytest

from httptap.plumbing import messages
from httptap.tls.ca import CertificateAuthority
from httptap.run.config import Config
from httptap.plumbing.ring import Ring
from httptap.stages import proxy as proxy_stage
from httptap.stages.base import Inbox, StageContext
from httptap.plumbing.stats import Counters


def _timed_out_connects(verbose: bool, count: int,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[list[messages.Msg], list[messages.Msg]]:
    """Run ``count`` upstream connects that never answer; what went to tcp and to the sink."""
    monkeypatch.setattr(proxy_stage, "CONNECT_TIMEOUT", 0.0)  # time out at the first wait
    rings = [Ring(1 << 16, label=f"test{i}") for i in range(3)]
    loop = asyncio.new_event_loop()
    try:
        ctx = StageContext("proxy", Config(command=("true",), verbose=verbose), Counters(),
                           [rings[0]], [rings[1], rings[2]],
                           {"ca": CertificateAuthority.ephemeral()})
        proxy = proxy_stage.Proxy(ctx, loop)

        async def never_answers(*args: object, **kwargs: object) -> None:
            await asyncio.Event().wait()

        loop.create_connection = never_answers  # type: ignore[method-assign]

        async def connect_all() -> None:
            for flow in range(1, count + 1):
                proxy._start_connect(messages.FlowOpened(
                    flow, "10.1.1.100", 40000 + flow, "10.77.1.2", 81))
            await asyncio.gather(*(task for task, _ in proxy.connecting.values()))
            await asyncio.sleep(0)  # the flush scheduled by the last message
            assert not proxy.connecting and not proxy.timed_out and proxy.connect_sweep is None

        loop.run_until_complete(connect_all())
        proxy.to_sink.flush()
        to_tcp = Inbox(rings[1], Counters()).receive()
        to_sink = Inbox(rings[2], Counters()).receive()
        return to_tcp, to_sink
    finally:
        loop.close()
        for ring in rings:
            ring.release()


def test_connect_timeouts_are_silent_without_verbose(monkeypatch: pytest.MonkeyPatch):
    to_tcp, to_sink = _timed_out_connects(False, 50, monkeypatch)
    assert to_tcp == [messages.FlowRefuse(flow, "upstream connect timed out", reset=False)
                      for flow in range(1, 51)]
    assert [m for m in to_sink if isinstance(m, messages.Notice)] == []


def test_connect_timeouts_are_named_with_verbose(monkeypatch: pytest.MonkeyPatch):
    _, to_sink = _timed_out_connects(True, 1, monkeypatch)
    notices = [m for m in to_sink if isinstance(m, messages.Notice)]
    assert [n.text for n in notices] == ["connect to 10.77.1.2:81 timed out"]


def test_one_timer_times_out_only_the_connects_left_pending(monkeypatch: pytest.MonkeyPatch):
    """One sweep for every pending connect: a connect that succeeded, or whose flow ended,
    is not reported as timed out; the one left pending is."""
    monkeypatch.setattr(proxy_stage, "CONNECT_TIMEOUT", 0.01)
    rings = [Ring(1 << 16, label=f"test{i}") for i in range(3)]
    loop = asyncio.new_event_loop()
    try:
        ctx = StageContext("proxy", Config(command=("true",)), Counters(),
                           [rings[0]], [rings[1], rings[2]],
                           {"ca": CertificateAuthority.ephemeral()})
        proxy = proxy_stage.Proxy(ctx, loop)

        async def stub(factory: object, host: str, port: int) -> None:
            if port != 83:  # 81 and 82 never answer
                await asyncio.Event().wait()

        loop.create_connection = stub  # type: ignore[method-assign,assignment]

        async def connect_all() -> None:
            for flow in (1, 2, 3):
                proxy._start_connect(messages.FlowOpened(flow, "10.1.1.100", 40000 + flow,
                                                         "10.77.1.2", 80 + flow))
            ended = proxy.connecting[2][0]
            tasks = [task for task, _ in proxy.connecting.values()]
            proxy._end(2, reset=True)  # the command gave up on flow 2
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # the flush scheduled by the last message
            assert ended.cancelled()

        loop.run_until_complete(connect_all())
        assert Inbox(rings[1], Counters()).receive() == [
            messages.FlowAccept(3),
            messages.FlowRefuse(1, "upstream connect timed out", reset=False)]
        assert not proxy.connecting and not proxy.timed_out and proxy.connect_sweep is None
    finally:
        loop.close()
        for ring in rings:
            ring.release()
