"""The run directory: a private directory per run, for the trust files the command reads
(the CA bundle, the hashed certificate directory, the Java trust store) and the sink's
spool. Named after the supervisor's pid, removed on every way out of the run; one left by
a SIGKILLed run is removed by the next run (:func:`remove_stale_run_dirs`)."""

from __future__ import annotations

import os
import shutil
import tempfile

RUN_DIR_PREFIX = "httptap-run-"   # + supervisor pid + "-"


def make_run_dir() -> str:
    """A new run directory (after removing those of runs that no longer exist)."""
    remove_stale_run_dirs()
    path = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-", dir=run_dir_base())
    os.chmod(path, 0o755)  # the command may run as another user (--user)
    return path


def run_dir_base() -> str:
    """Where run directories go: /dev/shm, a tmpfs on every Linux system, when we may
    write there, else the temp directory. Creating the ~150 entries of the run's
    SSL_CERT_DIR took 10-40 ms on this machine's ext4 /tmp and 1 ms on tmpfs."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def remove_stale_run_dirs() -> None:
    """Remove run directories of httptap processes that no longer exist (SIGKILLed)."""
    tmp = run_dir_base()
    for name in os.listdir(tmp):
        if not name.startswith(RUN_DIR_PREFIX):
            continue
        pid = name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        path = os.path.join(tmp, name)
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}") and os.stat(path).st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)
