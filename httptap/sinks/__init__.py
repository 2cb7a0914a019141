"""Output formats: what the sink stage does with each proxy event.

Role in the pipeline: the sink stage (``httptap.stages.sink``) owns the loop and the
rings; for every ``HttpRequest``, ``HttpResponse``, ``TcpSummary``, ``DnsExchange``,
``WsMessage`` and ``WsEnd`` it receives it calls the matching method on each sink that
:func:`make_sinks` built from the ``--sink`` options (a response comes with its
exchange's bodies, joined from the ``BodyChunk`` messages before it by
``bodies.BodyAssembler``), and calls ``close()`` exactly once on every way out. The sinks
only format and write; they never read rings or the clock.

- ``terminal``  :class:`~.terminal.TerminalSink`, the human-readable lines (default).
- ``ndjson``    :class:`~.ndjson.NdjsonSink`, one JSON object per line (schema in its docstring).
- ``har``       :class:`~.har.HarSink`, a HAR 1.2 file written atomically at close from
                entries spooled as they complete (``spool_dir``: the run directory).
- ``common``    what they share: timings, content types, body text, addresses.
- ``bodies``    :class:`~.bodies.BodyAssembler`: body chunks joined per exchange, bounded.

Each sink pairs a response with its request by ``exchange`` id and forgets the request
once the response is handled.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol

from ..plumbing.messages import (BodyChunk, DnsExchange, HttpRequest, HttpResponse, HttpResponseHead,
                        TcpSummary, WsEnd, WsMessage)
from .bodies import NO_BODIES, Bodies
from .har import HarSink, spool_path
from .ndjson import NdjsonSink
from .terminal import TerminalSink

if TYPE_CHECKING:
    from ..run.config import Config

__all__ = ["Sink", "make_sinks", "TerminalSink", "NdjsonSink", "HarSink"]


class Sink(Protocol):
    def request(self, req: HttpRequest) -> None:
        """A request head was read."""

    def response_head(self, head: HttpResponseHead) -> None:
        """With ``--body``: a response whose body streams began (its ``HttpResponse``
        follows when it is complete)."""

    def body_chunk(self, chunk: BodyChunk) -> None:
        """The next piece of a captured body, as it arrives (the terminal prints streamed
        text bodies from these; everything else takes bodies whole with ``response``)."""

    def response(self, resp: HttpResponse, bodies: Bodies = NO_BODIES) -> None:
        """Its response completed (``resp.exchange == req.exchange``), or the exchange
        ended without one (``status == 0``, ``error`` set); ``bodies``: what was captured
        of its request and response bodies."""

    def tcp(self, summary: TcpSummary) -> None:
        """A connection closed without being decoded as anything else."""

    def dns(self, dns: DnsExchange) -> None:
        """A DNS query was answered."""

    def ws(self, msg: WsMessage) -> None:
        """A WebSocket message, after its exchange's 101 (``msg.exchange``)."""

    def ws_end(self, end: WsEnd) -> None:
        """That WebSocket is over, or is no longer decoded; its ping and pong counts."""

    def stats(self, table: dict[str, Any]) -> None:
        """The ``--stats`` table (only ndjson writes it; the others ignore it)."""

    def flush(self) -> None:
        """The sink stage has delivered what one wake-up brought: write what waits (the
        terminal and ndjson write once per wake-up, not once per line)."""

    def close(self) -> None:
        """Flush, or write the file; called on every way out. Safe to call twice."""


def make_sinks(specs: tuple[str, ...], config: Config,
               spool_dir: str | None = None) -> list[Sink]:
    """Build the sinks named by ``--sink`` specs: ``terminal``, ``ndjson`` (stdout),
    ``ndjson:PATH`` (``ndjson:-`` is stdout too), ``har:PATH``. Raises ValueError for an unknown spec, OSError when a
    file cannot be opened (closing the sinks already built). ``spool_dir``: where HAR
    sinks spool their entries (``har.spool_path``), else anonymous temporary files."""
    sinks: list[Sink] = []
    try:
        for index, spec in enumerate(specs):
            spool = spool_path(spool_dir, index) if spool_dir is not None else None
            sinks.append(_make_sink(spec, config, spool))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _make_sink(spec: str, config: Config, spool: str | None = None) -> Sink:
    kind, sep, path = spec.partition(":")
    if kind == "terminal" and not sep:
        out = sys.stderr if config.use_stderr else sys.stdout
        return TerminalSink(out, head=config.head, body=config.body,
                            print_dns=config.print_dns, batched=True)  # the sink stage flushes
    if kind == "ndjson" and not sep:
        return NdjsonSink(sys.stdout, bodies=config.body, batched=True)
    if kind == "ndjson" and path:
        return NdjsonSink(sys.stdout if path == "-" else path, bodies=config.body,
                          batched=True)
    if kind == "har" and path:
        return HarSink(path, spool=spool)
    raise ValueError(f"unknown sink {spec!r}: expected terminal, ndjson, ndjson:PATH "
                     "or har:PATH")
