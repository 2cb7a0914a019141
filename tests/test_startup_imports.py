"""What start-up must not import (perf/README.md, "Start-up"): the supervisor's path of a
plain command line and the stages' modules stay clear of typer (parsed without it),
cryptography (the trust maker imports it; a proxy at its first TLS connection) and
pyroute2 (the launcher sends its own rtnetlink requests)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("typer", "click", "cryptography", "pyroute2")


def imported(*modules: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after importing ``modules``."""
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, check=True)
    return r.stdout.split()


def test_the_quick_path_and_the_stages_import_nothing_heavy():
    assert imported("httptap.run.args", "httptap.run.supervisor", "httptap.run.namespace",
                    "httptap.run.trustmaker", "httptap.stages.proxy", "httptap.stages.sink",
                    "httptap.stages.tcp", "httptap.stages.tun") == []


def test_the_typer_command_line_still_imports_typer():
    assert "typer" in imported("httptap.run.cli")  # the test above can fail, then
