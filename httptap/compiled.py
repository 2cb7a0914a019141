"""Which pure cores are compiled with mypyc, and what this install runs (``httptap -V``).

``setup.py`` compiles :data:`MODULES` (one extension, the same typed source) when a C
compiler is there, and installs them as plain Python otherwise: behaviour is identical
either way, only the speed differs (see README, "Install"). In an editable install the
compiled ``.so`` files sit next to their ``.py``; ``httptap/__init__.py`` makes the
whole package load from source when ``HTTPTAP_PURE=1`` is set or when any compiled
module's source changed since the build (the build's stamp, :data:`STAMP`, says when).

Kept compiled: modules whose per-packet or per-request logic is interpreted Python in
the profile, each group measured to pay (perf/README.md). A class mypyc compiles is
native: no ``__slots__`` at run time, no interpreted subclasses. So not compiled: the
event classes (``httptap.events``' value semantics read ``__slots__``) and
``ObserverBase`` and the observers that subclass it (``http1``, ``http2``: thin, they
drive the compiled HTTP/1 sides and readers and the HTTP/2 frame reader). Where a
stage's per-message logic sat with its event-loop glue, the logic has a module of its
own so that it compiles and the glue stays as it was: ``plumbing.boxes`` (Inbox, Outbox,
from ``stages.base``) and ``stages.tcpshard`` (``TcpShard``, from ``stages.tcp``); the
old modules re-export their names.
"""

from __future__ import annotations

#: Compiled together into one extension (calls between them are native C calls).
MODULES: tuple[str, ...] = (
    # network layer: every packet
    "httptap.net.wire",
    "httptap.net.tcp.congestion",
    "httptap.net.tcp.connection",
    "httptap.net.tcp.rangeset",
    "httptap.net.tcp.receiver",
    "httptap.net.tcp.rtt",
    "httptap.net.tcp.segment",
    "httptap.net.tcp.sendbuffer",
    "httptap.net.tcp.sender",
    "httptap.net.tcp.seq",
    # proxy side: every request and every flow
    "httptap.http.h1heads",          # perf/bench_http1.py: 13 -> 6 µs per small exchange
    "httptap.http.h1readers",
    "httptap.http.h1sides",
    "httptap.http.h2frames",
    "httptap.http.report",
    "httptap.http.headers",          # header(): per request in the reporter and the sinks
    "httptap.tls.clienthello",       # every TLS flow: 16-22 -> 5-8 µs per ClientHello
    "httptap.flow.core",
    "httptap.flow.decoding",
    "httptap.flow.commands",
    "httptap.dns.message",
    # the rings between the stages: every message of every stage
    "httptap.plumbing.ring",
    "httptap.plumbing.boxes",        # Inbox, Outbox: every message of every stage
    "httptap.stages.tcpshard",       # the tcp stage's logic: every packet
)

#: The build's record, next to this file, written by an in-place (editable) build only:
#: first line ``compiled`` or ``pure: <why>``, then ``<path> <mtime_ns> <size>`` of each
#: compiled module's source as it was compiled (paths relative to the project root).
STAMP = "_build.stamp"


def compiled_modules() -> list[str]:
    """The modules of :data:`MODULES` that this process imports as extensions."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from importlib.util import find_spec

    found = []
    for name in MODULES:
        spec = find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(tuple(EXTENSION_SUFFIXES)):
            found.append(name)
    return found


def describe() -> str:
    """What ``httptap -V`` says after the version: ``compiled: N modules`` or why not."""
    from . import pure_reason

    n = len(compiled_modules())
    if n:
        return f"compiled: {n} modules"
    return f"pure Python: {pure_reason}" if pure_reason else "pure Python"
