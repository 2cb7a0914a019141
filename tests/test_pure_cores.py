"""The pure cores stay pure: none imports a module that does I/O or reads the clock.

STYLE.md: cores take bytes and ``now`` and return events and bytes. One walk over their
imports keeps it so (the sinks read no clock and open no sockets either: their files and
streams are handed to them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "httptap"

# Whole layers are pure (net, http, flow), and one module each of tls and dns.
CORES = sorted(
    [path for layer in ("net", "http", "flow") for path in (PACKAGE / layer).rglob("*.py")]
    + [PACKAGE / "tls" / "clienthello.py", PACKAGE / "dns" / "message.py",
       PACKAGE / "events.py"])
IO_MODULES = {"os", "socket", "asyncio", "time", "select", "selectors", "subprocess", "ssl"}

SINKS = sorted((PACKAGE / "sinks").glob("*.py"))
SINK_FORBIDDEN = {"time", "socket", "asyncio", "select", "selectors", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (relative ones stay inside)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_core_is_listed():
    assert {str(p.relative_to(PACKAGE)) for p in CORES} >= {
        "net/wire.py", "net/tcp/connection.py", "net/tcp/seq.py", "http/http1.py",
        "http/http2.py", "http/report.py", "http/websocket.py", "flow/core.py",
        "flow/commands.py", "tls/clienthello.py", "dns/message.py"}


@pytest.mark.parametrize("path", CORES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_does_no_io(path: Path):
    assert not imported_modules(path) & IO_MODULES


@pytest.mark.parametrize("path", SINKS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sink_formatting_reads_no_clock_and_opens_no_sockets(path: Path):
    assert not imported_modules(path) & SINK_FORBIDDEN


def test_the_walk_sees_imports(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os.path\nfrom time import monotonic\nfrom . import x\n")
    assert imported_modules(probe) == {"os", "time"}
