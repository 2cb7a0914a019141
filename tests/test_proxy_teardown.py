"""The proxy stage at the end of a connection, in one process (real rings, a real upstream
socket on loopback): a response that ends the connection waits one turn of the loop for
the server's FIN, so that the data and FlowEof reach the tcp stage together: the tcp
stage takes both in one read of its ring (one wake-up, one packet to the command)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvloop

from httptap.plumbing import messages
from httptap.plumbing.ring import Ring
from httptap.plumbing.stats import Counters
from httptap.run.config import Config
from httptap.stages import proxy as proxy_stage
from httptap.stages.base import Inbox, Outbox, StageContext
from httptap.tls.ca import CertificateAuthority

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
STEPS = 200  # turns of the loop allowed for each step (each a poll with no wait)


# The stage runs on uvloop; asyncio's own loop orders a turn differently (I/O callbacks
# queued behind the ready ones), and the rule holds on both.
LOOPS = pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop])


def _signals(ring: Ring) -> int:
    """How many times the producer signalled the ring's data eventfd since the last call."""
    try:
        return os.eventfd_read(ring.data_fd)
    except BlockingIOError:
        return 0


def _batches_to_tcp(response: bytes, new_loop) -> list[tuple[int, list[type]]]:  # type: ignore[no-untyped-def]
    """One connection through the proxy; the upstream server answers ``response`` and its
    FIN together (both already in the proxy's socket when the loop next runs). Returns,
    for each read of the ring towards the tcp stage that found messages, the wake-up
    signals the proxy gave for them and their types. (Plain data may be read straight
    into the ring rather than written to it, so signals are what is counted: each is a
    wake-up of the tcp stage, and a turn of its loop that sends what it has.)"""
    rings = [Ring(1 << 16, label=f"test{i}") for i in range(3)]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    loop = new_loop()
    server = None
    try:
        config = Config(command=("true",), http_ports=frozenset({port}))
        ctx = StageContext("proxy", config, Counters(), [rings[0]], [rings[1], rings[2]],
                           {"ca": CertificateAuthority.ephemeral()})
        proxy = proxy_stage.Proxy(ctx, loop)
        batches: list[tuple[int, list[type]]] = []
        to_proxy = Outbox(rings[0], Counters())
        from_proxy = Inbox(rings[1], Counters())
        seen: list[messages.Message] = []

        def turn_until(done) -> None:  # type: ignore[no-untyped-def]
            for _ in range(STEPS):
                proxy.on_input()
                loop.run_until_complete(asyncio.sleep(0))
                signals = _signals(rings[1])
                batch = from_proxy.receive()
                if batch:
                    batches.append((signals, [type(msg) for msg in batch]))
                seen.extend(batch)
                if done():
                    return
            raise AssertionError(f"not done; seen {seen}")

        to_proxy.send(messages.FlowOpened(1, "10.1.1.100", 40000, "127.0.0.1", port))
        to_proxy.flush()
        turn_until(lambda: messages.FlowAccept(1) in seen)
        server, _ = listener.accept()
        to_proxy.send(messages.FlowData(1, REQUEST))
        to_proxy.flush()
        got = b""
        server.settimeout(0)
        for _ in range(STEPS):
            proxy.on_input()
            loop.run_until_complete(asyncio.sleep(0))
            try:
                got += server.recv(4096)
            except BlockingIOError:
                pass
            if got == REQUEST:
                break
        assert got == REQUEST
        server.sendall(response)  # the answer and the FIN, with the loop not running
        server.shutdown(socket.SHUT_WR)
        turn_until(lambda: messages.FlowEof(1) in seen)
        return batches
    finally:
        if server is not None:
            server.close()
        listener.close()
        loop.close()
        for ring in rings:
            ring.release()


@LOOPS
def test_the_last_response_and_the_servers_fin_go_to_the_tcp_stage_together(new_loop):  # type: ignore[no-untyped-def]
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    batches = _batches_to_tcp(response, new_loop)
    assert batches == [(1, [messages.FlowAccept]), (1, [messages.FlowData, messages.FlowEof])]


@LOOPS
def test_a_keep_alive_response_is_not_held(new_loop):  # type: ignore[no-untyped-def]
    """Without a close the server's FIN is not expected: the data goes at once (here the
    FIN happens to follow anyway, and is signalled on its own)."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    batches = _batches_to_tcp(response, new_loop)
    assert batches == [(1, [messages.FlowAccept]), (2, [messages.FlowData, messages.FlowEof])]
