"""Run the real httptap in a subprocess, as the suite's user or as an unprivileged one."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

UNPRIVILEGED_UID = 65534  # "nobody": present on every Debian-like system


def httptap_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "httptap", *args]


def run_httptap(*args: str, timeout: float = 60, uid: int | None = None,
                env: dict[str, str] | None = None, input: bytes | None = None,
                ) -> subprocess.CompletedProcess[str]:
    """Run ``httptap ARGS`` to completion; stdout and stderr captured as text."""
    argv = httptap_argv(*args)
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={pwd.getpwuid(uid).pw_gid}",
                "--clear-groups", *argv]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          input=input.decode() if input is not None else None)


def unprivileged_skip_reason() -> str | None:
    """Why httptap cannot be run as the unprivileged user here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    st = os.stat("/dev/net/tun")
    if st.st_mode & 0o006 != 0o006:
        return "/dev/net/tun is not mode 0666 (.ci/run sets it; chmod 0666 /dev/net/tun)"
    # The interpreter and the package must be readable by that user (not under /root).
    check = subprocess.run(
        ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups",
         sys.executable, "-c", "import httptap.run.cli"], capture_output=True, text=True)
    if check.returncode != 0:
        return (f"uid {UNPRIVILEGED_UID} cannot import httptap with {sys.executable} "
                "(use a virtual environment outside /root, as .ci/run does)")
    return None
