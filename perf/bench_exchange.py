"""CPU time per keep-alive HTTP/1.1 exchange in the proxy stage and in the sink, in one process.

Run:  python perf/bench_exchange.py [--reps N] [--flows N] [--core DIR] [--profile FILE]
                                   [--opcodes]

No network, no tcp stage, no other process: the proxy stage's real ``Proxy`` on a uvloop
loop with real rings (tcp -> proxy, proxy -> tcp, proxy -> sink), ``--flows`` keep-alive
flows (default 50, as ``wrk -c50``) whose upstream sockets are fake transports. One round:

  proxy   every flow's request (a wrk-like ``GET /small``) arrives as ``FlowData`` in the
          tcp ring in one batch; ``Proxy.on_input``; the loop turns once (the flush);
          every flow's upstream gets its response (nginx's head and a 1 KiB body) through
          ``Relay.buffer_updated``; the loop turns once. µs per exchange: the decoding,
          reporting, messages, ring writes and the loop's own turns; not the socket
          syscalls nor the eventfd wake-ups (what a ring's consumer must be told).
  sink    what the proxy wrote to the sink ring, decoded and delivered as the sink stage
          does (``stages.sink.Delivery``) to a terminal sink and an ndjson sink writing to
          /dev/null (``--sink ndjson:/dev/null``), one flush per round. µs per exchange.

What the proxy sent to the tcp stage is read and thrown away (untimed). Each case runs
``--reps`` times; the best run counts. Time is the process's CPU time, so waiting for a
core on a busy machine does not count. ``--core DIR`` imports ``httptap`` from DIR, to
compare two versions in the same minute; ``--profile FILE`` writes cProfile stats of the
proxy part. ``--opcodes`` counts instead the bytecodes run per exchange in each part, by
function: interpreted work only (compiled cores and C run none), but deterministic, so
it compares versions on a machine too busy for timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--rounds", type=int, default=400)
ap.add_argument("--flows", type=int, default=50)
ap.add_argument("--core", help="directory that holds the httptap package to measure")
ap.add_argument("--profile", help="write cProfile stats of the proxy part here")
ap.add_argument("--opcodes", action="store_true",
                help="count the bytecodes per exchange of each part, by function")
args = ap.parse_args()
sys.path.insert(0, args.core or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import uvloop  # noqa: E402

from httptap.plumbing import messages  # noqa: E402
from httptap.plumbing.ring import Ring  # noqa: E402
from httptap.plumbing.stats import Counters  # noqa: E402
from httptap.run.config import Config  # noqa: E402
from httptap.sinks.ndjson import NdjsonSink  # noqa: E402
from httptap.sinks.terminal import TerminalSink  # noqa: E402
from httptap.stages import proxy as proxy_stage  # noqa: E402
from httptap.stages import relay as relay_mod  # noqa: E402
from httptap.stages.base import Inbox, StageContext  # noqa: E402
from httptap.tls.ca import CertificateAuthority  # noqa: E402

REQUEST = b"GET /small HTTP/1.1\r\nHost: host.httptap.local:18105\r\n\r\n"
BODY = b"x" * 1024
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 22:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
            b"Last-Modified: Tue, 01 Dec 2026 21:00:00 GMT\r\nConnection: keep-alive\r\n"
            b'ETag: "6928a0a0-400"\r\nAccept-Ranges: bytes\r\n\r\n') + BODY


class FakeTransport:
    """An upstream socket that takes every write."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def deliverer(sinks: list) -> object:
    """The sink stage's delivery: ``stages.sink.Delivery`` when this version has it."""
    from httptap.stages import sink as sink_stage
    delivery = getattr(sink_stage, "Delivery", None)
    if delivery is not None:
        return delivery(sinks, Config(command=("true",)))
    return None


