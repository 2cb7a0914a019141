"""CPU time per new connection of the proxy stage's logic, in one process.

Run:  python perf/bench_proxyconn.py --port PORT [--n 2000] [--reps 5] [--core DIR]
      python perf/bench_proxyconn.py --tls-port PORT --cafile CA.pem ...   (HTTPS)

The real :class:`httptap.stages.proxy.Proxy` on uvloop, with real rings and real
upstream sockets to a server on 127.0.0.1:PORT (nginx serving ``/small``, see
perf/README.md), driven by this script playing the tcp stage in the same loop: for each
connection ``FlowOpened``, then (on ``FlowAccept``) the request as ``FlowData``, and once
the proxy passes on the server's FIN, the command's ``FlowClosed`` (what the tcp stage
says when the command's FIN ends the flow; ``--eof``: ``FlowEof`` before it, as the tcp
stage said until the conn branch); the records for the sink are read and dropped. One
connection at a time, ``--n`` of them.

With ``--tls-port`` the script is also the command's TLS client (``ssl.SSLObject`` over
memory, trusting the proxy's CA, no session reuse: each connection a full handshake, as
``clients.py seq`` does) and the proxy intercepts as for ``--https``; the upstream must
be trusted through ``--cafile`` (set as ``SSL_CERT_FILE``, as the benchmark does).

Time is this process's CPU time (``time.process_time``), so waiting for a core on a busy
machine does not count; the server's own CPU is not in it. The script's part (the
driver's ring work, the client's TLS) is the same whichever proxy it drives, so two
versions compare by difference. Each rep runs ``--n`` connections after a warm-up; the
best rep counts. ``--core DIR`` imports ``httptap`` from DIR instead of this checkout
(its older layout, flat modules, too), to compare two versions in the same minute.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import ssl
import sys
import time
from typing import Any

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, help="plain HTTP server on 127.0.0.1")
ap.add_argument("--tls-port", type=int, help="HTTPS server on 127.0.0.1 (intercepted)")
ap.add_argument("--cafile", help="the CA that signed the HTTPS server's certificate")
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--core", help="directory that holds the httptap package to measure")
ap.add_argument("--profile", help="write a cProfile of one rep to this file")
ap.add_argument("--eof", action="store_true",
                help="send FlowEof before FlowClosed at the end of each connection")
ap.add_argument("--opcodes", action="store_true",
                help="count the bytecodes run per connection, by function (deterministic, "
                     "unlike time on a busy machine; slow)")
args = ap.parse_args()
if (args.port is None) == (args.tls_port is None):
    ap.error("give one of --port and --tls-port")
if args.cafile:
    os.environ["SSL_CERT_FILE"] = args.cafile
ROOT = os.path.abspath(args.core or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
if args.core:
    # An editable install's finder answers for modules that DIR lacks (an older layout)
    # with this checkout's files: measure DIR alone.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]


def _first(*names: str) -> Any:
    """The first of these modules that ROOT holds (the package's layout changed over time;
    looked up by file, as an editable install's finder may answer for another checkout)."""
    for name in names:
        if os.path.exists(os.path.join(ROOT, *name.split(".")) + ".py"):
            module = importlib.import_module(name)
            assert os.path.abspath(module.__file__ or "").startswith(ROOT), module
            return module
    raise ImportError(names)


messages = _first("httptap.plumbing.messages", "httptap.messages")
Ring = _first("httptap.plumbing.ring", "httptap.ring").Ring
Counters = _first("httptap.plumbing.stats", "httptap.stats").Counters
Config = _first("httptap.run.config", "httptap.config").Config
CertificateAuthority = _first("httptap.tls.ca", "httptap.ca").CertificateAuthority
HOST = _first("httptap.run.namespace", "httptap.namespace").HOST_LOOPBACK_ALIAS
from httptap.stages import proxy as proxy_stage  # noqa: E402
from httptap.stages.base import Inbox, Outbox, StageContext  # noqa: E402

_stray = [m.__file__ for name, m in list(sys.modules.items())
          if name.startswith("httptap") and not (m.__file__ or ROOT).startswith(ROOT)]
assert not _stray, f"modules from outside {ROOT}: {_stray}"
TLS = args.tls_port is not None
PORT = args.tls_port if TLS else args.port
REQUEST = (f"GET /small HTTP/1.1\r\nHost: bench.test:{PORT}\r\nUser-Agent: bench\r\n"
           "Accept-Encoding: identity\r\nConnection: close\r\n\r\n").encode()
DEBUG = bool(os.environ.get("BENCH_DEBUG"))  # print what the proxy sends to the tcp stage
WARMUP = int(os.environ.get("BENCH_WARMUP", "200"))


class Driver:
    """The tcp stage's side of the rings, and the command's HTTP (and TLS) client."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rings = [Ring(4 << 20, label=f"bench{i}") for i in range(3)]
        config = Config(command=("true",), http_ports=frozenset({PORT} if not TLS else ()),
                        https_ports=frozenset({PORT} if TLS else ()))
        self.ca = CertificateAuthority.ephemeral()
        ctx = StageContext("proxy", config, Counters(), [self.rings[0]],
                           [self.rings[1], self.rings[2]], {"ca": self.ca})
        self.proxy = proxy_stage.Proxy(ctx, loop)
        loop.add_reader(self.proxy.from_tcp.fd, self.proxy.on_input)
        self.to_proxy = Outbox(self.rings[0], Counters())
        self.from_proxy = Inbox(self.rings[1], Counters())
        self.sink = Inbox(self.rings[2], Counters())
        loop.add_reader(self.from_proxy.fd, self.on_proxy)
        loop.add_reader(self.sink.fd, self.sink.receive)
        if TLS:
            self.client_ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        self.flow = 0
        self.left = 0
        self.done: asyncio.Future[None] | None = None
        self.tls: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.request_sent = False

    def run(self, n: int) -> None:
        self.left = n
        self.done = self.loop.create_future()
        self.open()
        self.loop.run_until_complete(self.done)

    def send(self, msg: Any) -> None:
        self.to_proxy.send(msg)
        self.to_proxy.flush()

    def open(self) -> None:
        self.flow += 1
        self.send(messages.FlowOpened(self.flow, "10.1.1.100", 30000 + self.flow % 30000,
                                      HOST, PORT))

    def on_proxy(self) -> None:
        for msg in self.from_proxy.receive():
            if DEBUG:
                print(msg, file=sys.stderr)
            kind = type(msg)
            if kind is messages.FlowAccept:
                if TLS:
                    self.incoming = ssl.MemoryBIO()
                    self.outgoing = ssl.MemoryBIO()
                    self.request_sent = False
                    self.tls = self.client_ctx.wrap_bio(self.incoming, self.outgoing,
                                                        server_hostname="bench.test")
                    self._tls_step()
                else:
                    self.send(messages.FlowData(msg.flow, REQUEST))
            elif kind is messages.FlowData:
                if TLS:
                    self.incoming.write(msg.data)
                    self._tls_step()
            elif kind is messages.FlowEof:
                if args.eof:
                    self.to_proxy.send(messages.FlowEof(msg.flow))
                self.to_proxy.send(messages.FlowClosed(msg.flow))
                self.to_proxy.flush()
                self.left -= 1
                if self.left > 0:
                    self.open()
                elif self.done is not None and not self.done.done():
                    self.done.set_result(None)
            elif kind in (messages.FlowRefuse, messages.FlowReset):
                raise SystemExit(f"the proxy refused or reset the flow: {msg}")

    def _tls_step(self) -> None:
        """Move the command's TLS client on: handshake, then the request, then read."""
        tls = self.tls
        assert tls is not None
        if not self.request_sent:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                tls.write(REQUEST)
                self.request_sent = True
        if self.request_sent:
            try:
                while tls.read(65536):
                    pass
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
        out = self.outgoing.read()
        if out:
            self.send(messages.FlowData(self.flow, out))


def count_opcodes(driver: Driver, n: int) -> None:
    """Bytecodes executed per connection, per function (exclusive), over ``n`` connections:
    a measure of interpreted work that the machine's load does not change."""
    import collections

    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.replace(ROOT + '/', '')}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    try:
        driver.run(n)
    finally:
        sys.settrace(None)
    total = sum(counts.values())
    print(f"{total / n:.0f} bytecodes per connection")
    for name, count in counts.most_common(200):
        print(f"{count / n:8.1f}  {name}")


def main() -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    driver = Driver(loop)
    driver.run(WARMUP)
    if args.opcodes:
        count_opcodes(driver, args.n)
        return
    best = float("inf")
    for rep in range(args.reps):
        if args.profile and rep == 0:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            driver.run(args.n)
            prof.disable()
            prof.dump_stats(args.profile)
            continue
        t0 = time.process_time()
        driver.run(args.n)
        spent = time.process_time() - t0
        best = min(best, spent)
        print(f"rep {rep}: {spent / args.n * 1e6:.1f} us per connection", flush=True)
    print(f"best: {best / args.n * 1e6:.1f} us per connection "
          f"({'https' if TLS else 'http'}, {args.core or 'this checkout'})")
    for ring in driver.rings:
        ring.release()


main()
