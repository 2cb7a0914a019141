"""What start-up must not import (perf/README.md, "Start-up"): the supervisor's path of a
stages' modules stay clear of cryptography (the trust maker imports it; a proxy at its
first TLS connection) and pyroute2 (the launcher imports it when it configures the
device)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("cryptography", "pyroute2")


def imported(*modules: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after importing ``modules``."""
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, check=True)
    return r.stdout.split()


def test_the_supervisor_and_the_stages_import_nothing_heavy():
    assert imported("httptap.run.early", "httptap.run.supervisor", "httptap.run.namespace",
                    "httptap.run.trustmaker", "httptap.stages.proxy", "httptap.stages.sink",
                    "httptap.stages.tcp", "httptap.stages.tun") == []