class Opcodes:
    """Bytecodes run while ``part`` is set, by part and function (``--opcodes``)."""

    def __init__(self) -> None:
        import collections
        self.counts: dict[str, collections.Counter[str]] = {
            "proxy": collections.Counter(), "sink": collections.Counter()}
        self.part: str | None = None

    def tracer(self, frame: object, event: str, arg: object) -> object:
        frame.f_trace_opcodes = True  # type: ignore[attr-defined]
        if event == "opcode" and self.part is not None:
            code = frame.f_code  # type: ignore[attr-defined]
            self.counts[self.part][f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return self.tracer

    def report(self, exchanges: int) -> None:
        for part, counts in self.counts.items():
            print(f"{part}: {sum(counts.values()) / exchanges:.0f} bytecodes per exchange")
            for name, count in counts.most_common(25):
                print(f"{count / exchanges:8.1f}  {name}")


def run_once(profile: object | None, opcodes: Opcodes | None = None) -> tuple[float, float, int]:
    rings = [Ring(4 << 20, label=f"b{i}") for i in range(3)]  # tcp->proxy, ->tcp, ->sink
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    ctx = StageContext("proxy", Config(command=("true",)), Counters(), [rings[0]],
                       [rings[1], rings[2]], {"ca": CertificateAuthority.ephemeral()})
    proxy = proxy_stage.Proxy(ctx, loop)
    relays = []
    for flow in range(1, args.flows + 1):
        opened = messages.FlowOpened(flow, "10.1.1.100", 40000 + flow, "169.254.77.65", 18105)
        relay = relay_mod.Relay(proxy, proxy_stage.FlowCore(proxy.flow_settings, opened,
                                                            time.time()))
        relay.connection_made(FakeTransport())  # type: ignore[arg-type]
        proxy.relays[flow] = relay
        relays.append(relay)
    from_tcp = rings[0]
    tcp_in = Inbox(rings[1], Counters())
    sink_ring = rings[2]
    requests = [messages.encode(messages.FlowData(r.flow, REQUEST)) for r in relays]
    read_buffer = relay_mod._READ_BUFFER
    n = len(RESPONSE)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    sinks = [TerminalSink(devnull, batched=True), NdjsonSink(os.devnull)]
    delivery = deliverer(sinks)
    from httptap.sinks.bodies import BodyAssembler
    bodies = BodyAssembler(1 << 20)

    def deliver_old(msg: messages.Message) -> None:  # the sink stage before Delivery existed
        if type(msg) is messages.HttpRequest:
            for s in sinks:
                s.request(msg)
        elif type(msg) is messages.HttpResponse:
            b = bodies.take(msg)
            for s in sinks:
                s.response(msg, b)

    async def flush_turn() -> None:
        await asyncio.sleep(0)

    proxy_cpu = sink_cpu = 0.0
    exchanges = 0
    clock = time.process_time
    # The sink's wake-up never comes within the rounds (each round's messages are read
    # from the ring directly): a busy proxy, whose answers come before the next wake-up
    # (SINK_WAKE_DELAY), so each request goes with its response where the version does
    # that (HttpExchange). Deterministic, whatever the timing (--opcodes runs slowly).
    proxy.sink_woken = loop.time() + 1e6
    if opcodes is not None:
        sys.settrace(opcodes.tracer)  # type: ignore[arg-type]
    for _ in range(args.rounds):
        from_tcp.try_put_many(requests)
        if opcodes is not None:
            opcodes.part = "proxy"
        t0 = clock()
        if profile is not None:
            profile.enable()  # type: ignore[attr-defined]
        proxy.on_input()
        loop.run_until_complete(flush_turn())
        for relay in relays:
            read_buffer[:n] = RESPONSE
            relay.buffer_updated(n)
        loop.run_until_complete(flush_turn())
        if profile is not None:
            profile.disable()  # type: ignore[attr-defined]
        t1 = clock()
        proxy_cpu += t1 - t0
        if opcodes is not None:
            opcodes.part = None
        tcp_in.receive()
        if opcodes is not None:
            opcodes.part = "sink"
        t2 = clock()
        if delivery is not None:
            delivery.receive(Inbox(sink_ring, Counters()))  # type: ignore[attr-defined]
            delivery.flush()  # type: ignore[attr-defined]
        else:
            for msg in Inbox(sink_ring, Counters()).receive():
                deliver_old(msg)
            for s in sinks:
                s.flush()
        sink_cpu += clock() - t2
        if opcodes is not None:
            opcodes.part = None
        exchanges += len(relays)
    sys.settrace(None)
    for s in sinks:
        s.close()
    devnull.close()
    loop.close()
    for r in rings:
        r.release()
    return proxy_cpu, sink_cpu, exchanges


def main() -> None:
    if args.opcodes:
        run_once(None)  # warm-up: what the first exchanges do once (imports, caches)
        opcodes = Opcodes()
        _, _, n = run_once(None, opcodes)
        opcodes.report(n)
        return
    profile = None
    if args.profile:
        import cProfile
        profile = cProfile.Profile()
    best_proxy = best_sink = float("inf")
    for _ in range(args.reps):
        proxy_cpu, sink_cpu, n = run_once(profile)
        best_proxy = min(best_proxy, proxy_cpu / n * 1e6)
        best_sink = min(best_sink, sink_cpu / n * 1e6)
    print(f"proxy {best_proxy:6.1f} µs/exchange   sink {best_sink:6.1f} µs/exchange "
          f"({args.flows} flows, best of {args.reps})")
    if profile is not None:
        profile.dump_stats(args.profile)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
